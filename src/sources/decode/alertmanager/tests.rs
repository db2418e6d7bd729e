use serde_json::json;

use super::*;
use crate::sources::decode::{Codec, DecodingConfig};

/// The shape of Alertmanager's documented webhook payload (version 4): one group with
/// a firing and a resolved alert.
const PAYLOAD: &str = r#"{
    "version": "4",
    "groupKey": "{}/{severity=~\"critical|warning\"}:{alertname=\"ProbeFailure\"}",
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "webhook-sink",
    "groupLabels": {"alertname": "ProbeFailure"},
    "commonLabels": {"alertname": "ProbeFailure", "job": "http_checks"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example.org:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ProbeFailure", "instance": "https://server.example.org",
                       "job": "http_checks", "severity": "Critical", "team": "web"},
            "annotations": {"summary": "BlackBox Probe Failure: https://server.example.org",
                            "description": "Instance https://server.example.org has been down for over 5m.",
                            "runbook_url": "https://runbooks.example.org/probe-failure"},
            "startsAt": "2023-02-06T13:08:45.828Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f"
        },
        {
            "status": "resolved",
            "labels": {"alertname": "ProbeFailure", "instance": "https://other.example.org",
                       "job": "http_checks", "severity": "warning"},
            "annotations": {},
            "startsAt": "2023-02-06T12:58:45.828Z",
            "endsAt": "2023-02-06T13:07:45.828Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
            "fingerprint": "7c4e2d2a8b1f0e93"
        }
    ]
}"#;

fn decoder() -> AlertmanagerDecoder {
    AlertmanagerDecoder::new(&AlertmanagerConfig::default()).unwrap()
}

fn decode(payload: &Value) -> Result<Vec<IncidentEvent>, DecodeError> {
    decoder().decode(&payload.to_string())
}

/// A payload with one alert made of `alert`'s fields over a minimal firing alert.
fn one_alert(alert: Value) -> Value {
    let mut base = json!({"status": "firing", "labels": {"alertname": "HighLoad"}, "fingerprint": "f1"});
    for (name, value) in alert.as_object().unwrap() {
        base[name] = value.clone();
    }
    json!({"version": "4", "status": "firing", "receiver": "team-a", "alerts": [base]})
}

