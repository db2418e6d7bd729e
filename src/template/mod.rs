//! Body templates: compiled and checked when the config loads, rendered per event.
//!
//! A sink's body is either the standard payload (the event as JSON) or a custom mustache
//! template. Custom templates are checked at load: syntax, unknown variables (with a
//! suggestion for a near miss), and, for JSON bodies, that the template renders valid JSON
//! for both a full and a minimal sample event. See `docs/templates.md`.

pub mod catalog;
pub mod digest;
pub mod mustache;

use bytes::Bytes;
use serde::de::IgnoredAny;

use self::mustache::{Escape, NameUse, Partials, Root, TagKind, Template, Val};
use crate::event::{minimal_sample, sample_event, EventView, FieldRef, IncidentEvent, Resolved};

/// Why a template cannot be used. Positions are 1-based, in the template text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid mustache.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// Line of the offending tag.
        line: usize,
        /// Column of the offending tag.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A name that is neither a catalog variable nor under `event.`.
    #[error("line {line}, column {column}: unknown variable `{name}`{}", suggestion_text(.suggestion))]
    UnknownVariable {
        /// The name as written.
        name: String,
        /// Line of the tag.
        line: usize,
        /// Column of the tag.
        column: usize,
        /// A catalog name close to it.
        suggestion: Option<String>,
    },
    /// A name used in a way the template cannot honour.
    #[error("line {line}, column {column}: {message}")]
    Misused {
        /// Line of the tag.
        line: usize,
        /// Column of the tag.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A JSON template renders text that is not JSON.
    #[error("does not render valid JSON for {sample}: {message} (rendered: {excerpt})")]
    InvalidJson {
        /// Which sample: `the full sample event`, `the minimal sample event`, or for a
        /// digest template `a digest of one sample event`, `a digest of three sample events`.
        sample: &'static str,
        /// serde_json's complaint, with its line and column in the rendered body.
        message: String,
        /// The rendered body around the error.
        excerpt: String,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default()
}

/// A body that could not be rendered for one event at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendered body is not valid JSON: {0}")]
pub struct RenderError(pub String);

/// How a sink makes request bodies.
#[derive(Debug, Clone)]
pub enum BodyTemplate {
    /// The standard payload: the event as JSON, unknown fields included.
    Standard,
    /// A custom mustache template and how values are escaped in it.
    Custom {
        /// The compiled template.
        template: Template,
        /// How values are escaped (`Json` also validates each rendered body, unless
        /// `fixed_shape`).
        escape: Escape,
        /// A JSON template whose bodies are valid JSON whatever the values (see
        /// [`Template::json_shape_is_fixed`]), checked at load: bodies are not parsed
        /// again one by one.
        fixed_shape: bool,
    },
}

impl BodyTemplate {
    /// Compiles and checks a custom template.
    pub fn custom(source: &str, escape: Escape) -> Result<BodyTemplate, Vec<TemplateError>> {
        let template = parse_checked(source, check_name)?;
        let fixed_shape = escape == Escape::Json && template.json_shape_is_fixed();
        let body = BodyTemplate::Custom { template, escape, fixed_shape };
        if escape == Escape::Json {
            for (sample, event) in [("the full sample event", sample_event()), ("the minimal sample event", minimal_sample())] {
                check_json(sample, &body.render_unchecked(&event))?;
            }
        }
        Ok(body)
    }

    /// Renders the body for `event`. JSON bodies are checked to be valid JSON.
    pub fn render(&self, event: &IncidentEvent) -> Result<Bytes, RenderError> {
        let rendered = self.render_unchecked(event);
        if let BodyTemplate::Custom { escape: Escape::Json, fixed_shape: false, .. } = self {
            serde_json::from_slice::<IgnoredAny>(&rendered).map_err(|e| RenderError(e.to_string()))?;
        }
        Ok(rendered)
    }

    fn render_unchecked(&self, event: &IncidentEvent) -> Bytes {
        match self {
            // Serializing the typed event cannot fail: all map keys are strings.
            BodyTemplate::Standard => Bytes::from(serde_json::to_vec(event).unwrap_or_default()),
            BodyTemplate::Custom { template, escape, .. } => {
                let root = EventRoot { view: EventView::new(event) };
                let mut out = String::with_capacity(256);
                template.render(&root, *escape, &Partials::default(), &mut out);
                Bytes::from(out)
            }
        }
    }
}

/// A load-time check: `rendered` (made for `sample`) must be JSON.
fn check_json(sample: &'static str, rendered: &[u8]) -> Result<(), Vec<TemplateError>> {
    serde_json::from_slice::<IgnoredAny>(rendered)
        .map(|_| ())
        .map_err(|e| vec![TemplateError::InvalidJson { sample, message: e.to_string(), excerpt: excerpt(rendered, &e) }])
}

/// Parses `source` and checks each name it uses with `check`: every error found, or the
/// template (a body template and a digest template differ only in the names they allow).
fn parse_checked(
    source: &str,
    check: fn(&NameUse) -> Option<TemplateError>,
) -> Result<Template, Vec<TemplateError>> {
    let template = mustache::parse(source)
        .map_err(|e| vec![TemplateError::Syntax { line: e.line, column: e.column, message: e.message }])?;
    let errors: Vec<TemplateError> = template.names().iter().filter_map(check).collect();
    if errors.is_empty() {
        Ok(template)
    } else {
        Err(errors)
    }
}

/// Checks one name use against the catalog.
fn check_name(use_: &NameUse) -> Option<TemplateError> {
    let (line, column) = (use_.line, use_.column);
    if use_.kind == TagKind::Partial {
        return Some(TemplateError::Misused {
            line,
            column,
            message: format!("partials (`{{{{> {}}}}}`) are not supported in body templates", use_.name),
        });
    }
    // Inside a section over part of the event, names may be fields of that part.
    let inside_event_data = use_.sections.iter().any(|s| s == catalog::EVENT_ROOT || s.starts_with("event."));
    if use_.name == "." || inside_event_data {
        return None;
    }
    let (first, rest) = match use_.name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (use_.name.as_str(), None),
    };
    if first == catalog::EVENT_ROOT {
        return None;
    }
    match (catalog::variable(first), rest) {
        (Some(_), None) => None,
        (Some(var), Some(_)) => Some(TemplateError::Misused {
            line,
            column,
            message: format!(
                "`{}` is text and has no fields; for fields of the event use `event.…`, e.g. `event.alertSource.name`",
                var.name
            ),
        }),
        (None, _) => Some(TemplateError::UnknownVariable {
            name: use_.name.clone(),
            line,
            column,
            suggestion: crate::suggest::closest(first, catalog::all_names()).map(str::to_string),
        }),
    }
}

