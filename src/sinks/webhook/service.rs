//! Sending: [`WebhookService::send`] POSTs a request with a time limit and reports the
//! answer, at most `request.concurrency` requests at once.
//!
//! Any HTTP answer is an `Ok` (the caller decides what a status means); network failures
//! and timeouts are typed errors. Retries are the sink's loop around it, steered by
//! [`super::retry::RetryPolicy`]. A plain async method, not a tower `Service`: nothing
//! composes it with tower layers (docs/decisions.md says why).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::client::{Body, Connector};
use super::connections::{Connections, Slot};

/// At most this much of an answer's body is read (the rest is dropped with the connection).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// At most this many characters of an answer's body go into logs and errors.
const EXCERPT_CHARS: usize = 200;

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// The start of the answer's body, as text.
    pub excerpt: String,
    /// The answer's `Retry-After`, if any.
    pub retry_after: Option<http::HeaderValue>,
}

impl DeliveryResponse {
    /// Whether the endpoint took the webhook (2xx).
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

impl fmt::Display for DeliveryResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if !self.excerpt.is_empty() {
            write!(f, ": {}", self.excerpt)?;
        }
        Ok(())
    }
}

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS or the exchange failed.
    #[error("{0}")]
    Transport(String),
}

/// Sends webhook requests over kept-alive connections, at most `concurrency` at once.
#[derive(Clone)]
pub struct WebhookService {
    connections: Arc<Connections>,
    timeout: Duration,
}

impl fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl WebhookService {
    /// A service opening connections with `connector` and sending at most `concurrency`
    /// requests at once (at least one); each request (connecting and the answer's body
    /// included) must finish in `timeout`, which starts once the request has a slot.
    pub fn new(connector: Connector, concurrency: usize, timeout: Duration) -> Self {
        WebhookService { connections: Arc::new(Connections::new(connector, concurrency)), timeout }
    }

    /// Sends one request (its URI absolute, `http://` or `https://`), after waiting for a
    /// free slot.
    pub async fn send(&self, request: Request<Body>) -> Result<DeliveryResponse, DeliveryError> {
        let mut slot = self.connections.slot().await;
        // Boxed: the exchange's future is large (the request, the answer's head, reading
        // its body), and inline it would be part of every event's future, of which a sink
        // holds up to 1024 while they wait for a slot.
        let exchange = Box::pin(exchange(&self.connections, &mut slot, request));
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((response, complete))) => {
                self.connections.release(slot, complete);
                Ok(response)
            }
            // A connection left mid-exchange cannot carry another request: it is dropped
            // with the slot, and hyper closes it.
            Ok(Err(error)) => Err(error),
            Err(_) => Err(DeliveryError::Timeout(self.timeout)),
        }
    }
}

/// Sends `request` on `slot` and reads the answer; `true` when the answer's body was read
/// to its end, so that the connection can carry the next request.
async fn exchange(
    connections: &Connections,
    slot: &mut Slot<'_>,
    request: Request<Body>,
) -> Result<(DeliveryResponse, bool), DeliveryError> {
    let response = connections.send(slot, request).await.map_err(|e| DeliveryError::Transport(chain(&e)))?;
    let status = response.status();
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let (excerpt, complete) = read_excerpt(response.into_body()).await;
    Ok((DeliveryResponse { status, excerpt, retry_after }, complete))
}

/// Reads up to [`MAX_ANSWER_BYTES`] of the body and returns its first characters, and
/// whether the body was read to its end (so that the connection can be reused).
async fn read_excerpt(mut body: Incoming) -> (String, bool) {
    let mut bytes = Vec::new();
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                    if bytes.len() > MAX_ANSWER_BYTES {
                        break false;
                    }
                }
            }
        }
    };
    if bytes.is_empty() {
        return (String::new(), complete);
    }
    // One line: runs of white space (an HTML error page's newlines) become one space.
    let text = String::from_utf8_lossy(&bytes);
    let words: Vec<&str> = text.split_whitespace().collect();
    let flat = words.join(" ");
    let mut excerpt: String = flat.chars().take(EXCERPT_CHARS).collect();
    if flat.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    (excerpt, complete)
}

/// An error with its causes, `a: b: c`: hyper's own message alone says little.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
