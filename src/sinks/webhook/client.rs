//! The shared HTTP(S) client webhook deliveries go through.
//!
//! A keep-alive `hyper-util` legacy client over `hyper-rustls`: plain http and
//! https, HTTP/1.1, certificate verification against the webpki roots plus an
//! optional extra CA bundle. rustls uses the ring provider explicitly, so no
//! process-wide default provider has to be installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The body type webhook requests use.
pub type Body = http_body_util::Full<bytes::Bytes>;

/// A keep-alive hyper-util client over hyper-rustls (http and https), webpki
/// roots + optional extra CA from a PEM file.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long an idle pooled connection is kept open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

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
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA file contains no PEM `CERTIFICATE` section.
    #[error("CA file {} contains no PEM certificates", path.display())]
    NoCertificates { path: PathBuf },
    /// A certificate in the CA file is malformed or not usable as a trust anchor.
    #[error("bad certificate in CA file {}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The TLS configuration could not be assembled.
    #[error("cannot configure TLS: {reason}")]
    Tls { reason: String },
}

/// Build the shared client for the given TLS settings.
pub fn build_client(tls: &TlsOptions) -> Result<HttpClient, ClientError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &tls.ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| ClientError::BadCertificate {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    // The HTTPS connector decides per scheme; the inner connector must accept https URIs.
    http.enforce_http(false);
    http.set_nodelay(true);

    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);

    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    Ok(client)
}

/// Read every `CERTIFICATE` section of a PEM file (other sections are ignored).
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem_error = |e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(source) => ClientError::CaFile {
            path: path.to_path_buf(),
            source,
        },
        other => ClientError::BadCertificate {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_ca_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            build_client(&TlsOptions::default()).unwrap();
        });
    }

    #[test]
    fn missing_ca_file_names_path() {
        let path = PathBuf::from("/nonexistent/dir/ca-bundle.pem");
        let err = build_client(&TlsOptions {
            ca_file: Some(path.clone()),
        })
        .unwrap_err();
        assert!(matches!(&err, ClientError::CaFile { path: p, .. } if *p == path));
        assert!(err.to_string().contains("/nonexistent/dir/ca-bundle.pem"));
    }
}
