//! The start-up healthcheck: can a connection to the endpoint be opened? It goes through
//! the sink's own connector, so for an https URL the TLS handshake happens too, with the
//! sink's TLS settings: a certificate the sink would refuse is reported at start, with
//! rustls' reason.
//!
//! It sends nothing: a POST would fire a webhook. `webhook-sink test` sends a sample event
//! for a full check.

use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
// The connector is a `tower_service::Service<Uri>`: opening a connection is its `call`.
use tower_service::Service;

use super::client::Connector;
use super::service::chain;
use super::target::Target;
use crate::component::{Healthcheck, HealthcheckError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an https check waits after the handshake for the server to refuse it.
const ALERT_WAIT: Duration = Duration::from_secs(1);

/// The healthcheck of a sink sending to `target` through `connector` (a no-op when
/// disabled).
pub fn healthcheck(target: Target, mut connector: Connector, enabled: bool) -> Healthcheck {
    async move {
        if !enabled {
            return Ok(());
        }
        let endpoint = format!("{}:{}", target.host(), target.port());
        // The target's URI has no userinfo; the connector looks at its scheme, host, port.
        let connect = connector.call(target.uri().clone());
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(HealthcheckError(describe(&endpoint, target.is_https(), error.as_ref()))),
            Err(_) => return Err(HealthcheckError(format!("cannot connect to {endpoint} within {CONNECT_TIMEOUT:?}"))),
        };
        if !target.is_https() {
            return Ok(());
        }
        // With TLS 1.3 the client's side of the handshake ends before the server has
        // checked the client certificate; a server that refuses it says so right after.
        // Listen briefly for that alert (a server that accepts sends nothing unasked).
        let mut io = TokioIo::new(connection);
        match tokio::time::timeout(ALERT_WAIT, io.read(&mut [0u8; 1])).await {
            Ok(Err(error)) => Err(HealthcheckError(describe(&endpoint, true, &error))),
            // Dropping the connection closes it: nothing was sent.
            _ => Ok(()),
        }
    }
    .boxed()
}

/// What failed: the TLS handshake (with rustls' reason, e.g. `invalid peer certificate:
/// UnknownIssuer`), or the connection, with every cause.
fn describe(endpoint: &str, https: bool, error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = rustls_error(error) {
        return format!("TLS handshake with {endpoint} failed: {tls}");
    }
    let text = chain(error);
    let what = if https { "cannot connect (TCP + TLS) to" } else { "cannot connect to" };
    format!("{what} {endpoint}: {text}")
}

/// The rustls error in `error`'s chain. hyper-rustls hands it over inside an
/// `io::Error` (sometimes inside another one), whose `source()` skips the error it wraps,
/// so what an `io::Error` wraps is looked into too.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    // Bounded: a chain longer than this is not one hyper-rustls makes.
    for _ in 0..16 {
        let e = current?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}
