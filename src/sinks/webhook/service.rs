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
use crate::escape::escape_control;
use super::connections::{Connections, Slot};

/// At most this much of an answer's body is read (the rest is dropped with the connection).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// At most this many characters of an answer's body go into logs and errors.
const EXCERPT_CHARS: usize = 200;
/// At most this many characters of an answer's `Location` go into logs and dead letters.
const LOCATION_CHARS: usize = 200;

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// The start of the answer's body, as text.
    pub excerpt: String,
    /// The answer's `Retry-After`, if any.
    pub retry_after: Option<http::HeaderValue>,
    /// The answer's `Location`, made safe to show ([`sanitize_location`]): redirects are
    /// not followed, but the dead letter says where the endpoint pointed.
    pub location: Option<String>,
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
        if let Some(location) = &self.location {
            write!(f, " (Location: {location}, not followed)")?;
        }
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
    concurrency: usize,
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
        let concurrency = concurrency.max(1);
        WebhookService { connections: Arc::new(Connections::new(connector, concurrency)), timeout, concurrency }
    }

    /// Most requests in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Sends one request (its URI absolute, `http://` or `https://`), after waiting for a
    /// free slot.
    pub async fn send(&self, request: Request<Body>) -> Result<DeliveryResponse, DeliveryError> {
        self.send_built(|| request).await
    }

    /// As [`WebhookService::send`], building the request only once a slot is free: what
    /// it carries about the moment it is sent (a signed `webhook-timestamp`) is then not
    /// stale after a long wait for a slot.
    pub async fn send_built(&self, build: impl FnOnce() -> Request<Body>) -> Result<DeliveryResponse, DeliveryError> {
        self.send_admitted(std::future::ready(()), build).await.1
    }

    /// As [`WebhookService::send_built`], waiting for `admit` (the sink's gate: rate limit,
    /// `Retry-After` pause, circuit breaker) once a slot is free and before building: so a
    /// request let through is sent at once, never after a pause that began while it waited
    /// for a slot. The time limit starts after `admit`.
    pub async fn send_admitted<A: std::future::Future>(
        &self,
        admit: A,
        build: impl FnOnce() -> Request<Body>,
    ) -> (A::Output, Result<DeliveryResponse, DeliveryError>) {
        let mut slot = self.connections.slot().await;
        let admitted = admit.await;
        let request = build();
        // Boxed: the exchange's future is large (the request, the answer's head, reading
        // its body), and inline it would be part of every event's future, of which a sink
        // holds up to 1024 while they wait for a slot.
        let exchange = Box::pin(exchange(&self.connections, &mut slot, request));
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((response, complete))) => {
                self.connections.release(slot, complete);
                Ok(response)
            }
            // A connection left mid-exchange cannot carry another request: it is dropped
            // with the slot, and hyper closes it.
            Ok(Err(error)) => Err(error),
            Err(_) => Err(DeliveryError::Timeout(self.timeout)),
        };
        (admitted, result)
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
    let location = response.headers().get(http::header::LOCATION).map(sanitize_location);
    let (excerpt, complete) = read_excerpt(response.into_body()).await;
    Ok((DeliveryResponse { status, excerpt, retry_after, location }, complete))
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
    // One line: runs of white space (an HTML error page's newlines) become one space, and
    // the control characters left (ESC, BEL, NUL, …) are escaped, so the excerpt cannot
    // drive a terminal or forge a line in logs, dead letters and the CLI's output.
    let text = String::from_utf8_lossy(&bytes);
    let words: Vec<&str> = text.split_whitespace().collect();
    let flat = words.join(" ");
    let cut: String = flat.chars().take(EXCERPT_CHARS).collect();
    let mut excerpt = escape_control(&cut);
    if flat.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    (excerpt, complete)
}

