//! The JSON Schema of the pipeline file (`webhook-sink schema`): every pipeline in
//! `config-examples/` validates against it, and it catches what editors should flag.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use webhook_sink::config::{load_with_env, pipeline_schema};

/// Every pipeline file below `config-examples/` (the peers' own configs left out: they
/// do not load as pipelines), as JSON.
fn example_pipelines() -> Vec<(PathBuf, Value)> {
    let mut folders = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples")];
    let mut found = Vec::new();
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let value: Value = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => toml::from_str(&text).unwrap(),
                Some("yaml" | "yml") => serde_yaml_ng::from_str(&text).unwrap(),
                _ => continue,
            };
            // A pipeline is what the loader takes (any `${VAR}` set).
            let env = |name: &str| {
                let address = name.ends_with("ADDRESS") || name.ends_with("RECEIVER");
                Some(if address { "127.0.0.1:1".to_string() } else { "x".to_string() })
            };
            if load_with_env(&path, &env).is_ok() {
                found.push((path, value));
            }
        }
    }
    found
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&pipeline_schema()).expect("the schema is a valid JSON Schema")
}

#[test]
fn every_example_pipeline_validates_against_the_schema() {
    let validator = validator();
    let examples = example_pipelines();
    assert!(examples.len() >= 9, "found only {} example pipelines", examples.len());
    for (path, value) in &examples {
        let errors: Vec<String> =
            validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{}:\n{}", path.display(), errors.join("\n"));
    }
}

#[test]
fn the_schema_flags_what_the_loader_refuses() {
    let validator = validator();
    let good = json!({
        "api": {"address": "127.0.0.1:8686"},
        "sources": {"in": {"type": "http_server", "address": "127.0.0.1:8687", "decoding": {"codec": "alertmanager"}}},
        "sinks": {"chat": {"type": "webhook", "inputs": ["in"], "url": "https://h/x",
                  "signing": {"secrets": ["${S}"]}, "proxy": {"no_proxy": ["10.0.0.0/8"]},
                  "tls": {"verify_hostname": false}, "retry": {"on_status": [429, 503]},
                  "dedupe": {"window_secs": 3600}}}
    });
    assert!(validator.is_valid(&good), "{:?}", validator.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>());
    let bad = [
        json!({"sinks": {"chat": {"type": "webhook", "inputs": ["in"], "url": "https://h/", "triggerz": []}}}),
        json!({"sinks": {"chat": {"type": "webhok", "inputs": ["in"], "url": "https://h/"}}}),
        json!({"sinks": {"chat": {"type": "webhook", "url": "https://h/"}}}),
        json!({"sinks": {"chat": {"type": "webhook", "inputs": ["in"], "url": "https://h/", "retry": {"on_status": "sometimes"}}}}),
        json!({"sinks": {"chat": {"type": "webhook", "inputs": ["in"], "url": "https://h/", "dedupe": {"window": 60}}}}),
        json!({"sinks": {"chat": {"type": "webhook", "inputs": ["in"], "url": "https://h/", "dedupe": {}}}}),
        json!({"sinkz": {}, "sinks": {}}),
        json!({"sources": {"in": {"type": "http_server"}}, "sinks": {}}),
    ];
    for value in bad {
        assert!(!validator.is_valid(&value), "should be refused: {value}");
    }
}

#[test]
fn the_schema_command_prints_the_schema_with_field_docs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-sink")).arg("schema").output().unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, pipeline_schema());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Where webhooks are POSTed"), "field docs are the descriptions");
}
