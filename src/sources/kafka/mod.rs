//! The `kafka` source: a member of a Kafka consumer group, so several webhook-sink
//! instances share a topic's partitions and take over from each other (the group moves a
//! dead instance's partitions to the living ones).
//!
//! Each message is decoded by the source's `decoding` into one or more events, each with
//! the stable identity `kafka:TOPIC:PARTITION:OFFSET:INDEX` (unless the codec knows one), so
//! a message read again by another instance gets the same `webhook-id`. Offsets are
//! committed only for messages every sink is finished with (delivered, filtered out or
//! dead-lettered): per partition, the position below which everything is ([`offsets`]).
//! Full buffers pause the partitions; a rebalance commits what is finished of the revoked
//! partitions and leaves the rest to their new owner; a message that does not decode is
//! dead-lettered with its topic, partition and offset, and committed past ([`consumer`]).
//!
//! Config names follow Vector's `kafka` source where it has them.

pub mod consumer;
pub mod offsets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::decode::{Decoder, DecodingConfig};
use super::validated::ValidatedSource;
use crate::component::{Source, SourceConfig, SourceContext};
use crate::error::{BuildError, FieldError};
use crate::secret::SecretString;

/// Default of `auto_offset_reset`.
pub const DEFAULT_AUTO_OFFSET_RESET: &str = "earliest";
/// Default of `session_timeout_ms` (Vector's).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// Default of `socket_timeout_ms` (Vector's).
pub const DEFAULT_SOCKET_TIMEOUT_MS: u64 = 60_000;
/// Default of `fetch_wait_max_ms` (Vector's).
pub const DEFAULT_FETCH_WAIT_MAX_MS: u64 = 100;
/// Default of `commit_interval_ms` (Vector's).
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 5_000;

/// `auto_offset_reset` values librdkafka takes.
const OFFSET_RESETS: &[&str] = &["earliest", "smallest", "beginning", "latest", "largest", "end", "error"];

/// SASL mechanisms this build supports (GSSAPI and OAUTHBEARER are not built in).
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// librdkafka settings the source sets itself, and the key that sets each (or why).
const OWN_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "bootstrap_servers"),
    ("group.id", "group_id"),
    ("auto.offset.reset", "auto_offset_reset"),
    ("session.timeout.ms", "session_timeout_ms"),
    ("socket.timeout.ms", "socket_timeout_ms"),
    ("fetch.wait.max.ms", "fetch_wait_max_ms"),
    ("enable.auto.commit", "the source (it commits only what the sinks are finished with)"),
    ("enable.auto.offset.store", "the source (it commits only what the sinks are finished with)"),
    ("security.protocol", "tls.enabled and sasl.enabled"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password"),
    ("ssl.ca.location", "tls.ca_file"),
    ("ssl.certificate.location", "tls.crt_file"),
    ("ssl.key.location", "tls.key_file"),
    ("ssl.key.password", "tls.key_pass"),
    ("enable.ssl.certificate.verification", "tls.verify_certificate"),
    ("ssl.endpoint.identification.algorithm", "tls.verify_hostname"),
];

/// `type = "kafka"`: reads incident events from Kafka topics as a member of a consumer
/// group.
///
/// ```toml
/// [sources.kafka]
/// type = "kafka"
/// bootstrap_servers = "kafka-1:9092,kafka-2:9092"
/// topics = ["incidents"]
/// group_id = "webhook-sink"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Brokers to start from, `host:port` separated by commas. Required.
    pub bootstrap_servers: String,
    /// Topics to read. Required, at least one.
    pub topics: Vec<String>,
    /// The consumer group: instances with the same `group_id` share the partitions. Required.
    pub group_id: String,
    /// Where a group with no committed offset for a partition starts: `earliest` (the
    /// oldest message kept) or `latest` (only messages produced from now on); librdkafka's
    /// other names (`smallest`, `beginning`, `largest`, `end`, `error`) too.
    /// Default: `earliest` (Vector's is `largest`: a new group here should not miss the
    /// incidents produced before its first start).
    #[serde(default = "default_auto_offset_reset")]
    pub auto_offset_reset: String,
    /// Milliseconds without a heartbeat after which the group gives this instance's
    /// partitions to the others (how long a takeover after a crash takes, at most).
    /// Default: 10000.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Milliseconds a network request to a broker may take. Default: 60000.
    #[serde(default = "default_socket_timeout_ms")]
    pub socket_timeout_ms: u64,
    /// Longest a broker holds a fetch waiting for messages, in milliseconds. Default: 100.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u64,
    /// How often finished offsets are committed, in milliseconds (also at a rebalance and
    /// at shutdown). After a crash, up to this much finished work is delivered again.
    /// Default: 5000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// TLS to the brokers. Default: off.
    #[serde(default)]
    pub tls: KafkaTlsConfig,
    /// SASL authentication to the brokers. Default: off.
    #[serde(default)]
    pub sasl: KafkaSaslConfig,
    /// Further librdkafka settings (`"fetch.max.bytes" = "1048576"`), for what has no key
    /// of its own here; the settings above cannot be set again through it. Values are
    /// never shown (they may be secrets). Default: none.
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
    /// How a message becomes incident events. Default: incident events, depth limit 32.
    #[serde(default)]
    pub decoding: DecodingConfig,
}

