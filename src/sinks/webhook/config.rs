//! The `webhook` sink's configuration: every field is user documentation, every default
//! is explicit. [`WebhookSinkConfig::validate`] checks it all without touching the network
//! and compiles it into a [`ValidatedWebhookSink`]; that one's `build` adds the HTTP client
//! and returns the running sink.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::batch::{BatchConfig, Batching};
use super::client::build_connector;
pub use super::dedupe::DedupeConfig;
use super::dial::{DialOptions, NetworkGuard};
pub use super::gate::CircuitConfig;
use super::gate::{check_rate_limit, Gate, GateSettings};
use super::proxy::{process_env, ProxyConfig};
use super::request_builder::RequestBuilder;
use super::retry::{RetryConfig, RetryPolicy};
use super::service::WebhookService;
use super::shard::Shard;
pub use super::signing::SigningConfig;
use super::sink::WebhookSink;
use super::target::Target;
pub use super::tls::TlsConfig;
use super::tls::TlsSettings;
use crate::buffer::BufferConfig;
use crate::component::{Healthcheck, SinkConfig, SinkContext, StreamSink};
use crate::error::{BuildError, FieldError};
use crate::filter::{ConditionConfig, Filter};
pub use crate::secret::SecretString;
use crate::template::digest::DigestTemplate;
use crate::template::mustache::Escape;
use crate::template::BodyTemplate;

/// Configuration of a `webhook` sink (`type = "webhook"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Where webhooks are POSTed: `http://` or `https://`, any port (default 80/443).
    /// `user:password@` before the host becomes HTTP Basic auth, percent-decoded; it is
    /// never sent anywhere else and never logged. Required.
    pub url: SecretUrl,
    /// Event types that fire this webhook (`alert-created`, `alert-resolved`, …; legacy
    /// `incident-*` names are accepted). Default: every event type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    /// Conditions that must all hold for the webhook to fire (see `docs/filters.md`).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionConfig>,
    /// A mustache body template, e.g. `'{"text": "{{ alertSummary }}"}'`.
    /// Default: the standard payload (the event as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A file holding the body template, relative to the config file; one trailing newline
    /// is not part of the body. Not with `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_file: Option<PathBuf>,
    /// `Content-Type` of the requests. Default: `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// How template values are escaped: `json` (inside JSON strings; `{{{x}}}` inserts a
    /// JSON value), `form` (URL-encoded form fields), `html`, or `none`. Default: derived
    /// from `content_type` (`json` for any JSON type, `form` for
    /// `application/x-www-form-urlencoded`, `html` for `text/html`, else `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<EscapeMode>,
    /// Extra request headers, e.g. `{ "X-Token" = "${TOKEN}" }`. Values are never logged.
    /// Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretString>,
    /// TLS settings: `tls.ca_file`, `tls.crt_file` + `tls.key_file` (client certificate),
    /// `tls.verify_certificate`, `tls.verify_hostname` (see [`TlsConfig`]).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Request settings.
    #[serde(default)]
    pub request: RequestConfig,
    /// Digests: send the events that pass the filter together, as one webhook, up to
    /// `batch.max_events` at once or `batch.timeout_secs` after the first (see
    /// [`BatchConfig`]); the template then renders a digest (`count`, `events`, `first`,
    /// `last`). Default: none, each event is its own webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchConfig>,
    /// Buffer between the sink's inputs and its deliveries: `buffer.type` (`memory` or
    /// `disk`), `buffer.max_events`, `buffer.max_bytes`, `buffer.when_full`.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Retries: `retry.attempts`, `retry.max_elapsed_secs`, backoff and `retry.on_status`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker: `circuit.failures` failed attempts in a row (default 5; `0`
    /// turns it off) stop requests for `circuit.cooldown_secs` (default 30), then one
    /// probe (see [`CircuitConfig`]).
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// Start-up check of the endpoint.
    #[serde(default)]
    pub healthcheck: HealthcheckConfig,
    /// Standard Webhooks signatures: `signing.secrets = ["${WHSEC}"]` adds `webhook-timestamp`
    /// and `webhook-signature` to every request (keys `whsec_…` for HMAC-SHA256, `whsk_…` for
    /// ed25519; several sign at once while rotating). Default: requests are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningConfig>,
    /// The HTTP proxy: `proxy.enabled`, `proxy.http`, `proxy.https`, `proxy.no_proxy`.
    /// Default: from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (or lower case).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Refuse to connect to loopback, private (RFC 1918), shared (100.64.0.0/10),
    /// link-local (169.254.0.0/16, metadata services included), unique-local (fc00::/7)
    /// and unspecified addresses, checked on the addresses actually connected to.
    /// Default: false (many receivers are internal).
    #[serde(default)]
    pub deny_private_networks: bool,
    /// Networks `deny_private_networks` lets through, e.g. `["10.1.0.0/16"]` (CIDR or
    /// single addresses). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_networks: Vec<String>,
    /// De-duplication: `dedupe.window_secs` drops an event whose alert key, event type and
    /// rendered body equal those of one delivered within that many seconds (see
    /// [`DedupeConfig`]). Default: off (no table, or `window_secs = 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<DedupeConfig>,
}

