//! The errors every layer reports config and build problems with: a leaf module (it
//! imports nothing of ours), so config checks anywhere can name the field at fault.

/// `secs` as a `Duration` when it is a number of seconds above 0 and at most `max`, the
/// check every `*_secs` setting with an upper bound makes (NaN, infinite, 0, negative and
/// too large give `None`, so `Duration::from_secs_f64` cannot panic on what passes).
pub fn positive_secs(secs: f64, max: f64) -> Option<std::time::Duration> {
    (secs.is_finite() && secs > 0.0 && secs <= max).then(|| std::time::Duration::from_secs_f64(secs))
}

/// A problem with one field of a component's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if .field.is_empty() { String::new() } else { format!("{}: ", .field) })]
pub struct FieldError {
    /// Dotted path of the field inside the component (empty when the message names it).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config has problems.
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem found.
        errors: Vec<FieldError>,
    },
    /// Something outside the config failed (a CA file, a port already in use, …).
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
    },
}

impl BuildError {
    /// The config has these problems.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        BuildError::Invalid { errors }
    }

    /// Something outside the config failed.
    pub fn other(message: impl Into<String>) -> Self {
        BuildError::Other { message: message.into() }
    }
}

/// Puts `prefix` before each error's field: errors of a nested table (`decoding.mapping`)
/// reported relative to its parent.
pub fn prefixed(prefix: &str, errors: Vec<FieldError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| {
            let field = if e.field.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", e.field) };
            FieldError::new(field, e.message)
        })
        .collect()
}
