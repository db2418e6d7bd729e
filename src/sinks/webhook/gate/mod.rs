//! The gate every attempt of a sink passes before it is sent: the endpoint's rate limit, its
//! `Retry-After` pause and the circuit breaker, for the whole sink at once (per attempt, not
//! per event: one request is one attempt, whatever it carries).
//!
//! The sink calls [`Gate::admit`] once it holds a request slot and before it builds the
//! request, and hands the [`Pass`] back with the attempt's result to [`Gate::record`].
//!
//! # Rules
//!
//! - **Rate limit** (`request.rate_limit_num` per `request.rate_limit_duration_secs`):
//!   requests start evenly spaced, `duration / num` apart, with no burst ([`rate_limit`]).
//!   Events wait in the buffer; nothing is dropped.
//! - **Pause**: an answer 429 or 503 with a usable `Retry-After` (seconds or an HTTP date)
//!   holds back every new request of the sink until then, capped at
//!   `retry.max_retry_after_secs` so an endpoint cannot stall a sink for ever. A later
//!   answer can lengthen a pause, never shorten it. Requests already in flight finish.
//! - **Circuit breaker** (`circuit.failures`, `circuit.cooldown_secs`, [`circuit`]): after
//!   `failures` failed attempts in a row (no answer, or a 5xx without `Retry-After`), no
//!   request for the cooldown, then one probe while the others wait; any answer to it
//!   closes the circuit, a failure opens it again. A 429/503 with `Retry-After` is the
//!   pause's job and neither a failure nor a success in the count; any other answer (2xx,
//!   3xx, 4xx) shows the endpoint is up and resets it. `circuit.failures = 0` turns it
//!   off. Each change of state is logged once (warn when it opens, info when it probes and
//!   closes) and `SinkStats::circuit_open` says whether it is open or probing.
//! - **Order**: waiters pass one at a time in the order they came (a FIFO lock), so only
//!   the first waits on a timer and the others do not all wake at each token.
//! - **Budget**: waiting here is not trying. The sink counts an attempt only once it is
//!   let through, and leaves the time spent waiting for a slot and here out of
//!   `retry.max_elapsed_secs` ([`Pass::admitted_at`]).

pub mod circuit;
pub mod config;
pub mod rate_limit;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::circuit::{Admit, Change, Circuit, Outcome, Ticket};
use self::config::secs_to_duration;
pub use self::config::{check_rate_limit, CircuitConfig};
use self::rate_limit::RateLimit;
use super::config::WebhookSinkConfig;
use super::retry::parse_retry_after;
use super::service::{DeliveryError, DeliveryResponse};
use super::target::Target;
use crate::stats::SinkStats;

/// What a gate enforces, from a sink's config.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// At most `.0` requests per `.1`, evenly spaced; `None`: no limit.
    pub rate_limit: Option<(u64, Duration)>,
    /// Open after `.0` failed attempts in a row, for `.1`; `None`: no circuit breaker.
    pub circuit: Option<(u32, Duration)>,
    /// Longest pause a `Retry-After` can impose (`retry.max_retry_after_secs`).
    pub max_pause: Duration,
}

impl GateSettings {
    /// The settings of a sink's (checked) config.
    pub fn of(config: &WebhookSinkConfig) -> GateSettings {
        let request = &config.request;
        GateSettings {
            rate_limit: request
                .rate_limit_num
                .map(|num| (num, secs_to_duration(request.rate_limit_duration_secs))),
            circuit: (config.circuit.failures > 0).then(|| (config.circuit.failures, config.circuit.cooldown())),
            max_pause: secs_to_duration(config.retry.max_retry_after_secs),
        }
    }
}

/// The gate of one sink: shared by all its deliveries.
pub struct Gate {
    sink: String,
    /// The URL as logs show it (password redacted).
    target: String,
    rate: Option<RateLimit>,
    max_pause: Duration,
    cooldown: Duration,
    state: Mutex<GateState>,
    /// Bumped at every change of the circuit, for the attempts waiting on the probe.
    changes: watch::Sender<u64>,
    /// One waiter at a time, in arrival order.
    queue: tokio::sync::Mutex<()>,
    stats: Arc<SinkStats>,
}

struct GateState {
    circuit: Option<Circuit>,
    paused_until: Option<Instant>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("rate", &self.rate)
            .field("max_pause", &self.max_pause)
            .field("circuit", &self.lock().circuit.as_ref().map(Circuit::state))
            .finish_non_exhaustive()
    }
}

