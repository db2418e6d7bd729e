//! TLS of webhook connections: which servers are trusted and how they are checked, and
//! the client certificate a sink shows (mTLS). It owns the rustls `ClientConfig` that
//! [`super::client`] hands to hyper-rustls.
//!
//! Trusted are the bundled web PKI roots, the system's trust store (rustls-native-certs,
//! which also honours `SSL_CERT_FILE` and `SSL_CERT_DIR`) and `tls.ca_file`. A server
//! certificate that is byte-identical to one in `tls.ca_file` is trusted directly (pinned),
//! as curl and OpenSSL do with `--cacert`: that is how a self-signed certificate made with
//! `openssl req -x509` (which marks it as a CA, so webpki refuses it as a server's own) is
//! trusted for the sink that names it. Its validity dates and host name are still
//! checked, and so is every handshake signature. Anything else goes through webpki.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::client::ClientError;
use crate::error::FieldError;

/// The `tls` table of a sink. Names as in Vector's `tls` options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file with CA certificates to trust besides the bundled web PKI roots and the
    /// system's trust store, relative to the config file. It may also hold the server's own
    /// self-signed certificate, which is then trusted for this sink. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM file with the client certificate (and its chain) shown to servers that ask for
    /// one (mTLS), relative to the config file. Needs `key_file`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crt_file: Option<PathBuf>,
    /// A PEM file with the private key of `crt_file` (PKCS#8, PKCS#1 or SEC1), relative to
    /// the config file. Needs `crt_file`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Whether the server's certificate is verified. `false` accepts any certificate, and
    /// is warned about at load and at every start. Default: true.
    #[serde(default = "default_true")]
    pub verify_certificate: bool,
    /// Whether the server's certificate must be valid for the URL's host. `false` still
    /// verifies the chain, and is warned about at load and at every start. Default: true.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
}

fn default_true() -> bool {
    true
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { ca_file: None, crt_file: None, key_file: None, verify_certificate: true, verify_hostname: true }
    }
}

/// What the connector needs of the `tls` table: paths resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM file with extra CA certificates, or server certificates to pin.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key, for mTLS.
    pub client_cert: Option<ClientCertFiles>,
    /// `false`: accept any server certificate.
    pub verify_certificate: bool,
    /// `false`: do not check the certificate's host name.
    pub verify_hostname: bool,
    /// Whether the endpoint is `https://`. A sink sending to `http://` (through an
    /// `http://` proxy or not) never makes a TLS connection, so the trust roots are not
    /// loaded for it: reading the system store costs about 19 million instructions.
    pub needed: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings { ca_file: None, client_cert: None, verify_certificate: true, verify_hostname: true, needed: true }
    }
}

/// A client certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate chain, the client's own certificate first.
    pub crt_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// Said when `verify_certificate = false`.
pub const NO_VERIFY_CERTIFICATE_WARNING: &str =
    "is false: certificates are not verified: anyone on the path can read and change webhooks";
/// Said when `verify_hostname = false`.
pub const NO_VERIFY_HOSTNAME_WARNING: &str = "is false: the certificate's host name is not checked: anyone on the \
     path with a certificate from any trusted CA, for any name, can read and change webhooks";

impl TlsConfig {
    /// Resolves the paths against `config_dir` and checks that every file can be used (the
    /// CA file parses, the client certificate and key parse and belong together). Errors
    /// name the field (relative to the sink: `tls.crt_file`) and the file.
    pub fn resolve(&self, config_dir: &Path) -> Result<TlsSettings, Vec<FieldError>> {
        let mut errors = Vec::new();
        let ca_file = self.ca_file.as_ref().map(|p| config_dir.join(p));
        if let Some(path) = &ca_file {
            if let Err(e) = load_ca_file(path) {
                errors.push(FieldError::new("tls.ca_file", e.to_string()));
            }
        }
        let client_cert = match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => {
                let files = ClientCertFiles { crt_file: config_dir.join(crt), key_file: config_dir.join(key) };
                match load_client_cert(&files).and_then(|(chain, key)| check_key_matches(&files, chain, key)) {
                    Ok(()) => Some(files),
                    Err(e) => {
                        errors.push(client_cert_field_error(e));
                        None
                    }
                }
            }
            (Some(_), None) => {
                errors.push(FieldError::new("tls.key_file", "is missing: `tls.crt_file` needs the key that goes with it"));
                None
            }
            (None, Some(_)) => {
                errors.push(FieldError::new("tls.crt_file", "is missing: `tls.key_file` needs the certificate it is for"));
                None
            }
            (None, None) => None,
        };
        if errors.is_empty() {
            Ok(TlsSettings {
                ca_file,
                client_cert,
                verify_certificate: self.verify_certificate,
                verify_hostname: self.verify_hostname,
                needed: true,
            })
        } else {
            Err(errors)
        }
    }

    /// The risky settings, said at load and at every start.
    pub fn warnings(&self) -> Vec<FieldError> {
        let mut warnings = Vec::new();
        if !self.verify_certificate {
            warnings.push(FieldError::new("tls.verify_certificate", NO_VERIFY_CERTIFICATE_WARNING));
        }
        if !self.verify_hostname {
            warnings.push(FieldError::new("tls.verify_hostname", NO_VERIFY_HOSTNAME_WARNING));
        }
        warnings
    }
}

