//! The component traits, in the shape of Vector's: a sink config `build`s a running sink
//! plus a healthcheck; a sink consumes a stream of events; a source config builds a
//! future that pushes events to a [`SourceSender`]. Another Rust pipeline can host the
//! webhook sink through these traits alone (see the README).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferConfig, SourceSender};
use crate::dead_letters::DeadLetters;
pub use crate::error::{BuildError, FieldError};
use crate::event::{Event, IncidentEvent, Outcome};
use crate::stats::{SinkStats, SourceStats};

/// A healthcheck failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HealthcheckError(pub String);

/// Checks the sink's endpoint once at start-up.
pub type Healthcheck = BoxFuture<'static, Result<(), HealthcheckError>>;

/// What a sink is built with.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name in the config (`[sinks.NAME]`), used in every log line.
    pub name: String,
    /// Directory of the config file: relative paths are resolved against it.
    pub config_dir: PathBuf,
    /// Counters the sink updates.
    pub stats: Arc<SinkStats>,
    /// Where events that can never be delivered are kept.
    pub dead_letters: Arc<DeadLetters>,
    /// Runtimes on other threads (`run --runtime split`'s delivery threads) that the sink
    /// may spread its deliveries over, besides the one it runs on, each alert's events on
    /// one thread. Empty: everything on the sink's own task.
    pub shard_runtimes: Vec<tokio::runtime::Handle>,
}

/// A sink's configuration.
///
/// The path from the pipeline file to a running sink has three steps, one method each:
/// the config as read (e.g. `WebhookSinkConfig`) is *validated* by its own `validate`
/// method into a checked form with everything compiled (templates, filters, URL), and
/// that form's [`SinkConfig::build`] opens what needs the outside world (TLS roots, the
/// HTTP client) and returns the running sink. The host validates once at load and builds
/// from the checked form. A host holding only a config can call `build` on the config
/// itself, which is validate-then-build.
#[async_trait]
pub trait SinkConfig: Send + Sync {
    /// Builds the running sink and its healthcheck.
    async fn build(&self, cx: SinkContext) -> Result<(Box<dyn StreamSink>, Healthcheck), BuildError>;

    /// The sink's buffer settings (the host opens the buffer).
    fn buffer(&self) -> &BufferConfig;

    /// Settings that are allowed but risky (e.g. certificates not verified), said at load
    /// and at every start; field names relative to the sink.
    fn warnings(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// A running sink: consumes its input until the stream ends, then finishes in-flight work.
///
/// Besides [`StreamSink::run`], a built sink answers the command line's questions about
/// one event, so the host never reaches into a sink's parts: what it would send
/// ([`StreamSink::preview`], `render`), what its endpoint says to one request
/// ([`StreamSink::probe`], `test`), and delivering a dead letter again
/// ([`StreamSink::replay`], `dead-letters replay`).
#[async_trait]
pub trait StreamSink: Send + Sync {
    /// Consumes `input`; returns once every event taken has been handled.
    async fn run(self: Box<Self>, input: BoxStream<'static, Event>) -> Result<(), ()>;

    /// What the sink would send for `event`, or why it would not.
    fn preview(&self, event: &IncidentEvent) -> Preview;

    /// Sends `event` once through the real request path, whatever the filter says: no
    /// retry, no dead letter, no counters.
    async fn probe(&self, event: &IncidentEvent) -> Probe;

    /// Delivers `event` whatever the filter says, with retries; if it fails again it goes
    /// back to the dead letters. Returns its outcome.
    async fn replay(&self, event: Event) -> Outcome;

    /// Replays the events of one digest together (a batching sink sends them as one
    /// digest again; any other sink one by one). Returns their outcomes, in order.
    async fn replay_digest(&self, events: Vec<Event>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.replay(event).await);
        }
        outcomes
    }
}

/// What a sink would do with one event ([`StreamSink::preview`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// It fires, with this body.
    Body(Vec<u8>),
    /// Its triggers or conditions do not fire; why.
    NotFired(String),
    /// It fires, but the body cannot be made; why.
    NotSent(String),
}

/// What one request to a sink's endpoint brought back ([`StreamSink::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The request, as the user may see it (credentials redacted), e.g. `POST https://…`.
    pub request: String,
    /// The answer (status and excerpt) or why there was none.
    pub answer: String,
    /// Whether the endpoint accepted it (2xx).
    pub success: bool,
}

/// What a source is built with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's name in the config.
    pub name: String,
    /// Where its events go.
    pub out: SourceSender,
    /// Cancelled when the host shuts down: stop taking new input, finish what was taken.
    pub shutdown: CancellationToken,
    /// The source's counters (requests by status; `out` counts the events).
    pub stats: Arc<SourceStats>,
    /// Where a source gets its listening socket, so a reloaded source keeps the socket of
    /// the one it replaces (no connection refused in between) instead of binding again.
    pub listeners: Listeners,
}

/// Listening sockets by address, shared by the sources of a host across reloads. A source
/// asks for its address: a socket already open there is shared (a duplicate of it), else a
/// new one is bound and kept. The host releases an address when no source uses it any more.
#[derive(Debug, Clone, Default)]
pub struct Listeners(Arc<std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, std::net::TcpListener>>>);

impl Listeners {
    /// A listening socket on `address`: the one kept there, or a new one.
    pub fn listen(&self, address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let std_listener = match kept.get(&address) {
            Some(listener) => listener.try_clone()?,
            None => {
                let listener = std::net::TcpListener::bind(address)?;
                listener.set_nonblocking(true)?;
                // Kept under the address asked for (port 0 stays port 0), so the same config
                // finds it again.
                kept.insert(address, listener.try_clone()?);
                listener
            }
        };
        tokio::net::TcpListener::from_std(std_listener)
    }

    /// Forgets the socket kept on `address`; it closes once the last source using it stops.
    pub fn release(&self, address: &std::net::SocketAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }
}

/// A running source: resolves when it has stopped.
pub type Source = BoxFuture<'static, Result<(), ()>>;

/// A source's configuration. As with sinks, a config is validated into a checked form by
/// its own `validate` method, and `build` on that form starts the source; `build` on the
/// config itself is validate-then-build.
#[async_trait]
pub trait SourceConfig: Send + Sync {
    /// Builds the running source (binding sockets here, so errors show before start).
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError>;

    /// Settings that are allowed but risky, said at load and at every start; field names
    /// relative to the source.
    fn warnings(&self) -> Vec<FieldError> {
        Vec::new()
    }
}