/// `tls` of the `kafka` source (Vector's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTlsConfig {
    /// Connect to the brokers with TLS. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// PEM file of the CA certificates to verify the brokers with (relative to the config
    /// file). Default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for brokers that ask for one. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crt_file: Option<PathBuf>,
    /// PEM file of the private key of `crt_file`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Passphrase of `key_file`, if it is encrypted (a secret: never shown). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pass: Option<SecretString>,
    /// Verify the brokers' certificates. Default: true.
    #[serde(default = "yes")]
    pub verify_certificate: bool,
    /// Verify that a broker's certificate names the host connected to. Default: true.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

impl Default for KafkaTlsConfig {
    fn default() -> Self {
        KafkaTlsConfig {
            enabled: false,
            ca_file: None,
            crt_file: None,
            key_file: None,
            key_pass: None,
            verify_certificate: true,
            verify_hostname: true,
        }
    }
}

/// `sasl` of the `kafka` source (Vector's names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// Authenticate with SASL. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required when enabled. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// The user name; required when enabled. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (a secret: never shown); required when enabled. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
}

/// librdkafka settings by name; their values never appear in debug output.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct LibrdkafkaOptions(pub BTreeMap<String, String>);

impl std::fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|key| (key, "***"))).finish()
    }
}

fn default_auto_offset_reset() -> String {
    DEFAULT_AUTO_OFFSET_RESET.to_string()
}
fn default_session_timeout_ms() -> u64 {
    DEFAULT_SESSION_TIMEOUT_MS
}
fn default_socket_timeout_ms() -> u64 {
    DEFAULT_SOCKET_TIMEOUT_MS
}
fn default_fetch_wait_max_ms() -> u64 {
    DEFAULT_FETCH_WAIT_MAX_MS
}
fn default_commit_interval_ms() -> u64 {
    DEFAULT_COMMIT_INTERVAL_MS
}
fn yes() -> bool {
    true
}

