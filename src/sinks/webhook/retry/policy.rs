//! The checked retry policy the sink consults after each attempt: [`RetryPolicy::verdict`]
//! says whether the event is delivered, waits and retries (the answer's `Retry-After`,
//! or a backoff with full jitter), or gives up; [`parse_retry_after`] reads the header.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};

use super::config::{RetryConfig, RetryOn};

/// Largest exponent used in `initial × 2^(attempt-1)`: 2^64 times even a nanosecond is
/// centuries, so the ceiling has long reached `max_backoff` by then.
const MAX_BACKOFF_EXPONENT: u32 = 64;

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
        /// Its `Location`, sanitized (see `DeliveryResponse::location`), for a redirect's
        /// reason.
        location: Option<&'a str>,
    },
    /// No answer: the error's text (a `DeliveryError` shown with `Display`).
    Error(&'a str),
}

impl RetryPolicy {
    /// The policy `config` describes, out of range values saturated (negative or NaN → 0,
    /// too large → the longest `Duration`); see [`RetryConfig::policy`].
    pub(super) fn from_config(config: &RetryConfig) -> Self {
        RetryPolicy {
            attempts: config.attempts.max(1),
            max_elapsed: secs_to_duration(config.max_elapsed_secs),
            initial_backoff: secs_to_duration(config.initial_backoff_secs),
            max_backoff: secs_to_duration(config.max_backoff_secs),
            max_retry_after: secs_to_duration(config.max_retry_after_secs),
            on_status: config.on_status.clone(),
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

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
            AttemptResult::Response { status, retry_after, excerpt, location } => {
                if status.is_success() {
                    return Verdict::Delivered;
                }
                if status.is_redirection() {
                    // Whatever `on_status` says: following would send the body (and the
                    // URL's Basic auth, the signed headers…) where no one configured it,
                    // and retrying gets the same answer.
                    return Verdict::GiveUp {
                        reason: describe_redirect(status, location),
                        last_status: Some(status.as_u16()),
                        retryable: false,
                    };
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

    /// Whether a status is retried under this policy (a 2xx or 3xx never is).
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

/// `redirect 301 to https://other.example/x not followed (…)`.
fn describe_redirect(status: StatusCode, location: Option<&str>) -> String {
    let to = match location {
        Some(location) if !location.is_empty() => format!("to {location}"),
        _ => "without a Location".to_string(),
    };
    format!("redirect {} {to} not followed (redirects could carry credentials elsewhere)", status.as_u16())
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
