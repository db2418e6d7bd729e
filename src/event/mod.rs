//! The incident event model: the floor every other module stands on (it imports nothing of ours).
//!
//! An [`IncidentEvent`] is the typed form of the reference's incident object. Fields this
//! version does not know are kept in [`IncidentEvent::extra`] and written back out, so
//! newer senders' fields are carried through, never rejected.

mod de;
mod depth;
mod event_type;
mod field;
mod finalize;
mod sample;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use event_type::{EventKind, EventType, UnknownEventType};
pub use field::{lookup, EventView, FieldPath, FieldRef, InvalidFieldPath, KnownField, Resolved};
pub use finalize::{AckGroup, AckToken, Finalizer, Outcome};
pub use sample::{minimal_sample, sample_event};

/// The text of an event's fields: a string kept inline up to 24 bytes (the size of a
/// `String`), on the heap beyond. A typical event's ids, keys, times and names then need
/// no allocation of their own when it is decoded, nor a free when it is delivered
/// (measured in docs/performance.md, round 4). Derefs to `str`; serializes as a plain string.
pub type Text = compact_str::CompactString;

/// One incident event, as the default webhook payload shows it.
///
/// Only `eventType` is required: it is what `triggers` match. Absent optional fields are
/// left out when the event is written back (a `null` counts as absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentEvent {
    /// Id of the alert, e.g. `"2983781"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Text>,
    /// `PENDING`, `ACCEPTED` or `RESOLVED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AlertStatus>,
    /// One-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Text>,
    /// Free text, may be long and multi-line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Text>,
    /// ISO-8601 report time, kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_time: Option<Text>,
    /// What happened (the trigger).
    pub event_type: EventType,
    /// `HIGH` or `LOW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Id of the first event that created the alert, e.g. `"zabbix-12345"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_key: Option<Text>,
    /// Link to the alert in the incident tool (the `alertUrl` template variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_url: Option<Text>,
    /// The alert source that raised the alert. Boxed, as is `assigned_to`: inline, the two
    /// made the event 840 bytes instead of 352, and an event is moved several times
    /// between the parser and the sink (docs/performance.md, round 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_source: Option<Box<AlertSource>>,
    /// Who the alert is assigned to, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Box<User>>,
    /// Links attached to the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<Link>>,
    /// Responders (newer events); kept as they came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responders: Option<Vec<Value>>,
    /// Every field this version does not know, in arrival order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The alert source of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertSource {
    /// Numeric id in the reference (`2101194`); a string id is kept as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Display name, e.g. `"Nagios Network and Hosts"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    /// The source's escalation policy (`escalationPolicyId` / `escalationPolicyName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_policy: Option<EscalationPolicy>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An escalation policy reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationPolicy {
    /// Id, numeric or text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The user an alert is assigned to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Text>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Text>,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Text>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Text>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A link attached to an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Target address.
    pub href: Text,
    /// Link text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// The typed fields and their JSON names, listed once: this makes the deserializer and
// `IncidentEvent::FIELD_NAMES`, which the rest of the crate uses instead of its own lists.
// The compiler checks that it names every field of the struct; a unit test (in field.rs),
// that serde writes the same names.
de::deserialize_with_extra!(IncidentEvent, "an incident event (a JSON object)", {
    id: "id", status: "status", summary: "summary", details: "details", report_time: "reportTime",
    event_type: "eventType" required, priority: "priority", alert_key: "alertKey", alert_url: "alertUrl",
    alert_source: "alertSource", assigned_to: "assignedTo", links: "links", responders: "responders",
});
de::deserialize_with_extra!(AlertSource, "an alert source (a JSON object)", {
    id: "id", name: "name", escalation_policy: "escalationPolicy",
});
de::deserialize_with_extra!(EscalationPolicy, "an escalation policy (a JSON object)", { id: "id", name: "name" });
de::deserialize_with_extra!(User, "a user (a JSON object)", {
    username: "username", email: "email", first_name: "firstName", last_name: "lastName",
});
de::deserialize_with_extra!(Link, "a link (a JSON object)", { href: "href" required, text: "text" });

