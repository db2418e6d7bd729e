//! Tokenizer and parser: delimiters, standalone lines, positions.
//!
//! Parsing runs in three passes, none of them recursive:
//!
//! 1. [`tokenize`] splits the source into text (at most one line per token,
//!    ending with its `\n`) and tags, applying set-delimiter tags as it goes
//!    and recording each tag's line and column;
//! 2. [`standalone`] groups tokens into source lines and drops the whitespace
//!    (and line ending) around a standalone section, inverted, closing,
//!    comment, partial or set-delimiter tag; for partials it also marks the
//!    start of each remaining line, where the partial's indentation goes;
//! 3. [`build`] turns the tokens into a tree of [`Node`]s, checking that
//!    sections are closed properly.

use super::{NameUse, SyntaxError, TagKind, Template, MAX_NESTING};

/// A name as written in a tag, split at dots. `.` has an empty path.
#[derive(Debug, Clone)]
pub(crate) struct Name {
    pub(crate) full: Box<str>,
    pub(crate) path: Box<[Box<str>]>,
}

impl Name {
    fn new(full: &str) -> Name {
        let path = if full == "." { Box::default() } else { full.split('.').map(Box::from).collect() };
        Name { full: full.into(), path }
    }
}

/// A node of the compiled template.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    /// Start of a line of a partial: where the standalone indentation goes.
    Indent,
    Var {
        name: Name,
        escaped: bool,
        line: usize,
        column: usize,
    },
    Section {
        name: Name,
        inverted: bool,
        line: usize,
        column: usize,
        children: Vec<Node>,
    },
    Partial {
        name: Box<str>,
        /// Whitespace before a standalone partial tag.
        indent: Box<str>,
        standalone: bool,
        line: usize,
        column: usize,
    },
}

/// Parse a template. Partials (`{{> name}}`) are looked up at render time in
/// [`Partials`](super::Partials).
pub fn parse(source: &str) -> Result<Template, SyntaxError> {
    parse_inner(source, false)
}

/// Parse a partial: like [`parse`], but marking line starts for indentation.
pub(crate) fn parse_partial(source: &str) -> Result<Template, SyntaxError> {
    parse_inner(source, true)
}

fn parse_inner(source: &str, mark_lines: bool) -> Result<Template, SyntaxError> {
    let (tokens, error) = tokenize(source);
    let tokens = standalone(tokens, mark_lines);
    let nodes = build(tokens, error)?;
    Ok(Template { nodes })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Var { escaped: bool },
    Open,
    Inverted,
    Close,
    Comment,
    Partial,
    Delims,
}

impl Kind {
    fn can_stand_alone(self) -> bool {
        !matches!(self, Kind::Var { .. })
    }
}

#[derive(Debug)]
struct Tag<'s> {
    kind: Kind,
    /// Trimmed content (empty for comments and set-delimiter tags).
    name: &'s str,
    /// The whole tag as written, delimiters included.
    raw: &'s str,
    line: usize,
    column: usize,
    /// `Some(indentation)` if the tag is standalone.
    standalone: Option<&'s str>,
}

#[derive(Debug)]
enum Token<'s> {
    /// Text; at most one line: only the last char may be `\n`.
    Text(&'s str),
    Indent,
    Tag(Tag<'s>),
}

/// Tracks line and column while moving forward through the source.
struct Cursor<'s> {
    src: &'s str,
    offset: usize,
    line: usize,
    column: usize,
}

impl Cursor<'_> {
    fn advance_to(&mut self, target: usize) -> (usize, usize) {
        for c in self.src[self.offset..target].chars() {
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.offset = target;
        (self.line, self.column)
    }
}

fn push_text<'s>(tokens: &mut Vec<Token<'s>>, mut text: &'s str) {
    while let Some(i) = text.find('\n') {
        tokens.push(Token::Text(&text[..=i]));
        text = &text[i + 1..];
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
}

