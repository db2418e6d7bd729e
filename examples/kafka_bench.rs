//! The Kafka part of the load benchmark (run by `bench/kafka.sh`, see bench/README.md):
//! a real Kafka broker (KRaft, from the jars `scripts/fetch-kafka.sh` fetched), a loopback
//! receiver counting deliveries, and the `webhook-sink` binary given as the first argument.
//!
//! 1. Throughput: N events (8 alert keys, a 4-partition topic) produced first, then one
//!    instance started; events/s = N / time from its first delivery to its last.
//! 2. Takeover: two instances in one group, a steady stream of events to every partition;
//!    one is killed with SIGKILL; the takeover time is from the kill until every partition
//!    has delivered an event produced after the kill.
//!
//! Environment: KAFKA_LIBS (the broker's jars), N [50000], SESSION_TIMEOUT_MS [6000].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Delivered ids with their arrival time.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

/// Why the benchmark could not run to its end.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// A missing or wrong argument or environment variable.
    #[error("{0}")]
    Usage(&'static str),
    /// A file, a process or a socket.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The broker, the admin client or a producer.
    #[error("{what}: {source}")]
    Kafka { what: &'static str, source: rdkafka::error::KafkaError },
    /// Something did not happen within its time limit.
    #[error("{0}")]
    Timeout(String),
}

/// Wraps an I/O error with what was being done.
fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.to_string();
    move |source| BenchError::Io { what, source }
}

/// Wraps a Kafka error with what was being done.
fn kafka(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> BenchError {
    move |source| BenchError::Kafka { what, source }
}

/// The deliveries so far (a panicked receiver task leaves them as they were).
fn deliveries(seen: &Seen) -> MutexGuard<'_, Vec<(String, Instant)>> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a loopback port"))?;
    Ok(listener.local_addr().map_err(io("binding a loopback port"))?.port())
}

fn java(libs: &Path, dir: &Path, main: &str) -> Command {
    let mut command = Command::new("java");
    command
        .args(["-Xmx512m", "-XX:+UseSerialGC"])
        .arg(format!("-Dlog4j2.configurationFile={}", dir.join("log4j2.properties").display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(main);
    command
}

/// Starts a broker in `dir`; its `host:port`.
fn start_broker(libs: &Path, dir: &Path) -> Result<(Kill, String), BenchError> {
    let (port, controller) = (free_port()?, free_port()?);
    let props = dir.join("server.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nlog.dirs={}\noffsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
             group.classic.min.session.timeout.ms=1000\n",
            dir.join("data").display()
        ),
    )
    .map_err(io(props.display()))?;
    std::fs::write(
        dir.join("log4j2.properties"),
        format!(
            "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=file\nappender.file.type=File\n\
             appender.file.name=file\nappender.file.fileName={}\nappender.file.layout.type=PatternLayout\n\
             appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
            dir.join("broker.log").display()
        ),
    )
    .map_err(io(dir.join("log4j2.properties").display()))?;
    let started = Instant::now();
    let status = java(libs, dir, "kafka.tools.StorageTool")
        .args(["format", "-t", "webhook-sink-bench-00001", "-c"])
        .arg(&props)
        .stdout(Stdio::null())
        .status()
        .map_err(io("running java (kafka.tools.StorageTool)"))?;
    if !status.success() {
        return Err(BenchError::Usage("kafka.tools.StorageTool format failed: are KAFKA_LIBS the broker's jars?"));
    }
    let child = java(libs, dir, "kafka.Kafka")
        .arg(&props)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting java (kafka.Kafka)"))?;
    let broker = Kill(child);
    while !std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default().contains("Kafka Server started") {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(BenchError::Timeout(format!(
                "the broker did not start in 120 s: {}",
                dir.join("broker.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("broker: formatted and started in {:.1} s", started.elapsed().as_secs_f64());
    Ok((broker, format!("127.0.0.1:{port}")))
}

/// A receiver recording each delivered event's id.
async fn receiver(seen: Seen) -> Result<SocketAddr, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io("binding the receiver"))?;
    let addr = listener.local_addr().map_err(io("binding the receiver"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let id = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        deliveries(&seen).push((id, Instant::now()));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(addr)
}

fn pipeline(
    dir: &Path,
    name: &str,
    bootstrap: &str,
    topic: &str,
    url: &str,
    session_ms: u64,
) -> Result<PathBuf, BenchError> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "data_dir = '{}'\nshutdown_timeout_secs = 3\n\
             [sources.kafka]\ntype = \"kafka\"\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{topic}\"]\n\
             group_id = \"{topic}\"\nsession_timeout_ms = {session_ms}\ncommit_interval_ms = 1000\n\
             [sinks.hook]\ntype = \"webhook\"\ninputs = [\"kafka\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n\
             request.concurrency = 32\ntemplate = '{{\"id\": \"{{{{ event.id }}}}\"}}'\n",
            dir.join(format!("data-{name}")).display()
        ),
    )
    .map_err(io(path.display()))?;
    Ok(path)
}

fn run(bin: &Path, file: &Path, log: &Path) -> Result<Kill, BenchError> {
    let log = std::fs::File::create(log).map_err(io(log.display()))?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(bin.display()))?;
    Ok(Kill(child))
}

async fn create_topic(bootstrap: &str, topic: &str) -> Result<(), BenchError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().map_err(kafka("the admin client"))?;
    let topics = [NewTopic::new(topic, 4, TopicReplication::Fixed(1))];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.map_err(kafka("creating a topic"))? {
        result.map_err(|(_, code)| kafka("creating a topic")(rdkafka::error::KafkaError::AdminOp(code)))?;
    }
    Ok(())
}

fn producer(bootstrap: &str) -> Result<FutureProducer, BenchError> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().map_err(kafka("a producer"))
}