fn default_content_type() -> String {
    "application/json".to_string()
}

/// The defaults the config file gets, with an empty `url` to fill in.
impl Default for WebhookSinkConfig {
    fn default() -> Self {
        WebhookSinkConfig {
            url: SecretUrl::default(),
            triggers: None,
            conditions: Vec::new(),
            template: None,
            template_file: None,
            content_type: default_content_type(),
            escape: None,
            headers: BTreeMap::new(),
            tls: TlsConfig::default(),
            request: RequestConfig::default(),
            batch: None,
            buffer: BufferConfig::default(),
            retry: RetryConfig::default(),
            circuit: CircuitConfig::default(),
            healthcheck: HealthcheckConfig::default(),
            signing: None,
            proxy: ProxyConfig::default(),
            deny_private_networks: false,
            allow_networks: Vec::new(),
            dedupe: None,
        }
    }
}

/// How values are escaped in a custom template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EscapeMode {
    /// JSON string content; `{{{x}}}` inserts a JSON value (missing → `null`).
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// HTML entities for `& " < >`.
    Html,
    /// Values inserted as they are.
    None,
}

impl From<EscapeMode> for Escape {
    fn from(mode: EscapeMode) -> Escape {
        match mode {
            EscapeMode::Json => Escape::Json,
            EscapeMode::Form => Escape::Form,
            EscapeMode::Html => Escape::Html,
            EscapeMode::None => Escape::None,
        }
    }
}

/// Request settings of a sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Seconds a request may take, from connecting to the end of the answer. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Requests in flight at once (different alerts; one alert's events go one at a time).
    /// Default: 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// At most this many requests per `rate_limit_duration_secs` (Vector's name), evenly
    /// spaced: one every `rate_limit_duration_secs / rate_limit_num`, no burst. Events wait
    /// in the buffer meanwhile. At least 1. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_num: Option<u64>,
    /// The window of `rate_limit_num`, in seconds (above 0). Default: 1.
    #[serde(default = "default_rate_limit_duration_secs")]
    pub rate_limit_duration_secs: f64,
}

fn default_timeout_secs() -> f64 {
    30.0
}
fn default_concurrency() -> usize {
    16
}
fn default_rate_limit_duration_secs() -> f64 {
    1.0
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            timeout_secs: default_timeout_secs(),
            concurrency: default_concurrency(),
            rate_limit_num: None,
            rate_limit_duration_secs: default_rate_limit_duration_secs(),
        }
    }
}

/// Start-up check of the endpoint: a connection to its host and port, with the TLS
/// handshake for https URLs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckConfig {
    /// Whether to run it. A failed check is logged; the sink starts anyway. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

impl Default for HealthcheckConfig {
    fn default() -> Self {
        HealthcheckConfig { enabled: true }
    }
}

