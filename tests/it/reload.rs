//! Reloading a running pipeline: under steady load nothing is lost and nothing is sent
//! twice; a changed source keeps its socket; what cannot change is refused whole; through
//! the binary, SIGHUP and `--watch` reload a valid file and leave an invalid one unapplied.

use crate::support;
use support::binary::Binary;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{free_addr, Receiver};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use webhook_sink::config::{load_str, PipelineConfig};
use webhook_sink::topology::{Pipeline, RunReport};

const WAIT: Duration = Duration::from_secs(20);

fn config(data: &Path, source: SocketAddr, rest: &str) -> PipelineConfig {
    let text = format!(
        "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n{rest}",
        data.display()
    );
    load_str(Path::new("reload.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn sink(name: &str, url: &str, extra: &str) -> String {
    format!("\n[sinks.{name}]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n{extra}\n")
}

struct Running {
    reloads: mpsc::Sender<PipelineConfig>,
    reloaded: Arc<Notify>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<RunReport>,
}

async fn start(config: &PipelineConfig) -> Running {
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(config, shutdown.clone()).await.unwrap();
    let (reloads, rx) = mpsc::channel(1);
    let reloaded = Arc::new(Notify::new());
    let notify = reloaded.clone();
    let task = tokio::spawn(pipeline.run_reloading(rx, move |_| notify.notify_one()));
    Running { reloads, reloaded, shutdown, task }
}

impl Running {
    /// Applies `config` and waits until the pipeline says it was applied.
    async fn reload(&self, config: PipelineConfig) {
        self.reloads.send(config).await.unwrap();
        tokio::time::timeout(WAIT, self.reloaded.notified()).await.expect("the reload is applied");
    }

    async fn stop(self) -> RunReport {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap()
    }
}

/// POSTs `body`, as a sender would: a connection that the replaced source had just
/// accepted when it stopped is closed before its request is read (nothing of it taken),
/// and the sender sends it again; once, here.
pub(crate) async fn post(url: &str, body: String) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send = || {
        let request = http::Request::post(url).body(Full::new(Bytes::from(body.clone()))).unwrap();
        tokio::time::timeout(WAIT, client.request(request))
    };
    let response = match send().await.unwrap() {
        Ok(response) => response,
        Err(error) if error.is_connect() || format!("{error:?}").contains("IncompleteMessage") => {
            send().await.unwrap().expect("the source answers")
        }
        Err(error) => panic!("the source answers: {error:?}"),
    };
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// `n` incident events (ids `from`..), NDJSON, spread over 7 alerts.
pub(crate) fn batch(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"eventType\":\"alert-created\",\"id\":\"{i}\",\"alertKey\":\"alert-{}\"}}\n", i % 7))
        .collect()
}

