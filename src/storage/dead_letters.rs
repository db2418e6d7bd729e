//! The dead-letter store: events that could not be delivered, with why, in one redb file.
//!
//! Layout: table `dead_letters` maps the store's sequence number (`u64`, from 1, never reused) to
//! the [`DeadLetter`] as JSON; table `meta` holds `next_seq`, updated in the same transaction.
//! Every write ([`DeadLetterStore::record`], [`DeadLetterStore::remove`],
//! [`DeadLetterStore::purge`]) is one transaction, durable (fsync'd) when it returns. Dead
//! letters are few, so the per-sink queries scan the table.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{open_database, StorageError};

const LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

/// The first sequence number of a new store.
const FIRST_SEQ: u64 = 1;

/// Memory redb may use to cache pages of the file.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// What is stored for an event that could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sink that gave up on the event.
    pub sink: String,
    /// Assigned by the store, unique per store.
    pub seq: u64,
    /// The event's stable delivery id.
    pub webhook_id: String,
    /// The incident event as JSON.
    pub event: serde_json::Value,
    /// Why, e.g. `HTTP 404 Not Found: <answer excerpt>`, `gave up after 8 attempts: …`,
    /// "buffer full".
    pub reason: String,
    /// The HTTP status of the last attempt, if one was answered.
    pub last_status: Option<u16>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// RFC 3339 UTC, when it was dead-lettered.
    pub time: String,
    /// The `webhook-id` of the digest the event was part of (a sink with `batch`): the
    /// events of one digest are kept together and replayed together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A dead letter before it is stored: the store assigns `seq` and sets `time` to now.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The sink that gave up on the event.
    pub sink: String,
    /// The event's `webhook-id`, kept for a replay.
    pub webhook_id: String,
    /// The event, as its standard payload.
    pub event: serde_json::Value,
    /// Why it was given up on.
    pub reason: String,
    /// The HTTP status of the last attempt, if one was answered.
    pub last_status: Option<u16>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The digest's `webhook-id`, when the event was part of one.
    pub digest: Option<String>,
}

/// A stored dead letter that does not decode (see [`DeadLetterStore::scan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptLetter {
    /// Its sequence number (`remove` deletes it by this number).
    pub seq: u64,
    /// Why it does not decode.
    pub error: String,
}

/// Only the field the per-sink queries filter on.
#[derive(Deserialize)]
struct SinkOnly {
    sink: String,
}

/// The dead letters of all sinks, in one redb file.
pub struct DeadLetterStore {
    db: Database,
    path: PathBuf,
}

impl DeadLetterStore {
    /// Opens or creates `path` (parent dirs created).
    pub fn open(path: &Path) -> Result<DeadLetterStore, StorageError> {
        let db = open_database(path, CACHE_BYTES)?;
        let store = DeadLetterStore { db, path: path.to_path_buf() };
        // Create the tables, and repair `next_seq` should it be behind the letters.
        let txn = store.begin_write()?;
        {
            let letters = txn.open_table(LETTERS).map_err(|e| store.io(e))?;
            let mut meta = txn.open_table(META).map_err(|e| store.io(e))?;
            let last = letters.last().map_err(|e| store.io(e))?.map(|(key, _)| key.value());
            let stored = meta.get(NEXT_SEQ).map_err(|e| store.io(e))?.map(|v| v.value());
            let next = stored.unwrap_or(FIRST_SEQ).max(last.map_or(FIRST_SEQ, |l| l.saturating_add(1)));
            if stored != Some(next) {
                meta.insert(NEXT_SEQ, next).map_err(|e| store.io(e))?;
            }
        }
        txn.commit().map_err(|e| store.io(e))?;
        Ok(store)
    }

    /// Stores `letters` in one durable transaction; returns their sequence numbers, in order.
    pub fn record(&self, letters: Vec<NewDeadLetter>) -> Result<Vec<u64>, StorageError> {
        if letters.is_empty() {
            return Ok(Vec::new());
        }
        let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let txn = self.begin_write()?;
        let mut seqs = Vec::with_capacity(letters.len());
        {
            let mut table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            let mut next = meta.get(NEXT_SEQ).map_err(|e| self.io(e))?.map_or(FIRST_SEQ, |v| v.value());
            for new in letters {
                let letter = DeadLetter {
                    sink: new.sink,
                    seq: next,
                    webhook_id: new.webhook_id,
                    event: new.event,
                    reason: new.reason,
                    last_status: new.last_status,
                    attempts: new.attempts,
                    time: time.clone(),
                    digest: new.digest,
                };
                let bytes = serde_json::to_vec(&letter).map_err(|e| self.io(e))?;
                table.insert(next, bytes.as_slice()).map_err(|e| self.io(e))?;
                seqs.push(next);
                next = next
                    .checked_add(1)
                    .ok_or_else(|| self.io("sequence numbers exhausted (u64::MAX dead letters recorded)"))?;
            }
            meta.insert(NEXT_SEQ, next).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        Ok(seqs)
    }

    /// The dead letters of `sink` (None: of every sink), in seq order.
    pub fn list(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let letter = self.decode(key.value(), value.value())?;
            if sink.is_none_or(|s| s == letter.sink) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// As [`DeadLetterStore::list`], but a stored letter that does not decode is skipped and
    /// returned apart, with why, instead of failing the whole listing. A corrupt letter's sink
    /// cannot be read, so it is returned whatever `sink` asks for.
    pub fn scan(&self, sink: Option<&str>) -> Result<(Vec<DeadLetter>, Vec<CorruptLetter>), StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
        let mut letters = Vec::new();
        let mut corrupt = Vec::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            match self.decode(key.value(), value.value()) {
                Ok(letter) if sink.is_none_or(|s| s == letter.sink) => letters.push(letter),
                Ok(_) => {}
                Err(error) => corrupt.push(CorruptLetter { seq: key.value(), error: error.to_string() }),
            }
        }
        Ok((letters, corrupt))
    }