/// A URL that may hold a password: shown redacted in debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Target::parse(&self.0) {
            Ok(target) => write!(f, "{:?}", target.redacted()),
            Err(_) => f.write_str("\"<unparsable URL, not shown>\""),
        }
    }
}

/// A webhook sink's config, checked and compiled: what `validate` stops at and what the
/// host builds the running sink from, so nothing is compiled twice.
#[derive(Debug, Clone)]
pub struct ValidatedWebhookSink {
    /// The config it came from.
    pub config: WebhookSinkConfig,
    /// Which events fire.
    pub filter: Filter,
    /// Event → HTTP request.
    pub request_builder: RequestBuilder,
    /// Per-request time limit.
    pub timeout: Duration,
    /// When to retry.
    pub retry: RetryPolicy,
    /// TLS settings, paths resolved.
    pub tls: TlsSettings,
    /// Proxies and the SSRF guard.
    pub dial: DialOptions,
    /// Digests, if the sink batches.
    pub batching: Option<Batching>,
    /// Settings that are allowed but risky, said at load and at every start.
    pub warnings: Vec<FieldError>,
}

/// Compared by the config they came from (what they were compiled from).
impl PartialEq for ValidatedWebhookSink {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl WebhookSinkConfig {
    /// Checks every field without touching the network and compiles the sink's parts;
    /// reports every problem with its field name. `config_dir` anchors relative paths.
    pub fn validate(&self, config_dir: &Path) -> Result<ValidatedWebhookSink, Vec<FieldError>> {
        let mut errors = Vec::new();
        let target = Target::parse(&self.url.0).map_err(|e| errors.push(FieldError::new("url", e.to_string()))).ok();
        let filter = Filter::compile(self.triggers.as_deref(), &self.conditions)
            .map_err(|es| errors.extend(es.into_iter().map(|e| FieldError::new(e.field(), e.to_string()))))
            .ok();
        let batching = self.batch.as_ref().map(BatchConfig::validate).transpose().map_err(|es| errors.extend(es)).ok();
        let body = self.body(config_dir).map_err(|es| errors.extend(es)).ok();
        let headers = self.header_map().map_err(|es| errors.extend(es)).ok();
        if !(self.request.timeout_secs.is_finite() && self.request.timeout_secs > 0.0) {
            errors.push(FieldError::new("request.timeout_secs", "must be a positive number of seconds"));
        }
        if self.request.concurrency == 0 {
            errors.push(FieldError::new("request.concurrency", "must be at least 1"));
        }
        errors.extend(self.buffer.validate());
        errors.extend(self.dedupe.iter().flat_map(DedupeConfig::validate));
        errors.extend(self.retry.validate().into_iter().map(|(field, message)| FieldError::new(field, message)));
        let gate = check_rate_limit(self.request.rate_limit_num, self.request.rate_limit_duration_secs)
            .into_iter()
            .chain(self.circuit.validate());
        errors.extend(gate.map(|(field, message)| FieldError::new(field, message)));
        let mut warnings = target.as_ref().map(|target| self.clear_text_warnings(target)).unwrap_or_default();
        let signer = match self.signing.as_ref().map(SigningConfig::compile).transpose() {
            Ok(signer) => signer.map(|(signer, found)| {
                warnings.extend(found);
                signer
            }),
            Err(found) => {
                errors.extend(found);
                None
            }
        };
        let dial = self.dial_options(&mut warnings).map_err(|es| errors.extend(es)).ok();
        let needs_tls = target.as_ref().is_some_and(Target::is_https);
        let tls = self
            .tls
            .resolve(config_dir)
            .map(|tls| TlsSettings { needed: needs_tls, ..tls })
            .map_err(|es| errors.extend(es))
            .ok();
        warnings.extend(self.tls.warnings());
        warnings.extend(self.retry.warnings().into_iter().map(|(field, message)| FieldError::new(field, message)));
        match (target, filter, body, headers, tls, dial, batching) {
            (
                Some(target),
                Some(filter),
                Some((body, digest, content_type)),
                Some(headers),
                Some(tls),
                Some(dial),
                Some(batching),
            ) if errors.is_empty() => Ok(ValidatedWebhookSink {
                config: self.clone(),
                filter,
                request_builder: RequestBuilder::new(target, (body, content_type), headers)
                    .with_signer(signer)
                    .with_digest(digest),
                timeout: Duration::from_secs_f64(self.request.timeout_secs),
                retry: self.retry.policy(),
                tls,
                dial,
                batching,
                warnings,
            }),
            _ => Err(errors),
        }
    }

