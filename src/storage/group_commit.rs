//! Group commit: batches appended while a commit is in progress are gathered and written
//! together in the next one, so that concurrent appenders share one fsync instead of each
//! waiting for its own behind redb's single writer.
//!
//! There is no writer thread. Each appender queues its batch and waits; whoever finds no
//! commit in progress leads the next one: it takes the queued batches (oldest first, up to
//! [`GroupLimit`]), commits them in one transaction, and answers every batch of the group
//! with its sequence numbers, or with the commit's error. A batch is answered only after the
//! transaction holding it returned from its commit, and is never split across transactions.
//! The leader is whichever caller is there (its own thread does the commit), so a lone
//! appender pays no hand-off to another thread.
//!
//! Hand-written: redb commits one write transaction at a time and fsyncs each durable one;
//! it has no group commit of its own, and no maintained crate gathers callers of a
//! synchronous store into shared commits. The state is one mutex and one condition variable.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::StorageError;

/// One appender's records, in the order they get their sequence numbers.
pub type Batch = Vec<Vec<u8>>;

/// The most one transaction gathers: a group takes queued batches while both bounds hold,
/// and always at least one batch (a batch larger than the bounds is committed alone).
#[derive(Debug, Clone, Copy)]
pub struct GroupLimit {
    /// Records per transaction.
    pub records: usize,
    /// Bytes of records per transaction.
    pub bytes: usize,
}

/// What [`GroupCommit::wait`] returns: the batch's answer, or the turn to lead a commit.
pub enum Turn<'a> {
    /// The batch was committed (its sequence numbers) or its group's commit failed.
    Answered(Result<Vec<u64>, StorageError>),
    /// No commit is in progress: the caller leads the next one.
    Lead(Lead<'a>),
}

/// Queues batches and elects the leader of each commit (see the module documentation).
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a commit ends (its batches answered, no commit in progress).
    ended: Condvar,
    limit: GroupLimit,
    /// The file the commits go to, for the errors made here.
    path: PathBuf,
}

#[derive(Debug, Default)]
struct State {
    next_ticket: u64,
    queued: VecDeque<(u64, Batch)>,
    answers: HashMap<u64, Result<Vec<u64>, StorageError>>,
    committing: bool,
}

/// A queued batch's place in line, to wait for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The leader of one commit. Dropped without [`Lead::answer`] (a panic in the commit), it
/// answers the batches it took with an error, so that no appender waits forever.
pub struct Lead<'a> {
    group: &'a GroupCommit,
    tickets: Vec<u64>,
}

impl GroupCommit {
    /// No batch queued, no commit in progress; the commits go to `path`.
    pub fn new(limit: GroupLimit, path: PathBuf) -> GroupCommit {
        GroupCommit { state: Mutex::default(), ended: Condvar::new(), limit, path }
    }

    /// Queues `batch` for the next commit. Batches get their sequence numbers in the order
    /// they were queued.
    pub fn enqueue(&self, batch: Batch) -> Ticket {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.queued.push_back((ticket, batch));
        Ticket(ticket)
    }

