//! The real binary and its disk buffer across a hard kill: `webhook-sink run` takes batches
//! on its `http_server` source while the endpoint (a fault-injecting receiver) is slow or
//! down, is killed with SIGKILL mid-stream, and is started again with the same config and
//! `data_dir`. Every event of every batch the source acknowledged (200) must arrive at
//! least once; a duplicate must carry the `webhook-id` of its first delivery.
//!
//! Every child process is killed when its guard drops; every wait is bounded.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::faulty::{Fault, Faulty, Hit};
use support::free_addr;
use support::peer::KillOnDrop;
use webhook_sink::dead_letters::store_path;
use webhook_sink::storage::dead_letters::{DeadLetter, DeadLetterStore};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_webhook-sink")
}

/// A running `webhook-sink run`, its log in a file; killed (and reaped) when dropped.
struct Proc {
    /// Killed and reaped when the `Proc` is dropped.
    child: KillOnDrop,
    log: PathBuf,
}

impl Proc {
    fn run(config: &Path, log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .env("WEBHOOK_SINK_LOG", "info")
            .spawn()
            .expect("start webhook-sink");
        Proc { child: KillOnDrop(child), log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill_9(&mut self) {
        self.child.0.kill().expect("kill -9");
        self.child.0.wait().expect("reap");
    }

    /// SIGTERM through `kill(1)` (`libc` is not a dependency).
    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.0.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "webhook-sink did not exit; log:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the source answers `GET /health`.
    async fn wait_ready(&mut self, source: SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("webhook-sink exited ({status}) at start; log:\n{}", self.log());
            }
            if get_health(source).await {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the source never answered; log:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn get_health(source: SocketAddr) -> bool {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::get(format!("http://{source}/health")).body(Full::new(Bytes::new())).unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request(request)).await,
        Ok(Ok(response)) if response.status() == 200
    )
}

/// POSTs a body; the status, or `None` when no answer came (refused, reset, killed).
async fn post(source: SocketAddr, body: String) -> Option<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{source}/")).body(Full::new(Bytes::from(body))).unwrap();
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.ok().flatten()
}

/// Event `n`: alerts of three events each, so per-alert order is in play too.
fn event(n: usize) -> Value {
    json!({"id": format!("alert-{}", n / 3), "eventType": "alert-created", "summary": format!("event {n}"),
           "priority": "HIGH", "n": n})
}

fn ndjson(events: impl IntoIterator<Item = Value>) -> String {
    events.into_iter().map(|e| format!("{e}\n")).collect()
}

fn n_of(hit: &Hit) -> Option<u64> {
    hit.json.as_ref().and_then(|j| j.get("n")).and_then(Value::as_u64)
}

/// A config file (and its `data_dir`) in `dir`: `http_server` on `source`, one webhook sink
/// `hook` to `url` with a disk buffer and retries that outlast an endpoint that is down.
fn write_config(dir: &Path, source: SocketAddr, url: &str) -> PathBuf {
    let text = format!(
        "data_dir = '{data}'\nshutdown_timeout_secs = 5\n\n\
         [sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n\
         [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n\
         request.concurrency = 4\nbuffer.type = \"disk\"\n\
         retry.attempts = 100000\nretry.max_elapsed_secs = 600\nretry.initial_backoff_secs = 0.01\nretry.max_backoff_secs = 0.1\n",
        data = dir.join("data").display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Each posted batch and the source's answer (`None`: no answer).
type Answers = Arc<Mutex<Vec<(usize, Option<u16>)>>>;

/// How the endpoint behaves during the first run.
#[derive(Clone, Copy, Debug)]
enum FirstRun {
    /// Every request takes 50 ms: a backlog builds up in the disk buffer.
    Slow,
    /// Connections are refused: everything stays in the disk buffer.
    Down,
}

const BATCHES: usize = 30;
const BATCH: usize = 10;
/// Acknowledged batches after which the first run is killed.
const KILL_AFTER_BATCHES: usize = 18;

/// What [`kill_and_restart`] leaves: the second run still going.
struct Recovered {
    rx: Faulty,
    /// Numbers of the events of every acknowledged batch.
    acked: BTreeSet<u64>,
    dir: tempfile::TempDir,
    source: SocketAddr,
    second_run: Proc,
}

/// Posts batches while the endpoint behaves as `first` says, kills the run with SIGKILL
/// mid-stream, starts it again with the endpoint healthy and waits (bounded) until every
/// acknowledged event has arrived and deliveries have stopped.
async fn kill_and_restart(first: FirstRun) -> Recovered {
    let dir = tempfile::tempdir().unwrap();
    let rx = Faulty::start().await;
    match first {
        FirstRun::Slow => rx.set_default(Fault::Delay(50)),
        FirstRun::Down => rx.down().await,
    }
    let source = free_addr();
    let config = write_config(dir.path(), source, &rx.url("/hook"));
    let log = dir.path().join("run.log");
    let mut first_run = Proc::run(&config, &log);
    first_run.wait_ready(source).await;

    // Post the batches one after another; record which ones the source acknowledged.
    let answers: Answers = Arc::default();
    let poster = tokio::spawn({
        let answers = answers.clone();
        async move {
            for b in 0..BATCHES {
                let body = ndjson((b * BATCH..(b + 1) * BATCH).map(event));
                let status = post(source, body).await;
                answers.lock().unwrap().push((b, status));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let acked = |answers: &[(usize, Option<u16>)]| answers.iter().filter(|(_, s)| *s == Some(200)).count();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let enough_posted = acked(&answers.lock().unwrap()) >= KILL_AFTER_BATCHES;
        let delivering = match first {
            FirstRun::Slow => !rx.delivered().is_empty(),
            FirstRun::Down => true,
        };
        if enough_posted && delivering {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first run took too few batches; log:\n{}",
            first_run.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first_run.kill_9();
    let delivered_before = rx.delivered().len();
    tokio::time::timeout(WAIT, poster).await.expect("the poster ends").unwrap();
    let answers = answers.lock().unwrap().clone();
    let acked_batches: Vec<usize> = answers.iter().filter(|(_, s)| *s == Some(200)).map(|(b, _)| *b).collect();
    assert!(acked_batches.len() >= KILL_AFTER_BATCHES);
    assert!(acked_batches.len() < BATCHES, "the kill came mid-stream: {answers:?}");
    for (b, status) in &answers {
        assert!(matches!(status, Some(200) | None), "batch {b}: answered {status:?}, expected 200 or nothing");
    }
    eprintln!(
        "{first:?}: {} of {BATCHES} batches acknowledged before kill -9, {delivered_before} events delivered by then",
        acked_batches.len()
    );

    // Start again, same config and data_dir, the endpoint healthy.
    rx.set_default(Fault::Ok);
    rx.up().await;
    let mut second_run = Proc::run(&config, &log);
    second_run.wait_ready(source).await;
    let acked: BTreeSet<u64> =
        acked_batches.iter().flat_map(|b| (b * BATCH..(b + 1) * BATCH).map(|n| n as u64)).collect();
    rx.wait_until(WAIT, |hits| {
        let got: BTreeSet<u64> = hits.iter().filter(|h| h.delivered()).filter_map(n_of).collect();
        acked.is_subset(&got)
    })
    .await;
    // Then until deliveries stop growing.
    rx.wait_quiet(Duration::from_millis(500), WAIT).await;
    Recovered { rx, acked, dir, source, second_run }
}

/// The checks shared by the scenarios; returns the number of duplicate deliveries.
fn check_at_least_once(rx: &Faulty, acked: &BTreeSet<u64>, log: &str) -> usize {
    let hits = rx.hits();
    let mut deliveries: BTreeMap<u64, Vec<&Hit>> = BTreeMap::new();
    for hit in hits.iter().filter(|h| h.delivered()) {
        deliveries.entry(n_of(hit).expect("bodies carry n")).or_default().push(hit);
    }
    let missing: Vec<&u64> = acked.iter().filter(|n| !deliveries.contains_key(n)).collect();
    assert!(missing.is_empty(), "acknowledged events never delivered: {missing:?}\nlog:\n{log}");
    // Every attempt and every delivery of one event carries one webhook-id, its own.
    let mut id_of: BTreeMap<u64, String> = BTreeMap::new();
    let mut n_of_id: BTreeMap<String, u64> = BTreeMap::new();
    for hit in &hits {
        let (n, id) = (n_of(hit).unwrap(), hit.webhook_id.clone().expect("a webhook-id"));
        let first = id_of.entry(n).or_insert_with(|| id.clone());
        assert_eq!(first, &id, "event {n}: a duplicate carries the webhook-id of its first delivery");
        assert_eq!(n_of_id.entry(id.clone()).or_insert(n), &n, "webhook-id {id} carried by two events");
    }
    // Only events that were sent arrive.
    let sent = (BATCHES * BATCH) as u64;
    assert!(deliveries.keys().all(|n| *n < sent));
    deliveries.values().map(|d| d.len() - 1).sum()
}

async fn stop(mut proc: Proc) -> ExitStatus {
    proc.terminate();
    proc.wait_exit().await
}

fn dead_letters(data_dir: &Path) -> Vec<DeadLetter> {
    let path = store_path(data_dir);
    if !path.exists() {
        return Vec::new();
    }
    DeadLetterStore::open(&path).unwrap().list(None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_with_a_slow_endpoint_loses_no_acknowledged_event() {
    let Recovered { rx, acked, dir, source, second_run } = kill_and_restart(FirstRun::Slow).await;
    let log = second_run.log();
    let duplicates = check_at_least_once(&rx, &acked, &log);
    eprintln!("slow endpoint: {} acknowledged events, {duplicates} delivered twice or more", acked.len());

    // Events the endpoint refuses for good end in the dead letters, which the CLI lists.
    rx.script_key("gone-1", [], Some(Fault::Status(404)));
    rx.script_key("gone-2", [], Some(Fault::Status(410)));
    let gone = ndjson([
        json!({"id": "gone-1", "eventType": "alert-created", "n": 100_001}),
        json!({"id": "gone-2", "eventType": "alert-created", "n": 100_002}),
    ]);
    assert_eq!(post(source, gone).await, Some(200));
    rx.wait_until(WAIT, |hits| {
        hits.iter().filter(|h| h.key.as_deref().is_some_and(|k| k.starts_with("gone-"))).count() >= 2
    })
    .await;
    let status = stop(second_run).await;
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert!(status.success(), "the second run ends cleanly once everything is handled: {status}; log:\n{log}");
    let letters = dead_letters(&dir.path().join("data"));
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let statuses: BTreeSet<Option<u16>> = letters.iter().map(|l| l.last_status).collect();
    assert_eq!(statuses, BTreeSet::from([Some(404), Some(410)]));

    let help = Command::new(bin()).args(["dead-letters", "--help"]).output().unwrap();
    if !help.status.success() {
        eprintln!("`webhook-sink dead-letters` is not available: its check is skipped");
        return;
    }
    let config = dir.path().join("pipeline.toml");
    let out = Command::new(bin())
        .args(["dead-letters", "list", "--json", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dead-letters list failed: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let listed_ids: BTreeSet<&str> = listed.iter().filter_map(|l| l["webhook_id"].as_str()).collect();
    let stored_ids: BTreeSet<&str> = letters.iter().map(|l| l.webhook_id.as_str()).collect();
    assert_eq!(listed_ids, stored_ids, "`dead-letters list` shows the stored dead letters:\n{stdout}");
    let out =
        Command::new(bin()).args(["dead-letters", "list", "--config", config.to_str().unwrap()]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stored_ids.iter().all(|id| table.contains(id)) && table.contains("2 dead letters"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_the_endpoint_is_down_loses_no_acknowledged_event() {
    let Recovered { rx, acked, second_run, .. } = kill_and_restart(FirstRun::Down).await;
    let duplicates = check_at_least_once(&rx, &acked, &second_run.log());
    eprintln!("endpoint down: {} acknowledged events, {duplicates} delivered twice or more", acked.len());
    assert_eq!(stop(second_run).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_stop_then_restart_delivers_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Faulty::start().await;
    let source = free_addr();
    let config = write_config(dir.path(), source, &rx.url("/hook"));
    let log = dir.path().join("run.log");
    let mut first_run = Proc::run(&config, &log);
    first_run.wait_ready(source).await;
    for b in 0..5 {
        assert_eq!(post(source, ndjson((b * BATCH..(b + 1) * BATCH).map(event))).await, Some(200));
    }
    rx.wait_delivered(5 * BATCH, WAIT).await;
    // SIGTERM once everything is delivered: the run ends cleanly, its disk buffer empty.
    assert!(stop(first_run).await.success(), "log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let mut second_run = Proc::run(&config, &log);
    second_run.wait_ready(source).await;
    let hits = rx.wait_quiet(Duration::from_millis(1000), WAIT).await;
    let duplicates: Vec<u64> = {
        let mut seen = BTreeSet::new();
        hits.iter().filter(|h| h.delivered()).filter_map(n_of).filter(|n| !seen.insert(*n)).collect()
    };
    assert!(
        duplicates.is_empty(),
        "events delivered before a clean shutdown are delivered again after the restart: {duplicates:?}\nlog:\n{}",
        second_run.log()
    );
    assert_eq!(hits.len(), 5 * BATCH);
    assert!(stop(second_run).await.success());
}
