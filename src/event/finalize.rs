//! What became of an event: each copy of an event that a sink takes carries a
//! [`Finalizer`], and the sink reports the copy's [`Outcome`] through it exactly once.
//!
//! Finalizers are how a buffer learns it may forget an event (a disk buffer deletes the
//! record only then, so a crash before it means redelivery, never loss) and how a source
//! that asked for end-to-end acknowledgements learns when to answer its sender. A copy
//! dropped without a report (the process is stopping) reports [`Outcome::Dropped`].

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What a sink did with its copy of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// The sink's triggers or conditions do not fire for it: nothing to send.
    Filtered,
    /// Given up for good (retries exhausted, a network that never came back); kept in the
    /// dead letters.
    Failed,
    /// Refused for good (a non-retried 4xx, a body that cannot be rendered); kept in the
    /// dead letters.
    Rejected,
    /// Dropped unreported (shutdown cut it off). A disk buffer still holds it.
    Dropped,
}

impl Outcome {
    /// Whether the event reached where it was going (or had nowhere to go).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Filtered)
    }
}

type Callback = Box<dyn FnOnce(Outcome) + Send + Sync>;

/// Reports one event copy's outcome, once, to whoever is waiting for it.
///
/// Most events carry one callback (their buffer's), so the first is kept inline: no list
/// is allocated per event for it.
#[derive(Default)]
pub struct Finalizer {
    first: Option<Callback>,
    more: Vec<Callback>,
}

impl std::fmt::Debug for Finalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = usize::from(self.first.is_some()) + self.more.len();
        f.debug_struct("Finalizer").field("callbacks", &count).finish()
    }
}

impl Finalizer {
    /// Adds a callback; all run, in the order they were added, when the outcome is reported.
    pub fn push(&mut self, callback: impl FnOnce(Outcome) + Send + Sync + 'static) {
        if self.first.is_none() && self.more.is_empty() {
            self.first = Some(Box::new(callback));
        } else {
            self.more.push(Box::new(callback));
        }
    }

    /// Reports the outcome (consumes the finalizer).
    pub fn finish(mut self, outcome: Outcome) {
        self.run(outcome);
    }

    fn run(&mut self, outcome: Outcome) {
        if let Some(callback) = self.first.take() {
            callback(outcome);
        }
        for callback in self.more.drain(..) {
            callback(outcome);
        }
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        self.run(Outcome::Dropped);
    }
}

/// Collects the outcomes of every copy of a batch of events and resolves once all are in.
///
/// The batch's result is its worst outcome: any `Rejected` makes it rejected, else any
/// `Failed`/`Dropped` makes it failed, else it succeeded.
#[derive(Debug)]
pub struct AckGroup {
    shared: Arc<AckShared>,
    done: oneshot::Receiver<Outcome>,
}

#[derive(Debug)]
struct AckShared {
    outstanding: AtomicUsize,
    worst: AtomicU8,
    /// Whether some copy was dropped unreported ([`Outcome::Dropped`]), which `worst` does
    /// not tell from [`Outcome::Failed`] (see [`AckGroup::wait_finished`]).
    dropped: std::sync::atomic::AtomicBool,
    notify: Mutex<Option<oneshot::Sender<Outcome>>>,
}

/// One copy's share of an [`AckGroup`].
#[derive(Debug)]
pub struct AckToken {
    shared: Arc<AckShared>,
}

fn rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Delivered | Outcome::Filtered => 0,
        Outcome::Failed | Outcome::Dropped => 1,
        Outcome::Rejected => 2,
    }
}

fn from_rank(rank: u8) -> Outcome {
    match rank {
        0 => Outcome::Delivered,
        1 => Outcome::Failed,
        _ => Outcome::Rejected,
    }
}

impl AckGroup {
    /// A group with no copies yet. The first registration is held back by a guard count
    /// so the group cannot resolve while copies are still being handed out.
    pub fn new() -> AckGroup {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(AckShared {
            outstanding: AtomicUsize::new(1),
            worst: AtomicU8::new(0),
            dropped: std::sync::atomic::AtomicBool::new(false),
            notify: Mutex::new(Some(tx)),
        });
        AckGroup { shared, done: rx }
    }

