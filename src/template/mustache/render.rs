//! Rendering: context stack, lookup, escaping.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde_json::Value;

use super::parse::{Name, Node};
use super::{Escape, Partials, Root, Template, Val, MAX_PARTIAL_DEPTH, MAX_RENDER_DEPTH, MAX_RENDER_STEPS};

pub(crate) fn render(template: &Template, root: &dyn Root, escape: Escape, partials: &Partials, out: &mut String) {
    let mut r = Renderer { root, escape, partials, stack: Vec::new(), out, depth: 0, partial_depth: 0, steps: 0 };
    r.nodes(&template.nodes, "");
}

struct Renderer<'a, 'o> {
    root: &'a dyn Root,
    escape: Escape,
    partials: &'a Partials,
    /// Frames pushed by sections; the root is below them all.
    stack: Vec<Val<'a>>,
    out: &'o mut String,
    depth: usize,
    partial_depth: usize,
    /// Nodes visited so far, bounded by [`MAX_RENDER_STEPS`].
    steps: usize,
}

impl<'a> Renderer<'a, '_> {
    fn nodes(&mut self, nodes: &'a [Node], indent: &str) {
        for node in nodes {
            if self.steps >= MAX_RENDER_STEPS {
                return;
            }
            self.steps += 1;
            match node {
                Node::Text(text) => self.out.push_str(text),
                Node::Indent => self.out.push_str(indent),
                Node::Var { name, escaped, .. } => {
                    let value = self.lookup(name);
                    if *escaped {
                        write_text(self.out, self.escape, value);
                    } else {
                        write_unescaped(self.out, self.escape, value);
                    }
                }
                Node::Section { name, inverted, children, .. } => {
                    if self.depth >= MAX_RENDER_DEPTH {
                        continue;
                    }
                    let value = self.lookup(name);
                    self.depth += 1;
                    if *inverted {
                        if !truthy(value) {
                            self.nodes(children, indent);
                        }
                    } else {
                        self.section(value, children, indent);
                    }
                    self.depth -= 1;
                }
                Node::Partial { name, indent: own, standalone, .. } => {
                    if self.depth >= MAX_RENDER_DEPTH || self.partial_depth >= MAX_PARTIAL_DEPTH {
                        continue;
                    }
                    let Some(Ok(partial)) = self.partials.template(name) else {
                        continue;
                    };
                    // A standalone partial is indented by its tag's
                    // whitespace plus the indentation of the partial it is in.
                    let indent: Cow<'_, str> = match (standalone, indent.is_empty()) {
                        (false, _) => Cow::Borrowed(""),
                        (true, true) => Cow::Borrowed(own),
                        (true, false) => Cow::Owned(format!("{indent}{own}")),
                    };
                    self.depth += 1;
                    self.partial_depth += 1;
                    self.nodes(&partial.nodes, &indent);
                    self.partial_depth -= 1;
                    self.depth -= 1;
                }
            }
        }
    }

    fn section(&mut self, value: Option<Val<'a>>, children: &'a [Node], indent: &str) {
        match value {
            Some(Val::Json(Value::Array(items))) => {
                for item in items {
                    self.stack.push(Val::Json(item));
                    self.nodes(children, indent);
                    self.stack.pop();
                }
            }
            Some(v) if truthy(value) => {
                self.stack.push(v);
                self.nodes(children, indent);
                self.stack.pop();
            }
            _ => {}
        }
    }

    fn lookup(&self, name: &Name) -> Option<Val<'a>> {
        let Some((first, rest)) = name.path.split_first() else {
            // `.`: the top of the stack.
            return match self.stack.last() {
                Some(v) => Some(*v),
                None => self.root.value(),
            };
        };
        // The first frame, from the top, that has `first`; else the root, which is asked
        // for the whole path so it can answer without building what the path skips.
        let found = self.stack.iter().rev().find_map(|frame| match frame {
            Val::Json(Value::Object(map)) => map.get(&**first),
            _ => None,
        });
        match found {
            Some(value) => descend(Val::Json(value), rest),
            None => self.root.get_path(&name.path),
        }
    }
}

/// Walks `rest` down from `value` through JSON objects (mustache dotted names do not index
/// lists).
pub(crate) fn descend<'v, S: AsRef<str>>(mut value: Val<'v>, rest: &[S]) -> Option<Val<'v>> {
    for segment in rest {
        value = match value {
            Val::Json(Value::Object(map)) => Val::Json(map.get(segment.as_ref())?),
            _ => return None,
        };
    }
    Some(value)
}

fn truthy(value: Option<Val<'_>>) -> bool {
    match value {
        None => false,
        Some(Val::Str(s)) => !s.is_empty(),
        Some(Val::Json(v)) => match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Number(_) | Value::Object(_) => true,
        },
    }
}

