//! The `kafka` source's consumer: reads messages, decodes them, sends their events into
//! the sinks' buffers and commits the offsets every sink is finished with.
//!
//! - Each batch sent carries an [`AckGroup`]; once every copy of its events is finished
//!   with (delivered, filtered out or dead-lettered; none dropped unreported) its messages
//!   count as finished ([`Offsets`]), and the finished positions are committed every
//!   `commit_interval_ms`, at a rebalance and at shutdown. Nothing else commits
//!   (`enable.auto.commit` is off).
//! - Full buffers pause the assigned partitions instead of waiting inside the poll loop, so
//!   the consumer keeps polling (the group would otherwise think it dead after
//!   `max.poll.interval.ms`) and keeps the messages it already holds; they resume once a
//!   batch is taken again.
//! - At a rebalance, the revoked partitions' finished positions are committed, and what was
//!   read of them and not finished (or not yet sent) is forgotten: their next owner reads it.
//! - A message that does not decode is dead-lettered for every sink the source feeds, with
//!   its topic, partition and offset, and committed past.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::offsets::{Offsets, Partition, Read};
use crate::buffer::{SendError, SourceSender};
use crate::component::SourceContext;
use crate::event::{stable_webhook_id, AckGroup, Decoded};
use crate::sources::decode::Decoder;

/// Most messages taken from the consumer before their events are sent on.
pub const BATCH_MESSAGES: usize = 256;

/// How long a send waits for room before the partitions are paused.
const SEND_WAIT: Duration = Duration::from_millis(100);

/// How often a held batch is offered again while the partitions are paused.
const RETRY: Duration = Duration::from_millis(50);

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
}

/// The librdkafka callbacks: logs, errors, rebalances.
struct KafkaContext {
    source: String,
    offsets: Arc<Mutex<Offsets>>,
    repeats: Repeats,
}

/// How long the same warning or error from librdkafka is not logged again.
const REPEAT_QUIET: Duration = Duration::from_secs(30);

/// Keeps librdkafka's repeated lines from flooding the log: it retries a broker that
/// refuses the credentials or the certificate about every 50 ms, and says so each time
/// (an error, a log line and "all brokers down", in turn). Each line is logged once per
/// [`REPEAT_QUIET`], with how many were left out. Hand-written: tracing has no rate limit
/// of its own, and this is a few lines.
#[derive(Default)]
struct Repeats {
    /// Line → when it was last logged, and how many were left out since.
    lines: Mutex<HashMap<String, (Instant, u64)>>,
}

/// Distinct lines remembered at most (then the memory starts over).
const REPEAT_LINES: usize = 64;

impl Repeats {
    /// `Some(left out since the last time)` when `line` is to be logged now.
    fn admit(&self, line: &str) -> Option<u64> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((at, skipped)) = lines.get_mut(line) {
            if now.duration_since(*at) < REPEAT_QUIET {
                *skipped += 1;
                return None;
            }
            *at = now;
            return Some(std::mem::take(skipped));
        }
        if lines.len() >= REPEAT_LINES {
            lines.clear();
        }
        lines.insert(line.to_string(), (now, 0));
        Some(0)
    }
}

