//! Delivery under faults, in-process: a real pipeline (`config::load_str` + `Pipeline`)
//! with an `http_server` source and webhook sinks pointed at a fault-injecting receiver
//! (`support::faulty`). Retries, non-retried statuses, exhausted retries, dead letters,
//! per-alert order under retries, fan-out isolation with bounded buffers, end-to-end
//! acknowledgements and shutdown accounting.
//!
//! Backoffs are short (`retry.initial_backoff_secs = 0.01`, `retry.max_backoff_secs =
//! 0.05`) unless a test needs them long; every wait is bounded; time is only checked from
//! below, where a wait is the behaviour under test (`Retry-After`, the request timeout).

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::faulty::{Fault, Faulty, Hit};
use support::free_addr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::dead_letters::store_path;
use webhook_sink::stats::SinkStats;
use webhook_sink::storage::dead_letters::{DeadLetter, DeadLetterStore};
use webhook_sink::storage::StorageError;
use webhook_sink::topology::{Pipeline, RunReport, Threads, TopologyError};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// harness

pub(crate) struct Running {
    data: tempfile::TempDir,
    pub(crate) source: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
    stats: Vec<(String, Arc<SinkStats>)>,
}

impl Running {
    pub(crate) fn stats(&self, sink: &str) -> Arc<SinkStats> {
        self.stats.iter().find(|(n, _)| n == sink).expect("sink exists").1.clone()
    }

    /// Cancels, waits (bounded) for the run to end; the data dir stays for inspection.
    pub(crate) async fn stop(self) -> (RunReport, tempfile::TempDir) {
        self.shutdown.cancel();
        let report = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the pipeline stops within the bound")
            .expect("pipeline task");
        (report, self.data)
    }
}

/// A pipeline with `top` (top-level keys), an `http_server` source `alerts` (plus
/// `source_extra`) and `sinks`, its data in a fresh temporary directory.
async fn start(top: &str, source_extra: &str, sinks: &str) -> Running {
    start_in(tempfile::tempdir().unwrap(), top, source_extra, sinks).await
}

/// As [`start`], the pipeline's parts spread over `threads` (as `run --runtime split` does).
pub(crate) async fn start_on(threads: Threads, top: &str, source_extra: &str, sinks: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    try_start_on(threads, data, top, source_extra, sinks).await.unwrap_or_else(|(e, _)| panic!("{e}"))
}

async fn start_in(data: tempfile::TempDir, top: &str, source_extra: &str, sinks: &str) -> Running {
    try_start_in(data, top, source_extra, sinks).await.unwrap_or_else(|(e, _)| panic!("{e}"))
}

async fn try_start_in(
    data: tempfile::TempDir,
    top: &str,
    source_extra: &str,
    sinks: &str,
) -> Result<Running, (TopologyError, tempfile::TempDir)> {
    try_start_on(Threads::default(), data, top, source_extra, sinks).await
}

async fn try_start_on(
    threads: Threads,
    data: tempfile::TempDir,
    top: &str,
    source_extra: &str,
    sinks: &str,
) -> Result<Running, (TopologyError, tempfile::TempDir)> {
    let source = free_addr();
    let text = format!(
        "data_dir = '{}'\n{top}\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n{source_extra}\n\n{sinks}",
        data.path().display()
    );
    let config = load_str(Path::new("delivery_faults.toml"), &text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n--- config:\n{text}"));
    let shutdown = CancellationToken::new();
    let pipeline = match Pipeline::build_on(&config, shutdown.clone(), threads).await {
        Ok(pipeline) => pipeline,
        Err(e) => return Err((e, data)),
    };
    let stats = pipeline.stats();
    let task = tokio::spawn(pipeline.run());
    Ok(Running { data, source, shutdown, task, stats })
}

/// A webhook sink reading `alerts`, healthcheck off, short backoffs and the circuit breaker
/// off (these tests are about retries; `storm_gate.rs` tests the circuit) unless `extra`
/// sets them.
pub(crate) fn sink(name: &str, url: &str, extra: &str) -> String {
    let mut text = format!(
        "[sinks.{name}]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n"
    );
    if !extra.contains("circuit.") {
        text.push_str("circuit.failures = 0\n");
    }
    if !extra.contains("retry.initial_backoff_secs") {
        text.push_str("retry.initial_backoff_secs = 0.01\n");
    }
    if !extra.contains("retry.max_backoff_secs") {
        text.push_str("retry.max_backoff_secs = 0.05\n");
    }
    text.push_str(extra);
    text.push_str("\n\n");
    text
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.body))
    }
}