/// Declares a string enum whose unknown values are kept as they came.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept as it came.
            Other(Text),
        }

        impl $name {
            /// Every value this version knows, as written in events.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value as written in events.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(text) => text,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.into()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Straight into a `Text`: short values need no allocation (a `Cow<str>`
                // always deserializes as an owned `String`), and an unknown one is kept as is.
                let text = Text::deserialize(d)?;
                Ok(match text.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(text),
                })
            }
        }
    };
}

open_string_enum! {
    /// The state of an alert.
    AlertStatus {
        /// Open, nobody has accepted it yet.
        Pending => "PENDING",
        /// Someone accepted (acknowledged) it.
        Accepted => "ACCEPTED",
        /// Over.
        Resolved => "RESOLVED",
    }
}

open_string_enum! {
    /// The urgency of an alert.
    Priority {
        /// Wakes someone up.
        High => "HIGH",
        /// Can wait.
        Low => "LOW",
    }
}

impl IncidentEvent {
    /// A new event of the given type with every optional field empty.
    pub fn new(event_type: impl Into<EventType>) -> Self {
        IncidentEvent {
            id: None,
            status: None,
            summary: None,
            details: None,
            report_time: None,
            event_type: event_type.into(),
            priority: None,
            alert_key: None,
            alert_url: None,
            alert_source: None,
            assigned_to: None,
            links: None,
            responders: None,
            extra: Map::new(),
        }
    }

    /// The event as a JSON value: the default payload, unknown fields included.
    pub fn to_json(&self) -> Value {
        // Serializing plain data into a `Value` cannot fail: every map key is a string.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The key that identifies the alert this event belongs to: `alertKey`, else `id`.
    pub fn alert_identity(&self) -> Option<&str> {
        self.alert_key.as_deref().or(self.id.as_deref())
    }
}

/// An event travelling through the pipeline: the incident, its delivery id, and what the
/// host knows of it. Each sink gets its own copy ([`Event::copy`]) with its own finalizer.
#[derive(Debug)]
pub struct Event {
    /// The incident, shared between the copies that fan out from one source.
    pub incident: Arc<IncidentEvent>,
    /// The id every delivery of this event carries as `webhook-id`: the same across
    /// retries, restarts and replays, so a receiver can drop duplicates.
    pub id: Arc<str>,
    /// Bytes the event took on the wire (counted against buffer limits).
    pub size: usize,
    /// When the source accepted it (for latency figures).
    pub received_at: Instant,
    /// Reports what became of this copy.
    pub finalizer: Finalizer,
}

/// An event as a source decoded it, before it enters the buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The incident.
    pub incident: IncidentEvent,
    /// Bytes it took on the wire (its share of the body it came in).
    pub size: usize,
    /// What identifies this event's content, when the codec knows it (an Alertmanager
    /// alert's fingerprint, status and times; a Kafka message's topic, partition and
    /// offset): events with the same identity get the same `webhook-id`
    /// ([`stable_webhook_id`]), so a receiver can drop a re-sent one. `None`: a fresh id.
    pub identity: Option<String>,
}

impl Decoded {
    /// A decoded event with no identity (it gets a fresh `webhook-id`).
    pub fn new(incident: IncidentEvent, size: usize) -> Self {
        Decoded { incident, size, identity: None }
    }
}

impl Event {
    /// Wraps an incident that was just received, giving it a new delivery id.
    pub fn new(incident: IncidentEvent, size: usize) -> Self {
        let mut id = [0u8; WEBHOOK_ID_LEN];
        Event::with_id(incident, Arc::from(write_webhook_id(&mut id)), size)
    }

    /// Wraps a decoded event: its delivery id is derived from its identity when it has
    /// one, else new.
    pub fn decoded(decoded: Decoded) -> Self {
        match decoded.identity {
            Some(identity) => {
                let mut id = [0u8; WEBHOOK_ID_LEN];
                let id = Arc::from(write_stable_webhook_id(&identity, &mut id));
                Event::with_id(decoded.incident, id, decoded.size)
            }
            None => Event::new(decoded.incident, decoded.size),
        }
    }

