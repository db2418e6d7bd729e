//! Hostile input, fuzzed with proptest: arbitrary bytes, arbitrary JSON and
//! arbitrary-but-shaped documents go to every decoder (incident, alertmanager, mapped),
//! the framing and depth scan, the config loader (TOML and YAML) and the template parsers.
//!
//! Properties, for every input: no panic, and every error says where:
//!
//! - decode errors: line and column ≥ 1, shown in the message; when the body is
//!   well-formed JSON within the depth limit, the number of the value at fault too;
//! - config errors: the file, and a line or a non-empty key;
//! - template errors: a line and a column.
//!
//! [`CASES`] cases per property (proptest's own count; nothing is printed). A case that
//! once failed stays below as a plain regression test.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{json, Map, Value};
use webhook_sink::config::{load_str, ConfigErrors, Location};
use webhook_sink::event::{sample_event, IncidentEvent};
use webhook_sink::sources::decode::framing::{check_depth, frame};
use webhook_sink::sources::decode::{DecodeError, Decoder, DecodingConfig};
use webhook_sink::template::mustache::{self, Escape};
use webhook_sink::template::BodyTemplate;

/// Cases per property: enough to reach deep parser states, few enough that the whole file
/// runs in seconds in a debug build.
const CASES: u32 = 512;

fn config() -> Config {
    // Failures are kept as the regression tests at the end of this file, not in files
    // proptest would write next to it.
    Config { cases: CASES, failure_persistence: Some(Box::new(FileFailurePersistence::Off)), ..Config::default() }
}

// ---------------------------------------------------------------------------------------
// decoders

/// The decoders under test: each codec, the mapped one with and without a default event
/// type, with a small and the default depth limit.
fn decoders() -> Vec<(&'static str, Decoder)> {
    let mapping = json!({
        "event_type": {"field": "level", "map": {"error": "alert-created", "notice": "alert-resolved"}},
        "id": {"field": "id"},
        "alert_key": {"template": "{{host}}/{{program}}"},
        "summary": {"template": "{{host}}: {{message}}", "default": "no summary"},
        "details": {"field": "labels.team"},
        "status": {"field": "st", "map": {"open": "PENDING", "closed": "RESOLVED"}},
        "priority": {"field": "prio", "map": {"crit": "HIGH"}, "default": "LOW"},
        "report_time": {"field": "timestamp"},
        "alert_url": {"field": "url"},
        "source_name": {"value": "syslog"},
        "link": {"field": "tags.0"},
    });
    let mut with_default = mapping.clone();
    with_default["event_type"]["default"] = json!("alert-created");
    let configs = [
        ("incident", json!({})),
        ("incident, depth 3", json!({"max_depth": 3})),
        ("alertmanager", json!({"codec": "alertmanager"})),
        ("alertmanager, depth 4", json!({"codec": "alertmanager", "max_depth": 4})),
        ("mapped", json!({"codec": "mapped", "mapping": mapping})),
        ("mapped with a default", json!({"codec": "mapped", "mapping": with_default, "max_depth": 5})),
    ];
    configs
        .into_iter()
        .map(|(name, config)| {
            let config: DecodingConfig = serde_json::from_value(config).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, config.validate().unwrap_or_else(|e| panic!("{name}: {e:?}")))
        })
        .collect()
}

fn max_depth(name: &str) -> usize {
    match name {
        "incident, depth 3" => 3,
        "alertmanager, depth 4" => 4,
        "mapped with a default" => 5,
        _ => webhook_sink::sources::decode::DEFAULT_MAX_DEPTH,
    }
}

/// Decodes `body` with every decoder and checks what each says.
fn decode_everywhere(body: &[u8]) -> Result<(), TestCaseError> {
    for (name, decoder) in decoders() {
        match decoder.decode(body) {
            // An empty batch (`[]`, an Alertmanager payload with no alerts) is no events.
            Ok(_) => {}
            Err(error) => check_decode_error(name, body, &error)?,
        }
    }
    Ok(())
}

fn check_decode_error(name: &str, body: &[u8], error: &DecodeError) -> Result<(), TestCaseError> {
    check_decode_error_at(name, body, error, max_depth(name))
}

