//! The disk buffer of one sink: a durable FIFO of byte records in one redb file.
//!
//! Layout: table `records` maps the sequence number (`u64`, from 1, increasing, never reused) to
//! the record's bytes; table `meta` holds `next_seq`, updated in the same transaction as the
//! appends it numbers.
//!
//! Durability: [`DiskQueue::append`] returns once its records are committed with
//! [`redb::Durability::Immediate`] (fsync'd), so an acknowledged record survives a crash.
//! Appends made while a commit is in progress are gathered into the next one (a group commit,
//! see [`super::group_commit`]): concurrent appenders share one transaction and one fsync, each
//! answered only once that transaction is durable, and a failed commit fails every append in it.
//! [`DiskQueue::remove`] commits with [`redb::Durability::None`] (no fsync): a removal becomes
//! durable with the next durable commit, which is the next append, a removal made at least
//! [`REMOVAL_FLUSH_INTERVAL`] after the last durable commit, [`DiskQueue::flush`], or dropping
//! the queue. A crash may therefore bring back records delivered just before it
//! (at-least-once delivery), never lose an acknowledged one.
//!
//! Faults: after an I/O error (a full disk, say) redb refuses every later operation ("Previous
//! I/O error occurred"). The queue then closes the file and opens it again on its next
//! operation (at most once per [`REOPEN_INTERVAL`]), so it works again once the cause is gone,
//! without a restart. [`DiskQueue::failing`] tells whether the last operation failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::group_commit::{Batch, GroupCommit, GroupLimit, Turn};
use super::{open_database, StorageError};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

/// The first sequence number of a new queue.
pub const FIRST_SEQ: u64 = 1;

/// A removal made this long after the last durable commit is itself committed durably, so that
/// a queue that only drains (no appends) does not replay more than this much delivery after a
/// crash, and redb can reuse the pages freed by the removals.
pub const REMOVAL_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// After an I/O error, the file is reopened at most this often (each operation in between fails
/// at once with the error that closed it).
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// Memory redb may use to cache pages of one queue file. Records are read back oldest
/// first, long after they were written when there is a backlog, so a large cache buys
/// little: 8 MiB instead of 32 took the disk run's peak RSS from 111 to 68 MB at the same
/// throughput (`bench/load.sh`, N=100000).
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The widest gap between two sequence numbers that [`DiskQueue::remove`] still takes in
/// one scan: deliveries finish out of order, so a batch of removals is mostly runs with a
/// few records in flight between them, each visited and kept. A wider gap starts a new
/// scan, so a record far behind (a retry) never makes a scan walk the whole queue.
const REMOVAL_RUN_GAP: u64 = 64;

/// The most one group commit writes (see [`super::group_commit`]): bounds the transaction's
/// dirty pages, which redb holds in memory until the commit. A source batch of the default
/// 200 events of about 1 KB is 200 KB, so a group holds about twenty of them.
const GROUP_LIMIT: GroupLimit = GroupLimit { records: 16 * 1024, bytes: 4 * 1024 * 1024 };

/// A file at least this large, and more than [`COMPACT_RATIO`] times the bytes it holds, is
/// compacted when opened (by itself, redb only gives back the free space at the end of the file,
/// so a backlog that drained out of order can leave a large file behind).
const COMPACT_MIN_FILE: u64 = 16 * 1024 * 1024;
const COMPACT_RATIO: u64 = 4;

/// A durable FIFO of records, one redb file per sink. Records get increasing sequence numbers.
pub struct DiskQueue {
    /// `None` after an I/O error closed it, until it is reopened.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// The last operation failed with an I/O error: reopen before the next one.
    broken: AtomicBool,
    /// When the file was last (re)opened or a reopen was tried, and why it was closed.
    reopen: Mutex<(Instant, String)>,
    len: AtomicU64,
    bytes: AtomicU64,
    /// Serialises the write transactions with the updates of `len` and `bytes` (so that they never
    /// go transiently negative), and holds the state of the non-durable removals.
    writer: Mutex<WriterState>,
    /// Appends waiting for the next commit, and who leads it.
    appends: GroupCommit,
    /// Durable commits of appends made so far (each holds one or more appends).
    append_commits: AtomicU64,
}

