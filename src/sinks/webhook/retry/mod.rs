//! The `webhook` sink's retry policy: plain data and pure functions. After each attempt
//! the sink's delivery loop asks [`RetryPolicy::verdict`] what to do and does the
//! sleeping itself; nothing here does I/O or waits.
//!
//! [`config`] is the user-facing `retry` table ([`RetryConfig`], [`RetryOn`]): fields,
//! defaults, validation. [`policy`] is what the sink consults ([`RetryPolicy`],
//! [`Verdict`]): the verdict after each attempt and the backoff.
//!
//! # Rules
//!
//! - A 2xx answer is [`Verdict::Delivered`].
//! - A 3xx answer (300–399) ends the event at once, whatever `on_status` says:
//!   [`Verdict::GiveUp`] with `retryable: false` and the reason `redirect 301 to
//!   https://other.example/x not followed (redirects could carry credentials elsewhere)`.
//!   Redirects are never followed (the sink's hyper connections have no redirect logic):
//!   following one would send the body, the URL's Basic auth and any secret header to a
//!   host no one configured. A 3xx in an `on_status` list is a config error.
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
//! How this compares with Vector's `http` sink and Alertmanager's webhook notifier is in
//! `docs/delivery.md`.

pub mod config;
pub mod policy;
#[cfg(test)]
mod tests;

pub use config::{RetryConfig, RetryOn};
pub use policy::{parse_retry_after, AttemptResult, RetryPolicy, Verdict};
