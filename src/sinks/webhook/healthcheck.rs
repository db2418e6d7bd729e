//! The start-up healthcheck: can a TCP connection to the endpoint be opened?
//!
//! It sends nothing: a POST would fire a webhook. `webhook-sink test` sends a sample event
//! for a full check.

use std::time::Duration;

use futures::FutureExt;

use super::target::Target;
use crate::component::{Healthcheck, HealthcheckError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The healthcheck of a sink sending to `target` (a no-op when disabled).
pub fn healthcheck(target: Target, enabled: bool) -> Healthcheck {
    async move {
        if !enabled {
            return Ok(());
        }
        let host = target.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let connect = tokio::net::TcpStream::connect((host.as_str(), target.port()));
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(HealthcheckError(format!("cannot connect to {}:{}: {e}", target.host(), target.port()))),
            Err(_) => Err(HealthcheckError(format!(
                "cannot connect to {}:{} within {CONNECT_TIMEOUT:?}",
                target.host(),
                target.port()
            ))),
        }
    }
    .boxed()
}