    /// The proxies (defaults from the environment) and the SSRF guard; warns when
    /// `allow_networks` has no effect, and that names are the proxy's to resolve.
    fn dial_options(&self, warnings: &mut Vec<FieldError>) -> Result<DialOptions, Vec<FieldError>> {
        let proxies = self.proxy.compile(&process_env);
        let guard = NetworkGuard::new(&self.allow_networks);
        let (proxies, guard) = match (proxies, guard) {
            (Ok(proxies), Ok(guard)) => (proxies, guard),
            (proxies, guard) => {
                return Err(proxies.err().into_iter().chain(guard.err()).flatten().collect());
            }
        };
        if !self.allow_networks.is_empty() && !self.deny_private_networks {
            warnings.push(FieldError::new("allow_networks", "has no effect without `deny_private_networks = true`"));
        }
        if self.deny_private_networks && proxies.as_ref().is_some_and(|p| p.any()) {
            warnings.push(FieldError::new(
                "deny_private_networks",
                "through a proxy, the proxy resolves host names: only the proxy's address and IP-literal URLs \
                 are checked (restrict what the proxy may reach in the proxy itself)",
            ));
        }
        Ok(DialOptions { proxies, guard: self.deny_private_networks.then(|| Arc::new(guard)) })
    }

    fn escape(&self) -> Escape {
        if let Some(mode) = self.escape {
            return mode.into();
        }
        let essence = self.content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence == "application/json" || essence.ends_with("+json") {
            Escape::Json
        } else if essence == "application/x-www-form-urlencoded" {
            Escape::Form
        } else if essence == "text/html" {
            Escape::Html
        } else {
            Escape::None
        }
    }

