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
use crate::event::Event;
use crate::stats::SinkStats;

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
}

/// A sink's configuration.
#[async_trait]
pub trait SinkConfig: Send + Sync {
    /// Builds the running sink and its healthcheck.
    async fn build(&self, cx: SinkContext) -> Result<(Box<dyn StreamSink>, Healthcheck), BuildError>;

    /// The sink's buffer settings (the host opens the buffer).
    fn buffer(&self) -> &BufferConfig;
}

/// A running sink: consumes its input until the stream ends, then finishes in-flight work.
#[async_trait]
pub trait StreamSink: Send {
    /// Consumes `input`; returns once every event taken has been handled.
    async fn run(self: Box<Self>, input: BoxStream<'static, Event>) -> Result<(), ()>;
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
}

/// A running source: resolves when it has stopped.
pub type Source = BoxFuture<'static, Result<(), ()>>;

/// A source's configuration.
#[async_trait]
pub trait SourceConfig: Send + Sync {
    /// Builds the running source (binding sockets here, so errors show before start).
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError>;
}
