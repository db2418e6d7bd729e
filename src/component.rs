//! The component traits, in the shape of Vector's: a sink config `build`s a running sink
//! plus a healthcheck; a sink consumes a stream of events; a source config builds a
//! future that pushes events to a [`SourceSender`]. Another Rust pipeline can host the
//! webhook sink through these traits alone (see the README).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, IncidentEvent};

/// A problem with one field of a component's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if .field.is_empty() { String::new() } else { format!("{}: ", .field) })]
pub struct FieldError {
    /// Dotted path of the field inside the component (empty when the message names it).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config has problems.
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem found.
        errors: Vec<FieldError>,
    },
    /// Something outside the config failed (a CA file, a port already in use, …).
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
    },
}

/// A healthcheck failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HealthcheckError(pub String);

/// Checks the sink's endpoint once at start-up.
pub type Healthcheck = BoxFuture<'static, Result<(), HealthcheckError>>;

/// Counters a sink keeps; the host reads them for logs and tests.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events put into the sink's buffer by its sources.
    pub accepted: AtomicU64,
    /// Events that reached the sink.
    pub received: AtomicU64,
    /// Events its triggers or conditions did not fire for.
    pub filtered: AtomicU64,
    /// Requests answered with 2xx.
    pub delivered: AtomicU64,
    /// Requests that failed (non-2xx, network error, timeout).
    pub failed: AtomicU64,
    /// Events whose body could not be rendered.
    pub render_failed: AtomicU64,
}

impl SinkStats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Events accepted into the buffer and not yet handled (delivered, failed, filtered out
    /// or unrenderable).
    pub fn pending(&self) -> u64 {
        let handled = [&self.delivered, &self.failed, &self.filtered, &self.render_failed]
            .into_iter()
            .map(SinkStats::get)
            .sum::<u64>();
        SinkStats::get(&self.accepted).saturating_sub(handled)
    }
}

/// What a sink is built with.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name in the config (`[sinks.NAME]`), used in every log line.
    pub name: String,
    /// Directory of the config file: relative paths are resolved against it.
    pub config_dir: PathBuf,
    /// Counters the sink updates.
    pub stats: Arc<SinkStats>,
}

/// A sink's configuration.
#[async_trait]
pub trait SinkConfig: Send + Sync {
    /// Builds the running sink and its healthcheck.
    async fn build(&self, cx: SinkContext) -> Result<(Box<dyn StreamSink>, Healthcheck), BuildError>;

    /// How many events may wait in front of the sink before its sources wait.
    fn buffer_size(&self) -> usize;
}

/// A running sink: consumes its input until the stream ends, then finishes in-flight work.
#[async_trait]
pub trait StreamSink: Send {
    /// Consumes `input`; returns once every event taken has been handled.
    async fn run(self: Box<Self>, input: BoxStream<'static, Event>) -> Result<(), ()>;
}

/// The input side of a pipeline was closed (the host is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is shutting down")]
pub struct ClosedError;

/// Sends a source's events to every sink that reads it.
///
/// Fan-out waits for room in each sink's buffer in turn, so a full sink holds its source
/// back (back-pressure reaches the sender).
#[derive(Debug, Clone, Default)]
pub struct SourceSender {
    outputs: Vec<(mpsc::Sender<Event>, Option<Arc<SinkStats>>)>,
}

impl SourceSender {
    /// A sender to these sink inputs.
    pub fn new(outputs: Vec<mpsc::Sender<Event>>) -> Self {
        SourceSender { outputs: outputs.into_iter().map(|tx| (tx, None)).collect() }
    }

    /// A sender to these sink inputs that counts what each sink accepted.
    pub fn with_stats(outputs: Vec<(mpsc::Sender<Event>, Arc<SinkStats>)>) -> Self {
        SourceSender { outputs: outputs.into_iter().map(|(tx, stats)| (tx, Some(stats))).collect() }
    }

    /// Sends a batch; each event goes to every output.
    pub async fn send_batch(&self, events: Vec<IncidentEvent>) -> Result<(), ClosedError> {
        for incident in events {
            let event = Event::new(incident);
            for (output, stats) in &self.outputs {
                output.send(event.clone()).await.map_err(|_| ClosedError)?;
                if let Some(stats) = stats {
                    SinkStats::incr(&stats.accepted);
                }
            }
        }
        Ok(())
    }
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