/// A short excerpt of an unclosed tag for error messages: up to the end of
/// the line, at most 40 chars.
fn excerpt(s: &str) -> String {
    let line = s.split(['\n', '\r']).next().unwrap_or("");
    let mut out: String = line.chars().take(40).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// Split the source into tokens. On a syntax error, returns the tokens before
/// the bad tag and the error.
fn tokenize(src: &str) -> (Vec<Token<'_>>, Option<SyntaxError>) {
    let mut tokens = Vec::new();
    let mut otag: &str = "{{";
    let mut ctag: &str = "}}";
    let mut cursor = Cursor { src, offset: 0, line: 1, column: 1 };
    let mut pos = 0;
    while pos < src.len() {
        let Some(i) = src[pos..].find(otag) else {
            push_text(&mut tokens, &src[pos..]);
            break;
        };
        let start = pos + i;
        push_text(&mut tokens, &src[pos..start]);
        let (line, column) = cursor.advance_to(start);
        let error = |message: String| Some(SyntaxError { line, column, message });
        let unclosed = || error(format!("tag `{}` is never closed (expected `{ctag}`)", excerpt(&src[start..])));
        let after = start + otag.len();
        let sigil = src.as_bytes().get(after).copied();

        // Find the content and the end of the tag.
        let (kind, content, end) = match sigil {
            Some(b'{') => {
                let body_start = after + 1;
                let body = &src[body_start..];
                let close3 = format!("}}{ctag}");
                match (body.find(&close3), body.find(ctag)) {
                    (_, None) => return (tokens, unclosed()),
                    (Some(a), Some(b)) if a <= b => {
                        (Kind::Var { escaped: false }, &body[..a], body_start + a + close3.len())
                    }
                    (_, Some(b)) => {
                        let raw = &src[start..body_start + b + ctag.len()];
                        return (
                            tokens,
                            error(format!("triple mustache `{raw}` is missing its closing `}}` (expected `}}{ctag}`)")),
                        );
                    }
                }
            }
            Some(b'=') => {
                let body_start = after + 1;
                let body = &src[body_start..];
                let Some(b) = body.find(ctag) else {
                    return (tokens, unclosed());
                };
                let end = body_start + b + ctag.len();
                let raw = &src[start..end];
                let inner = &body[..b];
                let parts: Vec<&str> =
                    inner.strip_suffix('=').map(|s| s.split_whitespace().collect()).unwrap_or_default();
                if parts.len() != 2 || parts.iter().any(|p| p.contains('=')) {
                    return (
                        tokens,
                        error(format!(
                            "invalid set-delimiter tag `{raw}` (expected two delimiters without `=`, separated by whitespace, like `{otag}=<% %>={ctag}`)"
                        )),
                    );
                }
                tokens.push(Token::Tag(Tag { kind: Kind::Delims, name: "", raw, line, column, standalone: None }));
                otag = parts[0];
                ctag = parts[1];
                pos = end;
                continue;
            }
            _ => {
                let (kind, body_start) = match sigil {
                    Some(b'!') => (Kind::Comment, after + 1),
                    Some(b'&') => (Kind::Var { escaped: false }, after + 1),
                    Some(b'#') => (Kind::Open, after + 1),
                    Some(b'^') => (Kind::Inverted, after + 1),
                    Some(b'/') => (Kind::Close, after + 1),
                    Some(b'>') => (Kind::Partial, after + 1),
                    _ => (Kind::Var { escaped: true }, after),
                };
                let body = &src[body_start..];
                let Some(b) = body.find(ctag) else {
                    return (tokens, unclosed());
                };
                (kind, &body[..b], body_start + b + ctag.len())
            }
        };
        let raw = &src[start..end];
        let name = if kind == Kind::Comment {
            ""
        } else {
            let name = content.trim();
            if name.is_empty() {
                return (tokens, error(format!("empty tag name in `{raw}`")));
            }
            name
        };
        tokens.push(Token::Tag(Tag { kind, name, raw, line, column, standalone: None }));
        pos = end;
    }
    (tokens, None)
}

/// `s` is spaces and tabs only, optionally followed by a line ending.
fn is_blank(s: &str) -> bool {
    let s = match s.strip_suffix('\n') {
        Some(s) => s.strip_suffix('\r').unwrap_or(s),
        None => s,
    };
    s.bytes().all(|b| b == b' ' || b == b'\t')
}

/// Apply the standalone-line rules; with `mark_lines`, insert an
/// [`Token::Indent`] at the start of every remaining non-empty line.
fn standalone(tokens: Vec<Token<'_>>, mark_lines: bool) -> Vec<Token<'_>> {
    let mut out = Vec::with_capacity(tokens.len() + 1);
    let mut line: Vec<Token<'_>> = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while tokens.peek().is_some() {
        // Collect one source line: up to and including text ending in '\n'.
        line.clear();
        for token in tokens.by_ref() {
            let ends_line = matches!(token, Token::Text(t) if t.ends_with('\n'));
            line.push(token);
            if ends_line {
                break;
            }
        }
        let mut tag_at = None;
        let mut candidate = true;
        for (i, token) in line.iter().enumerate() {
            match token {
                Token::Text(t) => candidate &= is_blank(t),
                Token::Tag(tag) => {
                    candidate &= tag_at.is_none() && tag.kind.can_stand_alone();
                    tag_at = Some(i);
                }
                Token::Indent => {}
            }
        }
        match tag_at {
            Some(at) if candidate => {
                let indent = match at.checked_sub(1).map(|i| &line[i]) {
                    Some(Token::Text(t)) => *t,
                    _ => "",
                };
                let mut tag = match line.swap_remove(at) {
                    Token::Tag(tag) => tag,
                    _ => unreachable!("tag_at points at a tag"),
                };
                tag.standalone = Some(indent);
                out.push(Token::Tag(tag));
            }
            _ => {
                let empty = matches!(line.as_slice(), [Token::Text("\n" | "\r\n")]);
                if mark_lines && !empty {
                    out.push(Token::Indent);
                }
                out.append(&mut line);
            }
        }
    }
    out
}

struct Open<'s> {
    tag: Tag<'s>,
    parent: Vec<Node>,
}

