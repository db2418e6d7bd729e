//! Per-alert ordering: events of the same alert are delivered one after another, in the
//! order the sink took them, while different alerts go out concurrently.
//!
//! Each alert (keyed by `alertKey`, else `id`) has a FIFO lock; a delivery holds its
//! alert's lock from before its first await to its end. The sink starts deliveries in
//! arrival order, and tokio's `Mutex` grants waiters in the order they asked, so a
//! "resolved" never overtakes its "created". Locks are dropped when no delivery holds or
//! waits for them, so the map stays as small as the number of alerts in flight.
//!
//! Locks are found by a 64-bit hash of the key, so taking a turn allocates nothing. Two
//! alerts whose keys collide would share a lock: still each in order, just not concurrent
//! with each other (at 1,000 alerts in flight, about one chance in 10^13).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The per-alert locks of one sink.
#[derive(Debug, Default)]
pub struct AlertOrder {
    hasher: RandomState,
    locks: StdMutex<HashMap<u64, Arc<Mutex<()>>, BuildHasherDefault<AlreadyHashed>>>,
}

/// The map's keys are already hashes (of the alert keys, with a random seed): hashing
/// them again would only cost time. Hand-written: std has no pass-through hasher, and it
/// is five lines.
#[derive(Debug, Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Held while an alert's event is being delivered.
pub struct AlertTurn<'a> {
    order: &'a AlertOrder,
    key: u64,
    guard: Option<OwnedMutexGuard<()>>,
}

impl AlertOrder {
    /// Waits for `key`'s turn. `None` (an event with no alert key) never waits.
    pub async fn turn(&self, key: Option<&str>) -> Option<AlertTurn<'_>> {
        let key = self.hasher.hash_one(key?);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(key).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Some(AlertTurn { order: self, key, guard: Some(guard) })
    }

    /// Waits for the turn of every alert in `keys` (a digest's events): the locks are
    /// asked for together, in one poll, so a digest is queued on all its alerts before any
    /// digest started after it is. Two digests sharing alerts are then granted them in the
    /// order they started (per-alert order holds across digests), and none waits for a
    /// later one, so they cannot deadlock. Keys without an alert never wait.
    pub async fn turns<'k>(&self, keys: impl IntoIterator<Item = Option<&'k str>>) -> Vec<AlertTurn<'_>> {
        let mut hashes: Vec<u64> = keys.into_iter().flatten().map(|key| self.hasher.hash_one(key)).collect();
        // One lock once: asking twice for the same lock would wait for ourselves.
        hashes.sort_unstable();
        hashes.dedup();
        let locks: Vec<(u64, Arc<Mutex<()>>)> = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            hashes.into_iter().map(|key| (key, locks.entry(key).or_default().clone())).collect()
        };
        let guards = futures::future::join_all(locks.into_iter().map(|(key, lock)| async move {
            let guard = lock.lock_owned().await;
            (key, guard)
        }))
        .await;
        guards.into_iter().map(|(key, guard)| AlertTurn { order: self, key, guard: Some(guard) }).collect()
    }

    /// Alerts with a delivery holding or waiting for their lock.
    pub fn alerts_in_flight(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl Drop for AlertTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.order.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map's own reference left: nobody holds or waits for this alert.
        if locks.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test]
    async fn same_alert_in_order_other_alerts_concurrently() {
        let order = AlertOrder::default();
        let log = StdMutex::new(Vec::new());
        // Event 0 of alert A is slow; event 1 of A must still come after it, while B goes first.
        let events = [("A", 0u64, 30u64), ("A", 1, 0), ("B", 2, 0)];
        futures::stream::iter(events)
            .for_each_concurrent(8, |(key, n, delay)| {
                let (order, log) = (&order, &log);
                async move {
                    let _turn = order.turn(Some(key)).await;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    log.lock().unwrap().push(n);
                }
            })
            .await;
        assert_eq!(*log.lock().unwrap(), vec![2, 0, 1]);
        assert_eq!(order.alerts_in_flight(), 0, "locks are cleaned up");
    }

    #[tokio::test]
    async fn digests_keep_per_alert_order_and_do_not_deadlock() {
        let order = AlertOrder::default();
        let log = StdMutex::new(Vec::new());
        // Digest 0 (alerts B, C) is slow. Digest 1 holds C too, so it must wait for 0 even
        // though its other alert (A) is free; digest 2 (A only) waits for 1; digest 3 (D)
        // waits for nobody. Digests 4 and 5 hold the same two alerts in opposite orders.
        let digests: [(u64, &[&str], u64); 6] = [
            (0, &["B", "C"], 40),
            (1, &["A", "C", "A"], 0),
            (2, &["A"], 0),
            (3, &["D"], 0),
            (4, &["E", "F"], 10),
            (5, &["F", "E"], 0),
        ];
        futures::stream::iter(digests)
            .for_each_concurrent(8, |(n, keys, delay)| {
                let (order, log) = (&order, &log);
                async move {
                    let _turns = order.turns(keys.iter().map(|k| Some(*k))).await;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    log.lock().unwrap().push(n);
                }
            })
            .await;
        let log = log.lock().unwrap().clone();
        let at = |n: u64| log.iter().position(|&m| m == n).unwrap();
        assert!(at(0) < at(1) && at(1) < at(2), "{log:?}");
        assert!(at(3) < at(0), "an unrelated digest is not held up: {log:?}");
        assert!(at(4) < at(5), "{log:?}");
        assert_eq!(order.alerts_in_flight(), 0, "locks are cleaned up");
    }
}