/// Ids received on `path`, with how often each arrived and the version in its body.
fn received(receiver: &Receiver, path: &str) -> HashMap<usize, Vec<u64>> {
    let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
    for request in receiver.requests().into_iter().filter(|r| r.path_and_query == path) {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let id = body["id"].as_str().unwrap().parse().unwrap();
        seen.entry(id).or_default().push(body["v"].as_u64().unwrap_or(0));
    }
    seen
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_under_steady_load_loses_nothing_and_sends_nothing_twice() {
    let (one, two) = (Receiver::http().await, Receiver::http().await);
    let data = tempfile::tempdir().unwrap();
    let source = free_addr();
    let v = |n: u64| format!("template = '{{\"id\": \"{{{{ event.id }}}}\", \"v\": {n}}}'");
    let before = config(
        data.path(),
        source,
        &format!("{}{}", sink("a", &one.url("/a"), &v(1)), sink("c", &one.url("/c"), &v(1))),
    );
    // a: changed (template), c: removed, b: added; the source is unchanged.
    let after = config(
        data.path(),
        source,
        &format!("{}{}", sink("a", &one.url("/a"), &v(2)), sink("b", &two.url("/b"), &v(2))),
    );
    let running = start(&before).await;

    // A steady sender: 10 events a batch, every 5 ms, for the whole test.
    let stop_sending = CancellationToken::new();
    let sender = {
        let stop = stop_sending.clone();
        let url = format!("http://{source}/");
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.is_cancelled() && sent < 20_000 {
                assert_eq!(post(&url, batch(sent, 10)).await, 200, "a batch was refused");
                sent += 10;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    wait_until(|| received(&one, "/a").len() >= 200).await;
    running.reload(after).await;
    let sent_when_reloaded = received(&one, "/a").keys().max().copied().unwrap_or(0);
    wait_until(|| received(&two, "/b").len() >= 200).await;
    stop_sending.cancel();
    let sent = sender.await.unwrap();
    wait_until(|| received(&one, "/a").len() >= sent).await;
    let report = running.stop().await;
    assert_eq!(report.abandoned, 0);

    let a = received(&one, "/a");
    assert_eq!(a.len(), sent, "every event reached the changed sink");
    let twice: Vec<_> = a.iter().filter(|(_, got)| got.len() > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert!(a.values().any(|got| got == &[1]) && a.values().any(|got| got == &[2]), "both versions delivered");
    // Each alert's events went out in order across the hand-over: an alert's v2 events
    // all came after its v1 events.
    let order: Vec<(usize, u64)> = one
        .requests()
        .iter()
        .filter(|r| r.path_and_query == "/a")
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (body["id"].as_str().unwrap().parse::<usize>().unwrap(), body["v"].as_u64().unwrap())
        })
        .collect();
    let first_v2 = order.iter().position(|(_, v)| *v == 2).unwrap();
    assert!(order[first_v2..].iter().all(|(_, v)| *v == 2), "no v1 delivery after the new sink started");
    // The removed sink finished what it had and got nothing twice; the added one got every
    // event sent after the reload, once.
    let c = received(&one, "/c");
    assert!(c.values().all(|got| got.len() == 1), "removed sink sent an event twice");
    let b = received(&two, "/b");
    assert!(b.values().all(|got| got.len() == 1), "added sink sent an event twice");
    let missing: Vec<usize> = ((sent_when_reloaded + 100)..sent).filter(|id| !b.contains_key(id)).collect();
    assert!(missing.is_empty(), "the added sink missed events sent after the reload: {missing:?}");
}

#[tokio::test]
async fn a_changed_source_keeps_its_socket_and_changes_its_path() {
    let receiver = Receiver::http().await;
    let data = tempfile::tempdir().unwrap();
    let source = free_addr();
    let sinks = sink("a", &receiver.url("/a"), "template = '{\"id\": \"{{ event.id }}\"}'");
    let before = config(data.path(), source, &sinks);
    let after = {
        let text = format!(
            "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\npath = \"/v2\"\n{sinks}",
            data.path().display()
        );
        load_str(Path::new("reload.toml"), &text, &|_| None).unwrap()
    };
    let running = start(&before).await;
    // Posting the whole time: no request may be refused or fail while the source changes.
    let stop_sending = CancellationToken::new();
    let sender = {
        let stop = stop_sending.clone();
        tokio::spawn(async move {
            let (mut ok, mut statuses) = (0, Vec::new());
            let mut i = 0;
            while !stop.is_cancelled() && i < 5_000 {
                for path in ["/", "/v2"] {
                    let status = post(&format!("http://{source}{path}"), batch(i, 1)).await;
                    statuses.push(status);
                    ok += usize::from(status == 200);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, statuses)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.reload(after).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_sending.cancel();
    let (ok, statuses) = sender.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 404), "only 200 or 404 (wrong path): {statuses:?}");
    // Before the reload `/` took events and `/v2` was 404; after it, the other way round.
    let first = statuses.iter().position(|s| *s == 200).unwrap();
    let last = statuses.iter().rposition(|s| *s == 200).unwrap();
    assert_eq!(first % 2, 0, "`/` took events first");
    assert_eq!(last % 2, 1, "`/v2` takes events after the reload");
    wait_until(|| receiver.requests().len() >= ok).await;
    running.stop().await;
    assert_eq!(receiver.requests().len(), ok, "every event taken was delivered once");
}

#[tokio::test]
async fn a_reload_that_cannot_apply_changes_nothing() {
    let receiver = Receiver::http().await;
    let data = tempfile::tempdir().unwrap();
    let source = free_addr();
    let before = config(data.path(), source, &sink("a", &receiver.url("/a"), ""));
    let disk = config(data.path(), source, &sink("a", &receiver.url("/other"), "buffer.type = \"disk\""));
    let running = start(&before).await;
    running.reloads.send(disk).await.unwrap();
    // Refused: the notification never comes, and events still go to the old URL.
    assert!(tokio::time::timeout(Duration::from_millis(500), running.reloaded.notified()).await.is_err());
    assert_eq!(post(&format!("http://{source}/"), batch(0, 3)).await, 200);
    receiver.wait_for(3, WAIT).await;
    running.stop().await;
    assert!(receiver.requests().iter().all(|r| r.path_and_query == "/a"));
}

#[tokio::test]
async fn the_binary_reloads_on_sighup_and_on_change_and_keeps_running_on_a_bad_file() {
    let receiver = Receiver::http().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let source = free_addr();
    let text = |path: &str| {
        format!(
            "[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n{}",
            sink("a", &receiver.url(path), "template = '{\"id\": \"{{ event.id }}\"}'")
        )
    };
    std::fs::write(&file, text("/one")).unwrap();
    let binary = Binary::start(&["run", "--watch"], &file);
    binary.wait_log_times("webhook-sink started", 1).await;

    // An invalid file: refused, the pipeline goes on unchanged.
    std::fs::write(&file, "[sinks.a]\ntype = \"webhok\"\n").unwrap();
    binary.wait_log_times("reload refused: the file is not valid", 1).await;
    assert!(binary.log().contains("unknown component type `webhok`"), "{}", binary.log());
    assert_eq!(post(&format!("http://{source}/"), batch(0, 2)).await, 200);
    receiver.wait_for(2, WAIT).await;

    // A valid change: applied (`--watch`).
    std::fs::write(&file, text("/two")).unwrap();
    binary.wait_log_times("reloaded", 1).await;
    assert_eq!(post(&format!("http://{source}/"), batch(2, 2)).await, 200);
    receiver.wait_for(4, WAIT).await;

    // SIGHUP reloads (and no longer ends the process).
    std::fs::write(&file, text("/three")).unwrap();
    binary.wait_log_times("reloaded", 2).await;
    binary.signal("HUP");
    binary.wait_log_times("SIGHUP: reloading", 1).await;
    // The file did not change, so the SIGHUP reload changes nothing; the process lives on.
    assert_eq!(post(&format!("http://{source}/"), batch(4, 2)).await, 200);
    receiver.wait_for(6, WAIT).await;
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path_and_query.clone()).collect();
    assert_eq!(paths, ["/one", "/one", "/two", "/two", "/three", "/three"]);
}