/// Build the node tree. `error` is the tokenizer's error, if any: it wins
/// over an unclosed section but not over an earlier bad closing tag.
fn build(tokens: Vec<Token<'_>>, error: Option<SyntaxError>) -> Result<Vec<Node>, SyntaxError> {
    let mut stack: Vec<Open<'_>> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for token in tokens {
        let tag = match token {
            Token::Text(t) => {
                match nodes.last_mut() {
                    Some(Node::Text(prev)) => prev.push_str(t),
                    _ => nodes.push(Node::Text(t.to_owned())),
                }
                continue;
            }
            Token::Indent => {
                nodes.push(Node::Indent);
                continue;
            }
            Token::Tag(tag) => tag,
        };
        let err = |message: String| SyntaxError { line: tag.line, column: tag.column, message };
        match tag.kind {
            Kind::Comment | Kind::Delims => {}
            Kind::Var { escaped } => {
                nodes.push(Node::Var { name: Name::new(tag.name), escaped, line: tag.line, column: tag.column })
            }
            Kind::Partial => nodes.push(Node::Partial {
                name: tag.name.into(),
                indent: tag.standalone.unwrap_or("").into(),
                standalone: tag.standalone.is_some(),
                line: tag.line,
                column: tag.column,
            }),
            Kind::Open | Kind::Inverted => {
                if stack.len() >= MAX_NESTING {
                    return Err(err(format!(
                        "section `{}` is nested too deeply (more than {MAX_NESTING} levels)",
                        tag.name
                    )));
                }
                let parent = std::mem::take(&mut nodes);
                stack.push(Open { tag, parent });
            }
            Kind::Close => {
                let Some(open) = stack.pop() else {
                    return Err(err(format!("closing tag `{}` has no open section to close", tag.raw)));
                };
                if open.tag.name != tag.name {
                    return Err(err(format!(
                        "closing tag `{}` does not match the open section `{}` (opened at line {}, column {})",
                        tag.raw, open.tag.name, open.tag.line, open.tag.column
                    )));
                }
                let children = std::mem::replace(&mut nodes, open.parent);
                nodes.push(Node::Section {
                    name: Name::new(open.tag.name),
                    inverted: open.tag.kind == Kind::Inverted,
                    line: open.tag.line,
                    column: open.tag.column,
                    children,
                });
            }
        }
    }
    if let Some(error) = error {
        return Err(error);
    }
    if let Some(open) = stack.pop() {
        let what = if open.tag.kind == Kind::Inverted { "inverted section" } else { "section" };
        return Err(SyntaxError {
            line: open.tag.line,
            column: open.tag.column,
            message: format!("{what} `{}` is never closed", open.tag.name),
        });
    }
    Ok(nodes)
}

