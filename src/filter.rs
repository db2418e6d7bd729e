//! Trigger filters and conditions: which events fire a sink's webhook.
//!
//! A sink fires for an event when its `eventType` is among the sink's `triggers` (all
//! types when none are given) and every one of its `conditions` holds. Both are checked
//! when the config loads; evaluating them never fails.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, EventView, FieldPath, IncidentEvent};

/// One condition as written in the config: a field and exactly one test.
///
/// ```toml
/// [[sinks.chat.conditions]]
/// field = "priority"          # a dotted path into the event's payload
/// equals = "HIGH"             # or a list: any of them
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Dotted path into the event payload, e.g. `priority`, `alertSource.name`, `labels.team`,
    /// `links.0.href`. Required.
    pub field: String,
    /// The field's text (a string or a number) equals this value, or one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<OneOrMany>,
    /// The field is absent, or its text equals none of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<OneOrMany>,
    /// The field's text matches this regular expression (Rust `regex` syntax, unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// `true`: the field is present and not null; `false`: it is absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// A single value or a list of values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Any of several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A filter setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A trigger names no event type.
    #[error("unknown event type `{name}`{suggestion}; valid types are: {valid}")]
    UnknownTrigger {
        /// Position in the list.
        index: usize,
        /// The name as written.
        name: String,
        /// ", did you mean `…`?" or empty.
        suggestion: String,
        /// Every accepted name.
        valid: String,
    },
    /// A condition is malformed.
    #[error("{message}")]
    Condition {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

impl FilterError {
    /// The setting at fault, e.g. `triggers[1]` or `conditions[0]`.
    pub fn field(&self) -> String {
        match self {
            FilterError::UnknownTrigger { index, .. } => format!("triggers[{index}]"),
            FilterError::Condition { index, .. } => format!("conditions[{index}]"),
        }
    }
}

/// The test a condition applies.
#[derive(Debug, Clone)]
enum Test {
    Equals(Vec<String>),
    NotEquals(Vec<String>),
    Matches(Regex),
    Exists(bool),
}

/// A checked condition.
#[derive(Debug, Clone)]
pub struct Condition {
    field: FieldPath,
    test: Test,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.test {
            Test::Equals(values) => write!(f, "{} equals {}", self.field, values.join(" or ")),
            Test::NotEquals(values) => write!(f, "{} equals none of {}", self.field, values.join(", ")),
            Test::Matches(re) => write!(f, "{} matches `{}`", self.field, re.as_str()),
            Test::Exists(true) => write!(f, "{} exists", self.field),
            Test::Exists(false) => write!(f, "{} is absent", self.field),
        }
    }
}

impl Condition {
    /// Checks a condition from the config.
    pub fn compile(index: usize, config: &ConditionConfig) -> Result<Condition, FilterError> {
        let error = |message: String| FilterError::Condition { index, message };
        let field = FieldPath::parse(&config.field).map_err(|e| error(format!("field: {e}")))?;
        let mut tests = Vec::new();
        if let Some(values) = &config.equals {
            tests.push(Test::Equals(values.clone().into_vec()));
        }
        if let Some(values) = &config.not_equals {
            tests.push(Test::NotEquals(values.clone().into_vec()));
        }
        if let Some(pattern) = &config.matches {
            let re = Regex::new(pattern).map_err(|e| error(format!("matches: invalid regular expression: {e}")))?;
            tests.push(Test::Matches(re));
        }
        if let Some(exists) = config.exists {
            tests.push(Test::Exists(exists));
        }
        match tests.len() {
            1 => Ok(Condition { field, test: tests.remove(0) }),
            0 => Err(error("needs one test: `equals`, `not_equals`, `matches` or `exists`".into())),
            _ => Err(error("has more than one test; write each test as its own condition".into())),
        }
    }

    /// Whether the condition holds for the event.
    pub fn holds(&self, view: &EventView<'_>) -> bool {
        let value = view.get(&self.field);
        let text = value.and_then(|v| v.as_text());
        match &self.test {
            Test::Equals(values) => text.is_some_and(|t| values.iter().any(|v| *v == *t)),
            Test::NotEquals(values) => !text.is_some_and(|t| values.iter().any(|v| *v == *t)),
            Test::Matches(re) => text.is_some_and(|t| re.is_match(&t)),
            Test::Exists(expected) => value.is_some() == *expected,
        }
    }
}

/// Whether an event fires a sink, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The webhook fires.
    Fire,
    /// The event's type is not among the triggers.
    NotTriggered {
        /// The event's type as it arrived.
        event_type: String,
    },
    /// A condition does not hold.
    ConditionFailed {
        /// 0-based index of the first failing condition.
        index: usize,
        /// The condition, in words.
        condition: String,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Fire => f.write_str("fires"),
            Decision::NotTriggered { event_type } => {
                write!(f, "event type `{event_type}` is not among the sink's triggers")
            }
            Decision::ConditionFailed { index, condition } => {
                write!(f, "conditions[{index}] does not hold: {condition}")
            }
        }
    }
}

/// A sink's triggers and conditions, checked.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every event type, known or not.
    triggers: Option<Vec<EventKind>>,
    conditions: Vec<Condition>,
}

