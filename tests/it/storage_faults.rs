//! Storage faults, driven through the real binary: a corrupt disk-buffer record, an empty
//! (0-byte) buffer file, a full disk, a dead-letter store that cannot be written, a corrupt
//! dead letter, and `dead-letters list` into a pipe that closes early.
//!
//! The full disk is a real one: a small tmpfs mounted for the test (`mount -t tmpfs`, which
//! needs root and CAP_SYS_ADMIN). Where it cannot be mounted the test says so on stderr and
//! passes, except under CI (`CI` set), where that is a failure.
//!
//! Every child process is killed when its guard drops, every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::peer::KillOnDrop;
use crate::support::{free_addr, Receiver};
use webhook_sink::dead_letters::store_path;
use webhook_sink::storage::dead_letters::{DeadLetter, DeadLetterStore, NewDeadLetter};
use webhook_sink::storage::queue::DiskQueue;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A running `webhook-sink`; killed (and reaped) when dropped. Its stderr is collected on a
/// thread of its own.
struct Proc {
    /// Killed and reaped when the `Proc` is dropped.
    child: KillOnDrop,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let text: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    text
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-sink"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("WEBHOOK_SINK_LOG")
            .spawn()
            .expect("start webhook-sink");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Proc { child: KillOnDrop(child), stderr, stdout }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until stderr holds `needle`.
    async fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(self.stderr().contains(needle), "exited ({status}) before {needle:?}:\n{}", self.stderr());
                return;
            }
            assert!(Instant::now() < deadline, "no {needle:?} on stderr within {WAIT:?}:\n{}", self.stderr());
            tokio::time::sleep(POLL).await;
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.0.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the exit, then a little for the output to end.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return status;
            }
            assert!(Instant::now() < deadline, "webhook-sink did not exit within {WAIT:?}:\n{}", self.stderr());
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body of the answer.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the source");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(WAIT, exchange).await.expect("the source answers")
}

fn event(id: &str) -> Value {
    json!({"id": id, "eventType": "alert-created", "alertKey": format!("key-{id}"), "summary": format!("Alert {id}")})
}

/// An event with a `details` of about `size` bytes.
fn big_event(id: &str, size: usize) -> String {
    let mut event = event(id);
    event["details"] = json!("x".repeat(size));
    event.to_string()
}

/// A disk-buffer record as the buffer writes it.
fn record(id: &str) -> Vec<u8> {
    let event = event(id);
    json!({"id": format!("msg_{id}"), "size": event.to_string().len(), "event": event}).to_string().into_bytes()
}

/// The ids of the events a receiver got, in arrival order.
fn ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|body| body.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Waits (bounded) until `receiver` got an event with `id`.
async fn wait_id(receiver: &Receiver, id: &str) {
    let deadline = Instant::now() + WAIT;
    while !ids(receiver).iter().any(|i| i == id) {
        assert!(Instant::now() < deadline, "event {id} not delivered within {WAIT:?}; got {:?}", ids(receiver));
        tokio::time::sleep(POLL).await;
    }
}

fn write_config(dir: &Path, data_dir: &Path, source: SocketAddr, sinks: &str) -> PathBuf {
    let text = format!(
        "data_dir = '{}'\nshutdown_timeout_secs = 5\n\n\
         [sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\npath = \"/events\"\nfull_wait_ms = 0\n\n{sinks}",
        data_dir.display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A webhook sink `name` to `url`, retrying fast.
fn sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[sinks.{name}]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n\
         retry.initial_backoff_secs = 0.01\nretry.max_backoff_secs = 0.05\n{extra}\n"
    )
}

fn dead_letters(data_dir: &Path) -> Vec<DeadLetter> {
    DeadLetterStore::open(&store_path(data_dir)).unwrap().list(None).unwrap()
}

fn letter(i: u64) -> NewDeadLetter {
    NewDeadLetter {
        sink: "hook".into(),
        webhook_id: format!("msg_{i}"),
        event: event(&format!("ev-{i}")),
        reason: "HTTP 404 Not Found".into(),
        last_status: Some(404),
        attempts: 1,
        digest: None,
    }
}

