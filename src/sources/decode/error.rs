//! Why a body could not be decoded: a leaf of the decoding layer, so the framing and every
//! codec report errors in one shape (value number, line, column, field) without
//! importing the module that ties them together.

/// Why a body (or line) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}, column {column}: {}{message}",
    .event.map(|n| format!("event {n} at ")).unwrap_or_default(),
    .field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct DecodeError {
    /// 1-based number of the value in the body, when the JSON itself was well-formed.
    pub event: Option<usize>,
    /// 1-based line in the body.
    pub line: usize,
    /// 1-based column in that line.
    pub column: usize,
    /// Dotted path of the offending field, when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl DecodeError {
    /// A problem at a position, with no field to blame.
    pub fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        DecodeError { event: None, line, column, field: None, message: message.into() }
    }

    /// A problem with a field of a value (position: the value's start).
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError { event: None, line: 1, column: 1, field: Some(field.into()), message: message.into() }
    }

    /// serde_json's error, its position kept apart from its message.
    pub fn from_json(e: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; the position is kept
        // in fields of its own, so the suffix is cut to avoid saying it twice.
        let text = e.to_string();
        let message = match text.rsplit_once(" at line ") {
            Some((message, _)) => message.to_string(),
            None => text,
        };
        DecodeError::at(e.line().max(1), e.column().max(1), message)
    }

    /// Moves a position relative to a value to one relative to the body it came from.
    pub(super) fn within(mut self, event: usize, line: usize, column: usize) -> Self {
        self.event = Some(event);
        if self.line == 1 {
            self.column += column - 1;
        }
        self.line += line - 1;
        self
    }
}

/// What a JSON value is ("a string", "an array", …), for error messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