/// As [`check_decode_error`], for an error made with the depth limit `limit`.
fn check_decode_error_at(name: &str, body: &[u8], error: &DecodeError, limit: usize) -> Result<(), TestCaseError> {
    let shown = error.to_string();
    prop_assert!(error.line >= 1 && error.column >= 1, "{name}: position {}:{} in {shown}", error.line, error.column);
    prop_assert!(!error.message.trim().is_empty(), "{name}: an error without a message: {shown}");
    prop_assert!(
        shown.contains(&format!("line {}, column {}", error.line, error.column)),
        "{name}: the message shows no position: {shown}"
    );
    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    prop_assert!(error.line <= lines, "{name}: line {} of a {lines}-line body: {shown}", error.line);
    // Well-formed JSON within the depth limit: the error names the value at fault.
    if let Ok(values) = frame(body, limit) {
        match error.event {
            Some(n) => prop_assert!((1..=values.len()).contains(&n), "{name}: value {n} of {}: {shown}", values.len()),
            None => prop_assert!(false, "{name}: the JSON parsed but the error names no value: {shown}"),
        }
    }
    Ok(())
}

/// Any JSON value: every type, strings with any characters, up to 8 levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        // Strings a decoder might look for.
        prop::sample::select(vec!["alert-created", "firing", "resolved", "HIGH", "crit", "error", "", "0"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// An object key: mostly names the decoders know, sometimes anything.
fn key() -> impl Strategy<Value = String> {
    let mut known: Vec<&'static str> = IncidentEvent::FIELD_NAMES.to_vec();
    known.extend([
        "alerts",
        "labels",
        "annotations",
        "fingerprint",
        "startsAt",
        "endsAt",
        "generatorURL",
        "receiver",
        "externalURL",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "version",
        "groupKey",
        "severity",
        "alertname",
        "instance",
        "summary",
        "description",
        "level",
        "host",
        "program",
        "message",
        "st",
        "prio",
        "timestamp",
        "url",
        "tags",
        "team",
    ]);
    prop_oneof![4 => prop::sample::select(known).prop_map(str::to_string), 1 => any::<String>()]
}

/// Several values as a body: one value, a JSON array, or NDJSON; compact or pretty.
fn body_of(values: Vec<Value>, form: u8, pretty: bool) -> Vec<u8> {
    let text = |v: &Value| if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) };
    match (form % 3, values.as_slice()) {
        (0, [one, ..]) => text(one).unwrap().into_bytes(),
        (1, _) => text(&Value::Array(values)).unwrap().into_bytes(),
        _ => values.iter().map(|v| text(v).unwrap() + "\n").collect::<String>().into_bytes(),
    }
}

/// A value of any type, for a field that expects one type.
fn any_typed() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::collection::vec(any::<i8>().prop_map(Value::from), 0..3).prop_map(Value::from),
        prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,6}".prop_map(Value::from), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ]
}

/// A field's value: the right kind often (so a decoder gets past it), anything otherwise.
fn field_value(good: Vec<Value>) -> impl Strategy<Value = Value> {
    prop_oneof![2 => prop::sample::select(good), 1 => any_typed()]
}

/// An object with some of `fields`, each from its strategy, plus a few unknown keys.
fn shaped(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let n = fields.len();
    let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    (strategies, prop::collection::vec(any::<bool>(), n), prop::collection::vec((key(), any_typed()), 0..3)).prop_map(
        move |(values, present, extra)| {
            let mut object = Map::new();
            for (key, value) in extra {
                object.insert(key, value);
            }
            for ((name, value), present) in names.iter().zip(values).zip(present) {
                if present || *name == "eventType" || *name == "alerts" {
                    object.insert(name.to_string(), value);
                }
            }
            Value::Object(object)
        },
    )
}

fn strings(values: &[&str]) -> Vec<Value> {
    values.iter().map(|s| Value::from(*s)).collect()
}

