//! Sending: a tower `Service` that POSTs a request with a time limit and reports the answer,
//! at most `request.concurrency` requests at once.
//!
//! Any HTTP answer is an `Ok` (the caller decides what a status means); network failures
//! and timeouts are typed errors. Retries are the sink's loop around it, steered by
//! [`super::retry::RetryPolicy`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::client::{Body, HttpClient};

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

/// Sends webhook requests over a keep-alive client, at most `concurrency` at once.
#[derive(Clone)]
pub struct WebhookService {
    client: HttpClient,
    /// One permit per request in flight (`request.concurrency`).
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl WebhookService {
    /// A service over `client` sending at most `concurrency` requests at once (at least
    /// one); each request (answer body included) must finish in `timeout`, which starts
    /// once the request has a slot.
    pub fn new(client: HttpClient, concurrency: usize, timeout: Duration) -> Self {
        WebhookService { client, slots: Arc::new(Semaphore::new(concurrency.max(1))), timeout }
    }

    /// Sends one request, after waiting for a free slot.
    pub async fn send(&self, request: Request<Body>) -> Result<DeliveryResponse, DeliveryError> {
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await.expect("the slots semaphore is never closed");
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| DeliveryError::Transport(chain(&e)))?;
            let status = response.status();
            let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
            let excerpt = read_excerpt(response.into_body()).await;
            Ok(DeliveryResponse { status, excerpt, retry_after })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| DeliveryError::Timeout(self.timeout))?
    }
}

impl tower::Service<Request<Body>> for WebhookService {
    type Response = DeliveryResponse;
    type Error = DeliveryError;
    type Future = BoxFuture<'static, Result<DeliveryResponse, DeliveryError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(request).await })
    }
}

/// Reads up to [`MAX_ANSWER_BYTES`] of the body (so the connection can be reused) and
/// returns its first characters.
async fn read_excerpt(mut body: Incoming) -> String {
    let mut bytes = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            bytes.extend_from_slice(data);
            if bytes.len() > MAX_ANSWER_BYTES {
                break;
            }
        }
    }
    // One line: runs of white space (an HTML error page's newlines) become one space.
    let text = String::from_utf8_lossy(&bytes);
    let words: Vec<&str> = text.split_whitespace().collect();
    let flat = words.join(" ");
    let mut excerpt: String = flat.chars().take(EXCERPT_CHARS).collect();
    if flat.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    excerpt
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
