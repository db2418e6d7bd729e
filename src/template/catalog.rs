//! The template variable catalog: the names a body template may use.
//!
//! Three families: the vendor's catalog (`alertSummary`, …), the older `incident…` names
//! for the same values, and `event`, the whole incoming event as JSON, for custom fields
//! (`{{ event.labels.team }}`, `{{#event.links}}{{href}}{{/event.links}}`).

use crate::event::KnownField;

/// A catalog variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// Name as used in templates.
    pub name: &'static str,
    /// The event field it reads.
    pub field: KnownField,
    /// What it holds, for docs and `--help`.
    pub description: &'static str,
    /// The current name this legacy name stands for, if it is a legacy name.
    pub legacy_of: Option<&'static str>,
}

const fn var(name: &'static str, field: KnownField, description: &'static str) -> Variable {
    Variable { name, field, description, legacy_of: None }
}

const fn legacy(name: &'static str, of: &'static str, field: KnownField) -> Variable {
    Variable { name, field, description: "legacy name", legacy_of: Some(of) }
}

/// The name under which the whole event is reachable.
pub const EVENT_ROOT: &str = "event";

/// Every catalog variable, current names first.
pub const VARIABLES: &[Variable] = &[
    var("alertId", KnownField::Id, "id of the alert"),
    var("alertKey", KnownField::AlertKey, "id of the initial event that created the alert"),
    var("alertDetails", KnownField::Details, "full details"),
    var("alertSummary", KnownField::Summary, "summary"),
    var("alertStatus", KnownField::Status, "PENDING, ACCEPTED or RESOLVED"),
    var("alertPriority", KnownField::Priority, "HIGH or LOW"),
    var("alertUrl", KnownField::AlertUrl, "link to the alert in the incident tool (the event's `alertUrl`)"),
    var("alertSourceId", KnownField::SourceId, "id of the alert source"),
    var("alertSourceName", KnownField::SourceName, "name of the alert source"),
    var("escalationPolicyId", KnownField::EscalationPolicyId, "id of the source's escalation policy"),
    var("escalationPolicyName", KnownField::EscalationPolicyName, "name of the source's escalation policy"),
    var("reportTime", KnownField::ReportTime, "ISO-8601 report time"),
    var("link", KnownField::FirstLink, "href of the first entry of the event's `links`"),
    var("eventType", KnownField::EventType, "the event type, as it arrived"),
    legacy("incidentId", "alertId", KnownField::Id),
    legacy("incidentKey", "alertKey", KnownField::AlertKey),
    legacy("incidentDetails", "alertDetails", KnownField::Details),
    legacy("incidentSummary", "alertSummary", KnownField::Summary),
    legacy("incidentStatus", "alertStatus", KnownField::Status),
    legacy("incidentPriority", "alertPriority", KnownField::Priority),
    legacy("incidentUrl", "alertUrl", KnownField::AlertUrl),
];

/// The catalog variable called `name`.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// Every name a template may start a variable with.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    VARIABLES.iter().map(|v| v.name).chain(std::iter::once(EVENT_ROOT))
}