pub(crate) async fn post(source: SocketAddr, body: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request =
        http::Request::post(format!("http://{source}/")).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("the source answers within the bound")
        .expect("the source answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub(crate) fn event(id: &str, event_type: &str) -> Value {
    json!({"id": id, "eventType": event_type, "status": "PENDING", "priority": "HIGH",
           "summary": format!("summary of {id}"), "alertSource": {"id": 1, "name": "Nagios Hosts"}})
}

/// Event `n` (a field of its own, carried through) of alert `alert`.
fn numbered(alert: &str, event_type: &str, n: usize) -> Value {
    let mut e = event(alert, event_type);
    e["n"] = json!(n);
    e
}

pub(crate) fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Polls `done` every 10 ms, at most `WAIT`; returns whether it held.
async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

pub(crate) fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    SinkStats::get(counter)
}

/// The dead letters under `data_dir` (none if the store was never created). The store is
/// locked while a sink task that was stopped at the deadline is still being dropped, so
/// the open is retried for a bounded time.
async fn dead_letters(data_dir: &Path) -> Vec<DeadLetter> {
    let path = store_path(data_dir);
    if !path.exists() {
        return Vec::new();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match DeadLetterStore::open(&path) {
            Ok(store) => return store.list(None).unwrap(),
            Err(StorageError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot open the dead letters: {e}"),
        }
    }
}

/// Hits grouped by the receiver's key (the body's `id`), in arrival order.
fn by_key(hits: &[Hit]) -> BTreeMap<String, Vec<Hit>> {
    let mut map: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    for hit in hits {
        map.entry(hit.key.clone().expect("every body has an id")).or_default().push(hit.clone());
    }
    map
}

/// The one `webhook-id` every attempt of an event carries.
fn one_webhook_id(key: &str, hits: &[Hit]) -> String {
    let ids: BTreeSet<Option<String>> = hits.iter().map(|h| h.webhook_id.clone()).collect();
    assert_eq!(ids.len(), 1, "{key}: every attempt carries the same webhook-id, got {ids:?}");
    ids.into_iter().next().unwrap().unwrap_or_else(|| panic!("{key}: requests carry a webhook-id"))
}

// ---------------------------------------------------------------------------------------
// 1. retried faults

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_faults_are_delivered_once_with_one_webhook_id() {
    let rx = Faulty::start().await;
    // Per event (its own alert): the faults of its first attempts, then 200.
    let scripts: Vec<(&str, Vec<Fault>)> = vec![
        // Seven retried failures in a row, then the 8th (last allowed) attempt succeeds.
        (
            "burst",
            vec![
                Fault::Status(500),
                Fault::Status(502),
                Fault::Status(503),
                Fault::Status(504),
                Fault::Status(408),
                Fault::Reset,
                Fault::Hang,
            ],
        ),
        ("s500", vec![Fault::Status(500)]),
        ("s502", vec![Fault::Status(502)]),
        ("s503", vec![Fault::Status(503)]),
        ("s504", vec![Fault::Status(504)]),
        ("s408", vec![Fault::Status(408)]),
        ("ra429", vec![Fault::StatusRetryAfter(429, "1".into())]),
        ("radate", vec![Fault::retry_after_date(503, Duration::from_secs(2))]),
        ("reset", vec![Fault::Reset]),
        ("hang", vec![Fault::Hang]),
    ];
    for (key, faults) in &scripts {
        rx.script_key(key, faults.clone(), None);
    }
    let failures: usize = scripts.iter().map(|(_, f)| f.len()).sum();
    let running = start("", "", &sink("hook", &rx.url("/hook"), "request.timeout_secs = 0.3\n")).await;
    let events: Vec<Value> = scripts.iter().map(|(key, _)| event(key, "alert-created")).collect();
    let answer = post(running.source, &ndjson(&events)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let n = scripts.len();
    rx.wait_delivered(n, WAIT).await;
    let stats = running.stats("hook");
    assert!(wait_until(|| stats.pending() == 0).await, "the sink finishes every event");
    let hits = rx.hits();
    let grouped = by_key(&hits);
    let mut seen_ids = BTreeSet::new();
    for (key, faults) in &scripts {
        let attempts = &grouped[*key];
        assert_eq!(attempts.len(), faults.len() + 1, "{key}: one attempt per fault, then the delivery: {attempts:#?}");
        let delivered: Vec<&Hit> = attempts.iter().filter(|h| h.delivered()).collect();
        assert_eq!(delivered.len(), 1, "{key} delivered exactly once");
        assert!(attempts.last().unwrap().delivered(), "{key}: nothing after the delivery");
        let id = one_webhook_id(key, attempts);
        assert!(seen_ids.insert(id.clone()), "{key}: webhook-id {id} is used by another event too");
        for (hit, fault) in attempts.iter().zip(faults) {
            assert_eq!(&hit.fault, fault, "{key}: faults applied in order");
        }
    }

    // Retry-After: 1 was honoured (not the 10-50 ms backoff).
    let ra = &grouped["ra429"];
    let waited = ra[1].arrived - ra[0].answered.expect("the 429 was answered");
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 honoured, waited {waited:?}");
    // An HTTP-date Retry-After at least a second ahead was honoured too.
    let rd = &grouped["radate"];
    let waited = rd[1].arrived - rd[0].answered.expect("the 503 was answered");
    assert!(waited >= Duration::from_millis(500), "Retry-After as an HTTP date honoured, waited {waited:?}");
    // A hanging request is given up after request.timeout_secs, then retried.
    let hang = &grouped["hang"];
    assert_eq!(hang[0].status, None, "the hanging request was never answered");
    let waited = hang[1].arrived - hang[0].arrived;
    assert!(waited >= Duration::from_millis(280), "the retry came after the 0.3 s timeout, waited {waited:?}");
    assert_eq!(grouped["reset"][0].status, None, "the reset request was never answered");

    assert_eq!(get(&stats.delivered), n as u64);
    assert_eq!(get(&stats.retries), failures as u64, "one retry per failed attempt");
    assert_eq!(get(&stats.failed), 0);
    assert_eq!(get(&stats.dead_lettered), 0);
    let (_, data) = running.stop().await;
    assert!(dead_letters(data.path()).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// 2. statuses that are not retried

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_retried_4xx_are_tried_once_and_dead_lettered() {
    let rx = Faulty::start().await;
    let statuses = [("gone404", 404u16), ("bad400", 400), ("unproc422", 422)];
    for (key, status) in statuses {
        rx.script_key(key, [], Some(Fault::Status(status)));
    }
    let running = start("", "", &sink("hook", &rx.url("/hook"), "")).await;
    let events: Vec<Value> = statuses.iter().map(|(key, _)| event(key, "alert-created")).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    let stats = running.stats("hook");
    assert!(
        wait_until(|| get(&stats.dead_lettered) == 3 && stats.pending() == 0).await,
        "all three end up dead-lettered"
    );
    // Long enough for a (wrong) retry with a ≤ 50 ms backoff to show up.
    let hits = rx.wait_quiet(Duration::from_millis(300), WAIT).await;
    assert_eq!(get(&stats.failed), 3);
    assert_eq!(get(&stats.retries), 0);
    let (_, data) = running.stop().await;

    let grouped = by_key(&hits);
    let letters = dead_letters(data.path()).await;
    assert_eq!(letters.len(), 3, "{letters:#?}");
    for (key, status) in statuses {
        let attempts = &grouped[key];
        assert_eq!(attempts.len(), 1, "{key}: a {status} is tried exactly once");
        let letter = letters
            .iter()
            .find(|l| l.event["id"] == key)
            .unwrap_or_else(|| panic!("{key} is in the dead letters: {letters:#?}"));
        assert_eq!(letter.sink, "hook");
        assert_eq!(letter.last_status, Some(status), "{letter:?}");
        assert_eq!(letter.attempts, 1, "{letter:?}");
        assert!(letter.reason.contains(&status.to_string()), "the reason names {status}: {}", letter.reason);
        assert_eq!(Some(&letter.webhook_id), attempts[0].webhook_id.as_ref(), "the dead letter keeps the webhook-id");
        assert_eq!(letter.event, event(key, "alert-created"), "the dead letter keeps the event as it arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_status_chooses_what_is_retried() {
    // `listed` retries only 404; `none` retries no status (network errors still are).
    let listed = Faulty::start().await;
    let none = Faulty::start().await;
    for rx in [&listed, &none] {
        rx.script_key("nf", [Fault::Status(404)], None);
        rx.script_key("s503", [Fault::Status(503)], None);
        rx.script_key("reset", [Fault::Reset], None);
    }
    let sinks = sink("listed", &listed.url("/"), "retry.on_status = [404]\n")
        + &sink("none", &none.url("/"), "retry.on_status = \"none\"\n");
    let running = start("", "", &sinks).await;
    let events = [event("nf", "alert-created"), event("s503", "alert-created"), event("reset", "alert-created")];
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    let (sl, sn) = (running.stats("listed"), running.stats("none"));
    assert!(wait_until(|| sl.pending() == 0 && sn.pending() == 0 && get(&sl.accepted) == 3).await);
    let quiet = Duration::from_millis(300);
    let (hits_listed, hits_none) = (listed.wait_quiet(quiet, WAIT).await, none.wait_quiet(quiet, WAIT).await);
    let (_, data) = running.stop().await;
    let letters = dead_letters(data.path()).await;
    let attempts = |hits: &[Hit], key: &str| by_key(hits).get(key).map_or(0, Vec::len);
    let letter = |sink: &str, key: &str| letters.iter().find(|l| l.sink == sink && l.event["id"] == key).cloned();

    // retry.on_status = [404]: the 404 is retried and delivered; a 503 is not retried.
    assert_eq!(attempts(&hits_listed, "nf"), 2, "404 retried under on_status = [404]");
    assert!(by_key(&hits_listed)["nf"][1].delivered());
    assert_eq!(attempts(&hits_listed, "s503"), 1, "503 not retried under on_status = [404]");
    let l = letter("listed", "s503").expect("the 503 is dead-lettered");
    assert_eq!((l.last_status, l.attempts), (Some(503), 1));
    assert_eq!(attempts(&hits_listed, "reset"), 2, "a reset is always retried");
    assert_eq!((get(&sl.delivered), get(&sl.dead_lettered)), (2, 1));

    // retry.on_status = "none": neither 404 nor 503 is retried; a reset still is.
    assert_eq!(attempts(&hits_none, "nf"), 1);
    assert_eq!(attempts(&hits_none, "s503"), 1, "503 not retried under on_status = \"none\"");
    let l = letter("none", "s503").expect("the 503 is dead-lettered");
    assert_eq!((l.last_status, l.attempts), (Some(503), 1));
    assert!(l.reason.contains("503"), "{}", l.reason);
    assert!(letter("none", "nf").is_some_and(|l| l.last_status == Some(404)));
    assert_eq!(attempts(&hits_none, "reset"), 2, "network errors are retried even with on_status = \"none\"");
    assert_eq!((get(&sn.delivered), get(&sn.dead_lettered)), (1, 2));
    assert_eq!(letters.len(), 3, "{letters:#?}");
}

// ---------------------------------------------------------------------------------------
// 3. retries exhausted

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_run_out_after_the_configured_attempts() {
    let rx = Faulty::start().await;
    rx.set_default(Fault::Status(503));
    let running = start("", "", &sink("hook", &rx.url("/"), "retry.attempts = 3\n")).await;
    assert_eq!(post(running.source, &ndjson(&[event("1", "alert-created")])).await.status, 200);
    let stats = running.stats("hook");
    assert!(wait_until(|| get(&stats.dead_lettered) == 1).await);
    let hits = rx.wait_quiet(Duration::from_millis(300), WAIT).await;
    assert_eq!(hits.len(), 3, "exactly 3 attempts: {hits:#?}");
    let id = one_webhook_id("1", &hits);
    assert_eq!((get(&stats.failed), get(&stats.retries), get(&stats.delivered)), (1, 2, 0));
    let (_, data) = running.stop().await;
    let letters = dead_letters(data.path()).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert!(letter.reason.starts_with("gave up after 3 attempts"), "{}", letter.reason);
    assert!(letter.reason.contains("503"), "{}", letter.reason);
    assert_eq!((letter.last_status, letter.attempts), (Some(503), 3));
    assert_eq!(letter.webhook_id, id);
}

// ---------------------------------------------------------------------------------------
// 4. nothing vanishes

/// SplitMix64: a fixed, seedable mix, so the fault script is the same on every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_event_vanishes_under_a_mixed_fault_script() {
    const EVENTS: usize = 200;
    const ALERTS: usize = 20;
    const SEED: u64 = 0x5eed_2024;
    let rx = Faulty::start().await;
    // Each (event, attempt) gets its fault from a seeded hash: deterministic whatever the
    // interleaving of the concurrent deliveries.
    rx.set_rule(|info| {
        let n = info.json.as_ref()?.get("n")?.as_u64()?;
        let x = mix(SEED ^ (n << 8) ^ u64::from(info.attempt));
        Some(if x.is_multiple_of(11) {
            Fault::Status(404)
        } else if x.is_multiple_of(7) {
            Fault::Reset
        } else if x.is_multiple_of(3) {
            Fault::Status(503)
        } else {
            Fault::Ok
        })
    });
    let running = start("", "", &sink("hook", &rx.url("/"), "")).await;
    let types =
        ["alert-created", "alert-acknowledged", "alert-comment-added", "alert-escalation-ended", "alert-resolved"];
    let events: Vec<Value> =
        (0..EVENTS).map(|n| numbered(&format!("alert-{}", n % ALERTS), types[(n / ALERTS) % types.len()], n)).collect();
    for batch in events.chunks(20) {
        let answer = post(running.source, &ndjson(batch)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let stats = running.stats("hook");
    assert!(
        wait_until(|| get(&stats.delivered) + get(&stats.dead_lettered) == EVENTS as u64).await,
        "every event ends delivered or dead-lettered: delivered {}, dead-lettered {}",
        get(&stats.delivered),
        get(&stats.dead_lettered)
    );
    let hits = rx.wait_quiet(Duration::from_millis(200), WAIT).await;
    let (report, data) = running.stop().await;
    assert_eq!(report.abandoned, 0);
    let letters = dead_letters(data.path()).await;

    // Every attempt of event n carries one webhook-id, unique to n.
    let mut id_of_n: HashMap<u64, String> = HashMap::new();
    let mut n_of_id: HashMap<String, u64> = HashMap::new();
    for hit in &hits {
        let n = hit.json.as_ref().and_then(|j| j["n"].as_u64()).expect("bodies carry n");
        let id = hit.webhook_id.clone().expect("webhook-id");
        assert_eq!(id_of_n.entry(n).or_insert_with(|| id.clone()), &id, "event {n}: one webhook-id for all attempts");
        assert_eq!(n_of_id.entry(id.clone()).or_insert(n), &n, "webhook-id {id} used by two events");
    }
    let delivered: Vec<&Hit> = hits.iter().filter(|h| h.delivered()).collect();
    let delivered_ids: BTreeSet<String> = delivered.iter().map(|h| h.webhook_id.clone().unwrap()).collect();
    assert_eq!(delivered_ids.len(), delivered.len(), "no event is delivered twice");
    let dead_ids: BTreeSet<String> = letters.iter().map(|l| l.webhook_id.clone()).collect();
    assert_eq!(dead_ids.len(), letters.len(), "no event is dead-lettered twice");
    assert!(delivered_ids.is_disjoint(&dead_ids), "delivered and dead-lettered are disjoint");
    assert_eq!(delivered_ids.len() + dead_ids.len(), EVENTS, "delivered + dead-lettered == sent");
    // And by the events themselves: each n exactly once.
    let mut ns: Vec<u64> = delivered.iter().map(|h| h.json.as_ref().unwrap()["n"].as_u64().unwrap()).collect();
    ns.extend(letters.iter().map(|l| l.event["n"].as_u64().expect("dead letters keep the event")));
    ns.sort_unstable();
    assert_eq!(ns, (0..EVENTS as u64).collect::<Vec<_>>());
    for letter in &letters {
        let n = letter.event["n"].as_u64().unwrap();
        assert_eq!(id_of_n.get(&n), Some(&letter.webhook_id), "dead letter of {n} keeps its webhook-id");
        assert!(letter.last_status == Some(404) || letter.reason.starts_with("gave up after"), "{letter:?}");
    }
    assert!(!letters.is_empty() && !delivered.is_empty(), "the script produces both outcomes");
    // Each alert's deliveries stay in the order the events were sent.
    for alert in 0..ALERTS {
        let order: Vec<u64> = delivered
            .iter()
            .filter(|h| h.key.as_deref() == Some(&format!("alert-{alert}")))
            .map(|h| h.json.as_ref().unwrap()["n"].as_u64().unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "alert-{alert} delivered out of order: {order:?}");
    }
    let stats = &report.sinks[0].1;
    assert_eq!(get(&stats.delivered), delivered_ids.len() as u64);
    assert_eq!(get(&stats.dead_lettered), dead_ids.len() as u64);
    assert_eq!(get(&stats.failed), dead_ids.len() as u64);
    assert_eq!(get(&stats.accepted), EVENTS as u64);
    eprintln!(
        "mixed faults: {} delivered, {} dead-lettered, {} requests",
        delivered_ids.len(),
        dead_ids.len(),
        hits.len()
    );
}

// ---------------------------------------------------------------------------------------
// 5. per-alert order under retries

/// An alert's events, in the order they happen.
pub(crate) const LIFECYCLE: [&str; 3] = ["alert-created", "alert-acknowledged", "alert-resolved"];

/// The events of `alerts` alerts (`alert-0`, …), alert by alert, each one's in
/// [`LIFECYCLE`] order.
pub(crate) fn lifecycles(alerts: usize) -> Vec<Value> {
    (0..alerts).flat_map(|a| LIFECYCLE.iter().map(move |t| event(&format!("alert-{a}"), t))).collect()
}

/// The first attempt of every `created` fails with 503; every other request is answered
/// after `delay_ms`, so requests of different alerts overlap.
pub(crate) fn fail_each_created_once(rx: &Faulty, delay_ms: u64) {
    rx.set_rule(move |info| {
        let created = info.json.as_ref()?.get("eventType")? == "alert-created";
        Some(if created && info.attempt == 1 { Fault::Status(503) } else { Fault::Delay(delay_ms) })
    });
}

/// Checks that every alert in `hits` was delivered in [`LIFECYCLE`] order after one retry
/// of its `created`, one request at a time.
pub(crate) fn assert_each_alert_in_order(hits: &[Hit]) {
    let event_type = |h: &Hit| h.field("eventType").unwrap();
    for (alert, attempts) in &by_key(hits) {
        let order: Vec<String> = attempts.iter().filter(|h| h.delivered()).map(event_type).collect();
        assert_eq!(order, LIFECYCLE, "{alert}: delivered in order despite the failed first attempt");
        assert_eq!(attempts.len(), 4, "{alert}: one retry (the created), three deliveries");
        // One request of an alert at a time: each starts after the previous one ended.
        for pair in attempts.windows(2) {
            let ended = pair[0].answered.expect("answered");
            assert!(
                pair[1].arrived >= ended,
                "{alert}: {} started before {} ended",
                event_type(&pair[1]),
                event_type(&pair[0])
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_alert_stays_in_order_under_retries_while_alerts_go_concurrently() {
    const ALERTS: usize = 12;
    const CONCURRENCY: usize = 8;
    let rx = Faulty::start().await;
    fail_each_created_once(&rx, 40);
    let running = start("", "", &sink("hook", &rx.url("/"), &format!("request.concurrency = {CONCURRENCY}\n"))).await;
    assert_eq!(post(running.source, &ndjson(&lifecycles(ALERTS))).await.status, 200);
    let delivered = rx.wait_delivered(ALERTS * LIFECYCLE.len(), WAIT).await;
    assert_eq!(delivered.len(), ALERTS * LIFECYCLE.len());
    let hits = rx.hits();
    running.stop().await;

    assert_each_alert_in_order(&hits);
    // Different alerts were in flight at the same time.
    let overlapping = hits.iter().any(|a| {
        hits.iter().any(|b| a.key != b.key && a.arrived <= b.arrived && a.answered.is_some_and(|end| b.arrived < end))
    });
    assert!(overlapping, "requests of different alerts overlap");
    assert!(rx.max_in_flight() >= 2, "at least two alerts in flight at once");
    assert!(
        rx.max_in_flight() <= CONCURRENCY,
        "request.concurrency bounds the requests in flight: {}",
        rx.max_in_flight()
    );
    // The deliveries of different alerts interleave (not alert after alert).
    let first_alert_done = delivered.iter().rposition(|h| h.key.as_deref() == Some("alert-0")).unwrap();
    assert!(
        delivered[..first_alert_done].iter().any(|h| h.key.as_deref() != Some("alert-0")),
        "other alerts are delivered while alert-0 is still going"
    );
}

// ---------------------------------------------------------------------------------------
// 6. fan-out isolation and bounded buffers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_sink_never_holds_more_than_its_buffer_nor_stalls_the_other() {
    let down = Faulty::start().await;
    down.down().await;
    let healthy = Faulty::start().await;
    // `a` cannot connect and backs off for long: it keeps what it holds in flight.
    let sinks = sink(
        "a",
        &down.url("/a"),
        "buffer.max_events = 20\nretry.attempts = 100\nretry.initial_backoff_secs = 30\nretry.max_backoff_secs = 60\n",
    ) + &sink("b", &healthy.url("/b"), "");
    let running = start("shutdown_timeout_secs = 0.5", "", &sinks).await;
    let (a, b) = (running.stats("a"), running.stats("b"));
    let events: Vec<Value> = (0..100).map(|n| numbered(&format!("e{n}"), "alert-created", n)).collect();
    for (i, batch) in events.chunks(10).enumerate() {
        let answer = post(running.source, &ndjson(batch)).await;
        assert_eq!(answer.status, 200, "batch {i}: b has room, so the batch is taken: {}", answer.body);
        let by = answer.json()["dead_lettered_by"].clone();
        if i < 2 {
            assert_eq!(by, Value::Null, "batch {i} fits a's buffer: {}", answer.body);
        } else {
            assert_eq!(by, json!(["a"]), "batch {i}: a is full, its copies are dead-lettered: {}", answer.body);
        }
        assert!(a.pending() <= 20 && get(&a.accepted) <= 20, "a never holds more than 20 (holds {})", a.pending());
    }
    let got = healthy.wait_delivered(100, WAIT).await;
    assert_eq!(got.len(), 100, "every event reaches b");
    let ns: BTreeSet<u64> = got.iter().map(|h| h.json.as_ref().unwrap()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns.len(), 100);
    assert!(wait_until(|| b.pending() == 0).await, "b finishes every event");
    assert_eq!((get(&a.accepted), a.pending(), get(&a.dead_lettered)), (20, 20, 80));
    assert_eq!(get(&b.delivered), 100);
    assert!(down.hits().is_empty(), "a's endpoint refused every connection");

    let (report, data) = running.stop().await;
    assert_eq!(report.abandoned, 20, "the 20 events a held are reported as not delivered");
    let letters = dead_letters(data.path()).await;
    assert!(letters.iter().all(|l| l.sink == "a"), "{letters:#?}");
    assert_eq!(letters.len() as u64 + report.abandoned, 100, "a: dead letters + held == sent");
    let b_ids: HashMap<u64, String> =
        got.iter().map(|h| (h.json.as_ref().unwrap()["n"].as_u64().unwrap(), h.webhook_id.clone().unwrap())).collect();
    for letter in &letters {
        assert!(letter.reason.starts_with("buffer full"), "{}", letter.reason);
        assert_eq!((letter.last_status, letter.attempts), (None, 0));
        let n = letter.event["n"].as_u64().unwrap();
        assert!(n >= 20, "only copies of the batches after the first two: {n}");
        assert_eq!(b_ids.get(&n), Some(&letter.webhook_id), "a's copy of {n} has the webhook-id b delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_full_reject_refuses_the_batch_for_every_sink() {
    let down = Faulty::start().await;
    down.down().await;
    let healthy = Faulty::start().await;
    let sinks = sink(
        "a",
        &down.url("/a"),
        "buffer.max_events = 20\nbuffer.when_full = \"reject\"\nretry.attempts = 100\nretry.initial_backoff_secs = 30\nretry.max_backoff_secs = 60\n",
    ) + &sink("b", &healthy.url("/b"), "");
    let running = start("shutdown_timeout_secs = 0.5", "", &sinks).await;
    let events: Vec<Value> = (0..50).map(|n| numbered(&format!("e{n}"), "alert-created", n)).collect();
    let mut refused = 0;
    for (i, batch) in events.chunks(10).enumerate() {
        let answer = post(running.source, &ndjson(batch)).await;
        if i < 2 {
            assert_eq!(answer.status, 200, "batch {i}: {}", answer.body);
        } else {
            assert_eq!(answer.status, 503, "batch {i}: a is full and rejects: {}", answer.body);
            let retry_after =
                answer.headers.get(http::header::RETRY_AFTER).expect("a 503 for a full buffer has Retry-After");
            assert!(retry_after.to_str().unwrap().parse::<u64>().is_ok(), "{retry_after:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    healthy.wait_delivered(20, WAIT).await;
    let got = healthy.wait_quiet(Duration::from_millis(300), WAIT).await;
    let ns: BTreeSet<u64> = got.iter().map(|h| h.json.as_ref().unwrap()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..20).collect(), "b got the accepted batches and nothing of the refused ones");
    assert_eq!(got.len(), 20);
    let (a, b) = (running.stats("a"), running.stats("b"));
    assert_eq!((get(&a.accepted), get(&b.accepted)), (20, 20));
    assert_eq!(get(&a.dead_lettered), 0);
    let (report, data) = running.stop().await;
    assert_eq!(report.abandoned, 20);
    assert!(dead_letters(data.path()).await.is_empty(), "refused batches are not dead-lettered");
}

/// On one thread (as `run --runtime one-thread`): a batch waiting for room in a full,
/// rejecting sink must not keep the thread busy. It once spun there, woken by its own
/// reservation in the other sink being given back, and nothing else on the thread ran:
/// not the other sink's deliveries, not the full sink's, until `full_wait_ms` ran out.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_waiting_for_a_full_rejecting_sink_lets_the_other_sinks_deliver_on_one_thread() {
    let down = Faulty::start().await;
    down.down().await;
    let healthy = Faulty::start().await;
    let sinks = sink("a", &down.url("/a"), "buffer.max_events = 20\nbuffer.when_full = \"reject\"\n")
        + &sink("b", &healthy.url("/b"), "");
    let running = start("shutdown_timeout_secs = 0.5", "full_wait_ms = 10000", &sinks).await;
    let events: Vec<Value> = (0..30).map(|n| numbered(&format!("e{n}"), "alert-created", n)).collect();
    for batch in events[..20].chunks(10) {
        assert_eq!(post(running.source, &ndjson(batch)).await.status, 200);
    }
    // `a` is full: the third batch waits for room, on the same thread as everything else.
    let third = {
        let (source, body) = (running.source, ndjson(&events[20..]));
        tokio::spawn(async move { post(source, &body).await })
    };
    let got = healthy.wait_delivered(20, WAIT).await;
    assert_eq!(got.len(), 20, "b delivers the first two batches while the third waits for a");
    assert!(!third.is_finished(), "the third batch still waits: a has no room yet");

    // `a`'s endpoint comes back: it delivers, gives room back, and the third batch goes in.
    down.up().await;
    let answer = tokio::time::timeout(WAIT, third).await.expect("the waiting batch is answered").unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(healthy.wait_delivered(30, WAIT).await.len(), 30);
    assert_eq!(down.wait_delivered(30, WAIT).await.len(), 30);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusing_endpoint_gets_everything_once_it_is_back() {
    let rx = Faulty::start().await;
    rx.down().await;
    let running =
        start("", "", &sink("hook", &rx.url("/"), "retry.attempts = 10000\nretry.max_elapsed_secs = 60\n")).await;
    let events: Vec<Value> = (0..10).map(|n| numbered(&format!("alert-{}", n % 3), "alert-created", n)).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    let stats = running.stats("hook");
    assert!(wait_until(|| get(&stats.retries) >= 10).await, "refused connections are retried");
    assert!(rx.hits().is_empty());
    rx.up().await;
    let got = rx.wait_delivered(10, WAIT).await;
    assert!(wait_until(|| stats.pending() == 0).await);
    let hits = rx.wait_quiet(Duration::from_millis(200), WAIT).await;
    assert_eq!(got.len(), 10);
    assert_eq!(hits.len(), 10, "once back, every event is delivered exactly once");
    let ids: BTreeSet<_> = hits.iter().map(|h| h.webhook_id.clone()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!((get(&stats.delivered), get(&stats.dead_lettered)), (10, 0));
    running.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. end-to-end acknowledgements

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledgements_answer_after_delivery() {
    let rx = Faulty::start().await;
    rx.script_key("fine", [Fault::Status(503)], None);
    rx.script_key("gone", [], Some(Fault::Status(404)));
    rx.script_key("broken", [], Some(Fault::Status(503)));
    let running = start("", "acknowledgements = true", &sink("hook", &rx.url("/"), "retry.attempts = 2\n")).await;

    let ok = post(running.source, &ndjson(&[event("fine", "alert-created")])).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["delivered"], json!(true), "{}", ok.body);
    assert_eq!(by_key(&rx.hits())["fine"].iter().filter(|h| h.delivered()).count(), 1, "answered after the delivery");

    let refused = post(running.source, &ndjson(&[event("gone", "alert-created")])).await;
    assert_eq!(refused.status, 400, "a 404 endpoint refuses for good: {}", refused.body);
    assert_eq!(refused.json()["delivered"], json!(false));

    let failed = post(running.source, &ndjson(&[event("broken", "alert-created")])).await;
    assert_eq!(failed.status, 500, "a permanent 503 fails after 2 attempts: {}", failed.body);
    assert_eq!(failed.json()["delivered"], json!(false));
    assert_eq!(by_key(&rx.hits())["broken"].len(), 2);

    // A batch is as good as its worst event.
    let mixed =
        post(running.source, &ndjson(&[event("fine", "alert-resolved"), event("gone", "alert-resolved")])).await;
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    let (_, data) = running.stop().await;
    assert_eq!(dead_letters(data.path()).await.len(), 3);
}

// ---------------------------------------------------------------------------------------
// 8. shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_past_the_deadline_reports_what_a_memory_buffer_loses() {
    let rx = Faulty::start().await;
    rx.set_default(Fault::Hang);
    let running = start(
        "shutdown_timeout_secs = 0.5",
        "",
        &sink("hook", &rx.url("/"), "request.timeout_secs = 30\nrequest.concurrency = 2\n"),
    )
    .await;
    // Two alerts of two events, one of one: two requests hang, three events wait.
    let events = [
        event("a", "alert-created"),
        event("a", "alert-resolved"),
        event("b", "alert-created"),
        event("b", "alert-resolved"),
        event("c", "alert-created"),
    ];
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    rx.wait_until(WAIT, |hits| hits.len() >= 2).await;
    let stats = running.stats("hook");
    let (report, data) = running.stop().await;
    assert_eq!(report.abandoned, 5, "every event not delivered is counted");
    assert_eq!(get(&stats.accepted), 5);
    assert_eq!(get(&stats.delivered) + get(&stats.dead_lettered) + get(&stats.filtered) + report.abandoned, 5);
    assert!(dead_letters(data.path()).await.is_empty());
    assert_eq!(rx.hits().len(), 2, "request.concurrency = 2: two requests hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_past_the_deadline_keeps_a_disk_buffer_for_the_next_start() {
    let rx = Faulty::start().await;
    rx.set_default(Fault::Hang);
    let sinks = sink("hook", &rx.url("/"), "buffer.type = \"disk\"\nrequest.timeout_secs = 30\n");
    let top = "shutdown_timeout_secs = 0.5";
    let running = start(top, "", &sinks).await;
    let events: Vec<Value> = (0..6).map(|n| numbered(&format!("alert-{}", n % 2), "alert-created", n)).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    let hanging = rx.wait_until(WAIT, |hits| hits.len() >= 2).await;
    let (report, data) = running.stop().await;
    assert_eq!(report.abandoned, 0, "nothing is lost: the disk buffer keeps it");

    // Next start, same data_dir, endpoint healthy: everything arrives, with the same ids.
    rx.set_default(Fault::Ok);
    // A host may build the pipeline again once `run` has returned: the first run must have
    // let go of the disk buffer by then. (Retried briefly, in case the release lags.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut data = data;
    let running = loop {
        match try_start_in(data, top, "", &sinks).await {
            Ok(running) => break running,
            Err((_, back)) if tokio::time::Instant::now() < deadline => {
                data = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((e, _)) => panic!(
                "the disk buffer is still held 2 s after the first run returned, so the pipeline cannot be \
                 started again in this process: {e}"
            ),
        }
    };
    let got = rx.wait_delivered(6, WAIT).await;
    let stats = running.stats("hook");
    assert!(wait_until(|| stats.pending() == 0 && get(&stats.delivered) == 6).await);
    let (report, _data) = running.stop().await;
    assert_eq!(report.abandoned, 0);
    let ns: BTreeSet<u64> = got.iter().map(|h| h.json.as_ref().unwrap()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..6).collect());
    assert_eq!(got.len(), 6, "each once");
    for hang in &hanging {
        let again = got.iter().find(|h| h.body == hang.body).expect("the hanging event is delivered after the restart");
        assert_eq!(again.webhook_id, hang.webhook_id, "same webhook-id across the restart");
    }
}
