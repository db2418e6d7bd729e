//! How webhook connections are opened: TCP (`TCP_NODELAY`), and for https URLs TLS
//! through `hyper-rustls`, with the rustls configuration [`super::tls`] makes (trusted
//! roots, pinned certificates, client certificate). rustls uses the ring provider
//! explicitly, so no process-wide default provider has to be installed.
//! [`super::connections`] keeps the connections and sends on them.

use std::path::PathBuf;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};

use super::dial::{DialOptions, Dialer};
use super::tls::TlsSettings;

/// The body type webhook requests use.
pub type Body = http_body_util::Full<bytes::Bytes>;

/// Opens a connection for an `http://` or `https://` URI: TCP (direct or through a
/// proxy, see [`Dialer`]), then TLS by scheme.
pub type Connector = HttpsConnector<Dialer>;

/// Extra CAs alone, every other TLS setting at its default (certificates and host names
/// verified, no client certificate): for callers that set nothing else. A sink passes its
/// whole [`TlsSettings`] to [`build_connector`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file with extra CA certificates trusted in addition to the webpki roots.
    pub ca_file: Option<PathBuf>,
}

impl From<&TlsOptions> for TlsSettings {
    fn from(options: &TlsOptions) -> TlsSettings {
        TlsSettings { ca_file: options.ca_file.clone(), ..TlsSettings::default() }
    }
}

impl From<&TlsSettings> for TlsSettings {
    fn from(settings: &TlsSettings) -> TlsSettings {
        settings.clone()
    }
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
    /// The client certificate (`tls.crt_file`) or its key (`tls.key_file`) cannot be used.
    /// Never quotes the key.
    #[error("{field} {}: {reason}", path.display())]
    ClientCertificate {
        /// The field at fault, relative to the sink (`tls.crt_file` or `tls.key_file`).
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration could not be assembled.
    #[error("cannot configure TLS: {reason}")]
    Tls {
        /// rustls' reason.
        reason: String,
    },
}

/// Builds the connector for the given TLS settings ([`TlsSettings`], or [`TlsOptions`]),
/// dialing as `dial` says.
pub fn build_connector(tls: impl Into<TlsSettings>, dial: &DialOptions) -> Result<Connector, ClientError> {
    let tls_config = super::tls::client_config(&tls.into())?;

    let dialer = Dialer::new(dial);
    Ok(HttpsConnectorBuilder::new().with_tls_config(tls_config).https_or_http().enable_http1().wrap_connector(dialer))
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
