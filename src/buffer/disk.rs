//! The disk buffer: events stored in a redb file before the source answers, deleted once
//! the sink reports their outcome. After kill -9 or a power cut, whatever was stored and
//! not yet deleted is delivered again when the process is back, with its `webhook-id`.
//!
//! A stored record that does not decode (corrupted on disk, or written by hand) is
//! quarantined: it goes to the dead letters with its raw bytes (base64) and is deleted, and
//! the sink goes on with the records after it. If the dead letters cannot take it, it stays
//! in the file, is skipped, and an error is logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use crate::storage::queue::{DiskQueue, FIRST_SEQ};
use crate::storage::StorageError;

/// Records read from disk at a time.
const PREFETCH: usize = 256;

/// At most this many pushed events are also kept in memory ([`State::hot`]) …
const HOT_EVENTS: usize = 1024;
/// … and at most this many bytes of them (their `size`).
const HOT_BYTES: u64 = 8 << 20;

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
    state: Arc<Mutex<State>>,
    items: Arc<Notify>,
    removals: Arc<Removals>,
    /// Where corrupt records go: the sink's name and the pipeline's dead letters.
    quarantine: Mutex<Option<(String, Arc<DeadLetters>)>>,
    /// Records numbered from this on were pushed since the buffer was opened. Each is handed
    /// out only once its push has registered its finalizers in `State::waiting`: a commit is
    /// visible to readers a moment before its pushes are answered (and, with a group commit,
    /// other pushes of the same commit may be answered and notify first).
    pushed_from: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Last sequence number handed to the sink (or prefetched).
    cursor: Option<u64>,
    prefetched: VecDeque<(u64, Event)>,
    /// Finalizers of stored events (end-to-end acknowledgements), until they are popped.
    waiting: HashMap<u64, Finalizer>,
    /// The events of recent pushes, by sequence number, as they were pushed: handed out
    /// from here instead of reading and decoding their records again, which was about an
    /// eighth of a disk run's CPU (docs/performance.md, round 4). The records are stored
    /// all the same, so nothing changes for a crash. Bounded by [`HOT_EVENTS`] and
    /// [`HOT_BYTES`]; events pushed while it is full are read from the file when their
    /// turn comes. Every key is above `cursor`.
    hot: BTreeMap<u64, Event>,
    /// The `size` of the events in `hot`.
    hot_bytes: u64,
    closed: bool,
}

impl State {
    /// Keeps a copy of the event just stored as record `seq`, if there is room and it was
    /// not read from the file already.
    fn keep_hot(&mut self, seq: u64, event: Event) {
        let size = event.size as u64;
        let room = self.hot.len() < HOT_EVENTS && self.hot_bytes + size <= HOT_BYTES;
        if room && self.cursor.is_none_or(|cursor| seq > cursor) {
            self.hot_bytes += size;
            self.hot.insert(seq, event);
        }
    }

    /// The next event to hand out, if it is in `hot`: the record right after `cursor`.
    fn take_hot(&mut self) -> Option<(u64, Event)> {
        let next = self.cursor?.checked_add(1)?;
        let event = self.hot.remove(&next)?;
        self.hot_bytes -= event.size as u64;
        self.cursor = Some(next);
        Some((next, event))
    }

    /// How many records to read after `cursor`: up to the first one in `hot`.
    fn to_read(&self) -> usize {
        let next = self.cursor.map_or(FIRST_SEQ, |cursor| cursor.saturating_add(1));
        match self.hot.first_key_value() {
            Some((&first, _)) if first > next => PREFETCH.min((first - next) as usize),
            _ => PREFETCH,
        }
    }

