//! Event → HTTP request: body from the template, headers, Basic auth from the URL, and the
//! Standard Webhooks signature when the sink has `signing` keys.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;

use super::client::Body;
use super::signing::{Signer, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use super::target::{host_header, Target};
use crate::event::IncidentEvent;
use crate::template::digest::DigestTemplate;
use crate::template::{BodyTemplate, RenderError};

/// The header carrying an event's stable delivery id (Standard Webhooks).
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");

/// The `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("webhook-sink/", env!("CARGO_PKG_VERSION"));

/// Builds a sink's requests. Cheap to share: everything is computed once at load.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    target: Target,
    body: BodyTemplate,
    /// Every header of a request, `webhook-id` included (empty until a request sets it):
    /// each request clones this map and only replaces that one value, so the map does not
    /// grow or parse a header name per request. `Host` is here for the same reason (the
    /// client would add it to every request otherwise). With a signer, `webhook-timestamp`
    /// and `webhook-signature` are here too, for the same reason.
    headers: HeaderMap,
    /// Signs each request (Standard Webhooks); `None` does no signing work at all.
    signer: Option<Arc<Signer>>,
    /// A batching sink's digest body (then `body` is not used).
    digest: Option<DigestTemplate>,
}

impl RequestBuilder {
    /// A builder for `target` with `body` and its content type, plus the user's `extra` headers.
    pub fn new(target: Target, (body, content_type): (BodyTemplate, HeaderValue), extra: HeaderMap) -> Self {
        let mut headers = HeaderMap::with_capacity(extra.len() + 3);
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(CONTENT_TYPE, content_type);
        headers.extend(extra);
        if let Some(auth) = target.authorization() {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if !headers.contains_key(HOST) {
            if let Some(host) = host_header(target.uri()) {
                headers.insert(HOST, host);
            }
        }
        headers.insert(WEBHOOK_ID, HeaderValue::from_static(""));
        RequestBuilder { target, body, headers, signer: None, digest: None }
    }

    /// The same builder, making digest bodies with `digest` (a sink with `batch`).
    pub fn with_digest(mut self, digest: Option<DigestTemplate>) -> Self {
        self.digest = digest;
        self
    }

    /// The same builder, signing every request with `signer` (none: unsigned).
    pub fn with_signer(mut self, signer: Option<Signer>) -> Self {
        if signer.is_some() {
            self.headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static(""));
            self.headers.insert(WEBHOOK_SIGNATURE, HeaderValue::from_static(""));
        } else {
            self.headers.remove(WEBHOOK_TIMESTAMP);
            self.headers.remove(WEBHOOK_SIGNATURE);
        }
        self.signer = signer.map(Arc::new);
        self
    }

    /// Where the requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Renders the body for `event` (for a batching sink: a digest of it alone).
    pub fn body(&self, event: &IncidentEvent) -> Result<Bytes, RenderError> {
        match &self.digest {
            Some(digest) => digest.render(&[event]),
            None => self.body.render(event),
        }
    }

    /// Renders the digest body of `events`, in their order (without a digest template:
    /// the default digest, a JSON array of their standard payloads).
    pub fn digest_body(&self, events: &[&IncidentEvent]) -> Result<Bytes, RenderError> {
        self.digest.as_ref().unwrap_or(&DigestTemplate::Standard).render(events)
    }

    /// The POST request for `event`, with `webhook_id` as its delivery id.
    pub fn build(&self, event: &IncidentEvent, webhook_id: &str) -> Result<Request<Body>, RenderError> {
        Ok(self.request(self.body(event)?, webhook_id))
    }