/// Writes everything through [`escape_into`].
struct Escaping<'o> {
    out: &'o mut String,
    escape: Escape,
}

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.out, self.escape, s);
        Ok(())
    }
}

/// `{{x}}`: the value's text, escaped.
fn write_text(out: &mut String, escape: Escape, value: Option<Val<'_>>) {
    match value {
        None | Some(Val::Json(Value::Null)) => {}
        Some(Val::Str(s)) => escape_into(out, escape, s),
        Some(Val::Json(Value::String(s))) => escape_into(out, escape, s),
        // Numbers, booleans, objects and arrays display as compact JSON;
        // writing never fails with this writer.
        Some(Val::Json(v)) => {
            let _ = write!(Escaping { out, escape }, "{v}");
        }
    }
}

/// `{{{x}}}` / `{{& x}}`: raw text, or a JSON value with [`Escape::Json`].
fn write_unescaped(out: &mut String, escape: Escape, value: Option<Val<'_>>) {
    if escape != Escape::Json {
        return write_text(out, Escape::None, value);
    }
    match value {
        None => out.push_str("null"),
        Some(Val::Str(s)) => json_quoted(out, s),
        Some(Val::Json(Value::String(s))) => json_quoted(out, s),
        Some(Val::Json(v)) => {
            let _ = write!(out, "{v}");
        }
    }
}

fn json_quoted(out: &mut String, s: &str) {
    out.push('"');
    json_string_content(out, s);
    out.push('"');
}

/// Append `s` to `out`, escaped.
pub(crate) fn escape_into(out: &mut String, escape: Escape, s: &str) {
    match escape {
        Escape::None => out.push_str(s),
        Escape::Html => html(out, s),
        Escape::Json => json_string_content(out, s),
        Escape::Form => out.extend(form_urlencoded::byte_serialize(s.as_bytes())),
    }
}

