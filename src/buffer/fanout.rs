//! The fan-out from a source to the buffers of the sinks that read it.
//!
//! A batch is taken by each sink whole or not at all: room is reserved in every buffer
//! first, and only then are the events pushed. When a sink is full, its [`WhenFull`]
//! decides: its copies go to the dead letters while the other sinks take the batch, or
//! the batch is refused. A batch no sink has room for is always refused
//! ([`SendError::Full`]), and [`SourceSender::send_within`] waits for room first.
//!
//! A batch larger than a sink's whole buffer (`buffer.max_events` or `buffer.max_bytes`)
//! could never be taken without going over its bounds. [`SourceSender::try_send`] and
//! [`SourceSender::send_within`] refuse it at once, whole ([`SendError::TooLarge`], which
//! the `http_server` source answers 413): its sender must split it, since only the sender
//! can keep a body's whole-or-nothing promise and its acknowledgement. [`SourceSender::send`],
//! for sources with no one to answer (`stdin`), splits it itself.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::{BufferError, Limits, MemoryBuffer, RoomFreed, SinkBuffer, WhenFull};
use crate::dead_letters::{self, DeadLetters};
use crate::event::{AckGroup, Decoded, Event, Outcome};
use crate::stats::{DeadLetterReason, SinkStats, SourceStats};

