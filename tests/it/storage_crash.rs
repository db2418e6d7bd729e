//! Durability of the storage across a hard kill.
//!
//! Each parent test re-executes this test binary as a child running only [`crash_child`], with
//! [`CHILD_ENV`] naming the store file. The child writes to the store in a loop and prints a line
//! on stdout after each write returns (the acknowledgement). The parent kills the child with
//! SIGKILL after some acknowledged writes, reopens the store and checks that every acknowledged
//! write is there. In a normal run (no [`CHILD_ENV`]), [`crash_child`] does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use webhook_sink::storage::dead_letters::{DeadLetterStore, NewDeadLetter};
use webhook_sink::storage::queue::DiskQueue;

/// Set in the child: the store file to write to.
const CHILD_ENV: &str = "STORAGE_CRASH_CHILD";
/// Set in the child: `queue` or `dead_letters`.
const KIND_ENV: &str = "STORAGE_CRASH_KIND";
/// Set in the child: which run over the same file this is, to make its records unique.
const ROUND_ENV: &str = "STORAGE_CRASH_ROUND";

/// Marks the child's acknowledgement lines (the test harness may print on the same line).
const MARK: &str = "@@";
/// Acknowledged writes after which the parent kills the child.
const KILL_AFTER: usize = 50;
/// How long the child runs at most if it is never killed.
const CHILD_MAX_TIME: Duration = Duration::from_secs(10);
/// How many records the child writes at most if it is never killed.
const CHILD_MAX_RECORDS: u64 = 100_000;
/// Appending threads of the `queue_concurrent` child.
const CONCURRENT_APPENDERS: u64 = 4;
/// How long the parent waits for the acknowledgements.
const PARENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The bytes of record `i` of round `round`: unique, of varying length (up to ~1.5 KB).
fn payload(round: u64, i: u64) -> Vec<u8> {
    let mut bytes = format!("{round}:{i}:").into_bytes();
    let fill = (i * 37 % 1500) as usize;
    bytes.extend((0..fill).map(|n| b'a' + ((n as u64 + i) % 26) as u8));
    bytes
}

fn dead_letter(round: u64, i: u64) -> NewDeadLetter {
    NewDeadLetter {
        sink: format!("sink-{}", i % 3),
        webhook_id: format!("{round}-{i}"),
        event: serde_json::json!({"round": round, "i": i, "summary": "disk full on db-1"}),
        reason: format!("HTTP 410 Gone: attempt {i}"),
        last_status: Some(410),
        attempts: (i % 9) as u32,
        digest: None,
    }
}

