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
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferConfig, BufferError, SinkBuffer, WhenFull};
use crate::dead_letters::DeadLetters;
use crate::event::{AckGroup, Event, IncidentEvent, Outcome};
use crate::storage::dead_letters::NewDeadLetter;

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
    /// Events given up on after their last attempt (non-retried status, retries exhausted).
    pub failed: AtomicU64,
    /// Events whose body could not be rendered.
    pub render_failed: AtomicU64,
    /// Events put into the dead letters (failed for good, or the buffer was full).
    pub dead_lettered: AtomicU64,
    /// Attempts that were retried.
    pub retries: AtomicU64,
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

/// Why a source's batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Sinks have no room; the sender should retry later.
    #[error("no room in the buffer of {}", .sinks.join(", "))]
    Full {
        /// The full sinks.
        sinks: Vec<String>,
    },
    /// The pipeline is shutting down.
    #[error("the pipeline is shutting down")]
    Closed,
    /// A disk buffer could not store the batch.
    #[error("cannot store the events: {0}")]
    Storage(String),
}

/// What happened to a batch a source sent on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Events in the batch.
    pub events: usize,
    /// Sinks that were full and dead-lettered their copies instead (`when_full = "dead_letter"`).
    pub dead_lettered: Vec<String>,
}

/// One sink's input, as a source sees it.
#[derive(Debug, Clone)]
pub struct SinkInput {
    /// The sink's name.
    pub name: String,
    /// Its buffer.
    pub buffer: SinkBuffer,
    /// What a full buffer means for a batch.
    pub when_full: WhenFull,
    /// Where its copies go when it is full (`None`: a full sink refuses the batch).
    pub dead_letters: Option<Arc<DeadLetters>>,
    /// Its counters.
    pub stats: Arc<SinkStats>,
}

/// Sends a source's events to every sink that reads it.
///
/// A batch is taken by each sink whole or not at all: room is reserved in every buffer
/// first. When a sink is full, [`WhenFull`] decides: its copies go to the dead letters
/// while the other sinks take the batch, or the batch is refused. A batch no sink has room
/// for is always refused ([`SendError::Full`]): the `http_server` source answers 503 with
/// `Retry-After`, the `stdin` source waits.
#[derive(Debug, Clone, Default)]
pub struct SourceSender {
    outputs: Vec<SinkInput>,
    /// For [`event_channel`]: closes the channel when the last clone is dropped.
    closer: Option<Arc<CloseOnDrop>>,
}

/// Closes a buffer when dropped.
#[derive(Debug)]
struct CloseOnDrop(SinkBuffer);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl SourceSender {
    /// A sender to these sink inputs.
    pub fn new(outputs: Vec<SinkInput>) -> Self {
        SourceSender { outputs, closer: None }
    }

    /// A sender to plain buffers with no dead letters: a full buffer refuses the batch.
    pub fn to_buffers(buffers: Vec<SinkBuffer>) -> Self {
        SourceSender {
            outputs: buffers
                .into_iter()
                .enumerate()
                .map(|(i, buffer)| SinkInput {
                    name: format!("sink{i}"),
                    buffer,
                    when_full: WhenFull::Reject,
                    dead_letters: None,
                    stats: Arc::default(),
                })
                .collect(),
            closer: None,
        }
    }

    /// Sends a batch, waiting for room while every sink is full.
    pub async fn send(
        &self,
        events: Vec<(IncidentEvent, usize)>,
        ack: Option<&AckGroup>,
    ) -> Result<SendReport, SendError> {
        self.send_within(events, ack, None).await
    }

