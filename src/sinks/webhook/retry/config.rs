//! The `retry` table of a webhook sink, as users write it: [`RetryConfig`] and its
//! defaults, [`RetryOn`] (which statuses are retried) and validation. The checked
//! [`RetryPolicy`] is built from it by [`RetryConfig::policy`].

use std::fmt;

use http::StatusCode;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::policy::RetryPolicy;

/// `retry` table of a webhook sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Most attempts per event, the first included; 1 = no retries. Default: 8.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Stop retrying once this many seconds have passed since the first attempt (no retry
    /// is started whose wait would end later). Default: 600 (10 min).
    #[serde(default = "default_max_elapsed_secs")]
    pub max_elapsed_secs: f64,
    /// Backoff before the first retry, doubled each retry (full jitter: the actual wait is
    /// random between 0 and that). Default: 0.5.
    #[serde(default = "default_initial_backoff_secs")]
    pub initial_backoff_secs: f64,
    /// Upper bound of one backoff. Default: 60.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: f64,
    /// Longest `Retry-After` honoured; longer ones are clamped to this. Default: 300.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: f64,
    /// Which HTTP statuses are retried: `"default"` (408, 429, and 5xx except 501),
    /// `"none"`, `"all"` (every 4xx and 5xx), or a list like `[429, 503]`. Network errors
    /// and timeouts are always retried. A redirect (3xx) is never retried nor followed, so
    /// a list must not name one. Default: `"default"`.
    #[serde(default)]
    pub on_status: RetryOn,
}

fn default_attempts() -> u32 {
    8
}
fn default_max_elapsed_secs() -> f64 {
    600.0
}
fn default_initial_backoff_secs() -> f64 {
    0.5
}
fn default_max_backoff_secs() -> f64 {
    60.0
}
fn default_max_retry_after_secs() -> f64 {
    300.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            max_elapsed_secs: default_max_elapsed_secs(),
            initial_backoff_secs: default_initial_backoff_secs(),
            max_backoff_secs: default_max_backoff_secs(),
            max_retry_after_secs: default_max_retry_after_secs(),
            on_status: RetryOn::default(),
        }
    }
}

impl RetryConfig {
    /// What is allowed but likely a mistake: a first backoff longer than
    /// `max_elapsed_secs` (a retry whose wait would end later is not started).
    /// `(field, message)` pairs as [`RetryConfig::validate`] returns.
    pub fn warnings(&self) -> Vec<(&'static str, String)> {
        let mut warnings = Vec::new();
        if self.attempts > 1 && self.initial_backoff_secs > self.max_elapsed_secs {
            warnings.push((
                "retry.initial_backoff_secs",
                format!(
                    "exceeds `max_elapsed_secs` ({} > {}): a retry starts only when its random wait happens to end \
                     within `max_elapsed_secs`, so events get fewer retries than `attempts` says",
                    self.initial_backoff_secs, self.max_elapsed_secs
                ),
            ));
        }
        warnings
    }

    /// Checks values: `attempts` ≥ 1, every duration finite and ≥ 0,
    /// `initial_backoff_secs` ≤ `max_backoff_secs`, listed statuses in 100..=599 and not
    /// redirects (3xx, which are never retried).
    /// Returns `(field, message)` pairs, the field as a dotted path from the sink
    /// (`retry.attempts`), ready for a `FieldError`; empty when all is well.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.attempts == 0 {
            errors.push(("retry.attempts", "must be at least 1 (1 = no retries)".to_string()));
        }
        let durations = [
            ("retry.max_elapsed_secs", self.max_elapsed_secs),
            ("retry.initial_backoff_secs", self.initial_backoff_secs),
            ("retry.max_backoff_secs", self.max_backoff_secs),
            ("retry.max_retry_after_secs", self.max_retry_after_secs),
        ];
        for (field, value) in durations {
            if !(value.is_finite() && value >= 0.0) {
                errors.push((field, format!("must be a finite number of seconds, 0 or more (got {value})")));
            }
        }
        if self.initial_backoff_secs > self.max_backoff_secs {
            errors.push((
                "retry.initial_backoff_secs",
                format!(
                    "must not exceed `max_backoff_secs` ({} > {})",
                    self.initial_backoff_secs, self.max_backoff_secs
                ),
            ));
        }
        if let RetryOn::Statuses(codes) = &self.on_status {
            for &code in codes {
                if let Err(message) = check_status(i64::from(code)) {
                    errors.push(("retry.on_status", message));
                } else if (300..400).contains(&code) {
                    errors.push((
                        "retry.on_status",
                        format!(
                            "{code} is a redirect: redirects are never retried nor followed (they could carry \
                             credentials elsewhere); the event goes to the dead letters naming the Location"
                        ),
                    ));
                }
            }
        }
        errors
    }

    /// The policy these settings describe. Call [`RetryConfig::validate`] first: out of
    /// range values are not rejected here but saturated (negative or NaN → 0, too large →
    /// the longest `Duration`), so this never panics.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy::from_config(self)
    }
}