fn event(id: &str, key: &str) -> String {
    format!("{{\"eventType\":\"alert-created\",\"id\":\"{id}\",\"alertKey\":\"{key}\",\"summary\":\"load\"}}")
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kafka_bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), BenchError> {
    let bin =
        PathBuf::from(std::env::args().nth(1).ok_or(BenchError::Usage("usage: kafka_bench PATH/TO/webhook-sink"))?);
    let libs =
        PathBuf::from(std::env::var("KAFKA_LIBS").map_err(|_| BenchError::Usage("KAFKA_LIBS: the broker's jars"))?);
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let session_ms: u64 = std::env::var("SESSION_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(6000);
    let dir = tempfile::tempdir().map_err(io("a temp dir"))?;
    let (_broker, bootstrap) = start_broker(&libs, dir.path())?;
    let seen: Seen = Arc::default();
    let url = format!("http://{}/hook", receiver(seen.clone()).await?);

    // 1. Throughput of one instance.
    create_topic(&bootstrap, "load").await?;
    let producer = producer(&bootstrap)?;
    let producing = Instant::now();
    let sends: Vec<_> =
        (0..n)
            .map(|i| {
                let key = format!("alert{}", i % 8);
                let payload = event(&format!("load-{i}"), &key);
                let producer = producer.clone();
                async move {
                    producer.send(FutureRecord::to("load").key(&key).payload(&payload), Duration::from_secs(60)).await
                }
            })
            .collect();
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| kafka("producing the events")(e))?;
    }
    println!("produced {n} events in {:.1} s", producing.elapsed().as_secs_f64());
    let file = pipeline(dir.path(), "one", &bootstrap, "load", &url, session_ms)?;
    let started = Instant::now();
    let one = run(&bin, &file, &dir.path().join("one.log"))?;
    while deliveries(&seen).len() < n {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::Timeout(format!("{} of {n} events delivered in 600 s", deliveries(&seen).len())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (first, last) = {
        let seen = deliveries(&seen);
        (seen[0].1, seen[n - 1].1)
    };
    let span = (last - first).as_secs_f64();
    println!(
        "throughput: {n} events from Kafka through one instance in {span:.2} s = {:.0} events/s \
         (first delivery {:.2} s after start)",
        n as f64 / span,
        (first - started).as_secs_f64()
    );
    drop(one);

    // 2. Takeover after kill -9.
    create_topic(&bootstrap, "takeover").await?;
    deliveries(&seen).clear();
    let file_a = pipeline(dir.path(), "a", &bootstrap, "takeover", &url, session_ms)?;
    let file_b = pipeline(dir.path(), "b", &bootstrap, "takeover", &url, session_ms)?;
    let mut a = run(&bin, &file_a, &dir.path().join("a.log"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _b = run(&bin, &file_b, &dir.path().join("b.log"))?;
    let assigned = |name: &str| {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("kafka partitions assigned") && l.contains("takeover/"))
    };
    let waiting = Instant::now();
    while !(assigned("a.log") && assigned("b.log")) {
        if waiting.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Timeout("the two instances did not share the partitions in 60 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream_producer = producer.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let sequence = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let produced = sequence.clone();
    let stream = tokio::spawn(async move {
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            let i = produced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for partition in 0..4 {
                let payload = event(&format!("p{partition}-{i}"), &format!("alert{partition}"));
                let record = FutureRecord::to("takeover").partition(partition).key("k").payload(&payload);
                let _ = stream_producer.send(record, Duration::from_secs(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = a.0.kill();
    let killed = Instant::now();
    let after_kill = sequence.load(std::sync::atomic::Ordering::Relaxed) + 1;
    let _ = a.0.wait();
    let mut recovered: HashMap<i32, Instant> = HashMap::new();
    while recovered.len() < 4 {
        if killed.elapsed() > Duration::from_secs(120) {
            return Err(BenchError::Timeout(format!("not every partition recovered in 120 s: {recovered:?}")));
        }
        for (id, at) in deliveries(&seen).iter() {
            let Some((partition, i)) = id.strip_prefix('p').and_then(|rest| rest.split_once('-')) else { continue };
            let (Ok(partition), Ok(i)) = (partition.parse::<i32>(), i.parse::<usize>()) else { continue };
            if i > after_kill {
                recovered.entry(partition).or_insert(*at);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stream.await;
    let takeover = recovered.values().map(|at| at.duration_since(killed)).max().unwrap_or_default();
    println!(
        "takeover: every partition delivering again {:.2} s after kill -9 of one of two instances \
         (session_timeout_ms = {session_ms})",
        takeover.as_secs_f64()
    );
    Ok(())
}