    /// Registers one more copy that will report.
    pub fn token(&self) -> AckToken {
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        AckToken { shared: self.shared.clone() }
    }

    /// Waits until every registered copy has reported; the batch's worst outcome.
    pub async fn wait(self) -> Outcome {
        let AckGroup { shared, done } = self;
        // Release the guard count taken in `new`.
        AckShared::report(&shared, Outcome::Delivered);
        drop(shared);
        done.await.unwrap_or(Outcome::Dropped)
    }

    /// Waits until every registered copy has reported; whether every sink is finished with
    /// every copy: delivered, filtered out or dead-lettered, none dropped unreported. What
    /// a source that commits its input's position (`kafka`) may commit past.
    pub async fn wait_finished(self) -> bool {
        let shared = self.shared.clone();
        let worst = self.wait().await;
        worst != Outcome::Dropped && !shared.dropped.load(Ordering::Acquire)
    }
}

impl Default for AckGroup {
    fn default() -> Self {
        AckGroup::new()
    }
}

impl AckShared {
    fn report(shared: &Arc<AckShared>, outcome: Outcome) {
        if outcome == Outcome::Dropped {
            shared.dropped.store(true, Ordering::Release);
        }
        shared.worst.fetch_max(rank(outcome), Ordering::AcqRel);
        if shared.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let worst = from_rank(shared.worst.load(Ordering::Acquire));
            if let Some(tx) = shared.notify.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(worst);
            }
        }
    }
}

impl AckToken {
    /// Reports this copy's outcome.
    pub fn report(self, outcome: Outcome) {
        AckShared::report(&self.shared, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn group_resolves_with_the_worst_outcome() {
        let group = AckGroup::new();
        let (a, b) = (group.token(), group.token());
        a.report(Outcome::Delivered);
        b.report(Outcome::Failed);
        assert_eq!(group.wait().await, Outcome::Failed);

        let group = AckGroup::new();
        let (a, b, c) = (group.token(), group.token(), group.token());
        c.report(Outcome::Rejected);
        a.report(Outcome::Filtered);
        let waiting = tokio::spawn(group.wait());
        b.report(Outcome::Failed);
        assert_eq!(waiting.await.unwrap(), Outcome::Rejected);

        assert_eq!(AckGroup::new().wait().await, Outcome::Delivered, "no copies: nothing to wait for");
    }

    #[tokio::test]
    async fn finished_means_no_copy_dropped() {
        let group = AckGroup::new();
        let (a, b, c) = (group.token(), group.token(), group.token());
        a.report(Outcome::Delivered);
        b.report(Outcome::Failed);
        c.report(Outcome::Rejected);
        assert!(group.wait_finished().await, "delivered, dead-lettered: finished");

        let group = AckGroup::new();
        let (a, b) = (group.token(), group.token());
        a.report(Outcome::Rejected);
        b.report(Outcome::Dropped);
        assert!(!group.wait_finished().await, "a dropped copy is not finished, whatever the others did");
        assert!(AckGroup::new().wait_finished().await);
    }

    #[test]
    fn finalizer_reports_once_and_drop_means_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut f = Finalizer::default();
        let s = seen.clone();
        f.push(move |o| s.lock().unwrap().push(o));
        f.finish(Outcome::Delivered);
        let mut g = Finalizer::default();
        let s = seen.clone();
        g.push(move |o| s.lock().unwrap().push(o));
        drop(g);
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Delivered, Outcome::Dropped]);

        let order = Arc::new(Mutex::new(Vec::new()));
        let mut h = Finalizer::default();
        for n in 0..3 {
            let order = order.clone();
            h.push(move |_| order.lock().unwrap().push(n));
        }
        h.finish(Outcome::Failed);
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2], "every callback, in order, once");
    }
}