    /// Wraps an incident that already has a delivery id (read back from a buffer).
    pub fn with_id(incident: IncidentEvent, id: Arc<str>, size: usize) -> Self {
        Event { incident: Arc::new(incident), id, size, received_at: Instant::now(), finalizer: Finalizer::default() }
    }

    /// Another copy of the same event (same incident and id) with a finalizer of its own.
    pub fn copy(&self) -> Event {
        Event {
            incident: self.incident.clone(),
            id: self.id.clone(),
            size: self.size,
            received_at: self.received_at,
            finalizer: Finalizer::default(),
        }
    }

    /// Reports what became of this copy.
    pub fn finish(self, outcome: Outcome) {
        self.finalizer.finish(outcome);
    }
}

/// A fresh delivery id: `msg_` and a time-ordered UUID (the Standard Webhooks style).
pub fn new_webhook_id() -> String {
    let mut id = [0u8; WEBHOOK_ID_LEN];
    write_webhook_id(&mut id).to_string()
}

/// The delivery id of every event whose identity is `identity`: `msg_` and a name-based
/// UUID (version 5, SHA-1) of it, so the same identity always gives the same id and
/// different ones (practically) never share one.
pub fn stable_webhook_id(identity: &str) -> String {
    let mut id = [0u8; WEBHOOK_ID_LEN];
    write_stable_webhook_id(identity, &mut id).to_string()
}

/// The namespace of [`stable_webhook_id`]'s UUIDs (drawn at random once; changing it
/// changes every stable id).
const STABLE_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("5b0c8f0e-7a43-4d3e-9c51-2f6f0f2b9d17");

fn write_stable_webhook_id<'a>(identity: &str, buf: &'a mut [u8; WEBHOOK_ID_LEN]) -> &'a str {
    buf[..4].copy_from_slice(b"msg_");
    uuid::Uuid::new_v5(&STABLE_ID_NAMESPACE, identity.as_bytes()).simple().encode_lower(&mut buf[4..]);
    // Only ASCII was written.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// `msg_` and 32 hex digits.
const WEBHOOK_ID_LEN: usize = 4 + uuid::fmt::Simple::LENGTH;

