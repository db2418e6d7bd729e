//! The `kafka` source against a real Apache Kafka broker (KRaft, started by each test on
//! loopback; see support/kafka.rs).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use webhook_sink::dead_letters::store_path;
use webhook_sink::event::stable_webhook_id;
use webhook_sink::storage::dead_letters::DeadLetterStore;

use crate::support::binary::Binary;
use crate::support::certs::TestCerts;
use crate::support::faulty::{Fault, Faulty, Hit};
use crate::support::kafka::{Broker, SASL_PASSWORD, SASL_USER};
use crate::support::{free_addr, Dir, Receiver};

/// The broker itself works as the source needs it: two consumers in one group share a
/// topic's partitions between them (a group rebalance), and together hold all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_share_the_partitions() {
    let started = Instant::now();
    let Some(broker) = Broker::start().await else { return };
    eprintln!("broker started in {:?}", started.elapsed());
    broker.create_topic("shared", 4).await;
    let consumer = || -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", "pair")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("a consumer");
        consumer.subscribe(&["shared"]).expect("subscribe");
        consumer
    };
    let (a, b) = (consumer(), consumer());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Polling drives the group protocol; no message is expected.
        let _ = tokio::time::timeout(Duration::from_millis(200), a.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), b.recv()).await;
        let held = |c: &StreamConsumer| -> BTreeSet<i32> {
            c.assignment().map(|l| l.elements().iter().map(|e| e.partition()).collect()).unwrap_or_default()
        };
        let (ha, hb) = (held(&a), held(&b));
        if !ha.is_empty() && !hb.is_empty() && ha.is_disjoint(&hb) && ha.len() + hb.len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no shared assignment: {ha:?} / {hb:?}\n{}", broker.log());
    }
    eprintln!("shared after {:?}", started.elapsed());
}

/// Upper bound of every wait for deliveries.
const WAIT: Duration = Duration::from_secs(90);

/// A pipeline file in `dir`: the `kafka` source reading `topic` in group `group` from
/// `broker`, one webhook sink to `url` posting `{"id": …}` and retrying quickly for long;
/// `extra` goes into the sink's table.
fn pipeline(dir: &Path, bootstrap: &str, topic: &str, group: &str, url: &str, extra: &str) -> PathBuf {
    pipeline_with(dir, bootstrap, topic, group, url, "", extra)
}

/// [`pipeline`], with `source_extra` in the source's table (TLS, SASL).
fn pipeline_with(
    dir: &Path,
    bootstrap: &str,
    topic: &str,
    group: &str,
    url: &str,
    source_extra: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        "data_dir = '{data}'\nshutdown_timeout_secs = 3\n\n\
         [sources.kafka]\ntype = \"kafka\"\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{topic}\"]\n\
         group_id = \"{group}\"\nsession_timeout_ms = 6000\ncommit_interval_ms = 200\n{source_extra}\n\
         [sinks.hook]\ntype = \"webhook\"\ninputs = [\"kafka\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n\
         template = '{{\"id\": \"{{{{ event.id }}}}\"}}'\n\
         retry.attempts = 100000\nretry.max_elapsed_secs = 600\nretry.initial_backoff_secs = 0.01\nretry.max_backoff_secs = 0.1\n\
         {extra}\n",
        data = dir.join("data").display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An incident event of alert `key`, number `n`, as produced (`id` = `KEY-N`).
fn incident(key: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"eventType": "alert-created", "id": format!("{key}-{n}"), "alertKey": key})).unwrap()
}

/// One request the receiver got: alert key, event number, `webhook-id`.
#[derive(Debug, Clone)]
struct Delivery {
    key: String,
    n: usize,
    webhook_id: String,
}

fn deliveries(rx: &Receiver) -> Vec<Delivery> {
    rx.requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_str()));
            let id = body["id"].as_str().unwrap_or_default().to_string();
            let (key, n) = id.rsplit_once('-').unwrap_or_else(|| panic!("an id KEY-N: {id}"));
            Delivery { key: key.to_string(), n: n.parse().unwrap(), webhook_id: r.header_str("webhook-id").unwrap() }
        })
        .collect()
}

