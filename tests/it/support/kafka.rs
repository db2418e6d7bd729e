//! A real Apache Kafka broker (KRaft: one combined broker and controller node) for the
//! Kafka tests, started by the test on free loopback ports with a small JVM heap, in a
//! temporary folder, and killed when dropped. The broker's jars are fetched once by
//! `scripts/fetch-kafka.sh` (which `.ci/run` calls) into the cache folder read here.
//!
//! [`Broker::start_secured`] adds three listeners for the security tests, next to the
//! plaintext one the tests produce through: `SASL_PLAINTEXT` (mechanisms `PLAIN` and
//! `SCRAM-SHA-512`; the SCRAM credential is written into the storage at format time, as
//! KRaft wants it), `SSL` and `SASL_SSL` (`PLAIN`), with a server certificate for
//! `127.0.0.1` signed by a throwaway CA (PEM key store: no keytool).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::certs::TestCerts;
use super::peer::{require, KillOnDrop};

/// The user the secured listeners know.
pub const SASL_USER: &str = "alice";
/// Its password (for `PLAIN` and `SCRAM-SHA-512`); tests check it never reaches a log.
pub const SASL_PASSWORD: &str = "kafka-S3cret-pw-7781";

/// `n` free loopback ports, all different: each is held until all are chosen (ports taken
/// one by one and released may repeat).
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

/// Ports of the listeners [`Broker::start_secured`] adds.
#[derive(Debug, Clone, Copy)]
struct SecuredPorts {
    sasl_plaintext: u16,
    ssl: u16,
    sasl_ssl: u16,
}

/// The Kafka version `scripts/fetch-kafka.sh` fetches by default.
pub const KAFKA_VERSION: &str = "4.4.0";

/// Longest wait for the broker to start.
const START_WAIT: Duration = Duration::from_secs(60);

/// The folder of the broker's jars: `WEBHOOK_SINK_KAFKA_LIBS`, else the cache folder the
/// fetch script fills. `None` (said loudly, and a failure under CI, as for other peers)
/// when Java or the jars are missing.
pub fn require_kafka() -> Option<PathBuf> {
    require("java", "openjdk-17-jre-headless", &[])?;
    let libs = match std::env::var_os("WEBHOOK_SINK_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            cache.join("webhook-sink").join(format!("kafka-{KAFKA_VERSION}")).join("libs")
        }
    };
    let complete = libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).is_file()
        || std::fs::read_dir(&libs).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-")))
        });
    if !complete {
        let message = format!(
            "\n\n*** PEER MISSING: the Apache Kafka broker is not in {} ; this test did NOT run. \
             Fetch it with `scripts/fetch-kafka.sh` (needs Java and Maven; .ci/run does it), \
             or point WEBHOOK_SINK_KAFKA_LIBS at a folder of its jars. ***\n",
            libs.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("{message}");
        return None;
    }
    Some(libs)
}

/// A running single-node broker.
pub struct Broker {
    /// The broker process (killed when dropped, before the folder goes).
    process: Option<KillOnDrop>,
    /// Storage, config and log.
    dir: tempfile::TempDir,
    port: u16,
    /// The secured listeners, if started with them.
    secured: Option<SecuredPorts>,
}

impl Broker {
    /// Formats a storage folder and starts the broker, waiting (bounded) until it takes
    /// connections. `None` when the broker is not installed (see [`require_kafka`]).
    pub async fn start() -> Option<Broker> {
        Broker::start_with(None).await
    }

    /// [`Broker::start`], plus the `SASL_PLAINTEXT`, `SSL` and `SASL_SSL` listeners (see
    /// the module's doc), the server certificate from `certs`.
    pub async fn start_secured(certs: &TestCerts) -> Option<Broker> {
        Broker::start_with(Some(certs)).await
    }