    /// The body template (a digest template for a sink with `batch`) and the content type.
    fn body(&self, config_dir: &Path) -> Result<(BodyTemplate, Option<DigestTemplate>, HeaderValue), Vec<FieldError>> {
        let content_type = header_value(&self.content_type)
            .map_err(|why| vec![FieldError::new("content_type", format!("value {why}"))])?;
        let (source, field) = match (&self.template, &self.template_file) {
            (Some(_), Some(_)) => {
                return Err(vec![FieldError::new("template", "`template` and `template_file` are both set; keep one")])
            }
            (Some(source), None) => (source.clone(), "template"),
            (None, Some(path)) => {
                let path = config_dir.join(path);
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    vec![FieldError::new("template_file", format!("cannot read {}: {e}", path.display()))]
                })?;
                // Editors end files with a newline; it is not part of the body.
                let source = source
                    .strip_suffix('\n')
                    .map(|s| s.strip_suffix('\r').unwrap_or(s))
                    .map(str::to_string)
                    .unwrap_or(source);
                (source, "template_file")
            }
            (None, None) => {
                let digest = self.batch.is_some().then_some(DigestTemplate::Standard);
                return Ok((BodyTemplate::Standard, digest, content_type));
            }
        };
        let named = |es: Vec<crate::template::TemplateError>| {
            es.into_iter().map(|e| FieldError::new(field, e.to_string())).collect::<Vec<_>>()
        };
        if self.batch.is_some() {
            let digest = DigestTemplate::custom(&source, self.escape()).map_err(named)?;
            return Ok((BodyTemplate::Standard, Some(digest), content_type));
        }
        let template = BodyTemplate::custom(&source, self.escape()).map_err(named)?;
        Ok((template, None, content_type))
    }

    fn header_map(&self) -> Result<HeaderMap, Vec<FieldError>> {
        let mut map = HeaderMap::new();
        let mut errors = Vec::new();
        for (name, value) in &self.headers {
            // The name is a key of the file (never a secret), quoted with its control
            // characters escaped when it is not a plain name; the value may be a secret and
            // is never shown.
            let field = if name.is_empty() || name.contains(|c: char| c == '.' || c.is_whitespace() || c.is_control()) {
                format!("headers.{name:?}")
            } else {
                format!("headers.{name}")
            };
            let header_name = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header_name) => header_name,
                Err(_) => {
                    errors.push(FieldError::new(
                        field,
                        "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                    ));
                    continue;
                }
            };
            if let Some(why) = reserved_header(&header_name) {
                errors.push(FieldError::new(field, why));
                continue;
            }
            match header_value(value.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    map.insert(header_name, value);
                }
                Err(why) => errors.push(FieldError::new(field, format!("value {why} (the value is not shown)"))),
            }
        }
        if errors.is_empty() {
            Ok(map)
        } else {
            Err(errors)
        }
    }

    /// Warnings for credentials that would cross the network unencrypted: the URL's
    /// `user:password@` or a header that looks like it carries a credential, over
    /// `http://` to a host that is not loopback (loopback traffic never leaves the host).
    fn clear_text_warnings(&self, target: &Target) -> Vec<FieldError> {
        if target.is_https() || target.is_loopback() {
            return Vec::new();
        }
        const MESSAGE: &str = "credentials sent in clear text over http://; use https://";
        let mut warnings = Vec::new();
        if target.authorization().is_some() {
            warnings.push(FieldError::new("url", MESSAGE));
        }
        for name in self.headers.keys().filter(|name| looks_like_a_credential(name)) {
            warnings.push(FieldError::new(format!("headers.{}", name.escape_debug()), MESSAGE));
        }
        warnings
    }
}

/// Why a header may not be set in `headers`: the ones that frame the message or manage the
/// connection (a `Content-Length` that disagrees with the body would make the kept-alive
/// connection read the rest of the body as the next request), and the sink's own
/// `webhook-id`. `None` for any other name.
fn reserved_header(name: &HeaderName) -> Option<&'static str> {
    match name.as_str() {
        "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "proxy-connection" | "te"
        | "trailer" | "upgrade" => {
            Some("is set by the HTTP client for each request (it frames the message or manages the connection)")
        }
        "webhook-id" => Some("is set by the sink: every delivery carries its own `webhook-id`"),
        // The URL names the host: a `Host` of its own would send the request to another
        // virtual host than the one the URL (and the SSRF guard, the TLS name and the
        // signature's receiver) names, or give the request two `Host`s.
        "host" => Some("is set by the HTTP client from the URL; put the host in `url`"),
        _ => None,
    }
}

/// A header value, or why it cannot be one. Only the kind of problem is said, never the
/// value (it may be a secret, e.g. from `${TOKEN}`): a line break (CR, LF) would end the
/// header and start another, and other control characters (NUL, DEL, …) are not allowed
/// in HTTP header values; a tab is.
fn header_value(value: &str) -> Result<HeaderValue, &'static str> {
    if value.contains(['\r', '\n']) {
        return Err("contains a line break (CR or LF), which could start another header; \
             check the `${VAR}` it comes from (a trailing newline?)");
    }
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err("contains a control character (NUL, DEL, …), which no HTTP header value may hold");
    }
    HeaderValue::from_str(value).map_err(|_| "is not a valid header value")
}

/// Whether a header name suggests its value is a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, or any name containing `auth`, `token`, `secret`,
/// `password`, `api-key`, `apikey` or `signature` (case-insensitive).
fn looks_like_a_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "cookie"
        || ["auth", "token", "secret", "password", "api-key", "apikey", "api_key", "signature"]
            .iter()
            .any(|word| name.contains(word))
}