struct WriterState {
    /// When the last durable commit returned.
    last_durable: Instant,
    /// Whether a non-durable commit was made since then.
    pending: bool,
}

impl DiskQueue {
    /// Opens or creates `path` (parent dirs created). Existing records are kept: after a crash,
    /// every appended, not-removed record is there again.
    ///
    /// A file that exists but is empty (0 bytes: truncated, or created by hand) is taken as a
    /// new queue, and an error is logged: whatever records it held are gone.
    pub fn open(path: &Path) -> Result<DiskQueue, StorageError> {
        DiskQueue::open_compacting_from(path, COMPACT_MIN_FILE)
    }

    fn open_compacting_from(path: &Path, compact_min_file: u64) -> Result<DiskQueue, StorageError> {
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            tracing::error!(
                path = %path.display(),
                "the disk buffer file is empty (0 bytes): it was truncated or replaced, and any events it held are \
                 lost; starting with an empty queue"
            );
        }
        let (db, len, bytes) = DiskQueue::open_db(path, compact_min_file)?;
        Ok(DiskQueue {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            broken: AtomicBool::new(false),
            reopen: Mutex::new((Instant::now(), String::new())),
            len: AtomicU64::new(len),
            bytes: AtomicU64::new(bytes),
            writer: Mutex::new(WriterState { last_durable: Instant::now(), pending: false }),
            appends: GroupCommit::new(GROUP_LIMIT, path.to_path_buf()),
            append_commits: AtomicU64::new(0),
        })
    }

    /// Opens the file and counts its records and bytes.
    fn open_db(path: &Path, compact_min_file: u64) -> Result<(Database, u64, u64), StorageError> {
        let mut db = open_database(path, CACHE_BYTES)?;
        let io = |e: &dyn std::fmt::Display| StorageError::io(path, e);

        // Create the tables, and repair `next_seq` should it be behind the records.
        let txn = db.begin_write().map_err(|e| io(&e))?;
        let (len, bytes) = {
            let records = txn.open_table(RECORDS).map_err(|e| io(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| io(&e))?;
            let mut len = 0u64;
            let mut bytes = 0u64;
            let mut last = None;
            for entry in records.iter().map_err(|e| io(&e))? {
                let (key, value) = entry.map_err(|e| io(&e))?;
                len += 1;
                bytes += value.value().len() as u64;
                last = Some(key.value());
            }
            let stored = meta.get(NEXT_SEQ).map_err(|e| io(&e))?.map(|v| v.value());
            let next = stored.unwrap_or(FIRST_SEQ).max(last.map_or(FIRST_SEQ, |l| l.saturating_add(1)));
            if stored != Some(next) {
                meta.insert(NEXT_SEQ, next).map_err(|e| io(&e))?;
            }
            (len, bytes)
        };
        txn.commit().map_err(|e| io(&e))?;

        let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if file_len >= compact_min_file && file_len > bytes.saturating_mul(COMPACT_RATIO) {
            if let Err(e) = db.compact() {
                tracing::warn!(path = %path.display(), error = %e, "could not compact the disk buffer");
            }
        }

        Ok((db, len, bytes))
    }

    /// Whether the last operation failed with an I/O error (and the file was not reopened
    /// successfully since).
    pub fn failing(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Reopens the file if an I/O error closed it (at most once per [`REOPEN_INTERVAL`]).
    /// Takes the writer lock: never call it while holding it.
    fn ensure_open(&self) -> Result<(), StorageError> {
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut writer = self.lock_writer();
        let mut reopen = self.reopen.lock().unwrap_or_else(|e| e.into_inner());
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        if reopen.0.elapsed() < REOPEN_INTERVAL {
            return Err(self.io(format!("unavailable since an I/O error ({}); retrying", reopen.1)));
        }
        reopen.0 = Instant::now();
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Close the failed database before opening the file again (it holds the file's lock).
        drop(slot.take());
        let (db, len, bytes) = DiskQueue::open_db(&self.path, u64::MAX).inspect_err(|e| {
            reopen.1 = e.to_string();
        })?;
        *slot = Some(db);
        self.len.store(len, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        // The reopened file is durable as it stands.
        writer.last_durable = Instant::now();
        writer.pending = false;
        self.broken.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), records = len, "disk buffer reopened after an I/O error");
        Ok(())
    }

    /// Runs `f` on the open database; an error of `f` marks the file for reopening.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let result = {
            let slot = self.db.read().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(db) => f(db),
                None => Err(self.io("closed after an I/O error")),
            }
        };
        if let Err(StorageError::Io { message, .. }) = &result {
            let mut reopen = self.reopen.lock().unwrap_or_else(|e| e.into_inner());
            if !self.broken.swap(true, Ordering::AcqRel) {
                tracing::error!(path = %self.path.display(), error = %message, "disk buffer I/O error; it will be reopened");
                // `reopen.0` stays the time of the last (re)open: a file that fails again right
                // after being reopened is not reopened again within REOPEN_INTERVAL.
                reopen.1 = message.clone();
            }
        }
        result
    }

    /// Appends records, durably: returns once the transaction that holds them is committed
    /// and fsync'd. Their sequence numbers increase in the order of the calls, are never
    /// reused (also across reopen), and are returned in the order of `records`.
    ///
    /// Calls made while another append's commit is in progress share the next transaction
    /// (a group commit); if it fails, every call in it gets the error.
    pub fn append(&self, records: Batch) -> Result<Vec<u64>, StorageError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let ticket = self.appends.enqueue(records);
        loop {
            match self.appends.wait(ticket) {
                Turn::Answered(answer) => return answer,
                Turn::Lead(mut lead) => {
                    // Reopening takes the writer lock: before it is held here.
                    let opened = self.ensure_open();
                    let mut writer = self.lock_writer();
                    // Taken only now, so that appends that came while the lock was busy join.
                    let group = lead.take();
                    let result = opened.and_then(|()| self.commit_appends(&mut writer, &group));
                    drop(writer);
                    lead.answer(result);
                }
            }
        }
    }

    /// Writes `group` in one durable transaction: each batch's sequence numbers, or the
    /// error that failed them all.
    fn commit_appends(&self, writer: &mut WriterState, group: &[Batch]) -> Result<Vec<Vec<u64>>, StorageError> {
        let (seqs, added, count) = self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            let mut seqs = Vec::with_capacity(group.len());
            let mut added = 0u64;
            let mut count = 0u64;
            {
                let mut table = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
                let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
                let mut next = meta.get(NEXT_SEQ).map_err(|e| self.io(e))?.map_or(FIRST_SEQ, |v| v.value());
                for batch in group {
                    let mut batch_seqs = Vec::with_capacity(batch.len());
                    for record in batch {
                        table.insert(next, record.as_slice()).map_err(|e| self.io(e))?;
                        batch_seqs.push(next);
                        added += record.len() as u64;
                        next = next
                            .checked_add(1)
                            .ok_or_else(|| self.io("sequence numbers exhausted (u64::MAX records appended)"))?;
                    }
                    count += batch_seqs.len() as u64;
                    seqs.push(batch_seqs);
                }
                meta.insert(NEXT_SEQ, next).map_err(|e| self.io(e))?;
            }
            // Immediate durability (redb's default): fsync'd when commit returns, together with
            // any earlier non-durable removal.
            txn.commit().map_err(|e| self.io(e))?;
            Ok((seqs, added, count))
        })?;
        self.append_commits.fetch_add(1, Ordering::Relaxed);
        writer.last_durable = Instant::now();
        writer.pending = false;
        self.len.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(added, Ordering::Relaxed);
        Ok(seqs)
    }

    /// Up to `max` records with seq > `after` (None: from the start), in seq order.
    pub fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let start = match after {
            None => 0,
            Some(seq) => match seq.checked_add(1) {
                Some(start) => start,
                None => return Ok(Vec::new()),
            },
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ensure_open()?;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let table = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
            let mut out = Vec::new();
            for entry in table.range(start..).map_err(|e| self.io(e))? {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                out.push((key.value(), value.value().to_vec()));
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Removes delivered records; sequence numbers not stored are ignored.
    ///
    /// Not durable at once (see the module documentation): a crash may bring a removed record
    /// back, but the next append's commit persists the removal.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.ensure_open()?;
        let mut writer = self.lock_writer();
        let durable = writer.last_durable.elapsed() >= REMOVAL_FLUSH_INTERVAL;
        let (removed, freed) = self.with_db(|db| {
            let mut txn = db.begin_write().map_err(|e| self.io(e))?;
            if !durable {
                txn.set_durability(Durability::None).map_err(|e| self.io(e))?;
            }
            let mut removed = 0u64;
            let mut freed = 0u64;
            {
                let mut table = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
                let mut sorted = seqs.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                // Each run of nearby sequence numbers goes in one scan of its range, which
                // redb applies as one batch of removals: a `remove` per record walked and
                // rewrote the tree each time, 19k instructions per delivered event of a
                // disk run (docs/performance.md, seventh session). Records in a run's range
                // that are not to be removed (still in flight) are kept.
                for run in sorted.chunk_by(|a, b| b - a <= REMOVAL_RUN_GAP) {
                    let (Some(&first), Some(&last)) = (run.first(), run.last()) else { continue };
                    let mut wanted = run.iter().copied().peekable();
                    table
                        .retain_in(first..=last, |seq, value| {
                            while wanted.next_if(|&w| w < seq).is_some() {}
                            if wanted.next_if_eq(&seq).is_none() {
                                return true;
                            }
                            removed += 1;
                            freed += value.len() as u64;
                            false
                        })
                        .map_err(|e| self.io(e))?;
                }
            }
            txn.commit().map_err(|e| self.io(e))?;
            Ok((removed, freed))
        })?;
        if durable {
            writer.last_durable = Instant::now();
            writer.pending = false;
        } else {
            writer.pending = true;
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the removals so far durable (one fsync if there are any that are not yet). Also
    /// done when the queue is dropped.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.ensure_open()?;
        let mut writer = self.lock_writer();
        if !writer.pending {
            return Ok(());
        }
        // An empty commit with Immediate durability persists the earlier non-durable ones.
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            txn.commit().map_err(|e| self.io(e))
        })?;
        writer.last_durable = Instant::now();
        writer.pending = false;
        Ok(())
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> Result<u64, StorageError> {
        self.ensure_open()?;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let meta = txn.open_table(META).map_err(|e| self.io(e))?;
            Ok(meta.get(NEXT_SEQ).map_err(|e| self.io(e))?.map_or(FIRST_SEQ, |v| v.value()))
        })
    }

    /// Records stored.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Total bytes of the records stored.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether no record is stored. Beside `len` as clippy asks; only tests call it.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Durable commits of appends made since the queue was opened (fewer than the appends
    /// when concurrent ones shared a commit).
    #[cfg(test)]
    fn append_commits(&self) -> u64 {
        self.append_commits.load(Ordering::Relaxed)
    }

    /// The file of this queue.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves no broken invariant behind: redb aborts the
        // transaction, and the state only tells whether a flush is due.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self, error: impl std::fmt::Display) -> StorageError {
        StorageError::io(&self.path, error)
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not persist the last removals from the disk buffer");
        }
    }
}

