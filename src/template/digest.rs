//! Digest templates: the body of one webhook carrying a batch of events (a sink with
//! `batch`), e.g. a chat message "12 alerts in the last 30 s: …".
//!
//! The default body is a JSON array of the events' standard payloads. A custom template
//! sees:
//!
//! - `count`: how many events the digest carries;
//! - `events`: the list of them, each with every variable of a single event's template
//!   (`alertSummary`, `eventType`, `event.…`), for `{{#events}}…{{/events}}`;
//! - `first` and `last`: the first and the last event, as `{{#first}}{{alertSummary}}{{/first}}`
//!   or `{{first.alertSummary}}`.
//!
//! A single event's variables outside those sections are refused at load (they would
//! always render empty), and a JSON template is checked at load for a digest of one and of
//! several sample events, as single-event templates are for one.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::mustache::{Escape, NameUse, Partials, TagKind, Template};
use super::{catalog, check_json, check_name, parse_checked, RenderError, TemplateError};
use crate::event::{minimal_sample, sample_event, FieldRef, IncidentEvent};

/// The names a digest template has at its top level.
const DIGEST_NAMES: [&str; 4] = ["count", "events", "first", "last"];

/// How a batching sink makes the body of one digest.
#[derive(Debug, Clone)]
pub enum DigestTemplate {
    /// A JSON array of the events' standard payloads.
    Standard,
    /// A custom mustache template over `count`, `events`, `first` and `last`.
    Custom {
        /// The compiled template.
        template: Template,
        /// How values are escaped (`Json` also checks each rendered body).
        escape: Escape,
    },
}

impl DigestTemplate {
    /// Compiles and checks a custom digest template.
    pub fn custom(source: &str, escape: Escape) -> Result<DigestTemplate, Vec<TemplateError>> {
        let template = parse_checked(source, check_digest_name)?;
        let digest = DigestTemplate::Custom { template, escape };
        if escape == Escape::Json {
            let (full, minimal) = (sample_event(), minimal_sample());
            check_json("a digest of one sample event", &digest.render_unchecked(&[&full]))?;
            check_json("a digest of three sample events", &digest.render_unchecked(&[&full, &minimal, &full]))?;
        }
        Ok(digest)
    }

    /// Renders the digest of `events` (in their order). JSON bodies are checked to be
    /// valid JSON.
    pub fn render(&self, events: &[&IncidentEvent]) -> Result<Bytes, RenderError> {
        let rendered = self.render_unchecked(events);
        if let DigestTemplate::Custom { escape: Escape::Json, .. } = self {
            serde_json::from_slice::<IgnoredAny>(&rendered).map_err(|e| RenderError(e.to_string()))?;
        }
        Ok(rendered)
    }

    fn render_unchecked(&self, events: &[&IncidentEvent]) -> Bytes {
        match self {
            DigestTemplate::Standard => {
                let mut out = Vec::with_capacity(events.len() * 512 + 2);
                out.push(b'[');
                for (i, event) in events.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Serializing the typed event cannot fail: all map keys are strings.
                    let _ = serde_json::to_writer(&mut out, event);
                }
                out.push(b']');
                Bytes::from(out)
            }
            DigestTemplate::Custom { template, escape } => {
                let data = digest_data(events);
                let mut out = String::with_capacity(256 * events.len().max(1));
                template.render(&data, *escape, &Partials::default(), &mut out);
                Bytes::from(out)
            }
        }
    }
}

/// The template data of a digest: `count`, `events`, `first`, `last`. Built as JSON (a
/// digest is rendered once per batch, not per event, so the copies cost little).
fn digest_data(events: &[&IncidentEvent]) -> Value {
    let items: Vec<Value> = events.iter().map(|event| event_item(event)).collect();
    let mut data = Map::new();
    data.insert("count".into(), Value::from(items.len()));
    data.insert("first".into(), items.first().cloned().unwrap_or(Value::Null));
    data.insert("last".into(), items.last().cloned().unwrap_or(Value::Null));
    data.insert("events".into(), Value::Array(items));
    Value::Object(data)
}

/// One event as a digest item: every catalog variable it has a value for, and `event`.
fn event_item(event: &IncidentEvent) -> Value {
    let mut item = Map::new();
    for var in catalog::VARIABLES {
        if let Some(value) = event.known(var.field) {
            let value = match value {
                FieldRef::Str(s) => Value::String(s.to_string()),
                FieldRef::Json(v) => v.clone(),
            };
            item.insert(var.name.to_string(), value);
        }
    }
    item.insert(catalog::EVENT_ROOT.to_string(), event.to_json());
    Value::Object(item)
}