fn html(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let replacement = match b {
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(replacement);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// The bytes a JSON string escapes: `"`, `\` and the control characters U+0000..U+001F.
/// A table, so that a byte is tested with one load (a `match` per byte cost 0.6k–0.9k
/// more instructions per event: docs/performance.md, round 4); [`first_json_escaped`]
/// uses it for the bytes after the last whole word.
const JSON_ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Where the first byte of `bytes` that a JSON string escapes is, if any.
///
/// Hand-written, eight bytes at a time: the text between escapes is most of what a
/// template writes, and a load and test per byte was 1.4k instructions per event of the
/// benchmark's template (docs/performance.md, seventh session). A word's bytes below
/// 0x20, equal to `"` or equal to `\` are found with the classic "has a byte less than n"
/// bit trick, `(x - n·0x01…) & !x & 0x80…`, on `x` and on `x` xor-ed with each byte to
/// find (a byte equal to it becomes 0, less than 1). A borrow only carries upwards from
/// a byte that matched, so the lowest flagged byte is always a true match. Bytes of 0x80
/// and above (UTF-8 beyond ASCII) are never flagged. The tail shorter than a word goes
/// through the table.
fn first_json_escaped(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * n as u64) & !x
    }
    let mut words = bytes.chunks_exact(8);
    for (n, chunk) in words.by_ref().enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let found = (below(x, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGHS;
        if found != 0 {
            return Some(n * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let tail = bytes.len() - words.remainder().len();
    words.remainder().iter().position(|&b| JSON_ESCAPED[usize::from(b)]).map(|at| tail + at)
}

/// JSON string content, escaped exactly as serde_json does: `"`, `\` and
/// control characters U+0000..U+001F.
fn json_string_content(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut last = 0;
    while let Some(at) = first_json_escaped(&bytes[last..]) {
        let i = last + at;
        let b = bytes[i];
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        out.push_str(&s[last..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(short);
        }
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Escape, Partials, Root, Val};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// A root answering from string pairs, like an event would.
    struct Strs(Vec<(&'static str, String)>);

    impl Root for Strs {
        fn get(&self, name: &str) -> Option<Val<'_>> {
            self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| Val::Str(v))
        }
    }

    fn render(src: &str, data: &Value, escape: Escape) -> String {
        parse(src).unwrap().render_to_string(data, escape, &Partials::new())
    }

    #[test]
    fn json_escape_matches_serde_json_for_all_ascii() {
        for c in (0u8..=0x7f).map(char::from).chain(['é', '\u{2028}', '😀']) {
            let s = format!("a{c}b");
            let mut out = String::new();
            super::json_string_content(&mut out, &s);
            let expected = serde_json::to_string(&s).unwrap();
            assert_eq!(format!("\"{out}\""), expected, "{c:?}");
        }
    }

    #[test]
    fn json_escaped_text() {
        let data = json!({
            "s": "a\"b\\c\nd\u{1}é",
            "n": 1.5, "i": -3, "t": true, "z": null,
            "o": {"k": "v\"", "l": [1, 2]},
        });
        let out = render("{{s}}|{{n}}|{{i}}|{{t}}|{{z}}|{{missing}}|{{o}}|{{o.l}}", &data, Escape::Json);
        assert_eq!(out, r#"a\"b\\c\nd\u0001é|1.5|-3|true|||{\"k\":\"v\\\"\",\"l\":[1,2]}|[1,2]"#);
    }

    #[test]
    fn json_unescaped_values_and_null_rule() {
        let data = json!({
            "s": "a\"b", "n": 1.5, "t": false, "z": null,
            "o": {"k": "v", "l": [1, "x"]},
        });
        let out = render(
            "{{{s}}} {{{n}}} {{{t}}} {{{z}}} {{{missing}}} {{&o}} {{{o.l}}} {{{o.nope.x}}}",
            &data,
            Escape::Json,
        );
        assert_eq!(out, r#""a\"b" 1.5 false null null {"k":"v","l":[1,"x"]} [1,"x"] null"#);
        let strs = Strs(vec![("s", "q\"\n".into())]);
        let t = parse("{{{s}}},{{&s}},{{s}},{{{x}}}").unwrap();
        assert_eq!(t.render_to_string(&strs, Escape::Json, &Partials::new()), r#""q\"\n","q\"\n",q\"\n,null"#);
    }

    #[test]
    fn json_template_stays_valid() {
        let data = json!({"summary": "disk \"/\" full\n", "tags": ["a", "b"], "count": 3});
        let out = render(
            r#"{"text":"{{summary}}","tags":{{{tags}}},"count":{{{count}}},"nope":{{{nope}}},"s":{{{summary}}}}"#,
            &data,
            Escape::Json,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], data["summary"]);
        assert_eq!(v["tags"], data["tags"]);
        assert_eq!(v["count"], 3);
        assert_eq!(v["nope"], Value::Null);
        assert_eq!(v["s"], data["summary"]);
    }

    #[test]
    fn form_escaping() {
        let data = json!({"s": "a b&c=d/é+", "n": 1e-7, "o": {"a": 1}, "z": null});
        assert_eq!(
            render("{{s}}|{{n}}|{{o}}|{{z}}|{{{s}}}|{{&s}}", &data, Escape::Form),
            "a+b%26c%3Dd%2F%C3%A9%2B|1e-7|%7B%22a%22%3A1%7D||a b&c=d/é+|a b&c=d/é+"
        );
    }

    #[test]
    fn none_escaping() {
        let data = json!({"s": "<a href=\"x\">&</a>\n", "o": {"a": [true]}, "z": null});
        assert_eq!(
            render("{{s}}{{{s}}}{{&s}}{{o}}{{z}}{{{z}}}", &data, Escape::None),
            "<a href=\"x\">&</a>\n<a href=\"x\">&</a>\n<a href=\"x\">&</a>\n{\"a\":[true]}"
        );
    }

    #[test]
    fn html_escaping() {
        let data = json!({"s": "<a href=\"x\">&'</a>"});
        assert_eq!(
            render("{{s}}|{{{s}}}", &data, Escape::Html),
            "&lt;a href=&quot;x&quot;&gt;&amp;'&lt;/a&gt;|<a href=\"x\">&'</a>"
        );
    }

    #[test]
    fn sections_over_strings_and_roots() {
        let strs = Strs(vec![("s", "hi".into()), ("e", String::new())]);
        let t = parse("{{#s}}[{{.}}|{{s}}]{{/s}}{{#e}}no{{/e}}{{^e}}empty{{/e}}{{.}}").unwrap();
        assert_eq!(t.render_to_string(&strs, Escape::None, &Partials::new()), "[hi|hi]empty");
    }

    #[test]
    fn lookup_rules() {
        let data = json!({
            "a": {"b": {}, "x": 1},
            "b": {"c": "ERROR"},
            "list": [{"x": 2}, {"y": 3}, 4],
            "zero": 0,
        });
        assert_eq!(render("{{#a}}{{b.c}}{{/a}}", &data, Escape::None), "");
        assert_eq!(render("{{#list}}{{x}}{{/list}}", &data, Escape::None), "2");
        assert_eq!(render("{{#zero}}z{{.}}{{/zero}}", &data, Escape::None), "z0");
        assert_eq!(render("{{a.x.y}}{{list.0}}", &data, Escape::None), "");
    }

    #[test]
    fn recursive_partials_are_bounded() {
        let mut partials = Partials::new();
        partials.insert("loop", "x{{>loop}}");
        partials.insert("bad", "{{#a}}");
        let t = parse("{{>loop}}{{>bad}}{{>missing}}").unwrap();
        let out = t.render_to_string(&json!({}), Escape::None, &partials);
        assert_eq!(out, "x".repeat(super::MAX_PARTIAL_DEPTH));
    }

    #[test]
    fn exponential_expansion_is_bounded() {
        let mut partials = Partials::new();
        partials.insert("p", "{{>p}}{{>p}}x");
        let data = json!({"l": [1, 2, 3]});
        let t = parse(&format!("{}{}{{{{>p}}}}", "{{#l}}".repeat(100), "{{/l}}".repeat(100))).unwrap();
        assert_eq!(t.render_to_string(&data, Escape::None, &partials), "");
        let t = parse(&format!("{}x{}", "{{#l}}".repeat(100), "{{/l}}".repeat(100))).unwrap();
        let out = t.render_to_string(&data, Escape::None, &partials);
        assert!(!out.is_empty() && out.len() < super::MAX_RENDER_STEPS);
        let t = parse("{{>p}}").unwrap();
        let out = t.render_to_string(&data, Escape::None, &partials);
        assert!(!out.is_empty() && out.len() < super::MAX_RENDER_STEPS);
    }

    #[test]
    fn nested_standalone_partials_accumulate_indentation() {
        let mut partials = Partials::new();
        partials.insert("outer", "o1\n  {{>inner}}\no2 {{>inner}}\n");
        partials.insert("inner", "i1\ni2\n");
        let t = parse("  {{>outer}}\n").unwrap();
        let out = t.render_to_string(&json!({}), Escape::None, &partials);
        assert_eq!(out, "  o1\n    i1\n    i2\n  o2 i1\ni2\n\n");
    }

    #[test]
    fn render_appends() {
        let t = parse("{{a}}").unwrap();
        let mut out = String::from("x");
        t.render(&json!({"a": "y"}), Escape::None, &Partials::new(), &mut out);
        assert_eq!(out, "xy");
    }

    proptest! {
        /// The word-at-a-time scan finds the byte a byte-by-byte scan finds, wherever it
        /// is: mostly plain text, with the bytes on either side of each class's border.
        #[test]
        fn first_json_escaped_matches_a_byte_scan(bytes in proptest::collection::vec(prop_oneof![
            8 => Just(b'a'),
            1 => proptest::sample::select(vec![0x00, 0x01, 0x1f, 0x20, b'!', b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xc3, 0xff]),
        ], 0..48)) {
            let expected = bytes.iter().position(|&b| super::JSON_ESCAPED[usize::from(b)]);
            prop_assert_eq!(super::first_json_escaped(&bytes), expected);
        }

        /// Byte for byte what serde_json writes, controls and quotes anywhere in the text.
        #[test]
        fn json_escape_matches_serde_json_with_controls(x in "[a-z\"\\\\\\x00-\\x1f\\x7fé😀]{0,40}") {
            let mut out = String::new();
            super::json_string_content(&mut out, &x);
            prop_assert_eq!(format!("\"{out}\""), serde_json::to_string(&x).unwrap());
        }

        #[test]
        fn json_round_trips_any_string(x in any::<String>()) {
            let t = parse(r#"{"a":"{{x}}","b":{{{x}}},"c":{{&x}}}"#).unwrap();
            let expected = Value::String(x.clone());
            let json_root = json!({ "x": x });
            let str_root = Strs(vec![("x", x.clone())]);
            for root in [&json_root as &dyn Root, &str_root] {
                let out = t.render_to_string(root, Escape::Json, &Partials::new());
                let v: Value = serde_json::from_str(&out).unwrap();
                prop_assert_eq!(&v["a"], &expected);
                prop_assert_eq!(&v["b"], &expected);
                prop_assert_eq!(&v["c"], &expected);
            }
        }

        #[test]
        fn json_escape_matches_serde_json(x in any::<String>()) {
            let mut out = String::from("\"");
            super::json_string_content(&mut out, &x);
            out.push('"');
            prop_assert_eq!(out, serde_json::to_string(&x).unwrap());
        }

        #[test]
        fn form_round_trips_any_string(x in any::<String>()) {
            let t = parse("x={{x}}").unwrap();
            let out = t.render_to_string(&json!({ "x": x }), Escape::Form, &Partials::new());
            let pairs: Vec<(String, String)> = form_urlencoded::parse(out.as_bytes()).into_owned().collect();
            prop_assert_eq!(pairs, vec![("x".to_string(), x)]);
        }
    }
}