/// An incident event with every known field, each of any type now and then.
fn incident_like() -> impl Strategy<Value = Value> {
    let source = shaped(vec![
        ("id", field_value(vec![json!(1), json!("src-1")]).boxed()),
        ("name", field_value(strings(&["Nagios", ""])).boxed()),
        ("escalationPolicy", field_value(vec![json!({"id": 2, "name": "ops"}), json!({})]).boxed()),
    ]);
    shaped(vec![
        ("eventType", field_value(strings(&["alert-created", "incident-resolved", "made-up", ""])).boxed()),
        ("id", field_value(strings(&["7", ""])).boxed()),
        ("status", field_value(strings(&["PENDING", "RESOLVED", "odd"])).boxed()),
        ("summary", field_value(strings(&["disk full", "caf\u{e9} \u{1f525}"])).boxed()),
        ("details", field_value(strings(&["d"])).boxed()),
        ("reportTime", field_value(strings(&["2024-01-01T00:00:00Z", "yesterday"])).boxed()),
        ("priority", field_value(strings(&["HIGH", "LOW", "MEDIUM"])).boxed()),
        ("alertKey", field_value(strings(&["k"])).boxed()),
        ("alertSource", source.boxed()),
        ("assignedTo", field_value(vec![json!({"id": 1, "email": "a@b"}), json!(null)]).boxed()),
        ("links", field_value(vec![json!([{"href": "https://x"}]), json!([]), json!([1])]).boxed()),
        ("responders", field_value(vec![json!([{"id": 1}]), json!([])]).boxed()),
        ("alertUrl", field_value(strings(&["https://x"])).boxed()),
    ])
}

/// An Alertmanager payload with 0–3 alerts, each field of any type now and then.
fn alertmanager_like() -> impl Strategy<Value = Value> {
    let labels = || {
        field_value(vec![
            json!({"alertname": "DiskFull", "instance": "db1", "severity": "critical"}),
            json!({"severity": "page"}),
            json!({}),
        ])
        .boxed()
    };
    let alert = shaped(vec![
        ("status", field_value(strings(&["firing", "resolved", "pending"])).boxed()),
        ("fingerprint", field_value(strings(&["abc123", ""])).boxed()),
        ("labels", labels()),
        ("annotations", field_value(vec![json!({"summary": "s", "description": "d"}), json!({})]).boxed()),
        ("startsAt", field_value(strings(&["2024-01-01T00:00:00Z"])).boxed()),
        ("endsAt", field_value(strings(&["0001-01-01T00:00:00Z"])).boxed()),
        ("generatorURL", field_value(strings(&["http://prom/graph"])).boxed()),
    ]);
    shaped(vec![
        (
            "alerts",
            prop_oneof![4 => prop::collection::vec(alert, 0..4).prop_map(Value::from), 1 => any_typed()].boxed(),
        ),
        ("version", field_value(strings(&["4"])).boxed()),
        ("groupKey", field_value(strings(&["{}:{}"])).boxed()),
        ("status", field_value(strings(&["firing", "resolved"])).boxed()),
        ("receiver", field_value(strings(&["ops", ""])).boxed()),
        ("groupLabels", labels()),
        ("commonLabels", labels()),
        ("commonAnnotations", labels()),
        ("externalURL", field_value(strings(&["http://am"])).boxed()),
    ])
}

