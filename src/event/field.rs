//! Addressing values inside an event: the typed fields every event has, and any other
//! field by its dotted path in the JSON payload.

use std::cell::OnceCell;
use std::fmt;

use serde_json::Value;

use super::IncidentEvent;

/// A typed field of [`IncidentEvent`], read without converting the event to JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownField {
    /// `id`.
    Id,
    /// `alertKey`.
    AlertKey,
    /// `details`.
    Details,
    /// `summary`.
    Summary,
    /// `status`.
    Status,
    /// `priority`.
    Priority,
    /// `alertUrl`.
    AlertUrl,
    /// `alertSource.id`.
    SourceId,
    /// `alertSource.name`.
    SourceName,
    /// `alertSource.escalationPolicy.id`.
    EscalationPolicyId,
    /// `alertSource.escalationPolicy.name`.
    EscalationPolicyName,
    /// `reportTime`.
    ReportTime,
    /// `href` of the first entry of `links`.
    FirstLink,
    /// `eventType`, as it arrived.
    EventType,
}

impl KnownField {
    /// The field's path in the payload (for `FirstLink`: `links.0.href`).
    pub fn payload_path(self) -> &'static str {
        match self {
            KnownField::Id => "id",
            KnownField::AlertKey => "alertKey",
            KnownField::Details => "details",
            KnownField::Summary => "summary",
            KnownField::Status => "status",
            KnownField::Priority => "priority",
            KnownField::AlertUrl => "alertUrl",
            KnownField::SourceId => "alertSource.id",
            KnownField::SourceName => "alertSource.name",
            KnownField::EscalationPolicyId => "alertSource.escalationPolicy.id",
            KnownField::EscalationPolicyName => "alertSource.escalationPolicy.name",
            KnownField::ReportTime => "reportTime",
            KnownField::FirstLink => "links.0.href",
            KnownField::EventType => "eventType",
        }
    }

    const ALL: [KnownField; 14] = [
        KnownField::Id,
        KnownField::AlertKey,
        KnownField::Details,
        KnownField::Summary,
        KnownField::Status,
        KnownField::Priority,
        KnownField::AlertUrl,
        KnownField::SourceId,
        KnownField::SourceName,
        KnownField::EscalationPolicyId,
        KnownField::EscalationPolicyName,
        KnownField::ReportTime,
        KnownField::FirstLink,
        KnownField::EventType,
    ];
}

/// A borrowed value read from an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// Text.
    Str(&'a str),
    /// Any JSON value (numbers, objects, lists, or text inside the JSON form).
    Json(&'a Value),
}

impl<'a> FieldRef<'a> {
    /// The value as text when it is text or a number; `None` for objects, lists, booleans and null.
    pub fn as_text(&self) -> Option<std::borrow::Cow<'a, str>> {
        match *self {
            FieldRef::Str(s) => Some(s.into()),
            FieldRef::Json(Value::String(s)) => Some(s.as_str().into()),
            FieldRef::Json(Value::Number(n)) => Some(n.to_string().into()),
            FieldRef::Json(_) => None,
        }
    }
}

/// A dotted path to a value in an event's payload, e.g. `alertSource.name` or `labels.team`.
/// Numeric segments index into lists (`links.0.href`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPath {
    /// One of the typed fields.
    Known(KnownField),
    /// Any other field, looked up in the event's JSON form.
    Json(Vec<String>),
}

/// A field path that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path `{path}`: {reason}")]
pub struct InvalidFieldPath {
    /// The path as written.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FieldPath {
    /// Parses a dotted path; empty segments are an error.
    pub fn parse(path: &str) -> Result<FieldPath, InvalidFieldPath> {
        if path.is_empty() {
            return Err(InvalidFieldPath { path: path.into(), reason: "the path is empty" });
        }
        if path.split('.').any(str::is_empty) {
            return Err(InvalidFieldPath { path: path.into(), reason: "a segment between dots is empty" });
        }
        if let Some(known) = KnownField::ALL.into_iter().find(|k| k.payload_path() == path) {
            return Ok(FieldPath::Known(known));
        }
        Ok(FieldPath::Json(path.split('.').map(str::to_string).collect()))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Known(k) => f.write_str(k.payload_path()),
            FieldPath::Json(segments) => f.write_str(&segments.join(".")),
        }
    }
}