/// Checks one name use of a digest template: the digest's own names at the top level,
/// a single event's names inside `events`, `first` or `last`.
fn check_digest_name(use_: &NameUse) -> Option<TemplateError> {
    if use_.kind == TagKind::Partial {
        return check_name(use_);
    }
    let (line, column) = (use_.line, use_.column);
    let misused = |message: String| Some(TemplateError::Misused { line, column, message });
    let (first, rest) = match use_.name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (use_.name.as_str(), None),
    };
    let in_an_event = use_.sections.iter().any(|s| matches!(s.split('.').next(), Some("events" | "first" | "last")));
    match (first, rest) {
        ("count", Some(_)) => misused("`count` is a number and has no fields".into()),
        ("events", Some(_)) => {
            misused("`events` is a list: use its items inside `{{#events}}…{{/events}}`".into())
        }
        ("first" | "last", Some(rest)) => {
            check_name(&NameUse { name: rest.to_string(), sections: Vec::new(), ..use_.clone() })
        }
        _ if DIGEST_NAMES.contains(&first) => None,
        _ if in_an_event || use_.name == "." => check_name(use_),
        _ => check_name(use_).or_else(|| {
            misused(format!(
                "a digest template (`batch`) has `count`, `events`, `first` and `last` at its top level; \
                 `{0}` belongs to one event: use it inside `{{{{#events}}}}…{{{{/events}}}}`, or as `first.{0}` or `last.{0}`",
                use_.name
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event(summary: &str) -> IncidentEvent {
        let mut event = IncidentEvent::new(EventKind::Created);
        event.summary = Some(summary.into());
        event.alert_key = Some(format!("key-{summary}").into());
        event
    }

    #[test]
    fn the_default_digest_is_a_json_array_of_standard_payloads() {
        let (a, b) = (event("a"), event("b \"quoted\""));
        let body = DigestTemplate::Standard.render(&[&a, &b]).unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, Value::Array(vec![a.to_json(), b.to_json()]));
    }

    #[test]
    fn a_digest_template_sees_count_events_first_and_last() {
        let digest = DigestTemplate::custom(
            r#"{"text": "{{count}} alerts: {{#events}}{{alertSummary}} ({{eventType}}); {{/events}}", "first": "{{first.alertSummary}}", "last": "{{#last}}{{alertKey}}{{/last}}", "count": {{count}}, "keys": [{{#events}}{{{event.alertKey}}},{{/events}}null]}"#,
            Escape::Json,
        )
        .unwrap();
        let (a, b, c) = (event("disk full"), event("cpu \"hot\""), event("net down"));
        let body = digest.render(&[&a, &b, &c]).unwrap();
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            out["text"],
            "3 alerts: disk full (alert-created); cpu \"hot\" (alert-created); net down (alert-created); "
        );
        assert_eq!(out["first"], "disk full");
        assert_eq!(out["last"], "key-net down");
        assert_eq!(out["count"], 3);
        assert_eq!(out["keys"], serde_json::json!(["key-disk full", "key-cpu \"hot\"", "key-net down", null]));
    }

    #[test]
    fn a_single_event_name_at_the_top_level_is_refused_with_the_way_to_write_it() {
        let errors = DigestTemplate::custom(r#"{"text": "{{alertSummary}}"}"#, Escape::Json).unwrap_err();
        let text = errors[0].to_string();
        assert!(text.contains("first.alertSummary") && text.contains("{{#events}}"), "{text}");
        // Near misses still get their suggestion, inside and outside the sections.
        let errors = DigestTemplate::custom("{{#events}}{{alertSumary}}{{/events}}", Escape::None).unwrap_err();
        assert!(errors[0].to_string().contains("did you mean `alertSummary`"), "{}", errors[0]);
        let errors = DigestTemplate::custom("{{first.alertSumary}}", Escape::None).unwrap_err();
        assert!(errors[0].to_string().contains("did you mean `alertSummary`"), "{}", errors[0]);
        let errors = DigestTemplate::custom("{{count.x}}{{events.y}}", Escape::None).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn a_json_digest_template_is_checked_for_one_and_several_events() {
        // Valid for one event, not for several: the items are not separated.
        let errors = DigestTemplate::custom(r#"[{{#events}}"{{alertSummary}}"{{/events}}]"#, Escape::Json).unwrap_err();
        assert!(
            matches!(errors[0], TemplateError::InvalidJson { sample: "a digest of three sample events", .. }),
            "{errors:?}"
        );
        assert!(errors[0].to_string().contains("a digest of three sample events"), "{}", errors[0]);
    }

    #[test]
    fn values_are_escaped_for_json() {
        let digest = DigestTemplate::custom(r#"{"t": "{{#events}}{{alertSummary}}\n{{/events}}"}"#, Escape::Json).unwrap();
        let nasty = event("a\"}, {\"injected\": true");
        let out: Value = serde_json::from_slice(&digest.render(&[&nasty]).unwrap()).unwrap();
        assert_eq!(out["t"], "a\"}, {\"injected\": true\n");
    }
}
