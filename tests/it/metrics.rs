//! The operator's API: `/metrics`, `/health` and `/ready` served while a pipeline runs,
//! scraped by a real Prometheus (Debian package `prometheus`), the example alerting rules
//! checked by `promtool`, and JSON log lines.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::peer::{free_port, require, KillOnDrop};
use support::{free_addr, Receiver};
use tokio_util::sync::CancellationToken;
use webhook_sink::api::{self, ApiState};
use webhook_sink::config::load_str;
use webhook_sink::topology::Pipeline;

const WAIT: Duration = Duration::from_secs(20);

/// A running pipeline with its API; the receiver's URL carries a password that must not
/// reach the metrics.
struct Running {
    _data: tempfile::TempDir,
    source: SocketAddr,
    api: SocketAddr,
    receiver: Receiver,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let receiver = Receiver::http().await;
    let (source, api) = (free_addr(), free_addr());
    let data = tempfile::tempdir().unwrap();
    let url = receiver.url("/hook").replace("http://", "http://user:MetricsSecret42@");
    let text = format!(
        "data_dir = '{}'\n[api]\naddress = \"{api}\"\n\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n\
         [sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n\n\
         [sinks.resolved_only]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\ntriggers = [\"alert-resolved\"]\n",
        data.path().display()
    );
    let config = load_str(Path::new("metrics.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let state = Arc::new(ApiState::default());
    let shutdown = CancellationToken::new();
    let api_task = api::serve(config.api.as_ref().unwrap().address, state.clone(), shutdown.clone()).await.unwrap();
    assert!(!state.is_ready(), "not ready before the pipeline is built");
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
    state.set_pipeline(pipeline.view());
    let task = tokio::spawn(async move {
        pipeline.run().await;
        let _ = api_task.await;
    });
    Running { _data: data, source, api, receiver, shutdown, task }
}

async fn request(method: &str, url: &str, body: &str) -> (u16, String, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request =
        http::Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), content_type)
}

fn events(n: usize) -> String {
    (0..n).map(|i| format!("{{\"eventType\":\"alert-created\",\"id\":\"{i}\",\"alertKey\":\"k{i}\"}}\n")).collect()
}

