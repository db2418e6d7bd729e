use super::*;
use serde_json::json;

/// Parses a mapping table written in TOML.
fn config(toml_text: &str) -> MappingConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

fn decoder(toml_text: &str) -> MappingDecoder {
    MappingDecoder::new(&config(toml_text)).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(toml_text: &str) -> Vec<FieldError> {
    MappingDecoder::new(&config(toml_text)).unwrap_err()
}

const SYSLOG: &str = r#"
    event_type = { field = "level", map = { error = "alert-created", crit = "alert-created", notice = "alert-resolved" }, default = "alert-created" }
    id = { template = "{{host}}/{{program}}" }
    summary = { template = "{{host}}: {{message}}" }
    priority = { field = "level", map = { crit = "HIGH" }, default = "LOW" }
    source_name = { value = "syslog" }
"#;

#[test]
fn the_documented_example() {
    let d = decoder(SYSLOG);
    let input = r#"{"host":"db1","program":"postgres","level":"crit","message":"disk full"}"#;
    let event = d.decode(input).unwrap();
    assert_eq!(
        event.to_json(),
        json!({
            "id": "db1/postgres",
            "summary": "db1: disk full",
            "eventType": "alert-created",
            "priority": "HIGH",
            "alertSource": {"name": "syslog"},
            "source": {"host":"db1","program":"postgres","level":"crit","message":"disk full"}
        })
    );
    let event = d.decode(r#"{"host":"db1","program":"postgres","level":"notice","message":"ok"}"#).unwrap();
    assert_eq!(event.event_type.kind(), Some(EventKind::Resolved));
    assert_eq!(event.priority, Some(Priority::Low));
}

#[test]
fn field_entries_follow_dotted_paths_and_turn_scalars_into_text() {
    let d = decoder(
        r#"
        event_type = { value = "alert-created" }
        id = { field = "seq" }
        alert_key = { field = "labels.team" }
        details = { field = "ok" }
        summary = { field = "tags.1" }
        alert_url = { field = "labels" }
        report_time = { field = "timestamp" }
        link = { field = "url" }
        status = { field = "state" }
        "#,
    );
    let event = d
        .decode(
            r#"{"seq":42,"ok":true,"tags":["a","b"],"labels":{"team":"db","n":null},
                "timestamp":"2024-05-01T10:00:00Z","url":"https://x.example/1","state":"SNOOZED"}"#,
        )
        .unwrap();
    assert_eq!(event.id.as_deref(), Some("42"));
    assert_eq!(event.alert_key.as_deref(), Some("db"));
    assert_eq!(event.details.as_deref(), Some("true"));
    assert_eq!(event.summary.as_deref(), Some("b"));
    assert_eq!(event.alert_url.as_deref(), Some(r#"{"team":"db","n":null}"#));
    assert_eq!(event.report_time.as_deref(), Some("2024-05-01T10:00:00Z"));
    assert_eq!(event.to_json()["links"], json!([{"href": "https://x.example/1"}]));
    assert_eq!(event.status, Some(AlertStatus::Other("SNOOZED".into())), "passed-through text is kept");
    // Missing, null and empty fields leave the incident field unset.
    let event = d.decode(r#"{"seq":null,"labels":{"team":""}}"#).unwrap();
    assert_eq!((event.id, event.alert_key, event.summary, event.links), (None, None, None, None));
}

#[test]
fn templates_render_unescaped_and_constants_are_constant() {
    let d = decoder(
        r#"
        event_type = { template = "alert-{{kind}}" }
        summary = { template = "{{host}} <{{message}}> {{#labels}}[{{team}}]{{/labels}}{{missing}}" }
        source_name = { value = "Vector" }
        "#,
    );
    let event = d.decode(r#"{"kind":"resolved","host":"h&1","message":"a \"b\"","labels":{"team":"ops"}}"#).unwrap();
    assert_eq!(event.event_type.as_str(), "alert-resolved");
    assert_eq!(event.summary.as_deref(), Some(r#"h&1 <a "b"> [ops]"#));
    assert_eq!(event.alert_source.unwrap().name.as_deref(), Some("Vector"));
}

#[test]
fn map_and_default() {
    let d = decoder(
        r#"
        event_type = { field = "level", map = { err = "alert-created", info = "alert-resolved" }, default = "alert-raised" }
        priority = { field = "level", map = { err = "HIGH" } }
        summary = { field = "message", default = "(no message)" }
        details = { template = "{{details}}", default = "-" }
        "#,
    );
    let get = |input: &str| d.decode(input).unwrap();
    let e = get(r#"{"level":"err","message":"m"}"#);
    assert_eq!((e.event_type.as_str(), e.priority.clone()), ("alert-created", Some(Priority::High)));
    assert_eq!(e.summary.as_deref(), Some("m"));
    let e = get(r#"{"level":"info","message":""}"#);
    assert_eq!(e.event_type.as_str(), "alert-resolved");
    assert_eq!(e.priority, Some(Priority::Other("info".into())), "no key and no default: kept as found");
    assert_eq!(e.summary.as_deref(), Some("(no message)"), "empty text takes the default");
    assert_eq!(e.details.as_deref(), Some("-"), "an empty rendering takes the default");
    let e = get(r#"{"level":"warning"}"#);
    assert_eq!(e.event_type.as_str(), "alert-raised", "no key: the default");
    assert_eq!(get("{}").event_type.as_str(), "alert-raised", "missing field: the default");
    // Map keys match exactly; numbers are matched by their text.
    let d = decoder(r#"event_type = { field = "code", map = { "2" = "incident-resolved" } }"#);
    let e = d.decode(r#"{"code":2}"#).unwrap();
    assert_eq!(e.event_type.as_str(), "incident-resolved", "legacy names are kept as written");
}

#[test]
fn the_whole_object_is_kept_under_source() {
    let d = decoder(r#"event_type = { value = "alert-created" }"#);
    let input = r#"{"z":1,"a":{"b":[1,2]},"message":"m"}"#;
    let event = d.decode(input).unwrap();
    assert_eq!(serde_json::to_string(&event.extra[SOURCE_KEY]).unwrap(), input, "as it came, in order");
    let out = serde_json::to_string(&event).unwrap();
    assert_eq!(out, format!(r#"{{"eventType":"alert-created","source":{input}}}"#));
}

#[test]
fn each_mapped_field_is_filled_by_its_key() {
    for (field, _) in MappedField::entries(&config("")) {
        let one = config(&format!(r#"{} = {{ value = "x" }}"#, field.key()));
        let filled: Vec<MappedField> =
            MappedField::entries(&one).into_iter().filter_map(|(f, entry)| entry.map(|_| f)).collect();
        assert_eq!(filled, [field]);
    }
}

#[test]
fn event_type_is_required_at_load() {
    let e = errors(r#"summary = { field = "message" }"#);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "event_type");
    assert!(e[0].message.contains("required"), "{e:?}");
}

#[test]
fn bad_templates_are_refused_at_load_with_line_and_column() {
    let e = errors(
        r#"
        event_type = { value = "alert-created" }
        summary = { template = "{{host}}\n  {{#open}}" }
        "#,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "summary.template");
    assert!(e[0].message.contains("line 2, column 3"), "{}", e[0].message);
}

#[test]
fn entries_are_checked_at_load() {
    let e = errors(
        r#"
        event_type = { field = "level", map = { err = "alert-create" }, default = "resolved" }
        id = { field = "a", template = "{{b}}" }
        alert_key = {}
        summary = { field = "a..b" }
        source_name = { value = "x", default = "y" }
        priority = { value = "high" }
        status = { field = "s", map = { ok = "DONE" } }
        "#,
    );
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "event_type.map.err",
            "event_type.default",
            "id",
            "alert_key",
            "summary.field",
            "status.map.ok",
            "priority.value",
            "source_name"
        ]
    );
    assert!(e[0].message.contains("did you mean `alert-created`"), "{}", e[0].message);
    assert!(e[2].message.contains("both `field` and `template`"), "{}", e[2].message);
    assert!(e[6].message.contains("did you mean `HIGH`"), "{}", e[6].message);
    // Unknown keys are refused by the config's shape.
    assert!(toml::from_str::<MappingConfig>(r#"sumary = { field = "x" }"#).is_err());
    assert!(toml::from_str::<MappingConfig>(r#"summary = { feild = "x" }"#).is_err());
}

#[test]
fn unknown_event_type_at_runtime_names_the_mapping_and_the_value() {
    let d = decoder(r#"event_type = { field = "level", map = { err = "alert-created" } }"#);
    let err = d.decode(r#"{"level":"warning"}"#).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("level"));
    assert!(err.message.contains("`event_type`") && err.message.contains("`warning`"), "{err}");
    let err = d.decode(r#"{"message":"no level"}"#).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("level"));
    assert!(err.message.contains("no text") && err.message.contains("`default`"), "{err}");
    let d = decoder(r#"event_type = { template = "{{kind}}" }"#);
    let err = d.decode(r#"{"kind":"alert-teleported"}"#).unwrap_err();
    assert_eq!(err.field, None);
    assert!(err.message.contains("`alert-teleported`") && err.message.contains("template"), "{err}");
}

#[test]
fn non_objects_are_refused() {
    let d = decoder(r#"event_type = { value = "alert-created" }"#);
    for (input, kind) in [("[1]", "an array"), ("\"text\"", "a string"), ("3", "a number"), ("null", "null")] {
        let err = d.decode(input).unwrap_err();
        assert!(err.message.contains(kind), "{input}: {err}");
    }
    assert!(d.decode("{").is_err());
}

#[test]
fn through_the_decoding_config_with_positions_and_prefixed_fields() {
    use super::super::{Codec, DecodingConfig};
    let decoding = DecodingConfig {
        codec: Codec::Mapped,
        mapping: Some(config(r#"event_type = { field = "level", map = { err = "alert-created" } }"#)),
        ..Default::default()
    };
    let decoder = decoding.validate().unwrap();
    let body = b"[{\"level\":\"err\"},\n {\"level\":\"debug\"}]";
    let err = decoder.decode(body).unwrap_err();
    assert_eq!((err.event, err.line, err.column), (Some(2), 2, 2));
    let ndjson = b"{\"level\":\"err\",\"n\":1}\n{\"level\":\"err\",\"n\":2}\n";
    assert_eq!(decoder.decode(ndjson).unwrap().len(), 2);
    // Fluent Bit's `json_stream`: objects back to back, no separator.
    let stream = b"{\"level\":\"err\"}{\"level\":\"err\"}";
    assert_eq!(decoder.decode(stream).unwrap().len(), 2);

    let bad = DecodingConfig {
        codec: Codec::Mapped,
        mapping: Some(config(r#"summary = { template = "{{" }"#)),
        ..Default::default()
    };
    let fields: Vec<String> = bad.validate().unwrap_err().into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["decoding.mapping.event_type", "decoding.mapping.summary.template"]);
}

#[test]
fn identity_is_the_id_the_event_type_and_the_object_when_an_id_is_mapped() {
    let d = decoder(SYSLOG);
    let disk_full = r#"{"host":"db1","program":"postgres","level":"crit","message":"disk full","ts":"10:00:00"}"#;
    let identity = |d: &MappingDecoder, text: &str| d.decode_identified(text).unwrap().identity;
    let first = identity(&d, disk_full).expect("an id is mapped");
    let digest = ring::digest::digest(&ring::digest::SHA256, disk_full.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first, format!(r#"mapped:["db1/postgres","alert-created","{hex}"]"#));
    assert_eq!(d.decode_identified(disk_full).unwrap().incident, d.decode(disk_full).unwrap());
    // The same object sent again: the same identity.
    assert_eq!(identity(&d, disk_full).as_deref(), Some(first.as_str()));
    // The same alert (`id`) and event type, but another event: another identity, so a
    // receiver that drops ids it has seen keeps it.
    let later = r#"{"host":"db1","program":"postgres","level":"crit","message":"disk full","ts":"11:00:00"}"#;
    assert_ne!(identity(&d, later).as_deref(), Some(first.as_str()));
    let resolved = r#"{"host":"db1","program":"postgres","level":"notice","message":"disk full","ts":"10:00:00"}"#;
    assert_ne!(identity(&d, resolved).as_deref(), Some(first.as_str()));

    // No `id` mapped, or none found: no identity, a fresh id each time.
    let no_id = decoder(r#"event_type = { value = "alert-created" }"#);
    assert_eq!(identity(&no_id, disk_full), None);
    let empty_id = decoder("event_type = { value = \"alert-created\" }\nid = { field = \"missing\" }");
    assert_eq!(identity(&empty_id, disk_full), None);
}

#[test]
fn through_the_decoder_a_resent_object_gets_the_same_webhook_id_however_framed() {
    use super::super::{Codec, DecodingConfig};
    use crate::event::Event;
    let decoding = DecodingConfig { codec: Codec::Mapped, mapping: Some(config(SYSLOG)), ..Default::default() };
    let decoder = decoding.validate().unwrap();
    let ids = |body: &str| -> Vec<String> {
        decoder.decode_sized(body.as_bytes()).unwrap().into_iter().map(|d| Event::decoded(d).id.to_string()).collect()
    };
    let a = r#"{"host":"db1","program":"postgres","level":"crit","message":"disk full"}"#;
    let b = r#"{"host":"db2","program":"postgres","level":"crit","message":"disk full"}"#;
    let ndjson = ids(&format!("{a}\n{b}\n"));
    assert_eq!(ndjson, ids(&format!("[ {a} ,\n {b} ]")), "an NDJSON and an array body of the same objects");
    assert_ne!(ndjson[0], ndjson[1]);
}
