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
}
