//! The counters of sinks and sources: a leaf module (it imports nothing of ours), updated
//! by the buffers that take events for a sink, by the sink itself and by the sources, and
//! read by the host (logs at the end of a run, `/metrics` while it runs).
//!
//! Counters are plain atomics, read when `/metrics` is scraped, so counting costs an
//! atomic add per event and nothing else. The two latency histograms are
//! `prometheus_client` histograms (a short lock per observation).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Why an event went to the dead letters: the `reason` label of
/// `webhook_sink_dead_letters_total`, a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The endpoint answered a status that is not retried (4xx, a redirect, …).
    Status,
    /// Every attempt allowed was made, or the time for retries ran out.
    RetriesExhausted,
    /// The body could not be rendered.
    Render,
    /// The sink's buffer was full (`buffer.when_full = "dead_letter"`).
    BufferFull,
    /// The sink's disk buffer could not store the events (a full disk;
    /// `buffer.when_full = "dead_letter"`).
    Storage,
    /// Input that could not be decoded into events (a `kafka` message that is not JSON or
    /// not an incident event, or too large for a sink's buffer); counted for every sink the
    /// source feeds.
    Decode,
}

impl DeadLetterReason {
    /// Every reason, in label order.
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::Status,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Render,
        DeadLetterReason::BufferFull,
        DeadLetterReason::Storage,
        DeadLetterReason::Decode,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Status => "status",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::Render => "render",
            DeadLetterReason::BufferFull => "buffer_full",
            DeadLetterReason::Storage => "storage",
            DeadLetterReason::Decode => "decode",
        }
    }
}

/// Counts of answers by HTTP status (100–599), plus failures with no answer at all.
#[derive(Debug)]
pub struct StatusCounts {
    by_code: Box<[AtomicU64]>,
    errors: AtomicU64,
}

/// Lowest and highest status code counted one by one; others count as their class's
/// lowest code outside the range (never happens with a conforming peer).
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts {
            by_code: (FIRST_CODE..=LAST_CODE).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
        }
    }
}

impl StatusCounts {
    /// Counts an answer with `code`.
    pub fn answer(&self, code: u16) {
        let index = code.clamp(FIRST_CODE, LAST_CODE) - FIRST_CODE;
        self.by_code[usize::from(index)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that got no answer (network failure, timeout).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Every status seen so far with its count, then `("error", n)` if any failed.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut seen: Vec<(String, u64)> = self
            .by_code
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| ((FIRST_CODE + i as u16).to_string(), n))
            })
            .collect();
        let errors = self.errors.load(Ordering::Relaxed);
        if errors > 0 {
            seen.push(("error".to_string(), errors));
        }
        seen
    }
}

/// Buckets of the latency histograms, in seconds: 1 ms to about 65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Counters a source keeps.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Requests answered, by status (`webhook_sink_source_requests_total`).
    pub requests: StatusCounts,
    /// Events decoded and accepted into the sinks' buffers.
    pub events: AtomicU64,
    /// The last batch could not be stored because a disk store failed (a full disk, say);
    /// cleared by the next batch stored. The source's `/health` reports it.
    pub storage_failing: AtomicBool,
}

/// Counters a sink keeps; the host reads them for logs, tests and `/metrics`.
#[derive(Debug)]
pub struct SinkStats {
    /// Events put into the sink's buffer by its sources.
    pub accepted: AtomicU64,
    /// Events that reached the sink.
    pub received: AtomicU64,
    /// Events its triggers or conditions did not fire for.
    pub filtered: AtomicU64,
    /// Events dropped as equal to one delivered within `dedupe.window_secs`.
    pub deduplicated: AtomicU64,
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
    /// Dead letters stored, by reason (indexed like [`DeadLetterReason::ALL`]).
    pub dead_lettered_by: [AtomicU64; DeadLetterReason::ALL.len()],
    /// Answers of the endpoint by status, and attempts with no answer.
    pub responses: StatusCounts,
    /// Seconds from entering the sink's buffer to the final answer (delivered or given up).
    pub delivery_duration: Histogram,
    /// Seconds one attempt took, connecting included.
    pub request_duration: Histogram,
    /// Whether the sink's circuit breaker holds requests back (open, or sending its probe).
    pub circuit_open: AtomicBool,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            accepted: AtomicU64::new(0),
            received: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            render_failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered_by: Default::default(),
            responses: StatusCounts::default(),
            delivery_duration: latency_histogram(),
            request_duration: latency_histogram(),
            circuit_open: AtomicBool::new(false),
        }
    }
}

impl SinkStats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts `n` events dead-lettered for `reason` (the total and the reason's count).
    pub fn count_dead_letters(&self, reason: DeadLetterReason, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
        let index = DeadLetterReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.dead_lettered_by[index].fetch_add(n, Ordering::Relaxed);
    }

    /// Events accepted into the buffer and not yet handled (delivered, failed, filtered out,
    /// deduplicated or unrenderable).
    pub fn pending(&self) -> u64 {
        let handled = [&self.delivered, &self.failed, &self.filtered, &self.deduplicated, &self.render_failed]
            .into_iter()
            .map(SinkStats::get)
            .sum::<u64>();
        SinkStats::get(&self.accepted).saturating_sub(handled)
    }
}