/// Leave to send one attempt; give it back to [`Gate::record`] with the result. Dropped
/// without a result (the delivery was cancelled), a probe's place goes to the next attempt.
pub struct Pass<'a> {
    gate: &'a Gate,
    ticket: Option<Ticket>,
    waited: Duration,
    admitted_at: Instant,
}

impl Pass<'_> {
    /// How long the attempt waited at the gate (not for its request slot).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// When it was let through.
    pub fn admitted_at(&self) -> std::time::Instant {
        self.admitted_at.into_std()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.gate.abandon(ticket);
        }
    }
}

/// One step of waiting.
enum Step {
    Go(Option<Ticket>),
    Until(Instant),
    ForProbe,
}

impl Gate {
    /// The gate of sink `sink` sending to `target`; `stats` gets the circuit's state.
    pub fn new(sink: &str, target: &Target, settings: &GateSettings, stats: Arc<SinkStats>) -> Gate {
        stats.circuit_open.store(false, Ordering::Relaxed);
        let cooldown = settings.circuit.map(|(_, cooldown)| cooldown).unwrap_or_default();
        Gate {
            sink: sink.to_string(),
            target: target.to_string(),
            rate: settings.rate_limit.map(|(num, per)| RateLimit::new(num, per)),
            max_pause: settings.max_pause,
            cooldown,
            state: Mutex::new(GateState {
                circuit: settings.circuit.map(|(failures, cooldown)| Circuit::new(failures, cooldown)),
                paused_until: None,
            }),
            changes: watch::channel(0).0,
            queue: tokio::sync::Mutex::new(()),
            stats,
        }
    }

