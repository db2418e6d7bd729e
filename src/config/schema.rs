//! The JSON Schema of the pipeline file (`webhook-sink schema`), generated with schemars
//! from the same config structs the loader reads, so the field docs become the schema's
//! descriptions and a new field or component type appears in it by itself.
//!
//! The file is not read through one serde type (the loader checks it piece by piece to
//! report every problem), so the shapes below exist for the schema alone: they mirror
//! what the loader accepts, and a test validates every example config against them.

use std::collections::BTreeMap;

use super::{ApiConfig, SinkTypeFile, SourceFile};

/// A pipeline file: sources, the sinks that read them, and settings of the whole.
#[derive(schemars::JsonSchema)]
#[schemars(title = "webhook-sink pipeline")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PipelineFile {
    /// The sources, by name; `type` picks the kind.
    #[serde(default)]
    sources: BTreeMap<String, SourceFile>,
    /// The sinks, by name; `type` picks the kind, `inputs` lists the sources it reads.
    sinks: BTreeMap<String, SinkFile>,
    /// Seconds shutdown waits for buffered and in-flight deliveries. Default: 10.
    #[serde(default)]
    shutdown_timeout_secs: Option<f64>,
    /// Folder for disk buffers and dead letters, relative to the config file. Default:
    /// `webhook-sink-data`.
    #[serde(default)]
    data_dir: Option<String>,
    /// The operator's API (`/metrics`, `/health`, `/ready`). Default: none.
    #[serde(default)]
    api: Option<ApiConfig>,
}

/// A sink: the sources it reads, its `type`, and that type's settings.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct SinkFile {
    /// Names of the sources it reads (at least one).
    inputs: Vec<String>,
    #[serde(flatten)]
    kind: SinkTypeFile,
}

/// The JSON Schema (draft 2020-12) of the pipeline file.
pub fn pipeline_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(PipelineFile)).unwrap_or_default();
    // A sink's table is `inputs` beside its type's own keys (a flattened enum), where
    // schemars cannot say "no other keys" per variant; `unevaluatedProperties` says it
    // for the whole, so a misspelt key is flagged as the loader flags it.
    if let Some(sink) = schema.pointer_mut("/$defs/SinkFile").and_then(|s| s.as_object_mut()) {
        sink.insert("unevaluatedProperties".into(), serde_json::Value::Bool(false));
    }
    schema
}
