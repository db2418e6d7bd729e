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
//! | 408 (closes) | the body did not arrive whole within `body_timeout_secs` |
//! | 413 | the body is larger than `max_body_bytes`, or holds more events (or bytes of them) than a sink's whole buffer takes: its message names the sink and its limit |
//! | 503 + `Retry-After` | the sinks' buffers stayed full for `full_wait_ms` (nothing of the body was taken), or a disk buffer could not store the events (a full disk), or the pipeline is shutting down |
//! | 503 + `Retry-After` (closes) | `max_inflight_body_bytes` of bodies are held already, or `max_connections` connections are open |
//! | 500 / 400 | with `acknowledgements = true`: an event failed / was refused for good |
//!
//! # Bounds
//!
//! What one sender, or many, can make the source hold is bounded, and each bound is
//! answered rather than waited out:
//!
//! - **Connections**: at most `max_connections` are served (fewer when the open-file
//!   limit would not allow that many, with a warning). Past it, up to
//!   [`HEALTH_SLOTS`] more are accepted only to answer `GET /health` (200) and anything
//!   else with 503 + `Retry-After`, then closed; past those, a connection is closed as
//!   soon as it is accepted. So a flood of connections never makes `/health` time out.
//! - **Time**: a request's head must arrive within [`HEADER_READ_TIMEOUT`] (an idle
//!   keep-alive connection is closed after it too), and its body within
//!   `body_timeout_secs` of the head, or it is answered 408 and the connection closed.
//! - **Memory**: request bodies are counted, across every connection, against
//!   `max_inflight_body_bytes` as they arrive, and once decoded their events are counted
//!   instead (at their size in memory, several times their JSON for small events), until
//!   they are in the sinks' buffers. A request that would go over it is not kept: nothing
//!   of it is taken, the rest of its body is read and thrown away (so that a client that
//!   reads only once it has sent everything sees the answer), and it is answered 503 +
//!   `Retry-After`; nothing waits for the budget. Decoding stops
//!   as soon as a body holds more events than the smallest sink buffer takes (413), so a
//!   body of many tiny events is never decoded whole for nothing.
//!
//! A body is refused whole when it is larger than a sink's whole buffer, never split:
//! splitting it would break the promise that a body is taken whole or not at all, and
//! what an acknowledgement answers for.
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
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{AuthConfig, Authenticator};
use super::decode::{CappedDecodeError, DecodeCap, Decoder, DecodingConfig};
use super::validated::ValidatedSource;
use crate::buffer::{SendError, SourceSender};
use crate::component::{Source, SourceConfig, SourceContext};
use crate::error::{positive_secs, BuildError, FieldError};
use crate::event::{AckGroup, Decoded, Outcome};
use crate::stats::SourceStats;

/// How long requests in flight may take to finish once shutdown begins; connections
/// still busy after that are dropped. The host stops the source sooner when the
/// pipeline's `shutdown_timeout_secs` passes first (topology.rs), so it bounds the whole
/// shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's head; also how long an idle keep-alive
/// connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections accepted beyond `max_connections` only to answer `GET /health` (and
/// anything else with 503); beyond these, a connection is closed at once.
pub const HEALTH_SLOTS: usize = 32;