impl KafkaSourceConfig {
    /// Checks the config (files relative to `dir`) and builds the decoder and the
    /// librdkafka settings; every problem is reported, with its key.
    pub fn validate(&self, dir: &Path) -> Result<ValidatedKafka, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut require = |field: &str, value: &str| {
            if value.trim().is_empty() {
                errors.push(FieldError::new(field, "must not be empty"));
            }
        };
        require("bootstrap_servers", &self.bootstrap_servers);
        require("group_id", &self.group_id);
        if self.topics.is_empty() {
            errors.push(FieldError::new("topics", "name at least one topic"));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if topic.trim().is_empty() {
                errors.push(FieldError::new(format!("topics[{i}]"), "must not be empty"));
            }
        }
        if !OFFSET_RESETS.contains(&self.auto_offset_reset.as_str()) {
            errors.push(FieldError::new(
                "auto_offset_reset",
                format!("`{}` is not one of {}", self.auto_offset_reset, OFFSET_RESETS.join(", ")),
            ));
        }
        let ranges = [
            ("session_timeout_ms", self.session_timeout_ms, 1_000, 3_600_000),
            ("socket_timeout_ms", self.socket_timeout_ms, 10, 300_000),
            ("fetch_wait_max_ms", self.fetch_wait_max_ms, 0, 300_000),
            ("commit_interval_ms", self.commit_interval_ms, 10, 3_600_000),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                errors.push(FieldError::new(field, format!("must be between {min} and {max}, not {value}")));
            }
        }
        let mut files = Vec::new();
        for (field, file) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.crt_file", &self.tls.crt_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            let Some(file) = file else { continue };
            let path = dir.join(file);
            if !self.tls.enabled {
                errors.push(FieldError::new(field, "is set but `tls.enabled` is false"));
            } else if !path.is_file() {
                errors.push(FieldError::new(field, format!("no such file: {}", path.display())));
            }
            files.push(path);
        }
        if self.tls.crt_file.is_some() != self.tls.key_file.is_some() {
            errors.push(FieldError::new("tls.key_file", "`tls.crt_file` and `tls.key_file` go together"));
        }
        if self.sasl.enabled {
            match self.sasl.mechanism.as_deref() {
                None => {
                    errors.push(FieldError::new("sasl.mechanism", format!("required: {}", SASL_MECHANISMS.join(", "))))
                }
                Some(m) if !SASL_MECHANISMS.contains(&m) => errors.push(FieldError::new(
                    "sasl.mechanism",
                    format!("`{m}` is not one of {}", SASL_MECHANISMS.join(", ")),
                )),
                Some(_) => {}
            }
            if self.sasl.username.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::new("sasl.username", "required when `sasl.enabled` is true"));
            }
            if self.sasl.password.is_none() {
                errors.push(FieldError::new("sasl.password", "required when `sasl.enabled` is true"));
            }
        }
        for key in self.librdkafka_options.0.keys() {
            if let Some((_, by)) = OWN_OPTIONS.iter().find(|(own, _)| own == key) {
                errors.push(FieldError::new(format!("librdkafka_options.\"{key}\""), format!("is set by {by}")));
            }
        }
        let decoder = match self.decoding.validate() {
            Ok(decoder) => Some(decoder),
            Err(more) => {
                errors.extend(more);
                None
            }
        };
        match decoder {
            Some(decoder) if errors.is_empty() => {
                let client = self.client_config(&files);
                Ok(ValidatedKafka { config: self.clone(), decoder, client: ClientSettings(client) })
            }
            _ => Err(errors),
        }
    }

    /// The librdkafka settings (files already resolved: ca, crt, key in that order).
    fn client_config(&self, files: &[PathBuf]) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (key, value) in &self.librdkafka_options.0 {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("socket.timeout.ms", self.socket_timeout_ms.to_string())
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        if !self.librdkafka_options.0.contains_key("partition.assignment.strategy") {
            // Only the partitions that move are revoked at a rebalance; the others keep
            // being read without a pause.
            client.set("partition.assignment.strategy", "cooperative-sticky");
        }
        let protocol = match (self.tls.enabled, self.sasl.enabled) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        client.set("security.protocol", protocol);
        if self.tls.enabled {
            let mut files = files.iter();
            let mut set = |key: &str, value: &Option<PathBuf>| {
                if value.is_some() {
                    if let Some(path) = files.next() {
                        client.set(key, path.display().to_string());
                    }
                }
            };
            set("ssl.ca.location", &self.tls.ca_file);
            set("ssl.certificate.location", &self.tls.crt_file);
            set("ssl.key.location", &self.tls.key_file);
            if let Some(pass) = &self.tls.key_pass {
                client.set("ssl.key.password", pass.expose());
            }
            client.set("enable.ssl.certificate.verification", self.tls.verify_certificate.to_string());
            client
                .set("ssl.endpoint.identification.algorithm", if self.tls.verify_hostname { "https" } else { "none" });
        }
        if self.sasl.enabled {
            if let Some(mechanism) = &self.sasl.mechanism {
                client.set("sasl.mechanism", mechanism);
            }
            if let Some(username) = &self.sasl.username {
                client.set("sasl.username", username);
            }
            if let Some(password) = &self.sasl.password {
                client.set("sasl.password", password.expose());
            }
        }
        client
    }

    /// Settings that are allowed but risky.
    fn risky(&self) -> Vec<FieldError> {
        let mut warnings = Vec::new();
        if self.tls.enabled && !self.tls.verify_certificate {
            warnings
                .push(FieldError::new("tls.verify_certificate", "false: the brokers' certificates are not verified"));
        }
        if self.tls.enabled && !self.tls.verify_hostname {
            warnings.push(FieldError::new("tls.verify_hostname", "false: the brokers' host names are not verified"));
        }
        if self.sasl.enabled && !self.tls.enabled && self.sasl.mechanism.as_deref() == Some("PLAIN") {
            warnings.push(FieldError::new("sasl.mechanism", "PLAIN without TLS sends the password in clear"));
        }
        warnings
    }
}

