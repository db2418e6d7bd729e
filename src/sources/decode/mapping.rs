//! The `mapped` codec: any JSON object (a log event from Vector, Fluent Bit, syslog-ng…)
//! becomes an incident event through a small field mapping.
//!
//! ```toml
//! [sources.logs.decoding]
//! codec = "mapped"
//! [sources.logs.decoding.mapping]
//! event_type = { field = "level", map = { error = "alert-created", crit = "alert-created", notice = "alert-resolved" }, default = "alert-created" }
//! id = { template = "{{host}}/{{program}}" }
//! summary = { template = "{{host}}: {{message}}" }
//! priority = { field = "level", map = { crit = "HIGH" }, default = "LOW" }
//! source_name = { value = "syslog" }
//! ```
//!
//! Each key of the mapping names one field of the incident event (see [`MappingConfig`]);
//! its entry (see [`MappingEntry`]) says where the text comes from — a `field` of the
//! object, a mustache `template` over the object, or a constant `value` — and optionally
//! translates it (`map`) and falls back to a `default`.
//!
//! How an entry resolves, in order:
//!
//! 1. the text is read: `field` looks up a dotted path (`labels.team`; numeric segments
//!    index lists) and turns what it finds into text (a string as it is, a number or
//!    boolean as JSON writes it, an object or list as compact JSON; `null` counts as
//!    missing); `template` renders with no escaping (a missing name renders empty);
//!    `value` is the constant;
//! 2. a missing field or an empty text is *empty*;
//! 3. with a `map`, a text that is a key of it becomes that key's value (exact,
//!    case-sensitive match); a text it has no key for becomes `default` when one is set,
//!    else stays as found;
//! 4. an empty text becomes `default` when one is set, else the incident field stays
//!    unset.
//!
//! `event_type` is required and must end up a known event type name (`alert-created`,
//! `incident-resolved`, …): constants are checked when the config loads, and an object
//! whose text is empty or no event type is refused (the whole body is answered 400).
//!
//! The whole incoming object is kept in the event under [`SOURCE_KEY`] (`source`): it is
//! written in the standard payload and templates reach it as `{{ event.source.message }}`.
//!
//! An event whose mapping gives it an `id` gets an identity (see [`object_identity`]), so a
//! shipper that sends the same object again (a retried batch) makes the same `webhook-id`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{json_kind, DecodeError};
use crate::error::FieldError;
use crate::event::{
    AlertSource, AlertStatus, Decoded, EventKind, EventType, FieldPath, IncidentEvent, Link, Priority, Text,
};
use crate::suggest::closest;
use crate::template::mustache::{self, Escape, Partials, Template};

/// The key of the event's `extra` under which the whole incoming object is kept.
pub const SOURCE_KEY: &str = "source";

/// The field mapping of the `mapped` codec (`decoding.mapping` of a source): one optional
/// entry per incident event field, except `event_type`, which is required.
///
/// Every entry is a table with exactly one of `field`, `template` or `value`, plus
/// optional `map` and `default` (see [`MappingEntry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// → `eventType`. Required; must resolve to a known event type name, e.g.
    /// `{ field = "level", map = { error = "alert-created", notice = "alert-resolved" } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<MappingEntry>,
    /// → `id`, the alert's id. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MappingEntry>,
    /// → `alertKey`, what ties the events of one alert together (e.g.
    /// `{ template = "{{host}}/{{program}}" }`). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_key: Option<MappingEntry>,
    /// → `summary`, one line. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<MappingEntry>,
    /// → `details`, free text. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<MappingEntry>,
    /// → `status`: `PENDING`, `ACCEPTED` or `RESOLVED` (constants are checked when the
    /// config loads; a text passed through from the object is kept as it is). Default:
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MappingEntry>,
    /// → `priority`: `HIGH` or `LOW` (constants are checked when the config loads; a text
    /// passed through from the object is kept as it is). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<MappingEntry>,
    /// → `reportTime`, kept as text (e.g. `{ field = "timestamp" }`). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_time: Option<MappingEntry>,
    /// → `alertUrl`. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_url: Option<MappingEntry>,
    /// → `alertSource.name` (e.g. `{ value = "syslog" }`). Default: unset (no
    /// `alertSource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<MappingEntry>,
    /// → `links[0].href`, the one link of the event. Default: unset (no `links`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<MappingEntry>,
}