    /// Waits until an attempt may be sent: the circuit lets it through, no pause holds,
    /// and the rate limit has a token for it.
    pub async fn admit(&self) -> Pass<'_> {
        let asked = Instant::now();
        if self.rate.is_none() {
            if let Some(pass) = self.pass_now(asked) {
                return pass;
            }
        }
        // Boxed: the waiting (a lock, timers) would otherwise make every event's future
        // larger, and most attempts never wait.
        Box::pin(self.wait_for_pass(asked)).await
    }

    /// A pass at once, when nothing holds attempts back and there is no rate limit.
    fn pass_now(&self, asked: Instant) -> Option<Pass<'_>> {
        let mut state = self.lock();
        if state.paused_until.is_some_and(|until| until > asked) {
            return None;
        }
        let ticket = match state.circuit.as_mut() {
            None => None,
            // Closed: `admit` changes nothing. Open or probing: the waiting path decides.
            Some(circuit) if !circuit.is_open() => match circuit.admit(asked) {
                (Admit::Go(ticket), _) => Some(ticket),
                _ => return None,
            },
            Some(_) => return None,
        };
        Some(Pass { gate: self, ticket, waited: Duration::ZERO, admitted_at: asked })
    }

    async fn wait_for_pass(&self, asked: Instant) -> Pass<'_> {
        let _turn = self.queue.lock().await;
        loop {
            // Subscribed before the state is read, so a change after it is not missed.
            let mut changes = self.changes.subscribe();
            let (step, change) = {
                let mut state = self.lock();
                let now = Instant::now();
                match (state.paused_until.filter(|until| *until > now), state.circuit.as_mut()) {
                    (Some(until), _) => (Step::Until(until), None),
                    (None, None) => (Step::Go(None), None),
                    (None, Some(circuit)) => match circuit.admit(now) {
                        (Admit::Go(ticket), change) => (Step::Go(Some(ticket)), change),
                        (Admit::WaitUntil(until), change) => (Step::Until(until), change),
                        (Admit::WaitForProbe, change) => (Step::ForProbe, change),
                    },
                }
            };
            if let Some(change) = change {
                self.announce(change, None);
            }
            let ticket = match step {
                Step::Go(ticket) => ticket,
                Step::Until(until) => {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                Step::ForProbe => {
                    let _ = changes.changed().await;
                    continue;
                }
            };
            let mut pass = Pass { gate: self, ticket, waited: Duration::ZERO, admitted_at: asked };
            if let Some(rate) = &self.rate {
                rate.ready().await;
            }
            // While it waited for a token, a pause may have begun or the circuit opened:
            // then the token is spent and the attempt waits again (a probe gives its place
            // up when dropped).
            let now = Instant::now();
            if self.still_admits(ticket, now) {
                pass.admitted_at = now;
                pass.waited = now - asked;
                return pass;
            }
        }
    }

    fn still_admits(&self, ticket: Option<Ticket>, now: Instant) -> bool {
        let state = self.lock();
        let paused = state.paused_until.is_some_and(|until| until > now);
        let circuit = match (&state.circuit, ticket) {
            (Some(circuit), Some(ticket)) => circuit.still_admits(ticket),
            _ => true,
        };
        !paused && circuit
    }

    /// Takes the attempt's result: a `Retry-After` pause, and the circuit's count.
    pub fn record(&self, mut pass: Pass<'_>, result: &Result<DeliveryResponse, DeliveryError>) {
        let ticket = pass.ticket.take();
        drop(pass);
        let now = Instant::now();
        let (outcome, asked_to_wait) = judge(result, SystemTime::now());
        let (paused, change) = {
            let mut state = self.lock();
            let paused = asked_to_wait.and_then(|asked| {
                let wait = asked.min(self.max_pause);
                if wait.is_zero() {
                    return None;
                }
                let until = now + wait;
                let newly = state.paused_until.is_none_or(|current| current <= now);
                if state.paused_until.is_none_or(|current| current < until) {
                    state.paused_until = Some(until);
                }
                newly.then_some((asked, wait))
            });
            let change = match (state.circuit.as_mut(), ticket) {
                (Some(circuit), Some(ticket)) => circuit.record(ticket, outcome, now),
                _ => None,
            };
            (paused, change)
        };
        if let Some((asked, wait)) = paused {
            let status = result.as_ref().map(|r| r.status.as_u16()).ok();
            if asked > wait {
                info!(sink = %self.sink, target = %self.target, status, retry_after = ?asked, pause = ?wait,
                      "the endpoint asked to wait (Retry-After), longer than retry.max_retry_after_secs: \
                       no new request of this sink until the pause ends");
            } else {
                info!(sink = %self.sink, target = %self.target, status, pause = ?wait,
                      "the endpoint asked to wait (Retry-After): no new request of this sink until the pause ends");
            }
        }
        if let Some(change) = change {
            self.announce(change, Some(result));
        }
    }

    /// A pass given up without a result.
    fn abandon(&self, ticket: Ticket) {
        let change = match self.lock().circuit.as_mut() {
            Some(circuit) => circuit.abandon(ticket, Instant::now()),
            None => None,
        };
        if let Some(change) = change {
            self.announce(change, None);
        }
    }

    /// Logs a change of the circuit once, updates the metric and wakes the waiters.
    fn announce(&self, change: Change, result: Option<&Result<DeliveryResponse, DeliveryError>>) {
        let open = !matches!(change, Change::Closed);
        self.stats.circuit_open.store(open, Ordering::Relaxed);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let last_error = result.map(describe).unwrap_or_default();
        let (sink, target, cooldown) = (&self.sink, &self.target, self.cooldown);
        match change {
            Change::Opened { failures } => warn!(
                sink = %sink, target = %target, failures, cooldown = ?cooldown, %last_error,
                "circuit breaker opened: `failures` attempts in a row failed; \
                 no request of this sink until the cooldown ends, then one probe"
            ),
            Change::Probing => info!(sink = %sink, target = %target, "circuit breaker half-open: sending one probe"),
            Change::Reopened => warn!(
                sink = %sink, target = %target, cooldown = ?cooldown, %last_error,
                "circuit breaker probe failed: open again, no request of this sink until the cooldown ends"
            ),
            Change::Closed => {
                info!(sink = %sink, target = %target, "circuit breaker closed: the endpoint answered; requests resume")
            }
            Change::ProbeDropped => {
                debug!(sink = %sink, "circuit breaker probe not sent; the next attempt probes")
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Nothing panics while the lock is held; a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How an attempt counts for the circuit, and the wait its answer asks for (a 429 or 503
/// with a usable `Retry-After`).
fn judge(result: &Result<DeliveryResponse, DeliveryError>, now: SystemTime) -> (Outcome, Option<Duration>) {
    match result {
        Err(_) => (Outcome::Failed, None),
        Ok(response) => {
            let asks_to_wait = matches!(response.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
            let retry_after =
                response.retry_after.as_ref().filter(|_| asks_to_wait).and_then(|value| parse_retry_after(value, now));
            match retry_after {
                Some(wait) => (Outcome::AskedToWait, Some(wait)),
                None if response.status.is_server_error() => (Outcome::Failed, None),
                None => (Outcome::Answered, None),
            }
        }
    }
}

/// The problem of a failed attempt, for the log: `HTTP 503 Service Unavailable` or the
/// error (which never holds the URL's password).
fn describe(result: &Result<DeliveryResponse, DeliveryError>) -> String {
    match result {
        Ok(response) => format!("HTTP {}", response.status),
        Err(error) => error.to_string(),
    }
}