/// The librdkafka settings built from the config; never shown (they hold the secrets).
#[derive(Clone)]
pub struct ClientSettings(ClientConfig);

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSettings(***)")
    }
}

/// A `kafka` source's config, checked, with its decoder and librdkafka settings built.
#[derive(Debug, Clone)]
pub struct ValidatedKafka {
    /// The config it came from.
    pub config: KafkaSourceConfig,
    decoder: Decoder,
    client: ClientSettings,
}

/// Compared by the config they came from.
impl PartialEq for ValidatedKafka {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl ValidatedSource for ValidatedKafka {
    fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

#[async_trait]
impl SourceConfig for ValidatedKafka {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        let consumer = consumer::KafkaConsumer::new(&cx.name, &self.client.0, &self.config.topics)
            .map_err(|e| BuildError::other(format!("cannot start the Kafka consumer: {e}")))?;
        let settings =
            consumer::Settings { commit_interval: std::time::Duration::from_millis(self.config.commit_interval_ms) };
        Ok(Box::pin(consumer.run(self.decoder.clone(), cx, settings)))
    }

    fn warnings(&self) -> Vec<FieldError> {
        self.config.risky()
    }
}

/// Validate (files relative to the working directory), then build: for hosts that hold a
/// config rather than a checked one.
#[async_trait]
impl SourceConfig for KafkaSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        self.validate(Path::new(".")).map_err(BuildError::invalid)?.build(cx).await
    }

    fn warnings(&self) -> Vec<FieldError> {
        self.risky()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> KafkaSourceConfig {
        toml::from_str(&format!("bootstrap_servers = \"127.0.0.1:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n{extra}"))
            .unwrap()
    }

    fn errors(extra: &str) -> Vec<String> {
        config(extra).validate(Path::new(".")).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_are_explicit() {
        let c = config("");
        assert_eq!(c.auto_offset_reset, "earliest");
        assert_eq!(c.session_timeout_ms, 10_000);
        assert_eq!(c.socket_timeout_ms, 60_000);
        assert_eq!(c.fetch_wait_max_ms, 100);
        assert_eq!(c.commit_interval_ms, 5_000);
        assert_eq!(c.tls, KafkaTlsConfig::default());
        assert!(c.tls.verify_certificate && c.tls.verify_hostname && !c.tls.enabled);
        assert!(!c.sasl.enabled);
        let validated = c.validate(Path::new(".")).unwrap();
        let client = &validated.client.0;
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("security.protocol"), Some("plaintext"));
        assert_eq!(client.get("partition.assignment.strategy"), Some("cooperative-sticky"));
    }

    #[test]
    fn bad_settings_are_named() {
        let all = errors("auto_offset_reset = \"newest\"\nsession_timeout_ms = 5\nsasl.enabled = true\n");
        let joined = all.join("\n");
        for field in ["auto_offset_reset", "session_timeout_ms", "sasl.mechanism", "sasl.username", "sasl.password"] {
            assert!(joined.contains(field), "{field} in {joined}");
        }
        let all = errors("librdkafka_options = { \"enable.auto.commit\" = \"true\", \"fetch.max.bytes\" = \"1000\" }");
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].contains("enable.auto.commit") && all[0].contains("the source"), "{all:?}");
        let all = errors("tls.enabled = true\ntls.ca_file = \"no/such/ca.pem\"");
        assert!(all[0].contains("tls.ca_file") && all[0].contains("no/such/ca.pem"), "{all:?}");
        let bad: Result<KafkaSourceConfig, _> =
            toml::from_str("bootstrap_servers = \"x\"\ntopics = []\ngroup_id = \"g\"\nbrokers = 1");
        assert!(bad.unwrap_err().to_string().contains("brokers"));
    }

    #[test]
    fn secrets_never_show() {
        let c = config(
            "sasl.enabled = true\nsasl.mechanism = \"SCRAM-SHA-512\"\nsasl.username = \"alice\"\n\
             sasl.password = \"hunter2-sasl\"\nlibrdkafka_options = { \"ssl.keystore.password\" = \"hunter2-opt\" }\n",
        );
        let validated = c.validate(Path::new(".")).unwrap();
        let shown = format!("{c:?} {validated:?} {:#?}", validated);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice") && shown.contains("ssl.keystore.password"), "{shown}");
        assert_eq!(validated.client.0.get("sasl.password"), Some("hunter2-sasl"), "but librdkafka gets it");
        assert_eq!(validated.client.0.get("security.protocol"), Some("sasl_plaintext"));
    }
}
