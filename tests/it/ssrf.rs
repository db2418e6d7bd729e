//! The SSRF guard (`deny_private_networks`, `allow_networks`) in a real pipeline: a
//! refused delivery is dead-lettered with the reason and nothing reaches the receiver;
//! a name resolving to loopback is refused too; `allow_networks` lets it through. Plus
//! the config errors and warnings through `webhook-sink validate`.
//!
//! Only loopback is connected to; the classifier's other classes are unit tests
//! (src/sinks/webhook/dial.rs), as data. `proxy.enabled = false` keeps a proxy of the
//! machine running the tests out of the way.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::dead_letters::store_path;
use webhook_sink::stats::SinkStats;
use webhook_sink::storage::dead_letters::{DeadLetter, DeadLetterStore};
use webhook_sink::topology::{Pipeline, RunReport};

use support::{free_addr, Dir, Receiver};

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    data: tempfile::TempDir,
    source: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
    stats: Arc<SinkStats>,
}

/// A pipeline with an `http_server` source and one webhook sink `hook` to `url` (one
/// attempt, healthcheck off, no proxy) with `extra` settings.
async fn start(url: &str, extra: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    let source = free_addr();
    let text = format!(
        "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n\
         [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n\
         retry.attempts = 1\nproxy.enabled = false\n{extra}\n",
        data.path().display()
    );
    let config = load_str(Path::new("ssrf.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let stats = pipeline.stats().into_iter().find(|(name, _)| name == "hook").expect("sink hook").1;
    let task = tokio::spawn(pipeline.run());
    Running { data, source, shutdown, task, stats }
}

impl Running {
    /// Posts one event and waits (bounded) until the sink is done with it; returns the
    /// dead letters after stopping.
    async fn one_event(self) -> (Arc<SinkStats>, Vec<DeadLetter>) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let event = r#"{"id":"ssrf-1","eventType":"alert-created","summary":"s"}"#;
        let request =
            http::Request::post(format!("http://{}/", self.source)).body(Full::new(Bytes::from(event))).unwrap();
        let answer = tokio::time::timeout(WAIT, client.request(request)).await.expect("the source answers").unwrap();
        assert_eq!(answer.status(), 200);
        let deadline = Instant::now() + WAIT;
        while SinkStats::get(&self.stats.delivered) + SinkStats::get(&self.stats.dead_lettered) < 1 {
            assert!(Instant::now() < deadline, "the event was neither delivered nor dead-lettered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the pipeline stops").expect("pipeline task");
        let path = store_path(self.data.path());
        let letters =
            if path.exists() { DeadLetterStore::open(&path).unwrap().list(None).unwrap() } else { Vec::new() };
        (self.stats, letters)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_address_is_refused_and_dead_lettered_with_the_reason() {
    let rx = Receiver::http().await;
    let (stats, letters) = start(&rx.url("/hook"), "deny_private_networks = true").await.one_event().await;
    assert_eq!(SinkStats::get(&stats.dead_lettered), 1);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].reason.contains("refused 127.0.0.1 (loopback); allow it with allow_networks"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].last_status, None);
    assert_eq!(rx.connections(), 0, "nothing reached the receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_too() {
    let rx = Receiver::http().await;
    let url = format!("http://localhost:{}/hook", rx.addr().port());
    let (_, letters) = start(&url, "deny_private_networks = true").await.one_event().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = &letters[0].reason;
    assert!(reason.contains("(loopback), an address of localhost") && reason.contains("allow_networks"), "{reason}");
    assert_eq!(rx.connections(), 0, "nothing reached the receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_networks_lets_an_internal_receiver_through() {
    let rx = Receiver::http().await;
    let url = format!("http://localhost:{}/hook", rx.addr().port());
    let extra = "deny_private_networks = true\nallow_networks = [\"127.0.0.0/8\", \"::1/128\"]";
    let (stats, letters) = start(&url, extra).await.one_event().await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(SinkStats::get(&stats.delivered), 1);
    assert_eq!(rx.wait_for(1, WAIT).await.len(), 1);
}

#[test]
fn validate_names_bad_networks_and_warns_about_ineffective_ones() {
    let dir = Dir::new();
    let sink = |extra: &str| {
        format!(
            "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:1\"\n\n[sinks.hook]\ntype = \"webhook\"\n\
             inputs = [\"alerts\"]\nurl = \"http://127.0.0.1:1/\"\nproxy.enabled = false\n{extra}\n"
        )
    };
    let validate = |name: &str, text: String| {
        let path = dir.write(name, &text);
        let out = dir.0.path().join(format!("{name}.out"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
        command
            .args(["validate", "--config", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&out).unwrap())
            .env_remove("WEBHOOK_SINK_LOG");
        let mut child = support::peer::KillOnDrop::spawn(&mut command);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "webhook-sink validate did not finish in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.success(), std::fs::read_to_string(&out).unwrap_or_default())
    };
    let (ok, output) =
        validate("bad.toml", sink("deny_private_networks = true\nallow_networks = [\"10.0.0.0/8\", \"intranet\"]"));
    assert!(!ok, "{output}");
    assert!(output.contains("sinks.hook.allow_networks[1]") && output.contains("`intranet`"), "{output}");
    assert!(!output.contains("allow_networks[0]"), "{output}");

    let (ok, output) = validate("warn.toml", sink("allow_networks = [\"10.0.0.0/8\"]"));
    assert!(ok, "{output}");
    assert!(output.contains("warning") && output.contains("sinks.hook.allow_networks"), "{output}");
    assert!(output.contains("deny_private_networks = true"), "{output}");
}