/// How long a connection over `max_connections` may take to send its request's head.
const OVER_CAP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest read buffer of a connection (hyper's default is about 400 KB): what a
/// connection can hold beyond the bodies counted against `max_inflight_body_bytes`.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// File descriptors left for everything but the source's connections: a quarter of the
/// open-file limit (sinks' connections, buffers, the API, logs).
const OTHER_FILES_SHARE: u64 = 4;

/// The path of the health route, answered whatever `path` is.
const HEALTH_PATH: &str = "/health";

fn default_path() -> String {
    "/".to_string()
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_max_connections() -> usize {
    512
}

fn default_body_timeout_secs() -> f64 {
    30.0
}

fn default_max_inflight_body_bytes() -> u64 {
    128 * 1024 * 1024
}

/// Largest `max_inflight_body_bytes` (1 TiB); also keeps its count in KiB within `u32`.
const MAX_INFLIGHT_LIMIT: u64 = 1 << 40;

/// Longest `body_timeout_secs` (a day).
const MAX_BODY_TIMEOUT_SECS: f64 = 86_400.0;

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
    /// Most connections served at once. Past it, a few more ([`HEALTH_SLOTS`]) are accepted
    /// only to answer `GET /health`, and anything else with 503 + `Retry-After`, then
    /// closed; past those, connections are closed as soon as accepted. Lowered, with a
    /// warning, when the open-file limit (`ulimit -n`) would not allow that many. At least
    /// 1. Default: 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a request's body may take to arrive, whole, once its head has; a body
    /// still incomplete then (a stalled or trickling sender) is answered 408 and its
    /// connection closed. Above 0, at most 86400. Default: 30.
    #[serde(default = "default_body_timeout_secs")]
    pub body_timeout_secs: f64,
    /// Most bytes of request bodies held at once, across every connection: bodies as they
    /// arrive, then their decoded events (at their size in memory) until they are in the
    /// sinks' buffers. A request that would go over it is not kept (the rest of its body is
    /// read and thrown away) and is answered 503 + `Retry-After`; nothing of it is taken.
    /// At least `max_body_bytes`, at most 1 TiB.
    /// Default: `134217728` (128 MiB).
    #[serde(default = "default_max_inflight_body_bytes")]
    pub max_inflight_body_bytes: u64,
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
            max_connections: default_max_connections(),
            body_timeout_secs: default_body_timeout_secs(),
            max_inflight_body_bytes: default_max_inflight_body_bytes(),
        }
    }

    /// Checks every field once and builds the parts the running source needs; every
    /// problem is reported: `path` must start with `/` (and hold no `?`, `#` or
    /// whitespace), `max_body_bytes` and `max_connections` must be above 0,
    /// `body_timeout_secs` a positive number of seconds (at most a day),
    /// `max_inflight_body_bytes` at least `max_body_bytes` (and at most 1 TiB), and
    /// `decoding` and `auth` must build.
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
        if self.max_connections == 0 {
            errors.push(FieldError::new("max_connections", "must be at least 1"));
        }
        let timeout = self.body_timeout_secs;
        if positive_secs(timeout, MAX_BODY_TIMEOUT_SECS).is_none() {
            errors.push(FieldError::new(
                "body_timeout_secs",
                format!("must be a number of seconds above 0 and at most {MAX_BODY_TIMEOUT_SECS}, got {timeout}"),
            ));
        }
        if self.max_inflight_body_bytes < self.max_body_bytes as u64 {
            errors.push(FieldError::new(
                "max_inflight_body_bytes",
                format!(
                    "must be at least max_body_bytes ({}), or a body that large could never be read; got {}",
                    self.max_body_bytes, self.max_inflight_body_bytes
                ),
            ));
        } else if self.max_inflight_body_bytes > MAX_INFLIGHT_LIMIT {
            errors.push(FieldError::new(
                "max_inflight_body_bytes",
                format!("must be at most {MAX_INFLIGHT_LIMIT} (1 TiB), got {}", self.max_inflight_body_bytes),
            ));
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
        let slots = ConnectionSlots::new(config.max_connections, open_file_limit());
        if slots.connections < config.max_connections {
            warn!(
                source = %cx.name,
                max_connections = config.max_connections,
                using = slots.connections,
                open_file_limit = slots.open_file_limit,
                "http_server: the open-file limit (ulimit -n) leaves room for fewer connections than \
                 max_connections; raise the limit (LimitNOFILE= under systemd) or lower max_connections"
            );
        }
        let state = Arc::new(State {
            name: cx.name,
            path: config.path.clone(),
            max_body_bytes: config.max_body_bytes,
            decoder: self.decoder.clone(),
            auth: self.auth.clone(),
            acknowledgements: config.acknowledgements,
            retry_after_secs: config.retry_after_secs,
            full_wait: Duration::from_millis(config.full_wait_ms),
            body_timeout: Duration::from_secs_f64(config.body_timeout_secs),
            budget: Budget::new(config.max_inflight_body_bytes),
            max_connections: slots.connections,
            refusals: Throttle::default(),
            out: cx.out,
            shutdown: cx.shutdown.clone(),
            stats: cx.stats,
        });
        Ok(Box::pin(serve(listener, state, slots, cx.shutdown)))
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
    /// `body_timeout_secs`.
    body_timeout: Duration,
    /// `max_inflight_body_bytes`.
    budget: Budget,
    /// Connections served at once (`max_connections`, or fewer for the open-file limit).
    max_connections: usize,
    /// Warnings about refused connections, at most one every few seconds.
    refusals: Throttle,
    out: SourceSender,
    /// Cancelled when the pipeline shuts down: a request waiting for room stops waiting.
    shutdown: CancellationToken,
    /// Requests answered, by status.
    stats: Arc<SourceStats>,
}