/// Writes a fresh delivery id into `buf`, without allocating.
fn write_webhook_id(buf: &mut [u8; WEBHOOK_ID_LEN]) -> &str {
    buf[..4].copy_from_slice(b"msg_");
    uuid::Uuid::now_v7().simple().encode_lower(&mut buf[4..]);
    // Only ASCII was written.
    std::str::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event is moved several times between the parser and its `Arc`, so its size is
    /// copying per event: the rarely set large parts are boxed to keep it small.
    #[test]
    fn an_event_stays_small() {
        let size = std::mem::size_of::<IncidentEvent>();
        assert!(size <= 400, "an IncidentEvent takes {size} bytes");
    }

    const REFERENCE: &str = r#"{
        "id": "2983781",
        "status": "ACCEPTED",
        "summary": "PROBLEM Host Alert: app.compute is DOWN",
        "details": "line 1\nline 2",
        "reportTime": "2019-08-29T09:52:39.551Z",
        "eventType": "incident-created",
        "priority": "HIGH",
        "alertKey": "zabbix-12345",
        "alertSource": {"id": 2101194, "name": "Nagios Network and Hosts", "integrationType": "NAGIOS"},
        "assignedTo": {"username": "abr", "email": "example@example.com", "firstName": "Andreas", "lastName": "farmer"},
        "links": [{"href": "https://example.com/a", "text": "runbook"}],
        "futureField": {"nested": [1, 2, 3]}
    }"#;

    #[test]
    fn reference_payload_round_trips_with_unknown_fields() {
        let event: IncidentEvent = serde_json::from_str(REFERENCE).unwrap();
        assert_eq!(event.event_type.kind(), Some(EventKind::Created));
        assert_eq!(event.priority, Some(Priority::High));
        assert_eq!(event.status, Some(AlertStatus::Accepted));
        let out = event.to_json();
        let input: Value = serde_json::from_str(REFERENCE).unwrap();
        assert_eq!(out, input, "every field, known or not, is written back as it came");
    }

    #[test]
    fn short_texts_are_decoded_inline_and_long_ones_kept_whole() {
        let event: IncidentEvent = serde_json::from_str(REFERENCE).unwrap();
        let source = event.alert_source.as_ref().unwrap();
        let user = event.assigned_to.as_ref().unwrap();
        let link = &event.links.as_ref().unwrap()[0];
        for short in [&event.id, &event.report_time, &event.alert_key, &user.username, &user.email, &link.text] {
            let short = short.as_ref().unwrap();
            assert!(!short.is_heap_allocated(), "{short} (up to 24 bytes) is kept inline");
        }
        assert!(!link.href.is_heap_allocated());
        let long = event.summary.as_ref().unwrap();
        assert_eq!(long, "PROBLEM Host Alert: app.compute is DOWN");
        assert!(long.is_heap_allocated(), "longer than 24 bytes: on the heap");
        assert_eq!(source.name.as_deref(), Some("Nagios Network and Hosts"));
        // An escaped string (not borrowed from the input) decodes the same way.
        let event: IncidentEvent = serde_json::from_str(r#"{"eventType":"alert-raised","id":"a\"b"}"#).unwrap();
        assert_eq!(event.id.as_deref(), Some("a\"b"));
        assert!(!event.id.unwrap().is_heap_allocated());
    }

    #[test]
    fn unknown_event_type_status_and_priority_keep_their_text() {
        let long = "alert-teleported-to-another-galaxy-far-away";
        let text = format!(r#"{{"status":"SNOOZED","eventType":"{long}","priority":"{long}"}}"#);
        let event: IncidentEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(event.event_type, EventType::Unknown(long.into()));
        assert_eq!(event.status, Some(AlertStatus::Other("SNOOZED".into())));
        assert_eq!(event.priority, Some(Priority::Other(long.into())));
        assert_eq!(serde_json::to_string(&event).unwrap(), text, "written back as they came");
    }

    #[test]
    fn unknown_status_and_priority_are_kept() {
        let event: IncidentEvent =
            serde_json::from_str(r#"{"eventType":"alert-raised","status":"SNOOZED","priority":"MEDIUM"}"#).unwrap();
        assert_eq!(event.status, Some(AlertStatus::Other("SNOOZED".into())));
        assert_eq!(event.to_json()["priority"], "MEDIUM");
    }

    #[test]
    fn webhook_ids_are_msg_and_32_hex_digits_and_unique() {
        let (a, b) = (new_webhook_id(), Event::new(minimal_sample(), 0).id);
        for id in [a.as_str(), &*b] {
            assert_eq!(id.len(), 36, "{id}");
            assert!(id.starts_with("msg_") && id[4..].bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(a, &*b);
    }

    #[test]
    fn stable_ids_follow_the_identity() {
        let decoded = |identity: &str| Decoded { identity: Some(identity.into()), ..Decoded::new(minimal_sample(), 0) };
        let (a, again, b) =
            (Event::decoded(decoded("a")).id, Event::decoded(decoded("a")).id, Event::decoded(decoded("b")).id);
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(&*a, stable_webhook_id("a"));
        assert!(a.len() == 36 && a.starts_with("msg_") && a[4..].bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        // No identity: a fresh id each time.
        assert_ne!(
            Event::decoded(Decoded::new(minimal_sample(), 0)).id,
            Event::decoded(Decoded::new(minimal_sample(), 0)).id
        );
    }

    #[test]
    fn event_type_is_required() {
        let err = serde_json::from_str::<IncidentEvent>(r#"{"id":"1"}"#).unwrap_err();
        assert!(err.to_string().contains("eventType"), "{err}");
    }
}
