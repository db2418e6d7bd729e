//! Event types: what happened to an alert, the thing a webhook's `triggers` select.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Text;

/// What happened to an alert. Legacy `incident-*` names mean the same as their `alert-*` twins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `alert-created` (legacy `incident-created`).
    Created,
    /// `alert-assigned` (legacy `incident-assigned`).
    Assigned,
    /// `alert-auto-escalated` (legacy `incident-auto-escalated`).
    AutoEscalated,
    /// `alert-auto-resolved` (legacy `incident-auto-resolved`).
    AutoResolved,
    /// `alert-acknowledged` (legacy `incident-acknowledged`).
    Acknowledged,
    /// `alert-rejected` (legacy `incident-rejected`).
    Rejected,
    /// `alert-raised` (legacy `incident-raised`).
    Raised,
    /// `alert-comment-added` (legacy `incident-comment-added`).
    CommentAdded,
    /// `alert-resolved` (legacy `incident-resolved`).
    Resolved,
    /// `alert-escalation-ended` (no legacy name).
    EscalationEnded,
    /// `alert-responder-added` (no legacy name).
    ResponderAdded,
    /// `alert-responder-removed` (no legacy name).
    ResponderRemoved,
    /// `alert-channel-attached` (no legacy name).
    ChannelAttached,
    /// `alert-channel-detached` (no legacy name).
    ChannelDetached,
}

impl EventKind {
    /// Every kind, in the order the reference lists them.
    pub const ALL: [EventKind; 14] = [
        EventKind::Created,
        EventKind::Assigned,
        EventKind::AutoEscalated,
        EventKind::AutoResolved,
        EventKind::Acknowledged,
        EventKind::Rejected,
        EventKind::Raised,
        EventKind::CommentAdded,
        EventKind::Resolved,
        EventKind::EscalationEnded,
        EventKind::ResponderAdded,
        EventKind::ResponderRemoved,
        EventKind::ChannelAttached,
        EventKind::ChannelDetached,
    ];

    /// The current (`alert-*`) name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Created => "alert-created",
            EventKind::Assigned => "alert-assigned",
            EventKind::AutoEscalated => "alert-auto-escalated",
            EventKind::AutoResolved => "alert-auto-resolved",
            EventKind::Acknowledged => "alert-acknowledged",
            EventKind::Rejected => "alert-rejected",
            EventKind::Raised => "alert-raised",
            EventKind::CommentAdded => "alert-comment-added",
            EventKind::Resolved => "alert-resolved",
            EventKind::EscalationEnded => "alert-escalation-ended",
            EventKind::ResponderAdded => "alert-responder-added",
            EventKind::ResponderRemoved => "alert-responder-removed",
            EventKind::ChannelAttached => "alert-channel-attached",
            EventKind::ChannelDetached => "alert-channel-detached",
        }
    }

    /// The legacy (`incident-*`) name, for the kinds that have one.
    pub fn legacy_name(self) -> Option<&'static str> {
        Some(match self {
            EventKind::Created => "incident-created",
            EventKind::Assigned => "incident-assigned",
            EventKind::AutoEscalated => "incident-auto-escalated",
            EventKind::AutoResolved => "incident-auto-resolved",
            EventKind::Acknowledged => "incident-acknowledged",
            EventKind::Rejected => "incident-rejected",
            EventKind::Raised => "incident-raised",
            EventKind::CommentAdded => "incident-comment-added",
            EventKind::Resolved => "incident-resolved",
            _ => return None,
        })
    }

    /// Parses a current or legacy name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<(EventKind, bool)> {
        EventKind::ALL.into_iter().find_map(|kind| {
            if kind.name() == name {
                Some((kind, false))
            } else if kind.legacy_name() == Some(name) {
                Some((kind, true))
            } else {
                None
            }
        })
    }

    /// Every accepted name (current, then legacy), for error messages.
    pub fn all_names() -> Vec<&'static str> {
        let current = EventKind::ALL.into_iter().map(EventKind::name);
        let legacy = EventKind::ALL.into_iter().filter_map(EventKind::legacy_name);
        current.chain(legacy).collect()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a trigger name that is no event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::from_name(s).map(|(kind, _)| kind).ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

/// The `eventType` of an event as it arrived.
///
/// Known names keep their spelling family (a legacy `incident-*` name is written back as
/// it came), so the default payload passes through unchanged. Names this version does not
/// know (a newer sender) are carried as they are: they never match a named trigger, but a
/// sink without `triggers` still delivers them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A name this version knows; `legacy` is true for the `incident-*` spelling.
    Known {
        /// What happened.
        kind: EventKind,
        /// Whether the event used the legacy `incident-*` name.
        legacy: bool,
    },
    /// A name this version does not know.
    Unknown(Text),
}

impl EventType {
    /// The name as it arrived.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Known { kind, legacy: true } => kind.legacy_name().unwrap_or(kind.name()),
            EventType::Known { kind, legacy: false } => kind.name(),
            EventType::Unknown(name) => name,
        }
    }

    /// The kind, when the name is known.
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            EventType::Known { kind, .. } => Some(*kind),
            EventType::Unknown(_) => None,
        }
    }
}

impl From<EventKind> for EventType {
    fn from(kind: EventKind) -> Self {
        EventType::Known { kind, legacy: false }
    }
}

impl From<&str> for EventType {
    fn from(name: &str) -> Self {
        match EventKind::from_name(name) {
            Some((kind, legacy)) => EventType::Known { kind, legacy },
            None => EventType::Unknown(name.into()),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Straight into a `Text`: no allocation for a name of up to 24 bytes (a `Cow<str>`
        // always deserializes as an owned `String`); an unknown name is kept as it came.
        let name = Text::deserialize(deserializer)?;
        Ok(match EventKind::from_name(&name) {
            Some((kind, legacy)) => EventType::Known { kind, legacy },
            None => EventType::Unknown(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_equal_their_alert_twins() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some((kind, false)));
            if let Some(legacy) = kind.legacy_name() {
                assert_eq!(EventKind::from_name(legacy), Some((kind, true)));
                assert_eq!(EventType::from(legacy).kind(), Some(kind));
                assert_eq!(EventType::from(legacy).as_str(), legacy);
            }
        }
        assert_eq!(EventKind::all_names().len(), 14 + 9);
    }

    #[test]
    fn unknown_names_are_carried() {
        let t = EventType::from("alert-teleported");
        assert_eq!(t.kind(), None);
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"alert-teleported\"");
        assert!("alert-teleported".parse::<EventKind>().is_err());
    }
}
