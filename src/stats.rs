//! A sink's counters: a leaf module (it imports nothing of ours), updated by the buffers
//! that take events for the sink and by the sink itself, read by the host.

use std::sync::atomic::{AtomicU64, Ordering};

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
