//! The `http_server` source: incident events POSTed over HTTP/1.1.
//!
//! One route takes events (`POST <path>`); its body is decoded whole by the source's
//! `decoding` (see [`super::decode`]) — one JSON value, an array, or NDJSON — and either
//! every event in it is sent on or none is. With `auth` set, requests without the right
//! credentials are answered 401 (`GET /health` needs none). The answer is sent only
//! once the events are in the sinks' buffers, so a full sink holds the sender back
//! (back-pressure reaches the client). `GET /health` answers `{"status":"ok"}`, or 503
//! `{"status":"degraded"}` while a disk buffer fails to store events.
//!
//! | Answer | When |
//! |--------|------|
//! | 200 `{"accepted": N}` | the body decoded and its `N` events were sent on |
//! | 400 `{"error": "..."}` | the body did not decode, or nests too deep (nothing of it was sent) |
//! | 401 (`WWW-Authenticate`) | `auth` is set and the credentials are missing or wrong |
//! | 404 | a path other than `path` or `/health` |
//! | 405 (`Allow: POST`) | a method other than POST on `path` |
//! | 413 | the body is larger than `max_body_bytes` |
//! | 503 + `Retry-After` | the sinks' buffers stayed full for `full_wait_ms` (nothing of the body was taken), or a disk buffer could not store the events (a full disk), or the pipeline is shutting down |
//! | 500 / 400 | with `acknowledgements = true`: an event failed / was refused for good |
//!
//! On shutdown the listener is closed at once (new connections are refused), idle
//! keep-alive connections are closed, and requests in flight get up to
//! [`SHUTDOWN_GRACE`] to finish, and no longer than the pipeline's
//! `shutdown_timeout_secs`: the host drops the source when that deadline passes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{AuthConfig, Authenticator};
use super::decode::{Decoder, DecodingConfig};
use super::validated::ValidatedSource;
use crate::buffer::{SendError, SourceSender};
use crate::component::{Source, SourceConfig, SourceContext};
use crate::error::{BuildError, FieldError};
use crate::event::{AckGroup, Outcome};
use crate::stats::SourceStats;

/// How long requests in flight may take to finish once shutdown begins; connections
/// still busy after that are dropped. The host stops the source sooner when the
/// pipeline's `shutdown_timeout_secs` passes first (topology.rs), so it bounds the whole
/// shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of the health route, answered whatever `path` is.
const HEALTH_PATH: &str = "/health";

fn default_path() -> String {
    "/".to_string()
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

/// `type = "http_server"`: receives incident events over HTTP POST.
///
/// ```toml
/// [sources.alerts]
/// type = "http_server"
/// address = "127.0.0.1:8687"
/// path = "/events"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerSourceConfig {
    /// Address to listen on, e.g. `127.0.0.1:8687` or `[::1]:8687` (`0.0.0.0:8687` for
    /// every interface). Required.
    pub address: SocketAddr,
    /// Path events are POSTed to. Only this exact path takes events (the query string
    /// is ignored); other paths are answered 404, except `GET /health`. Must start with
    /// `/`. Default: `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest request body accepted, in bytes; a larger body is answered 413 and none
    /// of its events are taken. Must be above 0. Default: `10485760` (10 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How bodies become incident events: `decoding.codec` = `incident` (the default),
    /// `alertmanager` or `mapped`, plus `decoding.max_depth` (default 32).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Credentials senders must present: `auth.strategy = "bearer"` with `auth.token`, or
    /// `"basic"` with `auth.username` and `auth.password`. Default: none (every request
    /// is taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// End-to-end acknowledgements: answer only once every sink that took the request's
    /// events is done with them: 200 when all were delivered (or filtered out), 400 when an
    /// endpoint refused one for good, 500 when one failed for good. Without it, 200 means
    /// "accepted into the buffers". Default: false.
    #[serde(default)]
    pub acknowledgements: bool,
    /// `Retry-After` (seconds) of a 503 answered because the sinks' buffers are full.
    /// Default: 5.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
    /// Back-pressure: how long (milliseconds) a request whose events the sinks have no
    /// room for waits for room before it is answered 503 (with `Retry-After`). While it
    /// waits, its sender is slowed down rather than refused, and memory stays bounded by
    /// the buffers. `0` answers 503 at once. Default: 5000.
    #[serde(default = "default_full_wait_ms")]
    pub full_wait_ms: u64,
}

