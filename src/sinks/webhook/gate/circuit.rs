//! The circuit breaker's state machine: plain data, time passed in, no waiting and no
//! logging (the gate does both).
//!
//! ```text
//!            `failures` failed attempts in a row
//!   Closed ───────────────────────────────────────▶ Open (until now + cooldown)
//!     ▲                                                │ cooldown over: the next
//!     │ the probe is answered                          ▼ attempt is the probe
//!     └──────────────────────────────────────────── HalfOpen ──▶ Open again (probe failed)
//! ```
//!
//! Each change of state starts a new epoch. An attempt carries the epoch it was let through
//! in ([`Ticket`]), so a result counts only in the epoch it belongs to: answers of attempts
//! let through before the circuit opened (still in flight when it did) change nothing, and
//! while half-open only the probe's result does.

use std::time::Duration;

use tokio::time::Instant;

/// How an attempt went, as the circuit counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (2xx, 3xx, 4xx): it is up. Resets the count; closes a
    /// half-open circuit.
    Answered,
    /// No answer (connection refused or reset, TLS error, timeout) or a 5xx without
    /// `Retry-After`: one more failure in a row.
    Failed,
    /// A 429 or 503 with `Retry-After`: the endpoint is up but asks to wait, which is the
    /// pause's job. Leaves the count as it is; closes a half-open circuit (it answered).
    AskedToWait,
}

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go; `failures` failed attempts in a row so far.
    Closed {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// Nothing goes until `until`; then the next attempt is the probe.
    Open {
        /// End of the cooldown.
        until: Instant,
    },
    /// The probe is in flight; every other attempt waits for its result.
    HalfOpen,
}

/// What an attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go; hand the ticket back with the result.
    Go(Ticket),
    /// Open: nothing goes before this instant.
    WaitUntil(Instant),
    /// The probe is in flight: wait for its result.
    WaitForProbe,
}

/// An attempt let through: the epoch it was let through in, and whether it is the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    probe: bool,
}

/// A change of state, for the log and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Closed → Open after this many failed attempts in a row.
    Opened {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// Open → HalfOpen: the probe goes.
    Probing,
    /// HalfOpen → Open: the probe failed.
    Reopened,
    /// HalfOpen → Closed: the probe was answered.
    Closed,
    /// HalfOpen → Open with the cooldown over: the probe was never sent (its delivery was
    /// cancelled, or the gate held it back again); the next attempt probes.
    ProbeDropped,
}

/// A circuit breaker. `failures` ≥ 1 (the gate keeps none when the config says 0).
#[derive(Debug)]
pub struct Circuit {
    failures_to_open: u32,
    cooldown: Duration,
    state: State,
    epoch: u64,
}

impl Circuit {
    /// A closed circuit that opens after `failures` failed attempts in a row (at least 1)
    /// for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Circuit {
        Circuit { failures_to_open: failures.max(1), cooldown, state: State::Closed { failures: 0 }, epoch: 0 }
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether requests are held back (open or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// What an attempt may do at `now`; past the cooldown, the first to ask becomes the
    /// probe (and the change is [`Change::Probing`]).
    pub fn admit(&mut self, now: Instant) -> (Admit, Option<Change>) {
        match self.state {
            State::Closed { .. } => (Admit::Go(Ticket { epoch: self.epoch, probe: false }), None),
            State::Open { until } if now < until => (Admit::WaitUntil(until), None),
            State::Open { .. } => {
                self.enter(State::HalfOpen);
                (Admit::Go(Ticket { epoch: self.epoch, probe: true }), Some(Change::Probing))
            }
            State::HalfOpen => (Admit::WaitForProbe, None),
        }
    }

    /// Whether an attempt let through with `ticket` may still go: the circuit is still in
    /// the state that let it through.
    pub fn still_admits(&self, ticket: Ticket) -> bool {
        ticket.epoch == self.epoch
            && match self.state {
                State::Closed { .. } => !ticket.probe,
                State::HalfOpen => ticket.probe,
                State::Open { .. } => false,
            }
    }

    /// Counts the result of the attempt let through with `ticket`, at `now`.
    pub fn record(&mut self, ticket: Ticket, outcome: Outcome, now: Instant) -> Option<Change> {
        if ticket.epoch != self.epoch {
            // Let through in an earlier state: says nothing about this one.
            return None;
        }
        match (self.state, outcome) {
            (State::Closed { .. }, Outcome::Answered) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { .. }, Outcome::AskedToWait) => None,
            (State::Closed { failures }, Outcome::Failed) => {
                let failures = failures.saturating_add(1);
                if failures >= self.failures_to_open {
                    self.enter(State::Open { until: now + self.cooldown });
                    Some(Change::Opened { failures })
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen, _) if !ticket.probe => None,
            (State::HalfOpen, Outcome::Failed) => {
                self.enter(State::Open { until: now + self.cooldown });
                Some(Change::Reopened)
            }
            (State::HalfOpen, Outcome::Answered | Outcome::AskedToWait) => {
                self.enter(State::Closed { failures: 0 });
                Some(Change::Closed)
            }
            // Nothing is let through in this epoch while open.
            (State::Open { .. }, _) => None,
        }
    }

    /// The attempt let through with `ticket` was not made (cancelled, or held back by the
    /// gate after all). A probe's place goes to the next attempt at once.
    pub fn abandon(&mut self, ticket: Ticket, now: Instant) -> Option<Change> {
        if ticket.probe && ticket.epoch == self.epoch && self.state == State::HalfOpen {
            self.enter(State::Open { until: now });
            return Some(Change::ProbeDropped);
        }
        None
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.epoch += 1;
    }
}