impl ValidatedWebhookSink {
    /// Builds the running sink (what [`SinkConfig::build`] boxes) and its healthcheck. Only
    /// what lies outside the config can fail here (the TLS set-up).
    pub fn build(&self, cx: SinkContext) -> Result<(WebhookSink, Healthcheck), BuildError> {
        let connector = build_connector(&self.tls, &self.dial).map_err(|e| BuildError::other(e.to_string()))?;
        let healthcheck = super::healthcheck::healthcheck(
            self.request_builder.target().clone(),
            connector.clone(),
            self.config.healthcheck.enabled,
        );
        // One gate and one dedupe window for the whole sink, shared by its shards.
        let settings = GateSettings::of(&self.config);
        let gate = Arc::new(Gate::new(&cx.name, self.request_builder.target(), &settings, cx.stats.clone()));
        let dedupe = self.config.dedupe.as_ref().and_then(DedupeConfig::build).map(Arc::new);
        let request_builder = Arc::new(self.request_builder.clone());
        let concurrency = self.config.request.concurrency.max(1);
        // A digest gathers alerts together, so a batching sink delivers on one shard; and
        // a shard needs a request slot of its own.
        let runtimes = match self.batching {
            Some(_) => &[][..],
            None => &cx.shard_runtimes[..cx.shard_runtimes.len().min(concurrency - 1)],
        };
        let shards = 1 + runtimes.len();
        let shard = |index: usize| {
            // `request.concurrency` divided between the shards, the first ones taking the
            // remainder: the sink's total stays what the config says.
            let slots = concurrency / shards + usize::from(index < concurrency % shards);
            Arc::new(Shard {
                name: cx.name.clone(),
                request_builder: request_builder.clone(),
                service: WebhookService::new(connector.clone(), slots, self.timeout),
                stats: cx.stats.clone(),
                order: Default::default(),
                retry: self.retry.clone(),
                dead_letters: cx.dead_letters.clone(),
                dedupe: dedupe.clone(),
                gate: gate.clone(),
            })
        };
        let sink = WebhookSink {
            name: cx.name.clone(),
            filter: self.filter.clone(),
            stats: cx.stats.clone(),
            batching: self.batching,
            first: shard(0),
            others: runtimes.iter().enumerate().map(|(i, runtime)| (runtime.clone(), shard(i + 1))).collect(),
        };
        Ok((sink, healthcheck))
    }
}

#[async_trait]
impl SinkConfig for ValidatedWebhookSink {
    async fn build(&self, cx: SinkContext) -> Result<(Box<dyn StreamSink>, Healthcheck), BuildError> {
        let (sink, healthcheck) = ValidatedWebhookSink::build(self, cx)?;
        Ok((Box::new(sink), healthcheck))
    }

    fn buffer(&self) -> &BufferConfig {
        &self.config.buffer
    }

    fn warnings(&self) -> Vec<FieldError> {
        self.warnings.clone()
    }
}

