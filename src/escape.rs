//! Text from outside (a sender's JSON key, a receiver's answer) made safe for one log line,
//! a dead letter or the terminal: control characters are escaped, so a newline cannot
//! forge another log line and ESC/BEL cannot drive the operator's terminal.
//!
//! Hand-written: `str::escape_debug` would also escape quotes and backslashes (doubling
//! them in every message) and `escape_default` every non-ASCII letter; only control
//! characters (C0, DEL, C1) and the Unicode line/paragraph separators and bidi controls,
//! which reorder what a terminal shows, need escaping here.

use std::fmt;

/// Whether `c` is escaped: control characters, line/paragraph separators, bidi controls.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Displays a text with its control characters escaped (`\n`, `\u{1b}`); everything
/// else, quotes and non-ASCII letters included, as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` with its control characters escaped, as [`Escaped`] shows it.
pub fn escape_control(text: &str) -> String {
    Escaped(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("a\nb\r\x1b[31m\x07\u{9b}"), "a\\nb\\r\\u{1b}[31m\\u{7}\\u{9b}");
        assert_eq!(escape_control("caf\u{e9} \"q\" \\ \u{202e}x"), "caf\u{e9} \"q\" \\ \\u{202e}x");
        assert_eq!(escape_control(""), "");
    }
}