    async fn start_with(certs: Option<&TestCerts>) -> Option<Broker> {
        let libs = require_kafka()?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Distinct ports (Kafka refuses two listeners on one), held together while chosen.
        let ports = distinct_free_ports(5);
        let (port, controller) = (ports[0], ports[1]);
        let data = dir.path().join("data");
        let properties = dir.path().join("server.properties");
        let secured = certs.map(|_| SecuredPorts { sasl_plaintext: ports[2], ssl: ports[3], sasl_ssl: ports[4] });
        let (mut listeners, mut advertised, mut protocols) = (
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
            format!("PLAINTEXT://127.0.0.1:{port}"),
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
        );
        let mut security = String::new();
        if let (Some(certs), Some(ports)) = (certs, secured) {
            let SecuredPorts { sasl_plaintext, ssl, sasl_ssl } = ports;
            let more = format!(
                "SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl}"
            );
            listeners = format!("{listeners},{more}");
            advertised = format!("{advertised},{more}");
            protocols.push_str(",SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL");
            // PEM key store: the private key (PKCS#8, not encrypted, so no key password)
            // followed by the certificate.
            let keystore = dir.path().join("broker-keystore.pem");
            std::fs::write(&keystore, format!("{}{}", certs.key_pem, certs.cert_pem)).expect("write the key store");
            let plain = format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{SASL_PASSWORD}\";"
            );
            let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
            security = format!(
                "ssl.keystore.type=PEM\n\
                 ssl.keystore.location={keystore}\n\
                 ssl.truststore.type=PEM\n\
                 ssl.truststore.location={ca}\n\
                 ssl.client.auth=none\n\
                 sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}\n\
                 listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}\n\
                 listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN\n\
                 listener.name.sasl_ssl.plain.sasl.jaas.config={plain}\n",
                keystore = keystore.display(),
                ca = certs.ca_path.display(),
            );
        }
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners={listeners}\n\
                 advertised.listeners={advertised}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map={protocols}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 {security}\
                 log.dirs={}\n\
                 num.partitions=4\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 group.classic.min.session.timeout.ms=1000\n\
                 group.consumer.min.session.timeout.ms=1000\n\
                 auto.create.topics.enable=false\n",
                data.display()
            ),
        )
        .expect("write server.properties");
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(
            &log4j,
            format!(
                "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=file\nappender.file.type=File\n\
                 appender.file.name=file\nappender.file.fileName={}\nappender.file.layout.type=PatternLayout\n\
                 appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
                dir.path().join("broker.log").display()
            ),
        )
        .expect("write log4j2.properties");
        let classpath = format!("{}/*", libs.display());
        let java = |main: &str| {
            let mut command = Command::new("java");
            command
                .args(["-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"])
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .arg("-cp")
                .arg(&classpath)
                .arg(main);
            command
        };
        let mut format = java("kafka.tools.StorageTool");
        format.args(["format", "--ignore-formatted", "-t", "webhook-sink-tests-0001", "-c"]).arg(&properties);
        if secured.is_some() {
            // KRaft keeps SCRAM credentials in the metadata log: written at format time.
            format.arg("--add-scram").arg(format!("SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]"));
        }
        let format = format.output().expect("run kafka.tools.StorageTool");
        assert!(
            format.status.success(),
            "kafka.tools.StorageTool format failed: {}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let err = out.try_clone().expect("clone a file handle");
        let process =
            KillOnDrop::spawn(java("kafka.Kafka").arg(&properties).stdout(Stdio::from(out)).stderr(Stdio::from(err)));
        let broker = Broker { process: Some(process), dir, port, secured };
        broker.wait_ready().await;
        Some(broker)
    }

    /// `host:port` of the broker's listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `host:port` of the `SASL_PLAINTEXT` listener (started with [`Broker::start_secured`]).
    pub fn sasl_plaintext_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.secured().sasl_plaintext)
    }

    /// `host:port` of the `SSL` listener (started with [`Broker::start_secured`]).
    pub fn ssl_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.secured().ssl)
    }

    /// `host:port` of the `SASL_SSL` listener (started with [`Broker::start_secured`]).
    pub fn sasl_ssl_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.secured().sasl_ssl)
    }

    fn secured(&self) -> SecuredPorts {
        self.secured.expect("a broker started with Broker::start_secured")
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let log = read("broker.log") + &read("stdout.log");
        let mut start = log.len().saturating_sub(6000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
            if log.contains("Kafka Server started") {
                return;
            }
            assert!(Instant::now() < deadline, "the Kafka broker did not start within {START_WAIT:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("an admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            )
            .await
            .expect("create_topics");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("cannot create topic {topic}: {e}"));
        }
    }

    /// A producer to this broker.
    pub fn producer(&self) -> Producer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("a producer");
        Producer(producer)
    }

    /// Kills the broker now (the folder stays until drop).
    pub fn kill(&mut self) {
        self.process.take();
    }
}

/// Produces test messages, waiting for each to be acknowledged.
pub struct Producer(pub FutureProducer);

impl Producer {
    /// Sends one message with `key` (the alert key) to `topic`; returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.0.send(record, Duration::from_secs(20)).await {
            Ok(delivery) => (delivery.partition, delivery.offset),
            Err((e, _)) => panic!("cannot produce to {topic}: {e}"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.process.take();
    }
}
