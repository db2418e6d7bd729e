//! Addressing values inside an event: the typed fields every event has, and any other
//! field by its dotted path in the JSON payload.

use std::cell::OnceCell;
use std::fmt;

use serde_json::Value;

use super::IncidentEvent;

/// Declares [`KnownField`] from one table: each variant with its doc, its path in the
/// payload, and the expression that reads it from the event (named by the ident before
/// `=>`). Makes the enum, `payload_path`, `ALL` and [`IncidentEvent::known`].
macro_rules! known_fields {
    ($event:ident => $($(#[$doc:meta])* $variant:ident = $path:literal: $read:expr,)+) => {
        /// A typed field of [`IncidentEvent`], read without converting the event to JSON.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KnownField {
            $($(#[$doc])* $variant,)+
        }

        impl KnownField {
            /// The field's path in the payload (for `FirstLink`: `links.0.href`).
            pub fn payload_path(self) -> &'static str {
                match self {
                    $(KnownField::$variant => $path,)+
                }
            }

            const ALL: [KnownField; [$(KnownField::$variant),+].len()] = [$(KnownField::$variant),+];
        }

        impl IncidentEvent {
            /// Reads a typed field.
            pub fn known(&self, field: KnownField) -> Option<FieldRef<'_>> {
                let $event = self;
                match field {
                    $(KnownField::$variant => $read,)+
                }
            }
        }
    };
}

// A typed field is one entry here (a template variable for it goes in `template/catalog.rs`).
known_fields! { event =>
    /// `id`.
    Id = "id": event.id.as_deref().map(FieldRef::Str),
    /// `alertKey`.
    AlertKey = "alertKey": event.alert_key.as_deref().map(FieldRef::Str),
    /// `details`.
    Details = "details": event.details.as_deref().map(FieldRef::Str),
    /// `summary`.
    Summary = "summary": event.summary.as_deref().map(FieldRef::Str),
    /// `status`.
    Status = "status": event.status.as_ref().map(|s| FieldRef::Str(s.as_str())),
    /// `priority`.
    Priority = "priority": event.priority.as_ref().map(|p| FieldRef::Str(p.as_str())),
    /// `alertUrl`.
    AlertUrl = "alertUrl": event.alert_url.as_deref().map(FieldRef::Str),
    /// `alertSource.id`.
    SourceId = "alertSource.id": event.alert_source.as_ref()?.id.as_ref().map(FieldRef::Json),
    /// `alertSource.name`.
    SourceName = "alertSource.name": event.alert_source.as_ref()?.name.as_deref().map(FieldRef::Str),
    /// `alertSource.escalationPolicy.id`.
    EscalationPolicyId = "alertSource.escalationPolicy.id":
        event.alert_source.as_ref()?.escalation_policy.as_ref()?.id.as_ref().map(FieldRef::Json),
    /// `alertSource.escalationPolicy.name`.
    EscalationPolicyName = "alertSource.escalationPolicy.name":
        event.alert_source.as_ref()?.escalation_policy.as_ref()?.name.as_deref().map(FieldRef::Str),
    /// `reportTime`.
    ReportTime = "reportTime": event.report_time.as_deref().map(FieldRef::Str),
    /// `href` of the first entry of `links`.
    FirstLink = "links.0.href": event.links.as_ref()?.first().map(|l| FieldRef::Str(&l.href)),
    /// `eventType`, as it arrived.
    EventType = "eventType": Some(FieldRef::Str(event.event_type.as_str())),
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

/// Where a path leads on the typed event, found without building its JSON form.
#[derive(Debug, Clone, Copy)]
pub enum Resolved<'a, 's, S> {
    /// The value at the longest typed prefix of the path, and the segments still to walk
    /// from it (through JSON objects, or lists for numeric segments).
    At(FieldRef<'a>, &'s [S]),
    /// The event has nothing at that path.
    Absent,
    /// The path names a whole typed object or list (`alertSource`, `links`…): only the
    /// event's JSON form has it as one value.
    NeedsJson,
}

impl<'a, 's, S> Resolved<'a, 's, S> {
    fn text(value: Option<&'a str>, rest: &'s [S]) -> Self {
        value.map_or(Resolved::Absent, |s| Resolved::At(FieldRef::Str(s), rest))
    }

    fn json(value: Option<&'a Value>, rest: &'s [S]) -> Self {
        value.map_or(Resolved::Absent, |v| Resolved::At(FieldRef::Json(v), rest))
    }
}

impl IncidentEvent {
    /// Resolves a payload path as far as the typed fields go. Agrees with walking the same
    /// path through [`IncidentEvent::to_json`] (a unit test checks every typed field), at
    /// a fraction of the cost: a template's `{{ event.labels.team }}` or a condition on a
    /// custom field is read straight from [`IncidentEvent::extra`].
    pub fn resolve<'s, S: AsRef<str>>(&self, path: &'s [S]) -> Resolved<'_, 's, S> {
        let Some((first, rest)) = path.split_first() else {
            return Resolved::NeedsJson;
        };
        let text = |value| Resolved::text(value, rest);
        let json = Resolved::json;
        match first.as_ref() {
            "id" => text(self.id.as_deref()),
            "status" => text(self.status.as_ref().map(|s| s.as_str())),
            "summary" => text(self.summary.as_deref()),
            "details" => text(self.details.as_deref()),
            "reportTime" => text(self.report_time.as_deref()),
            "eventType" => text(Some(self.event_type.as_str())),
            "priority" => text(self.priority.as_ref().map(|p| p.as_str())),
            "alertKey" => text(self.alert_key.as_deref()),
            "alertUrl" => text(self.alert_url.as_deref()),
            "alertSource" => {
                let Some(source) = &self.alert_source else { return Resolved::Absent };
                let Some((second, rest)) = rest.split_first() else { return Resolved::NeedsJson };
                match second.as_ref() {
                    "id" => json(source.id.as_ref(), rest),
                    "name" => Resolved::text(source.name.as_deref(), rest),
                    "escalationPolicy" => {
                        let Some(policy) = &source.escalation_policy else { return Resolved::Absent };
                        let Some((third, rest)) = rest.split_first() else { return Resolved::NeedsJson };
                        match third.as_ref() {
                            "id" => json(policy.id.as_ref(), rest),
                            "name" => Resolved::text(policy.name.as_deref(), rest),
                            other => json(policy.extra.get(other), rest),
                        }
                    }
                    other => json(source.extra.get(other), rest),
                }
            }
            "assignedTo" | "links" | "responders" => {
                match (first.as_ref(), &self.assigned_to, &self.links, &self.responders) {
                    ("assignedTo", None, _, _) | ("links", _, None, _) | ("responders", _, _, None) => Resolved::Absent,
                    _ => Resolved::NeedsJson,
                }
            }
            other => json(self.extra.get(other), rest),
        }
    }
}

/// An event seen by filters and templates: typed fields are read directly, the JSON form
/// is built at most once, and only when a path names a whole typed object or list.
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
            FieldPath::Json(segments) => match self.event.resolve(segments) {
                Resolved::At(FieldRef::Json(value), rest) => lookup(value, rest).map(FieldRef::Json),
                Resolved::At(FieldRef::Str(text), []) => Some(FieldRef::Str(text)),
                Resolved::At(FieldRef::Str(_), _) | Resolved::Absent => None,
                Resolved::NeedsJson => lookup(self.json(), segments).map(FieldRef::Json),
            },
        }
    }
}