/// Append every name use in `nodes` to `out`, in source order.
pub(crate) fn collect_names(nodes: &[Node], sections: &mut Vec<String>, out: &mut Vec<NameUse>) {
    for node in nodes {
        let (name, kind, line, column) = match node {
            Node::Text(_) | Node::Indent => continue,
            Node::Var { name, escaped, line, column } => {
                (&*name.full, TagKind::Variable { escaped: *escaped }, *line, *column)
            }
            Node::Section { name, inverted, line, column, .. } => {
                let kind = if *inverted { TagKind::InvertedSection } else { TagKind::Section };
                (&*name.full, kind, *line, *column)
            }
            Node::Partial { name, line, column, .. } => (&**name, TagKind::Partial, *line, *column),
        };
        out.push(NameUse { name: name.to_owned(), kind, line, column, sections: sections.clone() });
        if let Node::Section { children, .. } = node {
            sections.push(name.to_owned());
            collect_names(children, sections, out);
            sections.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, NameUse, TagKind};
    use proptest::prelude::*;

    fn err(src: &str) -> (usize, usize, String) {
        let e = parse(src).expect_err("should fail");
        (e.line, e.column, e.message)
    }

    fn use_of(name: &str, kind: TagKind, line: usize, column: usize, sections: &[&str]) -> NameUse {
        NameUse { name: name.into(), kind, line, column, sections: sections.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn names_with_positions() {
        let src = "Alert: {{ alertSummary }}\n{{#links}}\n  - {{{href}}} {{&text}}\n{{/links}}\n{{^event.x}}{{> foot }}{{.}}{{/event.x}}é{{ event.alertSource.name }}";
        let t = parse(src).unwrap();
        let esc = TagKind::Variable { escaped: true };
        let raw = TagKind::Variable { escaped: false };
        assert_eq!(
            t.names(),
            vec![
                use_of("alertSummary", esc, 1, 8, &[]),
                use_of("links", TagKind::Section, 2, 1, &[]),
                use_of("href", raw, 3, 5, &["links"]),
                use_of("text", raw, 3, 16, &["links"]),
                use_of("event.x", TagKind::InvertedSection, 5, 1, &[]),
                use_of("foot", TagKind::Partial, 5, 13, &["event.x"]),
                use_of(".", esc, 5, 24, &["event.x"]),
                use_of("event.alertSource.name", esc, 5, 42, &[]),
            ]
        );
    }

    #[test]
    fn names_after_delimiter_change() {
        let src = "{{=<% %>=}}\nab <% x %>\n<%={{ }}=%>{{#s}}{{y}}{{/s}}";
        let names = parse(src).unwrap().names();
        let esc = TagKind::Variable { escaped: true };
        assert_eq!(
            names,
            vec![
                use_of("x", esc, 2, 4, &[]),
                use_of("s", TagKind::Section, 3, 12, &[]),
                use_of("y", esc, 3, 18, &["s"]),
            ]
        );
    }

    #[test]
    fn nested_sections_listed() {
        let names = parse("{{#a}}{{#b.c}}{{^d}}{{x}}{{/d}}{{/b.c}}{{/a}}").unwrap().names();
        assert_eq!(names[3].sections, ["a", "b.c", "d"]);
    }

    #[test]
    fn unclosed_tag() {
        let (l, c, m) = err("hello\n  {{ alertSummary\nmore");
        assert_eq!((l, c), (2, 3));
        assert!(m.contains("`{{ alertSummary`"), "{m}");
        assert!(m.contains("never closed"), "{m}");
        assert_eq!(err("x {{! comment").0, 1);
        assert_eq!(err("{{#a").1, 1);
        assert_eq!(err("{{{a").1, 1);
        assert_eq!(err("{{=<% %>").1, 1);
    }

    #[test]
    fn unclosed_tag_after_delimiter_change() {
        let (l, c, m) = err("{{=<% %>=}}\n  <% x }}");
        assert_eq!((l, c), (2, 3));
        assert!(m.contains("`%>`"), "{m}");
    }

    #[test]
    fn unclosed_section_reports_opening_tag() {
        let (l, c, m) = err("a\n b {{#links}}\n{{url}}\n");
        assert_eq!((l, c), (2, 4));
        assert_eq!(m, "section `links` is never closed");
        let (l, c, m) = err("{{#a}}{{/a}}\n{{^b}}");
        assert_eq!((l, c), (2, 1));
        assert_eq!(m, "inverted section `b` is never closed");
    }

    #[test]
    fn mismatched_close_reports_close_tag() {
        let (l, c, m) = err("{{#a}}\n  {{/b}}\n{{/a}}");
        assert_eq!((l, c), (2, 3));
        assert!(m.contains("`{{/b}}`") && m.contains("`a`"), "{m}");
    }

    #[test]
    fn close_without_open() {
        let (l, c, m) = err("x\n\tyz{{/b}}");
        assert_eq!((l, c), (2, 4));
        assert!(m.contains("`{{/b}}`") && m.contains("no open section"), "{m}");
    }

    #[test]
    fn bad_close_wins_over_later_unclosed_tag() {
        let (l, c, _) = err("{{/b}} {{oops");
        assert_eq!((l, c), (1, 1));
        // ...but an unclosed tag wins over the section it leaves open.
        let (l, c, m) = err("{{#a}} {{oops");
        assert_eq!((l, c), (1, 8));
        assert!(m.contains("never closed") && m.contains("oops"), "{m}");
    }

    #[test]
    fn empty_names() {
        for src in ["{{}}", "a {{ }}", "{{#}}{{/}}", "{{{ }}}", "{{& }}", "{{>}}", "{{^ }}"] {
            let (_, _, m) = err(src);
            assert!(m.starts_with("empty tag name"), "{src}: {m}");
        }
        assert!(parse("{{!}}").is_ok());
    }

    #[test]
    fn bad_set_delimiters() {
        for src in ["{{=<%=}}", "{{=<% %> x=}}", "{{=<% %>}}", "{{=a= b=}}", "{{==}}"] {
            let (l, c, m) = err(&format!("ok\n  {src}"));
            assert_eq!((l, c), (2, 3), "{src}");
            assert!(m.starts_with("invalid set-delimiter tag"), "{src}: {m}");
        }
    }

    #[test]
    fn missing_third_brace() {
        let (l, c, m) = err("a\n{{{x}} and {{y}}");
        assert_eq!((l, c), (2, 1));
        assert!(m.contains("`{{{x}}`") && m.contains("`}`"), "{m}");
        assert!(parse("{{{x}}}").is_ok());
        assert!(parse("{{=<% %>=}}<%{x}%>").is_ok());
    }

    #[test]
    fn column_counts_chars() {
        let (l, c, _) = err("ééé{{#a}}");
        assert_eq!((l, c), (1, 4));
    }

    #[test]
    fn nesting_limit() {
        let deep = "{{#a}}".repeat(super::MAX_NESTING + 1);
        let (_, _, m) = err(&deep);
        assert!(m.contains("nested too deeply"), "{m}");
        let ok = format!("{}{}", "{{#a}}".repeat(super::MAX_NESTING), "{{/a}}".repeat(super::MAX_NESTING));
        assert!(parse(&ok).is_ok());
    }

    fn template_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{{"),
            Just("}}"),
            Just("{"),
            Just("}"),
            Just("#"),
            Just("^"),
            Just("/"),
            Just("!"),
            Just("&"),
            Just(">"),
            Just("="),
            Just("<%"),
            Just("%>"),
            Just("a"),
            Just("."),
            Just(" "),
            Just("\n"),
            Just("\r\n"),
            Just("\t"),
            Just("é"),
            Just("{{#a}}"),
            Just("{{/a}}"),
            Just("{{=<% %>=}}"),
            Just("{{>p}}"),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_and_render_soup_never_panic(s in template_soup()) {
            use super::super::{Escape, Partials};
            if let Ok(t) = parse(&s) {
                let _ = t.names();
                let mut partials = Partials::new();
                partials.insert("p", s.clone());
                let data = serde_json::json!({"a": [1, {"a": "x"}], "x": "<\n>"});
                for escape in [Escape::Html, Escape::Json, Escape::Form, Escape::None] {
                    let _ = t.render_to_string(&data, escape, &partials);
                }
            }
        }
    }
}