/// A log event for the mapped codec: the mapping's paths, each of any type now and then.
fn log_like() -> impl Strategy<Value = Value> {
    shaped(vec![
        ("level", field_value(strings(&["error", "notice", "debug", ""])).boxed()),
        ("id", field_value(strings(&["7"])).boxed()),
        ("host", field_value(strings(&["db1", ""])).boxed()),
        ("program", field_value(strings(&["postgres"])).boxed()),
        ("message", field_value(strings(&["disk full"])).boxed()),
        ("labels", field_value(vec![json!({"team": "db"}), json!({"team": [1]}), json!({})]).boxed()),
        ("st", field_value(strings(&["open", "closed", "odd"])).boxed()),
        ("prio", field_value(strings(&["crit", "low"])).boxed()),
        ("timestamp", field_value(strings(&["2024-01-01T00:00:00Z"])).boxed()),
        ("url", field_value(strings(&["https://x"])).boxed()),
        ("tags", field_value(vec![json!(["a", "b"]), json!([]), json!([{"x": 1}])]).boxed()),
    ])
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at all, mostly JSON-ish punctuation.
    #[test]
    fn decoders_take_arbitrary_bytes(body in prop::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => prop::sample::select(b"{}[]\":,\\ \n\r\t0123456789.eE+-truefalsn\xff\xc3".to_vec()),
        ],
        0..300,
    )) {
        decode_everywhere(&body)?;
    }

    /// Any JSON values, as one value, an array or NDJSON.
    #[test]
    fn decoders_take_arbitrary_json(values in prop::collection::vec(any_json(), 1..4), form in any::<u8>(), pretty in any::<bool>()) {
        decode_everywhere(&body_of(values, form, pretty))?;
    }

    /// Objects shaped like each codec's input, with random types in each field.
    #[test]
    fn decoders_take_shaped_objects_with_random_types(
        incidents in prop::collection::vec(incident_like(), 1..3),
        payloads in prop::collection::vec(alertmanager_like(), 1..3),
        logs in prop::collection::vec(log_like(), 1..3),
        form in any::<u8>(),
        pretty in any::<bool>(),
    ) {
        decode_everywhere(&body_of(incidents, form, pretty))?;
        decode_everywhere(&body_of(payloads, form, pretty))?;
        decode_everywhere(&body_of(logs, form, pretty))?;
    }

    /// Deep nesting, broken or not: the depth scan and the framing refuse with a position.
    #[test]
    fn framing_and_depth_scan_take_deep_nesting(
        opens in prop::collection::vec(prop::sample::select(vec!["[", "{\"a\":", "{\"[\":", "[\"]\",", "\"\\\"\","]), 0..300),
        closes in any::<bool>(),
        tail in "[\\[\\]{}\",\\\\ \n]{0,10}",
        limit in 1usize..200,
    ) {
        let mut text: String = opens.concat();
        text.push('1');
        if closes {
            for open in opens.iter().rev() {
                text.push_str(if open.starts_with('[') { "]" } else if open.starts_with('{') { "}" } else { "" });
            }
        }
        text.push_str(&tail);
        let body = text.as_bytes();
        for result in [check_depth(body, limit).map(|_| 0), frame(body, limit).map(|v| v.len())] {
            if let Err(error) = result {
                // Judged at the limit it was made with: deeper than `limit` is no value's fault.
                check_decode_error_at("framing", body, &error, limit)?;
            }
        }
        // Well past serde_json's own recursion limit (128) when the limit allows it.
        if let Err(error) = frame(body, 1000) {
            prop_assert!(error.line >= 1 && error.column >= 1, "{error}");
        }
        decode_everywhere(body)?;
    }

    /// The framing of arbitrary bytes, at any limit.
    #[test]
    fn framing_takes_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..200), limit in 0usize..40) {
        for result in [check_depth(&body, limit).map(|_| 0), frame(&body, limit).map(|v| v.len())] {
            if let Err(error) = result {
                check_decode_error_at("framing", &body, &error, limit)?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// the config loader

fn check_config_errors(file: &str, errors: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "{file}: refused with no error at all");
    for error in &errors.0 {
        let shown = error.to_string();
        prop_assert!(shown.starts_with(&format!("{file}:")), "the file is not named: {shown}");
        prop_assert!(!error.message.trim().is_empty(), "no message: {shown}");
        match &error.location {
            Location::Line { line, column } => prop_assert!(*line >= 1 && *column >= 1, "{shown}"),
            Location::Key(key) => prop_assert!(!key.is_empty(), "an empty key: {shown}"),
            // Only what concerns the whole file names no line or key.
            Location::File => prop_assert!(
                error.message.starts_with("the file must be a table")
                    || error.message.starts_with("unknown config format")
                    || error.message.contains("more than one YAML document"),
                "neither a line nor a key: {shown}"
            ),
        }
    }
    Ok(())
}

fn load_checked(file: &str, text: &str) -> Result<(), TestCaseError> {
    let env = |name: &str| (name == "SET").then(|| "value\r\n".to_string());
    if let Err(errors) = load_str(Path::new(file), text, &env) {
        check_config_errors(file, &errors)?;
    }
    Ok(())
}

/// A value for a config key: sensible ones often, any type otherwise.
fn config_value() -> impl Strategy<Value = Value> {
    let good = strings(&[
        "webhook",
        "http_server",
        "stdin",
        "alerts",
        "127.0.0.1:8687",
        "https://h.example/x",
        "http://u:p@h.example/",
        "${SET}",
        "${UNSET}",
        "${",
        "$$",
        "{{alertSummary}}",
        "{{#x}}",
        "memory",
        "disk",
        "all",
        "json",
        "",
    ]);
    prop_oneof![
        3 => prop::sample::select(good),
        1 => any_typed(),
        1 => prop::collection::vec(prop::sample::select(strings(&["alerts", "alert-created", "x"])), 0..3).prop_map(Value::from),
    ]
}

fn config_key() -> impl Strategy<Value = String> {
    let known = vec![
        "type",
        "inputs",
        "url",
        "address",
        "path",
        "triggers",
        "template",
        "template_file",
        "content_type",
        "escape",
        "headers",
        "tls",
        "request",
        "retry",
        "buffer",
        "healthcheck",
        "decoding",
        "auth",
        "conditions",
        "max_body_bytes",
        "acknowledgements",
        "on_status",
        "attempts",
        "codec",
        "mapping",
        "max_depth",
        "field",
        "equals",
        "timeout_secs",
        "concurrency",
        "ca_file",
        "strategy",
        "token",
    ];
    prop_oneof![4 => prop::sample::select(known).prop_map(str::to_string), 1 => "\\PC{0,8}"]
}

/// A component table: random known (and unknown) keys, values of any type, nested a bit.
fn component() -> impl Strategy<Value = Value> {
    let table = prop::collection::btree_map(config_key(), config_value(), 0..6);
    (
        table,
        prop::collection::btree_map(
            config_key(),
            prop::collection::btree_map(config_key(), config_value(), 0..3),
            0..3,
        ),
    )
        .prop_map(|(flat, nested)| {
            let mut map: Map<String, Value> = flat.into_iter().collect();
            for (key, inner) in nested {
                map.insert(key, Value::Object(inner.into_iter().collect()));
            }
            Value::Object(map)
        })
}

/// A pipeline document: `sources` and `sinks` tables of random components, maybe other
/// top-level keys.
fn pipeline() -> impl Strategy<Value = Value> {
    let components = || prop::collection::btree_map("[a-z_]{0,6}", component(), 0..3);
    (components(), components(), prop::collection::btree_map(config_key(), config_value(), 0..2)).prop_map(
        |(sources, sinks, top)| {
            let mut document: Map<String, Value> = top.into_iter().collect();
            document.insert("sources".into(), Value::Object(sources.into_iter().collect()));
            document.insert("sinks".into(), Value::Object(sinks.into_iter().collect()));
            Value::Object(document)
        },
    )
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text as TOML and as YAML.
    #[test]
    fn the_loader_takes_arbitrary_text(text in prop_oneof![
        any::<String>(),
        "[\\[\\]{}=:\"'#\\-\n a-z0-9.,|>&*!%@`]{0,200}",
    ]) {
        load_checked("fuzz.toml", &text)?;
        load_checked("fuzz.yaml", &text)?;
    }

    /// Well-formed documents with random keys and values, as TOML and as YAML.
    #[test]
    fn the_loader_takes_documents_with_random_keys_and_values(document in pipeline()) {
        // TOML has no null: a document holding one cannot be written as TOML.
        if let Ok(text) = toml::to_string(&document) {
            load_checked("fuzz.toml", &text)?;
        }
        let text = serde_yaml_ng::to_string(&document).expect("any JSON value is YAML");
        load_checked("fuzz.yml", &text)?;
    }
}

// ---------------------------------------------------------------------------------------
// templates

const ESCAPES: [Escape; 4] = [Escape::Json, Escape::Form, Escape::Html, Escape::None];

fn check_template(source: &str) -> Result<(), TestCaseError> {
    match mustache::parse(source) {
        Ok(_) => {}
        Err(error) => {
            prop_assert!(error.line >= 1 && error.column >= 1, "{error}");
            let lines = source.split('\n').count();
            prop_assert!(error.line <= lines, "line {} of {lines}: {error}", error.line);
            let position = format!("line {}, column {}: ", error.line, error.column);
            prop_assert!(error.to_string().starts_with(&position), "{error}");
            prop_assert!(!error.message.trim().is_empty(), "{error}");
        }
    }
    for escape in ESCAPES {
        match BodyTemplate::custom(source, escape) {
            Ok(body) => {
                // A template that loads renders, and a JSON one renders JSON for the sample.
                let rendered = body.render(&sample_event());
                prop_assert!(rendered.is_ok() || escape == Escape::Json, "{escape:?}: {rendered:?}");
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty(), "refused with no error");
                for error in errors {
                    let shown = error.to_string();
                    prop_assert!(shown.contains("line ") && shown.contains("column "), "no line and column: {shown}");
                }
            }
        }
    }
    Ok(())
}

/// Template text from mustache's own pieces, so the parser's deeper states are reached.
fn template_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "{{",
        "}}",
        "{{{",
        "}}}",
        "{{#",
        "{{/",
        "{{^",
        "{{!",
        "{{>",
        "{{&",
        "{{=",
        "=}}",
        "{{=<% %>=}}",
        "<%",
        "%>",
        "<%={{ }}=%>",
        "alertSummary",
        "event.labels",
        "event",
        ".",
        "x",
        " ",
        "\n",
        "\r\n",
        "\t",
        "\"",
        ",",
        ":",
        "[",
        "]",
        "{",
        "}",
        "\\",
        "é",
        "🔥",
        "\u{0}",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Any text as a template.
    #[test]
    fn the_template_parsers_take_arbitrary_text(source in any::<String>()) {
        check_template(&source)?;
    }

    /// Text made of mustache's tags and delimiters.
    #[test]
    fn the_template_parsers_take_tag_soup(source in template_text()) {
        check_template(&source)?;
    }
}

