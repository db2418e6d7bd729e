//! The `webhook` sink's retry policy: plain data and pure functions. After each attempt
//! the sink's delivery loop asks [`RetryPolicy::verdict`] what to do and does the
//! sleeping itself; nothing here does I/O or waits.
//!
//! # Rules
//!
//! - A 2xx answer is [`Verdict::Delivered`].
//! - A status that `on_status` does not retry (by default every 4xx but 408 and 429, and
//!   501) ends the event at once: [`Verdict::GiveUp`] with `retryable: false`, so it goes
//!   to the dead letters with the answer's status and excerpt.
//! - A retried status, a network error or a timeout is retried until `attempts` attempts
//!   have been made or the next wait would end past `max_elapsed_secs` after the first
//!   attempt started; then [`Verdict::GiveUp`] with `retryable: true`.
//! - The wait before retry *n* (attempt *n + 1*) is the answer's `Retry-After` when it
//!   has a usable one (clamped to `max_retry_after_secs`), else a uniformly random time
//!   in `[0, min(max_backoff_secs, initial_backoff_secs × 2^(n-1))]` ("full jitter").
//!
//! With the defaults the backoff ceilings are 0.5, 1, 2, 4, 8, 16 and 32 s for the 7
//! retries, 63.5 s at most in all; `max_elapsed_secs` (10 min) comes into play with
//! long `Retry-After`s, slow endpoints (each attempt may take the whole request timeout)
//! or raised `attempts`.
//!
//! # Compared with Vector and Alertmanager
//!
//! - Vector's `http` sink (`request.*`): `retry_attempts` defaults to `isize::MAX`, in
//!   effect unlimited; the first wait is `retry_initial_backoff_secs` = 1 s, later ones
//!   follow the Fibonacci sequence up to `retry_max_duration_secs` = 30 s (the longest
//!   single wait, not a total), with full jitter (`retry_jitter_mode = "Full"`). It
//!   retries transport errors, 429 and 5xx except 501 — not 408 (vector#15498) — and the
//!   list cannot be changed (vector#6420, #10870). It does not read `Retry-After`
//!   (vector#4724).
//! - Alertmanager's webhook notifier retries transport errors and every 5xx (501
//!   included); any other status, 408 and 429 too, is an "unrecoverable error". Its waits
//!   are `cenkalti/backoff`'s exponential defaults (0.5 s, ×1.5, ±50 % jitter, at most
//!   60 s) with no attempt or time limit of their own: retrying stops only when the
//!   group's flush context ends (`group_interval`), and the alerts are sent again at the
//!   next flush. Its `http_config` has no retry settings, and it ignores `Retry-After`.
//!
//! Ours waits like they do (doubling from 0.5 s, full jitter, at most 60 s) but is bounded
//! by default, 8 attempts and 10 minutes, so that nothing retries forever and an event
//! that cannot get through ends in the dead letters, where it can be seen and replayed.
//! It honours `Retry-After` (users asked for it; a rate-limited endpoint says when to
//! come back), retries 408 (a timeout, as our own timeouts are), and the statuses retried
//! are configurable.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Largest exponent used in `initial × 2^(attempt-1)`: 2^64 times even a nanosecond is
/// centuries, so the ceiling has long reached `max_backoff` by then.
const MAX_BACKOFF_EXPONENT: u32 = 64;

/// `retry` table of a webhook sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// `"none"`, `"all"` (every non-2xx), or a list like `[429, 503]`. Network errors and
    /// timeouts are always retried. Default: `"default"`.
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
    /// Checks values: `attempts` ≥ 1, every duration finite and ≥ 0,
    /// `initial_backoff_secs` ≤ `max_backoff_secs`, listed statuses in 100..=599.
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
                }
            }
        }
        errors
    }

    /// The policy these settings describe. Call [`RetryConfig::validate`] first: out of
    /// range values are not rejected here but saturated (negative or NaN → 0, too large →
    /// the longest `Duration`), so this never panics.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(1),
            max_elapsed: secs_to_duration(self.max_elapsed_secs),
            initial_backoff: secs_to_duration(self.initial_backoff_secs),
            max_backoff: secs_to_duration(self.max_backoff_secs),
            max_retry_after: secs_to_duration(self.max_retry_after_secs),
            on_status: self.on_status.clone(),
            rng: Mutex::new(fastrand::Rng::new()),
        }
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
    /// Every non-2xx status.
    All,
    /// Exactly these statuses.
    Statuses(Vec<u16>),
}