/// The rendered body around a JSON error, for the error message.
fn excerpt(rendered: &[u8], e: &serde_json::Error) -> String {
    let text = String::from_utf8_lossy(rendered);
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let chars: Vec<char> = line.chars().collect();
    let at = e.column().saturating_sub(1).min(chars.len());
    let from = at.saturating_sub(40);
    let to = (at + 20).min(chars.len());
    format!("`{}`", chars[from..to].iter().collect::<String>())
}

/// An event's value of a catalog variable, for templates.
fn val(value: FieldRef<'_>) -> Val<'_> {
    match value {
        FieldRef::Str(s) => Val::Str(s),
        FieldRef::Json(v) => Val::Json(v),
    }
}

/// The template data of one event: catalog variables read typed fields, `event` is the
/// event's JSON form (built only if the template asks for it).
struct EventRoot<'a> {
    view: EventView<'a>,
}

impl Root for EventRoot<'_> {
    fn get(&self, name: &str) -> Option<Val<'_>> {
        if name == catalog::EVENT_ROOT {
            return Some(Val::Json(self.view.json()));
        }
        let var = catalog::variable(name)?;
        self.view.event().known(var.field).map(val)
    }

    /// `event.…` paths are read from the typed event; its JSON form is built only for a
    /// path naming a whole typed object or list.
    fn get_path(&self, path: &[Box<str>]) -> Option<Val<'_>> {
        let (first, rest) = path.split_first()?;
        if &**first != catalog::EVENT_ROOT || rest.is_empty() {
            return mustache::descend(self.get(first)?, rest);
        }
        match self.view.event().resolve(rest) {
            Resolved::At(value, rest) => mustache::descend(val(value), rest),
            Resolved::Absent => None,
            Resolved::NeedsJson => mustache::descend(Val::Json(self.view.json()), rest),
        }
    }
}

#[cfg(test)]
mod tests;
