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

pub mod config;
pub mod policy;
#[cfg(test)]
mod tests;

pub use config::{RetryConfig, RetryOn};
pub use policy::{parse_retry_after, AttemptResult, RetryPolicy, Verdict};