/// Where one incident field's text comes from: exactly one of `field`, `template` and
/// `value`, then the optional `map` and `default`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingEntry {
    /// A dotted path into the incoming object, e.g. `host`, `labels.team` or `tags.0`.
    /// Numbers and booleans become their JSON text, objects and lists compact JSON.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A mustache template over the incoming object, rendered without escaping, e.g.
    /// `"{{host}}: {{message}}"`. Checked when the config loads. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A constant text. Takes no `map` or `default`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Translates the text found, e.g. `{ err = "alert-created", info = "alert-resolved" }`
    /// (exact, case-sensitive keys). A text without a key becomes `default` when one is
    /// set, else is kept as found. Default: empty (no translation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map: BTreeMap<String, String>,
    /// The text used when the field is missing or empty, the template renders empty, or
    /// `map` has no key for the text. Default: none (the incident field stays unset; for
    /// `event_type` the object is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Declares [`MappedField`] from one table: each variant, the [`MappingConfig`] field
/// that configures it (its key in the mapping table too), and how a text is set on the
/// event (named by the two idents before `=>`).
macro_rules! mapped_fields {
    (($event:ident, $text:ident) => $($variant:ident: $key:ident => $apply:expr,)+) => {
        /// The incident event field a mapping entry fills.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum MappedField {
            $($variant,)+
        }

        impl MappedField {
            /// The key in the mapping table.
            fn key(self) -> &'static str {
                match self {
                    $(MappedField::$variant => stringify!($key),)+
                }
            }

            /// Every field with its entry in `config`, in the order of the config's fields.
            /// (Taking the config apart makes a config field missing here a compile error.)
            fn entries(config: &MappingConfig) -> Vec<(MappedField, Option<&MappingEntry>)> {
                let MappingConfig { $($key),+ } = config;
                vec![$((MappedField::$variant, $key.as_ref())),+]
            }

            /// Sets the field on `event` (the event type is set apart, see `decode`).
            fn apply(self, $event: &mut IncidentEvent, $text: Text) {
                match self {
                    $(MappedField::$variant => $apply,)+
                }
            }
        }
    };
}

mapped_fields! { (event, text) =>
    EventType: event_type => event.event_type = EventType::from(text.as_str()),
    Id: id => event.id = Some(text),
    AlertKey: alert_key => event.alert_key = Some(text),
    Summary: summary => event.summary = Some(text),
    Details: details => event.details = Some(text),
    Status: status => event.status = Some(AlertStatus::from(text.as_str())),
    Priority: priority => event.priority = Some(Priority::from(text.as_str())),
    ReportTime: report_time => event.report_time = Some(text),
    AlertUrl: alert_url => event.alert_url = Some(text),
    SourceName: source_name => {
        event.alert_source =
            Some(Box::new(AlertSource { id: None, name: Some(text), escalation_policy: None, extra: Default::default() }))
    },
    Link: link => event.links = Some(vec![Link { href: text, text: None, extra: Default::default() }]),
}

impl MappedField {
    /// The names a constant for this field must be one of, when the set is closed.
    fn allowed(self) -> Option<Vec<&'static str>> {
        match self {
            MappedField::EventType => Some(EventKind::all_names()),
            MappedField::Status => Some(AlertStatus::NAMES.to_vec()),
            MappedField::Priority => Some(Priority::NAMES.to_vec()),
            _ => None,
        }
    }
}

/// Where a checked entry reads its text.
#[derive(Debug, Clone)]
enum Input {
    /// A dotted path (as written, and split).
    Field {
        path: String,
        segments: Vec<String>,
    },
    Template(Template),
    Value(String),
}

/// A checked entry.
#[derive(Debug, Clone)]
struct Rule {
    target: MappedField,
    input: Input,
    map: BTreeMap<String, String>,
    default: Option<String>,
}

