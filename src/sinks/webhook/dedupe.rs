//! De-duplication (`dedupe`): an event whose alert key, event type and rendered body equal
//! those of one the sink *delivered* within the last `dedupe.window_secs` is dropped, not
//! sent again. Alertmanager re-sends a firing alert every `repeat_interval` and Nagios
//! re-notifies; with a window longer than those, the receiver hears of it once per window.
//!
//! The sink asks [`Dedupe::is_duplicate`] once the body is rendered, and calls
//! [`Dedupe::remember`] only after a delivery succeeded: a failed or dead-lettered event is
//! no reason to drop the next equal one. The window counts from the last *delivery*, not
//! the last drop, so an alert that keeps being re-sent goes out again once per window (a
//! reminder) rather than never.
//!
//! # What is remembered, and its cost
//!
//! Each delivery is remembered as a [`DedupeKey`], the first 128 bits of a SHA-256 over the
//! alert key, the event type and the body (each length-prefixed, so no two different
//! triples hash the same text), with the time it was delivered. Two different events are
//! taken for equal only if their digests collide: at the default 100,000 entries the
//! chance of any collision is about 10^-29, and SHA-256 makes crafting a body that collides
//! with someone else's (to have it dropped) a second-preimage search, out of reach. A
//! 64-bit non-cryptographic hash would make both likely enough to matter.
//!
//! An entry takes 32 bytes in a hash map and 32 in a queue of delivery times, plus the
//! tables' spare room: 85 to 107 bytes each as measured (at 1,000 to 120,000 entries), 140
//! at most just past a table's doubling. The default `max_entries` (100,000) bounds a
//! sink's window at 8.5 MB as measured, 14 MB at most. Entries older than the
//! window are dropped on every call. When the window holds `max_entries` deliveries, the
//! oldest one is forgotten to make room for the newest: an equal event of that one may
//! then be delivered again before its window ended, but no event is ever dropped that was
//! not a duplicate. The sink logs the first time that happens.
//!
//! The window lives in memory: a restart, or a reload that rebuilds the sink, starts with
//! an empty one.
//!
//! Hand-written (a map and a queue): the cache crates with time-to-live (moka, mini-moka)
//! read their own clock, which a test cannot move, evict by frequency rather than age, and
//! would bring a dozen dependencies for some fifty lines. Here the clock is an argument of
//! the inner functions, so the tests move time by hand.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::error::{positive_secs, FieldError};

/// The longest `dedupe.window_secs` accepted: 7 days.
pub const MAX_WINDOW_SECS: f64 = 7.0 * 24.0 * 3600.0;

fn default_max_entries() -> usize {
    100_000
}

/// De-duplication of a sink's deliveries (`dedupe` on a webhook sink). Off unless the
/// table is there with a `window_secs` above 0.
///
/// ```toml
/// [sinks.chat.dedupe]
/// window_secs = 3600      # one notification per hour for a still-firing alert
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// Seconds during which an event whose alert key (`alertKey`, else `id`), event type
    /// and rendered body equal those of a delivered one is dropped (and counted), counted
    /// from that delivery. `0` turns de-duplication off, as leaving the `dedupe` table out
    /// does. At most 604800 (7 days). Required in the table.
    pub window_secs: f64,
    /// Most deliveries remembered at once (about 100 bytes each). When the window holds
    /// this many, the oldest is forgotten early: an event equal to it may go out again
    /// before its window ends. At least 1. Default: 100000.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

impl DedupeConfig {
    /// Every problem of the table, named relative to the sink (`dedupe.window_secs`).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let window = self.window_secs;
        if !window.is_finite() || window < 0.0 {
            errors.push(FieldError::new(
                "dedupe.window_secs",
                format!("must be a number of seconds, 0 (off) or more, got {window}"),
            ));
        } else if window > MAX_WINDOW_SECS {
            errors.push(FieldError::new(
                "dedupe.window_secs",
                format!("must be at most {MAX_WINDOW_SECS} (7 days), got {window}"),
            ));
        }
        if self.max_entries == 0 {
            errors.push(FieldError::new("dedupe.max_entries", "must be at least 1"));
        }
        errors
    }

    /// A new, empty window for a sink; `None` when `window_secs` is 0 (off). Call only on
    /// a config that [`DedupeConfig::validate`] passed.
    pub fn build(&self) -> Option<Dedupe> {
        positive_secs(self.window_secs, MAX_WINDOW_SECS).map(|window| Dedupe::new(window, self.max_entries.max(1)))
    }
}

/// What is compared: a digest of an event's alert key, event type and rendered body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupeKey(u128);