/// Why a source's batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Sinks have no room; the sender should retry later.
    #[error("no room in the buffer of {}", .sinks.join(", "))]
    Full {
        /// The full sinks.
        sinks: Vec<String>,
    },
    /// The batch is larger than a sink's whole buffer: it could never be taken, however
    /// long the sender waits, so nothing of it was; the sender must send smaller batches.
    #[error(
        "a batch of {}{events} events ({}{bytes} bytes) is larger than the buffer of sink `{sink}` \
         (buffer.max_events = {}, buffer.max_bytes = {}) and could never be taken; nothing of it was: \
         send smaller batches",
        if *.at_least { "at least " } else { "" },
        if *.at_least { "at least " } else { "" },
        .limits.events,
        .limits.bytes
    )]
    TooLarge {
        /// The first sink whose buffer it exceeds.
        sink: String,
        /// Events in the batch (with `at_least`: counted until the batch was found too large).
        events: usize,
        /// Their bytes (with `at_least`, likewise).
        bytes: u64,
        /// That sink's bounds.
        limits: Limits,
        /// Whether the batch was measured only until it passed a bound (a body whose
        /// decoding stopped there), so holds more than `events` and `bytes`.
        at_least: bool,
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
    /// Events [`SourceSender::send`] left out because one alone is larger than a sink's
    /// `buffer.max_bytes` (each logged); always 0 from the other ways of sending.
    pub too_large: usize,
    /// Sinks whose disk buffer could not store the batch and that dead-lettered their
    /// copies instead (`when_full = "dead_letter"`): their storage is failing.
    pub storage_failed: Vec<String>,
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
    /// The sinks it feeds; shared by every clone, and replaced whole when the pipeline is
    /// reloaded ([`SourceSender::rewire`]). Each batch goes to the set current when it starts.
    outputs: Arc<RwLock<Arc<Vec<SinkInput>>>>,
    /// For [`event_channel`]: closes the channel when the last clone is dropped.
    closer: Option<Arc<CloseOnDrop>>,
    /// The sending source's counters: events taken are counted here.
    stats: Option<Arc<SourceStats>>,
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
        SourceSender { outputs: Arc::new(RwLock::new(Arc::new(outputs))), closer: None, stats: None }
    }

    /// Sends to `outputs` from now on (a reload added, removed or replaced sinks). Batches
    /// already being sent finish with the sinks they started with.
    /// Returns the set it replaced: it is dropped once no batch uses it any more.
    pub fn rewire(&self, outputs: Vec<SinkInput>) -> Arc<Vec<SinkInput>> {
        std::mem::replace(&mut *self.outputs.write().unwrap_or_else(|p| p.into_inner()), Arc::new(outputs))
    }

    /// The sinks fed now.
    fn current(&self) -> Arc<Vec<SinkInput>> {
        self.outputs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The same sender, counting the events it hands over in `stats`.
    pub fn counting(mut self, stats: Arc<SourceStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// A sender to plain buffers with no dead letters: a full buffer refuses the batch.
    pub fn to_buffers(buffers: Vec<SinkBuffer>) -> Self {
        SourceSender::new(
            buffers
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
        )
    }

    /// The largest batch every sink fed now can take: the smallest `max_events` and the
    /// smallest `max_bytes` of their buffers (`None` with no sink). A larger batch is
    /// refused ([`SendError::TooLarge`]).
    pub fn batch_limits(&self) -> Option<Limits> {
        self.current().iter().map(|o| o.buffer.limits()).reduce(Limits::min)
    }

    /// [`SendError::TooLarge`] naming the first sink fed now whose buffer a batch of
    /// `events` events and `bytes` bytes is larger than, if any. `at_least`: the batch was
    /// measured only until it passed a bound.
    pub fn too_large(&self, events: usize, bytes: u64, at_least: bool) -> Option<SendError> {
        Self::too_large_for(&self.current(), events, bytes, at_least)
    }

    fn too_large_for(outputs: &[SinkInput], events: usize, bytes: u64, at_least: bool) -> Option<SendError> {
        outputs.iter().find_map(|output| {
            let limits = output.buffer.limits();
            (!limits.hold(events, bytes)).then(|| SendError::TooLarge {
                sink: output.name.clone(),
                events,
                bytes,
                limits,
                at_least,
            })
        })
    }

    /// Sends a batch, waiting for room while every sink is full.
    ///
    /// For sources whose batches are not a unit anyone is answered for (`stdin`): a batch
    /// larger than a sink's buffer goes in parts that fit, in order, each taken whole or
    /// not at all. An event that alone is larger than a sink's `buffer.max_bytes` can go
    /// nowhere: it is left out and logged (counted in [`SendReport::too_large`]).
    pub async fn send(&self, events: Vec<Decoded>, ack: Option<&AckGroup>) -> Result<SendReport, SendError> {
        let mut rest = std::collections::VecDeque::from(events);
        let mut report = SendReport::default();
        while !rest.is_empty() {
            // The bounds of now: a reload may change them between parts.
            let Some(limits) = self.batch_limits() else {
                return self.try_send(rest.into(), ack).await.map(|sent| report.add(sent));
            };
            let mut bytes = 0u64;
            let mut take = 0;
            for decoded in &rest {
                let next = bytes.saturating_add(decoded.size as u64);
                if !limits.hold(take + 1, next) {
                    break;
                }
                (take, bytes) = (take + 1, next);
            }
            if take == 0 {
                // The first event alone is larger than some buffer's max_bytes (max_events
                // is at least 1).
                let Some(Decoded { incident: event, size, .. }) = rest.pop_front() else { break };
                let reason = self.too_large(1, size as u64, false).map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(
                    event_type = %event.event_type,
                    id = event.id.as_deref().unwrap_or(""),
                    bytes = size,
                    %reason,
                    "an event larger than a sink's buffer was left out"
                );
                report.too_large += 1;
                continue;
            }
            let part: Vec<_> = rest.drain(..take).collect();
            match self.send_inner(part, ack, None).await {
                Ok(sent) => report = report.add(sent),
                // The bounds shrank (a reload) since they were read: split again.
                Err((SendError::TooLarge { .. }, back)) => {
                    for event in back.into_iter().rev() {
                        rest.push_front(event);
                    }
                }
                Err((error, _)) => return Err(error),
            }
        }
        Ok(report)
    }

    /// Sends a batch, waiting at most `max_wait` (`None`: for ever) for room while it
    /// would be refused; then [`SendError::Full`]. A batch larger than a sink's whole
    /// buffer is refused at once ([`SendError::TooLarge`]).
    pub async fn send_within(
        &self,
        events: Vec<Decoded>,
        ack: Option<&AckGroup>,
        max_wait: Option<std::time::Duration>,
    ) -> Result<SendReport, SendError> {
        self.send_inner(events, ack, max_wait).await.map_err(|(error, _)| error)
    }

    /// [`SourceSender::send_within`], handing back the batch when it was refused whole
    /// (full, too large), for a source that keeps what it could not send (`kafka`).
    pub async fn send_or_return(
        &self,
        events: Vec<Decoded>,
        ack: Option<&AckGroup>,
        max_wait: Option<std::time::Duration>,
    ) -> Result<SendReport, (SendError, Vec<Decoded>)> {
        self.send_inner(events, ack, max_wait).await
    }

    /// Records input that never became an event (`input`, see [`dead_letters::input_letter`])
    /// in the dead letters of every sink fed now: it was bad for all of them. Returns how
    /// many sinks it was recorded for, each counted as [`DeadLetterReason::Decode`]; a store
    /// that cannot be written is logged (and counted by the store).
    pub async fn dead_letter_input(&self, webhook_id: &str, input: serde_json::Value, reason: &str) -> usize {
        let mut recorded = 0;
        for output in self.current().iter() {
            let Some(dead_letters) = &output.dead_letters else { continue };
            let letter = dead_letters::input_letter(&output.name, webhook_id, input.clone(), reason.to_string());
            match dead_letters.record(vec![letter]).await {
                Ok(()) => {
                    output.stats.count_dead_letters(DeadLetterReason::Decode, 1);
                    recorded += 1;
                }
                Err(error) => {
                    tracing::error!(sink = %output.name, %error, %reason, "the dead letters cannot be written: bad input lost")
                }
            }
        }
        recorded
    }

    async fn send_inner(
        &self,
        events: Vec<Decoded>,
        ack: Option<&AckGroup>,
        max_wait: Option<std::time::Duration>,
    ) -> Result<SendReport, (SendError, Vec<Decoded>)> {
        let deadline = max_wait.map(|wait| tokio::time::Instant::now() + wait);
        let mut events = events;
        loop {
            // Register interest in freed room before trying, so a give-back in between is
            // seen. A sender is woken once one of the sinks that refused it has room for the
            // whole batch.
            let count = events.len();
            let bytes: u64 = events.iter().map(|decoded| decoded.size as u64).sum();
            // A reload may leave the source with no sink at all: nothing to wait for then.
            let outputs = self.current();
            if outputs.is_empty() {
                return self.try_send_inner(events, ack).await;
            }
            // Too large is for good: no room given back will ever make it fit.
            if let Some(error) = Self::too_large_for(&outputs, count, bytes, false) {
                return Err((error, events));
            }
            let waits: Vec<_> = outputs.iter().map(|o| o.buffer.room_for(count, bytes)).collect();
            match self.try_send_inner(events, ack).await {
                Ok(report) => return Ok(report),
                Err((full @ SendError::Full { .. }, back)) => {
                    events = back;
                    let waits = Self::waits_for_full(&outputs, waits, &full);
                    // Bounded wait: re-check now and then even if a notification was missed.
                    let mut until = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
                    if let Some(deadline) = deadline {
                        if tokio::time::Instant::now() >= deadline {
                            return Err((full, events));
                        }
                        until = until.min(deadline);
                    }
                    let _ = tokio::time::timeout_at(until, futures::future::select_all(waits)).await;
                }
                Err(refused) => return Err(refused),
            }
        }
    }

    /// Of `waits` (one per output, in order), those of the sinks `full` names: only room
    /// there lets the batch in. Waiting on a sink that had room would wake the sender at
    /// once (giving back the room it had reserved there counts as room freed), then at
    /// every event that sink delivers, each time to be refused again: a busy loop that, on
    /// one thread, kept the full sink from ever delivering. All of them if none is named
    /// (a reload changed the sinks in between).
    fn waits_for_full(outputs: &[SinkInput], waits: Vec<RoomFreed>, full: &SendError) -> Vec<RoomFreed> {
        let SendError::Full { sinks } = full else { return waits };
        let named = |output: &SinkInput| sinks.contains(&output.name);
        if !outputs.iter().any(named) {
            return waits;
        }
        outputs.iter().zip(waits).filter(|(output, _)| named(output)).map(|(_, wait)| wait).collect()
    }

    /// Sends a batch now, or says why not. A batch larger than a sink's whole buffer is
    /// refused ([`SendError::TooLarge`]).
    pub async fn try_send(&self, events: Vec<Decoded>, ack: Option<&AckGroup>) -> Result<SendReport, SendError> {
        self.try_send_inner(events, ack).await.map_err(|(e, _)| e)
    }

    async fn try_send_inner(
        &self,
        events: Vec<Decoded>,
        ack: Option<&AckGroup>,
    ) -> Result<SendReport, (SendError, Vec<Decoded>)> {
        let count = events.len();
        let bytes: u64 = events.iter().map(|decoded| decoded.size as u64).sum();
        let mut reserved = Vec::new();
        let mut full = Vec::new();
        let outputs = self.current();
        if let Some(error) = Self::too_large_for(&outputs, count, bytes, false) {
            return Err((error, events));
        }
        for output in outputs.iter() {
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
        let events: Vec<Event> = events.into_iter().map(Event::decoded).collect();
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
        // Disk buffers first: a disk write is the push that can fail, and a batch refused
        // then must not already sit in a memory buffer (the sender sends it again).
        let mut reserved = reserved;
        reserved.sort_by_key(|(output, _)| !output.buffer.is_disk());
        // A disk buffer that cannot store the batch (a full disk) counts as full for it:
        // its `when_full` decides. With `dead_letter` its copies go to the dead letters and
        // the sinks beside it take the batch; with `reject` the batch is refused.
        let mut storage_failed: Vec<(&SinkInput, String)> = Vec::new();
        for (output, reservation) in reserved {
            match output.buffer.push(reservation, copies(&events)).await {
                Ok(()) => {
                    output.stats.accepted.fetch_add(count as u64, Ordering::Relaxed);
                }
                Err(BufferError::Closed) => return Err((SendError::Closed, Vec::new())),
                Err(BufferError::Storage(e)) if refuses(&output) => {
                    return Err((SendError::Storage(e.to_string()), Vec::new()))
                }
                Err(BufferError::Storage(e)) => {
                    tracing::error!(sink = %output.name, error = %e, events = count, "disk buffer cannot store the batch; its copies go to the dead letters, the other sinks take it");
                    storage_failed.push((output, format!("the disk buffer could not store it: {e}")));
                }
            }
        }
        if let Some(stats) = &self.stats {
            stats.events.fetch_add(count as u64, Ordering::Relaxed);
        }
        let mut report = SendReport { events: count, ..SendReport::default() };
        let full = full.into_iter().map(|output| {
            let (held, held_bytes) = output.buffer.usage();
            (output, format!("buffer full ({held} events, {held_bytes} bytes held)"), DeadLetterReason::BufferFull)
        });
        let failed = storage_failed.into_iter().map(|(output, reason)| (output, reason, DeadLetterReason::Storage));
        for (output, reason, why) in full.chain(failed) {
            let letters =
                events.iter().map(|event| dead_letters::letter(&output.name, event, reason.clone(), None, 0)).collect();
            let Some(dead_letters) = &output.dead_letters else { continue };
            let outcome = match dead_letters.record(letters).await {
                Ok(()) => {
                    output.stats.count_dead_letters(why, count as u64);
                    Outcome::Failed
                }
                Err(error) => {
                    tracing::error!(sink = %output.name, %error, events = count, %reason, "the dead letters cannot be written either: events lost");
                    Outcome::Dropped
                }
            };
            tracing::warn!(sink = %output.name, events = count, %reason, "copies dead-lettered");
            for copy in copies(&events) {
                copy.finish(outcome);
            }
            report.dead_lettered.push(output.name.clone());
            if why == DeadLetterReason::Storage {
                report.storage_failed.push(output.name.clone());
            }
        }
        Ok(report)
    }
}

impl SendReport {
    /// This report and the next part's, together.
    fn add(mut self, next: SendReport) -> SendReport {
        self.events += next.events;
        self.too_large += next.too_large;
        for sink in next.dead_lettered {
            if !self.dead_lettered.contains(&sink) {
                self.dead_lettered.push(sink);
            }
        }
        self
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
/// (`try_send`) or makes the sender wait (`send`). A batch of more than `max_events`
/// events is refused ([`SendError::TooLarge`], sink `sink0`), or split by `send`.
pub fn event_channel(max_events: usize) -> (SourceSender, EventReceiver) {
    let limits = Limits { events: max_events, bytes: u64::MAX };
    let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(limits)));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{sample_event, EventKind, IncidentEvent};
    use crate::storage::dead_letters::DeadLetterStore;

    /// A memory buffer for `events` events.
    fn buffer(events: usize) -> SinkBuffer {
        SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events, bytes: u64::MAX })))
    }

    fn input(
        name: &str,
        buffer: &SinkBuffer,
        when_full: WhenFull,
        dead_letters: Option<Arc<DeadLetters>>,
    ) -> SinkInput {
        SinkInput { name: name.into(), buffer: buffer.clone(), when_full, dead_letters, stats: Arc::default() }
    }

    fn batch(n: usize) -> Vec<Decoded> {
        (0..n).map(|_| Decoded::new(IncidentEvent::new(EventKind::Created), 10)).collect()
    }

    fn stored_letters(dir: &std::path::Path) -> Vec<crate::storage::dead_letters::DeadLetter> {
        DeadLetterStore::open(&crate::dead_letters::store_path(dir)).unwrap().list(None).unwrap()
    }

    #[tokio::test]
    async fn a_batch_goes_whole_to_every_sink_and_is_counted() {
        let (a, b) = (buffer(10), buffer(10));
        let sender =
            SourceSender::new(vec![input("a", &a, WhenFull::Reject, None), input("b", &b, WhenFull::Reject, None)]);
        let report = sender.try_send(batch(3), None).await.unwrap();
        assert_eq!(report, SendReport { events: 3, dead_lettered: vec![], too_large: 0, storage_failed: vec![] });
        assert_eq!(a.usage(), (3, 30));
        assert_eq!(b.usage(), (3, 30));
        assert_eq!(SinkStats::get(&sender.current()[0].stats.accepted), 3);
        assert_eq!(SinkStats::get(&sender.current()[1].stats.accepted), 3);
    }

    #[tokio::test]
    async fn a_full_rejecting_sink_refuses_the_batch_for_every_sink() {
        let (roomy, full) = (buffer(10), buffer(2));
        let sender = SourceSender::new(vec![
            input("roomy", &roomy, WhenFull::DeadLetter, None),
            input("full", &full, WhenFull::Reject, None),
        ]);
        sender.try_send(batch(2), None).await.unwrap();
        let error = sender.try_send(batch(1), None).await.unwrap_err();
        assert_eq!(error, SendError::Full { sinks: vec!["full".into()] });
        // The room reserved in the other sink was given back: nothing of the batch is there.
        assert_eq!(roomy.usage(), (2, 20));
        assert_eq!(full.usage(), (2, 20));
    }

    #[tokio::test]
    async fn a_full_sink_without_dead_letters_refuses_even_when_set_to_dead_letter() {
        let (roomy, full) = (buffer(10), buffer(1));
        let sender = SourceSender::new(vec![
            input("roomy", &roomy, WhenFull::DeadLetter, None),
            input("full", &full, WhenFull::DeadLetter, None),
        ]);
        sender.try_send(batch(1), None).await.unwrap();
        assert!(matches!(sender.try_send(batch(1), None).await, Err(SendError::Full { .. })));
        assert_eq!(roomy.usage(), (1, 10));
    }

    #[tokio::test]
    async fn bad_input_is_dead_lettered_and_counted_as_decode_for_every_sink_with_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = Arc::new(DeadLetters::new(dir.path()));
        let (a, b, c) = (buffer(10), buffer(10), buffer(10));
        let sender = SourceSender::new(vec![
            input("a", &a, WhenFull::Reject, Some(dead_letters.clone())),
            input("b", &b, WhenFull::Reject, Some(dead_letters.clone())),
            input("c", &c, WhenFull::Reject, None),
        ]);
        let recorded = sender.dead_letter_input("msg_x", serde_json::json!({"payload": "not json"}), "bad").await;
        assert_eq!(recorded, 2);
        let decode = DeadLetterReason::ALL.iter().position(|r| *r == DeadLetterReason::Decode).unwrap();
        for (i, expected) in [1, 1, 0].into_iter().enumerate() {
            let stats = &sender.current()[i].stats;
            assert_eq!(SinkStats::get(&stats.dead_lettered_by[decode]), expected);
            assert_eq!(SinkStats::get(&stats.dead_lettered), expected);
            assert_eq!(SinkStats::get(&stats.accepted), 0, "it never was an event");
        }
        assert_eq!(DeadLetterReason::Decode.label(), "decode");
    }

    #[tokio::test]
    async fn a_full_sink_dead_letters_its_copies_while_the_others_take_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = Arc::new(DeadLetters::new(dir.path()));
        let (roomy, full) = (buffer(10), buffer(2));
        let sender = SourceSender::new(vec![
            input("roomy", &roomy, WhenFull::DeadLetter, Some(dead_letters.clone())),
            input("full", &full, WhenFull::DeadLetter, Some(dead_letters.clone())),
        ]);
        sender.try_send(batch(1), None).await.unwrap();
        let group = AckGroup::new();
        let mut events = batch(2);
        events[0].incident = sample_event();
        let report = sender.try_send(events, Some(&group)).await.unwrap();
        assert_eq!(
            report,
            SendReport { events: 2, dead_lettered: vec!["full".into()], too_large: 0, storage_failed: vec![] }
        );
        assert_eq!(roomy.usage(), (3, 30));
        assert_eq!(full.usage(), (1, 10), "the full sink's buffer is not touched");
        assert_eq!(SinkStats::get(&sender.current()[1].stats.dead_lettered), 2);
        // The dead-lettered copies report `Failed` to the batch's acknowledgement at once;
        // the copies in `roomy` report when delivered.
        let waiting = tokio::spawn(group.wait());
        while let Some(event) = roomy.pop().await {
            event.finish(Outcome::Delivered);
            if roomy.usage().0 == 0 {
                break;
            }
        }
        assert_eq!(waiting.await.unwrap(), Outcome::Failed);
        // The store is held open while the sinks' dead letters are: close it to read it.
        drop((sender, dead_letters));
        let letters = stored_letters(dir.path());
        assert_eq!(letters.len(), 2);
        assert!(letters.iter().all(|l| l.sink == "full" && l.reason.starts_with("buffer full") && l.attempts == 0));
        assert_eq!(letters[0].event, sample_event().to_json());
    }

    #[tokio::test]
    async fn a_batch_no_sink_has_room_for_is_refused_even_with_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = Arc::new(DeadLetters::new(dir.path()));
        let full = buffer(1);
        let sender = SourceSender::new(vec![input("full", &full, WhenFull::DeadLetter, Some(dead_letters))]);
        sender.try_send(batch(1), None).await.unwrap();
        assert_eq!(sender.try_send(batch(1), None).await.unwrap_err(), SendError::Full { sinks: vec!["full".into()] });
        assert!(!crate::dead_letters::store_path(dir.path()).exists(), "nothing was dead-lettered");
    }

    #[tokio::test]
    async fn a_batch_larger_than_a_buffer_is_refused_whole_even_when_it_is_empty() {
        let (roomy, small) = (buffer(100), buffer(2));
        let sender = SourceSender::new(vec![
            input("roomy", &roomy, WhenFull::DeadLetter, None),
            input("small", &small, WhenFull::DeadLetter, None),
        ]);
        assert_eq!(sender.batch_limits(), Some(Limits { events: 2, bytes: u64::MAX }));
        let error = sender.try_send(batch(5), None).await.unwrap_err();
        let limits = Limits { events: 2, bytes: u64::MAX };
        assert_eq!(error, SendError::TooLarge { sink: "small".into(), events: 5, bytes: 50, limits, at_least: false });
        let message = error.to_string();
        assert!(message.contains("sink `small`") && message.contains("buffer.max_events = 2"), "{message}");
        assert_eq!((roomy.usage(), small.usage()), ((0, 0), (0, 0)), "nothing of it was taken anywhere");

        // By bytes as well, and waiting does not help: refused at once.
        let narrow = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 100, bytes: 25 })));
        let sender = SourceSender::new(vec![input("narrow", &narrow, WhenFull::Reject, None)]);
        let started = tokio::time::Instant::now();
        let error = sender.send_within(batch(3), None, Some(Duration::from_secs(60))).await.unwrap_err();
        assert!(matches!(error, SendError::TooLarge { events: 3, bytes: 30, .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(narrow.usage(), (0, 0));
        // What fits goes in; the bounds hold for every batch.
        sender.try_send(batch(2), None).await.unwrap();
        assert_eq!(narrow.usage(), (2, 20));
    }

    #[tokio::test]
    async fn send_splits_a_batch_larger_than_a_buffer_into_parts_that_fit() {
        let small = buffer(2);
        let sender = SourceSender::new(vec![input("small", &small, WhenFull::Reject, None)]);
        let mut events = batch(5);
        for (i, decoded) in events.iter_mut().enumerate() {
            decoded.incident.id = Some(i.to_string().into());
        }
        let sending = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(events, None).await })
        };
        let mut ids = Vec::new();
        while ids.len() < 5 {
            let event = tokio::time::timeout(Duration::from_secs(5), small.pop()).await.unwrap().unwrap();
            assert!(small.usage().0 <= 2, "the buffer never holds more than its bound");
            ids.push(event.incident.id.clone().unwrap());
            event.finish(Outcome::Delivered);
        }
        assert_eq!(ids, ["0", "1", "2", "3", "4"], "in order");
        let report = sending.await.unwrap().unwrap();
        assert_eq!((report.events, report.too_large), (5, 0));
    }

    #[tokio::test]
    async fn send_leaves_out_an_event_larger_than_a_buffer_and_sends_the_rest() {
        let narrow = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 10, bytes: 25 })));
        let sender = SourceSender::new(vec![input("narrow", &narrow, WhenFull::Reject, None)]);
        let mut events = batch(3);
        events[1].size = 30;
        let report = sender.send(events, None).await.unwrap();
        assert_eq!((report.events, report.too_large), (2, 1));
        assert_eq!(narrow.usage(), (2, 20), "the first and the third");
    }

    #[tokio::test]
    async fn send_within_waits_for_room_then_gives_up() {
        let full = buffer(1);
        let sender = SourceSender::new(vec![input("full", &full, WhenFull::Reject, None)]);
        sender.try_send(batch(1), None).await.unwrap();
        let error = sender.send_within(batch(1), None, Some(Duration::from_millis(300))).await.unwrap_err();
        assert!(matches!(error, SendError::Full { .. }));

        // Room given back while a sender waits lets its batch in.
        let waiting = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send_within(batch(1), None, Some(Duration::from_secs(60))).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        full.pop().await.unwrap().finish(Outcome::Delivered);
        assert_eq!(waiting.await.unwrap().unwrap().events, 1);
        assert_eq!(full.usage(), (1, 10));
    }

    /// Counts the wake-ups of the task that polls with it.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_sender_waiting_for_a_full_sink_is_not_woken_by_another_sinks_deliveries() {
        use std::future::Future;
        let (roomy, full) = (buffer(100), buffer(1));
        let sender = SourceSender::new(vec![
            input("roomy", &roomy, WhenFull::Reject, None),
            input("full", &full, WhenFull::Reject, None),
        ]);
        sender.try_send(batch(1), None).await.unwrap();
        SourceSender::to_buffers(vec![roomy.clone()]).try_send(batch(10), None).await.unwrap();

        let wakes = Arc::new(Wakes::default());
        let waker = futures::task::waker(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut waiting = Box::pin(sender.send_within(batch(1), None, Some(Duration::from_secs(5))));
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "`full` has no room");

        // `roomy` delivers all it holds: room there, none in `full`, so no reason to wake.
        for _ in 0..11 {
            roomy.pop().await.unwrap().finish(Outcome::Delivered);
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken by the deliveries of a sink that had room");

        // Room in `full`: woken, and the batch goes in.
        full.pop().await.unwrap().finish(Outcome::Delivered);
        assert!(wakes.0.load(Ordering::SeqCst) >= 1);
        match waiting.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(report) => assert_eq!(report.unwrap().events, 1),
            std::task::Poll::Pending => panic!("room in both sinks, yet the batch waits"),
        }
        assert_eq!((roomy.usage().0, full.usage().0), (1, 1));
    }

    #[tokio::test]
    async fn a_closed_buffer_refuses_with_closed() {
        let closed = buffer(10);
        closed.close();
        let sender = SourceSender::new(vec![input("closed", &closed, WhenFull::Reject, None)]);
        assert_eq!(sender.try_send(batch(1), None).await.unwrap_err(), SendError::Closed);
        assert_eq!(closed.usage(), (0, 0), "the reservation was given back");
    }

    #[tokio::test]
    async fn the_event_channel_hands_events_over_and_closes_with_its_ends() {
        let (sender, mut receiver) = event_channel(2);
        sender.try_send(batch(2), None).await.unwrap();
        assert!(matches!(sender.try_send(batch(1), None).await, Err(SendError::Full { .. })));
        assert!(receiver.recv().await.is_some());
        assert!(receiver.try_recv().is_some());
        assert!(receiver.try_recv().is_none());
        drop(sender);
        assert!(receiver.recv().await.is_none(), "every sender gone: the channel ends");

        let (sender, receiver) = event_channel(2);
        drop(receiver);
        assert_eq!(sender.try_send(batch(1), None).await.unwrap_err(), SendError::Closed);
    }
}
