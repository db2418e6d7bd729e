//! The `incident` codec: each value is an incident event as the default payload shows it.

use crate::event::IncidentEvent;

use super::error::DecodeError;

/// Decodes one JSON text into an incident event, naming the field at fault on error.
pub fn decode_incident(text: &str) -> Result<IncidentEvent, DecodeError> {
    // Tracking the path costs on every field; only a failed value needs it, so the value
    // is decoded plainly first and again with the path only to explain an error.
    serde_json::from_str(text).or_else(|_| decode_explained(text))
}

/// Decodes with the path of every field tracked, so an error names the field at fault.
fn decode_explained(text: &str) -> Result<IncidentEvent, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut err = DecodeError::from_json(e.inner());
        err.field = (path != ".").then_some(path);
        err
    })?;
    de.end().map_err(|e| DecodeError::from_json(&e))?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_at_fault() {
        let err = decode_incident(r#"{"eventType":"alert-created","alertSource":{"name":3}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("alertSource.name"));
        let err = decode_incident(r#"{"id":"7"}"#).unwrap_err();
        assert!(err.message.contains("eventType"), "{err}");
        assert!(decode_incident("{\"eventType\":\"alert-created\"} x").is_err());
    }
}