fn lock(offsets: &Mutex<Offsets>) -> MutexGuard<'_, Offsets> {
    offsets.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let source = &self.source;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                if let Some(repeated) = self.repeats.admit(message) {
                    error!(source = %source, facility, repeated, "librdkafka: {message}")
                }
            }
            RDKafkaLogLevel::Warning => {
                if let Some(repeated) = self.repeats.admit(message) {
                    warn!(source = %source, facility, repeated, "librdkafka: {message}")
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(source = %source, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(source = %source, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let source = &self.source;
        let Some(repeated) = self.repeats.admit(reason) else { return };
        // librdkafka keeps reconnecting; these two need the operator, so they say which
        // keys to look at. Neither librdkafka's reason nor ours carries a secret.
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => error!(
                source = %source,
                %reason,
                repeated,
                "kafka source `{source}`: SASL authentication to the brokers failed; check `sasl.mechanism`, \
                 `sasl.username` and `sasl.password`"
            ),
            Some(RDKafkaErrorCode::SSL) => error!(
                source = %source,
                %reason,
                repeated,
                "kafka source `{source}`: TLS to the brokers failed; check `tls.ca_file` against the brokers' \
                 certificates (and `tls.crt_file`/`tls.key_file` if they ask for one)"
            ),
            _ => warn!(source = %source, %error, repeated, "kafka: {reason}"),
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        let mut commit = TopicPartitionList::new();
        {
            let mut offsets = lock(&self.offsets);
            for element in revoked.elements() {
                let partition: Partition = (Arc::from(element.topic()), element.partition());
                if let Some(position) = offsets.revoke(&partition) {
                    let _ = commit.add_partition_offset(element.topic(), element.partition(), Offset::Offset(position));
                }
            }
        }
        if commit.count() > 0 {
            if let Err(error) = consumer.commit(&commit, CommitMode::Sync) {
                warn!(source = %self.source, %error, "cannot commit the finished offsets of revoked partitions");
            }
        }
        info!(
            source = %self.source,
            partitions = %describe(revoked),
            committed = %describe(&commit),
            "kafka partitions revoked: what was finished is committed, the rest is left to their next owner"
        );
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                info!(source = %self.source, partitions = %describe(assigned), "kafka partitions assigned")
            }
            Rebalance::Error(error) => warn!(source = %self.source, %error, "kafka rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// `topic/partition[@offset]` for each element, for logs.
fn describe(list: &TopicPartitionList) -> String {
    let parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => format!("{}/{}@{offset}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect();
    parts.join(",")
}

/// A message read and decoded, waiting to go into the buffers.
struct Pending {
    read: Read,
    events: Vec<Decoded>,
}

/// Batches sent whose events are not all finished with yet.
#[derive(Default)]
struct InFlight {
    batches: AtomicUsize,
    changed: Notify,
}

/// A consumer subscribed to the source's topics, not yet running.
pub struct KafkaConsumer {
    name: String,
    consumer: Arc<StreamConsumer<KafkaContext>>,
    offsets: Arc<Mutex<Offsets>>,
}

impl KafkaConsumer {
    /// Creates the consumer and subscribes to `topics` (no network yet: librdkafka
    /// connects in the background). Errors are librdkafka's, about the settings.
    pub fn new(name: &str, client: &ClientConfig, topics: &[String]) -> Result<KafkaConsumer, KafkaError> {
        let offsets = Arc::new(Mutex::new(Offsets::default()));
        let context = KafkaContext { source: name.to_string(), offsets: offsets.clone(), repeats: Repeats::default() };
        let consumer: StreamConsumer<KafkaContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(KafkaConsumer { name: name.to_string(), consumer: Arc::new(consumer), offsets })
    }

    /// Runs until shut down or until the pipeline's buffers close.
    pub async fn run(self, decoder: Decoder, cx: SourceContext, settings: Settings) -> Result<(), ()> {
        let mut run = Running {
            name: self.name,
            consumer: self.consumer,
            offsets: self.offsets,
            decoder,
            out: cx.out,
            in_flight: Arc::new(InFlight::default()),
            pending: VecDeque::new(),
            paused: false,
        };
        info!(source = %run.name, "kafka source started");
        let mut commit_tick = tokio::time::interval(settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !run.pending.is_empty() {
                match run.send_pending().await {
                    Sent::All => run.resume(),
                    Sent::Full => run.pause(),
                    Sent::Closed => break,
                }
            }
            let waiting = !run.pending.is_empty();
            tokio::select! {
                biased;
                () = cx.shutdown.cancelled() => break,
                _ = commit_tick.tick() => run.commit(CommitMode::Async, false),
                () = tokio::time::sleep(RETRY), if waiting => {}
                received = run.consumer.recv() => {
                    // Detached from the consumer borrow: the message's parts are copied.
                    let first = received.map(Owned::from);
                    run.take(first).await;
                    // Whatever else is ready goes in the same batch.
                    while run.pending.len() < BATCH_MESSAGES {
                        let Some(next) = run.consumer.recv().now_or_never() else { break };
                        run.take(next.map(Owned::from)).await;
                    }
                }
            }
        }
        run.stop().await;
        Ok(())
    }
}

/// The parts of a message the source uses, copied out of librdkafka's buffer.
struct Owned {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl From<BorrowedMessage<'_>> for Owned {
    fn from(message: BorrowedMessage<'_>) -> Self {
        Owned {
            topic: Arc::from(message.topic()),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// What became of the messages waiting to be sent.
enum Sent {
    /// All went into the buffers.
    All,
    /// The buffers are full: some wait.
    Full,
    /// The pipeline is shutting down.
    Closed,
}

struct Running {
    name: String,
    consumer: Arc<StreamConsumer<KafkaContext>>,
    offsets: Arc<Mutex<Offsets>>,
    decoder: Decoder,
    out: SourceSender,
    in_flight: Arc<InFlight>,
    pending: VecDeque<Pending>,
    paused: bool,
}

impl Running {
    /// Decodes a message (or logs a consumer error) and queues its events.
    async fn take(&mut self, received: Result<Owned, KafkaError>) {
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                warn!(source = %self.name, %error, "kafka consumer error");
                return;
            }
        };
        let read = lock(&self.offsets).read((message.topic.clone(), message.partition), message.offset);
        let (topic, partition, offset) = (&message.topic, message.partition, message.offset);
        let decoded = match &message.payload {
            None => Err("the message has no payload".to_string()),
            Some(payload) => self.decoder.decode_sized(payload).map_err(|e| e.to_string()),
        };
        match decoded {
            Ok(mut events) => {
                for (index, event) in events.iter_mut().enumerate() {
                    event.identity.get_or_insert_with(|| format!("kafka:{topic}:{partition}:{offset}:{index}"));
                }
                if events.is_empty() {
                    lock(&self.offsets).finished(&read);
                } else {
                    self.pending.push_back(Pending { read, events });
                }
            }
            Err(reason) => {
                let reason =
                    format!("bad message at kafka topic `{topic}` partition {partition} offset {offset}: {reason}");
                self.dead_letter(&message, &read, reason).await;
            }
        }
    }

    /// Dead-letters a message that can never become events, and counts it finished.
    async fn dead_letter(&self, message: &Owned, read: &Read, reason: String) {
        warn!(source = %self.name, topic = %message.topic, partition = message.partition, offset = message.offset, %reason, "kafka message dead-lettered");
        let text = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
        let input = json!({
            "kafka": {
                "topic": &*message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "key": text(&message.key),
            },
            "payload": text(&message.payload),
        });
        let id = stable_webhook_id(&format!("kafka:{}:{}:{}", message.topic, message.partition, message.offset));
        self.out.dead_letter_input(&id, input, &reason).await;
        lock(&self.offsets).finished(read);
    }

    /// Sends the waiting messages' events in batches the buffers can take.
    async fn send_pending(&mut self) -> Sent {
        loop {
            // Messages of partitions revoked since they were read are their next owner's.
            {
                let offsets = lock(&self.offsets);
                self.pending.retain(|p| offsets.current(&p.read));
            }
            if self.pending.is_empty() {
                return Sent::All;
            }
            let limits = self.out.batch_limits();
            let mut reads = Vec::new();
            let mut counts = Vec::new();
            let mut events: Vec<Decoded> = Vec::new();
            let mut bytes = 0u64;
            while let Some(next) = self.pending.front() {
                let more_bytes: u64 = next.events.iter().map(|e| e.size as u64).sum();
                let fits = limits.is_none_or(|l| l.hold(events.len() + next.events.len(), bytes + more_bytes));
                if !fits {
                    break;
                }
                let Some(next) = self.pending.pop_front() else { break };
                bytes += more_bytes;
                counts.push(next.events.len());
                reads.push(next.read);
                events.extend(next.events);
            }
            if reads.is_empty() {
                // One message alone is more than a sink's whole buffer: it can never go in.
                let Some(big) = self.pending.pop_front() else { return Sent::All };
                let size: u64 = big.events.iter().map(|e| e.size as u64).sum();
                let reason = self
                    .out
                    .too_large(big.events.len(), size, false)
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "larger than a sink's buffer".to_string());
                let (topic, partition) = &big.read.partition;
                let reason = format!(
                    "message at kafka topic `{topic}` partition {partition} offset {} is too large: {reason}",
                    big.read.offset
                );
                let owned = Owned {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: big.read.offset,
                    key: None,
                    payload: None,
                };
                self.dead_letter(&owned, &big.read, reason).await;
                continue;
            }
            let group = AckGroup::new();
            match self.out.send_or_return(events, Some(&group), Some(SEND_WAIT)).await {
                Ok(_) => self.watch(group, reads),
                Err((SendError::Closed, _)) => return Sent::Closed,
                Err((error, back)) => {
                    // Back to the front, in order, as the messages they came from.
                    let mut back = back.into_iter();
                    let messages: Vec<Pending> = reads
                        .into_iter()
                        .zip(counts)
                        .map(|(read, count)| Pending { read, events: back.by_ref().take(count).collect() })
                        .collect();
                    for message in messages.into_iter().rev() {
                        self.pending.push_front(message);
                    }
                    match error {
                        // The bounds changed (a reload): cut again.
                        SendError::TooLarge { .. } => continue,
                        SendError::Storage(reason) => {
                            warn!(source = %self.name, %reason, "kafka source waits: a disk buffer cannot store events")
                        }
                        _ => {}
                    }
                    return Sent::Full;
                }
            }
        }
    }

    /// Counts the batch's messages finished once every sink is finished with its events.
    fn watch(&self, group: AckGroup, reads: Vec<Read>) {
        let offsets = self.offsets.clone();
        let in_flight = self.in_flight.clone();
        in_flight.batches.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if group.wait_finished().await {
                let mut offsets = lock(&offsets);
                for read in &reads {
                    offsets.finished(read);
                }
            }
            in_flight.batches.fetch_sub(1, Ordering::AcqRel);
            in_flight.changed.notify_waiters();
        });
    }

    /// Pauses the assigned partitions (the buffers are full).
    fn pause(&mut self) {
        if let Ok(assignment) = self.consumer.assignment() {
            if let Err(error) = self.consumer.pause(&assignment) {
                warn!(source = %self.name, %error, "cannot pause the kafka partitions");
            } else if !self.paused {
                info!(source = %self.name, partitions = %describe(&assignment), "buffers full: kafka partitions paused");
            }
        }
        self.paused = true;
    }

    /// Resumes the partitions once the buffers take events again.
    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        if let Ok(assignment) = self.consumer.assignment() {
            match self.consumer.resume(&assignment) {
                Ok(()) => info!(source = %self.name, partitions = %describe(&assignment), "kafka partitions resumed"),
                Err(error) => warn!(source = %self.name, %error, "cannot resume the kafka partitions"),
            }
        }
        self.paused = false;
    }

    /// Commits the finished positions that moved (`all`: every one known).
    fn commit(&self, mode: CommitMode, all: bool) {
        let positions = lock(&self.offsets).to_commit(all);
        if positions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), position) in &positions {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*position));
        }
        match self.consumer.commit(&list, mode) {
            Ok(()) => {
                debug!(source = %self.name, offsets = %describe(&list), "kafka offsets committed");
                lock(&self.offsets).committed(&positions);
            }
            Err(error) => warn!(source = %self.name, %error, offsets = %describe(&list), "cannot commit kafka offsets"),
        }
    }

    /// Stops reading, waits for the events in flight (the host bounds the wait with its
    /// shutdown timeout), commits what is finished and leaves the group.
    async fn stop(mut self) {
        let waiting = self.pending.len();
        self.pending.clear();
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        info!(
            source = %self.name,
            in_flight = self.in_flight.batches.load(Ordering::Acquire),
            not_sent = waiting,
            "kafka source stopping: waiting for the events in flight; messages not sent are left for the next reader"
        );
        while self.in_flight.batches.load(Ordering::Acquire) > 0 {
            let changed = self.in_flight.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
            self.commit(CommitMode::Async, false);
        }
        let consumer = self.consumer.clone();
        let offsets = self.offsets.clone();
        let name = self.name.clone();
        drop(self);
        // Commit and close block on the network: off the async threads.
        let closed = tokio::task::spawn_blocking(move || {
            let positions = lock(&offsets).to_commit(true);
            let mut list = TopicPartitionList::new();
            for ((topic, partition), position) in &positions {
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*position));
            }
            if list.count() > 0 {
                match consumer.commit(&list, CommitMode::Sync) {
                    Ok(()) => info!(source = %name, offsets = %describe(&list), "kafka offsets committed at shutdown"),
                    Err(error) => warn!(source = %name, %error, "cannot commit kafka offsets at shutdown"),
                }
            }
            consumer.unsubscribe();
            drop(consumer);
            name
        })
        .await;
        if let Ok(name) = closed {
            info!(source = %name, "kafka source stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_logged_once_per_quiet_period() {
        let repeats = Repeats::default();
        assert_eq!(repeats.admit("broker down"), Some(0));
        assert_eq!(repeats.admit("broker down"), None);
        assert_eq!(repeats.admit("broker down"), None);
        // Another line is logged at once, and lines taking turns are each held back.
        assert_eq!(repeats.admit("auth failed"), Some(0));
        assert_eq!(repeats.admit("broker down"), None);
        assert_eq!(repeats.admit("auth failed"), None);
        // Past the quiet period a line comes back, saying how many were left out.
        if let Some((at, _)) = repeats.lines.lock().unwrap().get_mut("auth failed") {
            *at -= REPEAT_QUIET;
        }
        assert_eq!(repeats.admit("auth failed"), Some(1));
    }
}
