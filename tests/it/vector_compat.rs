//! What Vector's `http` sink sends, replayed from fixtures (Vector itself is not
//! installed here): log events with `encoding.codec = "json"` in its default framing (one
//! JSON array per batch) and with `framing.method = "newline_delimited"` (NDJSON), read by
//! the `mapped` codec of `config-examples/vector/webhook-sink.toml`; and incident events
//! Vector forwards as they are, read by the `incident` codec and passed through unchanged.
//!
//! The fixtures (`tests/fixtures/vector/`) are written as Vector's JSON encoder writes log
//! events: keys sorted, `timestamp` in RFC 3339 with up to nanoseconds, `source_type`
//! naming the Vector source.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::peer::free_port;
use support::{Receiver, Recorded};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::topology::{Pipeline, RunReport};

const WAIT: Duration = Duration::from_secs(10);

/// The address and sink URL written in the example config, replaced by the test's.
const EXAMPLE_ADDRESS: &str = "127.0.0.1:8687";
const EXAMPLE_URL: &str = "https://chat.example.com/hooks/incidents";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A free loopback address for a source.
fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn fixture(name: &str) -> String {
    let path = repo_file(&format!("tests/fixtures/vector/{name}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Running {
    source: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
}

impl Running {
    /// Loads `text` as a config and runs it.
    async fn start(name: &str, text: &str, source: SocketAddr) -> Running {
        let config = load_str(Path::new(name), text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let pipeline = Pipeline::build(&config, shutdown.clone()).await.expect("the pipeline builds");
        Running { source, shutdown, task: tokio::spawn(pipeline.run()) }
    }

    /// The Vector example config, listening on a free port and delivering to `receiver`.
    async fn example(receiver: &Receiver) -> Running {
        let path = repo_file("config-examples/vector/webhook-sink.toml");
        let text = std::fs::read_to_string(&path).expect("the example config");
        assert!(text.contains(EXAMPLE_ADDRESS) && text.contains(EXAMPLE_URL), "the example changed");
        let address = local_addr();
        let text =
            text.replace(EXAMPLE_ADDRESS, &address.to_string()).replace(EXAMPLE_URL, &receiver.url("/hooks/incidents"));
        Running::start("webhook-sink.toml", &text, address).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("pipeline stops").expect("pipeline task");
    }
}

/// POSTs `body` as Vector's http sink would, returning the answer's status and body.
async fn post(source: SocketAddr, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{source}{path}"))
        .header("content-type", content_type)
        .header("user-agent", "Vector/0.40.0 (x86_64-unknown-linux-gnu)")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The bodies received, after checking method, path and content type.
fn bodies(got: &[Recorded]) -> Vec<String> {
    for r in got {
        assert_eq!((r.method.as_str(), r.path_and_query.as_str()), ("POST", "/hooks/incidents"));
        assert_eq!(r.header_str("content-type").as_deref(), Some("application/json"));
    }
    got.iter().map(Recorded::body_str).collect()
}

/// Checks the bodies are `expected` in any order, except that `before` comes before
/// `after` (events of one alert keep their order; different alerts may overtake).
fn assert_bodies(bodies: &[String], expected: &[&str], before: &str, after: &str) {
    let mut sorted: Vec<&str> = bodies.iter().map(String::as_str).collect();
    sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted, want, "bodies as received: {bodies:#?}");
    let at = |body: &str| bodies.iter().position(|b| b == body).unwrap();
    assert!(at(before) < at(after), "{bodies:#?}");
}

#[tokio::test]
async fn json_array_framing_through_the_example_mapping() {
    let receiver = Receiver::http().await;
    let running = Running::example(&receiver).await;
    let answer = post(running.source, "/vector", "application/json", &fixture("logs-json-array.json")).await;
    assert_eq!(answer, (200, r#"{"accepted":3}"#.to_string()));
    let got = receiver.wait_for(3, WAIT).await;
    let created = r#"{"text": "alert-created: [dba] db1.example.com: disk /var/lib/postgresql is 97% full", "priority": "HIGH", "alert": "db1.example.com/postgres", "at": "2024-05-01T10:00:00.123456789Z", "team": "dba"}"#;
    let warning = r#"{"text": "alert-created: [web] web1.example.com: upstream \"api\" answers in 2.5 s", "priority": "LOW", "alert": "web1.example.com/nginx", "at": "2024-05-01T10:00:05.5Z", "team": "web"}"#;
    let resolved = r#"{"text": "alert-resolved: [dba] db1.example.com: disk /var/lib/postgresql is 61% full", "priority": "LOW", "alert": "db1.example.com/postgres", "at": "2024-05-01T10:15:00Z", "team": "dba"}"#;
    assert_bodies(&bodies(&got), &[created, warning, resolved], created, resolved);
    running.stop().await;
}

#[tokio::test]
async fn newline_delimited_framing_through_the_example_mapping() {
    let receiver = Receiver::http().await;
    let running = Running::example(&receiver).await;
    let answer = post(running.source, "/vector", "application/x-ndjson", &fixture("logs-ndjson.ndjson")).await;
    assert_eq!(answer, (200, r#"{"accepted":2}"#.to_string()));
    let got = receiver.wait_for(2, WAIT).await;
    let created = r#"{"text": "alert-created: [platform] mq1.example.com: queue orders has 120000 messages", "priority": "HIGH", "alert": "mq1.example.com/rabbitmq", "at": "2024-05-01T11:00:00Z", "team": "platform"}"#;
    let resolved = r#"{"text": "alert-resolved: [platform] mq1.example.com: queue orders has 12 messages", "priority": "LOW", "alert": "mq1.example.com/rabbitmq", "at": "2024-05-01T11:20:00Z", "team": "platform"}"#;
    assert_bodies(&bodies(&got), &[created, resolved], created, resolved);
    running.stop().await;
}

#[tokio::test]
async fn the_standard_payload_keeps_the_whole_vector_event_under_source() {
    let receiver = Receiver::http().await;
    let address = local_addr();
    let text = format!(
        r#"
[sources.vector]
type = "http_server"
address = "{address}"
decoding.codec = "mapped"
decoding.mapping.event_type = {{ field = "labels.severity", map = {{ ok = "alert-resolved" }}, default = "alert-created" }}
decoding.mapping.summary = {{ field = "message" }}

[sinks.standard]
type = "webhook"
inputs = ["vector"]
url = "{}"
"#,
        receiver.url("/hooks/incidents")
    );
    let running = Running::start("standard.toml", &text, address).await;
    let input = fixture("logs-ndjson.ndjson");
    let first = input.lines().next().unwrap();
    assert_eq!(post(running.source, "/", "application/json", first).await.0, 200);
    let got = receiver.wait_for(1, WAIT).await;
    let expected =
        format!(r#"{{"summary":"queue orders has 120000 messages","eventType":"alert-created","source":{first}}}"#);
    assert_eq!(bodies(&got), [expected]);
    running.stop().await;
}

#[tokio::test]
async fn incident_events_forwarded_by_vector_pass_through_unchanged() {
    let receiver = Receiver::http().await;
    let address = local_addr();
    let text = format!(
        r#"
[sources.vector]
type = "http_server"
address = "{address}"
path = "/incidents"
decoding.codec = "incident"

[sinks.standard]
type = "webhook"
inputs = ["vector"]
url = "{}"
"#,
        receiver.url("/hooks/incidents")
    );
    let running = Running::start("incident.toml", &text, address).await;
    let body = fixture("incident-events.json");
    assert_eq!(post(running.source, "/incidents", "application/json", &body).await, (200, r#"{"accepted":3}"#.into()));
    let got = receiver.wait_for(3, WAIT).await;
    let Value::Array(sent) = serde_json::from_str::<Value>(&body).unwrap() else { unreachable!() };
    // One alert: delivered in the order sent, each payload equal to its input (the
    // fields Vector adds, `source_type` and `timestamp`, included).
    let received: Vec<Value> = bodies(&got).iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(received, sent);
    running.stop().await;
}

#[tokio::test]
async fn a_batch_is_refused_whole_when_one_event_cannot_be_mapped() {
    let receiver = Receiver::http().await;
    let address = local_addr();
    let text = format!(
        r#"
[sources.vector]
type = "http_server"
address = "{address}"
decoding.codec = "mapped"
decoding.mapping.event_type = {{ field = "labels.severity", map = {{ critical = "alert-created", ok = "alert-resolved" }} }}

[sinks.standard]
type = "webhook"
inputs = ["vector"]
url = "{}"
"#,
        receiver.url("/hooks/incidents")
    );
    let running = Running::start("strict.toml", &text, address).await;
    // The second event's severity, `warning`, has no key and there is no default.
    let (status, answer) = post(running.source, "/", "application/json", &fixture("logs-json-array.json")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("event 2") && answer.contains("labels.severity") && answer.contains("`warning`"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.requests().is_empty(), "nothing of a refused batch is delivered");
    running.stop().await;
}
