//! What users write for the gate: the `circuit` table ([`CircuitConfig`]) and the checks of
//! `request.rate_limit_num` / `request.rate_limit_duration_secs` ([`check_rate_limit`]),
//! whose fields live in the sink's `request` table under Vector's names.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::positive_secs;

/// `circuit` table of a webhook sink: the circuit breaker.
///
/// After `failures` failed attempts in a row (no answer, or a 5xx without `Retry-After`),
/// the sink sends nothing for `cooldown_secs`, then one probe request; an answer closes
/// the circuit, a failure opens it again. Events wait in the buffer meanwhile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Failed attempts in a row that open the circuit; `0` turns the circuit breaker off.
    /// Default: 5.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Seconds the open circuit sends nothing before its probe request. Default: 30.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: f64,
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown_secs() -> f64 {
    30.0
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig { failures: default_failures(), cooldown_secs: default_cooldown_secs() }
    }
}

impl CircuitConfig {
    /// Checks `cooldown_secs` (finite, above 0, at most a year). Returns `(field, message)`
    /// pairs with the field as a dotted path from the sink (`circuit.cooldown_secs`);
    /// empty when all is well.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if positive_secs(self.cooldown_secs, MAX_SECS).is_none() {
            errors.push((
                "circuit.cooldown_secs",
                format!(
                    "must be a number of seconds above 0 and at most {MAX_SECS} (got {}); \
                     `circuit.failures = 0` turns the circuit breaker off",
                    self.cooldown_secs
                ),
            ));
        }
        errors
    }

    /// The cooldown as a `Duration` (call [`CircuitConfig::validate`] first; out of range
    /// values are saturated, never a panic).
    pub fn cooldown(&self) -> Duration {
        secs_to_duration(self.cooldown_secs)
    }
}

/// Longest duration accepted for `circuit.cooldown_secs` and `request.rate_limit_duration_secs`:
/// one year, far past any sensible value, and far from what `Duration` cannot hold.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Checks `request.rate_limit_num` (at least 1 when set) and
/// `request.rate_limit_duration_secs` (finite, above 0, at most a year). Returns
/// `(field, message)` pairs as [`CircuitConfig::validate`] does.
pub fn check_rate_limit(num: Option<u64>, duration_secs: f64) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    if num == Some(0) {
        errors.push((
            "request.rate_limit_num",
            "must be at least 1 (requests per `rate_limit_duration_secs`); leave it out for no limit".to_string(),
        ));
    }
    if positive_secs(duration_secs, MAX_SECS).is_none() {
        errors.push((
            "request.rate_limit_duration_secs",
            format!("must be a number of seconds above 0 and at most {MAX_SECS} (got {duration_secs})"),
        ));
    }
    errors
}

/// Seconds to a `Duration`, saturating: NaN or negative → 0, too large → `Duration::MAX`.
pub(super) fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}