/// Overwrites dead letter `seq` with bytes that are not a dead letter.
fn corrupt_dead_letter(data_dir: &Path, seq: u64) {
    const LETTERS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("dead_letters");
    let db = redb::Database::create(store_path(data_dir)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(LETTERS).unwrap().insert(seq, b"\x00{not a dead letter".as_slice()).unwrap();
    txn.commit().unwrap();
}

// Item 3: one corrupt record no longer stops the sink for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_disk_buffer_record_is_quarantined_and_the_sink_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let garbage = b"\x00\xffnot a record{".to_vec();
    {
        let queue = DiskQueue::open(&data.join("buffers").join("hook.redb")).unwrap();
        queue.append(vec![record("before"), garbage.clone(), record("after")]).unwrap();
    }
    let receiver = Receiver::http().await;
    let source = free_addr();
    let config =
        write_config(dir.path(), &data, source, &sink("hook", &receiver.url("/hook"), "buffer.type = \"disk\""));
    let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    run.wait_stderr("webhook-sink started").await;
    wait_id(&receiver, "before").await;
    wait_id(&receiver, "after").await;
    // New events go through too.
    let (status, _) = request(source, "POST", "/events", &event("new").to_string()).await;
    assert_eq!(status, 200);
    wait_id(&receiver, "new").await;
    assert!(run.stderr().contains("corrupt"), "the quarantine is logged:\n{}", run.stderr());
    run.terminate();
    assert!(run.wait_exit().await.success(), "{}", run.stderr());

    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].sink, "hook");
    assert!(letters[0].reason.contains("corrupt disk-buffer record 2"), "{}", letters[0].reason);
    let raw = letters[0].event["corrupt_disk_buffer_record"]["bytes_base64"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(raw).unwrap(), garbage);
    // The quarantined record left the buffer.
    let queue = DiskQueue::open(&data.join("buffers").join("hook.redb")).unwrap();
    assert!(queue.read_after(None, 10).unwrap().is_empty());
}

// Item 3: an empty buffer file is no longer taken silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_disk_buffer_file_is_reported_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("buffers")).unwrap();
    std::fs::write(data.join("buffers").join("hook.redb"), b"").unwrap();
    let receiver = Receiver::http().await;
    let source = free_addr();
    let config =
        write_config(dir.path(), &data, source, &sink("hook", &receiver.url("/hook"), "buffer.type = \"disk\""));
    let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    run.wait_stderr("webhook-sink started").await;
    let stderr = run.stderr();
    let line = stderr.lines().find(|l| l.contains("0 bytes")).unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(line.contains("ERROR"), "said loudly: {line}");
    assert!(line.contains("hook.redb"), "names the file: {line}");
}