    /// Blocks until the batch of `ticket` is answered, or until no commit is in progress,
    /// in which case the caller leads the next one (and then waits again).
    pub fn wait(&self, ticket: Ticket) -> Turn<'_> {
        let mut state = self.lock();
        loop {
            if let Some(answer) = state.answers.remove(&ticket.0) {
                return Turn::Answered(answer);
            }
            if !state.committing {
                state.committing = true;
                return Turn::Lead(Lead { group: self, tickets: Vec::new() });
            }
            state = self.ended.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Batches queued and not yet taken by a leader.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    fn abandoned(&self) -> StorageError {
        StorageError::io(&self.path, "the commit of this batch was abandoned")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is complete before the lock is released: a panic while
        // holding it leaves nothing half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Lead<'_> {
    /// Takes the batches of this commit: the oldest queued ones, within the group's limit.
    /// Take them as late as possible (once the writer lock is held), so that batches that
    /// arrive meanwhile join this commit.
    pub fn take(&mut self) -> Vec<Batch> {
        let limit = self.group.limit;
        let mut state = self.group.lock();
        let mut batches = Vec::new();
        let (mut records, mut bytes) = (0usize, 0usize);
        while let Some((_, batch)) = state.queued.front() {
            let batch_bytes: usize = batch.iter().map(Vec::len).sum();
            let fits = records.saturating_add(batch.len()) <= limit.records
                && bytes.saturating_add(batch_bytes) <= limit.bytes;
            if !batches.is_empty() && !fits {
                break;
            }
            let Some((ticket, batch)) = state.queued.pop_front() else { break };
            records = records.saturating_add(batch.len());
            bytes = bytes.saturating_add(batch_bytes);
            self.tickets.push(ticket);
            batches.push(batch);
        }
        batches
    }

    /// Answers the batches taken: `result` holds each one's sequence numbers, in the order
    /// they were taken, or the error that failed the whole commit. Ends the commit.
    pub fn answer(mut self, result: Result<Vec<Vec<u64>>, StorageError>) {
        let tickets = std::mem::take(&mut self.tickets);
        let mut state = self.group.lock();
        match result {
            Ok(seqs) => {
                let mut seqs = seqs.into_iter();
                for ticket in tickets {
                    // One list per batch taken; should one be missing, its batch fails
                    // rather than waiting forever.
                    let answer = seqs.next().ok_or_else(|| self.group.abandoned());
                    state.answers.insert(ticket, answer);
                }
            }
            Err(error) => {
                for ticket in tickets {
                    state.answers.insert(ticket, Err(error.clone()));
                }
            }
        }
        // `self` is dropped now: the commit ends, and the waiters are woken.
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        for ticket in self.tickets.drain(..) {
            state.answers.insert(ticket, Err(self.group.abandoned()));
        }
        state.committing = false;
        drop(state);
        self.group.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: GroupLimit = GroupLimit { records: 1000, bytes: 1 << 20 };

    fn lead(group: &GroupCommit, ticket: Ticket) -> Lead<'_> {
        match group.wait(ticket) {
            Turn::Lead(lead) => lead,
            Turn::Answered(_) => panic!("answered before any commit"),
        }
    }

    fn answered(group: &GroupCommit, ticket: Ticket) -> Result<Vec<u64>, StorageError> {
        match group.wait(ticket) {
            Turn::Answered(answer) => answer,
            Turn::Lead(_) => panic!("not answered"),
        }
    }

    #[test]
    fn the_leader_takes_every_queued_batch_in_order_and_answers_each() {
        let group = GroupCommit::new(ROOMY, "q".into());
        let a = group.enqueue(vec![b"a".to_vec()]);
        let b = group.enqueue(vec![b"b1".to_vec(), b"b2".to_vec()]);
        let c = group.enqueue(vec![b"c".to_vec()]);
        let mut leader = lead(&group, b);
        assert_eq!(
            leader.take(),
            vec![vec![b"a".to_vec()], vec![b"b1".to_vec(), b"b2".to_vec()], vec![b"c".to_vec()]]
        );
        assert_eq!(group.queued(), 0);
        leader.answer(Ok(vec![vec![1], vec![2, 3], vec![4]]));
        assert_eq!(answered(&group, c).unwrap(), vec![4]);
        assert_eq!(answered(&group, a).unwrap(), vec![1]);
        assert_eq!(answered(&group, b).unwrap(), vec![2, 3]);
    }

    #[test]
    fn an_error_reaches_every_batch_of_the_group_and_only_those() {
        let group = GroupCommit::new(GroupLimit { records: 2, bytes: 1 << 20 }, "q".into());
        let a = group.enqueue(vec![b"a".to_vec()]);
        let b = group.enqueue(vec![b"b".to_vec()]);
        let c = group.enqueue(vec![b"c".to_vec()]);
        let mut leader = lead(&group, a);
        assert_eq!(leader.take().len(), 2);
        leader.answer(Err(StorageError::Io { path: "q".into(), message: "disk full".into() }));
        for ticket in [a, b] {
            let error = answered(&group, ticket).unwrap_err();
            assert_eq!(error.to_string(), "q: disk full");
        }
        // The batch left over by the limit is still queued for the next leader.
        let mut leader = lead(&group, c);
        assert_eq!(leader.take(), vec![vec![b"c".to_vec()]]);
        leader.answer(Ok(vec![vec![7]]));
        assert_eq!(answered(&group, c).unwrap(), vec![7]);
    }

    #[test]
    fn a_group_stops_at_its_limits_but_always_takes_one_batch() {
        let group = GroupCommit::new(GroupLimit { records: 3, bytes: 10 }, "q".into());
        let big = group.enqueue(vec![vec![0; 50]]);
        let two = group.enqueue(vec![vec![0; 4], vec![0; 4]]);
        let three = group.enqueue(vec![vec![0; 4]]);
        let four = group.enqueue(vec![vec![0; 1], vec![0; 1]]);
        let mut leader = lead(&group, big);
        assert_eq!(leader.take(), vec![vec![vec![0; 50]]]);
        leader.answer(Ok(vec![vec![1]]));
        let mut leader = lead(&group, two);
        // 8 bytes, then 4 more would be 12 > 10.
        assert_eq!(leader.take().len(), 1);
        leader.answer(Ok(vec![vec![2, 3]]));
        let mut leader = lead(&group, three);
        // 1 record + 2 records = 3 (the limit), 5 bytes.
        assert_eq!(leader.take().len(), 2);
        leader.answer(Ok(vec![vec![4], vec![5, 6]]));
        assert_eq!(answered(&group, big).unwrap(), vec![1]);
        assert_eq!(answered(&group, two).unwrap(), vec![2, 3]);
        assert_eq!(answered(&group, three).unwrap(), vec![4]);
        assert_eq!(answered(&group, four).unwrap(), vec![5, 6]);
    }

    #[test]
    fn a_leader_dropped_without_answering_fails_its_batches_and_ends_the_commit() {
        let group = GroupCommit::new(ROOMY, "q".into());
        let a = group.enqueue(vec![b"a".to_vec()]);
        let mut leader = lead(&group, a);
        leader.take();
        let b = group.enqueue(vec![b"b".to_vec()]);
        drop(leader);
        assert!(answered(&group, a).unwrap_err().to_string().contains("abandoned"));
        // No commit in progress: the next waiter leads.
        let mut leader = lead(&group, b);
        assert_eq!(leader.take(), vec![vec![b"b".to_vec()]]);
    }

    #[test]
    fn a_batch_left_without_sequence_numbers_fails_instead_of_waiting() {
        let group = GroupCommit::new(ROOMY, "q".into());
        let a = group.enqueue(vec![b"a".to_vec()]);
        let b = group.enqueue(vec![b"b".to_vec()]);
        let mut leader = lead(&group, a);
        assert_eq!(leader.take().len(), 2);
        leader.answer(Ok(vec![vec![1]]));
        assert_eq!(answered(&group, a).unwrap(), vec![1]);
        assert_eq!(answered(&group, b).unwrap_err().to_string(), "q: the commit of this batch was abandoned");
    }

    #[test]
    fn waiters_block_while_a_commit_is_in_progress() {
        let group = GroupCommit::new(ROOMY, "q".into());
        let a = group.enqueue(vec![b"a".to_vec()]);
        let mut leader = lead(&group, a);
        leader.take();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let b = group.enqueue(vec![b"b".to_vec()]);
                match group.wait(b) {
                    Turn::Lead(mut lead) => {
                        let taken = lead.take();
                        lead.answer(Ok(vec![vec![2]]));
                        (taken, answered(&group, b).unwrap())
                    }
                    Turn::Answered(_) => panic!("answered by a commit that did not take it"),
                }
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while group.queued() == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(!waiter.is_finished());
            leader.answer(Ok(vec![vec![1]]));
            assert_eq!(waiter.join().unwrap(), (vec![vec![b"b".to_vec()]], vec![2]));
        });
        assert_eq!(answered(&group, a).unwrap(), vec![1]);
    }
}
