//! A small, spec-compliant [mustache](https://mustache.github.io/) engine with
//! source positions and pluggable escaping.
//!
//! # Why hand-written
//!
//! The `mustache` crate escapes for HTML only, exposes no tokens or positions,
//! and builds its data tree per render. We need:
//!
//! - syntax errors and every variable use with line/column ([`SyntaxError`],
//!   [`Template::names`]), so the config loader can report unknown variables
//!   with suggestions;
//! - JSON-safe escaping ([`Escape::Json`]), so a JSON body template always
//!   renders valid JSON whatever the event contains;
//! - rendering directly from borrowed data ([`Root`], [`Val`]) without
//!   building a data tree per event.
//!
//! # Supported language
//!
//! Everything in the official spec modules `comments`, `delimiters`,
//! `interpolation`, `inverted`, `partials` and `sections` (all their cases
//! pass, see `tests/mustache_spec.rs`): escaped and unescaped variables
//! (`{{x}}`, `{{{x}}}`, `{{& x}}`), dotted names, the implicit iterator
//! `{{.}}`, sections, inverted sections, comments, set delimiters, partials
//! with standalone indentation, and the standalone-line rules. Lambdas and the
//! optional `~` modules (inheritance, dynamic names) are not supported.
//!
//! # Data model
//!
//! Rendering starts from a [`Root`] (top-level names), and sections push
//! JSON values or strings on a context stack. The first segment of a dotted
//! name is looked up from the top of the stack down (JSON object frames answer
//! by key, the root by [`Root::get`], scalar frames answer nothing); later
//! segments index into JSON objects only. A broken chain renders as missing.
//! Falsey values are: missing, `null`, `false`, the empty list and the empty
//! string.
//!
//! # Limits
//!
//! Sections may be nested at most [`MAX_NESTING`] deep in one template (a
//! syntax error otherwise). At render time partials are resolved lazily (so
//! recursive partials work) and expanded at most [`MAX_PARTIAL_DEPTH`] deep;
//! the total nesting of sections and partials while rendering is capped at
//! [`MAX_RENDER_DEPTH`]. Whatever lies deeper renders as empty, so rendering
//! never overflows the stack. Nested sections over lists and partials that
//! include themselves twice can expand exponentially, so one render visits at
//! most [`MAX_RENDER_STEPS`] template nodes (about 4 million, far more than a
//! realistic template over realistic data needs) and its output is truncated
//! there.
//!
//! # Example
//!
//! ```
//! use webhook_sink::template::mustache::{parse, Escape, Partials};
//!
//! let t = parse(r#"{"text":"{{summary}}","count":{{{count}}}}"#).unwrap();
//! let data = serde_json::json!({"summary": "disk \"/\" full\n", "count": 3});
//! let out = t.render_to_string(&data, Escape::Json, &Partials::new());
//! assert_eq!(out, r#"{"text":"disk \"/\" full\n","count":3}"#);
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

mod parse;
mod render;

pub use parse::parse;
pub(crate) use render::descend;

/// Maximum nesting of sections (and inverted sections) within one template.
pub const MAX_NESTING: usize = 128;
/// Maximum depth of partials including partials (recursion bound).
pub const MAX_PARTIAL_DEPTH: usize = 64;
/// Maximum total depth of sections and partials while rendering.
pub const MAX_RENDER_DEPTH: usize = 256;
/// Maximum number of template nodes visited by one render.
pub const MAX_RENDER_STEPS: usize = 1 << 22;

/// A compiled template: parse once, render many times.
///
/// Immutable, cheap to share between threads (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

/// A template syntax error, with the 1-based line and column (in chars) of
/// the offending tag's opening delimiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in chars).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A use of a name in the template, for validation by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    /// Full dotted name as written, trimmed, e.g. `alertSummary`,
    /// `event.alertSource.name`, `.`; for partials, the partial's name.
    pub name: String,
    /// The kind of tag.
    pub kind: TagKind,
    /// 1-based line of the tag's opening delimiter.
    pub line: usize,
    /// 1-based column (in chars) of the tag's opening delimiter.
    pub column: usize,
    /// Names of the enclosing sections and inverted sections, outermost first.
    pub sections: Vec<String>,
}

/// What kind of tag a [`NameUse`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// `{{x}}` (`escaped: true`), `{{{x}}}` or `{{& x}}` (`escaped: false`).
    Variable {
        /// Whether the value is escaped.
        escaped: bool,
    },
    /// `{{#x}}`.
    Section,
    /// `{{^x}}`.
    InvertedSection,
    /// `{{> x}}`.
    Partial,
}

/// How interpolated values are escaped.
///
/// The *text* of a value is: a string's content; a number as serde_json
/// displays it; `true`/`false`; the empty string for `null` and for missing
/// values; compact JSON for objects and arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `{{x}}` escapes `&`, `"`, `<`, `>` as HTML entities (what the mustache
    /// spec expects); `{{{x}}}` and `{{& x}}` insert the raw text.
    Html,
    /// For JSON documents. `{{x}}` inserts the text escaped as the *content*
    /// of a JSON string (no surrounding quotes), so it belongs between quotes
    /// in the template: `"summary": "{{summary}}"`. `{{{x}}}` and `{{& x}}`
    /// insert a complete JSON *value*: strings quoted and escaped, numbers,
    /// booleans, objects and arrays as compact JSON, and `null` for null **or
    /// missing** values: `"count": {{{count}}}`.
    ///
    /// Either way no value can make the output invalid JSON: the document
    /// structure comes from the template text alone.
    Json,
    /// `{{x}}` inserts the text `application/x-www-form-urlencoded`-encoded
    /// (for form bodies and query strings); `{{{x}}}` and `{{& x}}` insert the
    /// raw text.
    Form,
    /// No escaping at all: every form inserts the raw text.
    None,
}

