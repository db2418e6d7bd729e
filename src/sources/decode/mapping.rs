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

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{json_kind, DecodeError};
use crate::component::FieldError;
use crate::event::{AlertSource, AlertStatus, EventKind, EventType, FieldPath, IncidentEvent, Link, Priority};
use crate::suggest::closest;
use crate::template::mustache::{self, Escape, Partials, Template};

/// The key of the event's `extra` under which the whole incoming object is kept.
pub const SOURCE_KEY: &str = "source";

/// The field mapping of the `mapped` codec (`decoding.mapping` of a source): one optional
/// entry per incident event field, except `event_type`, which is required.
///
/// Every entry is a table with exactly one of `field`, `template` or `value`, plus
/// optional `map` and `default` (see [`MappingEntry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// The incident event field an entry fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    EventType,
    Id,
    AlertKey,
    Summary,
    Details,
    Status,
    Priority,
    ReportTime,
    AlertUrl,
    SourceName,
    Link,
}

impl Target {
    /// The key in the mapping table.
    fn key(self) -> &'static str {
        match self {
            Target::EventType => "event_type",
            Target::Id => "id",
            Target::AlertKey => "alert_key",
            Target::Summary => "summary",
            Target::Details => "details",
            Target::Status => "status",
            Target::Priority => "priority",
            Target::ReportTime => "report_time",
            Target::AlertUrl => "alert_url",
            Target::SourceName => "source_name",
            Target::Link => "link",
        }
    }

    /// The names a constant for this target must be one of, when the set is closed.
    fn allowed(self) -> Option<Vec<&'static str>> {
        match self {
            Target::EventType => Some(EventKind::all_names()),
            Target::Status => Some(vec!["PENDING", "ACCEPTED", "RESOLVED"]),
            Target::Priority => Some(vec!["HIGH", "LOW"]),
            _ => None,
        }
    }

    /// Sets the field on `event` (the event type is set apart, see `decode`).
    fn apply(self, event: &mut IncidentEvent, text: String) {
        match self {
            Target::EventType => event.event_type = EventType::from(text.as_str()),
            Target::Id => event.id = Some(text),
            Target::AlertKey => event.alert_key = Some(text),
            Target::Summary => event.summary = Some(text),
            Target::Details => event.details = Some(text),
            Target::Status => event.status = Some(AlertStatus::from(text.as_str())),
            Target::Priority => event.priority = Some(Priority::from(text.as_str())),
            Target::ReportTime => event.report_time = Some(text),
            Target::AlertUrl => event.alert_url = Some(text),
            Target::SourceName => {
                event.alert_source =
                    Some(AlertSource { id: None, name: Some(text), escalation_policy: None, extra: Default::default() })
            }
            Target::Link => event.links = Some(vec![Link { href: text, text: None, extra: Default::default() }]),
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
    target: Target,
    input: Input,
    map: BTreeMap<String, String>,
    default: Option<String>,
}

impl Rule {
    /// Checks one entry; errors name fields relative to the mapping table.
    fn new(target: Target, entry: &MappingEntry) -> Result<Rule, Vec<FieldError>> {
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
    fn resolve(&self, object: &Value) -> Option<String> {
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
                Some(to) => Some(to.clone()),
                None => self.default.clone().or_else(|| Some(text.into_owned())),
            },
            Some(text) => Some(text.into_owned()),
            None => None,
        };
        mapped.or_else(|| self.default.clone())
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
fn check_constant(target: Target, field: &str, text: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = target.allowed() else {
        return;
    };
    if allowed.contains(&text) {
        return;
    }
    let what = if target == Target::EventType { "event type" } else { target.key() };
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
        let entries = [
            (Target::Id, &config.id),
            (Target::AlertKey, &config.alert_key),
            (Target::Summary, &config.summary),
            (Target::Details, &config.details),
            (Target::Status, &config.status),
            (Target::Priority, &config.priority),
            (Target::ReportTime, &config.report_time),
            (Target::AlertUrl, &config.alert_url),
            (Target::SourceName, &config.source_name),
            (Target::Link, &config.link),
        ];
        let mut errors = Vec::new();
        let event_type = match &config.event_type {
            Some(entry) => Rule::new(Target::EventType, entry).map_err(|e| errors.extend(e)).ok(),
            None => {
                errors.push(FieldError::new(
                    "event_type",
                    "is required: which event type each object becomes, e.g. \
                     `event_type = { field = \"level\", map = { error = \"alert-created\" } }` \
                     or `event_type = { value = \"alert-created\" }`",
                ));
                None
            }
        };
        let mut rules = Vec::new();
        for (target, entry) in entries {
            if let Some(entry) = entry {
                match Rule::new(target, entry) {
                    Ok(rule) => rules.push(rule),
                    Err(e) => errors.extend(e),
                }
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
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a mapping table written in TOML.
    fn config(toml_text: &str) -> MappingConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decoder(toml_text: &str) -> MappingDecoder {
        MappingDecoder::new(&config(toml_text)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(toml_text: &str) -> Vec<FieldError> {
        MappingDecoder::new(&config(toml_text)).unwrap_err()
    }

    const SYSLOG: &str = r#"
        event_type = { field = "level", map = { error = "alert-created", crit = "alert-created", notice = "alert-resolved" }, default = "alert-created" }
        id = { template = "{{host}}/{{program}}" }
        summary = { template = "{{host}}: {{message}}" }
        priority = { field = "level", map = { crit = "HIGH" }, default = "LOW" }
        source_name = { value = "syslog" }
    "#;

    #[test]
    fn the_documented_example() {
        let d = decoder(SYSLOG);
        let input = r#"{"host":"db1","program":"postgres","level":"crit","message":"disk full"}"#;
        let event = d.decode(input).unwrap();
        assert_eq!(
            event.to_json(),
            json!({
                "id": "db1/postgres",
                "summary": "db1: disk full",
                "eventType": "alert-created",
                "priority": "HIGH",
                "alertSource": {"name": "syslog"},
                "source": {"host":"db1","program":"postgres","level":"crit","message":"disk full"}
            })
        );
        let event = d.decode(r#"{"host":"db1","program":"postgres","level":"notice","message":"ok"}"#).unwrap();
        assert_eq!(event.event_type.kind(), Some(EventKind::Resolved));
        assert_eq!(event.priority, Some(Priority::Low));
    }

    #[test]
    fn field_entries_follow_dotted_paths_and_turn_scalars_into_text() {
        let d = decoder(
            r#"
            event_type = { value = "alert-created" }
            id = { field = "seq" }
            alert_key = { field = "labels.team" }
            details = { field = "ok" }
            summary = { field = "tags.1" }
            alert_url = { field = "labels" }
            report_time = { field = "timestamp" }
            link = { field = "url" }
            status = { field = "state" }
            "#,
        );
        let event = d
            .decode(
                r#"{"seq":42,"ok":true,"tags":["a","b"],"labels":{"team":"db","n":null},
                    "timestamp":"2024-05-01T10:00:00Z","url":"https://x.example/1","state":"SNOOZED"}"#,
            )
            .unwrap();
        assert_eq!(event.id.as_deref(), Some("42"));
        assert_eq!(event.alert_key.as_deref(), Some("db"));
        assert_eq!(event.details.as_deref(), Some("true"));
        assert_eq!(event.summary.as_deref(), Some("b"));
        assert_eq!(event.alert_url.as_deref(), Some(r#"{"team":"db","n":null}"#));
        assert_eq!(event.report_time.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(event.to_json()["links"], json!([{"href": "https://x.example/1"}]));
        assert_eq!(event.status, Some(AlertStatus::Other("SNOOZED".into())), "passed-through text is kept");
        // Missing, null and empty fields leave the incident field unset.
        let event = d.decode(r#"{"seq":null,"labels":{"team":""}}"#).unwrap();
        assert_eq!((event.id, event.alert_key, event.summary, event.links), (None, None, None, None));
    }

    #[test]
    fn templates_render_unescaped_and_constants_are_constant() {
        let d = decoder(
            r#"
            event_type = { template = "alert-{{kind}}" }
            summary = { template = "{{host}} <{{message}}> {{#labels}}[{{team}}]{{/labels}}{{missing}}" }
            source_name = { value = "Vector" }
            "#,
        );
        let event =
            d.decode(r#"{"kind":"resolved","host":"h&1","message":"a \"b\"","labels":{"team":"ops"}}"#).unwrap();
        assert_eq!(event.event_type.as_str(), "alert-resolved");
        assert_eq!(event.summary.as_deref(), Some(r#"h&1 <a "b"> [ops]"#));
        assert_eq!(event.alert_source.unwrap().name.as_deref(), Some("Vector"));
    }

    #[test]
    fn map_and_default() {
        let d = decoder(
            r#"
            event_type = { field = "level", map = { err = "alert-created", info = "alert-resolved" }, default = "alert-raised" }
            priority = { field = "level", map = { err = "HIGH" } }
            summary = { field = "message", default = "(no message)" }
            details = { template = "{{details}}", default = "-" }
            "#,
        );
        let get = |input: &str| d.decode(input).unwrap();
        let e = get(r#"{"level":"err","message":"m"}"#);
        assert_eq!((e.event_type.as_str(), e.priority.clone()), ("alert-created", Some(Priority::High)));
        assert_eq!(e.summary.as_deref(), Some("m"));
        let e = get(r#"{"level":"info","message":""}"#);
        assert_eq!(e.event_type.as_str(), "alert-resolved");
        assert_eq!(e.priority, Some(Priority::Other("info".into())), "no key and no default: kept as found");
        assert_eq!(e.summary.as_deref(), Some("(no message)"), "empty text takes the default");
        assert_eq!(e.details.as_deref(), Some("-"), "an empty rendering takes the default");
        let e = get(r#"{"level":"warning"}"#);
        assert_eq!(e.event_type.as_str(), "alert-raised", "no key: the default");
        assert_eq!(get("{}").event_type.as_str(), "alert-raised", "missing field: the default");
        // Map keys match exactly; numbers are matched by their text.
        let d = decoder(r#"event_type = { field = "code", map = { "2" = "incident-resolved" } }"#);
        let e = d.decode(r#"{"code":2}"#).unwrap();
        assert_eq!(e.event_type.as_str(), "incident-resolved", "legacy names are kept as written");
    }

    #[test]
    fn the_whole_object_is_kept_under_source() {
        let d = decoder(r#"event_type = { value = "alert-created" }"#);
        let input = r#"{"z":1,"a":{"b":[1,2]},"message":"m"}"#;
        let event = d.decode(input).unwrap();
        assert_eq!(serde_json::to_string(&event.extra[SOURCE_KEY]).unwrap(), input, "as it came, in order");
        let out = serde_json::to_string(&event).unwrap();
        assert_eq!(out, format!(r#"{{"eventType":"alert-created","source":{input}}}"#));
    }

    #[test]
    fn event_type_is_required_at_load() {
        let e = errors(r#"summary = { field = "message" }"#);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "event_type");
        assert!(e[0].message.contains("required"), "{e:?}");
    }

    #[test]
    fn bad_templates_are_refused_at_load_with_line_and_column() {
        let e = errors(
            r#"
            event_type = { value = "alert-created" }
            summary = { template = "{{host}}\n  {{#open}}" }
            "#,
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "summary.template");
        assert!(e[0].message.contains("line 2, column 3"), "{}", e[0].message);
    }

    #[test]
    fn entries_are_checked_at_load() {
        let e = errors(
            r#"
            event_type = { field = "level", map = { err = "alert-create" }, default = "resolved" }
            id = { field = "a", template = "{{b}}" }
            alert_key = {}
            summary = { field = "a..b" }
            source_name = { value = "x", default = "y" }
            priority = { value = "high" }
            status = { field = "s", map = { ok = "DONE" } }
            "#,
        );
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "event_type.map.err",
                "event_type.default",
                "id",
                "alert_key",
                "summary.field",
                "status.map.ok",
                "priority.value",
                "source_name"
            ]
        );
        assert!(e[0].message.contains("did you mean `alert-created`"), "{}", e[0].message);
        assert!(e[2].message.contains("both `field` and `template`"), "{}", e[2].message);
        assert!(e[6].message.contains("did you mean `HIGH`"), "{}", e[6].message);
        // Unknown keys are refused by the config's shape.
        assert!(toml::from_str::<MappingConfig>(r#"sumary = { field = "x" }"#).is_err());
        assert!(toml::from_str::<MappingConfig>(r#"summary = { feild = "x" }"#).is_err());
    }

    #[test]
    fn unknown_event_type_at_runtime_names_the_mapping_and_the_value() {
        let d = decoder(r#"event_type = { field = "level", map = { err = "alert-created" } }"#);
        let err = d.decode(r#"{"level":"warning"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("level"));
        assert!(err.message.contains("`event_type`") && err.message.contains("`warning`"), "{err}");
        let err = d.decode(r#"{"message":"no level"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("level"));
        assert!(err.message.contains("no text") && err.message.contains("`default`"), "{err}");
        let d = decoder(r#"event_type = { template = "{{kind}}" }"#);
        let err = d.decode(r#"{"kind":"alert-teleported"}"#).unwrap_err();
        assert_eq!(err.field, None);
        assert!(err.message.contains("`alert-teleported`") && err.message.contains("template"), "{err}");
    }

    #[test]
    fn non_objects_are_refused() {
        let d = decoder(r#"event_type = { value = "alert-created" }"#);
        for (input, kind) in [("[1]", "an array"), ("\"text\"", "a string"), ("3", "a number"), ("null", "null")] {
            let err = d.decode(input).unwrap_err();
            assert!(err.message.contains(kind), "{input}: {err}");
        }
        assert!(d.decode("{").is_err());
    }

    #[test]
    fn through_the_decoding_config_with_positions_and_prefixed_fields() {
        use super::super::{Codec, DecodingConfig};
        let decoding = DecodingConfig {
            codec: Codec::Mapped,
            mapping: Some(config(r#"event_type = { field = "level", map = { err = "alert-created" } }"#)),
            ..Default::default()
        };
        let decoder = decoding.build().unwrap();
        let body = b"[{\"level\":\"err\"},\n {\"level\":\"debug\"}]";
        let err = decoder.decode(body).unwrap_err();
        assert_eq!((err.event, err.line, err.column), (Some(2), 2, 2));
        let ndjson = b"{\"level\":\"err\",\"n\":1}\n{\"level\":\"err\",\"n\":2}\n";
        assert_eq!(decoder.decode(ndjson).unwrap().len(), 2);
        // Fluent Bit's `json_stream`: objects back to back, no separator.
        let stream = b"{\"level\":\"err\"}{\"level\":\"err\"}";
        assert_eq!(decoder.decode(stream).unwrap().len(), 2);

        let bad = DecodingConfig {
            codec: Codec::Mapped,
            mapping: Some(config(r#"summary = { template = "{{" }"#)),
            ..Default::default()
        };
        let fields: Vec<String> = bad.build().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["decoding.mapping.event_type", "decoding.mapping.summary.template"]);
    }
}
