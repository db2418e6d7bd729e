//! Sink buffers: where events wait between a source and a sink.
//!
//! Every sink has one, bounded in events and bytes; what a sink holds in flight counts
//! too, so memory stays bounded whatever the endpoint does. The bounds hold for every
//! batch: one larger than a buffer's `max_events` or `max_bytes` is refused
//! ([`SendError::TooLarge`]) rather than let into an empty buffer, since it could only fit
//! by going over them. A source first *reserves*
//! room in the buffer of every sink it feeds and only then pushes, so a batch is taken by
//! a sink whole or not at all. A slot is freed when the sink reports the event's outcome
//! (its finalizer): for a disk buffer that is also when the record is deleted, so a crash
//! in between means the event is delivered again, never lost (at-least-once).
//!
//! - [`SourceSender`] (in `fanout.rs`): a source's batches to the buffers of every sink
//!   that reads it, whole or not at all, dead-lettering a full sink's copies when asked.
//! - [`memory`]: the default; lost on a crash, reported in the log at shutdown.
//! - [`disk`]: a redb file per sink under `data_dir/buffers/`; a push returns only once
//!   the batch is fsync'd.

pub mod disk;
mod fanout;
pub mod memory;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::event::Event;
use crate::storage::StorageError;

pub use disk::DiskBuffer;
pub use fanout::{event_channel, EventReceiver, SendError, SendReport, SinkInput, SourceSender};
pub use memory::MemoryBuffer;

/// Where a sink's buffer keeps its events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// In memory: fast; what is buffered at a crash is lost.
    #[default]
    Memory,
    /// On disk under `data_dir`: survives kill -9 and power loss.
    Disk,
}

/// What a source does with a batch when a sink's buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The full sink's copies go to the dead letters ("buffer full"); the other sinks
    /// take the batch. One dead endpoint never stalls the sinks beside it. If no sink
    /// of the batch has room, the source refuses it (503 + `Retry-After`).
    #[default]
    DeadLetter,
    /// The source refuses the whole batch (503 + `Retry-After`) so the sender retries;
    /// nothing of it is taken by any sink.
    Reject,
}

/// The `buffer` table of a sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` or `disk`. Default: `memory`.
    #[serde(rename = "type", default)]
    pub kind: BufferType,
    /// Most events held, queued and in flight. Default: 1000 (memory), 100000 (disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<usize>,
    /// Most bytes of events held (their size on the wire). Default: 64 MiB (memory),
    /// 1 GiB (disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// `dead_letter` or `reject`: see [`WhenFull`]. Default: `dead_letter`.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// Resolved limits of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most events.
    pub events: usize,
    /// Most bytes.
    pub bytes: u64,
}

impl Limits {
    /// Whether a batch of `events` events and `bytes` bytes fits within them (in an empty
    /// buffer).
    pub fn hold(&self, events: usize, bytes: u64) -> bool {
        events <= self.events && bytes <= self.bytes
    }

    /// The smaller of each bound.
    pub fn min(self, other: Limits) -> Limits {
        Limits { events: self.events.min(other.events), bytes: self.bytes.min(other.bytes) }
    }
}

impl BufferConfig {
    /// The limits, defaults applied.
    pub fn limits(&self) -> Limits {
        let (events, bytes) = match self.kind {
            BufferType::Memory => (1000, 64 << 20),
            BufferType::Disk => (100_000, 1 << 30),
        };
        Limits { events: self.max_events.unwrap_or(events), bytes: self.max_bytes.unwrap_or(bytes) }
    }