/// A tmpfs of `mb` MiB mounted on a new directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (said on stderr) where it cannot be mounted; a failure under CI.
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs", dir.path().to_str().unwrap()])
            .output();
        match output {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = format!("cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): {other:?}");
                assert!(std::env::var_os("CI").is_none(), "{why}");
                eprintln!("SKIPPED: {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![1u8; 64 * 1024];
        while file.write_all(&chunk).and_then(|()| file.sync_all()).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A running `webhook-sink` with a disk sink `durable` (its endpoint answering 503, so its
/// events pile up in the file) and a memory sink `memory` on one source, its `data_dir` on
/// an 8 MB tmpfs that is already full (`filler` frees it). `None` where no tmpfs mounts.
struct FullDisk {
    disk: Tmpfs,
    dir: tempfile::TempDir,
    durable: Receiver,
    memory: Receiver,
    source: SocketAddr,
    run: Proc,
    filler: PathBuf,
}

impl FullDisk {
    /// With the disk sink's `buffer.when_full` set to `when_full`.
    async fn start(when_full: &str) -> Option<FullDisk> {
        let disk = Tmpfs::mount(8)?;
        let dir = tempfile::tempdir().unwrap();
        let data = disk.path().join("data");
        let durable = Receiver::http().await;
        let memory = Receiver::http().await;
        durable.set_status(503);
        let source = free_addr();
        let durable_settings = format!(
            "buffer.type = \"disk\"\nbuffer.when_full = \"{when_full}\"\nretry.attempts = 100000\nretry.max_elapsed_secs = 600"
        );
        let sinks = format!(
            "{}{}",
            sink("durable", &durable.url("/d"), &durable_settings),
            sink("memory", &memory.url("/m"), "")
        );
        let config = write_config(dir.path(), &data, source, &sinks);
        let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
        run.wait_stderr("webhook-sink started").await;
        let filler = disk.fill();
        Some(FullDisk { disk, dir, durable, memory, source, run, filler })
    }
}

// Item 4: a full disk no longer disables ingest until restart (`when_full = "reject"`: a
// batch the disk buffer cannot store is refused whole, 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_recovers_once_a_full_disk_has_room_again() {
    let Some(FullDisk { disk, dir: _dir, durable, memory, source, mut run, filler }) = FullDisk::start("reject").await
    else {
        return;
    };

    // Big batches until one cannot be stored.
    let mut refused = None;
    for i in 0..200 {
        let (status, body) = request(source, "POST", "/events", &big_event(&format!("full-{i}"), 200_000)).await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let body = refused.unwrap_or_else(|| panic!("the full disk never refused a batch:\n{}", run.stderr()));
    assert!(!body.contains(disk.path().to_str().unwrap()), "no server path in the answer: {body}");
    assert!(!body.contains(".redb"), "no server file in the answer: {body}");
    let (status, health) = request(source, "GET", "/health", "").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("degraded"), "{health}");

    // Room again: ingest works again without a restart, for both sinks.
    std::fs::remove_file(filler).unwrap();
    durable.set_status(200);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = request(source, "POST", "/events", &event("after").to_string()).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body} after space was freed:\n{}", run.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_id(&memory, "after").await;
    wait_id(&durable, "after").await;
    let (status, health) = request(source, "GET", "/health", "").await;
    assert_eq!(status, 200, "{health}");
    run.terminate();
    run.wait_exit().await;
}

// Item 5: a dead-letter store that cannot be written is found at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_without_a_writable_dead_letter_store() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::http().await;

    // `data_dir` is a file.
    let not_a_dir = dir.path().join("data-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let config = write_config(dir.path(), &not_a_dir, free_addr(), &sink("hook", &receiver.url("/h"), ""));
    let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    let status = run.wait_exit().await;
    assert!(!status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("dead"), "{}", run.stderr());

    // Another process holds the store.
    let data = dir.path().join("data");
    let held = DeadLetterStore::open(&store_path(&data)).unwrap();
    let config = write_config(dir.path(), &data, free_addr(), &sink("hook", &receiver.url("/h"), ""));
    let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    let status = run.wait_exit().await;
    assert!(!status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("in use by another webhook-sink process"), "{}", run.stderr());
    drop(held);
}

// Item 5: a dead letter that cannot be written is a loss, and the exit code says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritten_dead_letter_fails_the_exit_code() {
    let Some(disk) = Tmpfs::mount(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = disk.path().join("data");
    let receiver = Receiver::http().await;
    receiver.set_status(404);
    let source = free_addr();
    let config = write_config(dir.path(), &data, source, &sink("hook", &receiver.url("/h"), ""));
    let mut run = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    run.wait_stderr("webhook-sink started").await;
    disk.fill();
    for i in 0..200 {
        if run.stderr().contains("cannot write the dead letter") {
            break;
        }
        let (status, _) = request(source, "POST", "/events", &big_event(&format!("e{i}"), 200_000)).await;
        assert_eq!(status, 200);
        receiver.wait_for(i + 1, WAIT).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.wait_stderr("cannot write the dead letter").await;
    run.terminate();
    let status = run.wait_exit().await;
    assert!(!status.success(), "a lost event fails the exit code:\n{}", run.stderr());
}

// Item 5: one corrupt dead letter no longer breaks every `dead-letters` command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_dead_letter_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    DeadLetterStore::open(&store_path(&data)).unwrap().record((1..=3).map(letter).collect()).unwrap();
    corrupt_dead_letter(&data, 2);
    let receiver = Receiver::http().await;
    let config = write_config(dir.path(), &data, free_addr(), &sink("hook", &receiver.url("/h"), ""));
    let cfg = config.to_str().unwrap();

    let mut list = Proc::spawn(&["dead-letters", "list", "--config", cfg, "--json"]);
    assert!(list.wait_exit().await.success(), "{}", list.stderr());
    let seqs: Vec<u64> =
        list.stdout().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 3]);
    assert!(list.stderr().contains("dead letter 2 does not decode"), "{}", list.stderr());

    let mut purge = Proc::spawn(&["dead-letters", "purge", "--config", cfg, "--seq", "2"]);
    assert!(purge.wait_exit().await.success(), "{}", purge.stderr());
    assert!(purge.stdout().contains("purged 1 dead letter"), "{}", purge.stdout());
    let mut list = Proc::spawn(&["dead-letters", "list", "--config", cfg]);
    assert!(list.wait_exit().await.success(), "{}", list.stderr());
    assert!(!list.stderr().contains("does not decode"), "{}", list.stderr());
    assert!(list.stdout().contains("2 dead letters"), "{}", list.stdout());
}