impl RetryOn {
    /// Whether `status` is retried under this setting; a 2xx never is.
    pub fn retries(&self, status: StatusCode) -> bool {
        if status.is_success() {
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

/// The checked policy the sink consults. Cheap to share: `verdict` takes `&self` (the
/// jitter generator sits behind a mutex), so one policy can serve every delivery task.
pub struct RetryPolicy {
    attempts: u32,
    max_elapsed: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    on_status: RetryOn,
    rng: Mutex<fastrand::Rng>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("on_status", &self.on_status)
            .finish_non_exhaustive()
    }
}

/// A clone gets its own generator, forked from this one (so a seeded policy's clones are
/// deterministic too).
impl Clone for RetryPolicy {
    fn clone(&self) -> Self {
        RetryPolicy {
            attempts: self.attempts,
            max_elapsed: self.max_elapsed,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            max_retry_after: self.max_retry_after,
            on_status: self.on_status.clone(),
            rng: Mutex::new(self.lock_rng().fork()),
        }
    }
}

/// The default settings' policy.
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryConfig::default().policy()
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Delivered (2xx).
    Delivered,
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop: the event goes to the dead letters with this reason.
    GiveUp {
        /// Why, for people: the last problem and, when retries ran out, how many.
        reason: String,
        /// Status of the last answer; `None` when the last attempt got none.
        last_status: Option<u16>,
        /// `false` for a status that is not retried (e.g. 404), `true` when attempts or
        /// time ran out on a problem that is.
        retryable: bool,
    },
}

/// What the attempt produced, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult<'a> {
    /// An HTTP answer.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its `Retry-After` header, if any.
        retry_after: Option<&'a HeaderValue>,
        /// The start of its body (see `DeliveryResponse::excerpt`).
        excerpt: &'a str,
    },
    /// No answer: the error's text (a `DeliveryError` shown with `Display`).
    Error(&'a str),
}

impl RetryPolicy {
    /// Makes the jitter deterministic: the same seed gives the same waits.
    pub fn with_rng_seed(self, seed: u64) -> Self {
        RetryPolicy { rng: Mutex::new(fastrand::Rng::with_seed(seed)), ..self }
    }

    /// Most attempts per event, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long after the first attempt retrying may go on.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// What to do after attempt number `attempt` (1 for the first) ended with `result`.
    /// `elapsed` is the time since the first attempt started; `now` is wall-clock time,
    /// used only to read a `Retry-After` given as an HTTP date.
    pub fn verdict(&self, result: AttemptResult<'_>, attempt: u32, elapsed: Duration, now: SystemTime) -> Verdict {
        let (problem, last_status, retry_after) = match result {
            AttemptResult::Response { status, retry_after, excerpt } => {
                if status.is_success() {
                    return Verdict::Delivered;
                }
                let problem = describe_status(status, excerpt);
                if !self.retries_status(status) {
                    return Verdict::GiveUp { reason: problem, last_status: Some(status.as_u16()), retryable: false };
                }
                let retry_after = retry_after.and_then(|value| parse_retry_after(value, now));
                (problem, Some(status.as_u16()), retry_after)
            }
            AttemptResult::Error(text) => (text.to_string(), None, None),
        };

        if attempt >= self.attempts {
            return Verdict::GiveUp {
                reason: format!("gave up after {}: {problem}", plural_attempts(attempt)),
                last_status,
                retryable: true,
            };
        }
        let delay = match retry_after {
            Some(wait) => wait.min(self.max_retry_after),
            None => self.backoff(attempt),
        };
        if elapsed.saturating_add(delay) > self.max_elapsed {
            return Verdict::GiveUp {
                reason: format!("gave up after {elapsed:.1?} ({}): {problem}", plural_attempts(attempt)),
                last_status,
                retryable: true,
            };
        }
        Verdict::RetryAfter(delay)
    }

    /// Whether a status is retried under this policy (a 2xx never is).
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.on_status.retries(status)
    }

    /// The longest backoff after attempt `attempt` failed:
    /// `min(max_backoff, initial_backoff × 2^(attempt-1))`. Never decreases as `attempt`
    /// grows.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(MAX_BACKOFF_EXPONENT);
        let secs = self.initial_backoff.as_secs_f64() * 2f64.powi(exponent as i32);
        secs_to_duration(secs).min(self.max_backoff)
    }

    /// A random backoff after attempt `attempt` failed, in `[0, backoff_ceiling(attempt)]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let fraction = self.lock_rng().f64_inclusive();
        secs_to_duration(ceiling.as_secs_f64() * fraction).min(ceiling)
    }

    fn lock_rng(&self) -> std::sync::MutexGuard<'_, fastrand::Rng> {
        // Nothing can panic while the lock is held; a poisoned lock is still usable.
        self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to
