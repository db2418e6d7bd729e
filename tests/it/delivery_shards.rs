//! A sink's deliveries sharded over two threads by alert key (`run --runtime split`'s
//! delivery threads), in-process: a real pipeline built with a delivery thread of its own
//! ([`Threads::delivery`]) and webhook sinks pointed at a fault-injecting receiver. Each
//! alert stays in order across the shards, the shards share the sink's request slots and
//! rate limit, the other shard's connections live on the delivery thread, and a stop
//! finishes or accounts for what every shard holds.
//!
//! Time is only checked from below, where a wait is the behaviour under test (the rate
//! limit); every wait is bounded.

use crate::delivery_faults::{
    assert_each_alert_in_order, event, fail_each_created_once, get, lifecycles, ndjson, post, sink, start_on, LIFECYCLE,
};
use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::faulty::{Fault, Faulty};
use webhook_sink::cli::runtime::RuntimeThread;
use webhook_sink::topology::Threads;

const WAIT: Duration = Duration::from_secs(20);

/// A delivery thread, as `run --runtime split --delivery-threads 2` starts one, and the
/// pipeline threads that spread each sink's deliveries over it and the test's runtime.
fn delivery_thread() -> (RuntimeThread, Threads) {
    let thread = RuntimeThread::start("test-deliv-1".into()).unwrap();
    let threads = Threads { sources: None, delivery: vec![thread.handle()] };
    (thread, threads)
}

/// The tasks alive on the delivery thread's runtime (the other shard's run and its
/// connections).
fn tasks_on(thread: &RuntimeThread) -> usize {
    thread.handle().metrics().num_alive_tasks()
}

/// Waits (at most [`WAIT`]) until no task is left on the delivery thread.
async fn wait_until_nothing_runs_on(thread: &RuntimeThread) {
    let deadline = std::time::Instant::now() + WAIT;
    while tasks_on(thread) > 0 {
        assert!(std::time::Instant::now() < deadline, "{} tasks left on the delivery thread", tasks_on(thread));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_stays_in_order_across_the_shards_under_retries() {
    const ALERTS: usize = 24;
    const CONCURRENCY: usize = 4;
    let (thread, threads) = delivery_thread();
    assert_eq!(tasks_on(&thread), 0);
    let rx = Faulty::start().await;
    fail_each_created_once(&rx, 20);
    let extra = format!("request.concurrency = {CONCURRENCY}\n");
    let running = start_on(threads, "", "", &sink("hook", &rx.url("/"), &extra)).await;
    assert_eq!(post(running.source, &ndjson(&lifecycles(ALERTS))).await.status, 200);
    let delivered = rx.wait_delivered(ALERTS * LIFECYCLE.len(), WAIT).await;
    assert_eq!(delivered.len(), ALERTS * LIFECYCLE.len());
    // The other shard ran on the delivery thread, its kept-alive connections with it.
    assert!(tasks_on(&thread) >= 1, "the delivery thread holds the other shard's work");
    let stats = running.stats("hook");
    let hits = rx.hits();
    running.stop().await;
    assert_eq!(get(&stats.received), (ALERTS * LIFECYCLE.len()) as u64, "one set of counters for the sink");
    assert_eq!(get(&stats.delivered), (ALERTS * LIFECYCLE.len()) as u64);
    assert_eq!(get(&stats.retries), ALERTS as u64);
    assert_each_alert_in_order(&hits);
    assert!(
        rx.max_in_flight() <= CONCURRENCY,
        "the shards share request.concurrency: {} in flight",
        rx.max_in_flight()
    );
    drop(thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_share_the_request_slots() {
    const ALERTS: usize = 24;
    const CONCURRENCY: usize = 4;
    let (_thread, threads) = delivery_thread();
    let rx = Faulty::start().await;
    rx.set_default(Fault::Delay(150));
    let extra = format!("request.concurrency = {CONCURRENCY}\n");
    let running = start_on(threads, "", "", &sink("hook", &rx.url("/"), &extra)).await;
    let events: Vec<Value> = (0..ALERTS).map(|a| event(&format!("alert-{a}"), "alert-created")).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    assert_eq!(rx.wait_delivered(ALERTS, WAIT).await.len(), ALERTS);
    running.stop().await;
    // Two slots per shard: the sink's four are all used, and never more.
    assert_eq!(rx.max_in_flight(), CONCURRENCY, "request.concurrency is the sink's total over its shards");
    assert!(rx.connections() <= CONCURRENCY, "a connection per slot: {}", rx.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_share_the_rate_limit() {
    const EVENTS: usize = 12;
    let (_thread, threads) = delivery_thread();
    let rx = Faulty::start().await;
    // One request every 100 ms for the whole sink. A gate per shard would let two through
    // every 100 ms and finish in about half the time.
    let extra = "request.concurrency = 8\nrequest.rate_limit_num = 10\nrequest.rate_limit_duration_secs = 1\n";
    let running = start_on(threads, "", "", &sink("hook", &rx.url("/"), extra)).await;
    let events: Vec<Value> = (0..EVENTS).map(|a| event(&format!("alert-{a}"), "alert-created")).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    let delivered = rx.wait_delivered(EVENTS, WAIT).await;
    running.stop().await;
    let first = delivered.iter().map(|h| h.arrived).min().unwrap();
    let last = delivered.iter().map(|h| h.arrived).max().unwrap();
    // Eleven intervals of 100 ms between the first and the last admission; the first
    // request's trip to the receiver may take a little of that.
    assert!(
        last - first >= Duration::from_millis(1000),
        "12 requests at 10/s over both shards took only {:?}",
        last - first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_what_every_shard_holds() {
    const ALERTS: usize = 40;
    let (thread, threads) = delivery_thread();
    let rx = Faulty::start().await;
    rx.set_default(Fault::Delay(30));
    let running = start_on(threads, "", "", &sink("hook", &rx.url("/"), "request.concurrency = 4\n")).await;
    let events: Vec<Value> = (0..ALERTS).map(|a| event(&format!("alert-{a}"), "alert-created")).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    // Stopped while most events still wait in the shards or the buffer: each is delivered
    // before the run ends (the default shutdown deadline is far off).
    let stats = running.stats("hook");
    let (report, _data) = running.stop().await;
    assert_eq!(report.abandoned, 0);
    assert_eq!(get(&stats.delivered), ALERTS as u64);
    assert_eq!(rx.delivered().len(), ALERTS);
    // Nothing of the sink is left on the delivery thread once its connections close
    // (bounded wait: hyper's connection tasks end when the client side is dropped).
    wait_until_nothing_runs_on(&thread).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_past_the_deadline_counts_what_the_shards_held_and_leaves_nothing_running() {
    let (thread, threads) = delivery_thread();
    let rx = Faulty::start().await;
    rx.set_default(Fault::Hang);
    let sinks = sink("hook", &rx.url("/"), "request.concurrency = 2\nrequest.timeout_secs = 30\n");
    let running = start_on(threads, "shutdown_timeout_secs = 0.5", "", &sinks).await;
    let events: Vec<Value> = (0..6).map(|a| event(&format!("alert-{a}"), "alert-created")).collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.status, 200);
    // One hanging request per shard (a slot each): both shards hold events.
    rx.wait_until(WAIT, |hits| hits.len() >= 2).await;
    let stats = running.stats("hook");
    let (report, _data) = running.stop().await;
    assert_eq!(report.abandoned, 6, "every event not delivered is counted, on either shard");
    assert_eq!(get(&stats.delivered), 0);
    // The sink's task was aborted at the deadline: its shard on the delivery thread goes with it.
    wait_until_nothing_runs_on(&thread).await;
}
