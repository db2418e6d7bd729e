//! Digests (`batch`): the events that pass a sink's filter are collected and sent as one
//! webhook, when `batch.max_events` are together or `batch.timeout_secs` after the first.
//!
//! A digest is delivered as one request with one `webhook-id`, derived from its events'
//! ids ([`digest_webhook_id`]): the same across its retries, and again when the same
//! events are replayed together from the dead letters. Retries and dead letters work per
//! digest. Per-alert order holds across digests: a digest takes the turn of every alert
//! in it before it is sent (see `alert_order`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{positive_secs, FieldError};
use crate::event::{stable_webhook_id, Event};

/// Most events one digest may be set to carry: a digest is one request body, built in
/// memory.
pub const MAX_EVENTS_LIMIT: usize = 10_000;

/// `batch`: send the events that pass the filter as digests instead of one by one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one digest; a digest goes out as soon as it has this many
    /// (1 to 10000). Default: 100.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Seconds a digest waits for more events after its first one, then goes out with
    /// what it has. Default: 1.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_max_events() -> usize {
    100
}

fn default_timeout_secs() -> f64 {
    1.0
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_events: default_max_events(), timeout_secs: default_timeout_secs() }
    }
}

impl BatchConfig {
    /// Checks the settings and compiles them; field names are relative to the sink.
    pub fn validate(&self) -> Result<Batching, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(1..=MAX_EVENTS_LIMIT).contains(&self.max_events) {
            errors.push(FieldError::new("batch.max_events", format!("must be from 1 to {MAX_EVENTS_LIMIT}")));
        }
        // Above a day is a mistake.
        let timeout = positive_secs(self.timeout_secs, 86_400.0);
        if timeout.is_none() {
            errors.push(FieldError::new(
                "batch.timeout_secs",
                "must be a positive number of seconds, at most 86400 (a day)",
            ));
        }
        match timeout {
            Some(timeout) if errors.is_empty() => Ok(Batching { max_events: self.max_events, timeout }),
            _ => Err(errors),
        }
    }
}

/// A checked `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most events in one digest.
    pub max_events: usize,
    /// How long a digest waits for more events after its first.
    pub timeout: Duration,
}

impl Batching {
    /// Digests taken from the buffer and being handled at once (waiting for their alerts'
    /// turns or a request slot included): as many as hold `events_in_hand` events, and at
    /// least `concurrency`, so every request slot can be busy.
    pub fn digests_in_hand(&self, events_in_hand: usize, concurrency: usize) -> usize {
        (events_in_hand / self.max_events).max(concurrency).max(1)
    }
}

/// The `webhook-id` of a digest of `events`: derived from their ids, in order, so it is
/// the same for every attempt and for a replay of the same events together.
pub fn digest_webhook_id(events: &[Event]) -> String {
    let mut identity = String::with_capacity(6 + events.len() * 37);
    identity.push_str("batch:");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            identity.push(',');
        }
        identity.push_str(&event.id);
    }
    stable_webhook_id(&identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::minimal_sample;

    #[test]
    fn limits_are_checked_with_their_keys() {
        let errors = BatchConfig { max_events: 0, timeout_secs: f64::NAN }.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["batch.max_events", "batch.timeout_secs"]);
        assert!(BatchConfig { max_events: 10_001, ..Default::default() }.validate().is_err());
        assert!(BatchConfig { timeout_secs: 1e300, ..Default::default() }.validate().is_err());
        let ok = BatchConfig { max_events: 20, timeout_secs: 0.5 }.validate().unwrap();
        assert_eq!(ok, Batching { max_events: 20, timeout: Duration::from_millis(500) });
        assert_eq!(ok.digests_in_hand(1024, 16), 51);
        assert_eq!(Batching { max_events: 10_000, ..ok }.digests_in_hand(1024, 16), 16);
    }

    #[test]
    fn a_digest_id_follows_its_events() {
        let events: Vec<Event> = (0..3).map(|_| Event::new(minimal_sample(), 0)).collect();
        let copies: Vec<Event> = events.iter().map(Event::copy).collect();
        let id = digest_webhook_id(&events);
        assert_eq!(id, digest_webhook_id(&copies), "same events, same id");
        assert_ne!(id, digest_webhook_id(&events[..2]), "other events, other id");
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
    }
}
