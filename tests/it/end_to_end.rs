//! The whole path on loopback: a pipeline config, the real host, events POSTed to the
//! `http_server` source, and a recording HTTP(S) receiver that checks the exact bytes.

use crate::support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::{free_addr, Receiver, TestCerts};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::stats::SinkStats;
use webhook_sink::topology::{Pipeline, RunReport};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Running {
    _data: tempfile::TempDir,
    pub(crate) source: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
    stats: Vec<(String, Arc<SinkStats>)>,
}

impl Running {
    pub(crate) fn stats(&self, sink: &str) -> &SinkStats {
        &self.stats.iter().find(|(n, _)| n == sink).expect("sink exists").1
    }

    pub(crate) async fn stop(self) -> RunReport {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("pipeline stops").expect("pipeline task")
    }
}

/// A pipeline with an `http_server` source `alerts` and `sinks` (TOML), running.
pub(crate) async fn start(sinks: &str) -> Running {
    let source = free_addr();
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n{sinks}",
        data.path().display()
    );
    let config = load_str(Path::new("end_to_end.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
    let stats = pipeline.stats();
    let task = tokio::spawn(pipeline.run());
    Running { _data: data, source, shutdown, task, stats }
}

pub(crate) async fn post(source: SocketAddr, body: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request =
        http::Request::post(format!("http://{source}/")).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub(crate) fn event(id: &str, event_type: &str) -> serde_json::Value {
    json!({"id": id, "eventType": event_type, "status": "PENDING", "priority": "HIGH",
           "summary": format!("summary of {id}"), "alertSource": {"id": 1, "name": "Nagios Hosts"}})
}

pub(crate) fn ndjson(events: &[serde_json::Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

pub(crate) async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn exact_bytes_with_awkward_credentials() {
    let receiver = Receiver::http().await;
    let port = receiver.addr().port();
    // user `us@er`, password `p@ss:w/rd%+ ä+` (the last `+` raw: not a space in userinfo).
    let url = format!("http://us%40er:p%40ss%3Aw%2Frd%25%2B%20%C3%A4+@127.0.0.1:{port}/hooks/ilert?x=1&y=a%2Fb&z=%20");
    let running = start(&format!(
        "[sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\ntemplate = '{{\"text\": \"{{{{ alertSummary }}}}\", \"id\": \"{{{{alertId}}}}\"}}'\n"
    ))
    .await;
    let mut e = event("7", "alert-created");
    e["summary"] = json!("quote \" backslash \\ newline \n <b>&'");
    assert_eq!(post(running.source, &ndjson(&[e])).await, (200, "{\"accepted\":1}".into()));
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/hooks/ilert?x=1&y=a%2Fb&z=%20");
    let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p@ss:w/rd%+ ä+".as_bytes());
    assert_eq!(r.header_str("authorization").unwrap(), format!("Basic {expected}"));
    assert_eq!(r.header_str("host").unwrap(), format!("127.0.0.1:{port}"));
    assert_eq!(r.header_str("content-type").unwrap(), "application/json");
    assert_eq!(r.body, br#"{"text": "quote \" backslash \\ newline \n <b>&'", "id": "7"}"#);
    for (name, value) in &r.headers {
        let value = String::from_utf8_lossy(value);
        assert!(!value.contains("p%40ss") && !value.contains("p@ss"), "credentials leaked into {name}: {value}");
    }
    running.stop().await;
}

#[tokio::test]
async fn https_with_a_generated_ca_and_refused_without_it() {
    let certs = TestCerts::generate();
    let receiver = Receiver::https(&certs).await;
    let port = receiver.addr().port();
    let running = start(&format!(
        "[sinks.trusted]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"https://localhost:{port}/secure\"\ntls.ca_file = \"{}\"\n\n\
         [sinks.untrusted]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"https://localhost:{port}/untrusted\"\nretry.attempts = 1\n",
        certs.ca_path.display()
    ))
    .await;
    post(running.source, &ndjson(&[event("1", "alert-created")])).await;
    let got = receiver.wait_for(1, WAIT).await;
    wait_until(|| running.stats.iter().all(|(_, s)| s.pending() == 0)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/secure");
    assert_eq!(got[0].header_str("host").unwrap(), format!("localhost:{port}"));
    assert_eq!(SinkStats::get(&running.stats("trusted").delivered), 1);
    assert_eq!(SinkStats::get(&running.stats("untrusted").failed), 1, "certificates are verified by default");
    assert_eq!(receiver.requests().len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn ipv6_literal_hosts() {
    let receiver = Receiver::http_on("[::1]:0".parse().unwrap()).await;
    let port = receiver.addr().port();
    let running = start(&format!(
        "[sinks.v6]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"http://[::1]:{port}/v6?q=1\"\n"
    ))
    .await;
    post(running.source, &ndjson(&[event("1", "alert-created")])).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header_str("host").unwrap(), format!("[::1]:{port}"));
    assert_eq!(got[0].path_and_query, "/v6?q=1");
    running.stop().await;
}

#[tokio::test]
async fn only_triggered_events_arrive_in_order() {
    let receiver = Receiver::http().await;
    let running = start(&format!(
        "[sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\ntriggers = [\"alert-created\", \"incident-resolved\"]\n",
        receiver.url("/chat")
    ))
    .await;
    let events = [
        event("1", "alert-created"),
        event("1", "alert-acknowledged"),
        event("1", "incident-resolved"),
        event("2", "incident-created"),
        event("2", "alert-comment-added"),
    ];
    post(running.source, &ndjson(&events)).await;
    let got = receiver.wait_for(3, WAIT).await;
    wait_until(|| SinkStats::get(&running.stats("chat").filtered) == 2).await;
    let types: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (v["id"].as_str().unwrap().to_string(), v["eventType"].as_str().unwrap().to_string())
        })
        .collect();
    let alert_1: Vec<&str> = types.iter().filter(|(id, _)| id == "1").map(|(_, t)| t.as_str()).collect();
    assert_eq!(alert_1, ["alert-created", "incident-resolved"], "a resolve never overtakes its create");
    assert!(types.contains(&("2".into(), "incident-created".into())));
    assert_eq!(types.len(), 3);
    assert_eq!(SinkStats::get(&running.stats("chat").filtered), 2);
    running.stop().await;
}

#[tokio::test]
async fn conditions_and_fan_out_to_two_endpoints() {
    let chat = Receiver::http().await;
    let tickets = Receiver::http().await;
    let running = start(&format!(
        "[sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\n\
         [[sinks.chat.conditions]]\nfield = \"priority\"\nequals = \"HIGH\"\n\
         [[sinks.chat.conditions]]\nfield = \"alertSource.name\"\nmatches = \"^Nagios\"\n\n\
         [sinks.tickets]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\n\
         [[sinks.tickets.conditions]]\nfield = \"labels.team\"\nexists = true\n",
        chat.url("/chat"),
        tickets.url("/tickets")
    ))
    .await;
    let mut low = event("2", "alert-created");
    low["priority"] = json!("LOW");
    low["labels"] = json!({"team": "db"});
    let mut zabbix = event("3", "alert-created");
    zabbix["alertSource"]["name"] = json!("Zabbix");
    post(running.source, &ndjson(&[event("1", "alert-created"), low, zabbix])).await;
    let chat_got = chat.wait_for(1, WAIT).await;
    let tickets_got = tickets.wait_for(1, WAIT).await;
    wait_until(|| running.stats.iter().all(|(_, s)| s.pending() == 0)).await;
    let ids = |rs: &[support::Recorded]| -> Vec<String> {
        rs.iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&chat.requests()), ["1"], "{chat_got:?}");
    assert_eq!(ids(&tickets.requests()), ["2"], "{tickets_got:?}");
    running.stop().await;
}

#[tokio::test]
async fn standard_payload_carries_unknown_fields() {
    let receiver = Receiver::http().await;
    let running =
        start(&format!("[sinks.raw]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\n", receiver.url("/raw")))
            .await;
    let mut e = event("9", "incident-assigned");
    e["assignedTo"] = json!({"username": "abr", "email": "a@example.com", "firstName": "A", "lastName": "B"});
    e["links"] = json!([{"href": "https://x.example/1", "text": "one"}]);
    e["responders"] = json!([{"id": 1}]);
    e["newerField"] = json!({"deep": [1, "two", null]});
    post(running.source, &ndjson(&[e.clone()])).await;
    let got = receiver.wait_for(1, WAIT).await;
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, e);
    running.stop().await;
}

#[tokio::test]
async fn a_malformed_body_is_rejected_whole() {
    let receiver = Receiver::http().await;
    let running =
        start(&format!("[sinks.raw]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\n", receiver.url("/")))
            .await;
    let body = format!("{}\n{{\"eventType\": \"alert-created\", \"summary\": 5}}\n", event("1", "alert-created"));
    let (status, answer) = post(running.source, &body).await;
    assert_eq!(status, 400);
    assert!(answer.contains("event 2 at line 2") && answer.contains("summary"), "{answer}");
    post(running.source, &ndjson(&[event("2", "alert-created")])).await;
    let got = receiver.wait_for(1, WAIT).await;
    let report = running.stop().await;
    assert_eq!(got.len(), 1, "only the later, good event arrives");
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(SinkStats::get(&report.sinks[0].1.received), 1);
}

#[tokio::test]
async fn failures_are_counted_and_the_rest_goes_through() {
    let receiver = Receiver::http().await;
    receiver.set_status(500);
    let running = start(&format!(
        "[sinks.raw]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\nretry.attempts = 1\n",
        receiver.url("/")
    ))
    .await;
    post(running.source, &ndjson(&[event("1", "alert-created")])).await;
    receiver.wait_for(1, WAIT).await;
    wait_until(|| SinkStats::get(&running.stats("raw").failed) == 1).await;
    receiver.set_status(204);
    post(running.source, &ndjson(&[event("2", "alert-created")])).await;
    receiver.wait_for(2, WAIT).await;
    wait_until(|| SinkStats::get(&running.stats("raw").delivered) == 1).await;
    let stats = running.stats("raw");
    assert_eq!((SinkStats::get(&stats.failed), SinkStats::get(&stats.delivered)), (1, 1));
    running.stop().await;
}

#[tokio::test]
async fn requests_time_out() {
    // A peer that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let running = start(&format!(
        "[sinks.slow]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"http://{addr}/\"\nrequest.timeout_secs = 0.2\nretry.attempts = 1\n"
    ))
    .await;
    post(running.source, &ndjson(&[event("1", "alert-created")])).await;
    wait_until(|| SinkStats::get(&running.stats("slow").failed) == 1).await;
    assert_eq!(SinkStats::get(&running.stats("slow").failed), 1);
    running.stop().await;
    hold.abort();
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let receiver = Receiver::http().await;
    let running = start(&format!(
        "[sinks.seq]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\nrequest.concurrency = 1\nhealthcheck.enabled = false\n",
        receiver.url("/")
    ))
    .await;
    let events: Vec<_> = (0..5).map(|i| event(&i.to_string(), "alert-created")).collect();
    post(running.source, &ndjson(&events)).await;
    assert_eq!(receiver.wait_for(5, WAIT).await.len(), 5);
    assert_eq!(receiver.connections(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(
        "[sources.alerts]\ntype = \"http_server\"\naddress = \"{addr}\"\n\n\
         [sinks.s]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"http://127.0.0.1:9/\"\nhealthcheck.enabled = false\n"
    );
    let config = load_str(Path::new("busy.toml"), &text, &|_| None).unwrap();
    let error = Pipeline::build(&config, CancellationToken::new()).await.err().expect("bind fails").to_string();
    assert!(error.starts_with(&format!("source `alerts`: cannot listen on {addr}: ")), "{error}");
}
