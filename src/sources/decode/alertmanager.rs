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
//!
//! Each event also gets an identity ([`Decoded::identity`]), so the same alert state
//! always gets the same `webhook-id`: see [`alert_identity`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{json_kind, DecodeError};
use crate::error::FieldError;
use crate::event::{AlertSource, AlertStatus, Decoded, EventKind, IncidentEvent, Link, Priority, Text};

/// Alertmanager's way of writing "no time" (Go's zero `time.Time`), e.g. the `endsAt` of
/// an alert that is still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Text of the link made from an alert's `generatorURL`.
const GENERATOR_LINK_TEXT: &str = "Prometheus";

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
        Ok(self.decode_identified(text)?.into_iter().map(|decoded| decoded.incident).collect())
    }

    /// As [`AlertmanagerDecoder::decode`], with each event's identity ([`alert_identity`]);
    /// sizes are left at 0 for the caller to set.
    pub fn decode_identified(&self, text: &str) -> Result<Vec<Decoded>, DecodeError> {
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
    ) -> Result<Decoded, DecodeError> {
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
        let summary: Text = match (annotation("summary"), label("alertname")) {
            (Some(summary), _) => summary.into(),
            (None, Some(name)) => match label("instance") {
                Some(instance) => format!("{name} on {instance}").into(),
                None => name.into(),
            },
            (None, None) => format!("Alertmanager alert {fingerprint}").into(),
        };
        let details = annotation("description").map_or_else(|| summary.clone(), Text::from);
        let priority = match label(&self.priority_label) {
            Some(value) if self.high_priority_values.contains(&value.to_lowercase()) => Priority::High,
            _ => Priority::Low,
        };
        let (kind, status, report_time) = if resolved {
            (EventKind::Resolved, AlertStatus::Resolved, ends_at)
        } else {
            (EventKind::Created, AlertStatus::Pending, starts_at)
        };
        let source_name: Text = match (&self.source_name, group.receiver) {
            (Some(name), _) => name.as_str().into(),
            (None, Some(receiver)) => format!("Alertmanager ({receiver})").into(),
            (None, None) => Text::const_new("Alertmanager"),
        };

        let mut event = IncidentEvent::new(kind);
        event.id = Some(fingerprint.into());
        event.status = Some(status);
        event.summary = Some(summary);
        event.details = Some(details);
        event.report_time = report_time.filter(|t| *t != ZERO_TIME).map(Text::from);
        event.priority = Some(priority);
        event.alert_key = Some(fingerprint.into());
        event.alert_url = group.external_url.map(Text::from);
        event.alert_source = Some(Box::new(AlertSource {
            id: None,
            name: Some(source_name),
            escalation_policy: None,
            extra: Map::new(),
        }));
        event.links = generator_url.map(|href| {
            vec![Link { href: href.into(), text: Some(Text::const_new(GENERATOR_LINK_TEXT)), extra: Map::new() }]
        });
        event.extra = extra_fields(alert, payload);
        let identity = alert_identity(group.receiver, fingerprint, resolved, starts_at, ends_at);
        Ok(Decoded { incident: event, size: 0, identity })
    }
}

/// What identifies the state of an alert that Alertmanager notifies: the receiver, the
/// fingerprint, the status and `startsAt`, and for a resolved alert `endsAt` too, as
/// `alertmanager:` and a JSON array of them (unambiguous, whatever the texts hold).
///
/// - A repeat of a firing alert (every `repeat_interval`, or its group re-sent because
///   another alert of it changed) carries the same fingerprint and `startsAt`; its
///   `endsAt` is left out because Alertmanager writes the zero time while an alert fires
///   (0.25, checked by `tests/it/peer_alertmanager.rs`) and other senders move it forward
///   on every re-send.
/// - A resolved alert's `endsAt` is fixed once it is resolved, so its re-sends (a retried
///   notification, a group re-sent) keep the id, while the firing and the resolved state
///   of one alert, and each new firing of it (a new `startsAt`), get ids of their own.
/// - The receiver keeps two receivers that happen to post to the same source apart.
///
/// `None` (a fresh id for every delivery) when a time the state needs is missing or the
/// zero time: without it a new firing of the alert could not be told from an old one,
/// and a receiver that drops ids it has seen would drop the new one.
pub fn alert_identity(
    receiver: Option<&str>,
    fingerprint: &str,
    resolved: bool,
    starts_at: Option<&str>,
    ends_at: Option<&str>,
) -> Option<String> {
    fn time(t: Option<&str>) -> Option<&str> {
        t.filter(|t| *t != ZERO_TIME)
    }
    let starts_at = time(starts_at)?;
    let parts = if resolved {
        serde_json::to_string(&(receiver, fingerprint, "resolved", starts_at, time(ends_at)?))
    } else {
        serde_json::to_string(&(receiver, fingerprint, "firing", starts_at))
    };
    // Writing texts as JSON cannot fail; were it to, a fresh id is the safe side.
    parts.ok().map(|parts| format!("alertmanager:{parts}"))
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
/// `groupStatus`), each under its own name unless the event has a field of that name
/// ([`IncidentEvent::FIELD_NAMES`], which would clash with the typed one) or it is already
/// taken.
fn extra_fields(alert: &Map<String, Value>, payload: &Map<String, Value>) -> Map<String, Value> {
    let mut extra = Map::new();
    let alert_fields = alert.iter().filter(|(name, _)| *name != "status");
    let group_fields = payload.iter().filter(|(name, _)| *name != "alerts").map(|(name, value)| {
        let name = if name == "status" { "groupStatus" } else { name.as_str() };
        (name, value)
    });
    let fields = alert_fields.map(|(name, value)| (name.as_str(), value)).chain(group_fields);
    for (name, value) in fields {
        if value.is_null() || IncidentEvent::FIELD_NAMES.contains(&name) || extra.contains_key(name) {
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
mod tests;