impl Filter {
    /// Checks `triggers` (`None` = all types) and `conditions`; reports every problem.
    pub fn compile(triggers: Option<&[String]>, conditions: &[ConditionConfig]) -> Result<Filter, Vec<FilterError>> {
        let mut errors = Vec::new();
        let triggers = triggers.map(|names| {
            names
                .iter()
                .enumerate()
                .filter_map(|(index, name)| match name.parse::<EventKind>() {
                    Ok(kind) => Some(kind),
                    Err(_) => {
                        errors.push(unknown_trigger(index, name));
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let conditions = conditions
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Condition::compile(i, c).map_err(|e| errors.push(e)).ok())
            .collect();
        if errors.is_empty() {
            Ok(Filter { triggers, conditions })
        } else {
            Err(errors)
        }
    }

    /// Decides whether `event` fires the sink.
    pub fn decide(&self, event: &IncidentEvent) -> Decision {
        if let Some(triggers) = &self.triggers {
            let triggered = event.event_type.kind().is_some_and(|kind| triggers.contains(&kind));
            if !triggered {
                return Decision::NotTriggered { event_type: event.event_type.as_str().to_string() };
            }
        }
        if self.conditions.is_empty() {
            return Decision::Fire;
        }
        let view = EventView::new(event);
        match self.conditions.iter().position(|c| !c.holds(&view)) {
            None => Decision::Fire,
            Some(index) => Decision::ConditionFailed { index, condition: self.conditions[index].to_string() },
        }
    }
}

fn unknown_trigger(index: usize, name: &str) -> FilterError {
    let names = EventKind::all_names();
    let suggestion = crate::suggest::closest(name, names.iter().copied())
        .map(|s| format!(", did you mean `{s}`?"))
        .unwrap_or_default();
    FilterError::UnknownTrigger { index, name: name.to_string(), suggestion, valid: names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample_event;

    fn cond(field: &str) -> ConditionConfig {
        ConditionConfig { field: field.into(), ..Default::default() }
    }

    #[test]
    fn triggers_accept_legacy_names_both_ways() {
        let filter = Filter::compile(Some(&["incident-created".to_string()]), &[]).unwrap();
        let mut event = sample_event();
        event.event_type = "alert-created".into();
        assert_eq!(filter.decide(&event), Decision::Fire);
        event.event_type = "incident-created".into();
        assert_eq!(filter.decide(&event), Decision::Fire);
        event.event_type = "alert-resolved".into();
        assert!(matches!(filter.decide(&event), Decision::NotTriggered { .. }));
    }

    #[test]
    fn no_triggers_means_every_type_even_unknown_ones() {
        let filter = Filter::compile(None, &[]).unwrap();
        let mut event = sample_event();
        event.event_type = "alert-from-the-future".into();
        assert_eq!(filter.decide(&event), Decision::Fire);
    }

    #[test]
    fn unknown_trigger_lists_valid_names_and_suggests() {
        let errors = Filter::compile(Some(&["alert-created".into(), "alert-resolvd".into()]), &[]).unwrap_err();
        let text = format!("{}: {}", errors[0].field(), errors[0]);
        assert!(
            text.starts_with("triggers[1]: unknown event type `alert-resolvd`, did you mean `alert-resolved`?"),
            "{text}"
        );
        assert!(text.contains("alert-acknowledged") && text.contains("incident-created"), "{text}");
    }

    #[test]
    fn conditions_all_must_hold() {
        let high = ConditionConfig { equals: Some(OneOrMany::One("HIGH".into())), ..cond("priority") };
        let source = ConditionConfig { matches: Some("^Nagios".into()), ..cond("alertSource.name") };
        let assigned = ConditionConfig { exists: Some(true), ..cond("assignedTo.email") };
        let numeric = ConditionConfig {
            equals: Some(OneOrMany::Many(vec!["1".into(), "2101194".into()])),
            ..cond("alertSource.id")
        };
        let filter = Filter::compile(None, &[high, source, assigned, numeric]).unwrap();
        let mut event = sample_event();
        assert_eq!(filter.decide(&event), Decision::Fire);
        event.priority = Some("LOW".into());
        assert_eq!(
            filter.decide(&event),
            Decision::ConditionFailed { index: 0, condition: "priority equals HIGH".into() }
        );
        event.priority = Some("HIGH".into());
        event.assigned_to = None;
        assert!(matches!(filter.decide(&event), Decision::ConditionFailed { index: 2, .. }));
    }

    #[test]
    fn not_equals_and_absent_fields() {
        let not_low = ConditionConfig { not_equals: Some(OneOrMany::One("LOW".into())), ..cond("priority") };
        let no_team = ConditionConfig { exists: Some(false), ..cond("labels.team") };
        let filter = Filter::compile(None, &[not_low, no_team]).unwrap();
        let mut event = sample_event();
        assert_eq!(filter.decide(&event), Decision::Fire);
        event.extra.insert("labels".into(), serde_json::json!({"team": "db"}));
        assert!(matches!(filter.decide(&event), Decision::ConditionFailed { index: 1, .. }));
    }

    #[test]
    fn malformed_conditions_are_reported() {
        let none = cond("priority");
        let two = ConditionConfig { exists: Some(true), matches: Some("x".into()), ..cond("priority") };
        let bad_re = ConditionConfig { matches: Some("(".into()), ..cond("summary") };
        let bad_path = ConditionConfig { exists: Some(true), ..cond("a..b") };
        let errors = Filter::compile(None, &[none, two, bad_re, bad_path]).unwrap_err();
        let texts: Vec<String> = errors.iter().map(|e| format!("{}: {e}", e.field())).collect();
        assert!(texts[0].starts_with("conditions[0]: needs one test"), "{texts:?}");
        assert!(texts[1].starts_with("conditions[1]: has more than one test"), "{texts:?}");
        assert!(texts[2].starts_with("conditions[2]: matches: invalid regular expression"), "{texts:?}");
        assert!(texts[3].starts_with("conditions[3]: field: invalid field path"), "{texts:?}");
    }
}
