//! The pipeline file: Vector-shaped `[sources.NAME]` and `[sinks.NAME]` tables, in TOML or
//! YAML (by extension), with `${VAR}` interpolation. Loading checks everything that can be
//! checked without the network and reports every problem with the file and key.

mod error;
mod interpolate;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::component::{SinkConfig, SourceConfig};
use crate::error::{prefixed, FieldError};
use crate::sinks::webhook::config::ValidatedWebhookSink;
use crate::sinks::webhook::WebhookSinkConfig;
use crate::sources::decode::Decoder;
use crate::sources::http_server::{HttpServerSourceConfig, ValidatedHttpServer};
use crate::sources::kafka::{KafkaSourceConfig, ValidatedKafka};
use crate::sources::stdin::{StdinSourceConfig, ValidatedStdin};
use crate::sources::ValidatedSource;
use crate::suggest::closest;

pub use error::{ConfigError, ConfigErrors, Location};
pub use interpolate::{interpolate, interpolate_recording, substitute, InterpolationError};
pub use schema::pipeline_schema;

/// Seconds the host waits, at shutdown, for requests in flight. Default of `shutdown_timeout_secs`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: f64 = 10.0;

/// Declares the component types of one kind (sources or sinks) in one place: the enum of
/// checked components, the `type` names the file may use, and how a table of each type is
/// read and validated. Adding a type is one line here plus its own module.
///
/// Hand-written because each line ties four things together (a variant, a `type` name, a
/// config struct, its validation) that no derive produces from one declaration.
macro_rules! component_types {
    ($(#[$doc:meta])* $enum:ident, $types:ident, $load:ident, $config_trait:ident, $file:ident {
        $($(#[$vdoc:meta])* $variant:ident($validated:ty) = $name:literal from $config:ty => $validate:expr),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $($(#[$vdoc])* $variant(Box<$validated>),)*
        }

        /// The `type` names of this kind, in the order error messages list them.
        pub const $types: &[&str] = &[$($name),*];

        /// A component of this kind as the file writes it (its `type` and its table), for
        /// the JSON Schema of the pipeline file (`webhook-sink schema`).
        #[derive(schemars::JsonSchema)]
        #[serde(tag = "type")]
        #[allow(dead_code)]
        pub enum $file {
            $($(#[$vdoc])* #[serde(rename = $name)] $variant($config),)*
        }

        impl $enum {
            /// The component behind the trait the host drives.
            pub fn as_config(&self) -> &dyn $config_trait {
                match self {
                    $($enum::$variant(c) => &**c,)*
                }
            }
        }

        impl Loader {
            /// Reads a table of type `kind` (one of the known names) and validates it:
            /// `None` when the table cannot be read as that type, `Some(None)` when it was
            /// read but is invalid (the problems are recorded either way).
            fn $load(&mut self, key: &str, kind: &str, table: Map<String, Value>, dir: &Path) -> Option<Option<$enum>> {
                match kind {
                    $($name => {
                        let config: $config = self.typed(key, table)?;
                        #[allow(clippy::redundant_closure_call)]
                        let validated = ($validate)(&config, dir);
                        let checked = self.checked(key, validated);
                        if let Some(component) = &checked {
                            let warnings = component.warnings();
                            self.warnings(key, warnings);
                        }
                        Some(checked.map(|v| $enum::$variant(Box::new(v))))
                    })*
                    _ => None,
                }
            }
        }
    };
}

component_types!(
    /// A checked source of the pipeline, one variant per `type`.
    SourceSpec, SOURCE_TYPES, load_source, ValidatedSource, SourceFile {
        /// `type = "http_server"`.
        HttpServer(ValidatedHttpServer) = "http_server" from HttpServerSourceConfig
            => |c: &HttpServerSourceConfig, _| c.validate(),
        /// `type = "kafka"`.
        Kafka(ValidatedKafka) = "kafka" from KafkaSourceConfig => |c: &KafkaSourceConfig, dir: &Path| c.validate(dir),
        /// `type = "stdin"`.
        Stdin(ValidatedStdin) = "stdin" from StdinSourceConfig => |c: &StdinSourceConfig, _| c.validate(),
    }
);

component_types!(
    /// A checked sink of the pipeline, one variant per `type`.
    SinkKind, SINK_TYPES, load_sink, SinkConfig, SinkTypeFile {
        /// `type = "webhook"`.
        Webhook(ValidatedWebhookSink) = "webhook" from WebhookSinkConfig
            => |c: &WebhookSinkConfig, dir: &Path| c.validate(dir),
    }
);

impl SourceSpec {
    /// How the source decodes what it receives (the CLI decodes `--event` files the same way).
    pub fn decoder(&self) -> &Decoder {
        self.as_config().decoder()
    }
}

/// A sink of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Names of the sources it reads.
    pub inputs: Vec<String>,
    /// The sink itself, checked.
    pub kind: SinkKind,
}

impl SinkSpec {
    /// The component behind the trait the host drives.
    pub fn as_config(&self) -> &dyn SinkConfig {
        self.kind.as_config()
    }
}

/// A loaded, checked pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Its directory: relative paths in it are resolved against this.
    pub dir: PathBuf,
    /// Sources, in file order.
    pub sources: Vec<(String, SourceSpec)>,
    /// Sinks, in file order.
    pub sinks: Vec<(String, SinkSpec)>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Where disk buffers and dead letters are kept.
    pub data_dir: PathBuf,
    /// The operator's API, when the file has an `[api]` table.
    pub api: Option<ApiConfig>,
    /// What is allowed but risky (certificates not verified, credentials over plain
    /// HTTP, …): `validate` prints these, `run` logs them at every start.
    pub warnings: Vec<ConfigError>,
}

impl PipelineConfig {
    /// The sink called `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkSpec> {
        self.sinks.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The source called `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The names of the sinks, for error messages.
    pub fn sink_names(&self) -> Vec<&str> {
        self.sinks.iter().map(|(n, _)| n.as_str()).collect()
    }
}

const TOP_LEVEL_KEYS: [&str; 5] = ["sources", "sinks", "shutdown_timeout_secs", "data_dir", "api"];

/// The `[api]` table: the operator's HTTP API (`/metrics`, `/health`, `/ready`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on, e.g. `127.0.0.1:8686` (Vector's default port). Required in
    /// the table; without an `[api]` table there is no API.
    pub address: std::net::SocketAddr,
}

/// Default of `data_dir`, relative to the config file's folder.
pub const DEFAULT_DATA_DIR: &str = "webhook-sink-data";

/// Loads and checks a pipeline file, interpolating from the process environment.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Loads and checks a pipeline file with `env` answering `${VAR}`s.
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            location: Location::File,
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(path, &text, env)
}

/// Loads and checks a pipeline from `text`, as if read from `path` (which sets the format,
/// names the file in errors and anchors relative paths).
pub fn load_str(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineConfig, ConfigErrors> {
    let one =
        |location, message: String| ConfigErrors(vec![ConfigError { file: path.to_path_buf(), location, message }]);
    let mut value = parse_document(path, text).map_err(|(location, message)| one(location, message))?;
    if !value.is_object() {
        // Checked before `${VAR}`s are read: a document that is one string has no key to
        // name an interpolation error at.
        return Err(one(Location::File, "the file must be a table of `sources` and `sinks`".into()));
    }
    let mut loader =
        Loader { file: path.to_path_buf(), errors: Vec::new(), warnings: Vec::new(), substituted: Vec::new() };
    let mut substituted = Vec::new();
    let interpolation_errors = interpolate_recording(&mut value, env, &mut substituted);
    loader.substituted = substituted;
    for e in interpolation_errors {
        loader.error(e.path, e.message);
    }
    if !loader.errors.is_empty() {
        return Err(ConfigErrors(loader.errors));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = loader.pipeline(value, &dir);
    if loader.errors.is_empty() {
        config.ok_or(ConfigErrors(Vec::new()))
    } else {
        Err(ConfigErrors(loader.errors))
    }
}

/// Parses the file's text by its extension into a JSON value.
fn parse_document(path: &Path, text: &str) -> Result<Value, (Location, String)> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "toml" => toml::from_str::<Value>(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |span| line_column(text, span.start));
            (Location::Line { line, column }, format!("TOML syntax error: {}", e.message()))
        }),
        "yaml" | "yml" => serde_yaml_ng::from_str::<Value>(text).map_err(|e| match e.location() {
            Some(l) => (Location::Line { line: l.line(), column: l.column() }, format!("YAML syntax error: {e}")),
            // serde_yaml_ng gives no position when a second document follows the first, and
            // it says so for any text after the first value too (`[0]=`); that concerns the
            // file as a whole.
            None => (
                Location::File,
                format!(
                    "YAML syntax error: {e} (the file holds more than one YAML document, or text after the end of \
                     the first one)"
                ),
            ),
        }),
        _ => Err((
            Location::File,
            format!("unknown config format `.{extension}`: use a `.toml`, `.yaml` or `.yml` file"),
        )),
    }
}

/// A key as it can be shown in a key path: as it is when it is a plain name, else quoted
/// with its special characters escaped (`""` for the empty key, `"a.b"`, `"x\n"`).
fn printable_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Collects errors while turning the document into typed components.
struct Loader {
    file: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Key paths and texts of the values that came from `${VAR}`s: never quoted.
    substituted: Vec<(String, String)>,
}

impl Loader {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let message = self.unquoted(&key, message.into());
        self.errors.push(ConfigError::at_key(&self.file, key, message));
    }

    fn warnings(&mut self, prefix: &str, warnings: Vec<FieldError>) {
        for w in prefixed(prefix, warnings) {
            let message = self.unquoted(&w.field, w.message);
            self.warnings.push(ConfigError::at_key(&self.file, w.field, message));
        }
    }

    /// `message` about `key` without the text of any value under (or above) it that came
    /// from a `${VAR}` (it may be a secret): serde quotes the value it could not read
    /// (`invalid type: string "…"`, ``unknown variant `…` ``), and so do some checks.
    fn unquoted(&self, key: &str, mut message: String) -> String {
        const HIDDEN: &str = "(a value from ${…}, not shown)";
        for (path, value) in &self.substituted {
            let related = |a: &str, b: &str| {
                a == b || a.strip_prefix(b).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            };
            if value.is_empty() || !(related(path, key) || related(key, path)) {
                continue;
            }
            message = message.replace(&format!("{value:?}"), HIDDEN).replace(&format!("`{value}`"), HIDDEN);
            // A bare value too, unless it is so short that hiding it would only garble
            // the message (`1`, `no`): such a value is no secret.
            if value.chars().count() >= 4 {
                message = message.replace(value.as_str(), HIDDEN);
            }
        }
        message
    }

    fn field_errors(&mut self, prefix: &str, errors: Vec<FieldError>) {
        for e in errors {
            let key = if e.field.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", e.field) };
            self.error(key, e.message);
        }
    }

    fn pipeline(&mut self, value: Value, dir: &Path) -> Option<PipelineConfig> {
        // `load_str` has checked that the document is a table.
        let Value::Object(mut top) = value else { return None };
        for key in top.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                let hint = closest(key, TOP_LEVEL_KEYS).map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
                self.errors.push(ConfigError::at_key(
                    &self.file,
                    printable_key(key),
                    format!("unknown key (known keys: {}){hint}", TOP_LEVEL_KEYS.join(", ")),
                ));
            }
        }
        let shutdown_timeout = match top.remove("shutdown_timeout_secs") {
            None => Duration::from_secs_f64(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            Some(v) => match v.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
                Some(secs) => Duration::from_secs_f64(secs),
                None => {
                    self.error("shutdown_timeout_secs", "must be a number of seconds, 0 or more");
                    Duration::ZERO
                }
            },
        };
        let api = match top.remove("api") {
            None => None,
            Some(Value::Object(table)) => self.typed::<ApiConfig>("api", table),
            Some(_) => {
                self.error("api", "must be a table, e.g. `[api]` with `address = \"127.0.0.1:8686\"`");
                None
            }
        };
        let data_dir = match top.remove("data_dir") {
            None => dir.join(DEFAULT_DATA_DIR),
            Some(Value::String(path)) if !path.is_empty() => dir.join(path),
            Some(_) => {
                self.error("data_dir", "must be a path");
                dir.join(DEFAULT_DATA_DIR)
            }
        };
        let source_tables = self.components(top.remove("sources"), "sources");
        // Inputs are checked against every declared source, even one with errors of its own,
        // so one mistake is not reported twice.
        let source_names: Vec<String> = source_tables.iter().map(|(n, _)| n.clone()).collect();
        let sources: Vec<(String, SourceSpec)> = source_tables
            .into_iter()
            .filter_map(|(name, table)| self.source(&name, table, dir).map(|s| (name, s)))
            .collect();
        let sink_tables = self.components(top.remove("sinks"), "sinks");
        let no_sinks = sink_tables.is_empty();
        let mut wiring: Vec<(String, Vec<String>)> = Vec::new();
        let mut sinks: Vec<(String, SinkSpec)> = Vec::new();
        for (name, table) in sink_tables {
            let Some((inputs, kind)) = self.sink(&name, table, dir) else { continue };
            if let Some(kind) = kind {
                sinks.push((name.clone(), SinkSpec { inputs: inputs.clone(), kind }));
            }
            wiring.push((name, inputs));
        }
        if no_sinks && !self.errors.iter().any(|e| e.location == Location::Key("sinks".into())) {
            self.error("sinks", "the pipeline has no sinks: add a `[sinks.NAME]` table");
        }
        self.check_names(&source_names, &wiring);
        self.check_inputs(&source_names, &wiring);
        Some(PipelineConfig {
            path: self.file.clone(),
            dir: dir.to_path_buf(),
            sources,
            sinks,
            shutdown_timeout,
            data_dir,
            api,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn components(&mut self, value: Option<Value>, section: &str) -> Vec<(String, Map<String, Value>)> {
        match value {
            None => Vec::new(),
            Some(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(name, table)| match table {
                    // Names become key paths (`sinks.NAME.url`) and log fields: an empty one,
                    // or one with a dot, white space or control characters, would make them
                    // unreadable or ambiguous.
                    _ if name.is_empty()
                        || name.contains(|c: char| c == '.' || c.is_whitespace() || c.is_control()) =>
                    {
                        self.error(
                            format!("{section}.{}", printable_key(&name)),
                            "a component name must not be empty nor hold dots, white space or control characters",
                        );
                        None
                    }
                    Value::Object(table) => Some((name, table)),
                    _ => {
                        self.error(format!("{section}.{name}"), "must be a table");
                        None
                    }
                })
                .collect(),
            Some(_) => {
                self.error(section, "must be a table of named components");
                Vec::new()
            }
        }
    }

    /// Takes the `type` key out of a component table and checks it.
    fn component_type(&mut self, key: &str, table: &mut Map<String, Value>, known: &[&str]) -> Option<String> {
        let known_list = known.join(", ");
        match table.remove("type") {
            Some(Value::String(t)) if known.contains(&t.as_str()) => Some(t),
            Some(Value::String(t)) => {
                let hint =
                    closest(&t, known.iter().copied()).map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
                self.error(
                    format!("{key}.type"),
                    format!("unknown component type `{t}` (known types: {known_list}){hint}"),
                );
                None
            }
            Some(_) => {
                self.error(format!("{key}.type"), "must be a string");
                None
            }
            None => {
                self.error(key, format!("has no `type`; known types: {known_list}"));
                None
            }
        }
    }

    fn source(&mut self, name: &str, mut table: Map<String, Value>, dir: &Path) -> Option<SourceSpec> {
        let key = format!("sources.{name}");
        let kind = self.component_type(&key, &mut table, SOURCE_TYPES)?;
        self.load_source(&key, &kind, table, dir).flatten()
    }

    /// A sink table: its inputs when it could be read (checked against the sources even if
    /// the sink has problems of its own), and the sink when it is valid too.
    fn sink(
        &mut self,
        name: &str,
        mut table: Map<String, Value>,
        dir: &Path,
    ) -> Option<(Vec<String>, Option<SinkKind>)> {
        let key = format!("sinks.{name}");
        let inputs = match table.remove("inputs") {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            Some(_) => {
                self.error(format!("{key}.inputs"), "must be a list of source names");
                Vec::new()
            }
            None => Vec::new(),
        };
        if inputs.is_empty() {
            self.error(
                format!("{key}.inputs"),
                "the sink has no inputs: name at least one source, e.g. `inputs = [\"alerts\"]`",
            );
        }
        let kind = self.component_type(&key, &mut table, SINK_TYPES)?;
        let kind = self.load_sink(&key, &kind, table, dir)?;
        Some((inputs, kind))
    }

    /// The checked component, or its problems recorded under `key`.
    fn checked<T>(&mut self, key: &str, validated: Result<T, Vec<FieldError>>) -> Option<T> {
        validated.map_err(|errors| self.field_errors(key, errors)).ok()
    }

    /// Deserializes a component's table, naming the offending key on error. serde stops
    /// at the first unknown key (`deny_unknown_fields`); each one is reported, taken out
    /// and the table read again, so every unknown key is listed and the rest of the table
    /// is still read, and then validated by the caller (its problems listed too; the
    /// recorded errors fail the load either way).
    fn typed<T: DeserializeOwned>(&mut self, key: &str, table: Map<String, Value>) -> Option<T> {
        /// More unknown keys than this in one table: the rest go unreported.
        const MAX_UNKNOWN_KEYS: usize = 32;
        let mut value = Value::Object(table);
        let mut unknown = 0;
        loop {
            let e = match serde_path_to_error::deserialize(&value) {
                Ok(typed) => return Some(typed),
                Err(e) => e,
            };
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if unknown > 0 && message.starts_with("missing field") {
                // Most likely the key misspelt as one of the unknown ones, which were
                // reported with a suggestion already.
                return None;
            }
            let full = if path == "." { key.to_string() } else { format!("{key}.{path}") };
            self.error(full, with_field_hint(&message));
            let removed = unknown_field_name(&message).is_some_and(|field| remove_unknown(&mut value, e.path(), field));
            unknown += 1;
            if !removed || unknown >= MAX_UNKNOWN_KEYS {
                return None;
            }
        }
    }

    fn check_names(&mut self, sources: &[String], sinks: &[(String, Vec<String>)]) {
        for (name, _) in sinks {
            if sources.contains(name) {
                self.error(
                    format!("sinks.{name}"),
                    format!("`{name}` names a source too; component names must be unique"),
                );
            }
        }
    }

    fn check_inputs(&mut self, sources: &[String], sinks: &[(String, Vec<String>)]) {
        let source_names: Vec<&str> = sources.iter().map(String::as_str).collect();
        for (name, inputs) in sinks {
            for (i, input) in inputs.iter().enumerate() {
                if source_names.contains(&input.as_str()) {
                    continue;
                }
                let what = if sinks.iter().any(|(n, _)| n == input) {
                    "is a sink; inputs name sources"
                } else {
                    "names no source"
                };
                let hint = closest(input, source_names.iter().copied())
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_default();
                let known = if source_names.is_empty() { "none".to_string() } else { source_names.join(", ") };
                self.error(format!("sinks.{name}.inputs[{i}]"), format!("`{input}` {what} (sources: {known}){hint}"));
            }
        }
    }
}

/// The key named by serde's "unknown field `x`, expected …" message.
fn unknown_field_name(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split_once('`').map(|(field, _)| field)
}

/// Removes the unknown key `field` at `path` (the key's own path, or its table's) from
/// `value`; whether it was there.
fn remove_unknown(value: &mut Value, path: &serde_path_to_error::Path, field: &str) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let parent = match segments.split_last() {
        Some((Segment::Map { key }, parent)) if key == field => parent,
        _ => &segments[..],
    };
    let mut at = value;
    for segment in parent {
        let next = match (segment, at) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key),
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_object_mut().is_some_and(|map| map.remove(field).is_some())
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn with_field_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((field, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(field, candidates) {
        Some(s) => format!("{message}; did you mean `{s}`?"),
        None => message.to_string(),
    }
}
