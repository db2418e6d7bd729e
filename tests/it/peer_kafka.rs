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
use crate::support::kafka::Broker;
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
    let text = format!(
        "data_dir = '{data}'\nshutdown_timeout_secs = 3\n\n\
         [sources.kafka]\ntype = \"kafka\"\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{topic}\"]\n\
         group_id = \"{group}\"\nsession_timeout_ms = 6000\ncommit_interval_ms = 200\n\n\
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

/// Two instances in one group share the partitions; one killed with SIGKILL mid-stream:
/// the other takes its partitions over; every event arrives at least once, a duplicate
/// with the first delivery's `webhook-id`, in order per alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_partitions_are_taken_over() {
    let Some(broker) = Broker::start().await else { return };
    broker.create_topic("shared", 4).await;
    let rx = Receiver::http().await;
    let (dir_a, dir_b) = (Dir::new(), Dir::new());
    let file_a = pipeline(dir_a.0.path(), &broker.bootstrap(), "shared", "pair", &rx.url("/hook"), "");
    let file_b = pipeline(dir_b.0.path(), &broker.bootstrap(), "shared", "pair", &rx.url("/hook"), "");
    let mut a = Binary::start(&["run"], &file_a);
    a.wait_log("kafka partitions assigned").await;
    let b = Binary::start(&["run"], &file_b);
    b.wait_log("kafka partitions assigned").await;

    // A steady stream of events, while one instance dies.
    let count = 600;
    let producer = broker.producer();
    let producing = tokio::spawn(async move {
        for n in 0..count {
            let key = format!("alert{}", n % 8);
            producer.send("shared", &key, &incident(&key, n)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    rx.wait_for(150, WAIT).await;
    // Both are delivering: each has partitions of its own.
    let held =
        |log: String| log.lines().filter(|l| l.contains("kafka partitions assigned") && l.contains("shared/")).count();
    assert!(held(a.log()) > 0 && held(b.log()) > 0, "A:\n{}\nB:\n{}", a.log(), b.log());
    let killed = Instant::now();
    a.child.0.kill().unwrap();
    let _ = a.exit_within(Duration::from_secs(10)).await;
    let before = deliveries(&rx).len();
    producing.await.unwrap();
    let got = wait_all(&rx, count, || b.log()).await;
    eprintln!("all {count} events delivered {:?} after the kill ({before} before it)", killed.elapsed());
    let duplicates = check_at_least_once_in_order(&got, count);
    eprintln!("{duplicates} duplicates");
    assert!(b.log().contains("kafka partitions assigned"), "{}", b.log());
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

/// Messages that are not JSON or not incident events are dead-lettered with their topic,
/// partition and offset, and committed past; the others go through.
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
    let file = pipeline(dir.0.path(), &broker.bootstrap(), "mixed", "picky", &rx.url("/hook"), "");
    let mut binary = Binary::start(&["run"], &file);
    let got = wait_all(&rx, 3, || binary.log()).await;
    assert_eq!(check_at_least_once_in_order(&got, 3), 0);
    binary.wait_log_times("kafka message dead-lettered", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
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

/// The SASL password is never in the log, even when the broker refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sasl_password_never_shows_in_the_log() {
    let Some(broker) = Broker::start().await else { return };
    let rx = Receiver::http().await;
    let dir = Dir::new();
    let file = pipeline(dir.0.path(), &broker.bootstrap(), "secret", "secret", &rx.url("/hook"), "");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "commit_interval_ms = 200\n",
        "commit_interval_ms = 200\nsasl.enabled = true\nsasl.mechanism = \"SCRAM-SHA-256\"\n\
         sasl.username = \"alice\"\nsasl.password = \"hunter2-kafka-secret\"\n\
         librdkafka_options = { \"debug\" = \"security,broker\" }\n",
    );
    std::fs::write(&file, text).unwrap();
    let mut binary = Binary::start(&["run"], &file);
    binary.wait_log("librdkafka").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    binary.signal("TERM");
    let _ = binary.exit_within(Duration::from_secs(20)).await;
    let log = binary.log();
    assert!(log.contains("SASL") || log.contains("sasl"), "the broker refused SASL: {log}");
    assert!(!log.contains("hunter2"), "{log}");
}