    /// Forgets the copies of records up to `last`, which were read from the file.
    fn read_up_to(&mut self, last: u64) {
        let kept = self.hot.split_off(&last.saturating_add(1));
        let dropped = std::mem::replace(&mut self.hot, kept);
        self.hot_bytes -= dropped.values().map(|event| event.size as u64).sum::<u64>();
    }
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
        let pushed_from = queue.next_seq()?;
        // With nothing stored, the next record handed out is the first one pushed, so
        // it can come from memory.
        let cursor = if queue.is_empty() { pushed_from.checked_sub(1) } else { None };
        let state = State { cursor, ..State::default() };
        Ok(DiskBuffer {
            queue,
            counters,
            state: Arc::new(Mutex::new(state)),
            items: Arc::new(Notify::new()),
            removals,
            quarantine: Mutex::new(None),
            pushed_from,
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
        let mut copies = Vec::with_capacity(events.len());
        for mut event in events {
            finalizers.push(std::mem::take(&mut event.finalizer));
            copies.push(event);
        }
        let (queue, state, items) = (self.queue.clone(), self.state.clone(), self.items.clone());
        tokio::task::spawn_blocking(move || {
            // Serialized here, off the runtime's thread, which a disk run keeps busy with
            // taking batches in and delivering (docs/performance.md, round 4).
            let records = copies
                .iter()
                .map(|event| {
                    let record = RecordRef { id: &event.id, size: event.size, event: &event.incident };
                    // Serializing plain data into bytes cannot fail.
                    serde_json::to_vec(&record).unwrap_or_default()
                })
                .collect();
            // Pushes made while another one's commit is in progress share the next commit (and
            // its fsync); each returns only once the commit holding its records is durable.
            let seqs = queue.append(records)?;
            // Registered here rather than after the `await`: should this push's future be
            // dropped meanwhile (its client went away), the records are still handed out.
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            for ((seq, finalizer), copy) in seqs.into_iter().zip(finalizers).zip(copies) {
                state.waiting.insert(seq, finalizer);
                state.keep_hot(seq, copy);
            }
            drop(state);
            items.notify_waiters();
            Ok::<(), StorageError>(())
        })
        .await
        .map_err(|e| StorageError::Io { path: self.queue.path().to_path_buf(), message: e.to_string() })??;
        Ok(())
    }

    /// The next stored event; `None` once closed and every stored event was handed out.
    pub async fn pop(&self) -> Option<Event> {
        loop {
            let notified = self.items.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (cursor, to_read) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((seq, event)) = state.prefetched.pop_front() {
                    return Some(self.hand_out(&mut state, seq, event));
                }
                if let Some((seq, event)) = state.take_hot() {
                    return Some(self.hand_out(&mut state, seq, event));
                }
                (state.cursor, state.to_read())
            };
            match self.fetch(cursor, to_read).await {
                Ok((Some(last), fetched)) => {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    // Only forward: a concurrent fetch may have gone further.
                    if state.cursor.is_none_or(|c| c < last) {
                        state.cursor = Some(last);
                        state.prefetched.extend(fetched);
                        state.read_up_to(last);
                    }
                    continue;
                }
                // Nothing stored after the cursor, or only records whose push has not yet
                // registered its finalizers: that push notifies once it has.
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

    /// Up to `max` records after `cursor` that are ready to hand out: the last sequence number read
    /// (None: nothing ready) and the events that decoded. Those that did not are quarantined.
    /// Reading stops before the first record pushed since the buffer opened whose push has
    /// not registered its finalizers yet (see `pushed_from`).
    async fn fetch(&self, cursor: Option<u64>, max: usize) -> Result<(Option<u64>, Vec<(u64, Event)>), StorageError> {
        let (queue, state, pushed_from) = (self.queue.clone(), self.state.clone(), self.pushed_from);
        let path = self.queue.path().to_path_buf();
        // Read and decoded off the runtime's thread, which a disk run keeps busy with taking
        // batches in and delivering (docs/performance.md, round 4).
        let (last, events, corrupt) = tokio::task::spawn_blocking(move || {
            let mut raw = queue.read_after(cursor, max)?;
            {
                let state = state.lock().unwrap_or_else(|p| p.into_inner());
                let unregistered =
                    raw.iter().position(|(seq, _)| *seq >= pushed_from && !state.waiting.contains_key(seq));
                if let Some(at) = unregistered {
                    raw.truncate(at);
                }
            }
            let last = raw.last().map(|(seq, _)| *seq);
            let mut events = Vec::with_capacity(raw.len());
            let mut corrupt = Vec::new();
            for (seq, bytes) in raw {
                match serde_json::from_slice::<Record>(&bytes) {
                    Ok(record) => events.push((seq, Event::with_id(record.event, record.id.into(), record.size))),
                    Err(error) => corrupt.push((seq, bytes, error.to_string())),
                }
            }
            Ok::<_, StorageError>((last, events, corrupt))
        })
        .await
        .map_err(|e| StorageError::Io { path, message: e.to_string() })??;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, IncidentEvent};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const LIMITS: Limits = Limits { events: 100_000, bytes: 1 << 30 };

    fn event(n: usize) -> Event {
        Event::new(IncidentEvent::new(EventKind::Created), 100 + n)
    }

    fn record(event: &Event) -> Vec<u8> {
        serde_json::to_vec(&RecordRef { id: &event.id, size: event.size, event: &event.incident }).unwrap()
    }

    #[tokio::test]
    async fn a_pushed_record_is_handed_out_only_once_its_finalizers_are_registered() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = DiskBuffer::open(&dir.path().join("q.redb"), LIMITS).unwrap();
        // A record committed by a push that has not registered its finalizers yet, as
        // happens between a (group) commit and the push being answered.
        let stored = event(1);
        let seqs = buffer.queue.append(vec![record(&stored)]).unwrap();
        assert_eq!(seqs, vec![buffer.pushed_from]);
        let (last, ready) = buffer.fetch(None, PREFETCH).await.unwrap();
        assert_eq!((last, ready.len()), (None, 0));

        let reported = Arc::new(AtomicUsize::new(0));
        let mut finalizer = Finalizer::default();
        let counter = reported.clone();
        finalizer.push(move |outcome| {
            assert_eq!(outcome, Outcome::Delivered);
            counter.fetch_add(1, Ordering::Relaxed);
        });
        buffer.state.lock().unwrap().waiting.insert(seqs[0], finalizer);
        buffer.items.notify_waiters();
        let popped = tokio::time::timeout(Duration::from_secs(10), buffer.pop()).await.unwrap().unwrap();
        assert_eq!(popped.id, stored.id);
        popped.finish(Outcome::Delivered);
        assert_eq!(reported.load(Ordering::Relaxed), 1);
    }

    fn events(from: usize, n: usize) -> Vec<Event> {
        (from..from + n).map(event).collect()
    }

    /// Pops `n` events, finishing each as delivered.
    async fn pop_all(buffer: &DiskBuffer, n: usize) -> Vec<Event> {
        let mut popped = Vec::with_capacity(n);
        for _ in 0..n {
            let event = tokio::time::timeout(Duration::from_secs(10), buffer.pop()).await.unwrap().unwrap();
            popped.push(event);
        }
        popped
    }

    #[tokio::test]
    async fn a_pushed_event_is_handed_out_from_memory_with_its_finalizer() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = DiskBuffer::open(&dir.path().join("q.redb"), LIMITS).unwrap();
        let reported = Arc::new(AtomicUsize::new(0));
        let mut pushed = events(0, 3);
        for event in &mut pushed {
            let counter = reported.clone();
            event.finalizer.push(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
        let incidents: Vec<_> = pushed.iter().map(|event| event.incident.clone()).collect();
        buffer.push(pushed).await.unwrap();
        assert_eq!(buffer.stored(), 3, "stored all the same");
        let popped = pop_all(&buffer, 3).await;
        for (event, incident) in popped.iter().zip(&incidents) {
            // The very event pushed, not one decoded from its record.
            assert!(Arc::ptr_eq(&event.incident, incident));
        }
        for event in popped {
            event.finish(Outcome::Delivered);
        }
        assert_eq!(reported.load(Ordering::Relaxed), 3);
        let state = buffer.state.lock().unwrap();
        assert!(state.hot.is_empty() && state.hot_bytes == 0 && state.waiting.is_empty());
    }

    /// More than fit in memory: those pushed while it was full come from the file, and
    /// everything is handed out once, in order.
    #[tokio::test]
    async fn events_beyond_the_memory_bound_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = DiskBuffer::open(&dir.path().join("q.redb"), LIMITS).unwrap();
        let total = HOT_EVENTS * 2 + 100;
        let pushed = events(0, total);
        let ids: Vec<_> = pushed.iter().map(|event| event.id.clone()).collect();
        let incidents: Vec<_> = pushed.iter().map(|event| event.incident.clone()).collect();
        let mut pushed = pushed.into_iter();
        for size in [HOT_EVENTS - 24, 600, total - HOT_EVENTS - 576] {
            buffer.push(pushed.by_ref().take(size).collect()).await.unwrap();
        }
        assert_eq!(buffer.state.lock().unwrap().hot.len(), HOT_EVENTS);
        // Half of the kept ones out: room again, so a new push is kept while older
        // records wait in the file.
        let mut popped = pop_all(&buffer, HOT_EVENTS / 2).await;
        let late = events(total, 10);
        let late_incidents: Vec<_> = late.iter().map(|event| event.incident.clone()).collect();
        let mut expected = ids;
        expected.extend(late.iter().map(|event| event.id.clone()));
        buffer.push(late).await.unwrap();
        popped.extend(pop_all(&buffer, total + 10 - HOT_EVENTS / 2).await);
        let popped_ids: Vec<_> = popped.iter().map(|event| event.id.clone()).collect();
        assert_eq!(popped_ids, expected);
        let from_memory = popped[..total].iter().zip(&incidents).filter(|(e, i)| Arc::ptr_eq(&e.incident, i)).count();
        assert_eq!(from_memory, HOT_EVENTS);
        for (event, incident) in popped[total..].iter().zip(&late_incidents) {
            assert!(Arc::ptr_eq(&event.incident, incident), "the late push came from memory");
        }
        for event in popped {
            event.finish(Outcome::Delivered);
        }
        assert!(buffer.state.lock().unwrap().hot.is_empty());
    }

    /// A buffer opened on a file that already holds one record, event `n` (the directory
    /// is returned to keep it alive).
    fn opened_over_a_stored_record(n: usize) -> (tempfile::TempDir, DiskBuffer, Event) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let stored = event(n);
        DiskQueue::open(&path).unwrap().append(vec![record(&stored)]).unwrap();
        let buffer = DiskBuffer::open(&path, LIMITS).unwrap();
        (dir, buffer, stored)
    }

    #[tokio::test]
    async fn records_from_before_the_open_go_out_before_new_pushes() {
        let (_dir, buffer, stored) = opened_over_a_stored_record(1);
        let pushed = events(2, 2);
        let mut expected = vec![stored.id.clone()];
        expected.extend(pushed.iter().map(|event| event.id.clone()));
        buffer.push(pushed).await.unwrap();
        let popped = pop_all(&buffer, 3).await;
        assert_eq!(popped.iter().map(|event| event.id.clone()).collect::<Vec<_>>(), expected);
        for event in popped {
            event.finish(Outcome::Delivered);
        }
    }

    #[tokio::test]
    async fn records_from_before_the_open_need_no_registration() {
        let (_dir, buffer, stored) = opened_over_a_stored_record(2);
        assert_eq!(buffer.pushed_from, 2);
        let popped = tokio::time::timeout(Duration::from_secs(10), buffer.pop()).await.unwrap().unwrap();
        assert_eq!((popped.id.clone(), popped.size), (stored.id.clone(), stored.size));
        popped.finish(Outcome::Delivered);
    }

    /// Concurrent pushes share commits; every event popped still carries its push's
    /// finalizer, whichever push of a commit was answered first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_keep_every_finalizer() {
        const PUSHERS: usize = 8;
        const BATCHES: usize = 10;
        const EVENTS: usize = 5;
        let dir = tempfile::tempdir().unwrap();
        let buffer = Arc::new(DiskBuffer::open(&dir.path().join("q.redb"), LIMITS).unwrap());
        let delivered = Arc::new(AtomicUsize::new(0));
        let total = PUSHERS * BATCHES * EVENTS;

        let popper = {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                for _ in 0..total {
                    let event = buffer.pop().await.expect("the buffer is not closed");
                    event.finish(Outcome::Delivered);
                }
            })
        };
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let (buffer, delivered) = (buffer.clone(), delivered.clone());
                tokio::spawn(async move {
                    for b in 0..BATCHES {
                        let events = (0..EVENTS)
                            .map(|e| {
                                let mut event = event(p * 1000 + b * 10 + e);
                                let delivered = delivered.clone();
                                event.finalizer.push(move |outcome| {
                                    if outcome == Outcome::Delivered {
                                        delivered.fetch_add(1, Ordering::Relaxed);
                                    }
                                });
                                event
                            })
                            .collect();
                        buffer.push(events).await.unwrap();
                    }
                })
            })
            .collect();
        for pusher in pushers {
            tokio::time::timeout(Duration::from_secs(60), pusher).await.unwrap().unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), popper).await.unwrap().unwrap();
        assert_eq!(delivered.load(Ordering::Relaxed), total);
        assert!(buffer.state.lock().unwrap().waiting.is_empty());
    }
}