/// How many connections are served, and how many more only for `/health`.
#[derive(Debug)]
struct ConnectionSlots {
    /// Served in full: `max_connections`, or fewer when the open-file limit is lower.
    connections: usize,
    /// Beyond those: `/health` and 503 only.
    health: usize,
    /// The soft open-file limit, when known.
    open_file_limit: Option<u64>,
}

impl ConnectionSlots {
    /// A quarter of the open-file limit is left for everything else, then the health slots
    /// (at most an eighth of it) are set aside; the served connections get the rest.
    fn new(max_connections: usize, open_file_limit: Option<u64>) -> Self {
        let (mut connections, mut health) = (max_connections, HEALTH_SLOTS);
        if let Some(limit) = open_file_limit {
            health = health.min((limit / 8) as usize).max(1);
            let room = limit.saturating_sub(limit / OTHER_FILES_SHARE).saturating_sub(health as u64);
            connections = connections.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1);
        }
        ConnectionSlots { connections, health, open_file_limit }
    }
}

/// The soft limit on open files, where the system says (Linux's `/proc/self/limits`);
/// `None` when unknown or unlimited.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    // "Max open files            1024                 524288               files"
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `max_inflight_body_bytes`, counted in KiB permits of a semaphore that is never waited
/// on: a request that finds too little free is answered 503 at once, so no request holds
/// part of the budget while waiting for the rest.
#[derive(Debug)]
struct Budget {
    permits: Arc<Semaphore>,
    /// All of it, in KiB.
    total: usize,
    /// All of it, in bytes (as configured).
    bytes: u64,
}

/// The part of the [`Budget`] one request holds; given back when dropped.
#[derive(Debug, Default)]
struct Held(Option<OwnedSemaphorePermit>);

impl Budget {
    fn new(bytes: u64) -> Self {
        let total = Self::kib(bytes);
        Budget { permits: Arc::new(Semaphore::new(total)), total, bytes }
    }

    fn kib(bytes: u64) -> usize {
        usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX)
    }

    /// Makes `held` cover `bytes` (all of the budget at most): takes more if free now, or
    /// gives back what is beyond. `false` when not that much is free.
    fn cover(&self, held: &mut Held, bytes: u64) -> bool {
        let want = Self::kib(bytes).min(self.total);
        let have = held.0.as_ref().map_or(0, |p| p.num_permits());
        if want > have {
            // The budget is capped at 2^30 KiB, so this always fits; if it ever did not, the
            // request is refused like one over the budget.
            let Ok(more) = u32::try_from(want - have) else { return false };
            let Ok(more) = self.permits.clone().try_acquire_many_owned(more) else { return false };
            match &mut held.0 {
                Some(permit) => permit.merge(more),
                None => held.0 = Some(more),
            }
        } else if want < have {
            if let Some(permit) = &mut held.0 {
                drop(permit.split(have - want));
            }
        }
        true
    }
}