/// Validate, then build: for hosts that hold a config rather than a checked one.
#[async_trait]
impl SinkConfig for WebhookSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<(Box<dyn StreamSink>, Healthcheck), BuildError> {
        let validated = self.validate(&cx.config_dir).map_err(BuildError::invalid)?;
        SinkConfig::build(&validated, cx).await
    }

    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shards `config` builds into with `runtimes` runtimes of other threads offered,
    /// as the request slots of each.
    fn shard_slots(config: WebhookSinkConfig, runtimes: usize) -> Vec<usize> {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let cx = SinkContext {
            name: "shards".into(),
            config_dir: dir.path().to_path_buf(),
            stats: Arc::default(),
            dead_letters: Arc::new(crate::dead_letters::DeadLetters::new(dir.path())),
            shard_runtimes: vec![runtime.handle().clone(); runtimes],
        };
        let (sink, _) = config.validate(dir.path()).unwrap().build(cx).unwrap();
        let others = sink.others.iter().map(|(_, shard)| shard.service.concurrency());
        std::iter::once(sink.first.service.concurrency()).chain(others).collect()
    }

    #[test]
    fn request_slots_are_divided_between_the_shards_and_digests_stay_on_one() {
        let with = |concurrency: usize, batch: Option<BatchConfig>| WebhookSinkConfig {
            url: SecretUrl("http://127.0.0.1:9/hook".into()),
            request: RequestConfig { concurrency, ..Default::default() },
            batch,
            ..Default::default()
        };
        assert_eq!(shard_slots(with(32, None), 1), [16, 16]);
        assert_eq!(shard_slots(with(5, None), 1), [3, 2], "the first shards take the remainder");
        assert_eq!(shard_slots(with(5, None), 2), [2, 2, 1]);
        assert_eq!(shard_slots(with(2, None), 3), [1, 1], "a shard needs a slot of its own");
        assert_eq!(shard_slots(with(1, None), 1), [1]);
        assert_eq!(shard_slots(with(32, None), 0), [32], "no other threads: one shard");
        let batch = BatchConfig { max_events: 10, timeout_secs: 1.0 };
        assert_eq!(shard_slots(with(32, Some(batch)), 1), [32], "a digest gathers alerts: one shard");
    }

    #[test]
    fn default_matches_the_file_defaults() {
        let from_file: WebhookSinkConfig = serde_json::from_value(serde_json::json!({"url": ""})).unwrap();
        assert_eq!(from_file, WebhookSinkConfig::default());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config =
            WebhookSinkConfig { url: SecretUrl("https://bob:HiddenPw123@h.example/x".into()), ..Default::default() };
        config.headers.insert("X-Token".into(), SecretString::new("TokenXyz"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("HiddenPw123") && !debug.contains("TokenXyz"), "{debug}");
        assert!(debug.contains("bob:***@h.example"), "{debug}");
        let compiled = config.validate(Path::new(".")).unwrap();
        let debug = format!("{compiled:?}");
        assert!(!debug.contains("HiddenPw123") && !debug.contains("TokenXyz"), "{debug}");
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:HiddenPw123");
        assert!(!debug.contains(&auth), "{debug}");
    }

    #[test]
    fn signing_keys_are_checked_at_load_and_never_shown() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signing = SigningConfig { secrets: vec![SecretString::new(secret)] };
        let config = WebhookSinkConfig {
            url: SecretUrl("http://h.example/x".into()),
            signing: Some(signing),
            ..Default::default()
        };
        let compiled = config.validate(Path::new(".")).unwrap();
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
        for debug in [format!("{config:?}"), format!("{compiled:?}"), format!("{compiled:#?}")] {
            assert!(!debug.contains("MfKQ9r8GKYqrTwjU"), "{debug}");
        }
        let bad = WebhookSinkConfig {
            signing: Some(SigningConfig { secrets: vec![SecretString::new("whsec_MfKQ9r8GKYqrTwjU!")] }),
            ..config
        };
        let errors = bad.validate(Path::new(".")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "signing.secrets[0]");
        assert!(!errors[0].to_string().contains("MfKQ9r8GKYqrTwjU"), "{}", errors[0]);
    }

    #[test]
    fn escape_follows_the_content_type() {
        let with = |ct: &str| WebhookSinkConfig { content_type: ct.into(), ..Default::default() }.escape();
        assert_eq!(with("application/json"), Escape::Json);
        assert_eq!(with("application/vnd.api+json; charset=utf-8"), Escape::Json);
        assert_eq!(with("application/x-www-form-urlencoded"), Escape::Form);
        assert_eq!(with("text/html"), Escape::Html);
        assert_eq!(with("text/plain"), Escape::None);
        let explicit = WebhookSinkConfig {
            escape: Some(EscapeMode::Json),
            content_type: "text/plain".into(),
            ..Default::default()
        };
        assert_eq!(explicit.escape(), Escape::Json);
    }

    fn header_errors(name: &str, value: &str) -> Vec<FieldError> {
        let mut config = WebhookSinkConfig { url: SecretUrl("https://h.example/x".into()), ..Default::default() };
        config.headers.insert(name.into(), SecretString::new(value));
        config.validate(Path::new(".")).unwrap_err()
    }

    #[test]
    fn header_values_with_line_breaks_or_control_characters_are_refused_unseen() {
        for (value, kind) in [
            ("S3cr3tTok\r\nX-Injected: 1", "line break"),
            ("S3cr3tTok\n", "line break"),
            ("S3cr3tTok\r", "line break"),
            ("S3cr3tTok\0", "control character"),
            ("S3cr3tTok\x7f", "control character"),
            ("S3cr3tTok\x1b[31m", "control character"),
        ] {
            let errors = header_errors("X-Token", value);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "headers.X-Token");
            assert!(errors[0].message.contains(kind), "{value:?}: {}", errors[0]);
            for shown in [errors[0].to_string(), format!("{errors:?}")] {
                assert!(!shown.contains("S3cr3tTok") && !shown.contains("Injected"), "{shown}");
            }
        }
        // A tab and non-ASCII text are allowed in header values.
        let mut config = WebhookSinkConfig { url: SecretUrl("https://h.example/x".into()), ..Default::default() };
        config.headers.insert("X-Note".into(), SecretString::new("a\tb caf\u{e9}"));
        assert!(config.validate(Path::new(".")).is_ok());
    }

    #[test]
    fn bad_and_reserved_header_names_are_refused() {
        let errors = header_errors("X-Bad\r\nName", "v");
        assert_eq!(errors[0].field, "headers.\"X-Bad\\r\\nName\"", "the name quoted, its control characters escaped");
        assert!(errors[0].message.contains("not a valid header name"), "{}", errors[0]);
        for name in ["Content-Length", "transfer-encoding", "Connection", "Upgrade", "TE", "webhook-id"] {
            let errors = header_errors(name, "5");
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert_eq!(errors[0].field, format!("headers.{name}"));
            assert!(errors[0].message.starts_with("is set by the"), "{}", errors[0]);
        }
    }

    #[test]
    fn content_type_with_a_line_break_is_refused() {
        let config = WebhookSinkConfig {
            url: SecretUrl("https://h.example/x".into()),
            content_type: "application/json\r\nX-Injected: 1".into(),
            ..Default::default()
        };
        let errors = config.validate(Path::new(".")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "content_type");
        assert!(errors[0].message.contains("line break") && !errors[0].message.contains("Injected"), "{}", errors[0]);
    }

    #[test]
    fn credentials_over_plain_http_are_a_warning() {
        let warned = |url: &str, headers: &[&str]| {
            let mut config = WebhookSinkConfig { url: SecretUrl(url.into()), ..Default::default() };
            for name in headers {
                config.headers.insert((*name).into(), SecretString::new("Pw0rdXyz"));
            }
            let validated = config.validate(Path::new(".")).unwrap();
            for warning in &validated.warnings {
                assert!(!warning.to_string().contains("Pw0rdXyz"), "{warning}");
                assert_eq!(warning.message, "credentials sent in clear text over http://; use https://");
            }
            validated.warnings.into_iter().map(|w| w.field).collect::<Vec<_>>()
        };
        assert_eq!(warned("http://bob:Pw0rdXyz@hooks.example/x", &[]), ["url"]);
        assert_eq!(warned("http://bob@hooks.example/x", &[]), ["url"]);
        assert_eq!(
            warned("http://hooks.example/x", &["Authorization", "X-Api-Key", "X-Team"]),
            ["headers.Authorization", "headers.X-Api-Key"]
        );
        assert!(warned("https://bob:Pw0rdXyz@hooks.example/x", &["Authorization"]).is_empty());
        assert!(warned("http://bob:Pw0rdXyz@127.0.0.1:8080/x", &["Authorization"]).is_empty(), "loopback");
        assert!(warned("http://bob:Pw0rdXyz@[::1]:8080/x", &[]).is_empty(), "loopback");
        assert!(warned("http://hooks.example/x", &["X-Team"]).is_empty());
    }
}