    /// The dead letter `seq`, if stored.
    pub fn get(&self, seq: u64) -> Result<Option<DeadLetter>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
        let value = table.get(seq).map_err(|e| self.io(e))?;
        value.map(|v| self.decode(seq, v.value())).transpose()
    }

    /// Removes the dead letters `seqs` in one durable transaction; returns how many existed.
    pub fn remove(&self, seqs: &[u64]) -> Result<usize, StorageError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
            for &seq in seqs {
                if table.remove(seq).map_err(|e| self.io(e))?.is_some() {
                    removed += 1;
                }
            }
        }
        if removed == 0 {
            txn.abort().map_err(|e| self.io(e))?;
        } else {
            txn.commit().map_err(|e| self.io(e))?;
        }
        Ok(removed)
    }

    /// Removes every dead letter of `sink` (None: of every sink) in one durable transaction;
    /// returns how many.
    pub fn purge(&self, sink: Option<&str>) -> Result<usize, StorageError> {
        let txn = self.begin_write()?;
        let removed = {
            let mut table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(|e| self.io(e))? {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                let key = key.value();
                // A letter whose sink cannot be read is kept when purging one sink's.
                let keep = match sink {
                    None => false,
                    Some(sink) => self.decode_sink(key, value.value()).map_or(true, |s| s != sink),
                };
                if !keep {
                    doomed.push(key);
                }
            }
            for &key in &doomed {
                table.remove(key).map_err(|e| self.io(e))?;
            }
            doomed.len()
        };
        if removed == 0 {
            txn.abort().map_err(|e| self.io(e))?;
        } else {
            txn.commit().map_err(|e| self.io(e))?;
        }
        Ok(removed)
    }

    /// How many dead letters `sink` has (None: all sinks).
    pub fn count(&self, sink: Option<&str>) -> Result<usize, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
        let Some(sink) = sink else {
            let len = table.len().map_err(|e| self.io(e))?;
            return Ok(usize::try_from(len).unwrap_or(usize::MAX));
        };
        let mut count = 0;
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            // A letter whose sink cannot be read counts for no sink.
            if self.decode_sink(key.value(), value.value()).is_ok_and(|s| s == sink) {
                count += 1;
            }
        }
        Ok(count)
    }

    /// How many dead letters each sink has, in one pass over the store (a letter whose sink
    /// cannot be read counts for no sink).
    pub fn count_by_sink(&self) -> Result<std::collections::HashMap<String, usize>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(LETTERS).map_err(|e| self.io(e))?;
        let mut counts = std::collections::HashMap::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            if let Ok(sink) = self.decode_sink(key.value(), value.value()) {
                *counts.entry(sink).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// The file of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn decode(&self, key: u64, bytes: &[u8]) -> Result<DeadLetter, StorageError> {
        let mut letter: DeadLetter = serde_json::from_slice(bytes).map_err(|e| self.corrupt(key, e))?;
        // The key is the authority on the sequence number.
        letter.seq = key;
        Ok(letter)
    }

    fn decode_sink(&self, key: u64, bytes: &[u8]) -> Result<String, StorageError> {
        serde_json::from_slice::<SinkOnly>(bytes).map(|s| s.sink).map_err(|e| self.corrupt(key, e))
    }

    fn begin_write(&self) -> Result<WriteTransaction, StorageError> {
        self.db.begin_write().map_err(|e| self.io(e))
    }

    fn io(&self, error: impl std::fmt::Display) -> StorageError {
        StorageError::io(&self.path, error)
    }

    fn corrupt(&self, key: u64, error: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupt { path: self.path.clone(), key, message: error.to_string() }
    }
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn is_send_and_sync() {
        assert_send_sync::<DeadLetterStore>();
    }

    fn letter(sink: &str, id: &str) -> NewDeadLetter {
        NewDeadLetter {
            sink: sink.to_string(),
            webhook_id: id.to_string(),
            event: json!({"id": id, "severity": "critical", "tags": ["a", "b"]}),
            reason: "HTTP 404 Not Found: no such hook".to_string(),
            last_status: Some(404),
            attempts: 1,
            digest: None,
        }
    }

    #[test]
    fn record_list_get_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/dead.redb");
        let store = DeadLetterStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.record(Vec::new()).unwrap(), Vec::<u64>::new());
        assert_eq!(store.list(None).unwrap(), vec![]);

        let seqs = store.record(vec![letter("slack", "w1"), letter("pager", "w2")]).unwrap();
        assert_eq!(seqs, vec![1, 2]);
        let mut third = letter("slack", "w3");
        third.last_status = None;
        third.attempts = 8;
        third.reason = "retries exhausted after 8 attempts: connection refused".into();
        assert_eq!(store.record(vec![third]).unwrap(), vec![3]);

        let all = store.list(None).unwrap();
        assert_eq!(all.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let first = &all[0];
        assert_eq!(first.sink, "slack");
        assert_eq!(first.webhook_id, "w1");
        assert_eq!(first.event, json!({"id": "w1", "severity": "critical", "tags": ["a", "b"]}));
        assert_eq!(first.last_status, Some(404));
        assert_eq!(first.attempts, 1);
        let time = humantime::parse_rfc3339(&first.time).unwrap();
        assert!(time <= SystemTime::now());
        assert!(first.time.ends_with('Z'), "{}", first.time);

        let slack = store.list(Some("slack")).unwrap();
        assert_eq!(slack.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(slack[1].last_status, None);
        assert_eq!(slack[1].attempts, 8);
        assert_eq!(store.list(Some("nope")).unwrap(), vec![]);

        assert_eq!(store.get(2).unwrap().unwrap().sink, "pager");
        assert_eq!(store.get(2).unwrap().unwrap(), all[1]);
        assert_eq!(store.get(9).unwrap(), None);

        assert_eq!(store.count(None).unwrap(), 3);
        assert_eq!(store.count(Some("slack")).unwrap(), 2);
        assert_eq!(store.count(Some("pager")).unwrap(), 1);
        assert_eq!(store.count(Some("nope")).unwrap(), 0);
    }

    #[test]
    fn remove_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.redb");
        let store = DeadLetterStore::open(&path).unwrap();
        store
            .record(vec![letter("a", "1"), letter("b", "2"), letter("a", "3"), letter("b", "4"), letter("c", "5")])
            .unwrap();
        assert_eq!(store.remove(&[]).unwrap(), 0);
        assert_eq!(store.remove(&[1, 1, 42]).unwrap(), 1);
        assert_eq!(store.remove(&[1]).unwrap(), 0);
        assert_eq!(store.purge(Some("b")).unwrap(), 2);
        assert_eq!(store.purge(Some("b")).unwrap(), 0);
        assert_eq!(store.list(None).unwrap().iter().map(|l| l.seq).collect::<Vec<_>>(), vec![3, 5]);
        drop(store);

        let store = DeadLetterStore::open(&path).unwrap();
        assert_eq!(store.count(None).unwrap(), 2);
        assert_eq!(store.purge(None).unwrap(), 2);
        assert_eq!(store.purge(None).unwrap(), 0);
        assert_eq!(store.count(None).unwrap(), 0);
        drop(store);

        // Sequence numbers are never reused, even once the store is empty.
        let store = DeadLetterStore::open(&path).unwrap();
        assert_eq!(store.record(vec![letter("a", "6")]).unwrap(), vec![6]);
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.redb");
        let store = DeadLetterStore::open(&path).unwrap();
        match DeadLetterStore::open(&path) {
            Err(StorageError::Locked { path: locked }) => assert_eq!(locked, path),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(store);
        DeadLetterStore::open(&path).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.redb");
        {
            let store = DeadLetterStore::open(&path).unwrap();
            store.record(vec![letter("a", "1"), letter("b", "2")]).unwrap();
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LETTERS).unwrap().insert(2, b"{not json".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let store = DeadLetterStore::open(&path).unwrap();
        let is_corrupt_2 = |e: StorageError| {
            matches!(&e, StorageError::Corrupt { key: 2, path: p, .. } if *p == path)
                && e.to_string().contains("stored record 2 is corrupt")
        };
        assert!(is_corrupt_2(store.list(None).unwrap_err()));
        assert!(is_corrupt_2(store.get(2).unwrap_err()));
        assert_eq!(store.count(Some("a")).unwrap(), 1);
        assert_eq!(store.count(Some("b")).unwrap(), 0);
        let (letters, corrupt) = store.scan(None).unwrap();
        assert_eq!(letters.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(corrupt.len(), 1);
        assert_eq!(corrupt[0].seq, 2);
        assert!(corrupt[0].error.contains("stored record 2 is corrupt"), "{}", corrupt[0].error);
        assert_eq!(store.scan(Some("b")).unwrap().1.len(), 1);
        assert_eq!(store.get(1).unwrap().unwrap().webhook_id, "1");
        assert_eq!(store.count(None).unwrap(), 2);
        // The corrupt record can still be removed by its number; purging one sink keeps it.
        assert_eq!(store.purge(Some("b")).unwrap(), 0);
        assert_eq!(store.remove(&[2]).unwrap(), 1);
        assert_eq!(store.list(None).unwrap().len(), 1);
        assert_eq!(store.purge(Some("a")).unwrap(), 1);
    }
}
