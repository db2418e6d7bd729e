//! Alert storms against the sink's gate: `request.rate_limit_*`, the sink-wide
//! `Retry-After` pause and the circuit breaker, with the real binary (`support::binary`)
//! sending to fault-injecting loopback receivers (`support::faulty`), its log and
//! `/metrics` read as an operator would.
//!
//! Time is only checked from below, where a wait is the behaviour under test (nothing is
//! sent during a pause or a cooldown); the waits are bounded, and the 429 share is printed
//! (`cargo test --test it storm_gate -- --nocapture`).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::binary::Binary;
use support::faulty::{rate_limit, Fault, Faulty, Hit};
use support::free_addr;

/// Upper bound of a short wait.
const WAIT: Duration = Duration::from_secs(20);
/// Upper bound of a storm's delivery (about 10 s when all goes well).
const STORM_WAIT: Duration = Duration::from_secs(90);

/// The binary running a pipeline: an `http_server` source, an API, and `sinks`.
struct Running {
    binary: Binary,
    source: SocketAddr,
    api: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(sinks: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (source, api) = (free_addr(), free_addr());
    let text = format!(
        "data_dir = '{}'\n[api]\naddress = \"{api}\"\n\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n{sinks}",
        dir.path().display()
    );
    let file = dir.path().join("storm.toml");
    std::fs::write(&file, text).unwrap();
    let binary = Binary::start(&["run"], &file);
    binary.wait_log("webhook-sink started").await;
    Running { binary, source, api, _dir: dir }
}

/// A webhook sink `name` reading `alerts`, healthcheck off, plus `extra` keys.
fn sink(name: &str, url: &str, extra: &str) -> String {
    format!("[sinks.{name}]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n{extra}\n")
}

async fn http(method: http::Method, url: &str, body: String) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.expect("an answer in time").unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(running: &Running, lines: &[serde_json::Value]) {
    let body: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let (status, answer) = http(http::Method::POST, &format!("http://{}/", running.source), body).await;
    assert_eq!(status, 200, "{answer}");
}

/// `webhook_sink_circuit_open{sink="NAME"}` now.
async fn circuit_open(running: &Running, sink: &str) -> Option<f64> {
    let (_, text) = http(http::Method::GET, &format!("http://{}/metrics", running.api), String::new()).await;
    let series = format!("webhook_sink_circuit_open{{sink=\"{sink}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
}

/// Polls the metric until it is `value` (bounded).
async fn wait_circuit_open(running: &Running, sink: &str, value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = circuit_open(running, sink).await;
        if now == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "webhook_sink_circuit_open{{sink={sink:?}}} stayed {now:?}, not {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Event `n` of alert `alert`: created first, then comments, then resolved.
fn event(alert: &str, n: usize, last: usize) -> serde_json::Value {
    let event_type = match n {
        0 => "alert-created",
        n if n == last => "alert-resolved",
        _ => "alert-comment-added",
    };
    json!({"id": format!("{alert}-{n}"), "alertKey": alert, "eventType": event_type, "summary": "disk full", "n": n})
}

/// The storm: 200 events, 4 for each of 50 alerts (created, two comments, resolved).
/// Many alerts, so that many events are ready to go at any moment (one alert's events go
/// one at a time).
const ALERTS: usize = 50;
const PER_ALERT: usize = 4;

/// `alerts` alerts of `per_alert` events each, interleaved as a storm sends them.
fn storm(alerts: usize, per_alert: usize) -> Vec<serde_json::Value> {
    (0..per_alert).flat_map(|n| (0..alerts).map(move |a| event(&format!("alert{a}"), n, per_alert - 1))).collect()
}

/// Checks the storm arrived whole: every event delivered exactly once, each alert's
/// requests (retries included) in the order of its events. Returns the 429 count.
fn check_whole_and_in_order(hits: &[Hit], alerts: usize, per_alert: usize) -> usize {
    let delivered: Vec<&Hit> = hits.iter().filter(|h| h.delivered()).collect();
    let ids: BTreeSet<String> = delivered.iter().map(|h| h.key.clone().expect("an id")).collect();
    assert_eq!(delivered.len(), alerts * per_alert, "every event delivered once");
    assert_eq!(ids.len(), alerts * per_alert, "no event delivered twice");
    let mut by_alert: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for hit in hits {
        let n: usize = hit.field("n").and_then(|n| n.parse().ok()).expect("every body carries its n");
        by_alert.entry(hit.field("alertKey").expect("an alertKey")).or_default().push(n);
    }
    assert_eq!(by_alert.len(), alerts);
    for (alert, ns) in &by_alert {
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{alert}'s requests out of order: {ns:?}");
        assert_eq!(ns.last(), Some(&(per_alert - 1)), "{alert}");
    }
    let refused = hits.iter().filter(|h| h.status == Some(429)).count();
    assert_eq!(hits.len(), delivered.len() + refused, "every request was delivered or refused with 429");
    refused
}

fn share(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// The test. The endpoint takes 20 requests in any second and answers 429 +
/// `Retry-After: 1` beyond; the sink is set a tenth under that, 20 per 1.1 s, as the README
/// recommends (jitter can bring two requests closer at the endpoint than they left). The
/// issue's example is 1 request per second (a chat webhook); 20 per second is that limit
/// scaled so that 200 events take about 11 s instead of 220 s. (The pause cannot be
/// scaled down instead: `Retry-After` is whole seconds.)
/// Posts the storm to a sink with `settings` in front of an endpoint taking 20 requests in
/// any second (429 + `Retry-After: 1` beyond); waits until all 200 events are delivered
/// and the endpoint is quiet; checks they arrived whole and in order, and prints the
/// requests and the 429s. Returns the running pipeline, every request, and the 429s.
async fn storm_to_a_limited_endpoint(settings: &str, what: &str) -> (Running, Vec<Hit>, usize) {
    let rx = Faulty::start().await;
    rx.set_rule(rate_limit(20, Duration::from_secs(1)));
    let running = start(&sink("chat", &rx.url("/hook"), settings)).await;
    let started = Instant::now();
    post(&running, &storm(ALERTS, PER_ALERT)).await;
    rx.wait_delivered(200, STORM_WAIT).await;
    let took = started.elapsed();
    let hits = rx.wait_quiet(Duration::from_millis(300), WAIT).await;
    let refused = check_whole_and_in_order(&hits, ALERTS, PER_ALERT);
    eprintln!(
        "storm {what}: {} requests, {refused} answered 429 ({:.1}%), 200 delivered in {took:.1?}",
        hits.len(),
        share(refused, hits.len())
    );
    (running, hits, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_200_events_reaches_a_rate_limited_endpoint_whole_in_order_with_few_429s() {
    let limit = "request.rate_limit_num = 20\nrequest.rate_limit_duration_secs = 1.1";
    let (running, hits, refused) =
        storm_to_a_limited_endpoint(limit, "with request.rate_limit_num = 20 per 1.1 s").await;
    // The goal is under 2%; the bound is looser so that a loaded machine's jitter does
    // not fail the test.
    assert!(share(refused, hits.len()) <= 5.0, "{refused} of {} requests answered 429", hits.len());
    let log = running.binary.log();
    assert!(!log.contains("dead-lettered"), "{log}");
}

/// The same storm without `request.rate_limit_*`: the pause alone. Every 429 holds the
/// whole sink back for its `Retry-After`, so the storm still arrives whole and in order,
/// though with many more 429s (printed): the rate limit is what avoids them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rate_limit_each_429_pauses_the_whole_sink_and_the_storm_still_arrives_whole() {
    let (_running, hits, refused) =
        storm_to_a_limited_endpoint("", "without a rate limit (Retry-After pause only)").await;
    assert!(refused > 0, "the endpoint's limit was reached");
    // After each 429 (Retry-After: 1), no new request until the second is over: only the
    // requests already on their way (at most `request.concurrency`, 16) arrive in the
    // moment after it, and none later in that second. (Without the pause, the other
    // alerts' events would all go at once, be refused too, and use up their attempts:
    // tried, the storm did not arrive whole.)
    let mut most_on_their_way = 0;
    for refusal in hits.iter().filter(|h| h.status == Some(429)) {
        let answered = refusal.answered.expect("answered");
        let after = |hit: &Hit| hit.arrived.checked_duration_since(answered);
        let on_their_way = hits.iter().filter(|h| after(h).is_some_and(|d| d <= Duration::from_millis(200))).count();
        most_on_their_way = most_on_their_way.max(on_their_way);
        // Generous: a few more may be let through while the 429 travels back to the sink.
        assert!(
            on_their_way <= 2 * 16,
            "{on_their_way} requests arrived within 200 ms after the 429 to {}",
            refusal.seq
        );
        let during = hits
            .iter()
            .find(|h| after(h).is_some_and(|d| d > Duration::from_millis(200) && d < Duration::from_millis(800)));
        assert!(
            during.is_none(),
            "request {:?} arrived during the pause after the 429 to {}",
            during.map(|h| h.seq),
            refusal.seq
        );
    }
    eprintln!("at most {most_on_their_way} requests arrived within 200 ms after a 429");
}

/// A `Retry-After` holds back every event of its sink, not only the one it answered, and
/// only that sink: the sink beside it, reading the same source, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pauses_its_own_sink_only() {
    let (paused, other) = (Faulty::start().await, Faulty::start().await);
    paused.push([Fault::StatusRetryAfter(429, "5".into())]);
    let sinks = sink("paused", &paused.url("/hook"), "") + &sink("other", &other.url("/hook"), "");
    let running = start(&sinks).await;
    post(&running, &[event("first", 0, 0)]).await;
    let hits = paused.wait_until(WAIT, |hits| hits.first().is_some_and(|h| h.answered.is_some())).await;
    assert_eq!(hits[0].status, Some(429));
    let pause_began = hits[0].answered.unwrap();
    // Nine more events, for other alerts: the other sink delivers all ten while the
    // paused one sends nothing.
    let more: Vec<_> = (1..10).map(|i| event(&format!("more{i}"), 0, 0)).collect();
    post(&running, &more).await;
    assert_eq!(other.wait_delivered(10, WAIT).await.len(), 10);
    assert_eq!(paused.hits().len(), 1, "the paused sink sent nothing more meanwhile");

    let delivered = paused.wait_delivered(10, WAIT).await;
    assert_eq!(delivered.len(), 10, "once the pause is over, all ten are delivered");
    let hits = paused.hits();
    assert_eq!(hits.len(), 11, "the 429, then one delivery each: {hits:#?}");
    let resumed = hits[1].arrived.duration_since(pause_began);
    assert!(resumed >= Duration::from_millis(4900), "the next request came {resumed:?} after Retry-After: 5");
    assert!(
        hits.iter().filter(|h| h.key.as_deref() != Some("first-0")).all(|h| h.attempt == 1),
        "waiting in the pause used no attempt"
    );
    let log = running.binary.log();
    let pauses: Vec<&str> = log.lines().filter(|l| l.contains("asked to wait (Retry-After)")).collect();
    assert_eq!(pauses.len(), 1, "one line for the pause:\n{log}");
    assert!(pauses[0].contains("sink=paused") && pauses[0].contains("status=429"), "{}", pauses[0]);
}

/// The circuit breaker, end to end: opens after `circuit.failures` failures, sends nothing
/// during the cooldown (counted at the receiver), then one probe at a time until one is
/// answered; the metric says 1 then 0, the log has one line per change of state and no
/// password, and the events that waited are all delivered (none dead-lettered, although
/// they waited longer than `retry.max_elapsed_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_holds_requests_probes_one_at_a_time_and_closes() {
    let rx = Faulty::start().await;
    rx.set_default(Fault::Status(500));
    let url = rx.url("/hook").replace("http://", "http://ops:CircuitPw77@");
    let extra = "request.concurrency = 4\ncircuit.failures = 3\ncircuit.cooldown_secs = 1\n\
                 retry.attempts = 4\nretry.initial_backoff_secs = 0.01\nretry.max_backoff_secs = 0.05\n\
                 retry.max_elapsed_secs = 1";
    let running = start(&sink("hook", &url, extra)).await;
    assert_eq!(circuit_open(&running, "hook").await, Some(0.0));
    let events: Vec<_> = (0..20).map(|i| event(&format!("a{i}"), 0, 0)).collect();
    post(&running, &events).await;

    wait_circuit_open(&running, "hook", 1.0).await;
    // Two probes fail, then the endpoint recovers and the third is answered.
    running.binary.wait_log_times("circuit breaker probe failed", 2).await;
    rx.set_default(Fault::Ok);
    rx.wait_delivered(20, WAIT).await;
    wait_circuit_open(&running, "hook", 0.0).await;
    let hits = rx.wait_quiet(Duration::from_millis(300), WAIT).await;

    // The third failure opened it; what arrived later than a moment after it are the
    // probes, each alone and each a cooldown after the failure before it.
    let mut failures: Vec<&Hit> = hits.iter().filter(|h| h.status == Some(500)).collect();
    failures.sort_by_key(|h| h.answered);
    let opened = failures[2].answered.unwrap();
    let later: Vec<&Hit> = hits.iter().filter(|h| h.arrived > opened + Duration::from_millis(150)).collect();
    let probes = &later[..3];
    assert_eq!(probes.iter().map(|h| h.status).collect::<Vec<_>>(), [Some(500), Some(500), Some(200)], "{later:#?}");
    let mut previous = opened;
    for probe in probes {
        let gap = probe.arrived.duration_since(previous);
        assert!(gap >= Duration::from_millis(950), "a request {gap:?} after the circuit (re)opened");
        previous = probe.answered.unwrap();
    }
    assert!(later[3..].iter().all(|h| h.arrived >= previous), "the others went once the probe was answered");
    assert_eq!(later.len(), 2 + 20, "after it opened: two failed probes, then one delivery per event: {later:#?}");

    // Every event delivered once, those that failed before it opened too: they waited
    // more than `retry.max_elapsed_secs = 1`, but waiting is not trying.
    let delivered: BTreeMap<String, &Hit> =
        hits.iter().filter(|h| h.delivered()).map(|h| (h.key.clone().unwrap(), h)).collect();
    assert_eq!(delivered.len(), 20);
    for failure in hits.iter().filter(|h| h.arrived <= opened) {
        let key = failure.key.as_deref().unwrap();
        let waited = delivered[key].arrived.duration_since(failure.arrived);
        assert!(waited > Duration::from_secs(2), "{key} failed, then was delivered {waited:?} later");
    }

    let log = running.binary.log();
    let count = |text: &str| log.lines().filter(|l| l.contains(text)).count();
    assert_eq!(count("circuit breaker opened"), 1, "{log}");
    assert_eq!(count("circuit breaker half-open"), 3, "{log}");
    assert_eq!(count("circuit breaker probe failed"), 2, "{log}");
    assert_eq!(count("circuit breaker closed"), 1, "{log}");
    let opened_line = log.lines().find(|l| l.contains("circuit breaker opened")).unwrap();
    assert!(opened_line.contains("WARN") && opened_line.contains("sink=hook"), "{opened_line}");
    assert!(opened_line.contains("failures=3") && opened_line.contains("500"), "{opened_line}");
    assert!(opened_line.contains("ops:***@127.0.0.1"), "the target, redacted: {opened_line}");
    assert!(!log.contains("CircuitPw77"), "{log}");
    assert!(!log.contains("dead-lettered"), "{log}");
}