/// The child: does nothing unless [`CHILD_ENV`] is set.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    // Straight to the file descriptor, past the test harness's capture.
    let mut out = std::io::stdout().lock();
    let mut ack = |line: String| {
        out.write_all(format!("{MARK}{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    };
    let start = Instant::now();
    let mut i = 0u64;
    match std::env::var(KIND_ENV).unwrap().as_str() {
        "queue" => {
            let queue = DiskQueue::open(&path).unwrap();
            let mut live = Vec::new();
            for n in 0u64.. {
                if i >= CHILD_MAX_RECORDS || start.elapsed() > CHILD_MAX_TIME {
                    break;
                }
                let batch: Vec<Vec<u8>> = (0..1 + n % 3).map(|k| payload(round, i + k)).collect();
                let seqs = queue.append(batch).unwrap();
                for seq in seqs {
                    ack(format!("A {seq} {i}"));
                    live.push(seq);
                    i += 1;
                }
                if n % 4 == 3 {
                    let done: Vec<u64> = live.drain(..live.len().min(3)).collect();
                    // Announced first: a kill between the removal and its acknowledgement
                    // leaves the parent knowing the removal may have happened.
                    for seq in &done {
                        ack(format!("P {seq}"));
                    }
                    queue.remove(&done).unwrap();
                    for seq in done {
                        ack(format!("R {seq}"));
                    }
                }
            }
        }
        // Several appenders at once, so that appends share group commits: each one's
        // acknowledgement comes only after its append returned.
        "queue_concurrent" => {
            let queue = DiskQueue::open(&path).unwrap();
            drop(out);
            std::thread::scope(|scope| {
                for thread in 0..CONCURRENT_APPENDERS {
                    let queue = &queue;
                    scope.spawn(move || {
                        let mut i = thread * 1_000_000;
                        for n in 0u64.. {
                            if n >= CHILD_MAX_RECORDS || start.elapsed() > CHILD_MAX_TIME {
                                break;
                            }
                            let batch: Vec<Vec<u8>> = (0..1 + n % 4).map(|k| payload(round, i + k)).collect();
                            let seqs = queue.append(batch).unwrap();
                            let mut lines = String::new();
                            for seq in seqs {
                                lines.push_str(&format!("{MARK}C {seq} {i}\n"));
                                i += 1;
                            }
                            let mut out = std::io::stdout().lock();
                            out.write_all(lines.as_bytes()).unwrap();
                            out.flush().unwrap();
                        }
                    });
                }
            });
        }
        "dead_letters" => {
            let store = DeadLetterStore::open(&path).unwrap();
            let mut live = Vec::new();
            for n in 0u64.. {
                if i >= CHILD_MAX_RECORDS || start.elapsed() > CHILD_MAX_TIME {
                    break;
                }
                let letters = (0..1 + n % 2).map(|k| dead_letter(round, i + k)).collect();
                let seqs = store.record(letters).unwrap();
                for seq in seqs {
                    ack(format!("D {seq} {i}"));
                    live.push(seq);
                    i += 1;
                }
                if n % 5 == 4 {
                    let done: Vec<u64> = live.drain(..2).collect();
                    for seq in &done {
                        ack(format!("P {seq}"));
                    }
                    assert_eq!(store.remove(&done).unwrap(), 2);
                    for seq in done {
                        ack(format!("X {seq}"));
                    }
                }
            }
        }
        other => panic!("unknown {KIND_ENV} {other:?}"),
    }
}

/// Kills the child when dropped, whatever the path out of the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the child on `path` until it has acknowledged [`KILL_AFTER`] writes (lines starting with
/// `counted`), kills it with SIGKILL and returns every acknowledgement line it printed.
fn run_and_kill(path: &Path, kind: &str, round: u64, counted: &str) -> Vec<String> {
    let child = Command::new(std::env::current_exe().unwrap())
        // The test's full name in the one test binary: module, then function.
        .args(["storage_crash::crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(KIND_ENV, kind)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(MARK) {
                if send.send(line[at + MARK.len()..].to_string()).is_err() {
                    break;
                }
            }
        }
    });

    let deadline = Instant::now() + PARENT_TIMEOUT;
    let mut lines = Vec::new();
    let mut acknowledged = 0;
    while acknowledged < KILL_AFTER {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => {
                if line.starts_with(counted) {
                    acknowledged += 1;
                }
                lines.push(line);
            }
            Err(e) => panic!("child gave {acknowledged} acknowledgements, then: {e}"),
        }
    }
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status}");
    // What it printed before it died was acknowledged too.
    reader.join().unwrap();
    lines.extend(receive.try_iter());
    lines
}

fn parse(line: &str) -> (&str, Vec<u64>) {
    let mut words = line.split(' ');
    let tag = words.next().unwrap();
    (tag, words.map(|w| w.parse().unwrap()).collect())
}

#[test]
fn acknowledged_queue_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer/sink.redb");
    // Every acknowledged record not acknowledged as removed: seq -> bytes.
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut max_seen = 0;
    for round in 0..3 {
        let lines = run_and_kill(&path, "queue", round, "A ");
        // Removals followed by an acknowledged append are durable; later ones may come back.
        let mut durably_removed = BTreeSet::new();
        let mut maybe_removed = BTreeSet::new();
        for line in &lines {
            match parse(line) {
                ("A", v) => {
                    let (seq, i) = (v[0], v[1]);
                    assert!(seq > max_seen, "seq {seq} reused or out of order");
                    max_seen = seq;
                    expected.insert(seq, payload(round, i));
                    durably_removed.append(&mut maybe_removed);
                }
                ("R", v) => {
                    expected.remove(&v[0]);
                    maybe_removed.insert(v[0]);
                }
                // A removal about to be made: if the kill came before its "R", it may or
                // may not have happened.
                ("P", v) => {
                    maybe_removed.insert(v[0]);
                }
                other => panic!("unexpected line {other:?}"),
            }
        }

        let queue = DiskQueue::open(&path).unwrap();
        let stored: BTreeMap<u64, Vec<u8>> = queue.read_after(None, usize::MAX).unwrap().into_iter().collect();
        // A record whose removal was in flight at the kill is gone or not; either is right.
        expected.retain(|seq, _| stored.contains_key(seq) || !maybe_removed.contains(seq));
        for (seq, bytes) in &expected {
            match stored.get(seq) {
                Some(found) => assert_eq!(found, bytes, "round {round}: record {seq} differs"),
                None => panic!("round {round}: acknowledged record {seq} lost"),
            }
        }
        for seq in &durably_removed {
            assert!(
                !stored.contains_key(seq),
                "round {round}: record {seq} came back though an append was acknowledged after its removal"
            );
        }
        for seq in stored.keys() {
            assert!(
                expected.contains_key(seq) || maybe_removed.contains(seq) || *seq > max_seen,
                "round {round}: record {seq} was never appended"
            );
        }
        assert_eq!(queue.len(), stored.len() as u64);
        assert_eq!(queue.bytes(), stored.values().map(|b| b.len() as u64).sum::<u64>());
        // Records that came back (removals not yet durable, an append in flight) are dropped
        // here, so that the next round starts from what `expected` says.
        let extra: Vec<u64> = stored.keys().filter(|seq| !expected.contains_key(seq)).copied().collect();
        if let Some(&last) = stored.keys().next_back() {
            max_seen = max_seen.max(last);
        }
        queue.remove(&extra).unwrap();
        queue.flush().unwrap();
        assert_eq!(queue.len(), expected.len() as u64);
    }
}

