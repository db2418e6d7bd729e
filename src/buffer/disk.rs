//! The disk buffer: events stored in a redb file before the source answers, deleted once
//! the sink reports their outcome. After kill -9 or a power cut, whatever was stored and
//! not yet deleted is delivered again when the process is back, with its `webhook-id`.
//!
//! A stored record that does not decode (corrupted on disk, or written by hand) is
//! quarantined: it goes to the dead letters with its raw bytes (base64) and is deleted, and
//! the sink goes on with the records after it. If the dead letters cannot take it, it stays
//! in the file, is skipped, and an error is logged.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::warn;

use base64::Engine as _;

use super::{BufferError, Counters, Limits};
use crate::dead_letters::DeadLetters;
use crate::event::{Event, Finalizer, IncidentEvent, Outcome};
use crate::storage::dead_letters::NewDeadLetter;
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

/// How long `pop` waits before reading again after the file could not be read.
const READ_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Where corrupt records go: the sink's name and the pipeline's dead letters.
    quarantine: Mutex<Option<(String, Arc<DeadLetters>)>>,
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
        Ok(DiskBuffer {
            queue,
            counters,
            state: Mutex::default(),
            items: Notify::new(),
            removals,
            quarantine: Mutex::new(None),
        })
    }

    /// Corrupt records are put into `dead_letters` under the name `sink` (without this, they
    /// are skipped and left in the file).
    pub fn quarantine_to(&self, sink: &str, dead_letters: Arc<DeadLetters>) {
        *self.quarantine.lock().unwrap_or_else(|p| p.into_inner()) = Some((sink.to_string(), dead_letters));
    }

    /// Whether the file failed at its last operation (an I/O error such as a full disk); it is
    /// reopened on the next one.
    pub fn failing(&self) -> bool {
        self.queue.failing()
    }

    /// Room accounting.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Records stored now.
    pub fn stored(&self) -> u64 {
        self.queue.len()
    }

    /// Stores events durably (returns once they are fsync'd, in a commit that concurrent pushes
    /// may share).
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
        // Pushes made while another one's commit is in progress share the next commit (and
        // its fsync); each returns only once the commit holding its records is durable.
        let seqs = tokio::task::spawn_blocking(move || queue.append(records))
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
                Ok((Some(last), fetched)) => {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    // Only forward: a concurrent fetch may have gone further.
                    if state.cursor.is_none_or(|c| c < last) {
                        state.cursor = Some(last);
                        state.prefetched.extend(fetched);
                    }
                    continue;
                }
                Ok((None, _)) => {}
                Err(error) => {
                    warn!(%error, "disk buffer could not read; retrying in 1 s");
                    if self.state.lock().unwrap_or_else(|p| p.into_inner()).closed {
                        return None;
                    }
                    tokio::select! {
                        () = notified.as_mut() => {}
                        () = tokio::time::sleep(READ_RETRY) => {}
                    }
                    continue;
                }
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

    /// The records after `cursor`: the last sequence number read (None: nothing there) and
    /// the events that decoded. Those that did not are quarantined.
    async fn fetch(&self, cursor: Option<u64>) -> Result<(Option<u64>, Vec<(u64, Event)>), StorageError> {
        let queue = self.queue.clone();
        let path = self.queue.path().to_path_buf();
        let raw = tokio::task::spawn_blocking(move || queue.read_after(cursor, PREFETCH))
            .await
            .map_err(|e| StorageError::Io { path: path.clone(), message: e.to_string() })??;
        let last = raw.last().map(|(seq, _)| *seq);
        let mut events = Vec::with_capacity(raw.len());
        let mut corrupt = Vec::new();
        for (seq, bytes) in raw {
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(record) => events.push((seq, Event::with_id(record.event, record.id.into(), record.size))),
                Err(error) => corrupt.push((seq, bytes, error.to_string())),
            }
        }
        if !corrupt.is_empty() {
            self.quarantine(corrupt).await;
        }
        Ok((last, events))
    }

    /// Moves records that do not decode to the dead letters, with their raw bytes, and
    /// deletes them; without dead letters (or if they cannot be written), leaves them in the
    /// file. Either way the sink goes on with the records after them.
    async fn quarantine(&self, corrupt: Vec<(u64, Vec<u8>, String)>) {
        let target = self.quarantine.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let path = self.queue.path().display().to_string();
        for (seq, _, error) in &corrupt {
            tracing::error!(path = %path, record = seq, %error, "disk buffer record is corrupt; quarantining it and going on");
        }
        let Some((sink, dead_letters)) = target else {
            tracing::error!(path = %path, records = corrupt.len(), "no dead letters to quarantine into: the corrupt records stay in the file and are skipped");
            return;
        };
        let letters = corrupt
            .iter()
            .map(|(seq, bytes, error)| NewDeadLetter {
                sink: sink.clone(),
                webhook_id: String::new(),
                event: serde_json::json!({
                    "corrupt_disk_buffer_record": {
                        "seq": seq,
                        "bytes_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                    }
                }),
                reason: format!("corrupt disk-buffer record {seq}: {error}"),
                last_status: None,
                attempts: 0,
                digest: None,
            })
            .collect();
        if let Err(error) = dead_letters.record(letters).await {
            tracing::error!(sink = %sink, %error, records = corrupt.len(), "corrupt disk-buffer records could not be dead-lettered: they stay in the file and are skipped until the next start");
            return;
        }
        let finalizers: Vec<Finalizer> = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            corrupt.iter().filter_map(|(seq, _, _)| state.waiting.remove(seq)).collect()
        };
        for finalizer in finalizers {
            finalizer.finish(Outcome::Failed);
        }
        for (seq, bytes, _) in &corrupt {
            self.removals.add(*seq);
            self.counters.give_back(1, bytes.len() as u64);
        }
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
