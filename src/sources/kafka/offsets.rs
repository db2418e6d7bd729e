//! Which offsets of a Kafka source's partitions may be committed: per partition, the
//! offsets read and not yet finished with, and the position below which everything is.
//!
//! Hand-written: rdkafka commits positions, not sets of finished messages, and events finish
//! out of order (sinks with different speeds, retries), so the source has to work out the
//! position itself. Vector does the same with its own finalizer machinery, which is not a
//! crate of its own.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A topic and partition.
pub type Partition = (Arc<str>, i32);

/// The offsets of one partition while it is assigned to this consumer.
#[derive(Debug)]
struct PartitionOffsets {
    /// Which assignment of the partition this is: a message read under an earlier one
    /// (the partition was revoked, then assigned again) no longer counts.
    generation: u64,
    /// Offsets read and not finished with yet. One a sink dropped unreported (shutdown)
    /// stays here for good, so nothing past it is committed until the partition is read again.
    outstanding: BTreeSet<i64>,
    /// The highest offset read.
    highest: i64,
    /// The position last committed (the next offset to read), if any; at first the
    /// offset of the first message read (the group's position already, or its start).
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// The position below which every message read is finished with.
    fn position(&self) -> i64 {
        self.outstanding.first().copied().unwrap_or(self.highest + 1)
    }
}

/// The offsets of every partition assigned to this consumer.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<Partition, PartitionOffsets>,
    generations: u64,
}

/// A message read: its partition, offset and the assignment it was read under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Topic and partition.
    pub partition: Partition,
    /// Its offset.
    pub offset: i64,
    /// The assignment it was read under.
    pub generation: u64,
}

impl Offsets {
    /// Notes a message read at `offset`; what it was read under.
    pub fn read(&mut self, partition: Partition, offset: i64) -> Read {
        let generations = &mut self.generations;
        let state = self.partitions.entry(partition.clone()).or_insert_with(|| {
            *generations += 1;
            PartitionOffsets {
                generation: *generations,
                outstanding: BTreeSet::new(),
                highest: offset - 1,
                committed: Some(offset),
            }
        });
        state.outstanding.insert(offset);
        state.highest = state.highest.max(offset);
        Read { partition, offset, generation: state.generation }
    }

    /// Whether `read` still counts (its partition was not revoked since).
    pub fn current(&self, read: &Read) -> bool {
        self.partitions.get(&read.partition).is_some_and(|state| state.generation == read.generation)
    }

    /// Every sink is finished with the message `read`.
    pub fn finished(&mut self, read: &Read) {
        if let Some(state) = self.partitions.get_mut(&read.partition) {
            if state.generation == read.generation {
                state.outstanding.remove(&read.offset);
            }
        }
    }

    /// The positions to commit: per partition whose position moved past the last commit
    /// (`all`: per partition read), the offset below which every message read is finished
    /// with.
    pub fn to_commit(&self, all: bool) -> Vec<(Partition, i64)> {
        let mut positions: Vec<(Partition, i64)> = self
            .partitions
            .iter()
            .filter_map(|(partition, state)| {
                let position = state.position();
                (all || state.committed.is_none_or(|committed| position > committed))
                    .then(|| (partition.clone(), position))
            })
            .collect();
        positions.sort();
        positions
    }

    /// These positions were committed.
    pub fn committed(&mut self, positions: &[(Partition, i64)]) {
        for (partition, position) in positions {
            if let Some(state) = self.partitions.get_mut(partition) {
                state.committed = Some(state.committed.map_or(*position, |c| c.max(*position)));
            }
        }
    }

    /// The partition is no longer assigned: forgets it (messages read under this
    /// assignment no longer count) and returns its position to commit (`None`: nothing
    /// was read of it).
    pub fn revoke(&mut self, partition: &Partition) -> Option<i64> {
        self.partitions.remove(partition).map(|state| state.position())
    }

    /// Messages read and not finished with, over every partition.
    pub fn outstanding(&self) -> usize {
        self.partitions.values().map(|state| state.outstanding.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("alerts"), n)
    }

    #[test]
    fn position_is_below_the_first_unfinished_offset() {
        let mut offsets = Offsets::default();
        let reads: Vec<Read> = (10..15).map(|o| offsets.read(p(0), o)).collect();
        assert!(offsets.to_commit(false).is_empty(), "nothing finished: nothing to commit");
        assert_eq!(offsets.to_commit(true), vec![(p(0), 10)], "but a final commit names the start");

        // Finished out of order: 11 and 13 first.
        offsets.finished(&reads[1]);
        offsets.finished(&reads[3]);
        assert!(offsets.to_commit(false).is_empty(), "10 is not finished");
        offsets.finished(&reads[0]);
        assert_eq!(offsets.to_commit(false), vec![(p(0), 12)]);
        offsets.committed(&[(p(0), 12)]);
        offsets.finished(&reads[2]);
        offsets.finished(&reads[4]);
        assert_eq!(offsets.to_commit(false), vec![(p(0), 15)], "all finished: past the highest");
        assert_eq!(offsets.outstanding(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut offsets = Offsets::default();
        let a = offsets.read(p(0), 0);
        let b = offsets.read(p(1), 7);
        offsets.finished(&b);
        assert_eq!(offsets.to_commit(false), vec![(p(1), 8)]);
        offsets.finished(&a);
        assert_eq!(offsets.to_commit(false), vec![(p(0), 1), (p(1), 8)]);
    }

    #[test]
    fn a_revoked_partition_forgets_what_it_read() {
        let mut offsets = Offsets::default();
        let first = offsets.read(p(0), 3);
        let second = offsets.read(p(0), 4);
        offsets.finished(&first);
        assert_eq!(offsets.revoke(&p(0)), Some(4), "what was finished is committed");
        assert!(!offsets.current(&second));
        // Assigned again: read from 4 on, under a new assignment.
        let again = offsets.read(p(0), 4);
        assert!(offsets.current(&again));
        // The late news about the old read changes nothing.
        offsets.finished(&second);
        assert!(offsets.to_commit(false).is_empty());
        assert_eq!(offsets.to_commit(true), vec![(p(0), 4)]);
        assert_eq!(offsets.outstanding(), 1);
        assert_eq!(offsets.revoke(&p(1)), None, "never assigned");
    }

    #[test]
    fn an_unfinished_message_holds_the_position() {
        let mut offsets = Offsets::default();
        let reads: Vec<Read> = (0..3).map(|o| offsets.read(p(0), o)).collect();
        offsets.committed(&offsets.to_commit(false));
        // 1 was dropped unreported: never finished.
        offsets.finished(&reads[0]);
        offsets.finished(&reads[2]);
        assert_eq!(offsets.to_commit(false), vec![(p(0), 1)]);
        offsets.committed(&[(p(0), 1)]);
        assert!(offsets.to_commit(false).is_empty(), "nothing past 1 to commit");
        assert_eq!(offsets.to_commit(true), vec![(p(0), 1)], "but all positions for a final commit");
        assert_eq!(offsets.revoke(&p(0)), Some(1));
    }
}