impl std::fmt::Debug for DiskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskQueue")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn is_send_and_sync() {
        assert_send_sync::<DiskQueue>();
    }

    fn owned(records: &[&[u8]]) -> Batch {
        records.iter().map(|r| r.to_vec()).collect()
    }

    fn records(queue: &DiskQueue) -> Vec<(u64, Vec<u8>)> {
        queue.read_after(None, usize::MAX).unwrap()
    }

    #[test]
    fn appends_read_in_order_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/queue.redb");
        let queue = DiskQueue::open(&path).unwrap();
        assert_eq!(queue.path(), path);
        assert!(queue.is_empty());
        assert_eq!(queue.append(owned(&[])).unwrap(), Vec::<u64>::new());

        let seqs = queue.append(owned(&[b"one", b"two", b""])).unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(queue.append(owned(&[b"four"])).unwrap(), vec![4]);
        assert_eq!((queue.len(), queue.bytes()), (4, 10));
        assert!(!queue.is_empty());

        assert_eq!(
            records(&queue),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec()), (3, Vec::new()), (4, b"four".to_vec())]
        );
        assert_eq!(queue.read_after(Some(1), 2).unwrap(), vec![(2, b"two".to_vec()), (3, Vec::new())]);
        assert_eq!(queue.read_after(Some(4), 10).unwrap(), vec![]);
        assert_eq!(queue.read_after(Some(u64::MAX), 10).unwrap(), vec![]);
        assert_eq!(queue.read_after(None, 0).unwrap(), vec![]);
        assert_eq!(queue.read_after(Some(0), 1).unwrap(), vec![(1, b"one".to_vec())]);
    }

    #[test]
    fn remove_updates_counts_and_ignores_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        queue.append(owned(&[b"aa", b"bbb", b"c"])).unwrap();
        queue.remove(&[]).unwrap();
        queue.remove(&[2, 2, 99]).unwrap();
        assert_eq!((queue.len(), queue.bytes()), (2, 3));
        assert_eq!(records(&queue), vec![(1, b"aa".to_vec()), (3, b"c".to_vec())]);
        assert_eq!(queue.read_after(Some(1), 1).unwrap(), vec![(3, b"c".to_vec())]);
        queue.remove(&[1, 3]).unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.bytes(), 0);
        queue.flush().unwrap();
        queue.flush().unwrap();
    }

    /// Removals in any order, repeated, unknown, in runs and far apart remove exactly the
    /// records named, and count their bytes; the records between them stay.
    #[test]
    fn remove_takes_exactly_the_named_records_in_runs_and_far_apart() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        let values: Vec<Vec<u8>> = (1..=300u64).map(|n| vec![b'x'; (n % 7) as usize]).collect();
        queue.append(values.clone()).unwrap();
        let gone = [299, 3, 1, 2, 5, 3, 150, 7, 8, 10, 200, 201, 203, 1000, 74, 140];
        queue.remove(&gone).unwrap();
        let expected: Vec<(u64, Vec<u8>)> = (1..=300u64)
            .filter(|seq| !gone.contains(seq))
            .map(|seq| (seq, values[seq as usize - 1].clone()))
            .collect();
        assert_eq!(records(&queue), expected);
        assert_eq!(queue.len(), expected.len() as u64);
        assert_eq!(queue.bytes(), expected.iter().map(|(_, v)| v.len() as u64).sum::<u64>());
    }

    #[test]
    fn reopen_keeps_records_counts_and_never_reuses_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let queue = DiskQueue::open(&path).unwrap();
            queue.append(owned(&[b"x", b"yy", b"zzz"])).unwrap();
            queue.remove(&[1]).unwrap();
        }
        {
            let queue = DiskQueue::open(&path).unwrap();
            assert_eq!((queue.len(), queue.bytes()), (2, 5));
            assert_eq!(records(&queue), vec![(2, b"yy".to_vec()), (3, b"zzz".to_vec())]);
            queue.remove(&[2, 3]).unwrap();
        }
        let queue = DiskQueue::open(&path).unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.append(owned(&[b"w"])).unwrap(), vec![4]);
    }

    #[test]
    fn a_drained_large_file_is_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        const MIN: u64 = 1024 * 1024;
        let big = vec![5u8; 64 * 1024];
        {
            let queue = DiskQueue::open_compacting_from(&path, MIN).unwrap();
            let batch: Vec<&[u8]> = (0..24).map(|_| big.as_slice()).collect();
            let seqs = queue.append(owned(&batch)).unwrap();
            // Keep the last record, so that the end of the file stays in use.
            queue.remove(&seqs[..23]).unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(before >= MIN, "{before}");
        let queue = DiskQueue::open_compacting_from(&path, MIN).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < before / 2, "{before} -> {after}");
        assert_eq!((queue.len(), queue.bytes()), (1, big.len() as u64));
        assert_eq!(records(&queue), vec![(24, big)]);
        assert_eq!(queue.append(owned(&[b"next"])).unwrap(), vec![25]);
    }

    #[test]
    fn second_open_is_locked_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let first = DiskQueue::open(&path).unwrap();
        match DiskQueue::open(&path) {
            Err(StorageError::Locked { path: locked }) => assert_eq!(locked, path),
            other => panic!("expected Locked, got {other:?}"),
        }
        let error = DiskQueue::open(&path).unwrap_err();
        assert_eq!(error.to_string(), format!("{}: in use by another webhook-sink process", path.display()));
        drop(first);
        DiskQueue::open(&path).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        match DiskQueue::open(&path) {
            Err(StorageError::Io { path: p, message }) => {
                assert_eq!(p, path);
                assert!(!message.is_empty());
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    /// Waits (at most 10 s) until `n` appends are queued for the next commit.
    fn wait_queued(queue: &DiskQueue, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.appends.queued() < n {
            assert!(Instant::now() < deadline, "{n} appends never got queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn appends_made_during_a_commit_share_the_next_one_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        assert_eq!(queue.append(owned(&[b"first"])).unwrap(), vec![1]);
        assert_eq!(queue.append_commits(), 1);

        // Holding the writer lock stands for a commit in progress: the appends below queue up
        // behind it, and the one that leads the next commit waits for the lock.
        let writer = queue.lock_writer();
        std::thread::scope(|scope| {
            let mut appenders = Vec::new();
            for i in 0..4u8 {
                let queue = &queue;
                appenders.push(scope.spawn(move || queue.append(vec![vec![i; 1], vec![i; 2]])));
                // One at a time, so that the arrival order is known.
                wait_queued(queue, usize::from(i) + 1);
            }
            // Not answered, and nothing of theirs stored, while their commit cannot happen.
            assert!(appenders.iter().all(|a| !a.is_finished()));
            assert_eq!((queue.len(), queue.append_commits()), (1, 1));
            drop(writer);
            let seqs: Vec<Vec<u64>> = appenders.into_iter().map(|a| a.join().unwrap().unwrap()).collect();
            assert_eq!(seqs, vec![vec![2, 3], vec![4, 5], vec![6, 7], vec![8, 9]]);
        });
        // Four appends, one commit; each was answered after it returned.
        assert_eq!(queue.append_commits(), 2);
        assert_eq!((queue.len(), queue.bytes()), (9, 5 + 4 * 3));
        let stored: Vec<Vec<u8>> = records(&queue).into_iter().map(|(_, r)| r).collect();
        let mut expected = vec![b"first".to_vec()];
        for i in 0..4u8 {
            expected.extend([vec![i; 1], vec![i; 2]]);
        }
        assert_eq!(stored, expected);
    }

    #[test]
    fn a_failed_group_commit_fails_every_append_in_it_and_stores_none() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        assert_eq!(queue.append(owned(&[b"kept"])).unwrap(), vec![1]);
        // Two sequence numbers left: the third record of the group cannot be numbered, which
        // fails the whole transaction.
        queue
            .with_db(|db| {
                let txn = db.begin_write().map_err(|e| queue.io(e))?;
                txn.open_table(META).map_err(|e| queue.io(e))?.insert(NEXT_SEQ, u64::MAX - 2).map_err(|e| queue.io(e))?;
                txn.commit().map_err(|e| queue.io(e))
            })
            .unwrap();

        let writer = queue.lock_writer();
        let answers = std::thread::scope(|scope| {
            let mut appenders = Vec::new();
            for i in 0..3u8 {
                let queue = &queue;
                appenders.push(scope.spawn(move || queue.append(vec![vec![i]])));
                wait_queued(queue, usize::from(i) + 1);
            }
            drop(writer);
            appenders.into_iter().map(|a| a.join().unwrap()).collect::<Vec<_>>()
        });
        assert_eq!(answers.len(), 3);
        for answer in answers {
            let error = answer.unwrap_err();
            assert!(error.to_string().contains("sequence numbers exhausted"), "{error}");
        }
        // The first two would have fit alone; in the failed group, none was stored.
        assert_eq!((queue.len(), queue.bytes(), queue.append_commits()), (1, 4, 1));
        assert!(queue.failing());
    }

    #[test]
    fn many_concurrent_appenders_get_increasing_unique_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        let all: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let appenders: Vec<_> = (0..8u8)
                .map(|t| {
                    let queue = &queue;
                    scope.spawn(move || {
                        (0..20u8).map(|n| queue.append(vec![vec![t, n], vec![t, n]]).unwrap()).collect::<Vec<_>>()
                    })
                })
                .collect();
            appenders.into_iter().flat_map(|a| a.join().unwrap()).collect()
        });
        // Within one appender, later calls got later numbers; each call's numbers are
        // consecutive (a batch is never split), and no number was given twice.
        let mut seen = std::collections::BTreeSet::new();
        for seqs in &all {
            assert_eq!(seqs.len(), 2);
            assert_eq!(seqs[1], seqs[0] + 1);
            assert!(seen.insert(seqs[0]) && seen.insert(seqs[1]));
        }
        for per_thread in all.chunks(20) {
            assert!(per_thread.windows(2).all(|w| w[0][1] < w[1][0]));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), (1..=320).collect::<Vec<u64>>());
        assert!(queue.append_commits() <= 160);
        // Each record holds its appender and call: stored in the order the seqs say.
        let stored = records(&queue);
        for (seqs, chunk) in all.iter().zip(0..) {
            let (t, n) = (chunk / 20, chunk % 20);
            for seq in seqs {
                assert_eq!(stored[(*seq - 1) as usize], (*seq, vec![t as u8, n as u8]));
            }
        }
    }

    #[test]
    fn concurrent_appenders_and_removers_keep_counts_exact() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(&dir.path().join("q.redb")).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let seqs = queue.append(owned(&[b"abc", b"de"])).unwrap();
                        queue.remove(&seqs[..1]).unwrap();
                    }
                });
            }
        });
        assert_eq!((queue.len(), queue.bytes()), (100, 200));
        let all = records(&queue);
        assert_eq!(all.len(), 100);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<Vec<u8>>),
        /// Removes the records at these positions (modulo the length) of the current contents.
        Remove(Vec<usize>),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)
                .prop_map(Op::Append),
            3 => proptest::collection::vec(any::<usize>(), 0..5).prop_map(Op::Remove),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn behaves_like_an_ordered_map(ops in proptest::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.redb");
            let mut queue = DiskQueue::open(&path).unwrap();
            let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut last_seq = 0;
            for op in ops {
                match op {
                    Op::Append(batch) => {
                        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                        let seqs = queue.append(owned(&refs)).unwrap();
                        prop_assert_eq!(seqs.len(), batch.len());
                        for (seq, record) in seqs.into_iter().zip(batch) {
                            prop_assert!(seq > last_seq);
                            last_seq = seq;
                            model.insert(seq, record);
                        }
                    }
                    Op::Remove(positions) => {
                        let keys: Vec<u64> = model.keys().copied().collect();
                        let seqs: Vec<u64> = if keys.is_empty() {
                            positions.iter().map(|&p| p as u64).collect()
                        } else {
                            positions.iter().map(|&p| keys[p % keys.len()]).collect()
                        };
                        queue.remove(&seqs).unwrap();
                        for seq in seqs {
                            model.remove(&seq);
                        }
                    }
                    Op::Reopen => {
                        drop(queue);
                        queue = DiskQueue::open(&path).unwrap();
                    }
                }
                prop_assert_eq!(queue.len(), model.len() as u64);
                prop_assert_eq!(
                    queue.bytes(),
                    model.values().map(|r| r.len() as u64).sum::<u64>()
                );
                let expected: Vec<(u64, Vec<u8>)> =
                    model.iter().map(|(k, v)| (*k, v.clone())).collect();
                prop_assert_eq!(records(&queue), expected.clone());
                // Paging through with read_after gives the same sequence.
                let mut paged = Vec::new();
                let mut after = None;
                loop {
                    let page = queue.read_after(after, 2).unwrap();
                    if page.is_empty() {
                        break;
                    }
                    after = page.last().map(|(seq, _)| *seq);
                    paged.extend(page);
                }
                prop_assert_eq!(paged, expected);
            }
        }
    }
}