fn default_full_wait_ms() -> u64 {
    5000
}

fn default_retry_after_secs() -> u32 {
    5
}

impl HttpServerSourceConfig {
    /// A config listening on `address` with every other field at its default.
    pub fn new(address: SocketAddr) -> Self {
        HttpServerSourceConfig {
            address,
            path: default_path(),
            max_body_bytes: default_max_body_bytes(),
            decoding: DecodingConfig::default(),
            auth: None,
            acknowledgements: false,
            retry_after_secs: default_retry_after_secs(),
            full_wait_ms: default_full_wait_ms(),
        }
    }

    /// Checks every field once and builds the parts the running source needs; every
    /// problem is reported: `path` must start with `/` (and hold no `?`, `#` or
    /// whitespace), `max_body_bytes` must be above 0, and `decoding` and `auth` must build.
    pub fn validate(&self) -> Result<ValidatedHttpServer, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.path.starts_with('/') {
            errors.push(FieldError::new("path", format!("must start with `/`, got `{}`", self.path)));
        } else if let Some(c) = self.path.chars().find(|c| matches!(c, '?' | '#') || c.is_whitespace()) {
            errors.push(FieldError::new("path", format!("must be a plain path without {c:?}, got `{}`", self.path)));
        }
        if self.max_body_bytes == 0 {
            errors.push(FieldError::new("max_body_bytes", "must be above 0"));
        }
        let decoder = self.decoding.validate().map_err(|e| errors.extend(e)).ok();
        let auth = self.auth.as_ref().map(Authenticator::new).transpose().map_err(|e| errors.extend(e)).ok();
        match (decoder, auth) {
            (Some(decoder), Some(auth)) if errors.is_empty() => {
                Ok(ValidatedHttpServer { config: self.clone(), decoder, auth })
            }
            _ => Err(errors),
        }
    }
}

/// An `http_server` source's config, checked, with its decoder and authenticator built.
#[derive(Debug, Clone)]
pub struct ValidatedHttpServer {
    /// The config it came from.
    pub config: HttpServerSourceConfig,
    decoder: Decoder,
    auth: Option<Authenticator>,
}

/// Compared by the config they came from.
impl PartialEq for ValidatedHttpServer {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl ValidatedSource for ValidatedHttpServer {
    fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

#[async_trait]
impl SourceConfig for ValidatedHttpServer {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        let config = &self.config;
        let listener = cx
            .listeners
            .listen(config.address)
            .map_err(|e| BuildError::other(format!("cannot listen on {}: {e}", config.address)))?;
        let local = listener.local_addr().unwrap_or(config.address);
        info!(source = %cx.name, address = %local, path = %config.path, "http_server source listening");
        let state = Arc::new(State {
            name: cx.name,
            path: config.path.clone(),
            max_body_bytes: config.max_body_bytes,
            decoder: self.decoder.clone(),
            auth: self.auth.clone(),
            acknowledgements: config.acknowledgements,
            retry_after_secs: config.retry_after_secs,
            full_wait: Duration::from_millis(config.full_wait_ms),
            out: cx.out,
            shutdown: cx.shutdown.clone(),
            stats: cx.stats,
        });
        Ok(Box::pin(serve(listener, state, cx.shutdown)))
    }
}

/// Validate, then build: for hosts that hold a config rather than a checked one.
#[async_trait]
impl SourceConfig for HttpServerSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        self.validate().map_err(BuildError::invalid)?.build(cx).await
    }
}

/// What every request handler shares.
#[derive(Debug)]
struct State {
    name: String,
    path: String,
    max_body_bytes: usize,
    decoder: Decoder,
    auth: Option<Authenticator>,
    acknowledgements: bool,
    retry_after_secs: u32,
    full_wait: Duration,
    out: SourceSender,
    /// Cancelled when the pipeline shuts down: a request waiting for room stops waiting.
    shutdown: CancellationToken,
    /// Requests answered, by status.
    stats: Arc<SourceStats>,
}

