//! How webhook connections are opened: TCP (`TCP_NODELAY`), and for https URLs TLS
//! through `hyper-rustls`, verifying certificates against the webpki roots plus an
//! optional extra CA bundle. rustls uses the ring provider explicitly, so no
//! process-wide default provider has to be installed. [`super::connections`] keeps
//! the connections and sends on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::dial::{DialOptions, Dialer};

/// The body type webhook requests use.
pub type Body = http_body_util::Full<bytes::Bytes>;

/// Opens a connection for an `http://` or `https://` URI: TCP (direct or through a
/// proxy, see [`Dialer`]), then TLS by scheme.
pub type Connector = HttpsConnector<Dialer>;

/// TLS settings of a sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file with extra CA certificates trusted in addition to the webpki roots.
    pub ca_file: Option<PathBuf>,
}

/// Why a client could not be built. Every CA-file error names the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be opened or read.
    #[error("cannot read CA file {}: {source}", path.display())]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The CA file contains no PEM `CERTIFICATE` section.
    #[error("CA file {} contains no PEM certificates", path.display())]
    NoCertificates {
        /// The CA file.
        path: PathBuf,
    },
    /// A certificate in the CA file is malformed or not usable as a trust anchor.
    #[error("bad certificate in CA file {}: {reason}", path.display())]
    BadCertificate {
        /// The CA file.
        path: PathBuf,
        /// What is wrong with the certificate.
        reason: String,
    },
    /// The TLS configuration could not be assembled.
    #[error("cannot configure TLS: {reason}")]
    Tls {
        /// rustls' reason.
        reason: String,
    },
}

/// Builds the connector for the given TLS settings, dialing as `dial` says.
pub fn build_connector(tls: &TlsOptions, dial: &DialOptions) -> Result<Connector, ClientError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &tls.ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| ClientError::BadCertificate { path: path.clone(), reason: e.to_string() })?;
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls { reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let dialer = Dialer::new(dial);
    Ok(HttpsConnectorBuilder::new().with_tls_config(tls_config).https_or_http().enable_http1().wrap_connector(dialer))
}

/// Read every `CERTIFICATE` section of a PEM file (other sections are ignored).
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem_error = |e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(source) => ClientError::CaFile { path: path.to_path_buf(), source },
        other => ClientError::BadCertificate { path: path.to_path_buf(), reason: other.to_string() },
    };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem_error)?.collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificates { path: path.to_path_buf() });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_ca_file() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            build_connector(&TlsOptions::default(), &DialOptions::default()).unwrap();
        });
    }

    #[test]
    fn missing_ca_file_names_path() {
        let path = PathBuf::from("/nonexistent/dir/ca-bundle.pem");
        let err = build_connector(&TlsOptions { ca_file: Some(path.clone()) }, &DialOptions::default()).unwrap_err();
        assert!(matches!(&err, ClientError::CaFile { path: p, .. } if *p == path));
        assert!(err.to_string().contains("/nonexistent/dir/ca-bundle.pem"));
    }
}