/// An answer's `Location`, safe for logs and dead letters: the endpoint chose it, so it
/// may hold anything.
///
/// - userinfo (`https://user:pass@host/…`) becomes `***@`: a redirect can point at a URL
///   with credentials in it, and those are not ours to keep;
/// - control characters are escaped (`\t`, `\u{7f}`), so the text stays one printable
///   line; a byte that is not UTF-8 becomes `�`;
/// - it is cut at [`LOCATION_CHARS`] characters, with `…` after.
///
/// Hand-written rather than through `url::Url`: a `Location` may be relative or not a URL
/// at all, and it must still be shown (redacted) rather than dropped.
pub fn sanitize_location(value: &http::HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = redact_userinfo(text.trim());
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LOCATION_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Hides the userinfo of a URL-like text: `scheme://user:pass@host/…` → `scheme://***@host/…`.
///
/// Read as loosely as URL parsers read it, erring towards hiding: an optional scheme, then
/// any run of `/` or `\` (browsers take `\` for `/` in http URLs), then the authority up to
/// the next `/`, `\`, `?` or `#`; everything before its last `@` is userinfo. So
/// `//user@host/x` and `https:\\user:pw@host` are redacted too, and text with no `@` there
/// is left as it is.
fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let after_scheme = scheme_len(text).map_or(0, |n| n + 1);
    let authority_start =
        after_scheme + text[after_scheme..].bytes().take_while(|&b| b == b'/' || b == b'\\').count();
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}***{}", &text[..authority_start], &rest[at..]).into(),
        None => text.into(),
    }
}

/// The length of the scheme (RFC 3986 `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`) when
/// `text` starts with one followed by `:`.
fn scheme_len(text: &str) -> Option<usize> {
    let colon = text.find(':')?;
    let scheme = &text[..colon];
    let mut chars = scheme.chars();
    let first_is_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_is_alpha && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))).then_some(colon)
}

/// An error with its causes, `a: b: c`: hyper's own message alone says little.
pub(super) fn chain(error: &dyn StdError) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitized(raw: &[u8]) -> String {
        sanitize_location(&http::HeaderValue::from_bytes(raw).unwrap())
    }

    #[test]
    fn a_location_is_shown_as_it_is_when_harmless() {
        assert_eq!(sanitized(b"https://other.example/x?y=1#z"), "https://other.example/x?y=1#z");
        assert_eq!(sanitized(b"/relative/path"), "/relative/path");
        assert_eq!(sanitized(b"  https://h.example/ "), "https://h.example/");
        // An `@` in the path or query is not userinfo.
        assert_eq!(sanitized(b"https://h.example/a@b?c=d@e"), "https://h.example/a@b?c=d@e");
    }

    #[test]
    fn userinfo_in_a_location_is_hidden() {
        for (raw, shown) in [
            ("https://bob:S3cretPw@other.example/x", "https://***@other.example/x"),
            ("http://token@other.example", "http://***@other.example"),
            ("//bob:S3cretPw@other.example/x", "//***@other.example/x"),
            ("https:\\\\bob:S3cretPw@other.example\\x", "https:\\\\***@other.example\\x"),
            ("HTTPS://a:b@c:S3cretPw@other.example:8443?q", "HTTPS://***@other.example:8443?q"),
        ] {
            assert_eq!(sanitized(raw.as_bytes()), shown, "{raw}");
        }
    }

    #[test]
    fn control_characters_are_escaped_and_length_is_capped() {
        // A tab is the only control character a header value may hold (hyper refuses the
        // others); anything else is escaped the same way.
        assert_eq!(sanitized(b"https://h.example/a\tb"), "https://h.example/a\\tb");
        assert_eq!(sanitized(b"https://h.example/\xff"), "https://h.example/\u{fffd}");
        let long = format!("https://h.example/{}", "a".repeat(1000));
        let shown = sanitized(long.as_bytes());
        assert_eq!(shown.chars().count(), LOCATION_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn the_answer_names_its_location() {
        let response = DeliveryResponse {
            status: StatusCode::MOVED_PERMANENTLY,
            excerpt: String::new(),
            retry_after: None,
            location: Some("https://other.example/x".into()),
        };
        assert_eq!(response.to_string(), "301 Moved Permanently (Location: https://other.example/x, not followed)");
    }
}