/// Waits (bounded) until every event `0..count` arrived at least once.
async fn wait_all(rx: &Receiver, count: usize, log: impl Fn() -> String) -> Vec<Delivery> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = deliveries(rx);
        let distinct: BTreeSet<usize> = got.iter().map(|d| d.n).collect();
        if distinct.len() >= count {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {count} events arrived:\n{}", distinct.len(), log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// At least once, duplicates with the first delivery's id, per-alert order: for each
/// alert, events are delivered for the first time in the order they were produced.
/// Returns how many deliveries were duplicates.
fn check_at_least_once_in_order(got: &[Delivery], count: usize) -> usize {
    let mut first: HashMap<usize, &Delivery> = HashMap::new();
    let mut newest: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = 0;
    for d in got {
        match first.get(&d.n) {
            Some(earlier) => {
                duplicates += 1;
                assert_eq!(earlier.webhook_id, d.webhook_id, "event {} delivered again with another webhook-id", d.n);
            }
            None => {
                first.insert(d.n, d);
                if let Some(previous) = newest.insert(&d.key, d.n) {
                    assert!(previous < d.n, "alert {}: event {} first delivered after event {previous}", d.key, d.n);
                }
            }
        }
    }
    assert_eq!(first.len(), count, "every event at least once");
    duplicates
}

/// The group's committed positions for `topic`'s partitions `0..partitions` (-1: none).
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("a consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(20)).expect("committed offsets");
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Events keyed by alert go through one instance: each once, in order per alert, with the
/// `webhook-id` derived from topic, partition and offset; at shutdown everything is
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keyed_by_alert_arrive_in_order_per_alert() {
    let Some(broker) = Broker::start().await else { return };
    broker.create_topic("ordered", 4).await;
    let producer = broker.producer();
    let count = 120;
    let mut produced = Vec::new();
    for n in 0..count {
        let key = format!("alert{}", n % 6);
        produced.push(producer.send("ordered", &key, &incident(&key, n)).await);
    }
    let rx = Receiver::http().await;
    let dir = Dir::new();
    let file = pipeline(dir.0.path(), &broker.bootstrap(), "ordered", "one", &rx.url("/hook"), "");
    let mut binary = Binary::start(&["run"], &file);
    let got = wait_all(&rx, count, || binary.log()).await;
    assert_eq!(check_at_least_once_in_order(&got, count), 0, "one clean run delivers each event once");
    for d in &got {
        let (partition, offset) = produced[d.n];
        let expected = stable_webhook_id(&format!("kafka:ordered:{partition}:{offset}:0"));
        assert_eq!(d.webhook_id, expected, "event {}", d.n);
    }
    binary.signal("TERM");
    assert!(binary.exit_within(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", binary.log());
    let mut ends = [0i64; 4];
    for (partition, offset) in &produced {
        ends[*partition as usize] = ends[*partition as usize].max(offset + 1);
    }
    let committed = committed(&broker.bootstrap(), "one", "ordered", 4);
    for p in 0..4 {
        if ends[p] > 0 {
            assert_eq!(committed[p], ends[p], "partition {p}: everything delivered is committed\n{}", binary.log());
        }
    }
}

/// Which instance delivered a request: the `X-Instance` header each one's sink adds.
fn instance(hit: &Hit) -> String {
    hit.header_str("x-instance").unwrap_or_default()
}

/// The event number of a request (`{"id": "KEY-N"}`).
fn event_number(hit: &Hit) -> usize {
    let id = hit.field("id").unwrap_or_else(|| panic!("an id in {:?}", hit.json));
    let (_, n) = id.rsplit_once('-').unwrap_or_else(|| panic!("an id KEY-N: {id}"));
    n.parse().unwrap_or_else(|_| panic!("an id KEY-N: {id}"))
}

/// The requests answered 2xx, in arrival order, as deliveries.
fn delivered(rx: &Faulty) -> Vec<Delivery> {
    rx.delivered()
        .iter()
        .map(|hit| {
            let id = hit.field("id").unwrap_or_default();
            let (key, _) = id.rsplit_once('-').unwrap_or_else(|| panic!("an id KEY-N: {id}"));
            Delivery {
                key: key.to_string(),
                n: event_number(hit),
                webhook_id: hit.webhook_id.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// Waits (bounded) until every event `0..count` was answered 2xx at least once.
async fn wait_delivered(rx: &Faulty, count: usize, log: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let distinct: BTreeSet<usize> = delivered(rx).iter().map(|d| d.n).filter(|n| *n < count).collect();
        if distinct.len() >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{} of {count} events delivered:\n{}", distinct.len(), log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two instances in one group share the partitions; one is killed with SIGKILL while
/// requests of its partitions are in flight (its receiver holds them unanswered): the
/// other takes its partitions over and delivers their events, the ones in flight again
/// with the same `webhook-id`; every event arrives at least once, in order per alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_partitions_are_taken_over() {
    let Some(broker) = Broker::start().await else { return };
    broker.create_topic("shared", 4).await;
    let rx = Faulty::start().await;
    let (dir_a, dir_b) = (Dir::new(), Dir::new());
    let sink = |name: &str| format!("headers = {{ \"X-Instance\" = \"{name}\" }}\n");
    let file_a = pipeline(dir_a.0.path(), &broker.bootstrap(), "shared", "pair", &rx.url("/hook"), &sink("a"));
    let file_b = pipeline(dir_b.0.path(), &broker.bootstrap(), "shared", "pair", &rx.url("/hook"), &sink("b"));
    let mut a = Binary::start(&["run"], &file_a);
    a.wait_log("kafka partitions assigned").await;
    let b = Binary::start(&["run"], &file_b);
    // Cooperative rebalance: A gives partitions up first, then B is assigned them.
    let deadline = Instant::now() + WAIT;
    while !b.log().lines().any(|l| l.contains("kafka partitions assigned") && l.contains("shared/")) {
        assert!(Instant::now() < deadline, "B got no partition:\nA:\n{}\nB:\n{}", a.log(), b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Phase 1: both deliver, each the partitions it owns.
    let producer = broker.producer();
    let (keys, per_phase) = (16, 64);
    let mut produced: Vec<(i32, i64)> = Vec::new();
    for n in 0..per_phase {
        let key = format!("alert{}", n % keys);
        produced.push(producer.send("shared", &key, &incident(&key, n)).await);
    }
    let used: BTreeSet<i32> = produced.iter().map(|(p, _)| *p).collect();
    assert_eq!(used.len(), 4, "the {keys} alert keys cover every partition: {produced:?}");
    wait_delivered(&rx, per_phase, || format!("A:\n{}\nB:\n{}", a.log(), b.log())).await;
    let mut owners: HashMap<i32, BTreeSet<String>> = HashMap::new();
    for hit in rx.delivered() {
        owners.entry(produced[event_number(&hit)].0).or_default().insert(instance(&hit));
    }
    for (partition, by) in &owners {
        assert_eq!(by.len(), 1, "partition {partition} delivered by one instance, not {by:?}");
    }
    let owned_by =
        |name: &str| -> BTreeSet<i32> { owners.iter().filter(|(_, by)| by.contains(name)).map(|(p, _)| *p).collect() };
    let (of_a, of_b) = (owned_by("a"), owned_by("b"));
    assert!(!of_a.is_empty() && !of_b.is_empty(), "both instances deliver: A {of_a:?}, B {of_b:?}");

    // Phase 2: A's requests are held unanswered; it is killed with them in flight.
    rx.set_rule(|info| (info.header_str("x-instance").as_deref() == Some("a")).then_some(Fault::Hang));
    for n in per_phase..2 * per_phase {
        let key = format!("alert{}", n % keys);
        produced.push(producer.send("shared", &key, &incident(&key, n)).await);
    }
    let held_by_a = |rx: &Faulty| -> Vec<Hit> {
        rx.hits().into_iter().filter(|h| instance(h) == "a" && h.status.is_none()).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + WAIT;
    while held_by_a(&rx).is_empty() {
        assert!(Instant::now() < deadline, "A sent nothing in phase 2:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = held_by_a(&rx);
    let log_before_kill = b.log().len();
    let killed = Instant::now();
    a.child.0.kill().unwrap();
    assert!(a.exit_within(Duration::from_secs(10)).await.is_some(), "A killed");
    let total = 2 * per_phase;
    wait_delivered(&rx, total, || b.log()).await;
    let taken = killed.elapsed();

    // B was assigned A's partitions after the kill, and delivered all their new events.
    let after = &b.log()[log_before_kill..];
    for p in &of_a {
        assert!(
            after.lines().any(|l| l.contains("kafka partitions assigned") && l.contains(&format!("shared/{p}"))),
            "B took partition {p} over:\n{after}"
        );
    }
    let by_b: BTreeSet<usize> = rx.delivered().iter().filter(|h| instance(h) == "b").map(event_number).collect();
    let taken_over: Vec<usize> = (per_phase..total).filter(|n| of_a.contains(&produced[*n].0)).collect();
    assert!(!taken_over.is_empty());
    for n in &taken_over {
        assert!(by_b.contains(n), "event {n} of A's partition {} delivered by B", produced[*n].0);
    }
    // What A had in flight went out again from B, with the same webhook-id.
    let first_ids: HashMap<usize, String> =
        rx.hits().iter().rev().map(|h| (event_number(h), h.webhook_id.clone().unwrap_or_default())).collect();
    for hit in &in_flight {
        let n = event_number(hit);
        let again = rx.delivered().into_iter().find(|h| event_number(h) == n && instance(h) == "b");
        let again = again.unwrap_or_else(|| panic!("event {n}, in flight at A, delivered by B"));
        assert_eq!(again.webhook_id, hit.webhook_id, "event {n}: the same webhook-id");
    }
    for hit in rx.hits() {
        assert_eq!(hit.webhook_id.as_ref(), first_ids.get(&event_number(&hit)), "one webhook-id per event");
    }
    let duplicates = check_at_least_once_in_order(&delivered(&rx), total);
    eprintln!(
        "A owned {of_a:?}, B {of_b:?}; {} events in flight at A when killed (sent again by B, same webhook-id), \
         {} of A's events delivered by B, {duplicates} delivered twice; all delivered {taken:?} after the kill",
        in_flight.len(),
        taken_over.len()
    );
}

/// A receiver that is down: the buffer fills, the partitions pause, nothing is committed
/// past what was delivered (nothing); after a restart with the receiver up, everything
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_receiver_pauses_consumption_and_nothing_is_lost() {
    let Some(broker) = Broker::start().await else { return };
    broker.create_topic("held", 2).await;
    let producer = broker.producer();
    let count = 60;
    for n in 0..count {
        let key = format!("alert{}", n % 4);
        producer.send("held", &key, &incident(&key, n)).await;
    }
    let addr = free_addr();
    let dir = Dir::new();
    let url = format!("http://{addr}/hook");
    let file = pipeline(dir.0.path(), &broker.bootstrap(), "held", "waiting", &url, "buffer.max_events = 5\n");
    let mut binary = Binary::start(&["run"], &file);
    binary.wait_log("buffers full: kafka partitions paused").await;
    // Past a few commit intervals: still nothing committed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = committed(&broker.bootstrap(), "waiting", "held", 2);
    assert!(now.iter().all(|o| *o <= 0), "nothing delivered, nothing committed past it: {now:?}\n{}", binary.log());
    binary.signal("TERM");
    assert!(binary.exit_within(Duration::from_secs(20)).await.is_some(), "{}", binary.log());
    let after = committed(&broker.bootstrap(), "waiting", "held", 2);
    assert!(after.iter().all(|o| *o <= 0), "nothing delivered, nothing committed past it: {after:?}\n{}", binary.log());

    let rx = Receiver::http_on(addr).await;
    let binary = Binary::start(&["run"], &file);
    let got = wait_all(&rx, count, || binary.log()).await;
    check_at_least_once_in_order(&got, count);
}

/// `GET /metrics` of the API at `api` (bounded), its body.
async fn scrape(api: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(api).await?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("/metrics answers").expect("/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

/// Messages that are not JSON or not incident events are dead-lettered with their topic,
/// partition and offset, counted in `webhook_sink_events_dead_lettered_total` with reason
/// `decode`, and committed past; the others go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered_and_committed_past() {
    let Some(broker) = Broker::start().await else { return };
    broker.create_topic("mixed", 1).await;
    let producer = broker.producer();
    producer.send("mixed", "a", &incident("a", 0)).await;
    let (_, not_json) = producer.send("mixed", "a", b"this is not json").await;
    producer.send("mixed", "a", &incident("a", 1)).await;
    let (_, wrong_shape) = producer.send("mixed", "a", br#"{"id": "no event type"}"#).await;
    let (_, last) = producer.send("mixed", "a", &incident("a", 2)).await;

    let rx = Receiver::http().await;
    let dir = Dir::new();
    let api = free_addr();
    let extra = format!("\n[api]\naddress = \"{api}\"\n");
    let file = pipeline(dir.0.path(), &broker.bootstrap(), "mixed", "picky", &rx.url("/hook"), &extra);
    let mut binary = Binary::start(&["run"], &file);
    let got = wait_all(&rx, 3, || binary.log()).await;
    assert_eq!(check_at_least_once_in_order(&got, 3), 0);
    binary.wait_log_times("kafka message dead-lettered", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Counted per sink with reason `decode`, and under no other reason.
    let metrics = scrape(api).await;
    let dead: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("webhook_sink_events_dead_lettered_total{")).collect();
    assert!(dead.contains(&r#"webhook_sink_events_dead_lettered_total{sink="hook",reason="decode"} 2"#), "{metrics}");
    assert_eq!(dead.iter().filter(|l| !l.ends_with(" 0")).count(), 1, "{dead:?}");
    binary.signal("TERM");
    assert!(binary.exit_within(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", binary.log());
    assert_eq!(committed(&broker.bootstrap(), "picky", "mixed", 1), vec![last + 1], "{}", binary.log());

    let letters = DeadLetterStore::open(&store_path(&dir.0.path().join("data"))).unwrap().list(None).unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, offset) in letters.iter().zip([not_json, wrong_shape]) {
        assert_eq!(letter.sink, "hook");
        assert!(letter.reason.contains(&format!("topic `mixed` partition 0 offset {offset}")), "{}", letter.reason);
        assert_eq!(letter.event["kafka"]["offset"], json!(offset));
        assert_eq!(letter.event["kafka"]["topic"], json!("mixed"));
    }
    assert_eq!(letters[0].event["payload"], json!("this is not json"));
    assert!(letters[1].reason.contains("eventType"), "{}", letters[1].reason);
}

/// The source's settings for the secured listeners: TLS with `ca` (if any), SASL with
/// `mechanism` and `password` (if any).
fn secured_source(ca: Option<&Path>, sasl: Option<(&str, &str)>) -> String {
    let mut text = String::new();
    if let Some(ca) = ca {
        text += &format!("tls.enabled = true\ntls.ca_file = '{}'\n", ca.display());
    }
    if let Some((mechanism, password)) = sasl {
        text += &format!(
            "sasl.enabled = true\nsasl.mechanism = \"{mechanism}\"\nsasl.username = \"{SASL_USER}\"\n\
             sasl.password = \"{password}\"\n"
        );
    }
    text
}

/// Produces `count` incident events over 2 alert keys to `topic` (created with 2
/// partitions).
async fn produce(broker: &Broker, topic: &str, count: usize) {
    broker.create_topic(topic, 2).await;
    let producer = broker.producer();
    for n in 0..count {
        let key = format!("alert{}", n % 2);
        producer.send(topic, &key, &incident(&key, n)).await;
    }
}

/// Runs the binary on `file` until `text` is logged, then a little longer; stops it and
/// returns its log.
async fn run_until_logged(file: &Path, text: &str) -> String {
    let mut binary = Binary::start(&["run"], file);
    binary.wait_log(text).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    binary.signal("TERM");
    assert!(binary.exit_within(Duration::from_secs(20)).await.is_some(), "{}", binary.log());
    binary.log()
}

/// Runs the binary on `file` until all `count` events arrived at `rx`, then stops it and
/// returns its log.
async fn run_until_delivered(file: &Path, rx: &Receiver, count: usize) -> String {
    let mut binary = Binary::start(&["run"], file);
    let got = wait_all(rx, count, || binary.log()).await;
    check_at_least_once_in_order(&got, count);
    binary.signal("TERM");
    assert!(binary.exit_within(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", binary.log());
    binary.log()
}

/// SASL on the broker's `SASL_PLAINTEXT` listener: with a wrong password the source says
/// that SASL authentication failed, naming itself and the keys to check, and nothing is
/// delivered; with the right one (`SCRAM-SHA-512`, then `PLAIN`) every event is. No
/// password is ever in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_authenticates_with_the_right_password_and_names_a_wrong_one() {
    let certs = TestCerts::generate();
    let Some(broker) = Broker::start_secured(&certs).await else { return };
    let count = 20;
    produce(&broker, "guarded", count).await;
    let bootstrap = broker.sasl_plaintext_bootstrap();
    let rx = Receiver::http().await;
    let wrong = "wrong-Pw-55120";

    let dir = Dir::new();
    let source = secured_source(None, Some(("SCRAM-SHA-512", wrong)));
    let file = pipeline_with(dir.0.path(), &bootstrap, "guarded", "guarded", &rx.url("/hook"), &source, "");
    let log = run_until_logged(&file, "SASL authentication to the brokers failed").await;
    assert!(log.contains("kafka source `kafka`"), "{log}");
    assert!(log.contains("sasl.password"), "names the keys to check: {log}");
    assert!(rx.requests().is_empty(), "nothing delivered without authenticating");
    assert!(!log.contains(wrong) && !log.contains(SASL_PASSWORD), "{log}");

    for (mechanism, group) in [("SCRAM-SHA-512", "scram"), ("PLAIN", "plain")] {
        let rx = Receiver::http().await;
        let dir = Dir::new();
        let source = secured_source(None, Some((mechanism, SASL_PASSWORD)));
        let file = pipeline_with(dir.0.path(), &bootstrap, "guarded", group, &rx.url("/hook"), &source, "");
        let log = run_until_delivered(&file, &rx, count).await;
        assert!(!log.contains(SASL_PASSWORD), "{mechanism}: {log}");
        assert!(!log.contains("authentication to the brokers failed"), "{mechanism}: {log}");
    }
}

/// TLS on the broker's `SSL` listener: with a CA that did not sign the broker's
/// certificate the source says TLS failed and why (the certificate cannot be verified),
/// and nothing is delivered; with the broker's CA in `tls.ca_file` every event is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_delivers_with_the_broker_s_ca_and_names_a_wrong_one() {
    let certs = TestCerts::generate();
    let Some(broker) = Broker::start_secured(&certs).await else { return };
    let count = 20;
    produce(&broker, "sealed", count).await;
    let rx = Receiver::http().await;

    let other = TestCerts::generate();
    let dir = Dir::new();
    let source = secured_source(Some(&other.ca_path), None);
    let file = pipeline_with(dir.0.path(), &broker.ssl_bootstrap(), "sealed", "sealed", &rx.url("/hook"), &source, "");
    let log = run_until_logged(&file, "TLS to the brokers failed").await;
    assert!(log.contains("kafka source `kafka`") && log.contains("tls.ca_file"), "{log}");
    assert!(log.contains("certificate verify failed"), "says why: {log}");
    assert!(rx.requests().is_empty(), "nothing delivered from an unverified broker");

    let dir = Dir::new();
    let source = secured_source(Some(&certs.ca_path), None);
    let file = pipeline_with(dir.0.path(), &broker.ssl_bootstrap(), "sealed", "sealed", &rx.url("/hook"), &source, "");
    let log = run_until_delivered(&file, &rx, count).await;
    assert!(!log.contains("TLS to the brokers failed"), "{log}");
}

/// SASL over TLS (`SASL_SSL`, `PLAIN`): the events are delivered, the password is not in
/// the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_delivers() {
    let certs = TestCerts::generate();
    let Some(broker) = Broker::start_secured(&certs).await else { return };
    let count = 20;
    produce(&broker, "both", count).await;
    let rx = Receiver::http().await;
    let dir = Dir::new();
    let source = secured_source(Some(&certs.ca_path), Some(("PLAIN", SASL_PASSWORD)));
    let file = pipeline_with(dir.0.path(), &broker.sasl_ssl_bootstrap(), "both", "both", &rx.url("/hook"), &source, "");
    let log = run_until_delivered(&file, &rx, count).await;
    assert!(!log.contains(SASL_PASSWORD), "{log}");
    assert!(!log.contains("to the brokers failed"), "{log}");
}