/// Which statuses are retried. Deserializes from the strings `"default"` | `"none"` |
/// `"all"` or a list of status codes (each in 100..=599, else an error naming the value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RetryOn {
    /// 408 Request Timeout, 429 Too Many Requests, and 5xx except 501 Not Implemented.
    #[default]
    Default,
    /// No status is retried (network errors and timeouts still are).
    None,
    /// Every 4xx and 5xx status (a 3xx never: see [`RetryOn::retries`]).
    All,
    /// Exactly these statuses.
    Statuses(Vec<u16>),
}

impl RetryOn {
    /// Whether `status` is retried under this setting. A 2xx never is, and neither is a
    /// 3xx, whatever the setting: a redirect is not followed, and asking again gets the
    /// same answer. (`"all"` used to retry 3xx until attempts ran out.)
    pub fn retries(&self, status: StatusCode) -> bool {
        if status.is_success() || status.is_redirection() {
            return false;
        }
        match self {
            RetryOn::Default => {
                status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
            }
            RetryOn::None => false,
            RetryOn::All => true,
            RetryOn::Statuses(codes) => codes.contains(&status.as_u16()),
        }
    }
}

/// Written by hand, as the serde impls are: a keyword or a list of status codes.
impl schemars::JsonSchema for RetryOn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryOn".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Statuses retried: \"default\" (408, 429, 5xx except 501), \"none\", \"all\" (every 4xx and 5xx), or a list of status codes.",
            "oneOf": [
                { "type": "string", "enum": ["default", "none", "all"] },
                { "type": "array", "items": { "type": "integer", "minimum": 100, "maximum": 599 } }
            ]
        })
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::Default => serializer.serialize_str("default"),
            RetryOn::None => serializer.serialize_str("none"),
            RetryOn::All => serializer.serialize_str("all"),
            RetryOn::Statuses(codes) => {
                let mut seq = serializer.serialize_seq(Some(codes.len()))?;
                for code in codes {
                    seq.serialize_element(code)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetryOnVisitor;

        impl<'de> Visitor<'de> for RetryOnVisitor {
            type Value = RetryOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""default", "none", "all", or a list of HTTP status codes"#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RetryOn, E> {
                match value {
                    "default" => Ok(RetryOn::Default),
                    "none" => Ok(RetryOn::None),
                    "all" => Ok(RetryOn::All),
                    other => Err(E::custom(format!(
                        r#"unknown value `{other}`: expected "default", "none", "all", or a list of HTTP status codes like [429, 503]"#
                    ))),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RetryOn, A::Error> {
                let mut codes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(code) = seq.next_element::<i64>()? {
                    check_status(code).map_err(de::Error::custom)?;
                    codes.push(code as u16);
                }
                Ok(RetryOn::Statuses(codes))
            }
        }

        deserializer.deserialize_any(RetryOnVisitor)
    }
}

/// A status code in a list must be a real one.
fn check_status(code: i64) -> Result<(), String> {
    if (100..=599).contains(&code) {
        Ok(())
    } else {
        Err(format!("{code} is not an HTTP status code (expected 100..=599)"))
    }
}
