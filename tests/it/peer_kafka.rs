//! The `kafka` source against a real Apache Kafka broker (KRaft, started by each test on
//! loopback; see support/kafka.rs).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::ClientConfig;

use crate::support::kafka::Broker;

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
