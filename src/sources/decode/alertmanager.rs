//! The `alertmanager` codec: Prometheus Alertmanager's webhook payload (version 4), one
//! incident event per alert in it.
//!
//! | Alertmanager | Incident event |
//! |--------------|----------------|
//! | alert `status` `firing` / `resolved` | `eventType` `alert-created` / `alert-resolved`, `status` `PENDING` / `RESOLVED` |
//! | alert `fingerprint` | `id` and `alertKey` (a resolve pairs with its create) |
//! | annotation `summary`, else label `alertname` (+ ` on ` label `instance`) | `summary` |
//! | annotation `description`, else the summary | `details` |
//! | label `priority_label` (`severity`) in `high_priority_values` (`critical`) | `priority` `HIGH`, else `LOW` |
//! | `startsAt` (firing) / `endsAt` (resolved) | `reportTime` |
//! | payload `externalURL` | `alertUrl` |
//! | alert `generatorURL` | first of `links` (text `Prometheus`) |
//! | `source_name`, else `Alertmanager (<receiver>)` | `alertSource.name` |
//!
//! Every field of the alert (`labels`, `annotations`, `startsAt`, `endsAt`,
//! `generatorURL`, `fingerprint`, and any other a sender adds) and of its group
//! (`receiver`, `groupKey`, `groupLabels`, `commonLabels`, `commonAnnotations`,
//! `externalURL`, `truncatedAlerts`, `version`; the group's `status` as `groupStatus`) is
//! kept in the event's extra fields, so templates reach it as `{{event.labels.team}}`.
//! See `docs/alertmanager.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{json_kind, DecodeError};
use crate::component::FieldError;
use crate::event::{AlertSource, AlertStatus, EventKind, IncidentEvent, Link, Priority};

/// Alertmanager's way of writing "no time" (Go's zero `time.Time`), e.g. the `endsAt` of
/// an alert that is still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Text of the link made from an alert's `generatorURL`.
const GENERATOR_LINK_TEXT: &str = "Prometheus";

/// Field names of the incident event itself: payload fields of these names are not
/// copied into the extra fields, where they would clash with the typed ones.
const RESERVED: &[&str] = &[
    "id",
    "status",
    "summary",
    "details",
    "reportTime",
    "eventType",
    "priority",
    "alertKey",
    "alertUrl",
    "alertSource",
    "assignedTo",
    "links",
    "responders",
];

fn default_priority_label() -> String {
    "severity".to_string()
}

fn default_high_priority_values() -> Vec<String> {
    vec!["critical".to_string()]
}

/// Options of the `alertmanager` codec (`decoding.alertmanager` in a source's config).
///
/// ```toml
/// [sources.alertmanager.decoding]
/// codec = "alertmanager"
/// alertmanager.priority_label = "severity"
/// alertmanager.high_priority_values = ["critical", "page"]
/// alertmanager.source_name = "Prometheus production"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The alert label whose value sets the event's priority. An alert without it is
    /// `LOW`. Must not be empty. Default: `"severity"`.
    #[serde(default = "default_priority_label")]
    pub priority_label: String,
    /// Values of `priority_label` that make an alert `HIGH` (compared case-insensitively);
    /// any other value, or none, makes it `LOW`. May be empty (every alert `LOW`); its
    /// entries must not be empty. Default: `["critical"]`.
    #[serde(default = "default_high_priority_values")]
    pub high_priority_values: Vec<String>,
    /// The events' `alertSource.name`. Must not be empty when set. Default: none, which
    /// means `Alertmanager (<receiver>)` with the payload's `receiver`, or `Alertmanager`
    /// when the payload names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            priority_label: default_priority_label(),
            high_priority_values: default_high_priority_values(),
            source_name: None,
        }
    }
}

/// Turns Alertmanager webhook payloads into incident events.
#[derive(Debug, Clone)]
pub struct AlertmanagerDecoder {
    priority_label: String,
    /// `high_priority_values`, lowercased.
    high_priority_values: Vec<String>,
    source_name: Option<String>,
}

