//! De-duplication (`dedupe.window_secs`), end to end: a pipeline with an `http_server`
//! source that acknowledges (its answer comes once every sink is done with the events), a
//! real loopback receiver, and `/metrics`.
//!
//! Equal events within the window go out once and are counted; after the window an equal
//! one goes out again; a different body, event type or alert is never dropped; a failed
//! delivery drops nothing; a sink without `dedupe` (or with `window_secs = 0`) sends all.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::{free_addr, Receiver};
use tokio_util::sync::CancellationToken;
use webhook_sink::api::{self, ApiState};
use webhook_sink::config::load_str;
use webhook_sink::topology::Pipeline;

const WAIT: Duration = Duration::from_secs(20);

/// A running pipeline: the `alerts` source (acknowledging), the given sinks, the API.
struct Running {
    _data: tempfile::TempDir,
    source: SocketAddr,
    api: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a pipeline whose sinks are `sinks` (TOML tables; `{url}` is the receiver's URL).
async fn start(receiver: &Receiver, sinks: &str) -> Running {
    let (source, api) = (free_addr(), free_addr());
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = '{}'\n[api]\naddress = \"{api}\"\n\n\
         [sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\nacknowledgements = true\n\n{}",
        data.path().display(),
        sinks.replace("{url}", &format!("http://{}", receiver.addr()))
    );
    let config = load_str(Path::new("dedupe.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let state = Arc::new(ApiState::default());
    let shutdown = CancellationToken::new();
    let api_task = api::serve(config.api.as_ref().unwrap().address, state.clone(), shutdown.clone()).await.unwrap();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
    state.set_pipeline(pipeline.view());
    let task = tokio::spawn(async move {
        pipeline.run().await;
        let _ = api_task.await;
    });
    Running { _data: data, source, api, shutdown, task }
}

impl Running {
    /// Posts `events` (NDJSON) to the source; its status once every sink is done with them.
    async fn post(&self, events: &[String]) -> u16 {
        let body = events.iter().map(|e| format!("{e}\n")).collect::<String>();
        request("POST", &format!("http://{}/", self.source), body).await.0
    }

    /// The sample `series` (name and labels exactly as written) on `/metrics`.
    async fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = request("GET", &format!("http://{}/metrics", self.api), String::new()).await;
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (at most [`WAIT`]) until `series` reads `value`, and asserts that it does.
    async fn expect_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.metric(series).await;
            if got == Some(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{series}: expected {value}, got {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the pipeline stops").expect("pipeline task");
    }
}

/// One HTTP/1.1 exchange: (status, body).
async fn request(method: &str, url: &str, body: String) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.expect("answered in time").unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An incident event.
fn event(event_type: &str, alert_key: &str, summary: &str) -> String {
    serde_json::json!({"eventType": event_type, "alertKey": alert_key, "summary": summary}).to_string()
}

/// The bodies the receiver got on `path`, as JSON, sorted (alerts go out concurrently).
fn bodies(receiver: &Receiver, path: &str) -> Vec<Value> {
    let requests = receiver.requests().into_iter().filter(|r| r.path_and_query == path);
    sorted(requests.map(|r| serde_json::from_slice(&r.body).expect("a JSON body")).collect())
}

/// JSON texts as values, sorted as [`bodies`] sorts them.
fn values(texts: &[&str]) -> Vec<Value> {
    sorted(texts.iter().map(|text| serde_json::from_str(text).unwrap()).collect())
}

/// Sorted by the fields the tests set (whatever order a body writes them in).
fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(|v| ["eventType", "alertKey", "summary", "text"].map(|field| v[field].to_string()));
    values
}

#[tokio::test]
async fn equal_events_within_the_window_go_out_once_and_the_rest_are_counted() {
    let receiver = Receiver::http().await;
    // `hourly`: the standard payload, a disk buffer. `summary_only`: a body with the
    // summary alone, so events of other types or alerts have equal bodies and only the
    // alert key and event type tell them apart. `plain` has no `dedupe` table; `zero` has
    // `window_secs = 0`: both are off.
    let running = start(
        &receiver,
        "[sinks.hourly]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}/hourly\"\n\
         buffer.type = \"disk\"\ndedupe.window_secs = 3600\n\n\
         [sinks.summary_only]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}/summary_only\"\n\
         template = '{\"text\": \"{{alertSummary}}\"}'\ndedupe = { window_secs = 3600, max_entries = 10 }\n\n\
         [sinks.plain]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}/plain\"\n\n\
         [sinks.zero]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}/zero\"\ndedupe.window_secs = 0\n",
    )
    .await;

    let disk_full = event("alert-created", "k1", "disk full");
    // Three equal events in one body (one alert: handled one after another), then one
    // more in a request of its own.
    assert_eq!(running.post(&[disk_full.clone(), disk_full.clone(), disk_full.clone()]).await, 200);
    assert_eq!(running.post(std::slice::from_ref(&disk_full)).await, 200);
    // Another body, another event type, another alert: none is a duplicate. Then the first
    // one again, still one.
    let fuller = event("alert-created", "k1", "disk fuller");
    let resolved = event("alert-resolved", "k1", "disk full");
    let other_alert = event("alert-created", "k2", "disk full");
    let last = [fuller.clone(), resolved.clone(), other_alert.clone(), disk_full.clone()];
    assert_eq!(running.post(&last).await, 200, "deduplicated events are acknowledged as done");

    assert_eq!(bodies(&receiver, "/hourly"), values(&[&disk_full, &fuller, &resolved, &other_alert]));
    let texts = [
        r#"{"text": "disk full"}"#,
        r#"{"text": "disk fuller"}"#,
        r#"{"text": "disk full"}"#,
        r#"{"text": "disk full"}"#,
    ];
    assert_eq!(bodies(&receiver, "/summary_only"), values(&texts), "other types and alerts with an equal body go out");
    for off in ["/plain", "/zero"] {
        assert_eq!(bodies(&receiver, off).len(), 8, "{off}: every event, de-duplication off");
    }

    for (sink, delivered, deduplicated) in
        [("hourly", 4.0, 4.0), ("summary_only", 4.0, 4.0), ("plain", 8.0, 0.0), ("zero", 8.0, 0.0)]
    {
        let labels = format!("{{sink=\"{sink}\"}}");
        running.expect_metric(&format!("webhook_sink_events_deduplicated_total{labels}"), deduplicated).await;
        running.expect_metric(&format!("webhook_sink_events_delivered_total{labels}"), delivered).await;
        running.expect_metric(&format!("webhook_sink_events_received_total{labels}"), 8.0).await;
    }
    // The disk buffer let go of the dropped events as of the delivered ones.
    running.expect_metric("webhook_sink_buffer_events{sink=\"hourly\"}", 0.0).await;
    running.expect_metric("webhook_sink_events_dead_lettered_total{sink=\"hourly\",reason=\"status\"}", 0.0).await;
    running.stop().await;
}

#[tokio::test]
async fn after_the_window_an_equal_event_goes_out_again() {
    let receiver = Receiver::http().await;
    let window = Duration::from_secs(2);
    let running = start(
        &receiver,
        &format!(
            "[sinks.short]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{{url}}/short\"\n\
             dedupe.window_secs = {}\n",
            window.as_secs()
        ),
    )
    .await;
    let disk_full = event("alert-created", "k1", "disk full");
    assert_eq!(running.post(&[disk_full.clone(), disk_full.clone()]).await, 200);
    assert_eq!(bodies(&receiver, "/short").len(), 1, "the second was within the window");
    running.expect_metric("webhook_sink_events_deduplicated_total{sink=\"short\"}", 1.0).await;

    // The answer came after the delivery: the window has surely ended after it has passed
    // once more.
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    assert_eq!(running.post(std::slice::from_ref(&disk_full)).await, 200);
    assert_eq!(bodies(&receiver, "/short"), values(&[&disk_full, &disk_full]), "delivered again");
    running.expect_metric("webhook_sink_events_deduplicated_total{sink=\"short\"}", 1.0).await;
    running.expect_metric("webhook_sink_events_delivered_total{sink=\"short\"}", 2.0).await;
    running.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_is_no_reason_to_drop_the_next_equal_event() {
    let receiver = Receiver::http().await;
    let running = start(
        &receiver,
        "[sinks.hourly]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}/hourly\"\ndedupe.window_secs = 3600\n",
    )
    .await;
    let disk_full = event("alert-created", "k1", "disk full");
    // Refused for good (400 is not retried): dead-lettered, not remembered.
    receiver.set_status(400);
    assert_eq!(running.post(std::slice::from_ref(&disk_full)).await, 400);
    running.expect_metric("webhook_sink_events_dead_lettered_total{sink=\"hourly\",reason=\"status\"}", 1.0).await;
    receiver.set_status(200);
    assert_eq!(running.post(std::slice::from_ref(&disk_full)).await, 200);
    running.expect_metric("webhook_sink_events_delivered_total{sink=\"hourly\"}", 1.0).await;
    running.expect_metric("webhook_sink_events_deduplicated_total{sink=\"hourly\"}", 0.0).await;
    // Now it was delivered: the next equal one is dropped.
    assert_eq!(running.post(std::slice::from_ref(&disk_full)).await, 200);
    running.expect_metric("webhook_sink_events_deduplicated_total{sink=\"hourly\"}", 1.0).await;
    assert_eq!(bodies(&receiver, "/hourly").len(), 2, "the refused attempt and the delivery");
    running.stop().await;
}

#[test]
fn bad_dedupe_settings_are_refused_naming_the_key() {
    let load = |dedupe: &str| {
        let text = format!(
            "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:8687\"\n\n\
             [sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"https://h.example/x\"\n{dedupe}\n"
        );
        load_str(Path::new("dedupe.toml"), &text, &|_| None).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(load("dedupe.window_secs = 300"), Ok(()));
    assert_eq!(load("dedupe = { window_secs = 0.5, max_entries = 1 }"), Ok(()));
    for (dedupe, key, says) in [
        ("dedupe.window_secs = -1", "sinks.chat.dedupe.window_secs", "0 (off) or more"),
        ("dedupe.window_secs = 1e9", "sinks.chat.dedupe.window_secs", "at most 604800"),
        ("dedupe.window_secs = \"1h\"", "sinks.chat.dedupe.window_secs", ""),
        ("dedupe = { window_secs = 60, max_entries = 0 }", "sinks.chat.dedupe.max_entries", "at least 1"),
        ("dedupe = { window = 60 }", "sinks.chat.dedupe", "window"),
    ] {
        let error = load(dedupe).expect_err(dedupe);
        assert!(error.contains("dedupe.toml"), "{dedupe}: names the file: {error}");
        assert!(error.contains(key) && error.contains(says), "{dedupe}: names `{key}` and says `{says}`: {error}");
    }
}