/// Walks `segments` down from `value`: object keys, or list indexes for numeric segments.
pub fn lookup<'v, S: AsRef<str>>(value: &'v Value, segments: &[S]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| match value {
            Value::Object(map) => map.get(segment.as_ref()),
            Value::Array(items) => items.get(segment.as_ref().parse::<usize>().ok()?),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    use crate::event::{sample_event, AlertSource, EscalationPolicy, Link, User};

    #[test]
    fn known_paths_are_typed_and_others_are_json() {
        assert_eq!(FieldPath::parse("alertSource.name").unwrap(), FieldPath::Known(KnownField::SourceName));
        assert_eq!(FieldPath::parse("labels.team").unwrap(), FieldPath::Json(vec!["labels".into(), "team".into()]));
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("").is_err());
    }

    /// The sample with every typed field set (`responders` too), and custom fields at every
    /// level, nulls and nested lists.
    fn event_with_extras() -> IncidentEvent {
        let mut value = sample_event().to_json();
        value["labels"] = serde_json::json!({"team": "db", "n": 3, "tags": ["a", {"b": 1}], "none": null});
        value["alertSource"]["region"] = serde_json::json!({"name": "eu"});
        value["alertSource"]["escalationPolicy"]["tier"] = serde_json::json!(2);
        value["responders"] = serde_json::json!([{"name": "r1"}]);
        serde_json::from_value(value).unwrap()
    }

    /// The keys of a written object that are not its `extra` fields, in order.
    fn typed_keys<'a>(written: &'a Value, extra: &Map<String, Value>) -> Vec<&'a str> {
        let object = written.as_object().expect("an object");
        object.keys().map(String::as_str).filter(|key| !extra.contains_key(*key)).collect()
    }

    #[test]
    fn field_names_agree_with_what_serde_writes() {
        // Every typed field set, at every level, beside custom fields.
        let event = event_with_extras();
        let json = event.to_json();
        assert_eq!(typed_keys(&json, &event.extra), IncidentEvent::FIELD_NAMES);
        assert!(event.extra.keys().all(|key| !IncidentEvent::FIELD_NAMES.contains(&key.as_str())));

        let source = event.alert_source.as_ref().unwrap();
        assert_eq!(typed_keys(&json["alertSource"], &source.extra), AlertSource::FIELD_NAMES);
        let policy = source.escalation_policy.as_ref().unwrap();
        assert_eq!(typed_keys(&json["alertSource"]["escalationPolicy"], &policy.extra), EscalationPolicy::FIELD_NAMES);
        let user = event.assigned_to.as_ref().unwrap();
        assert_eq!(typed_keys(&json["assignedTo"], &user.extra), User::FIELD_NAMES);
        let link = &event.links.as_ref().unwrap()[0];
        assert_eq!(typed_keys(&json["links"][0], &link.extra), Link::FIELD_NAMES);

        // And every name serde writes is one the deserializer reads into its field.
        let back: IncidentEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn resolving_on_the_typed_event_agrees_with_walking_its_json() {
        for event in [event_with_extras(), crate::event::minimal_sample()] {
            let json = event.to_json();
            // Every typed field by its name and every known path, then paths through the typed
            // objects, into custom fields, and to nothing.
            let typed_paths =
                IncidentEvent::FIELD_NAMES.iter().copied().chain(KnownField::ALL.map(KnownField::payload_path));
            let others = [
                "alertSource.nope",
                "alertSource.region",
                "alertSource.region.name",
                "alertSource.escalationPolicy",
                "alertSource.escalationPolicy.tier",
                "alertSource.name.x",
                "assignedTo.firstName",
                "links.1",
                "responders.0.name",
                "labels",
                "labels.team",
                "labels.n",
                "labels.tags.0",
                "labels.tags.1.b",
                "labels.none",
                "labels.team.x",
                "summary.x",
                "nope",
                "nope.deeper",
            ];
            for path in typed_paths.chain(others) {
                let view = EventView::new(&event);
                let parsed = FieldPath::parse(path).unwrap();
                let typed = view.get(&parsed).map(|v| match v {
                    FieldRef::Str(s) => Value::String(s.to_string()),
                    FieldRef::Json(v) => v.clone(),
                });
                let segments: Vec<&str> = path.split('.').collect();
                assert_eq!(typed.as_ref(), lookup(&json, &segments), "{path}");
                // Nothing here but whole typed objects and lists needs the JSON form.
                let whole = ["alertSource", "alertSource.escalationPolicy", "assignedTo", "links", "responders"];
                let needs_json = whole
                    .iter()
                    .any(|w| path == *w || path.starts_with(&format!("{w}.")) && !path.starts_with("alertSource."));
                if !needs_json && !matches!(parsed, FieldPath::Known(_)) {
                    assert!(view.json.get().is_none(), "{path} built the JSON form");
                }
            }
        }
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