/// The data a template renders from.
pub trait Root {
    /// Value of a top-level name (first segment of a dotted name), or `None`
    /// if absent.
    fn get(&self, name: &str) -> Option<Val<'_>>;

    /// Value of a whole dotted name (never empty) when no section frame has its first
    /// segment. The default walks [`Root::get`]'s answer through JSON objects; a root
    /// can answer directly when building the first segment's value would be costly.
    fn get_path(&self, path: &[Box<str>]) -> Option<Val<'_>> {
        let (first, rest) = path.split_first()?;
        render::descend(self.get(first)?, rest)
    }

    /// The root itself as a value: what `{{.}}` and `{{#.}}` mean outside any
    /// section. `None` (the default) renders as missing.
    fn value(&self) -> Option<Val<'_>> {
        None
    }
}

/// A value seen by the renderer.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    /// Text.
    Str(&'a str),
    /// Any JSON value.
    Json(&'a serde_json::Value),
}

impl Root for serde_json::Value {
    /// An object answers by key; anything else has no names.
    fn get(&self, name: &str) -> Option<Val<'_>> {
        match self {
            serde_json::Value::Object(map) => map.get(name).map(Val::Json),
            _ => None,
        }
    }

    fn value(&self) -> Option<Val<'_>> {
        Some(Val::Json(self))
    }
}

impl Root for serde_json::Map<String, serde_json::Value> {
    fn get(&self, name: &str) -> Option<Val<'_>> {
        self.get(name).map(Val::Json)
    }
}

/// Partial templates by name, as source text.
///
/// Each partial is parsed on first use and the result cached (partials are
/// always parsed with the default delimiters). A partial that is missing, or
/// whose source has a syntax error, renders as the empty string; use
/// [`Partials::template`] to validate them up front.
#[derive(Debug, Clone, Default)]
pub struct Partials {
    map: HashMap<String, PartialEntry>,
}

#[derive(Debug, Clone)]
struct PartialEntry {
    source: String,
    compiled: OnceLock<Result<Template, SyntaxError>>,
}

impl Partials {
    /// No partials.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the partial `name`.
    pub fn insert(&mut self, name: impl Into<String>, source: impl Into<String>) {
        self.map.insert(name.into(), PartialEntry { source: source.into(), compiled: OnceLock::new() });
    }

    /// The names of all partials, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The parsed partial `name` (positions are relative to the partial's own
    /// source), its syntax error, or `None` if there is no such partial.
    pub fn template(&self, name: &str) -> Option<Result<&Template, &SyntaxError>> {
        let entry = self.map.get(name)?;
        Some(entry.compiled.get_or_init(|| parse::parse_partial(&entry.source)).as_ref())
    }
}

impl Template {
    /// Whether, with [`Escape::Json`], every rendering has the same JSON shape whatever
    /// the values: no sections or partials, each `{{x}}` inside a string literal of the
    /// template (its escaped text cannot end the string) and each `{{{x}}}` outside any
    /// (it writes one whole JSON value, `null` when missing). Such a template renders valid
    /// JSON for every event once it has for an event with every value missing (where each
    /// `{{{x}}}` is `null`), so its bodies need no checking one by one.
    pub fn json_shape_is_fixed(&self) -> bool {
        let (mut in_string, mut escaped) = (false, false);
        for node in &self.nodes {
            match node {
                parse::Node::Text(text) => {
                    for b in text.bytes() {
                        match (in_string, b) {
                            (true, _) if escaped => escaped = false,
                            (true, b'\\') => escaped = true,
                            (_, b'"') => in_string = !in_string,
                            _ => {}
                        }
                    }
                }
                // Right after a backslash, the value's first character would be escaped
                // by the template's backslash instead.
                parse::Node::Var { escaped: true, .. } if in_string && !escaped => {}
                parse::Node::Var { escaped: false, .. } if !in_string => {}
                _ => return false,
            }
        }
        true
    }

    /// Every use of a name, in source order (closing tags not included).
    pub fn names(&self) -> Vec<NameUse> {
        let mut out = Vec::new();
        let mut sections = Vec::new();
        parse::collect_names(&self.nodes, &mut sections, &mut out);
        out
    }

    /// Render into `out` (appending).
    pub fn render(&self, root: &dyn Root, escape: Escape, partials: &Partials, out: &mut String) {
        render::render(self, root, escape, partials, out);
    }

    /// Render into a new `String`.
    pub fn render_to_string(&self, root: &dyn Root, escape: Escape, partials: &Partials) -> String {
        let mut out = String::new();
        self.render(root, escape, partials, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn template_and_partials_are_send_sync() {
        assert_send_sync::<Template>();
        assert_send_sync::<Partials>();
    }

    #[test]
    fn partials_validate_and_replace() {
        let mut p = Partials::new();
        p.insert("ok", "{{a}}");
        p.insert("bad", "x\n {{#a}}");
        assert!(p.template("ok").unwrap().is_ok());
        let err = p.template("bad").unwrap().unwrap_err();
        assert_eq!((err.line, err.column), (2, 2));
        assert!(p.template("missing").is_none());
        p.insert("bad", "fine");
        assert!(p.template("bad").unwrap().is_ok());
        let mut names: Vec<_> = p.names().collect();
        names.sort();
        assert_eq!(names, ["bad", "ok"]);
    }

    #[test]
    fn map_root() {
        let serde_json::Value::Object(map) = serde_json::json!({"a": "x"}) else { unreachable!() };
        let t = parse("{{a}}{{.}}").unwrap();
        assert_eq!(t.render_to_string(&map, Escape::None, &Partials::new()), "x");
    }
}