    /// Checks the values; field names relative to the sink.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.max_events == Some(0) {
            errors.push(FieldError::new("buffer.max_events", "must be at least 1"));
        }
        if self.max_bytes == Some(0) {
            errors.push(FieldError::new("buffer.max_bytes", "must be at least 1"));
        }
        errors
    }

    /// Where a disk buffer for `sink` lives under `data_dir`.
    pub fn disk_path(data_dir: &Path, sink: &str) -> PathBuf {
        data_dir.join("buffers").join(format!("{sink}.redb"))
    }

    /// Opens the buffer for `sink`.
    pub fn open(&self, data_dir: &Path, sink: &str) -> Result<SinkBuffer, StorageError> {
        Ok(match self.kind {
            BufferType::Memory => SinkBuffer::Memory(Arc::new(MemoryBuffer::new(self.limits()))),
            BufferType::Disk => {
                SinkBuffer::Disk(Arc::new(DiskBuffer::open(&Self::disk_path(data_dir, sink), self.limits())?))
            }
        })
    }
}

/// Room taken in a buffer for a batch that is about to be pushed; given back if dropped.
#[derive(Debug)]
pub struct Reservation {
    buffer: SinkBuffer,
    events: usize,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.buffer.release(self.events, self.bytes);
    }
}

/// A buffer could not store a batch.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The disk buffer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The buffer was closed (shutdown).
    #[error("the buffer is closed")]
    Closed,
}

/// A sink's buffer.
#[derive(Debug, Clone)]
pub enum SinkBuffer {
    /// In memory.
    Memory(Arc<MemoryBuffer>),
    /// On disk.
    Disk(Arc<DiskBuffer>),
}

impl SinkBuffer {
    /// Takes room for `events` events of `bytes` bytes, or `None` when they do not fit.
    pub fn try_reserve(&self, events: usize, bytes: u64) -> Option<Reservation> {
        let taken = match self {
            SinkBuffer::Memory(b) => b.counters().try_take(events, bytes),
            SinkBuffer::Disk(b) => b.counters().try_take(events, bytes),
        };
        taken.then(|| Reservation { buffer: self.clone(), events, bytes })
    }

    /// Stores a batch in room reserved for it. The events' finalizers stay with them.
    pub async fn push(&self, mut reservation: Reservation, events: Vec<Event>) -> Result<(), BufferError> {
        let result = match self {
            SinkBuffer::Memory(b) => b.push(events),
            SinkBuffer::Disk(b) => b.push(events).await,
        };
        if result.is_ok() {
            // The room now belongs to the stored events; their finalizers give it back.
            reservation.events = 0;
            reservation.bytes = 0;
        }
        result
    }

    /// The next event, waiting for one; `None` once the buffer is closed and drained.
    pub async fn pop(&self) -> Option<Event> {
        match self {
            SinkBuffer::Memory(b) => b.pop().await,
            SinkBuffer::Disk(b) => b.pop().await,
        }
    }

    /// No more pushes; `pop` drains what is left, then ends.
    pub fn close(&self) {
        match self {
            SinkBuffer::Memory(b) => b.close(),
            SinkBuffer::Disk(b) => b.close(),
        }
    }

    /// Resolves once room for `events` events of `bytes` bytes has been given back (or the
    /// buffer is empty). Interest is registered when this is called, not when the future
    /// is first polled, so room given back in between is not missed.
    pub fn room_for(&self, events: usize, bytes: u64) -> RoomFreed {
        match self {
            SinkBuffer::Memory(b) => b.counters().room_for(events, bytes),
            SinkBuffer::Disk(b) => b.counters().room_for(events, bytes),
        }
    }

    /// The most events and bytes it holds.
    pub fn limits(&self) -> Limits {
        match self {
            SinkBuffer::Memory(b) => b.counters().limits(),
            SinkBuffer::Disk(b) => b.counters().limits(),
        }
    }

    /// Changes its bounds (see [`Counters::set_limits`]).
    pub fn set_limits(&self, limits: Limits) {
        match self {
            SinkBuffer::Memory(b) => b.counters().set_limits(limits),
            SinkBuffer::Disk(b) => b.counters().set_limits(limits),
        }
    }

    /// Whether it keeps its events on disk.
    pub fn is_disk(&self) -> bool {
        matches!(self, SinkBuffer::Disk(_))
    }