/// Lets a warning through at most once every [`Throttle::EVERY`], counting the ones held
/// back in between.
#[derive(Debug, Default)]
struct Throttle {
    state: std::sync::Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(n)` when a warning may go out now, `n` being how many were held back since
    /// the last one.
    fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        match state.0 {
            Some(last) if now < last + Self::EVERY => {
                state.1 += 1;
                None
            }
            _ => {
                let held_back = state.1;
                *state = (Some(now), 0);
                Some(held_back)
            }
        }
    }
}

/// Which kind of connection a task serves.
enum Slot {
    /// Within `max_connections`: every route.
    Served,
    /// Beyond it, in a health slot: `/health`, and 503 for anything else.
    OverCap,
}

/// Accepts connections until `shutdown`, then drains them.
async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    slots: ConnectionSlots,
    shutdown: CancellationToken,
) -> Result<(), ()> {
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(READ_BUFFER_BYTES);
    let mut over_cap_builder = http1::Builder::new();
    over_cap_builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(OVER_CAP_HEADER_TIMEOUT)
        .max_buf_size(READ_BUFFER_BYTES);
    let served = Arc::new(Semaphore::new(slots.connections));
    let health = Arc::new(Semaphore::new(slots.health));

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (slot, permit) = match served.clone().try_acquire_owned() {
                        Ok(permit) => (Slot::Served, permit),
                        Err(_) => match health.clone().try_acquire_owned() {
                            Ok(permit) => {
                                if let Some(held_back) = state.refusals.allow() {
                                    warn!(
                                        source = %state.name, peer = %peer,
                                        max_connections = state.max_connections, similar_since = held_back,
                                        "http_server: too many connections; this one only gets /health or 503"
                                    );
                                }
                                (Slot::OverCap, permit)
                            }
                            Err(_) => {
                                if let Some(held_back) = state.refusals.allow() {
                                    warn!(
                                        source = %state.name, peer = %peer,
                                        max_connections = state.max_connections, similar_since = held_back,
                                        "http_server: too many connections, and the health slots are taken; closed"
                                    );
                                }
                                drop(stream);
                                continue;
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    let io = TokioIo::new(stream);
                    let state = Arc::clone(&state);
                    let shutdown = shutdown.clone();
                    match slot {
                        Slot::Served => {
                            let service = service_fn(move |req| handle(Arc::clone(&state), peer, req));
                            let conn = builder.serve_connection(io, service);
                            connections.spawn(drive(conn, peer, shutdown, permit));
                        }
                        Slot::OverCap => {
                            let service = service_fn(move |req| over_cap(Arc::clone(&state), req));
                            let conn = over_cap_builder.serve_connection(io, service);
                            connections.spawn(drive(conn, peer, shutdown, permit));
                        }
                    }
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

/// Serves one connection until it ends, or until shutdown lets its request in flight
/// finish; its slot (`permit`) is given back when it ends.
async fn drive<S>(
    conn: http1::Connection<TokioIo<tokio::net::TcpStream>, S>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    drop(permit);
}

type HttpResponse = Response<Full<Bytes>>;

/// A connection over `max_connections`: `GET /health` is answered, anything else 503
/// with `Retry-After`; the connection is closed after one answer.
async fn over_cap(state: Arc<State>, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let response = if req.uri().path() == HEALTH_PATH && req.method() == Method::GET {
        health(&state)
    } else {
        let message =
            format!("too many connections: {} are open (max_connections); retry later", state.max_connections);
        closing(busy(&state, message))
    };
    state.stats.requests.answer(response.status().as_u16());
    Ok(response)
}

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
    // The part of max_inflight_body_bytes this request holds, until its events are in the
    // buffers (or it is answered).
    let mut held = Held::default();
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut incoming = req.into_body();
    let body = match read_body(state, &mut incoming, &mut held, deadline).await {
        Ok(body) => body,
        Err(refused) => {
            if let BodyError::Busy { received } = refused {
                // Most clients read the answer only once they have sent the whole body:
                // closing on them now would show them a broken connection, not the 503
                // and its Retry-After. The rest is read and thrown away, which holds no
                // memory, within the body's time and size limits.
                drop(held);
                discard(&mut incoming, deadline, state.max_body_bytes.saturating_sub(received)).await;
            }
            let (status, reason) = match refused {
                BodyError::TooLarge => {
                    (StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than the limit of {limit} bytes"))
                }
                BodyError::TimedOut { received } => (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive whole within body_timeout_secs ({} s; {received} bytes came); \
                         nothing of it was taken",
                        state.body_timeout.as_secs_f64()
                    ),
                ),
                BodyError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, in_flight_message(state)),
                BodyError::Read(e) => (StatusCode::BAD_REQUEST, format!("could not read the body: {e}")),
            };
            warn!(source = %state.name, peer = %peer, status = status.as_u16(), reason = %reason, "http_server rejected a body");
            let response = match status {
                StatusCode::SERVICE_UNAVAILABLE => busy(state, reason),
                _ => error(status, reason),
            };
            // The rest of the body is not read: the connection cannot carry another request.
            return closing(response);
        }
    };
    // Decoding stops once the body holds more than the smallest sink buffer takes.
    let cap = state
        .out
        .batch_limits()
        .map_or(DecodeCap::NONE, |limits| DecodeCap { events: limits.events, bytes: limits.bytes });
    let events = match state.decoder.decode_sized_within(&body, cap) {
        Ok(events) => events,
        Err(CappedDecodeError::Invalid(e)) => {
            warn!(source = %state.name, peer = %peer, reason = %e, "http_server rejected a body");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(CappedDecodeError::OverCap { events, bytes }) => {
            let reason = match state.out.too_large(events, bytes, true) {
                Some(too_large) => too_large.to_string(),
                // A reload raised the bounds in between: the sender may try again.
                None => format!("the body holds more than {} events or {} bytes of them", cap.events, cap.bytes),
            };
            warn!(source = %state.name, peer = %peer, reason = %reason, "http_server refused a body");
            return error(StatusCode::PAYLOAD_TOO_LARGE, reason);
        }
    };
    drop(body);
    // From here the events, not the body, are what the request holds.
    if !state.budget.cover(&mut held, decoded_bytes(&events)) {
        drop(events);
        let reason = in_flight_message(state);
        warn!(source = %state.name, peer = %peer, reason = %reason, "http_server refused a body");
        return busy(state, reason);
    }
    let count = events.len();
    let ack = state.acknowledgements.then(AckGroup::new);
    // Waiting for room ends at shutdown: the sender is better told at once to retry later.
    let sent = tokio::select! {
        biased;
        sent = state.out.send_within(events, ack.as_ref(), Some(state.full_wait)) => sent,
        () = state.shutdown.cancelled() => Err(SendError::Closed),
    };
    // The events are in the buffers, which bound them, or gone.
    drop(held);
    let report = match sent {
        Ok(report) => report,
        Err(e) => {
            warn!(source = %state.name, peer = %peer, reason = %e, "http_server refused a body");
            if let SendError::TooLarge { .. } = e {
                return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
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
    // Degraded while a disk buffer fails, even when the batch went to the other sinks.
    state.stats.storage_failing.store(!report.storage_failed.is_empty(), std::sync::atomic::Ordering::Relaxed);
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

/// Why a body was not read whole.
#[derive(Debug)]
enum BodyError {
    /// Larger than `max_body_bytes`.
    TooLarge,
    /// Not whole within `body_timeout_secs`.
    TimedOut {
        /// Bytes that had come.
        received: usize,
    },
    /// `max_inflight_body_bytes` are held already.
    Busy {
        /// Bytes that had come (and were let go).
        received: usize,
    },
    /// The connection failed, or the body was malformed (chunked encoding).
    Read(hyper::Error),
}

/// Reads a body whole by `deadline`, counting it against the in-flight budget (`held`)
/// as it arrives.
async fn read_body(
    state: &State,
    body: &mut Incoming,
    held: &mut Held,
    deadline: tokio::time::Instant,
) -> Result<Bytes, BodyError> {
    // Grown as the bytes come (a declared length is not trusted to reserve memory), so
    // what is held is what was received, in one piece. Keeping the chunks and joining them
    // at the end would save the copies of growing, but costs a `Bytes` handle (32 bytes)
    // per chunk: a sender of one-byte chunks would hold 32 times what the budget counts.
    let mut data: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut { received: data.len() }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing for us.
        let Ok(chunk) = frame.into_data() else { continue };
        let total = data.len() + chunk.len();
        if total > state.max_body_bytes {
            return Err(BodyError::TooLarge);
        }
        if !state.budget.cover(held, total as u64) {
            return Err(BodyError::Busy { received: total });
        }
        if data.is_empty() && body.is_end_stream() {
            // The whole body in one piece (the common case): no copy.
            return Ok(chunk);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(data))
}

/// Reads and throws away the rest of a body: until it ends, `deadline`, or `most` more
/// bytes, whichever comes first.
async fn discard(body: &mut Incoming, deadline: tokio::time::Instant, most: usize) {
    let mut left = most;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Some(chunk) = frame.data_ref() {
            let Some(rest) = left.checked_sub(chunk.len()) else { return };
            left = rest;
        }
    }
}

/// What decoded events take in memory, about: each event's typed form plus the text of
/// its fields (about its JSON size). For small events that is many times the body.
fn decoded_bytes(events: &[Decoded]) -> u64 {
    let each = std::mem::size_of::<Decoded>() as u64;
    events.iter().map(|decoded| decoded.size as u64 + each).sum()
}

fn in_flight_message(state: &State) -> String {
    format!(
        "too many request bodies in flight (max_inflight_body_bytes = {}); nothing of this one was taken: retry later",
        state.budget.bytes
    )
}

/// 503 with `Retry-After`: too much going on now.
fn busy(state: &State, message: String) -> HttpResponse {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(state.retry_after_secs));
    response
}

/// The response, closing its connection once sent (what is left of the request is not
/// read).
fn closing(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
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

    #[test]
    fn the_bounds_have_defaults_and_are_checked() {
        let config = parse(r#"address = "127.0.0.1:8687""#).unwrap();
        assert_eq!(config.max_connections, 512);
        assert_eq!(config.body_timeout_secs, 30.0);
        assert_eq!(config.max_inflight_body_bytes, 128 << 20);
        let config = parse(
            "address = \"127.0.0.1:1\"\nmax_connections = 8\nbody_timeout_secs = 2.5\nmax_inflight_body_bytes = 20000000",
        )
        .unwrap();
        assert_eq!((config.max_connections, config.body_timeout_secs), (8, 2.5));
        assert!(config.validate().is_ok());

        let mut config = HttpServerSourceConfig::new("127.0.0.1:1".parse().unwrap());
        config.max_connections = 0;
        config.body_timeout_secs = 0.0;
        config.max_inflight_body_bytes = 1000;
        let errors = config.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["max_connections", "body_timeout_secs", "max_inflight_body_bytes"]);
        assert!(errors[2].message.contains("at least max_body_bytes (10485760)"), "{}", errors[2]);
        for bad in [f64::NAN, f64::INFINITY, -1.0, 86_401.0] {
            config = HttpServerSourceConfig::new("127.0.0.1:1".parse().unwrap());
            config.body_timeout_secs = bad;
            assert_eq!(config.validate().unwrap_err()[0].field, "body_timeout_secs", "{bad}");
        }
        config = HttpServerSourceConfig::new("127.0.0.1:1".parse().unwrap());
        config.max_inflight_body_bytes = (1 << 40) + 1;
        assert!(config.validate().unwrap_err()[0].message.contains("at most"));
    }

    #[test]
    fn the_open_file_limit_bounds_the_connections() {
        let slots = |max, limit| {
            let s = ConnectionSlots::new(max, limit);
            (s.connections, s.health)
        };
        assert_eq!(slots(512, None), (512, HEALTH_SLOTS));
        assert_eq!(slots(512, Some(1_048_576)), (512, HEALTH_SLOTS));
        // A quarter of the files for the rest of the process, then the health slots.
        assert_eq!(slots(512, Some(1024)), (512, 32));
        assert_eq!(slots(512, Some(256)), (160, 32));
        assert_eq!(slots(512, Some(128)), (80, 16));
        assert_eq!(slots(512, Some(8)), (5, 1));
        assert_eq!(slots(512, Some(0)), (1, 1));
        assert_eq!(slots(10, Some(128)), (10, 16));
        // Where the system says (Linux), the limit is read.
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn the_budget_covers_what_a_request_holds_and_never_waits() {
        let budget = Budget::new(10 * 1024);
        let (mut a, mut b) = (Held::default(), Held::default());
        assert!(budget.cover(&mut a, 6000));
        assert_eq!(budget.permits.available_permits(), 4, "6000 bytes take 6 KiB");
        assert!(!budget.cover(&mut b, 5 * 1024), "only 4 KiB free");
        assert!(budget.cover(&mut b, 4 * 1024));
        assert_eq!(budget.permits.available_permits(), 0);
        // Shrinking gives back; growing takes.
        assert!(budget.cover(&mut a, 1024));
        assert_eq!(budget.permits.available_permits(), 5);
        // More than the whole budget takes the whole budget (once it is all free).
        drop(b);
        assert!(budget.cover(&mut a, 1 << 30));
        assert_eq!(budget.permits.available_permits(), 0);
        drop(a);
        assert_eq!(budget.permits.available_permits(), 10);
    }

    #[test]
    fn warnings_are_throttled() {
        let throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        *throttle.state.lock().unwrap() = (Some(tokio::time::Instant::now() - Throttle::EVERY), 2);
        assert_eq!(throttle.allow(), Some(2), "the ones held back are counted");
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