impl DedupeKey {
    /// The key of an event with this alert key (`None`: the event has none), event type
    /// and body.
    pub fn new(alert_key: Option<&str>, event_type: &str, body: &[u8]) -> DedupeKey {
        let mut context = Context::new(&SHA256);
        match alert_key {
            None => context.update(&[0]),
            Some(key) => {
                context.update(&[1]);
                context.update(&(key.len() as u64).to_le_bytes());
                context.update(key.as_bytes());
            }
        }
        context.update(&(event_type.len() as u64).to_le_bytes());
        context.update(event_type.as_bytes());
        context.update(body);
        let digest = context.finish();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_ref()[..16]);
        DedupeKey(u128::from_le_bytes(first))
    }
}

/// A sink's window of recent deliveries.
#[derive(Debug)]
pub struct Dedupe {
    window: Duration,
    max_entries: usize,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Each remembered key with its last delivery.
    delivered: HashMap<DedupeKey, Instant>,
    /// Deliveries in the order they were remembered; an entry whose time is not its key's
    /// last (the key was remembered again since) is stale and skipped.
    order: VecDeque<(Instant, DedupeKey)>,
    /// Whether an entry was ever forgotten before its window ended.
    overflowed: bool,
}

impl Window {
    /// Forgets every delivery at least `window` old.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, _)) = self.order.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            if self.delivered.get(&key) == Some(&at) {
                self.delivered.remove(&key);
            }
        }
    }
}

impl Dedupe {
    /// An empty window of `window`, remembering at most `max_entries` deliveries.
    pub fn new(window: Duration, max_entries: usize) -> Dedupe {
        Dedupe { window, max_entries, state: Mutex::default() }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // The lock is never held across a panic-prone call; a poisoned one holds a
        // consistent window anyway.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an event with `key` was delivered within the window (so is to be dropped).
    pub fn is_duplicate(&self, key: DedupeKey) -> bool {
        self.is_duplicate_at(key, Instant::now())
    }

    /// Remembers that an event with `key` was delivered now. `true` the first time the
    /// window was full and its oldest entry had to be forgotten early, so the caller can
    /// say so once.
    pub fn remember(&self, key: DedupeKey) -> bool {
        self.remember_at(key, Instant::now())
    }

    fn is_duplicate_at(&self, key: DedupeKey, now: Instant) -> bool {
        let mut window = self.window();
        window.expire(now, self.window);
        window.delivered.contains_key(&key)
    }

    fn remember_at(&self, key: DedupeKey, now: Instant) -> bool {
        let mut window = self.window();
        window.expire(now, self.window);
        window.delivered.insert(key, now);
        window.order.push_back((now, key));
        let mut first_overflow = false;
        while window.order.len() > self.max_entries {
            window.forget_oldest();
            first_overflow |= !window.overflowed;
            window.overflowed = true;
        }
        first_overflow
    }

    /// Deliveries remembered now (expired ones included until the next call).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.window().delivered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alert: &str, body: &str) -> DedupeKey {
        DedupeKey::new(Some(alert), "alert-created", body.as_bytes())
    }

    /// A window with a clock the test moves.
    struct Clocked {
        dedupe: Dedupe,
        now: Instant,
    }

    impl Clocked {
        fn new(window_secs: u64, max_entries: usize) -> Clocked {
            Clocked { dedupe: Dedupe::new(Duration::from_secs(window_secs), max_entries), now: Instant::now() }
        }
        fn advance(&mut self, by: Duration) {
            self.now += by;
        }
        fn is_duplicate(&self, key: DedupeKey) -> bool {
            self.dedupe.is_duplicate_at(key, self.now)
        }
        fn remember(&self, key: DedupeKey) -> bool {
            self.dedupe.remember_at(key, self.now)
        }
        fn len(&self) -> usize {
            self.dedupe.len()
        }
    }

    #[test]
    fn a_delivery_is_a_duplicate_until_its_window_ends() {
        let mut dedupe = Clocked::new(60, 100);
        let a = key("a", "{}");
        assert!(!dedupe.is_duplicate(a), "nothing delivered yet");
        assert!(!dedupe.remember(a));
        assert!(dedupe.is_duplicate(a));
        dedupe.advance(Duration::from_secs(59));
        assert!(dedupe.is_duplicate(a), "59 s later: within the window");
        dedupe.advance(Duration::from_secs(1));
        assert!(!dedupe.is_duplicate(a), "60 s later: the window has ended");
        assert_eq!(dedupe.len(), 0, "and the entry is gone");
    }

    #[test]
    fn the_window_counts_from_the_last_delivery_not_the_last_drop() {
        let mut dedupe = Clocked::new(60, 100);
        let a = key("a", "{}");
        dedupe.remember(a);
        for _ in 0..5 {
            dedupe.advance(Duration::from_secs(11));
            assert!(dedupe.is_duplicate(a));
        }
        dedupe.advance(Duration::from_secs(5));
        assert!(!dedupe.is_duplicate(a), "60 s after the delivery, whatever was dropped since");
        // Delivered again: a new window from now.
        dedupe.remember(a);
        dedupe.advance(Duration::from_secs(59));
        assert!(dedupe.is_duplicate(a));
    }