// ---------------------------------------------------------------------------------------
// regressions: cases the properties above once failed on

/// A YAML or TOML file that is not a table (here a YAML string) was reported at the empty
/// key, shown as "fuzz.yaml: ``: …" (and a `${` in a document that is one string was
/// reported at the empty key too); it now names the file as a whole.
#[test]
fn a_file_that_is_not_a_table_names_the_file_not_an_empty_key() {
    for (file, text) in [("fuzz.yaml", "®"), ("fuzz.yaml", "[1, 2]"), ("fuzz.yml", "- a"), ("fuzz.yaml", "${")] {
        let errors = load_str(Path::new(file), text, &|_| None).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].location, Location::File);
        assert_eq!(errors.to_string(), format!("{file}: the file must be a table of `sources` and `sinks`"));
    }
}

/// An empty key, or a component name that is empty or holds a dot, was shown raw in the
/// key path (``, `sinks.`, `sinks.a.b.url`); such keys are now quoted, and such component
/// names refused.
#[test]
fn odd_keys_are_quoted_and_odd_component_names_refused() {
    let text = "\"\" = \"${UNSET}\"\n[sources.alerts]\ntype = \"stdin\"\n\
                [sinks.\"\"]\ntype = \"webhook\"\n[sinks.\"a.b\"]\ntype = \"webhook\"\n";
    let errors = load_str(Path::new("fuzz.toml"), text, &|_| None).unwrap_err();
    let keys: Vec<String> = errors
        .0
        .iter()
        .map(|e| match &e.location {
            Location::Key(key) => key.clone(),
            other => panic!("{other:?}: {e}"),
        })
        .collect();
    assert_eq!(keys, ["\"\""], "the interpolation error comes first, alone: {errors}");
    let errors = load_str(Path::new("fuzz.toml"), &text.replace("${UNSET}", "x"), &|_| None).unwrap_err();
    let shown = errors.to_string();
    for key in
        ["`\"\"`: unknown key", "`sinks.\"\"`: a component name must not be empty", "`sinks.\"a.b\"`: a component"]
    {
        assert!(shown.contains(key), "{key} in:\n{shown}");
    }
}