impl AlertmanagerDecoder {
    /// Checks the options. Field names are relative to the `alertmanager` table.
    pub fn new(config: &AlertmanagerConfig) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if config.priority_label.trim().is_empty() {
            errors.push(FieldError::new("priority_label", "must name a label, got an empty string"));
        }
        for (i, value) in config.high_priority_values.iter().enumerate() {
            if value.trim().is_empty() {
                errors.push(FieldError::new(format!("high_priority_values[{i}]"), "must not be empty"));
            }
        }
        if let Some(name) = &config.source_name {
            if name.trim().is_empty() {
                errors.push(FieldError::new(
                    "source_name",
                    "must not be empty; leave it out for `Alertmanager (<receiver>)`",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AlertmanagerDecoder {
            priority_label: config.priority_label.clone(),
            high_priority_values: config.high_priority_values.iter().map(|v| v.to_lowercase()).collect(),
            source_name: config.source_name.clone(),
        })
    }

    /// Decodes one payload into one event per alert, in the payload's order. The payload
    /// is rejected whole when any alert in it is bad.
    pub fn decode(&self, text: &str) -> Result<Vec<IncidentEvent>, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::from_json(&e))?;
        let Value::Object(payload) = value else {
            return Err(DecodeError::at(
                1,
                1,
                format!("an Alertmanager webhook payload is a JSON object, got {}", json_kind(&value)),
            ));
        };
        let alerts = match payload.get("alerts") {
            Some(Value::Array(alerts)) => alerts,
            Some(other) => {
                return Err(DecodeError::field("alerts", format!("must be an array, got {}", json_kind(other))))
            }
            None => {
                return Err(DecodeError::field(
                    "alerts",
                    "missing: not an Alertmanager webhook payload (`alerts` is required)",
                ))
            }
        };
        let group = Group::read(&payload)?;
        alerts.iter().enumerate().map(|(i, alert)| self.decode_alert(&group, &payload, i, alert)).collect()
    }

    fn decode_alert(
        &self,
        group: &Group<'_>,
        payload: &Map<String, Value>,
        index: usize,
        alert: &Value,
    ) -> Result<IncidentEvent, DecodeError> {
        let at = |field: &str| format!("alerts[{index}].{field}");
        let Value::Object(alert) = alert else {
            return Err(DecodeError::field(
                format!("alerts[{index}]"),
                format!("must be an object, got {}", json_kind(alert)),
            ));
        };

        let resolved = match alert.get("status") {
            Some(Value::String(s)) if s == "firing" => false,
            Some(Value::String(s)) if s == "resolved" => true,
            Some(Value::String(s)) => {
                return Err(DecodeError::field(at("status"), format!("must be `firing` or `resolved`, got `{s}`")))
            }
            Some(other) if !other.is_null() => {
                return Err(DecodeError::field(
                    at("status"),
                    format!("must be `firing` or `resolved`, got {}", json_kind(other)),
                ))
            }
            _ => return Err(DecodeError::field(at("status"), "missing: must be `firing` or `resolved`")),
        };
        let fingerprint = match (optional_str(alert, "fingerprint", &at)?, alert.get("fingerprint")) {
            (Some(fingerprint), _) => fingerprint,
            (None, Some(Value::String(_))) => return Err(DecodeError::field(at("fingerprint"), "must not be empty")),
            (None, _) => {
                return Err(DecodeError::field(
                    at("fingerprint"),
                    "missing: every alert needs its fingerprint, the id that pairs a resolve with its create",
                ))
            }
        };
        let labels = string_map(alert, "labels", &at)?;
        let annotations = string_map(alert, "annotations", &at)?;
        let starts_at = optional_str(alert, "startsAt", &at)?;
        let ends_at = optional_str(alert, "endsAt", &at)?;
        let generator_url = optional_str(alert, "generatorURL", &at)?;

        let label = |name: &str| labels.get(name);
        let annotation = |name: &str| annotations.get(name);
        let summary = match (annotation("summary"), label("alertname")) {
            (Some(summary), _) => summary.to_string(),
            (None, Some(name)) => match label("instance") {
                Some(instance) => format!("{name} on {instance}"),
                None => name.to_string(),
            },
            (None, None) => format!("Alertmanager alert {fingerprint}"),
        };
        let details = annotation("description").map_or_else(|| summary.clone(), str::to_string);
        let priority = match label(&self.priority_label) {
            Some(value) if self.high_priority_values.contains(&value.to_lowercase()) => Priority::High,
            _ => Priority::Low,
        };
        let (kind, status, report_time) = if resolved {
            (EventKind::Resolved, AlertStatus::Resolved, ends_at)
        } else {
            (EventKind::Created, AlertStatus::Pending, starts_at)
        };
        let source_name = match (&self.source_name, group.receiver) {
            (Some(name), _) => name.clone(),
            (None, Some(receiver)) => format!("Alertmanager ({receiver})"),
            (None, None) => "Alertmanager".to_string(),
        };

        let mut event = IncidentEvent::new(kind);
        event.id = Some(fingerprint.to_string());
        event.status = Some(status);
        event.summary = Some(summary);
        event.details = Some(details);
        event.report_time = report_time.filter(|t| *t != ZERO_TIME).map(str::to_string);
        event.priority = Some(priority);
        event.alert_key = Some(fingerprint.to_string());
        event.alert_url = group.external_url.map(str::to_string);
        event.alert_source =
            Some(AlertSource { id: None, name: Some(source_name), escalation_policy: None, extra: Map::new() });
        event.links = generator_url.map(|href| {
            vec![Link { href: href.to_string(), text: Some(GENERATOR_LINK_TEXT.to_string()), extra: Map::new() }]
        });
        event.extra = extra_fields(alert, payload);
        Ok(event)
    }
}