/// The value of the sample `name{labels}` in a metrics text (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_api_serves_metrics_health_and_readiness() {
    let running = start().await;
    let (status, body, _) = request("POST", &format!("http://{}/", running.source), &events(5)).await;
    assert_eq!(status, 200, "{body}");
    running.receiver.wait_for(5, WAIT).await;
    // A bad body is answered 400 and counted as such.
    let (status, _, _) = request("POST", &format!("http://{}/", running.source), "not json").await;
    assert_eq!(status, 400);

    let api = running.api;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (status, text, content_type) = request("GET", &format!("http://{api}/metrics"), "").await;
        assert_eq!(status, 200);
        assert!(content_type.unwrap().starts_with("application/openmetrics-text"));
        if sample(&text, "webhook_sink_events_delivered_total{sink=\"chat\"}") == Some(5.0) || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expect = [
        ("webhook_sink_source_requests_total{source=\"alerts\",status=\"200\"}", 1.0),
        ("webhook_sink_source_requests_total{source=\"alerts\",status=\"400\"}", 1.0),
        ("webhook_sink_source_events_total{source=\"alerts\"}", 5.0),
        ("webhook_sink_events_received_total{sink=\"chat\"}", 5.0),
        ("webhook_sink_events_received_total{sink=\"resolved_only\"}", 5.0),
        ("webhook_sink_events_filtered_total{sink=\"resolved_only\"}", 5.0),
        ("webhook_sink_events_delivered_total{sink=\"chat\"}", 5.0),
        ("webhook_sink_events_dead_lettered_total{sink=\"chat\",reason=\"retries_exhausted\"}", 0.0),
        ("webhook_sink_http_responses_total{sink=\"chat\",status=\"200\"}", 5.0),
        ("webhook_sink_retries_total{sink=\"chat\"}", 0.0),
        ("webhook_sink_delivery_duration_seconds_count{sink=\"chat\"}", 5.0),
        ("webhook_sink_request_duration_seconds_count{sink=\"chat\"}", 5.0),
        ("webhook_sink_buffer_events{sink=\"chat\"}", 0.0),
        ("webhook_sink_buffer_bytes{sink=\"chat\"}", 0.0),
        ("webhook_sink_buffer_max_events{sink=\"chat\"}", 1000.0),
        ("webhook_sink_dead_letters{sink=\"chat\"}", 0.0),
        ("webhook_sink_circuit_open{sink=\"chat\"}", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(!text.contains("MetricsSecret42") && !text.contains("user:"), "no URL in the metrics:\n{text}");
    assert!(text.trim_end().ends_with("# EOF"));

    assert_eq!(request("GET", &format!("http://{api}/health"), "").await.0, 200);
    let (status, body, _) = request("GET", &format!("http://{api}/ready"), "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    assert_eq!(request("GET", &format!("http://{api}/other"), "").await.0, 404);
    assert_eq!(request("POST", &format!("http://{api}/metrics"), "").await.0, 405);

    running.shutdown.cancel();
    tokio::time::timeout(WAIT, running.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn dead_letters_are_counted_by_reason_and_stored() {
    let running = start().await;
    running.receiver.set_status(400);
    let (status, _, _) = request("POST", &format!("http://{}/", running.source), &events(3)).await;
    assert_eq!(status, 200);
    let api = running.api;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = request("GET", &format!("http://{api}/metrics"), "").await.1;
        if sample(&text, "webhook_sink_dead_letters{sink=\"chat\"}") == Some(3.0) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&text, "webhook_sink_events_dead_lettered_total{sink=\"chat\",reason=\"status\"}"), Some(3.0));
    assert_eq!(sample(&text, "webhook_sink_http_responses_total{sink=\"chat\",status=\"400\"}"), Some(3.0));
    assert_eq!(sample(&text, "webhook_sink_dead_letters{sink=\"chat\"}"), Some(3.0), "{text}");
    running.shutdown.cancel();
    tokio::time::timeout(WAIT, running.task).await.unwrap().unwrap();
}

/// Polls Prometheus' query API until `query` has the value `want` (or the time is up).
async fn prometheus_value(prometheus: SocketAddr, query: &str, want: f64) -> Option<f64> {
    let url = format!(
        "http://{prometheus}/api/v1/query?query={}",
        query.replace('{', "%7B").replace('}', "%7D").replace('"', "%22")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = http::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            last = json["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
            if last == Some(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_delivered_count() {
    let Some(prometheus) = require("prometheus", "prometheus", &[]) else { return };
    let running = start().await;
    const N: usize = 250;
    let (status, _, _) = request("POST", &format!("http://{}/", running.source), &events(N)).await;
    assert_eq!(status, 200);
    running.receiver.wait_for(N, WAIT).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: webhook-sink\n    \
             static_configs:\n      - targets: ['{}']\n",
            running.api
        ),
    )
    .unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _prometheus = KillOnDrop::spawn(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let query = "webhook_sink_events_delivered_total{sink=\"chat\"}";
    let value = prometheus_value(web, query, N as f64).await;
    assert_eq!(value, Some(N as f64), "Prometheus' answer to {query}");
    running.shutdown.cancel();
    tokio::time::timeout(WAIT, running.task).await.unwrap().unwrap();
}

#[test]
fn the_example_alerting_rules_pass_promtool() {
    let Some(promtool) = require("promtool", "prometheus", &[]) else { return };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/prometheus/webhook-sink-rules.yml");
    let output = std::process::Command::new(promtool).arg("check").arg("rules").arg(&rules).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    // A sink whose endpoint refuses: its log lines carry the sink, id, attempt and status.
    std::fs::write(
        &config,
        "[sources.in]\ntype = \"stdin\"\n[sinks.chat]\ntype = \"webhook\"\ninputs = [\"in\"]\n\
         url = \"http://user:LogSecret77@127.0.0.1:9/hook\"\nretry.attempts = 2\nretry.initial_backoff_secs = 0.01\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-sink"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{\"eventType\":\"alert-created\",\"id\":\"e-1\",\"alertKey\":\"k\"}\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("LogSecret77"), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["message"].is_string() && l["timestamp"].is_string()));
    let retry = lines.iter().find(|l| l["message"] == "webhook attempt failed; retrying").expect("a retry line");
    assert_eq!(retry["sink"], "chat");
    assert_eq!(retry["id"], "e-1");
    assert_eq!(retry["attempt"], 1);
    let gave_up =
        lines.iter().find(|l| l["message"] == "webhook not delivered; dead-lettered").expect("a give-up line");
    assert_eq!(gave_up["attempts"], 2);
}