    /// Sends a batch, waiting at most `max_wait` (`None`: for ever) for room while it
    /// would be refused; then [`SendError::Full`].
    pub async fn send_within(
        &self,
        events: Vec<(IncidentEvent, usize)>,
        ack: Option<&AckGroup>,
        max_wait: Option<std::time::Duration>,
    ) -> Result<SendReport, SendError> {
        if self.outputs.is_empty() {
            return self.try_send(events, ack).await;
        }
        let deadline = max_wait.map(|wait| tokio::time::Instant::now() + wait);
        let mut events = events;
        loop {
            // Register interest in freed room before trying, so a give-back in between is
            // seen. A sender is woken once some sink has room for the whole batch.
            let count = events.len();
            let bytes: u64 = events.iter().map(|(_, size)| *size as u64).sum();
            let waits = futures::future::select_all(self.outputs.iter().map(|o| o.buffer.room_for(count, bytes)));
            match self.try_send_inner(events, ack).await {
                Ok(report) => return Ok(report),
                Err((full @ SendError::Full { .. }, back)) => {
                    events = back;
                    // Bounded wait: re-check now and then even if a notification was missed.
                    let mut until = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
                    if let Some(deadline) = deadline {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(full);
                        }
                        until = until.min(deadline);
                    }
                    let _ = tokio::time::timeout_at(until, waits).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Sends a batch now, or says why not.
    pub async fn try_send(
        &self,
        events: Vec<(IncidentEvent, usize)>,
        ack: Option<&AckGroup>,
    ) -> Result<SendReport, SendError> {
        self.try_send_inner(events, ack).await.map_err(|(e, _)| e)
    }

    async fn try_send_inner(
        &self,
        events: Vec<(IncidentEvent, usize)>,
        ack: Option<&AckGroup>,
    ) -> Result<SendReport, (SendError, Vec<(IncidentEvent, usize)>)> {
        let count = events.len();
        let bytes: u64 = events.iter().map(|(_, size)| *size as u64).sum();
        let mut reserved = Vec::new();
        let mut full = Vec::new();
        for output in &self.outputs {
            match output.buffer.try_reserve(count, bytes) {
                Some(reservation) => reserved.push((output, reservation)),
                None => full.push(output),
            }
        }
        let refuses = |o: &&SinkInput| o.when_full == WhenFull::Reject || o.dead_letters.is_none();
        let refuse = !full.is_empty() && (reserved.is_empty() || full.iter().any(refuses));
        if refuse {
            let sinks = full.iter().map(|o| o.name.clone()).collect();
            return Err((SendError::Full { sinks }, events));
        }
        let events: Vec<Event> = events.into_iter().map(|(incident, size)| Event::new(incident, size)).collect();
        let copies = |events: &[Event]| -> Vec<Event> {
            events
                .iter()
                .map(|event| {
                    let mut copy = event.copy();
                    if let Some(group) = ack {
                        let token = group.token();
                        copy.finalizer.push(move |outcome| token.report(outcome));
                    }
                    copy
                })
                .collect()
        };
        for (output, reservation) in reserved {
            match output.buffer.push(reservation, copies(&events)).await {
                Ok(()) => {
                    output.stats.accepted.fetch_add(count as u64, Ordering::Relaxed);
                }
                Err(BufferError::Closed) => return Err((SendError::Closed, Vec::new())),
                Err(BufferError::Storage(e)) => return Err((SendError::Storage(e.to_string()), Vec::new())),
            }
        }
        let mut report = SendReport { events: count, dead_lettered: Vec::new() };
        for output in full {
            let (held, held_bytes) = output.buffer.usage();
            let reason = format!("buffer full ({held} events, {held_bytes} bytes held)");
            let letters = events
                .iter()
                .map(|event| NewDeadLetter {
                    sink: output.name.clone(),
                    webhook_id: event.id.to_string(),
                    event: event.incident.to_json(),
                    reason: reason.clone(),
                    last_status: None,
                    attempts: 0,
                })
                .collect();
            let Some(dead_letters) = &output.dead_letters else { continue };
            let outcome = match dead_letters.record(letters).await {
                Ok(()) => Outcome::Failed,
                Err(error) => {
                    tracing::error!(sink = %output.name, %error, events = count, "buffer full and the dead letters cannot be written: events lost");
                    Outcome::Dropped
                }
            };
            output.stats.dead_lettered.fetch_add(count as u64, Ordering::Relaxed);
            tracing::warn!(sink = %output.name, events = count, %reason, "sink full: copies dead-lettered");
            for copy in copies(&events) {
                copy.finish(outcome);
            }
            report.dead_lettered.push(output.name.clone());
        }
        Ok(report)
    }
}

/// The receiving end of [`event_channel`]: events a source sent, one by one. Taking an
/// event from it counts as delivering it. As with a channel, dropping it makes the
/// source's next send fail ([`SendError::Closed`]), and once every sender is dropped,
/// `recv` returns what is left, then `None`.
#[derive(Debug)]
pub struct EventReceiver {
    buffer: SinkBuffer,
}

/// A source's output straight to the caller, for hosts that consume events themselves
/// and for tests: room for `max_events` events; a full channel refuses a batch
/// (`try_send`) or makes the sender wait (`send`).
pub fn event_channel(max_events: usize) -> (SourceSender, EventReceiver) {
    let limits = crate::buffer::Limits { events: max_events, bytes: u64::MAX };
    let buffer = SinkBuffer::Memory(Arc::new(crate::buffer::MemoryBuffer::new(limits)));
    let mut sender = SourceSender::to_buffers(vec![buffer.clone()]);
    sender.closer = Some(Arc::new(CloseOnDrop(buffer.clone())));
    (sender, EventReceiver { buffer })
}

impl EventReceiver {
    /// The next event; `None` once the senders are gone and nothing is left.
    pub async fn recv(&mut self) -> Option<Event> {
        self.buffer.pop().await.map(Self::take)
    }

    /// The next event if one is waiting now.
    pub fn try_recv(&mut self) -> Option<Event> {
        match &self.buffer {
            SinkBuffer::Memory(memory) => memory.try_pop().map(Self::take),
            SinkBuffer::Disk(_) => None,
        }
    }

    fn take(event: Event) -> Event {
        let copy = event.copy();
        event.finish(Outcome::Delivered);
        copy
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.buffer.close();
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