/// Accepts connections until `shutdown`, then drains them.
async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) -> Result<(), ()> {
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = Arc::clone(&state);
                    let service = service_fn(move |req| handle(Arc::clone(&state), peer, req));
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        let result = tokio::select! {
                            result = conn.as_mut() => result,
                            _ = shutdown.cancelled() => {
                                // Finish the request in flight (if any), then close.
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            debug!(peer = %peer, error = %e, "http_server connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Mostly out of file descriptors or a connection reset before it was
                    // accepted; wait a little rather than spin.
                    warn!(source = %state.name, error = %e, "http_server failed to accept a connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }

    // Stop accepting: new connections are refused from here on.
    drop(listener);
    debug!(source = %state.name, connections = connections.len(), "http_server shutting down");
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        warn!(
            source = %state.name,
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "http_server requests still in flight after the grace period were dropped"
        );
    }
    // Drops (and so closes) whatever is left, releasing its hold on the sink inputs.
    connections.shutdown().await;
    info!(source = %state.name, "http_server source stopped");
    Ok(())
}

type HttpResponse = Response<Full<Bytes>>;

/// Routes one request. Never fails: every problem is an HTTP answer.
async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path();
    let response = if path == state.path {
        if req.method() == Method::POST {
            ingest(&state, peer, req).await
        } else if path == HEALTH_PATH && req.method() == Method::GET {
            health(&state)
        } else {
            let allow = if path == HEALTH_PATH { "GET, POST" } else { "POST" };
            let message = format!("method {} is not allowed on {}; events are POSTed", req.method(), state.path);
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, message);
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            response
        }
    } else if path == HEALTH_PATH {
        if req.method() == Method::GET {
            health(&state)
        } else {
            let message = format!("method {} is not allowed on {HEALTH_PATH}; use GET", req.method());
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, message);
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            response
        }
    } else {
        debug!(source = %state.name, peer = %peer, path = %path, "http_server: no such route");
        let message = format!("no route for {path}; events are POSTed to {}", state.path);
        error(StatusCode::NOT_FOUND, message)
    };
    state.stats.requests.answer(response.status().as_u16());
    Ok(response)
}