/// A client-certificate error as a field error of the field it names.
fn client_cert_field_error(error: ClientError) -> FieldError {
    match error {
        ClientError::ClientCertificate { field, path, reason } => {
            FieldError::new(field, format!("{}: {reason}", path.display()))
        }
        other => FieldError::new("tls", other.to_string()),
    }
}

/// The rustls client configuration for `tls`, with the ring provider (no process-wide
/// default provider needed). Reads the files and the system's trust store.
pub fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    if !tls.needed {
        return rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls { reason: e.to_string() })
            .map(|builder| builder.with_root_certificates(RootCertStore::empty()).with_no_client_auth());
    }
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    add_system_roots(&mut roots);
    let mut extra = Vec::new();
    if let Some(path) = &tls.ca_file {
        extra = load_ca_file(path)?;
        for cert in &extra {
            roots
                .add(cert.clone())
                .map_err(|e| ClientError::BadCertificate { path: path.clone(), reason: e.to_string() })?;
        }
    }

    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls { reason: e.to_string() })?;
    // The stock webpki verifier, unless pinning or a switched-off check needs our own.
    let builder = if extra.is_empty() && tls.verify_certificate && tls.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let verifier = SinkVerifier::new(roots, extra, &provider, tls.verify_certificate, tls.verify_hostname)?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
    };
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let (chain, key) = load_client_cert(files)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| key_error(files, &e))
        }
    }
}

/// Adds the system's trust store. A missing or unreadable store is no error: the bundled
/// roots and `ca_file` still apply, so it is only said at debug level.
fn add_system_roots(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        debug!(%error, "system trust store: not all of it could be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system trust store: certificates added");
}

/// Reads every `CERTIFICATE` section of a PEM file (other sections are ignored); errors
/// name the file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem_error = |e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(source) => ClientError::CaFile { path: path.to_path_buf(), source },
        other => ClientError::BadCertificate { path: path.to_path_buf(), reason: other.to_string() },
    };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem_error)?.collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificates { path: path.to_path_buf() });
    }
    // Each must be usable as a trust anchor; say which file holds one that is not.
    for cert in &certs {
        webpki_anchor_check(cert).map_err(|reason| ClientError::BadCertificate { path: path.to_path_buf(), reason })?;
    }
    Ok(certs)
}

fn webpki_anchor_check(cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut store = RootCertStore::empty();
    store.add(cert.clone().into_owned()).map_err(|e| e.to_string())
}

