//! Runs the official mustache spec (tests/fixtures/mustache-spec, see its
//! README.md) against `webhook_sink::template::mustache` with HTML escaping.

use std::path::PathBuf;

use serde_json::Value;
use webhook_sink::template::mustache::{parse, Escape, Partials};

fn run_module(module: &str) {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/mustache-spec", &format!("{module}.json")].iter().collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec: Value = serde_json::from_str(&text).expect("spec file is JSON");
    let cases = spec["tests"].as_array().expect("`tests` array");
    assert!(!cases.is_empty(), "{module}: no cases");

    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let template = case["template"].as_str().expect("template");
        let expected = case["expected"].as_str().expect("expected");
        let mut partials = Partials::new();
        if let Some(map) = case.get("partials").and_then(Value::as_object) {
            for (k, v) in map {
                partials.insert(k.clone(), v.as_str().expect("partial source"));
            }
        }
        let actual = match parse(template) {
            Ok(t) => t.render_to_string(&case["data"], Escape::Html, &partials),
            Err(e) => format!("<syntax error: {e}>"),
        };
        if actual != expected {
            failures.push(format!(
                "  {name}\n    template: {template:?}\n    expected: {expected:?}\n    actual:   {actual:?}"
            ));
        }
    }
    let passed = cases.len() - failures.len();
    println!("{module}: {passed}/{} passed", cases.len());
    assert!(
        failures.is_empty(),
        "{module}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn comments() {
    run_module("comments");
}

#[test]
fn delimiters() {
    run_module("delimiters");
}

#[test]
fn interpolation() {
    run_module("interpolation");
}

#[test]
fn inverted() {
    run_module("inverted");
}

#[test]
fn partials() {
    run_module("partials");
}

#[test]
fn sections() {
    run_module("sections");
}
