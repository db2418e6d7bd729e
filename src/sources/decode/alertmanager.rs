//! The `alertmanager` codec (being written).

use serde::{Deserialize, Serialize};

use super::DecodeError;
use crate::component::FieldError;
use crate::event::IncidentEvent;

/// Options of the `alertmanager` codec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {}

/// Turns Alertmanager webhook payloads into incident events.
#[derive(Debug, Clone)]
pub struct AlertmanagerDecoder {}

impl AlertmanagerDecoder {
    /// Checks the options.
    pub fn new(_config: &AlertmanagerConfig) -> Result<Self, Vec<FieldError>> {
        Ok(AlertmanagerDecoder {})
    }

    /// Decodes one payload into one event per alert.
    pub fn decode(&self, _text: &str) -> Result<Vec<IncidentEvent>, DecodeError> {
        Err(DecodeError::at(1, 1, "the alertmanager codec is not written yet"))
    }
}
