//! Sample events: what `webhook-sink test` sends and what templates are checked against.

use serde_json::json;

use super::{EventKind, IncidentEvent};

/// A full sample event: every typed field set, values chosen to be awkward (quotes,
/// backslashes, newlines, `<>&'`, non-ASCII), so a template that survives it survives
/// real events.
pub fn sample_event() -> IncidentEvent {
    let value = json!({
        "id": "2983781",
        "status": "PENDING",
        "summary": "PROBLEM Host Alert: app.compute is DOWN \"quoted\" <b>&'",
        "details": "Sample event sent by webhook-sink.\nSecond line with a tab\tand a backslash \\ and ünïcödé ✓",
        "reportTime": "2019-08-29T09:52:39.551Z",
        "eventType": EventKind::Created.name(),
        "priority": "HIGH",
        "alertKey": "webhook-sink-sample",
        "alertUrl": "https://incidents.example.com/alerts/2983781",
        "alertSource": {
            "id": 2101194,
            "name": "Nagios Network and Hosts",
            "escalationPolicy": {"id": 42, "name": "Default escalation"}
        },
        "assignedTo": {
            "username": "abr",
            "email": "example@example.com",
            "firstName": "Andreas",
            "lastName": "Farmer"
        },
        "links": [{"href": "https://runbooks.example.com/app-compute", "text": "Runbook"}]
    });
    serde_json::from_value(value).unwrap_or_else(|_| IncidentEvent::new(EventKind::Created))
}

/// The smallest valid event: only `eventType`. Templates are checked against it too, so
/// sections that are skipped when a field is missing are checked as well.
pub fn minimal_sample() -> IncidentEvent {
    IncidentEvent::new(EventKind::Created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_parses_with_every_typed_field() {
        let event = sample_event();
        assert!(event.id.is_some() && event.alert_source.is_some() && event.links.is_some());
        assert!(event.extra.is_empty());
    }
}