    #[test]
    fn a_key_remembered_again_keeps_its_newest_time() {
        let mut dedupe = Clocked::new(60, 100);
        let a = key("a", "{}");
        // Two equal events without an alert key are not serialized by the sink: both may
        // be delivered and remembered.
        dedupe.remember(a);
        dedupe.advance(Duration::from_secs(30));
        dedupe.remember(a);
        dedupe.advance(Duration::from_secs(40));
        assert!(dedupe.is_duplicate(a), "the first time's entry expired, the second's holds");
        assert_eq!(dedupe.len(), 1);
        dedupe.advance(Duration::from_secs(20));
        assert!(!dedupe.is_duplicate(a));
    }

    #[test]
    fn alert_key_event_type_and_body_all_count() {
        let base = DedupeKey::new(Some("a"), "alert-created", b"{}");
        assert_eq!(base, DedupeKey::new(Some("a"), "alert-created", b"{}"));
        for other in [
            DedupeKey::new(Some("b"), "alert-created", b"{}"),
            DedupeKey::new(None, "alert-created", b"{}"),
            DedupeKey::new(Some(""), "alert-created", b"{}"),
            DedupeKey::new(Some("a"), "alert-resolved", b"{}"),
            DedupeKey::new(Some("a"), "alert-created", b"{} "),
        ] {
            assert_ne!(base, other);
        }
        // The parts are length-prefixed: moving text from one part to the next is another key.
        assert_ne!(DedupeKey::new(Some("ab"), "c", b"x"), DedupeKey::new(Some("a"), "bc", b"x"));
        assert_ne!(DedupeKey::new(Some("a"), "bc", b"x"), DedupeKey::new(Some("a"), "b", b"cx"));
    }

    #[test]
    fn a_full_window_forgets_its_oldest_delivery_first_and_says_so_once() {
        let mut dedupe = Clocked::new(60, 3);
        let keys: Vec<DedupeKey> = (0..5).map(|i| key(&i.to_string(), "{}")).collect();
        for k in &keys[..3] {
            assert!(!dedupe.remember(*k));
            dedupe.advance(Duration::from_secs(1));
        }
        assert!(dedupe.remember(keys[3]), "the first overflow is reported");
        assert!(!dedupe.remember(keys[4]), "only the first");
        assert_eq!(dedupe.len(), 3, "never more than max_entries");
        assert!(!dedupe.is_duplicate(keys[0]) && !dedupe.is_duplicate(keys[1]), "the oldest went first");
        assert!(keys[2..].iter().all(|k| dedupe.is_duplicate(*k)));
    }

    #[test]
    fn memory_stays_bounded_under_a_stream_of_distinct_events() {
        let mut dedupe = Clocked::new(3600, 1000);
        for i in 0..10_000 {
            dedupe.remember(key("a", &i.to_string()));
            dedupe.advance(Duration::from_millis(10));
        }
        assert_eq!(dedupe.len(), 1000);
        assert!(dedupe.dedupe.window().order.len() <= 1000);
        // Entries past the window go even when the cap is not reached.
        dedupe.advance(Duration::from_secs(3600));
        assert!(!dedupe.is_duplicate(key("a", "9999")));
        assert_eq!(dedupe.len(), 0);
        assert!(dedupe.dedupe.window().order.is_empty());
    }

    #[test]
    fn an_entry_is_32_bytes_in_each_table() {
        assert_eq!(std::mem::size_of::<(DedupeKey, Instant)>(), 32);
        assert_eq!(std::mem::size_of::<(Instant, DedupeKey)>(), 32);
    }

    #[test]
    fn config_checks_name_the_key_and_zero_is_off() {
        let config = |window_secs: f64, max_entries: usize| DedupeConfig { window_secs, max_entries };
        assert!(config(0.0, 1).validate().is_empty());
        assert!(config(0.0, 1).build().is_none(), "0 is off");
        assert!(config(0.5, 1).build().is_some());
        assert!(config(MAX_WINDOW_SECS, 1).validate().is_empty());
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_WINDOW_SECS + 1.0, 1e300] {
            let errors = config(bad, 10).validate();
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].field, "dedupe.window_secs");
            assert!(config(bad, 10).build().is_none(), "{bad}: never built (no panic either)");
        }
        let errors = config(60.0, 0).validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].field.as_str(), errors[0].message.as_str()),
            ("dedupe.max_entries", "must be at least 1")
        );
        let from_toml: DedupeConfig = toml::from_str("window_secs = 300").unwrap();
        assert_eq!(from_toml, config(300.0, 100_000), "max_entries defaults to 100000");
    }
}