/// The client certificate chain and key. The key file's contents never appear in an
/// error: a PEM parse error could quote them, so only the kind of problem is said.
fn load_client_cert(
    files: &ClientCertFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    let crt_error = |reason: String| ClientError::ClientCertificate {
        field: "tls.crt_file",
        path: files.crt_file.clone(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.crt_file)
        .map_err(|e| crt_error(pem_reason(&e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crt_error(pem_reason(&e, "certificate")))?;
    if chain.is_empty() {
        return Err(crt_error("holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| ClientError::ClientCertificate {
        field: "tls.key_file",
        path: files.key_file.clone(),
        reason: pem_reason(&e, "private key (PKCS#8, PKCS#1 or SEC1)"),
    })?;
    Ok((chain, key))
}

/// What went wrong reading a PEM file, without quoting any of it.
fn pem_reason(error: &rustls_pki_types::pem::Error, what: &str) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot be read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        _ => format!("is not valid PEM (a {what} was expected)"),
    }
}

/// Checks the key against the certificate as rustls will when it builds the config.
fn check_key_matches(
    files: &ClientCertFiles,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), ClientError> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map(|_| ()).map_err(|e| key_error(files, &e))
}

/// A client key rustls refused: unsupported, or not the certificate's.
fn key_error(files: &ClientCertFiles, error: &rustls::Error) -> ClientError {
    let reason = match error {
        rustls::Error::InconsistentKeys(_) => {
            format!("does not belong to the certificate in `tls.crt_file` ({})", files.crt_file.display())
        }
        rustls::Error::InvalidCertificate(e) => {
            return ClientError::ClientCertificate {
                field: "tls.crt_file",
                path: files.crt_file.clone(),
                reason: format!("is not a usable certificate: {e}"),
            }
        }
        // rustls' own words (e.g. "failed to parse private key as RSA, ECDSA, or EdDSA");
        // they never quote the key.
        other => format!("cannot be used: {other}"),
    };
    ClientError::ClientCertificate { field: "tls.key_file", path: files.key_file.clone(), reason }
}

/// The server-certificate check of a sink that needs more than the stock webpki verifier:
/// certificates of `ca_file` pinned, or a check switched off.
#[derive(Debug)]
struct SinkVerifier {
    /// The certificates of `ca_file`: one the server presents as its own is trusted as is.
    pinned: Vec<CertificateDer<'static>>,
    /// Every trusted root (bundled, system, `ca_file`).
    roots: Arc<RootCertStore>,
    /// webpki's verifier over `roots`, for everything not pinned.
    webpki: Arc<WebPkiServerVerifier>,
    /// The provider's signature algorithms, for chains and handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
    verify_certificate: bool,
    verify_hostname: bool,
}

impl SinkVerifier {
    fn new(
        roots: RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
        verify_certificate: bool,
        verify_hostname: bool,
    ) -> Result<SinkVerifier, ClientError> {
        let roots = Arc::new(roots);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| ClientError::Tls { reason: e.to_string() })?;
        Ok(SinkVerifier {
            pinned,
            roots,
            webpki,
            algorithms: provider.signature_verification_algorithms,
            verify_certificate,
            verify_hostname,
        })
    }
}