#[test]
fn acknowledged_group_committed_queue_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer/sink.redb");
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for round in 0..2 {
        let before = expected.keys().next_back().copied().unwrap_or(0);
        let lines = run_and_kill(&path, "queue_concurrent", round, "C ");
        for line in &lines {
            match parse(line) {
                ("C", v) => {
                    let (seq, i) = (v[0], v[1]);
                    assert!(seq > before, "round {round}: seq {seq} reused");
                    assert!(expected.insert(seq, payload(round, i)).is_none(), "seq {seq} given twice");
                }
                other => panic!("unexpected line {other:?}"),
            }
        }
        let queue = DiskQueue::open(&path).unwrap();
        let stored: BTreeMap<u64, Vec<u8>> = queue.read_after(None, usize::MAX).unwrap().into_iter().collect();
        for (seq, bytes) in &expected {
            match stored.get(seq) {
                Some(found) => assert_eq!(found, bytes, "round {round}: record {seq} differs"),
                None => panic!("round {round}: acknowledged record {seq} lost"),
            }
        }
        // Appends in flight at the kill may be there unacknowledged; drop them for the next round.
        let extra: Vec<u64> = stored.keys().filter(|seq| !expected.contains_key(seq)).copied().collect();
        queue.remove(&extra).unwrap();
        queue.flush().unwrap();
        assert_eq!(queue.len(), expected.len() as u64);
    }
}

#[test]
fn acknowledged_dead_letters_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/dead_letters.redb");
    // Every acknowledged dead letter not acknowledged as removed: seq -> (round, i).
    let mut expected: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut removed = BTreeSet::new();
    let mut in_flight = BTreeSet::new();
    let mut max_seen = 0;
    for round in 0..2 {
        let lines = run_and_kill(&path, "dead_letters", round, "D ");
        for line in &lines {
            match parse(line) {
                ("D", v) => {
                    assert!(v[0] > max_seen, "seq {} reused or out of order", v[0]);
                    max_seen = v[0];
                    expected.insert(v[0], (round, v[1]));
                }
                ("X", v) => {
                    expected.remove(&v[0]);
                    removed.insert(v[0]);
                    in_flight.remove(&v[0]);
                }
                // A removal about to be made: if the kill came before its "X", it may or
                // may not have happened.
                ("P", v) => {
                    in_flight.insert(v[0]);
                }
                other => panic!("unexpected line {other:?}"),
            }
        }

        let store = DeadLetterStore::open(&path).unwrap();
        let stored = store.list(None).unwrap();
        // A letter whose removal was in flight at the kill is gone or not; either is right.
        for seq in std::mem::take(&mut in_flight) {
            if store.get(seq).unwrap().is_none() {
                expected.remove(&seq);
                removed.insert(seq);
            }
        }
        for (&seq, &(round, i)) in &expected {
            let letter = store.get(seq).unwrap().unwrap_or_else(|| panic!("acknowledged dead letter {seq} lost"));
            let new = dead_letter(round, i);
            assert_eq!(letter.seq, seq);
            assert_eq!(letter.sink, new.sink);
            assert_eq!(letter.webhook_id, new.webhook_id);
            assert_eq!(letter.event, new.event);
            assert_eq!(letter.reason, new.reason);
            assert_eq!(letter.last_status, new.last_status);
            assert_eq!(letter.attempts, new.attempts);
        }
        for letter in &stored {
            assert!(
                !removed.contains(&letter.seq),
                "dead letter {} came back after an acknowledged removal",
                letter.seq
            );
            assert!(expected.contains_key(&letter.seq) || letter.seq > max_seen);
            max_seen = max_seen.max(letter.seq);
        }
        // A dead letter recorded but not acknowledged before the kill is kept by the next
        // round's expectations only if it is there now.
        for letter in &stored {
            expected.entry(letter.seq).or_insert_with(|| {
                let (round, i) = letter.webhook_id.split_once('-').unwrap();
                (round.parse().unwrap(), i.parse().unwrap())
            });
        }
    }
}
