//! The `mapped` codec (being written).

use serde::{Deserialize, Serialize};

use super::DecodeError;
use crate::component::FieldError;
use crate::event::IncidentEvent;

/// The field mapping of the `mapped` codec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {}

/// Maps arbitrary JSON objects onto incident events.
#[derive(Debug, Clone)]
pub struct MappingDecoder {}

impl MappingDecoder {
    /// Checks the mapping.
    pub fn new(_config: &MappingConfig) -> Result<Self, Vec<FieldError>> {
        Ok(MappingDecoder {})
    }

    /// Maps one JSON object.
    pub fn decode(&self, _text: &str) -> Result<IncidentEvent, DecodeError> {
        Err(DecodeError::at(1, 1, "the mapped codec is not written yet"))
    }
}