impl IncidentEvent {
    /// Reads a typed field.
    pub fn known(&self, field: KnownField) -> Option<FieldRef<'_>> {
        let policy = || self.alert_source.as_ref().and_then(|s| s.escalation_policy.as_ref());
        match field {
            KnownField::Id => self.id.as_deref().map(FieldRef::Str),
            KnownField::AlertKey => self.alert_key.as_deref().map(FieldRef::Str),
            KnownField::Details => self.details.as_deref().map(FieldRef::Str),
            KnownField::Summary => self.summary.as_deref().map(FieldRef::Str),
            KnownField::Status => self.status.as_ref().map(|s| FieldRef::Str(s.as_str())),
            KnownField::Priority => self.priority.as_ref().map(|p| FieldRef::Str(p.as_str())),
            KnownField::AlertUrl => self.alert_url.as_deref().map(FieldRef::Str),
            KnownField::SourceId => self.alert_source.as_ref()?.id.as_ref().map(FieldRef::Json),
            KnownField::SourceName => self.alert_source.as_ref()?.name.as_deref().map(FieldRef::Str),
            KnownField::EscalationPolicyId => policy()?.id.as_ref().map(FieldRef::Json),
            KnownField::EscalationPolicyName => policy()?.name.as_deref().map(FieldRef::Str),
            KnownField::ReportTime => self.report_time.as_deref().map(FieldRef::Str),
            KnownField::FirstLink => self.links.as_ref()?.first().map(|l| FieldRef::Str(&l.href)),
            KnownField::EventType => Some(FieldRef::Str(self.event_type.as_str())),
        }
    }
}

/// An event seen by filters and templates: typed fields are read directly, the JSON form
/// is built at most once, and only when a path outside the typed fields is asked for.
pub struct EventView<'a> {
    event: &'a IncidentEvent,
    json: OnceCell<Value>,
}

impl<'a> EventView<'a> {
    /// A view of `event`.
    pub fn new(event: &'a IncidentEvent) -> Self {
        EventView { event, json: OnceCell::new() }
    }

    /// The event itself.
    pub fn event(&self) -> &'a IncidentEvent {
        self.event
    }

    /// The event's JSON form (built on first use).
    pub fn json(&self) -> &Value {
        self.json.get_or_init(|| self.event.to_json())
    }

    /// The value at `path`, if the event has one there.
    pub fn get(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        match path {
            FieldPath::Known(known) => self.event.known(*known),
            FieldPath::Json(segments) => lookup(self.json(), segments).map(FieldRef::Json),
        }
    }
}

/// Walks `segments` down from `value`: object keys, or list indexes for numeric segments.
pub fn lookup<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    segments.iter().try_fold(value, |value, segment| match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
        _ => None,
    })
    .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample_event;

    #[test]
    fn known_paths_are_typed_and_others_are_json() {
        assert_eq!(FieldPath::parse("alertSource.name").unwrap(), FieldPath::Known(KnownField::SourceName));
        assert_eq!(
            FieldPath::parse("labels.team").unwrap(),
            FieldPath::Json(vec!["labels".into(), "team".into()])
        );
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("").is_err());
    }

    #[test]
    fn typed_and_json_lookups_agree() {
        let event = sample_event();
        let view = EventView::new(&event);
        for known in KnownField::ALL {
            let typed = view.get(&FieldPath::Known(known)).and_then(|v| v.as_text());
            let segments: Vec<String> = known.payload_path().split('.').map(String::from).collect();
            let json = lookup(view.json(), &segments).map(FieldRef::Json).and_then(|v| v.as_text());
            assert_eq!(typed, json, "{known:?}");
        }
    }
}