#[test]
fn a_firing_and_a_resolved_alert() {
    let events = decoder().decode(PAYLOAD).unwrap();
    assert_eq!(events.len(), 2);

    let firing = events[0].to_json();
    let expected = json!({
        "id": "1a30ba71cca2921f",
        "status": "PENDING",
        "summary": "BlackBox Probe Failure: https://server.example.org",
        "details": "Instance https://server.example.org has been down for over 5m.",
        "reportTime": "2023-02-06T13:08:45.828Z",
        "eventType": "alert-created",
        "priority": "HIGH",
        "alertKey": "1a30ba71cca2921f",
        "alertUrl": "http://alertmanager.example.org:9093",
        "alertSource": {"name": "Alertmanager (webhook-sink)"},
        "links": [{"href": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
                   "text": "Prometheus"}],
        "labels": {"alertname": "ProbeFailure", "instance": "https://server.example.org",
                   "job": "http_checks", "severity": "Critical", "team": "web"},
        "annotations": {"summary": "BlackBox Probe Failure: https://server.example.org",
                        "description": "Instance https://server.example.org has been down for over 5m.",
                        "runbook_url": "https://runbooks.example.org/probe-failure"},
        "startsAt": "2023-02-06T13:08:45.828Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
        "fingerprint": "1a30ba71cca2921f",
        "version": "4",
        "groupKey": "{}/{severity=~\"critical|warning\"}:{alertname=\"ProbeFailure\"}",
        "truncatedAlerts": 0,
        "groupStatus": "firing",
        "receiver": "webhook-sink",
        "groupLabels": {"alertname": "ProbeFailure"},
        "commonLabels": {"alertname": "ProbeFailure", "job": "http_checks"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.org:9093"
    });
    assert_eq!(firing, expected);
    // The extra fields keep the payload's order: alert fields, then group fields.
    assert_eq!(serde_json::to_string(&firing).unwrap(), serde_json::to_string(&expected).unwrap());

    let resolved = &events[1];
    assert_eq!(resolved.event_type.kind(), Some(EventKind::Resolved));
    assert_eq!(resolved.status, Some(AlertStatus::Resolved));
    assert_eq!(resolved.id.as_deref(), Some("7c4e2d2a8b1f0e93"));
    assert_eq!(resolved.alert_identity(), Some("7c4e2d2a8b1f0e93"));
    assert_eq!(resolved.report_time.as_deref(), Some("2023-02-06T13:07:45.828Z"), "endsAt when resolved");
    assert_eq!(resolved.summary.as_deref(), Some("ProbeFailure on https://other.example.org"));
    assert_eq!(resolved.details, resolved.summary);
    assert_eq!(resolved.priority, Some(Priority::Low));
    assert_eq!(resolved.extra["groupStatus"], "firing");
    assert_eq!(resolved.extra["annotations"], json!({}));
}

#[test]
fn templates_reach_labels_annotations_and_group_fields() {
    use crate::template::mustache::Escape;
    use crate::template::BodyTemplate;
    let template = BodyTemplate::custom(
        "{{eventType}} {{alertId}} {{event.labels.team}} {{event.annotations.runbook_url}} \
         {{event.receiver}} {{event.groupStatus}} {{event.commonLabels.job}} {{link}}",
        Escape::None,
    )
    .unwrap();
    let events = decoder().decode(PAYLOAD).unwrap();
    let body = template.render(&events[0]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "alert-created 1a30ba71cca2921f web https://runbooks.example.org/probe-failure webhook-sink firing \
         http_checks http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1"
    );
}

#[test]
fn summary_and_details_fallbacks() {
    let event = |alert: Value| decode(&one_alert(alert)).unwrap().remove(0);

    let e = event(json!({"annotations": {"summary": "Load is high", "description": "5 min load above 10"}}));
    assert_eq!((e.summary.as_deref(), e.details.as_deref()), (Some("Load is high"), Some("5 min load above 10")));

    let e = event(json!({"labels": {"alertname": "HighLoad", "instance": "db1:9100"}}));
    assert_eq!(e.summary.as_deref(), Some("HighLoad on db1:9100"));
    assert_eq!(e.details.as_deref(), Some("HighLoad on db1:9100"));

    // Empty annotations count as absent (Prometheus templates often render to "").
    let e = event(json!({"annotations": {"summary": "", "description": ""}}));
    assert_eq!((e.summary.as_deref(), e.details.as_deref()), (Some("HighLoad"), Some("HighLoad")));

    let e = event(json!({"labels": {}, "annotations": {"description": "no name"}}));
    assert_eq!(e.summary.as_deref(), Some("Alertmanager alert f1"));
    assert_eq!(e.details.as_deref(), Some("no name"));

    // No labels, annotations, times or links at all: nothing made up.
    let e = event(json!({"labels": null}));
    assert_eq!(e.report_time, None);
    assert_eq!(e.links, None);
    assert_eq!(e.alert_url, None);
    assert!(!e.extra.contains_key("labels"));

    // Alertmanager's zero time (a still-firing alert's `endsAt`) is no report time.
    let e = event(json!({"status": "resolved", "endsAt": "0001-01-01T00:00:00Z", "startsAt": "2024-01-01T00:00:00Z"}));
    assert_eq!(e.report_time, None);
}

#[test]
fn source_name_defaults_to_the_receiver_and_can_be_set() {
    let payload = one_alert(json!({}));
    let name = |events: Vec<IncidentEvent>| events[0].alert_source.as_ref().unwrap().name.clone().unwrap();
    assert_eq!(name(decode(&payload).unwrap()), "Alertmanager (team-a)");

    let mut anonymous = payload.clone();
    anonymous.as_object_mut().unwrap().remove("receiver");
    assert_eq!(name(decode(&anonymous).unwrap()), "Alertmanager");

    let config = AlertmanagerConfig { source_name: Some("Prometheus prod".into()), ..Default::default() };
    let decoder = AlertmanagerDecoder::new(&config).unwrap();
    assert_eq!(name(decoder.decode(&payload.to_string()).unwrap()), "Prometheus prod");
}

#[test]
fn priority_mapping() {
    let priority = |config: &AlertmanagerConfig, labels: Value| {
        let payload = one_alert(json!({ "labels": labels }));
        AlertmanagerDecoder::new(config).unwrap().decode(&payload.to_string()).unwrap()[0].priority.clone()
    };
    let default = AlertmanagerConfig::default();
    assert_eq!(priority(&default, json!({"severity": "critical"})), Some(Priority::High));
    assert_eq!(priority(&default, json!({"severity": "CRITICAL"})), Some(Priority::High), "case-insensitive");
    assert_eq!(priority(&default, json!({"severity": "warning"})), Some(Priority::Low));
    assert_eq!(priority(&default, json!({"severity": ""})), Some(Priority::Low));
    assert_eq!(priority(&default, json!({})), Some(Priority::Low), "no label: LOW");

    let custom = AlertmanagerConfig {
        priority_label: "urgency".into(),
        high_priority_values: vec!["Page".into(), "P1".into()],
        ..Default::default()
    };
    assert_eq!(priority(&custom, json!({"urgency": "page"})), Some(Priority::High));
    assert_eq!(priority(&custom, json!({"urgency": "p1"})), Some(Priority::High));
    assert_eq!(priority(&custom, json!({"urgency": "P2", "severity": "critical"})), Some(Priority::Low));

    let never = AlertmanagerConfig { high_priority_values: vec![], ..Default::default() };
    assert_eq!(priority(&never, json!({"severity": "critical"})), Some(Priority::Low));
}

#[test]
fn config_defaults_and_checks() {
    let parsed: AlertmanagerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, AlertmanagerConfig::default());
    assert_eq!(parsed.priority_label, "severity");
    assert_eq!(parsed.high_priority_values, ["critical"]);
    assert_eq!(parsed.source_name, None);
    assert!(serde_json::from_str::<AlertmanagerConfig>(r#"{"priority":"x"}"#).is_err(), "unknown fields");

    let bad = AlertmanagerConfig {
        priority_label: " ".into(),
        high_priority_values: vec!["critical".into(), "".into()],
        source_name: Some("".into()),
    };
    let fields: Vec<String> = AlertmanagerDecoder::new(&bad).unwrap_err().into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["priority_label", "high_priority_values[1]", "source_name"]);

    // Through the source's decoding table, field names get their prefix.
    let decoding = DecodingConfig { codec: Codec::Alertmanager, alertmanager: bad, ..Default::default() };
    assert_eq!(decoding.validate().unwrap_err()[0].field, "decoding.alertmanager.priority_label");
}

#[test]
fn through_the_decoder_one_event_per_alert_and_payload_arrays() {
    let decoding = DecodingConfig { codec: Codec::Alertmanager, ..Default::default() };
    let decoder = decoding.validate().unwrap();
    assert_eq!(decoder.decode(PAYLOAD.as_bytes()).unwrap().len(), 2);
    let empty = br#"{"version":"4","status":"resolved","alerts":[]}"#;
    assert_eq!(decoder.decode(empty).unwrap().len(), 0);

    // The second alert is bad: the body is rejected whole, the error names the value
    // and the field.
    let bad = format!("{}\n{}", one_alert(json!({})), one_alert(json!({"status": "pending"})));
    let err = decoder.decode(bad.as_bytes()).unwrap_err();
    assert_eq!((err.event, err.line), (Some(2), 2));
    assert_eq!(err.field.as_deref(), Some("alerts[0].status"));
}

#[test]
fn every_error_names_its_field() {
    let field = |payload: Value| {
        let err = decode(&payload).unwrap_err();
        (err.field.clone(), err.message)
    };
    let err = decoder().decode("[1]").unwrap_err();
    assert_eq!(err.field, None);
    assert!(err.message.contains("JSON object, got an array"), "{err}");
    let err = decoder().decode("{\"alerts\": [").unwrap_err();
    assert_eq!(err.field, None);

    let (f, m) = field(json!({"version": "4", "status": "firing"}));
    assert_eq!(f.as_deref(), Some("alerts"));
    assert!(m.contains("missing"), "{m}");
    let (f, m) = field(json!({"alerts": {"status": "firing"}}));
    assert_eq!((f.as_deref(), m.as_str()), (Some("alerts"), "must be an array, got an object"));

    let three = |third: Value| {
        let ok = json!({"status": "firing", "fingerprint": "a"});
        json!({"alerts": [ok, ok, third]})
    };
    let (f, m) = field(three(json!("firing")));
    assert_eq!((f.as_deref(), m.as_str()), (Some("alerts[2]"), "must be an object, got a string"));
    let (f, m) = field(three(json!({"status": "pending", "fingerprint": "a"})));
    assert_eq!(f.as_deref(), Some("alerts[2].status"));
    assert_eq!(m, "must be `firing` or `resolved`, got `pending`");
    let (f, m) = field(three(json!({"status": "Firing", "fingerprint": "a"})));
    assert_eq!((f.as_deref(), m.contains("`Firing`")), (Some("alerts[2].status"), true));
    let (f, m) = field(three(json!({"fingerprint": "a"})));
    assert_eq!(f.as_deref(), Some("alerts[2].status"));
    assert!(m.starts_with("missing"), "{m}");
    let (f, _) = field(three(json!({"status": 1, "fingerprint": "a"})));
    assert_eq!(f.as_deref(), Some("alerts[2].status"));
    let (f, m) = field(three(json!({"status": "resolved"})));
    assert_eq!(f.as_deref(), Some("alerts[2].fingerprint"));
    assert!(m.starts_with("missing"), "{m}");
    let (f, m) = field(three(json!({"status": "resolved", "fingerprint": ""})));
    assert_eq!((f.as_deref(), m.as_str()), (Some("alerts[2].fingerprint"), "must not be empty"));
    let (f, m) = field(three(json!({"status": "resolved", "fingerprint": 42})));
    assert_eq!((f.as_deref(), m.as_str()), (Some("alerts[2].fingerprint"), "must be a string, got a number"));

    // Fields the mapping reads must have Alertmanager's types.
    let (f, _) = field(three(json!({"status": "firing", "fingerprint": "a", "labels": ["x"]})));
    assert_eq!(f.as_deref(), Some("alerts[2].labels"));
    let (f, _) = field(three(json!({"status": "firing", "fingerprint": "a", "labels": {"severity": 2}})));
    assert_eq!(f.as_deref(), Some("alerts[2].labels.severity"));
    let (f, _) = field(three(json!({"status": "firing", "fingerprint": "a", "annotations": {"summary": {}}})));
    assert_eq!(f.as_deref(), Some("alerts[2].annotations.summary"));
    for name in ["startsAt", "endsAt", "generatorURL"] {
        let (f, _) = field(three(json!({"status": "firing", "fingerprint": "a", name: 0})));
        assert_eq!(f, Some(format!("alerts[2].{name}")));
    }
    for (name, value) in [
        ("receiver", json!(1)),
        ("externalURL", json!([])),
        ("groupKey", json!({})),
        ("status", json!(true)),
        ("commonLabels", json!("x")),
        ("groupLabels", json!({"a": 1})),
    ] {
        let mut payload = one_alert(json!({}));
        payload[name] = value;
        let (f, _) = field(payload);
        assert!(f.as_deref().is_some_and(|f| f.starts_with(name)), "{name}: {f:?}");
    }
}

#[test]
fn payload_fields_never_clash_with_event_fields() {
    // A sender (Grafana, a proxy) adding fields named like the event's own: the typed
    // value wins, the JSON stays free of duplicate keys.
    let payload = one_alert(json!({"summary": "from alert", "id": 3, "silenceURL": "http://grafana/silence"}));
    let mut payload = payload;
    payload["links"] = json!("group links");
    payload["labels"] = json!({"ignored": "group-level labels lose to the alert's"});
    let event = decode(&payload).unwrap().remove(0);
    assert_eq!(event.id.as_deref(), Some("f1"));
    assert_eq!(event.summary.as_deref(), Some("HighLoad"));
    assert_eq!(event.extra["silenceURL"], "http://grafana/silence");
    assert_eq!(event.extra["labels"], json!({"alertname": "HighLoad"}));
    assert!(!event.extra.contains_key("summary") && !event.extra.contains_key("links"));
    let text = serde_json::to_string(&event).unwrap();
    let back: IncidentEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(back, event);
}

#[test]
fn identities_follow_the_alert_state() {
    let decoded = decoder().decode_identified(PAYLOAD).unwrap();
    let identity = |d: &Decoded| d.identity.clone();
    assert_eq!(
        identity(&decoded[0]).as_deref(),
        Some(r#"alertmanager:["webhook-sink","1a30ba71cca2921f","firing","2023-02-06T13:08:45.828Z"]"#)
    );
    assert_eq!(
        identity(&decoded[1]).as_deref(),
        Some(
            r#"alertmanager:["webhook-sink","7c4e2d2a8b1f0e93","resolved","2023-02-06T12:58:45.828Z","2023-02-06T13:07:45.828Z"]"#
        )
    );
    assert_eq!(decoded[0].incident, decoder().decode(PAYLOAD).unwrap()[0], "the same event either way");

    let of = |alert: Value| decoder().decode_identified(&one_alert(alert).to_string()).unwrap().remove(0).identity;
    let firing = json!({"startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"});
    let first = of(firing.clone());
    assert!(first.is_some());
    // A re-sent firing alert: the same id, whatever its endsAt (zero, or moved forward).
    assert_eq!(of(firing.clone()), first);
    assert_eq!(of(json!({"startsAt": "2024-05-01T10:00:00Z", "endsAt": "2024-05-01T10:05:00Z"})), first);
    assert_eq!(of(json!({"startsAt": "2024-05-01T10:00:00Z", "annotations": {"summary": "new text"}})), first);
    // Another state, another firing, another alert, another receiver: other ids.
    let resolved = json!({"status": "resolved", "startsAt": "2024-05-01T10:00:00Z", "endsAt": "2024-05-01T10:07:00Z"});
    let others = [
        of(resolved.clone()),
        of(json!({"status": "resolved", "startsAt": "2024-05-01T10:00:00Z", "endsAt": "2024-05-01T10:08:00Z"})),
        of(json!({"startsAt": "2024-05-01T11:00:00Z"})),
        of(json!({"startsAt": "2024-05-01T10:00:00Z", "fingerprint": "f2"})),
    ];
    for (i, other) in others.iter().enumerate() {
        assert!(other.is_some() && *other != first, "{i}: {other:?}");
        assert!(others.iter().enumerate().all(|(j, o)| i == j || o != other), "{i}: {other:?}");
    }
    assert_eq!(of(resolved.clone()), others[0], "a re-sent resolve keeps its id");
    let mut team_b = one_alert(firing);
    team_b["receiver"] = json!("team-b");
    assert_ne!(decoder().decode_identified(&team_b.to_string()).unwrap()[0].identity, first);

    // Without the times that tell one firing from the next: no identity (a fresh id).
    assert_eq!(of(json!({})), None);
    assert_eq!(of(json!({"startsAt": "0001-01-01T00:00:00Z"})), None);
    assert_eq!(of(json!({"startsAt": ""})), None);
    assert_eq!(of(json!({"status": "resolved", "startsAt": "2024-05-01T10:00:00Z"})), None);
    assert_eq!(of(json!({"status": "resolved", "endsAt": "2024-05-01T10:07:00Z"})), None);
}

#[test]
fn through_the_decoder_a_repeat_gets_the_same_webhook_id() {
    use crate::event::Event;
    let decoder = DecodingConfig { codec: Codec::Alertmanager, ..Default::default() }.validate().unwrap();
    let ids = |body: &str| -> Vec<String> {
        decoder.decode_sized(body.as_bytes()).unwrap().into_iter().map(|d| Event::decoded(d).id.to_string()).collect()
    };
    let (first, repeat) = (ids(PAYLOAD), ids(PAYLOAD));
    assert_eq!(first, repeat);
    assert_ne!(first[0], first[1]);
    let sized = decoder.decode_sized(PAYLOAD.as_bytes()).unwrap();
    assert!(sized.iter().all(|d| d.size > 0 && d.identity.is_some()), "{sized:?}");
}
