//! How deeply a decoded event nests: the `decoding.max_depth` check made on the event
//! once it is decoded, instead of on the bytes before.
//!
//! Counted as in the JSON it came from: the event's object is level 1, `alertSource`,
//! `assignedTo`, `links` and `responders` level 2, an escalation policy and each link
//! level 3, and every array or object inside an untyped value (unknown fields, ids,
//! responders) one level more. Only those untyped values can nest without bound, and a
//! typical event has two or three scalars among them, so the walk costs a few dozen
//! instructions where a pass over the bytes cost 2.6k per event (docs/performance.md).
//! Duplicate keys are the one difference: a value that a later copy of its key replaced
//! is not in the event, so it is not counted.

use serde_json::{Map, Value};

use super::{AlertSource, EscalationPolicy, IncidentEvent, Link, User};

impl IncidentEvent {
    /// Whether the event, as JSON, nests arrays and objects deeper than `max_depth`
    /// levels (the event's own object is level 1).
    pub fn nests_deeper_than(&self, max_depth: usize) -> bool {
        // Each part is checked against the levels left below the one it sits at.
        let Some(below) = max_depth.checked_sub(1) else { return true };
        map_over(&self.extra, below)
            || self.alert_source.as_deref().is_some_and(|source| source_over(source, below))
            || self.assigned_to.as_deref().is_some_and(|user| user_over(user, below))
            || self.links.as_ref().is_some_and(|links| links_over(links, below))
            || self
                .responders
                .as_ref()
                .is_some_and(|responders| below.checked_sub(1).is_none_or(|inner| array_over(responders, inner)))
    }
}

/// Whether a value nests deeper than `budget`, the levels left for the value itself and
/// what it holds (a scalar takes none). Recursion is bounded by `budget`, not by the value.
fn value_over(value: &Value, budget: usize) -> bool {
    match value {
        Value::Array(items) => budget.checked_sub(1).is_none_or(|below| array_over(items, below)),
        Value::Object(map) => budget.checked_sub(1).is_none_or(|below| map_over(map, below)),
        _ => false,
    }
}

/// Whether an array's items nest deeper than `below`, the levels left under the array.
fn array_over(items: &[Value], below: usize) -> bool {
    items.iter().any(|item| value_over(item, below))
}

/// Whether an object's values nest deeper than `below`, the levels left under the object.
fn map_over(map: &Map<String, Value>, below: usize) -> bool {
    map.values().any(|value| value_over(value, below))
}

/// The typed objects: each takes a level of `budget` itself, then checks what it holds.
fn source_over(source: &AlertSource, budget: usize) -> bool {
    let Some(below) = budget.checked_sub(1) else { return true };
    source.id.as_ref().is_some_and(|id| value_over(id, below))
        || map_over(&source.extra, below)
        || source.escalation_policy.as_ref().is_some_and(|policy| policy_over(policy, below))
}

fn policy_over(policy: &EscalationPolicy, budget: usize) -> bool {
    let Some(below) = budget.checked_sub(1) else { return true };
    policy.id.as_ref().is_some_and(|id| value_over(id, below)) || map_over(&policy.extra, below)
}

fn user_over(user: &User, budget: usize) -> bool {
    budget.checked_sub(1).is_none_or(|below| map_over(&user.extra, below))
}

fn links_over(links: &[Link], budget: usize) -> bool {
    let Some(below) = budget.checked_sub(1) else { return true };
    links.iter().any(|link| below.checked_sub(1).is_none_or(|inner| map_over(&link.extra, inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> IncidentEvent {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn typed_parts_count_as_their_json_does() {
        let cases = [
            (r#"{"eventType":"a"}"#, 1),
            (r#"{"eventType":"a","extra":1,"s":"[{"}"#, 1),
            (r#"{"eventType":"a","extra":{}}"#, 2),
            (r#"{"eventType":"a","extra":[[],[{"x":[]}]]}"#, 5),
            (r#"{"eventType":"a","alertSource":{"name":"n"}}"#, 2),
            (r#"{"eventType":"a","alertSource":{"id":[1]}}"#, 3),
            (r#"{"eventType":"a","alertSource":{"escalationPolicy":{"id":1}}}"#, 3),
            (r#"{"eventType":"a","alertSource":{"escalationPolicy":{"more":{"x":{}}}}}"#, 5),
            (r#"{"eventType":"a","assignedTo":{"username":"u","prefs":{"x":[]}}}"#, 4),
            (r#"{"eventType":"a","links":[]}"#, 2),
            (r#"{"eventType":"a","links":[{"href":"h","meta":{}}]}"#, 4),
            (r#"{"eventType":"a","responders":[{"team":{"id":1}}]}"#, 4),
            (r#"{"eventType":"a","alertSource":null,"links":null}"#, 1),
        ];
        for (text, depth) in cases {
            let event = event(text);
            assert!(!event.nests_deeper_than(depth), "{text} fits in {depth}");
            assert!(event.nests_deeper_than(depth - 1), "{text} does not fit in {}", depth - 1);
        }
        assert!(event(r#"{"eventType":"a"}"#).nests_deeper_than(0));
    }

    #[test]
    fn every_level_of_a_deep_value_counts() {
        let deep = format!(r#"{{"eventType":"a","x":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
        let event = event(&deep);
        assert!(event.nests_deeper_than(32));
        assert!(!event.nests_deeper_than(121));
    }
}