/// `now`. `None` if unparsable; a date in the past gives zero.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: more than u64 seconds is "very long", and gets clamped anyway.
        return Some(text.parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::MAX));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `HTTP 404 Not Found: <excerpt>`, the excerpt left out when empty.
fn describe_status(status: StatusCode, excerpt: &str) -> String {
    let mut text = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        text.push(' ');
        text.push_str(reason);
    }
    if !excerpt.is_empty() {
        text.push_str(": ");
        text.push_str(excerpt);
    }
    text
}

fn plural_attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".to_string()
    } else {
        format!("{n} attempts")
    }
}

/// Seconds to a `Duration`, saturating: NaN or negative → 0, too large → `Duration::MAX`.
fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::ZERO;

    fn now() -> SystemTime {
        // A whole second, so HTTP dates (second precision) round-trip exactly.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn response(status: u16) -> AttemptResult<'static> {
        AttemptResult::Response { status: StatusCode::from_u16(status).unwrap(), retry_after: None, excerpt: "" }
    }

    fn with_retry_after(status: u16, value: &HeaderValue) -> AttemptResult<'_> {
        AttemptResult::Response { status: StatusCode::from_u16(status).unwrap(), retry_after: Some(value), excerpt: "" }
    }

    fn policy() -> RetryPolicy {
        RetryConfig::default().policy().with_rng_seed(7)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    // ---- config ----

    #[test]
    fn default_matches_the_file_defaults() {
        let from_json: RetryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(from_json, RetryConfig::default());
        let from_toml: RetryConfig = toml::from_str("").unwrap();
        assert_eq!(from_toml, RetryConfig::default());
        let d = RetryConfig::default();
        assert_eq!(d.attempts, 8);
        assert_eq!(d.max_elapsed_secs, 600.0);
        assert_eq!(d.initial_backoff_secs, 0.5);
        assert_eq!(d.max_backoff_secs, 60.0);
        assert_eq!(d.max_retry_after_secs, 300.0);
        assert_eq!(d.on_status, RetryOn::Default);
        assert!(d.validate().is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = toml::from_str::<RetryConfig>("max_attempts = 3").unwrap_err();
        assert!(error.to_string().contains("max_attempts"), "{error}");
    }

    #[test]
    fn config_round_trips() {
        for on_status in [RetryOn::Default, RetryOn::None, RetryOn::All, RetryOn::Statuses(vec![429, 503])] {
            let config = RetryConfig { attempts: 3, on_status, ..Default::default() };
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<RetryConfig>(&json).unwrap(), config);
            let toml_text = toml::to_string(&config).unwrap();
            assert_eq!(toml::from_str::<RetryConfig>(&toml_text).unwrap(), config);
        }
    }

    #[test]
    fn on_status_from_toml() {
        let parse = |text: &str| toml::from_str::<RetryConfig>(text).map(|c| c.on_status);
        assert_eq!(parse(r#"on_status = "default""#).unwrap(), RetryOn::Default);
        assert_eq!(parse(r#"on_status = "none""#).unwrap(), RetryOn::None);
        assert_eq!(parse(r#"on_status = "all""#).unwrap(), RetryOn::All);
        assert_eq!(parse("on_status = [429, 503]").unwrap(), RetryOn::Statuses(vec![429, 503]));
        assert_eq!(parse("on_status = []").unwrap(), RetryOn::Statuses(vec![]));
        for (text, named) in [
            ("on_status = [700]", "700"),
            ("on_status = [429, 99]", "99"),
            ("on_status = [-1]", "-1"),
            (r#"on_status = "sometimes""#, "sometimes"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        assert!(parse("on_status = 429").is_err());
        assert!(parse(r#"on_status = ["429"]"#).is_err());
    }

    #[test]
    fn on_status_from_json() {
        let parse = |v: serde_json::Value| serde_json::from_value::<RetryOn>(v);
        assert_eq!(parse(serde_json::json!("all")).unwrap(), RetryOn::All);
        assert_eq!(parse(serde_json::json!([408])).unwrap(), RetryOn::Statuses(vec![408]));
        let error = parse(serde_json::json!([600])).unwrap_err().to_string();
        assert!(error.contains("600"), "{error}");
        assert_eq!(serde_json::to_value(RetryOn::Statuses(vec![429])).unwrap(), serde_json::json!([429]));
        assert_eq!(serde_json::to_value(RetryOn::None).unwrap(), serde_json::json!("none"));
    }

    #[test]
    fn validate_reports_each_problem() {
        let config = RetryConfig {
            attempts: 0,
            max_elapsed_secs: f64::INFINITY,
            initial_backoff_secs: 90.0,
            max_backoff_secs: 60.0,
            max_retry_after_secs: -1.0,
            on_status: RetryOn::Statuses(vec![429, 700]),
        };
        let fields: Vec<&str> = config.validate().iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            [
                "retry.attempts",
                "retry.max_elapsed_secs",
                "retry.max_retry_after_secs",
                "retry.initial_backoff_secs",
                "retry.on_status",
            ]
        );
        let nan = RetryConfig { initial_backoff_secs: f64::NAN, ..Default::default() };
        assert_eq!(nan.validate().len(), 1, "{:?}", nan.validate());
        let zeros = RetryConfig {
            attempts: 1,
            max_elapsed_secs: 0.0,
            initial_backoff_secs: 0.0,
            max_backoff_secs: 0.0,
            max_retry_after_secs: 0.0,
            on_status: RetryOn::None,
        };
        assert!(zeros.validate().is_empty());
    }

    #[test]
    fn policy_of_bad_values_does_not_panic() {
        let config = RetryConfig {
            attempts: 0,
            max_elapsed_secs: f64::NAN,
            initial_backoff_secs: 1e300,
            max_backoff_secs: f64::INFINITY,
            max_retry_after_secs: -5.0,
            on_status: RetryOn::Default,
        };
        let policy = config.policy().with_rng_seed(1);
        assert_eq!(policy.attempts(), 1);
        assert_eq!(policy.max_elapsed(), Duration::ZERO);
        assert_eq!(policy.backoff_ceiling(u32::MAX), Duration::MAX);
        let _ = policy.verdict(response(503), 1, T0, now());
    }

    // ---- statuses ----

    #[test]
    fn default_statuses() {
        let p = policy();
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(p.retries_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 204, 301, 400, 401, 403, 404, 409, 422, 501] {
            assert!(!p.retries_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn each_retry_on_form() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert!(!RetryOn::None.retries(s(503)));
        assert!(!RetryOn::None.retries(s(429)));
        assert!(RetryOn::All.retries(s(404)));
        assert!(RetryOn::All.retries(s(501)));
        assert!(RetryOn::All.retries(s(302)));
        assert!(!RetryOn::All.retries(s(200)));
        let list = RetryOn::Statuses(vec![429, 503, 200]);
        assert!(list.retries(s(429)));
        assert!(list.retries(s(503)));
        assert!(!list.retries(s(500)));
        assert!(!list.retries(s(200)), "a 2xx is never retried");
    }

    // ---- verdicts ----

    #[test]
    fn success_is_delivered() {
        let p = policy();
        assert_eq!(p.verdict(response(200), 1, T0, now()), Verdict::Delivered);
        assert_eq!(p.verdict(response(204), 8, T0, now()), Verdict::Delivered);
        // Even with no attempts or time left.
        assert_eq!(p.verdict(response(202), 99, Duration::from_secs(9999), now()), Verdict::Delivered);
    }

    #[test]
    fn a_status_not_retried_gives_up_at_once() {
        let p = policy();
        let result =
            AttemptResult::Response { status: StatusCode::NOT_FOUND, retry_after: None, excerpt: "no such hook" };
        assert_eq!(
            p.verdict(result, 1, T0, now()),
            Verdict::GiveUp {
                reason: "HTTP 404 Not Found: no such hook".into(),
                last_status: Some(404),
                retryable: false,
            }
        );
        assert_eq!(
            p.verdict(response(501), 1, T0, now()),
            Verdict::GiveUp { reason: "HTTP 501 Not Implemented".into(), last_status: Some(501), retryable: false }
        );
        let none = RetryConfig { on_status: RetryOn::None, ..Default::default() }.policy();
        assert!(matches!(
            none.verdict(response(503), 1, T0, now()),
            Verdict::GiveUp { retryable: false, last_status: Some(503), .. }
        ));
    }

    #[test]
    fn unknown_status_has_no_reason_phrase() {
        let p = RetryConfig { on_status: RetryOn::None, ..Default::default() }.policy();
        let result =
            AttemptResult::Response { status: StatusCode::from_u16(599).unwrap(), retry_after: None, excerpt: "x" };
        assert!(matches!(
            p.verdict(result, 1, T0, now()),
            Verdict::GiveUp { reason, .. } if reason == "HTTP 599: x"
        ));
    }

    #[test]
    fn retryable_status_and_errors_are_retried() {
        let p = policy();
        for result in [
            response(503),
            response(429),
            response(408),
            AttemptResult::Error("connection refused"),
            AttemptResult::Error("no answer within 30s"),
        ] {
            match p.verdict(result, 1, T0, now()) {
                Verdict::RetryAfter(d) => assert!(d <= secs(0.5), "{d:?}"),
                other => panic!("{result:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn attempts_run_out() {
        let p = policy();
        let result =
            AttemptResult::Response { status: StatusCode::SERVICE_UNAVAILABLE, retry_after: None, excerpt: "down" };
        assert!(matches!(p.verdict(result, 7, T0, now()), Verdict::RetryAfter(_)));
        assert_eq!(
            p.verdict(result, 8, T0, now()),
            Verdict::GiveUp {
                reason: "gave up after 8 attempts: HTTP 503 Service Unavailable: down".into(),
                last_status: Some(503),
                retryable: true,
            }
        );
        assert_eq!(
            p.verdict(AttemptResult::Error("connection reset"), 8, T0, now()),
            Verdict::GiveUp {
                reason: "gave up after 8 attempts: connection reset".into(),
                last_status: None,
                retryable: true,
            }
        );
        let once = RetryConfig { attempts: 1, ..Default::default() }.policy();
        assert_eq!(
            once.verdict(AttemptResult::Error("timeout"), 1, T0, now()),
            Verdict::GiveUp { reason: "gave up after 1 attempt: timeout".into(), last_status: None, retryable: true }
        );
    }

    #[test]
    fn time_runs_out() {
        let p = policy();
        let elapsed = Duration::from_millis(599_900);
        // A Retry-After of 1 s would end past the 600 s budget.
        let one = HeaderValue::from_static("1");
        assert_eq!(
            p.verdict(with_retry_after(503, &one), 3, elapsed, now()),
            Verdict::GiveUp {
                reason: "gave up after 599.9s (3 attempts): HTTP 503 Service Unavailable".into(),
                last_status: Some(503),
                retryable: true,
            }
        );
        // Already past the budget: any wait ends too late.
        assert!(matches!(
            p.verdict(AttemptResult::Error("refused"), 2, Duration::from_secs(601), now()),
            Verdict::GiveUp { retryable: true, last_status: None, reason }
                if reason == "gave up after 601.0s (2 attempts): refused"
        ));
        // Exactly at the budget is still fine.
        let zero = HeaderValue::from_static("0");
        assert_eq!(
            p.verdict(with_retry_after(429, &zero), 2, Duration::from_secs(600), now()),
            Verdict::RetryAfter(Duration::ZERO)
        );
    }

    // ---- Retry-After ----

    #[test]
    fn retry_after_seconds_is_used() {
        let p = policy();
        let value = HeaderValue::from_static("120");
        assert_eq!(
            p.verdict(with_retry_after(429, &value), 1, T0, now()),
            Verdict::RetryAfter(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_is_clamped() {
        let p = policy();
        let value = HeaderValue::from_static("3600");
        assert_eq!(
            p.verdict(with_retry_after(503, &value), 1, T0, now()),
            Verdict::RetryAfter(Duration::from_secs(300))
        );
        let huge = HeaderValue::from_static("99999999999999999999999");
        assert_eq!(
            p.verdict(with_retry_after(503, &huge), 1, T0, now()),
            Verdict::RetryAfter(Duration::from_secs(300))
        );
    }

    #[test]
    fn retry_after_http_date() {
        let p = policy();
        let future = HeaderValue::from_str(&httpdate::fmt_http_date(now() + Duration::from_secs(90))).unwrap();
        assert_eq!(
            p.verdict(with_retry_after(503, &future), 1, T0, now()),
            Verdict::RetryAfter(Duration::from_secs(90))
        );
        let past = HeaderValue::from_str(&httpdate::fmt_http_date(now() - Duration::from_secs(90))).unwrap();
        assert_eq!(p.verdict(with_retry_after(503, &past), 1, T0, now()), Verdict::RetryAfter(Duration::ZERO));
    }

    #[test]
    fn garbage_retry_after_falls_back_to_backoff() {
        let p = policy();
        let value = HeaderValue::from_static("soon");
        match p.verdict(with_retry_after(503, &value), 3, T0, now()) {
            Verdict::RetryAfter(d) => assert!(d <= secs(2.0), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_ignored_for_status_not_retried() {
        let p = policy();
        let value = HeaderValue::from_static("5");
        assert!(matches!(
            p.verdict(with_retry_after(400, &value), 1, T0, now()),
            Verdict::GiveUp { retryable: false, .. }
        ));
    }

    #[test]
    fn parse_retry_after_forms() {
        let parse = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now());
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse("99999999999999999999999"), Some(Duration::MAX));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(45));
        assert_eq!(parse(&date), Some(Duration::from_secs(45)));
        // Obsolete RFC 850 form, also accepted by RFC 9110 recipients.
        assert_eq!(parse("Tuesday, 14-Nov-23 22:14:05 GMT"), Some(Duration::from_secs(1_700_000_045 - 1_700_000_000)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        for garbage in ["", "soon", "-5", "1.5", "5s", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse(garbage), None, "{garbage:?}");
        }
        let not_text = HeaderValue::from_bytes(b"\xff12").unwrap();
        assert_eq!(parse_retry_after(&not_text, now()), None);
    }

    // ---- backoff ----

    #[test]
    fn backoff_ceilings_double_up_to_the_cap() {
        let p = policy();
        let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0];
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(p.backoff_ceiling(i as u32 + 1), secs(*want), "attempt {}", i + 1);
        }
        let mut previous = Duration::ZERO;
        for attempt in (0..200).chain([1000, u32::MAX - 1, u32::MAX]) {
            let ceiling = p.backoff_ceiling(attempt);
            assert!(ceiling >= previous, "attempt {attempt}");
            assert!(ceiling <= Duration::from_secs(60), "attempt {attempt}");
            previous = ceiling;
        }
        // Attempt 0 is treated as the first.
        assert_eq!(p.backoff_ceiling(0), secs(0.5));
    }

    #[test]
    fn tiny_initial_backoff_still_reaches_the_cap() {
        let p = RetryConfig { initial_backoff_secs: 1e-9, max_backoff_secs: 3600.0, ..Default::default() }.policy();
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let config = RetryConfig { attempts: u32::MAX, max_elapsed_secs: 1e9, ..Default::default() };
        let p = config.policy().with_rng_seed(42);
        for attempt in 1..=12 {
            let ceiling = p.backoff_ceiling(attempt);
            let delays: Vec<Duration> = (0..500)
                .map(|_| match p.verdict(AttemptResult::Error("e"), attempt, T0, now()) {
                    Verdict::RetryAfter(d) => d,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: the waits cover the range, low and high.
            assert!(delays.iter().any(|d| *d < ceiling / 10), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d > ceiling * 9 / 10), "attempt {attempt}");
        }
    }

    #[test]
    fn a_seed_makes_jitter_deterministic() {
        let waits = |p: &RetryPolicy| -> Vec<Verdict> {
            (1..8).map(|attempt| p.verdict(AttemptResult::Error("e"), attempt, T0, now())).collect()
        };
        let a = RetryConfig::default().policy().with_rng_seed(9);
        let b = RetryConfig::default().policy().with_rng_seed(9);
        let c = RetryConfig::default().policy().with_rng_seed(10);
        let (wa, wb, wc) = (waits(&a), waits(&b), waits(&c));
        assert_eq!(wa, wb);
        assert_ne!(wa, wc);
        // Clones of equal policies fork equally.
        let (ca, cb) = (a.clone(), b.clone());
        assert_eq!(waits(&ca), waits(&cb));
    }

    #[test]
    fn zero_backoff_retries_immediately() {
        let p = RetryConfig { initial_backoff_secs: 0.0, max_backoff_secs: 0.0, ..Default::default() }.policy();
        assert_eq!(p.verdict(response(500), 1, T0, now()), Verdict::RetryAfter(Duration::ZERO));
    }

    #[test]
    fn policy_is_shareable_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RetryPolicy>();
        let debug = format!("{:?}", policy());
        assert!(debug.contains("attempts: 8"), "{debug}");
    }
}