/// `POST <path>`: checks credentials, reads, decodes and sends on one body.
async fn ingest(state: &State, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    if let Some(auth) = &state.auth {
        if !auth.allows(req.headers()) {
            warn!(source = %state.name, peer = %peer, "http_server rejected a request: missing or wrong credentials");
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials".to_string());
            response.headers_mut().insert(WWW_AUTHENTICATE, auth.challenge().clone());
            return response;
        }
    }
    let limit = state.max_body_bytes;
    // A declared content-length sets the lower bound of the size hint.
    let declared = req.body().size_hint().lower();
    if declared > limit as u64 {
        let reason = format!("body of {declared} bytes is larger than the limit of {limit} bytes");
        warn!(source = %state.name, peer = %peer, reason = %reason, "http_server rejected a body");
        return error(StatusCode::PAYLOAD_TOO_LARGE, reason);
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let reason = format!("body is larger than the limit of {limit} bytes");
            warn!(source = %state.name, peer = %peer, reason = %reason, "http_server rejected a body");
            return error(StatusCode::PAYLOAD_TOO_LARGE, reason);
        }
        Err(e) => {
            let reason = format!("could not read the body: {e}");
            warn!(source = %state.name, peer = %peer, reason = %reason, "http_server rejected a body");
            return error(StatusCode::BAD_REQUEST, reason);
        }
    };
    let events = match state.decoder.decode_sized(&body) {
        Ok(events) => events,
        Err(e) => {
            warn!(source = %state.name, peer = %peer, reason = %e, "http_server rejected a body");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let count = events.len();
    let ack = state.acknowledgements.then(AckGroup::new);
    // Waiting for room ends at shutdown: the sender is better told at once to retry later.
    let sent = tokio::select! {
        biased;
        sent = state.out.send_within(events, ack.as_ref(), Some(state.full_wait)) => sent,
        () = state.shutdown.cancelled() => Err(SendError::Closed),
    };
    let report = match sent {
        Ok(report) => report,
        Err(e) => {
            warn!(source = %state.name, peer = %peer, reason = %e, "http_server refused a body");
            // A storage error names files of the server: the client is told no more than what
            // failed (the log has the rest).
            let message = match &e {
                SendError::Storage(_) => {
                    "the events could not be stored (a disk buffer failed); retry later".to_string()
                }
                other => other.to_string(),
            };
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
            if let SendError::Storage(_) = e {
                state.stats.storage_failing.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let SendError::Full { .. } | SendError::Storage(_) = e {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(state.retry_after_secs));
            }
            return response;
        }
    };
    state.stats.storage_failing.store(false, std::sync::atomic::Ordering::Relaxed);
    debug!(source = %state.name, peer = %peer, events = count, "http_server accepted a batch");
    let mut answer = json!({ "accepted": count });
    if !report.dead_lettered.is_empty() {
        answer["dead_lettered_by"] = json!(report.dead_lettered);
    }
    let Some(ack) = ack else {
        return json_response(StatusCode::OK, &answer);
    };
    // End-to-end acknowledgement: answer once every sink that took the events is done.
    let outcome = ack.wait().await;
    let (status, delivered) = match outcome {
        Outcome::Delivered | Outcome::Filtered => (StatusCode::OK, true),
        Outcome::Rejected => (StatusCode::BAD_REQUEST, false),
        Outcome::Failed | Outcome::Dropped => (StatusCode::INTERNAL_SERVER_ERROR, false),
    };
    answer["delivered"] = json!(delivered);
    if !delivered {
        answer["error"] = json!(match outcome {
            Outcome::Rejected => "an endpoint refused the events for good; they are in the dead letters",
            _ => "the events could not be delivered; they are in the dead letters",
        });
    }
    json_response(status, &answer)
}

/// `GET /health`: 200 `{"status":"ok"}`, or 503 `{"status":"degraded", …}` while the
/// sinks' disk storage fails (from a failed batch until the next one is stored).
fn health(state: &State) -> HttpResponse {
    if state.stats.storage_failing.load(std::sync::atomic::Ordering::Relaxed) {
        let reason = "the last events could not be stored: a disk buffer failed (see the server log)";
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "degraded", "reason": reason }));
    }
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    json_response(status, &json!({ "error": message }))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpServerSourceConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_apply() {
        let config = parse(r#"address = "127.0.0.1:8687""#).unwrap();
        assert_eq!(config, HttpServerSourceConfig::new("127.0.0.1:8687".parse().unwrap()));
        assert_eq!(config.path, "/");
        assert_eq!(config.max_body_bytes, 10_485_760);
        assert!(config.validate().is_ok());

        let v6 = parse(r#"address = "[::1]:8687""#).unwrap();
        assert!(v6.address.is_ipv6());
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let err = parse("address = \"127.0.0.1:1\"\nport = 3").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = parse(r#"path = "/x""#).unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
        assert!(parse(r#"address = "localhost""#).is_err());
    }

    #[test]
    fn validate_names_the_fields() {
        let mut config = HttpServerSourceConfig::new("127.0.0.1:1".parse().unwrap());
        config.path = "events".into();
        config.max_body_bytes = 0;
        let errors = config.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["path", "max_body_bytes"]);
        assert!(errors[0].message.contains("start with `/`"), "{}", errors[0]);

        config.path = "/events?x=1".into();
        config.max_body_bytes = 1;
        assert_eq!(config.validate().unwrap_err().len(), 1);
        config.path = "/events/in".into();
        assert!(config.validate().is_ok());
    }

    fn context() -> SourceContext {
        let (out, _rx) = crate::buffer::event_channel(1);
        SourceContext {
            name: "web".into(),
            out,
            shutdown: CancellationToken::new(),
            stats: Default::default(),
            listeners: Default::default(),
        }
    }

    #[tokio::test]
    async fn invalid_config_does_not_build() {
        let mut config = HttpServerSourceConfig::new("127.0.0.1:0".parse().unwrap());
        config.path = "nope".into();
        match config.build(context()).await {
            Err(BuildError::Invalid { errors }) => assert_eq!(errors[0].field, "path"),
            other => panic!("expected an invalid config, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let config = HttpServerSourceConfig::new(address);
        match config.build(context()).await {
            Err(BuildError::Other { message }) => {
                // The host adds "source `NAME`: " in front.
                assert!(message.starts_with(&format!("cannot listen on {address}: ")), "{message}");
            }
            other => panic!("expected a bind failure, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn source_resolves_when_cancelled_with_no_connections() {
        let cx = context();
        let shutdown = cx.shutdown.clone();
        let source = HttpServerSourceConfig::new("127.0.0.1:0".parse().unwrap()).build(cx).await.unwrap();
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), source).await.expect("resolves");
        assert_eq!(result, Ok(()));
    }
}