impl Rule {
    /// Checks one entry; errors name fields relative to the mapping table.
    fn new(target: MappedField, entry: &MappingEntry) -> Result<Rule, Vec<FieldError>> {
        let key = target.key();
        let mut errors = Vec::new();
        let given: Vec<&str> = [
            ("field", entry.field.is_some()),
            ("template", entry.template.is_some()),
            ("value", entry.value.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let input = match (&entry.field, &entry.template, &entry.value) {
            _ if given.len() > 1 => {
                errors
                    .push(FieldError::new(key, format!("has both `{}` and `{}`; use exactly one", given[0], given[1])));
                None
            }
            (Some(path), _, _) => match FieldPath::parse(path) {
                Ok(_) => {
                    Some(Input::Field { path: path.clone(), segments: path.split('.').map(str::to_string).collect() })
                }
                Err(e) => {
                    errors.push(FieldError::new(format!("{key}.field"), e.to_string()));
                    None
                }
            },
            (_, Some(source), _) => match mustache::parse(source) {
                Ok(template) => Some(Input::Template(template)),
                Err(e) => {
                    errors.push(FieldError::new(format!("{key}.template"), format!("template syntax error at {e}")));
                    None
                }
            },
            (_, _, Some(value)) => {
                if !entry.map.is_empty() || entry.default.is_some() {
                    errors.push(FieldError::new(key, "a constant `value` takes no `map` or `default`"));
                }
                if value.is_empty() {
                    errors.push(FieldError::new(format!("{key}.value"), "is empty; leave the entry out instead"));
                } else {
                    check_constant(target, &format!("{key}.value"), value, &mut errors);
                }
                Some(Input::Value(value.clone()))
            }
            (None, None, None) => {
                errors
                    .push(FieldError::new(key, "needs one of `field` (a path into the object), `template` or `value`"));
                None
            }
        };
        for (from, to) in &entry.map {
            check_constant(target, &format!("{key}.map.{from}"), to, &mut errors);
        }
        if let Some(default) = &entry.default {
            check_constant(target, &format!("{key}.default"), default, &mut errors);
        }
        match input {
            Some(input) if errors.is_empty() => {
                Ok(Rule { target, input, map: entry.map.clone(), default: entry.default.clone() })
            }
            _ => Err(errors),
        }
    }

    /// The text for `object`, or `None` when it is empty and there is no default.
    fn resolve(&self, object: &Value) -> Option<Text> {
        let found: Option<Cow<'_, str>> = match &self.input {
            Input::Field { segments, .. } => crate::event::lookup(object, segments).map(text_of),
            Input::Template(template) => {
                let mut out = String::new();
                template.render(object, Escape::None, &Partials::default(), &mut out);
                Some(Cow::Owned(out))
            }
            Input::Value(value) => Some(Cow::Borrowed(value)),
        };
        let found = found.filter(|text| !text.is_empty());
        let mapped = match found {
            Some(text) if !self.map.is_empty() => match self.map.get(text.as_ref()) {
                Some(to) => Some(Text::from(to)),
                None => self.default.as_ref().map(Text::from).or_else(|| Some(Text::from(text))),
            },
            Some(text) => Some(Text::from(text)),
            None => None,
        };
        mapped.or_else(|| self.default.as_ref().map(Text::from))
    }

    /// An error about what this entry gave for an object: blamed on the incoming field
    /// when the entry reads one, else naming where the text came from.
    fn error(&self, what: &str) -> DecodeError {
        let key = self.target.key();
        match &self.input {
            Input::Field { path, .. } => DecodeError::field(path.clone(), format!("mapping `{key}` {what}")),
            Input::Template(_) => DecodeError::at(1, 1, format!("mapping `{key}` (a template) {what}")),
            Input::Value(_) => DecodeError::at(1, 1, format!("mapping `{key}` (a value) {what}")),
        }
    }
}

/// The text of a found value: strings as they are, anything else as compact JSON.
fn text_of(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Checks a constant against the names `target` accepts, if the set is closed.
fn check_constant(target: MappedField, field: &str, text: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = target.allowed() else {
        return;
    };
    if allowed.contains(&text) {
        return;
    }
    let what = if target == MappedField::EventType { "event type" } else { target.key() };
    let hint = match closest(text, allowed.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("known: {}", allowed.join(", ")),
    };
    errors.push(FieldError::new(field, format!("unknown {what} `{text}`; {hint}")));
}

/// Maps arbitrary JSON objects onto incident events (see the module docs).
#[derive(Debug, Clone)]
pub struct MappingDecoder {
    /// The `event_type` rule.
    event_type: Rule,
    /// The other rules, in the order of [`MappingConfig`]'s fields.
    rules: Vec<Rule>,
}

impl MappingDecoder {
    /// Checks the mapping: `event_type` is present, every entry has exactly one source,
    /// templates parse, paths are valid, and constants of `event_type`, `status` and
    /// `priority` are names they accept. Field names are relative to the mapping table
    /// (`summary.template`).
    pub fn new(config: &MappingConfig) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut event_type = None;
        let mut rules = Vec::new();
        for (field, entry) in MappedField::entries(config) {
            let Some(entry) = entry else {
                if field == MappedField::EventType {
                    errors.push(FieldError::new(
                        field.key(),
                        "is required: which event type each object becomes, e.g. \
                         `event_type = { field = \"level\", map = { error = \"alert-created\" } }` \
                         or `event_type = { value = \"alert-created\" }`",
                    ));
                }
                continue;
            };
            match Rule::new(field, entry) {
                Ok(rule) if field == MappedField::EventType => event_type = Some(rule),
                Ok(rule) => rules.push(rule),
                Err(e) => errors.extend(e),
            }
        }
        match event_type {
            Some(event_type) if errors.is_empty() => Ok(MappingDecoder { event_type, rules }),
            _ => Err(errors),
        }
    }

    /// Maps one JSON text, which must be an object, onto an incident event. The object
    /// itself is kept under [`SOURCE_KEY`].
    pub fn decode(&self, text: &str) -> Result<IncidentEvent, DecodeError> {
        Ok(self.decode_identified(text)?.incident)
    }

    /// As [`MappingDecoder::decode`], with the event's identity ([`object_identity`]); the
    /// size is left at 0 for the caller to set.
    pub fn decode_identified(&self, text: &str) -> Result<Decoded, DecodeError> {
        let object: Value = serde_json::from_str(text).map_err(|e| DecodeError::from_json(&e))?;
        if !object.is_object() {
            return Err(DecodeError::at(
                1,
                1,
                format!("the `mapped` codec takes JSON objects, got {}", json_kind(&object)),
            ));
        }
        let rule = &self.event_type;
        let event_type = match rule.resolve(&object) {
            Some(name) if EventKind::from_name(&name).is_some() => EventType::from(name.as_str()),
            Some(name) => {
                return Err(
                    rule.error(&format!("gave `{name}`, which is no event type; add it to `map` or set a `default`"))
                )
            }
            None => return Err(rule.error("found no text and has no `default`")),
        };
        let mut event = IncidentEvent::new(event_type);
        for rule in &self.rules {
            if let Some(text) = rule.resolve(&object) {
                rule.target.apply(&mut event, text);
            }
        }
        event.extra.insert(SOURCE_KEY.to_string(), object);
        let identity = event.id.as_deref().and_then(|id| object_identity(id, event.event_type.as_str(), text));
        Ok(Decoded { incident: event, size: 0, identity })
    }
}

/// What identifies a mapped event: its mapped `id`, its event type and the SHA-256 of the
/// object's text as it came, as `mapped:` and a JSON array of them.
///
/// The object's digest is part of it because the mapped `id` usually names an alert, not
/// one event (`{{host}}/{{program}}`): with only `id` and the event type, every later
/// `alert-created` of the same program would carry the first one's `webhook-id`, and a
/// receiver that drops ids it has seen would drop them all. So the id is stable exactly
/// when the very same object is sent again (a shipper retrying a batch); an object that
/// differs in anything (its timestamp, its message) is another event with another id.
///
/// Only events with a mapped `id` get one (the caller asks only then); the others get a
/// fresh `webhook-id` per delivery, as before.
pub fn object_identity(id: &str, event_type: &str, text: &str) -> Option<String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    // Writing texts as JSON cannot fail; were it to, a fresh id is the safe side.
    serde_json::to_string(&(id, event_type, hex)).ok().map(|parts| format!("mapped:{parts}"))
}

#[cfg(test)]
mod tests;