impl ServerCertVerifier for SinkVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify_certificate {
            return Ok(ServerCertVerified::assertion());
        }
        if self.pinned.iter().any(|pinned| pinned.as_ref() == end_entity.as_ref()) {
            check_validity_dates(end_entity, now)?;
            if self.verify_hostname {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        if self.verify_hostname {
            return self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algorithms.all)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A pinned certificate must still be within its validity dates, as OpenSSL requires of
/// a trust anchor. webpki checks dates only while it builds a path, which a pinned
/// certificate skips, and does not expose them; x509-parser reads them.
fn check_validity_dates(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = parsed.validity();
    let unix = |secs: i64| UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < validity.not_before.timestamp() {
        let not_before = unix(validity.not_before.timestamp());
        return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { time: now, not_before }));
    }
    if now_secs > validity.not_after.timestamp() {
        let not_after = unix(validity.not_after.timestamp());
        return Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { time: now, not_after }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for `names` (rcgen), with its key, as PEM.
    fn self_signed(names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        // A subject of its own, so that one test certificate never looks like another's issuer.
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("test {}", fastrand::u64(..)));
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn verifier(pinned: &[&str], verify_certificate: bool, verify_hostname: bool) -> SinkVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let pinned: Vec<_> = pinned.iter().map(|p| der(p)).collect();
        for cert in &pinned {
            roots.add(cert.clone()).unwrap();
        }
        SinkVerifier::new(roots, pinned, &provider, verify_certificate, verify_hostname).unwrap()
    }

    fn check(v: &SinkVerifier, cert: &str, name: &str) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn a_pinned_certificate_is_trusted_for_its_names_only() {
        let (cert, _) = self_signed(&["pinned.example", "127.0.0.1"]);
        let v = verifier(&[&cert], true, true);
        check(&v, &cert, "pinned.example").unwrap();
        check(&v, &cert, "127.0.0.1").unwrap();
        let err = check(&v, &cert, "other.example").unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        // Without the name check, any name goes.
        check(&verifier(&[&cert], true, false), &cert, "other.example").unwrap();
    }

    #[test]
    fn an_unknown_certificate_is_refused_unless_verification_is_off() {
        let (cert, _) = self_signed(&["a.example"]);
        let (other, _) = self_signed(&["a.example"]);
        let err = check(&verifier(&[&other], true, true), &cert, "a.example").unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer") || err.to_string().contains("unknown issuer"), "{err}");
        let err = check(&verifier(&[&other], true, false), &cert, "a.example").unwrap_err();
        assert!(err.to_string().to_lowercase().contains("issuer"), "{err}");
        check(&verifier(&[], false, true), &cert, "a.example").unwrap();
    }

    #[test]
    fn an_expired_pinned_certificate_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["old.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).unwrap().pem();
        let err = check(&verifier(&[&cert], true, true), &cert, "old.example").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn client_config_builds_with_an_empty_or_missing_system_store() {
        // The store itself is the machine's; whatever it holds, building works. An
        // unreadable `SSL_CERT_FILE` is covered by the integration tests (a child process,
        // since the environment is process-wide).
        client_config(&TlsSettings::default()).unwrap();
        let mut roots = RootCertStore::empty();
        add_system_roots(&mut roots);
    }

    #[test]
    fn warnings_for_switched_off_checks() {
        assert!(TlsConfig::default().warnings().is_empty());
        let config = TlsConfig { verify_certificate: false, verify_hostname: false, ..Default::default() };
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 2);
        assert_eq!(warnings[0].field, "tls.verify_certificate");
        assert!(warnings[0].message.contains("anyone on the path can read and change webhooks"));
        assert_eq!(warnings[1].field, "tls.verify_hostname");
    }

    #[test]
    fn crt_and_key_go_together_and_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&["client"]);
        let (_, other_key) = self_signed(&["client"]);
        std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), &key).unwrap();
        std::fs::write(dir.path().join("other.pem"), &other_key).unwrap();
        let with = |crt: Option<&str>, key: Option<&str>| TlsConfig {
            crt_file: crt.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
            ..Default::default()
        };

        let settings = with(Some("c.pem"), Some("k.pem")).resolve(dir.path()).unwrap();
        let files = settings.client_cert.as_ref().unwrap();
        assert_eq!(files.crt_file, dir.path().join("c.pem"));
        client_config(&settings).unwrap();

        let errors = with(Some("c.pem"), None).resolve(dir.path()).unwrap_err();
        assert_eq!(errors[0].field, "tls.key_file", "{errors:?}");
        let errors = with(None, Some("k.pem")).resolve(dir.path()).unwrap_err();
        assert_eq!(errors[0].field, "tls.crt_file", "{errors:?}");

        let errors = with(Some("c.pem"), Some("other.pem")).resolve(dir.path()).unwrap_err();
        assert_eq!(errors[0].field, "tls.key_file", "{errors:?}");
        assert!(errors[0].message.contains("other.pem") && errors[0].message.contains("does not belong"), "{errors:?}");

        let errors = with(Some("missing.pem"), Some("k.pem")).resolve(dir.path()).unwrap_err();
        assert_eq!(errors[0].field, "tls.crt_file", "{errors:?}");
        assert!(errors[0].message.contains("missing.pem"), "{errors:?}");

        // A key file that is a certificate: named, and its text never quoted.
        let errors = with(Some("c.pem"), Some("c.pem")).resolve(dir.path()).unwrap_err();
        assert_eq!(errors[0].field, "tls.key_file", "{errors:?}");
        assert!(errors[0].message.contains("holds no PEM private key"), "{errors:?}");
    }

    #[test]
    fn a_broken_key_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&["client"]);
        // Damage the key in its middle: the base64 around the damage is secret material.
        let lines: Vec<&str> = key.lines().collect();
        let secret_line = lines[2].to_string();
        let mut damaged: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        damaged[2] = format!("{}!!{}", &secret_line[..10], &secret_line[10..]);
        std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), damaged.join("\n")).unwrap();
        let config = TlsConfig {
            crt_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            ..Default::default()
        };
        let errors = config.resolve(dir.path()).unwrap_err();
        let text = format!("{errors:?} {}", errors[0]);
        assert_eq!(errors[0].field, "tls.key_file", "{text}");
        for line in &lines[1..lines.len() - 1] {
            assert!(!text.contains(&line[..16]), "key material in {text}");
        }
    }
}
