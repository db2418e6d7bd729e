//! Decoding request bodies and lines into incident events.
//!
//! A body is one JSON object, a JSON array of objects, or NDJSON (objects separated by
//! whitespace/newlines). A body decodes whole or not at all: the first bad event fails it,
//! with its number, line and column and the field that is wrong, so a sender never has a
//! body half-accepted.

use serde_json::value::RawValue;

use crate::event::IncidentEvent;

/// Why a body (or line) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}, column {column}: {}{message}",
    .event.map(|n| format!("event {n} at ")).unwrap_or_default(),
    .field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct DecodeError {
    /// 1-based number of the event in the body, when the JSON itself was well-formed.
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

/// Decodes a whole body: a JSON object, an array of objects, or NDJSON.
pub fn decode_body(body: &[u8]) -> Result<Vec<IncidentEvent>, DecodeError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let raws: Vec<&RawValue> = match start.map(|i| body[i]) {
        None => {
            return Err(DecodeError {
                event: None,
                line: 1,
                column: 1,
                field: None,
                message: "the body holds no event".into(),
            })
        }
        Some(b'[') => serde_json::from_slice(body).map_err(|e| syntax_error(&e))?,
        Some(_) => serde_json::Deserializer::from_slice(body)
            .into_iter::<&RawValue>()
            .collect::<Result<_, _>>()
            .map_err(|e| syntax_error(&e))?,
    };
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let (line, column) = position_of(body, raw.get());
            decode_raw(raw.get()).map_err(|mut e| {
                e.event = Some(i + 1);
                // Positions inside the event are relative to where it starts in the body.
                if e.line == 1 {
                    e.column += column - 1;
                }
                e.line += line - 1;
                e
            })
        })
        .collect()
}

/// Decodes one event from one JSON text (an NDJSON line).
pub fn decode_event(text: &str) -> Result<IncidentEvent, DecodeError> {
    decode_raw(text)
}

fn decode_raw(text: &str) -> Result<IncidentEvent, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut err = syntax_error(e.inner());
        err.field = (path != ".").then_some(path);
        err
    })?;
    de.end().map_err(|e| syntax_error(&e))?;
    Ok(event)
}

fn syntax_error(e: &serde_json::Error) -> DecodeError {
    // serde_json appends " at line L column C" to its message; the position is kept in
    // fields of its own, so the suffix is cut to avoid saying it twice.
    let text = e.to_string();
    let message = match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_string(),
        None => text,
    };
    DecodeError { event: None, line: e.line().max(1), column: e.column().max(1), field: None, message }
}

/// Line and column (1-based) where `part`, a slice of `body`, starts.
fn position_of(body: &[u8], part: &str) -> (usize, usize) {
    let offset = (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize).min(body.len());
    let before = &body[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_an_array_and_ndjson() {
        let one = br#"{"eventType":"alert-created","id":"1"}"#;
        assert_eq!(decode_body(one).unwrap().len(), 1);
        let array = br#" [ {"eventType":"alert-created"}, {"eventType":"alert-resolved"} ] "#;
        assert_eq!(decode_body(array).unwrap().len(), 2);
        let ndjson = b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-resolved\"}\n\n";
        assert_eq!(decode_body(ndjson).unwrap().len(), 2);
        let pretty = b"{\n  \"eventType\": \"alert-created\"\n}\n";
        assert_eq!(decode_body(pretty).unwrap().len(), 1);
    }

    #[test]
    fn errors_name_event_line_column_and_field() {
        let ndjson = b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-created\",\"summary\":5}\n";
        let err = decode_body(ndjson).unwrap_err();
        assert_eq!(err.event, Some(2));
        assert_eq!(err.line, 2);
        assert_eq!(err.field.as_deref(), Some("summary"));
        assert!(err.to_string().starts_with("event 2 at line 2, column "), "{err}");

        let missing = b"[{\"eventType\":\"alert-created\"},\n  {\"id\":\"7\"}]";
        let err = decode_body(missing).unwrap_err();
        assert_eq!((err.event, err.line), (Some(2), 2));
        assert!(err.message.contains("eventType"), "{err}");

        let broken = b"{\"eventType\":\"alert-created\"}\n{\"eventType\": }\n";
        let err = decode_body(broken).unwrap_err();
        assert_eq!((err.event, err.line), (None, 2));

        let not_object = b"[\"hello\"]";
        let err = decode_body(not_object).unwrap_err();
        assert_eq!(err.event, Some(1));

        assert!(decode_body(b"  \n").is_err());
    }

    #[test]
    fn nested_field_paths_are_named() {
        let err = decode_body(br#"{"eventType":"alert-created","alertSource":{"name":3}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("alertSource.name"));
    }
}
