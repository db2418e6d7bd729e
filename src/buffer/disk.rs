//! The disk buffer: events stored in a redb file before the source answers, deleted once
//! the sink reports their outcome. After kill -9 or a power cut, whatever was stored and
//! not yet deleted is delivered again when the process is back, with its `webhook-id`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::warn;

use super::{BufferError, Counters, Limits};
use crate::event::{Event, Finalizer, IncidentEvent};
use crate::storage::queue::DiskQueue;
use crate::storage::StorageError;

/// Records read from disk at a time.
const PREFETCH: usize = 256;

/// How long the first removal of a batch waits for others to join it before they are
/// deleted together. Deletions become durable only every `REMOVAL_FLUSH_INTERVAL` (1 s)
/// anyway, so this changes nothing for a crash; without it, a steady stream of
/// deliveries woke a blocking thread for nearly every event (1.2 context switches per
/// event in `bench/load.sh`).
const REMOVAL_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// An event as stored in the disk buffer.
#[derive(Deserialize)]
struct Record {
    id: String,
    size: usize,
    event: IncidentEvent,
}

/// A [`Record`] as written: the same JSON, borrowing the event instead of copying it.
#[derive(Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    size: usize,
    event: &'a IncidentEvent,
}

/// A disk-backed queue for one sink.
#[derive(Debug)]
pub struct DiskBuffer {
    queue: Arc<DiskQueue>,
    counters: Arc<Counters>,
    state: Mutex<State>,
    items: Notify,
    removals: Arc<Removals>,
}

#[derive(Debug, Default)]
struct State {
    /// Last sequence number handed to the sink (or prefetched).
    cursor: Option<u64>,
    prefetched: VecDeque<(u64, Event)>,
    /// Finalizers of stored events (end-to-end acknowledgements), until they are popped.
    waiting: HashMap<u64, Finalizer>,
    closed: bool,
}

/// Deletes delivered records in batches, off the async threads.
#[derive(Debug)]
struct Removals {
    queue: Arc<DiskQueue>,
    pending: Mutex<Vec<u64>>,
}

impl Removals {
    fn add(self: &Arc<Self>, seq: u64) {
        let flush = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(seq);
            pending.len() == 1
        };
        if flush {
            // The first removal of a batch schedules the flush; later ones join it.
            let this = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || {
                        std::thread::sleep(REMOVAL_GATHER);
                        this.flush();
                    });
                }
                Err(_) => this.flush(),
            }
        }
    }

    fn flush(&self) {
        let seqs = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if seqs.is_empty() {
            return;
        }
        if let Err(error) = self.queue.remove(&seqs) {
            // The records stay and are delivered again after a restart (at-least-once).
            warn!(%error, records = seqs.len(), "disk buffer could not delete delivered records");
        }
    }
}

impl DiskBuffer {
    /// Opens (or creates) the buffer file; records already in it count against the limits
    /// and are delivered first.
    pub fn open(path: &Path, limits: Limits) -> Result<DiskBuffer, StorageError> {
        let queue = Arc::new(DiskQueue::open(path)?);
        let counters = Arc::new(Counters::new(limits));
        counters.force_take(queue.len() as usize, queue.bytes());
        let removals = Arc::new(Removals { queue: queue.clone(), pending: Mutex::default() });
        Ok(DiskBuffer { queue, counters, state: Mutex::default(), items: Notify::new(), removals })
    }

    /// Room accounting.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Records stored now.
    pub fn stored(&self) -> u64 {
        self.queue.len()
    }

    /// Stores events durably (returns once they are fsync'd).
    pub async fn push(&self, events: Vec<Event>) -> Result<(), BufferError> {
        if self.state.lock().unwrap_or_else(|p| p.into_inner()).closed {
            return Err(BufferError::Closed);
        }
        let mut finalizers = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for mut event in events {
            let record = RecordRef { id: &event.id, size: event.size, event: &event.incident };
            // Serializing plain data into bytes cannot fail.
            records.push(serde_json::to_vec(&record).unwrap_or_default());
            finalizers.push(std::mem::take(&mut event.finalizer));
        }
        let queue = self.queue.clone();
        let seqs = tokio::task::spawn_blocking(move || {
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            queue.append(&slices)
        })
        .await
        .map_err(|e| StorageError::Io { path: self.queue.path().to_path_buf(), message: e.to_string() })??;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, finalizer) in seqs.into_iter().zip(finalizers) {
            state.waiting.insert(seq, finalizer);
        }
        drop(state);
        self.items.notify_waiters();
        Ok(())
    }

    /// The next stored event; `None` once closed and every stored event was handed out.
    pub async fn pop(&self) -> Option<Event> {
        loop {
            let notified = self.items.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let cursor = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((seq, event)) = state.prefetched.pop_front() {
                    return Some(self.hand_out(&mut state, seq, event));
                }
                state.cursor
            };
            match self.fetch(cursor).await {
                Ok(fetched) if !fetched.is_empty() => {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.cursor = fetched.last().map(|(seq, _)| *seq);
                    state.prefetched.extend(fetched);
                    continue;
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "disk buffer could not read; retrying"),
            }
            if self.state.lock().unwrap_or_else(|p| p.into_inner()).closed {
                return None;
            }
            notified.await;
        }
    }

    /// Attaches the finalizers that delete the record and give the room back.
    fn hand_out(&self, state: &mut State, seq: u64, mut event: Event) -> Event {
        if let Some(waiting) = state.waiting.remove(&seq) {
            event.finalizer = waiting;
        }
        let (counters, removals, size) = (self.counters.clone(), self.removals.clone(), event.size as u64);
        event.finalizer.push(move |outcome| {
            // A copy dropped unreported (shutdown) stays on disk for the next start.
            if outcome != crate::event::Outcome::Dropped {
                removals.add(seq);
            }
            counters.give_back(1, size);
        });
        event
    }

    async fn fetch(&self, cursor: Option<u64>) -> Result<Vec<(u64, Event)>, StorageError> {
        let queue = self.queue.clone();
        let path = self.queue.path().to_path_buf();
        let raw = tokio::task::spawn_blocking(move || queue.read_after(cursor, PREFETCH))
            .await
            .map_err(|e| StorageError::Io { path: path.clone(), message: e.to_string() })??;
        raw.into_iter()
            .map(|(seq, bytes)| {
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                    path: path.clone(),
                    key: seq,
                    message: e.to_string(),
                })?;
                Ok((seq, Event::with_id(record.event, record.id.into(), record.size)))
            })
            .collect()
    }

    /// Stops pushes; `pop` hands out what is stored, then ends.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.items.notify_waiters();
    }

    /// Deletes what was delivered, durably (at shutdown, so a clean stop sends nothing
    /// twice).
    pub fn flush(&self) {
        self.removals.flush();
        if let Err(error) = self.queue.flush() {
            warn!(%error, "disk buffer could not make its deletions durable");
        }
    }
}

impl Drop for DiskBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}