    /// The POST request carrying `body`. Every attempt of one event gets the same
    /// `webhook-id`, so a receiver can drop duplicates. A signing sink adds the attempt's
    /// `webhook-timestamp` (now) and `webhook-signature` over exactly these bytes; call this
    /// once per attempt.
    pub fn request(&self, body: Bytes, webhook_id: &str) -> Request<Body> {
        let mut headers = self.headers.clone();
        match HeaderValue::from_str(webhook_id) {
            Ok(id) => {
                headers.insert(WEBHOOK_ID, id);
                if let Some(signer) = &self.signer {
                    sign(signer, &mut headers, webhook_id, &body);
                }
            }
            Err(_) => {
                headers.remove(WEBHOOK_ID);
                if self.signer.is_some() {
                    // Nothing a receiver could check the signature against.
                    headers.remove(WEBHOOK_TIMESTAMP);
                    headers.remove(WEBHOOK_SIGNATURE);
                }
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.uri().clone();
        *request.headers_mut() = headers;
        request
    }
}

/// Sets the signature headers of a request with `webhook_id` carrying `body`.
fn sign(signer: &Signer, headers: &mut HeaderMap, webhook_id: &str, body: &[u8]) {
    match signer.headers(webhook_id, body) {
        Some((timestamp, signature)) => {
            headers.insert(WEBHOOK_TIMESTAMP, timestamp);
            headers.insert(WEBHOOK_SIGNATURE, signature);
        }
        None => {
            headers.remove(WEBHOOK_TIMESTAMP);
            headers.remove(WEBHOOK_SIGNATURE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample_event;

    fn builder(url: &str, extra: HeaderMap) -> RequestBuilder {
        let target = Target::parse(url).unwrap();
        RequestBuilder::new(target, (BodyTemplate::Standard, HeaderValue::from_static("application/json")), extra)
    }

    fn host_of(url: &str) -> String {
        let request = builder(url, HeaderMap::new()).request(Bytes::new(), "msg_1");
        request.headers()[HOST].to_str().unwrap().to_string()
    }

    #[test]
    fn host_names_the_port_only_when_it_is_not_the_default() {
        assert_eq!(host_of("http://a.example/x"), "a.example");
        assert_eq!(host_of("http://a.example:80/x"), "a.example");
        assert_eq!(host_of("http://a.example:8080/x"), "a.example:8080");
        assert_eq!(host_of("https://a.example:443/x"), "a.example");
        assert_eq!(host_of("https://a.example:80/x"), "a.example:80");
        assert_eq!(host_of("http://u:p@[::1]:9000/x"), "[::1]:9000");
    }

    #[test]
    fn a_host_header_from_the_config_is_kept() {
        let mut extra = HeaderMap::new();
        extra.insert(HOST, HeaderValue::from_static("virtual.example"));
        let request = builder("http://127.0.0.1:9/x", extra).request(Bytes::new(), "msg_1");
        assert_eq!(request.headers().get_all(HOST).iter().collect::<Vec<_>>(), ["virtual.example"]);
    }

    #[test]
    fn every_request_gets_its_own_webhook_id_once() {
        let builder = builder("http://127.0.0.1:9/x", HeaderMap::new());
        let first = builder.build(&sample_event(), "msg_a").unwrap();
        let second = builder.request(Bytes::from_static(b"{}"), "msg_b");
        assert_eq!(first.headers().get_all(WEBHOOK_ID).iter().collect::<Vec<_>>(), ["msg_a"]);
        assert_eq!(second.headers().get_all(WEBHOOK_ID).iter().collect::<Vec<_>>(), ["msg_b"]);
        // An id that is not a valid header value sends no webhook-id at all, not an empty one.
        assert!(builder.request(Bytes::new(), "bad\nid").headers().get(WEBHOOK_ID).is_none());
    }

    fn signer(secret: &str) -> Signer {
        let config = super::super::signing::SigningConfig { secrets: vec![secret.into()] };
        config.compile().unwrap().0
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_signing_builder_signs_exactly_the_bytes_it_sends() {
        let builder = builder("http://127.0.0.1:9/x", HeaderMap::new()).with_signer(Some(signer(SECRET)));
        let request = builder.build(&sample_event(), "msg_a").unwrap();
        let headers = request.headers();
        let timestamp = headers[WEBHOOK_TIMESTAMP].as_bytes();
        assert!(!timestamp.is_empty() && timestamp.iter().all(u8::is_ascii_digit));
        let body = builder.body(&sample_event()).unwrap();
        let expected = signer(SECRET).signature("msg_a", timestamp, &body).unwrap();
        assert_eq!(headers.get_all(WEBHOOK_SIGNATURE).iter().collect::<Vec<_>>(), [expected]);
        assert_eq!(headers.get_all(WEBHOOK_TIMESTAMP).iter().count(), 1);
        // Without a usable id there is nothing to sign: no placeholder goes out either.
        let bad = builder.request(Bytes::new(), "bad\nid");
        for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
            assert!(bad.headers().get(&name).is_none(), "{name}");
        }
    }

    #[test]
    fn an_unsigned_builder_sends_no_signature_headers() {
        let request = builder("http://127.0.0.1:9/x", HeaderMap::new()).request(Bytes::new(), "msg_a");
        assert!(request.headers().get(WEBHOOK_TIMESTAMP).is_none());
        assert!(request.headers().get(WEBHOOK_SIGNATURE).is_none());
        let unsigned_again = builder("http://127.0.0.1:9/x", HeaderMap::new())
            .with_signer(Some(signer(SECRET)))
            .with_signer(None)
            .request(Bytes::new(), "msg_a");
        assert!(unsigned_again.headers().get(WEBHOOK_SIGNATURE).is_none());
    }
}