    /// Events and bytes held now (queued and in flight).
    pub fn usage(&self) -> (usize, u64) {
        match self {
            SinkBuffer::Memory(b) => b.counters().usage(),
            SinkBuffer::Disk(b) => b.counters().usage(),
        }
    }

    fn release(&self, events: usize, bytes: u64) {
        match self {
            SinkBuffer::Memory(b) => b.counters().give_back(events, bytes),
            SinkBuffer::Disk(b) => b.counters().give_back(events, bytes),
        }
    }
}

/// Room accounting shared by both kinds of buffer.
#[derive(Debug)]
pub struct Counters {
    used: std::sync::Mutex<Used>,
    freed: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
struct Used {
    /// The bounds; a reload may change them.
    limits: Limits,
    events: usize,
    bytes: u64,
    /// The smallest room a waiting sender needs; give-backs wake senders only once it is
    /// free, not for every event delivered.
    wanted: Option<(usize, u64)>,
}

impl Used {
    /// Whether the room is free now. Strict: a batch larger than the whole buffer never
    /// fits (the sender refuses it first, [`SendError::TooLarge`]), and neither does one
    /// while the buffer holds more than its bounds (a reload lowered them, or a disk
    /// buffer reopened with more).
    fn fits(&self, events: usize, bytes: u64) -> bool {
        self.events.saturating_add(events) <= self.limits.events
            && self.bytes.saturating_add(bytes) <= self.limits.bytes
    }
}

/// Resolves once the room a sender asked for ([`SinkBuffer::room_for`]) is free.
pub type RoomFreed = std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>;

impl Counters {
    /// Empty counters with these limits.
    pub fn new(limits: Limits) -> Self {
        let used = Used { limits, events: 0, bytes: 0, wanted: None };
        Counters { used: std::sync::Mutex::new(used), freed: Arc::new(tokio::sync::Notify::new()) }
    }

    /// The bounds now.
    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// New bounds (a reload changed `buffer.max_events` or `buffer.max_bytes`). What is
    /// held already stays; senders waiting for room are woken to look again.
    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
        self.freed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes room if it fits within the bounds. A batch larger than the whole buffer never
    /// does, not even in an empty buffer: senders check [`Limits::hold`] first and refuse
    /// it (or split it) instead of waiting for ever.
    pub fn try_take(&self, events: usize, bytes: u64) -> bool {
        let mut used = self.lock();
        if used.fits(events, bytes) {
            used.events += events;
            used.bytes += bytes;
            true
        } else {
            false
        }
    }

    /// Counts room as taken without checking (events already stored at start-up).
    pub fn force_take(&self, events: usize, bytes: u64) {
        let mut used = self.lock();
        used.events += events;
        used.bytes += bytes;
    }

    /// Gives room back, and wakes the waiting senders once the room they need is free.
    pub fn give_back(&self, events: usize, bytes: u64) {
        let wake = {
            let mut used = self.lock();
            used.events = used.events.saturating_sub(events);
            used.bytes = used.bytes.saturating_sub(bytes);
            match used.wanted {
                Some((events, bytes)) if used.fits(events, bytes) => {
                    used.wanted = None;
                    true
                }
                _ => false,
            }
        };
        if wake {
            self.freed.notify_waiters();
        }
    }

    /// Events and bytes held.
    pub fn usage(&self) -> (usize, u64) {
        let used = self.lock();
        (used.events, used.bytes)
    }

    /// See [`SinkBuffer::room_for`].
    pub fn room_for(&self, events: usize, bytes: u64) -> RoomFreed {
        let mut used = self.lock();
        used.wanted = Some(match used.wanted {
            Some((e, b)) => (e.min(events), b.min(bytes)),
            None => (events, bytes),
        });
        // Created under the lock: a give-back after it is seen by this future.
        let mut notified = Box::pin(self.freed.clone().notified_owned());
        notified.as_mut().enable();
        notified
    }
}