// Item 7: `dead-letters list | head -1` ends quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_into_a_pipe_closed_early_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Far more than a pipe's buffer (64 KiB), so the writer meets the closed end.
    DeadLetterStore::open(&store_path(&data)).unwrap().record((1..=3000).map(letter).collect()).unwrap();
    let receiver = Receiver::http().await;
    let config = write_config(dir.path(), &data, free_addr(), &sink("hook", &receiver.url("/h"), ""));
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-sink"))
        .args(["dead-letters", "list", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("seq"), "{first}");
    // The reader is gone (dropped above), as after `head -1`.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("dead-letters list did not end");
        }
        tokio::time::sleep(POLL).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

// Item 4: with the default `when_full = "dead_letter"`, a disk buffer that cannot store a
// batch counts as full for it: the memory sink beside it keeps taking events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_buffer_does_not_stop_the_memory_sink_beside_it() {
    let Some(FullDisk { disk: _disk, dir: _dir, durable, memory, source, mut run, filler }) =
        FullDisk::start("dead_letter").await
    else {
        return;
    };

    // Big batches until the disk buffer cannot store one: that batch is still taken, by
    // the memory sink, and the answer says the disk sink dead-lettered its copies.
    let mut failed_id = None;
    for i in 0..200 {
        let id = format!("full-{i}");
        let (status, body) = request(source, "POST", "/events", &big_event(&id, 200_000)).await;
        assert_eq!(status, 200, "{body}\n{}", run.stderr());
        if body.contains("durable") {
            failed_id = Some(id);
            break;
        }
    }
    let failed_id = failed_id.unwrap_or_else(|| panic!("the full disk never failed a batch:\n{}", run.stderr()));
    wait_id(&memory, &failed_id).await;
    let (status, health) = request(source, "GET", "/health", "").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("degraded"), "{health}");
    // While the disk stays full, the memory sink goes on.
    let (status, body) = request(source, "POST", "/events", &event("during").to_string()).await;
    assert_eq!(status, 200, "{body}");
    wait_id(&memory, "during").await;

    // Room again: the disk sink takes events again and /health recovers.
    std::fs::remove_file(filler).unwrap();
    durable.set_status(200);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = request(source, "POST", "/events", &event("after").to_string()).await;
        assert_eq!(status, 200, "{body}");
        if !body.contains("durable") {
            break;
        }
        assert!(Instant::now() < deadline, "the disk buffer never recovered:\n{}", run.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_id(&durable, "after").await;
    let (status, health) = request(source, "GET", "/health", "").await;
    assert_eq!(status, 200, "{health}");
    run.terminate();
    let status = run.wait_exit().await;
    // The disk sink's copies of the failed batches could not be dead-lettered either (the
    // dead letters are on the same full disk): a loss, said in the log and the exit code.
    assert!(!status.success(), "a loss must fail the exit code:\n{}", run.stderr());
    assert!(run.stderr().contains("events lost"), "{}", run.stderr());
}
