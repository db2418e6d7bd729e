//! What the host holds of a source once its config is checked.

use super::decode::Decoder;
use crate::component::SourceConfig;

/// A validated source as the host holds it: it builds like any [`SourceConfig`] and can
/// say how it decodes what it receives (the CLI decodes `--event` files the same way).
pub trait ValidatedSource: SourceConfig {
    /// The source's decoder.
    fn decoder(&self) -> &Decoder;
}
