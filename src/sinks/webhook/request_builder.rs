//! Event → HTTP request: body from the template, headers, Basic auth from the URL.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::Full;

use super::client::Body;
use super::target::Target;
use crate::event::IncidentEvent;
use crate::template::{BodyTemplate, RenderError};

/// The header carrying an event's stable delivery id (Standard Webhooks).
pub const WEBHOOK_ID: &str = "webhook-id";

/// The `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("webhook-sink/", env!("CARGO_PKG_VERSION"));

/// Builds a sink's requests. Cheap to share: everything is computed once at load.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    target: Target,
    body: BodyTemplate,
    headers: HeaderMap,
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
        RequestBuilder { target, body, headers }
    }

    /// Where the requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Renders the body for `event`.
    pub fn body(&self, event: &IncidentEvent) -> Result<Bytes, RenderError> {
        self.body.render(event)
    }

    /// The POST request for `event`, with `webhook_id` as its delivery id.
    pub fn build(&self, event: &IncidentEvent, webhook_id: &str) -> Result<Request<Body>, RenderError> {
        Ok(self.request(self.body(event)?, webhook_id))
    }

    /// The POST request carrying `body`. Every attempt of one event gets the same
    /// `webhook-id`, so a receiver can drop duplicates.
    pub fn request(&self, body: Bytes, webhook_id: &str) -> Request<Body> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.uri().clone();
        let mut headers = self.headers.clone();
        if let Ok(id) = HeaderValue::from_str(webhook_id) {
            headers.insert(WEBHOOK_ID, id);
        }
        *request.headers_mut() = headers;
        request
    }
}