/// The group fields the mapping reads, checked once per payload.
struct Group<'a> {
    receiver: Option<&'a str>,
    external_url: Option<&'a str>,
}

impl<'a> Group<'a> {
    fn read(payload: &'a Map<String, Value>) -> Result<Self, DecodeError> {
        let at = |field: &str| field.to_string();
        for field in ["groupLabels", "commonLabels", "commonAnnotations"] {
            string_map(payload, field, &at)?;
        }
        for field in ["version", "groupKey", "status"] {
            optional_str(payload, field, &at)?;
        }
        Ok(Group {
            receiver: optional_str(payload, "receiver", &at)?,
            external_url: optional_str(payload, "externalURL", &at)?,
        })
    }
}

/// The alert's fields (but `status`), then the group's (but `alerts`; its `status` as
/// `groupStatus`), each under its own name unless the event has a field of that name or
/// it is already taken.
fn extra_fields(alert: &Map<String, Value>, payload: &Map<String, Value>) -> Map<String, Value> {
    let mut extra = Map::new();
    let alert_fields = alert.iter().filter(|(name, _)| *name != "status");
    let group_fields = payload.iter().filter(|(name, _)| *name != "alerts").map(|(name, value)| {
        let name = if name == "status" { "groupStatus" } else { name.as_str() };
        (name, value)
    });
    let fields = alert_fields.map(|(name, value)| (name.as_str(), value)).chain(group_fields);
    for (name, value) in fields {
        if value.is_null() || RESERVED.contains(&name) || extra.contains_key(name) {
            continue;
        }
        extra.insert(name.to_string(), value.clone());
    }
    extra
}

/// A text field of `object`: `None` when absent, `null` or empty; an error naming the
/// field when it is anything but text.
fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<&'a str>, DecodeError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(other) => Err(DecodeError::field(at(field), format!("must be a string, got {}", json_kind(other)))),
    }
}

/// A map of text (labels, annotations) of `object`: empty when absent or `null`; an error
/// naming the field, or the entry, when it is anything else.
fn string_map<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Texts<'a>, DecodeError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Texts(None)),
        Some(Value::Object(map)) => match map.iter().find(|(_, v)| !v.is_string()) {
            Some((name, value)) => Err(DecodeError::field(
                at(&format!("{field}.{name}")),
                format!("must be a string, got {}", json_kind(value)),
            )),
            None => Ok(Texts(Some(map))),
        },
        Some(other) => Err(DecodeError::field(at(field), format!("must be an object, got {}", json_kind(other)))),
    }
}

/// A checked map whose values are all text.
struct Texts<'a>(Option<&'a Map<String, Value>>);

impl<'a> Texts<'a> {
    /// The value of `name`, `None` when absent or empty.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0?.get(name).and_then(Value::as_str).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
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
        let e =
            event(json!({"status": "resolved", "endsAt": "0001-01-01T00:00:00Z", "startsAt": "2024-01-01T00:00:00Z"}));
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
        assert_eq!(decoding.build().unwrap_err()[0].field, "decoding.alertmanager.priority_label");
    }

    #[test]
    fn through_the_decoder_one_event_per_alert_and_payload_arrays() {
        let decoding = DecodingConfig { codec: Codec::Alertmanager, ..Default::default() };
        let decoder = decoding.build().unwrap();
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
}
