//! Unit tests of the gate: the circuit's state machine with instants passed in, and the
//! gate's waiting on tokio's paused clock (no real sleeping; time moves when all wait).

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::circuit::{Admit, Change, Circuit, Outcome, State};
use super::*;
use crate::sinks::webhook::config::{SecretUrl, WebhookSinkConfig};

const SEC: Duration = Duration::from_secs(1);

fn answer(status: u16, retry_after: Option<&str>) -> Result<DeliveryResponse, DeliveryError> {
    Ok(DeliveryResponse {
        status: StatusCode::from_u16(status).unwrap(),
        excerpt: String::new(),
        retry_after: retry_after.map(|value| HeaderValue::from_str(value).unwrap()),
        location: None,
    })
}

fn no_answer() -> Result<DeliveryResponse, DeliveryError> {
    Err(DeliveryError::Transport("cannot connect: connection refused".into()))
}

fn gate(settings: GateSettings) -> (Gate, Arc<SinkStats>) {
    let stats = Arc::new(SinkStats::default());
    let target = Target::parse("http://user:GateSecret9@127.0.0.1:9/hook").unwrap();
    (Gate::new("chat", &target, &settings, stats.clone()), stats)
}

fn settings() -> GateSettings {
    GateSettings { rate_limit: None, circuit: Some((3, 10 * SEC)), max_pause: 300 * SEC }
}

/// Whether `future` is still waiting after being polled once.
async fn pending<F: Future>(future: std::pin::Pin<&mut F>) -> bool {
    let mut future = future;
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
}

fn go(admit: (Admit, Option<Change>)) -> super::circuit::Ticket {
    match admit.0 {
        Admit::Go(ticket) => ticket,
        other => panic!("expected to go, got {other:?}"),
    }
}

// ---- the circuit's state machine ----

#[test]
fn the_circuit_opens_after_failures_in_a_row_and_an_answer_resets_the_count() {
    let t0 = Instant::now();
    let mut circuit = Circuit::new(3, 10 * SEC);
    for _ in 0..2 {
        let ticket = go(circuit.admit(t0));
        assert_eq!(circuit.record(ticket, Outcome::Failed, t0), None);
    }
    // An answer (any status but 5xx) shows the endpoint is up: the count starts again.
    let ticket = go(circuit.admit(t0));
    assert_eq!(circuit.record(ticket, Outcome::Answered, t0), None);
    assert_eq!(circuit.state(), State::Closed { failures: 0 });
    let tickets: Vec<_> = (0..3).map(|_| go(circuit.admit(t0))).collect();
    assert_eq!(circuit.record(tickets[0], Outcome::Failed, t0), None);
    assert_eq!(circuit.record(tickets[1], Outcome::Failed, t0), None);
    assert_eq!(circuit.record(tickets[2], Outcome::Failed, t0), Some(Change::Opened { failures: 3 }));
    assert_eq!(circuit.state(), State::Open { until: t0 + 10 * SEC });
    assert!(circuit.is_open());
}

#[test]
fn asked_to_wait_is_neither_a_failure_nor_an_answer() {
    let t0 = Instant::now();
    let mut circuit = Circuit::new(2, SEC);
    let ticket = go(circuit.admit(t0));
    circuit.record(ticket, Outcome::Failed, t0);
    let ticket = go(circuit.admit(t0));
    assert_eq!(circuit.record(ticket, Outcome::AskedToWait, t0), None);
    assert_eq!(circuit.state(), State::Closed { failures: 1 }, "the count is left as it was");
    let ticket = go(circuit.admit(t0));
    assert_eq!(circuit.record(ticket, Outcome::Failed, t0), Some(Change::Opened { failures: 2 }));
}

#[test]
fn the_open_circuit_lets_one_probe_through_after_the_cooldown() {
    let t0 = Instant::now();
    let mut circuit = Circuit::new(1, 10 * SEC);
    let ticket = go(circuit.admit(t0));
    assert_eq!(circuit.record(ticket, Outcome::Failed, t0), Some(Change::Opened { failures: 1 }));
    assert_eq!(circuit.admit(t0 + 9 * SEC), (Admit::WaitUntil(t0 + 10 * SEC), None));
    let (admit, change) = circuit.admit(t0 + 10 * SEC);
    assert_eq!(change, Some(Change::Probing));
    let probe = go((admit, change));
    assert_eq!(circuit.state(), State::HalfOpen);
    // Everyone else waits for the probe's result, however long it takes.
    assert_eq!(circuit.admit(t0 + 100 * SEC).0, Admit::WaitForProbe);
    // The probe fails: open again for a whole cooldown from then.
    let t1 = t0 + 11 * SEC;
    assert_eq!(circuit.record(probe, Outcome::Failed, t1), Some(Change::Reopened));
    assert_eq!(circuit.state(), State::Open { until: t1 + 10 * SEC });
    // The next probe is answered (a 429 with Retry-After is an answer too): closed.
    let probe = go(circuit.admit(t1 + 10 * SEC));
    assert_eq!(circuit.record(probe, Outcome::AskedToWait, t1 + 10 * SEC), Some(Change::Closed));
    assert_eq!(circuit.state(), State::Closed { failures: 0 });
    assert!(!circuit.is_open());
}

#[test]
fn results_of_attempts_let_through_in_an_earlier_state_change_nothing() {
    let t0 = Instant::now();
    let mut circuit = Circuit::new(1, 10 * SEC);
    let early = go(circuit.admit(t0));
    let opener = go(circuit.admit(t0));
    assert_eq!(circuit.record(opener, Outcome::Failed, t0), Some(Change::Opened { failures: 1 }));
    assert!(!circuit.still_admits(early), "an attempt let through before it opened may not go now");
    // Still in flight when it opened: its answer does not close the circuit early.
    assert_eq!(circuit.record(early, Outcome::Answered, t0), None);
    let probe = go(circuit.admit(t0 + 10 * SEC));
    assert!(circuit.still_admits(probe));
    assert_eq!(circuit.record(early, Outcome::Failed, t0), None, "nor does it count while probing");
    assert_eq!(circuit.record(probe, Outcome::Answered, t0 + 10 * SEC), Some(Change::Closed));
    assert_eq!(circuit.record(early, Outcome::Failed, t0), None, "nor after it closed again");
    assert_eq!(circuit.state(), State::Closed { failures: 0 });
}

#[test]
fn a_probe_given_up_lets_the_next_attempt_probe_at_once() {
    let t0 = Instant::now();
    let mut circuit = Circuit::new(1, 10 * SEC);
    let ticket = go(circuit.admit(t0));
    circuit.record(ticket, Outcome::Failed, t0);
    let probe = go(circuit.admit(t0 + 10 * SEC));
    let t1 = t0 + 12 * SEC;
    assert_eq!(circuit.abandon(probe, t1), Some(Change::ProbeDropped));
    let (admit, change) = circuit.admit(t1);
    assert_eq!(change, Some(Change::Probing));
    let next = go((admit, change));
    assert!(circuit.still_admits(next) && !circuit.still_admits(probe));
    assert_eq!(circuit.record(probe, Outcome::Answered, t1), None, "the abandoned probe's result counts for nothing");
    assert_eq!(circuit.record(next, Outcome::Answered, t1), Some(Change::Closed));
}

// ---- the gate, on paused time ----

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spaces_attempts_evenly_without_burst() {
    let (gate, _) = gate(GateSettings { rate_limit: Some((4, SEC)), ..settings() });
    let gate = Arc::new(gate);
    let t0 = Instant::now();
    // Ten attempts at once: they pass one every 250 ms, the first at once.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let pass = gate.admit().await;
                let at = Instant::now();
                gate.record(pass, &answer(200, None));
                at
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.unwrap() - t0);
    }
    times.sort();
    let expected: Vec<Duration> = (0..10).map(|i| i * SEC / 4).collect();
    assert_eq!(times, expected);
    // Idle for a while: still no burst, the next two are 250 ms apart.
    tokio::time::sleep(10 * SEC).await;
    let start = Instant::now();
    gate.record(gate.admit().await, &answer(200, None));
    gate.record(gate.admit().await, &answer(200, None));
    assert_eq!(Instant::now() - start, SEC / 4);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_pauses_every_attempt_of_the_sink() {
    let (gate, stats) = gate(settings());
    let pass = gate.admit().await;
    assert_eq!(pass.waited(), Duration::ZERO);
    gate.record(pass, &answer(429, Some("2")));
    let t0 = Instant::now();
    let pass = gate.admit().await;
    assert_eq!(Instant::now() - t0, 2 * SEC, "the next attempt, whichever event it is for, waits 2 s");
    assert_eq!(pass.waited(), 2 * SEC);
    // 503 with an HTTP date: honoured too (whole seconds, so 2 to 3 s from now).
    let date = httpdate::fmt_http_date(SystemTime::now() + 3 * SEC);
    gate.record(pass, &answer(503, Some(&date)));
    let t0 = Instant::now();
    let pass = gate.admit().await;
    let waited = Instant::now() - t0;
    assert!(waited > SEC && waited <= 3 * SEC, "{waited:?}");
    // Without Retry-After (or with one that does not parse), and on other statuses, no pause.
    for result in [answer(429, None), answer(503, Some("soon")), answer(500, Some("5")), answer(200, Some("5"))] {
        gate.record(pass_now(&gate).await, &result);
        assert_eq!(pass_now(&gate).await.waited(), Duration::ZERO, "{result:?}");
    }
    drop(pass);
    assert!(!stats.circuit_open.load(Ordering::Relaxed), "a 429 is not a failure of the endpoint");
}

/// A pass that must come at once.
async fn pass_now(gate: &Gate) -> Pass<'_> {
    let t0 = Instant::now();
    let pass = gate.admit().await;
    assert_eq!(Instant::now(), t0, "let through at once");
    pass
}

#[tokio::test(start_paused = true)]
async fn a_pause_is_capped_and_only_ever_lengthened() {
    let (gate, _) = gate(GateSettings { max_pause: 5 * SEC, ..settings() });
    let (a, b) = (gate.admit().await, gate.admit().await);
    // A day asked for: 5 s given (retry.max_retry_after_secs).
    gate.record(a, &answer(429, Some("86400")));
    // A shorter wait asked for meanwhile does not shorten the pause.
    gate.record(b, &answer(429, Some("1")));
    let t0 = Instant::now();
    let pass = gate.admit().await;
    assert_eq!(Instant::now() - t0, 5 * SEC);
    // "Retry-After: 0" asks for no wait.
    gate.record(pass, &answer(429, Some("0")));
    pass_now(&gate).await;
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_holds_attempts_for_the_cooldown_then_lets_one_probe_through() {
    let (gate, stats) = gate(settings());
    // Three attempts in flight at once fail: the third opens the circuit.
    let passes = [gate.admit().await, gate.admit().await, gate.admit().await];
    let late = gate.admit().await;
    for (pass, result) in passes.into_iter().zip([no_answer(), answer(500, None), answer(502, None)]) {
        gate.record(pass, &result);
    }
    assert!(stats.circuit_open.load(Ordering::Relaxed));
    // Let through before it opened, answered after: changes nothing.
    gate.record(late, &answer(200, None));
    assert!(stats.circuit_open.load(Ordering::Relaxed));

    let t0 = Instant::now();
    let probe = gate.admit().await;
    assert_eq!(Instant::now() - t0, 10 * SEC, "nothing goes during the cooldown");
    let mut second = pin!(gate.admit());
    let mut third = pin!(gate.admit());
    assert!(pending(second.as_mut()).await && pending(third.as_mut()).await);
    tokio::time::sleep(60 * SEC).await;
    assert!(pending(second.as_mut()).await, "while the probe is in flight, the others wait, however long");
    assert!(stats.circuit_open.load(Ordering::Relaxed), "probing counts as open");

    // The probe fails: another whole cooldown, then the next attempt probes.
    gate.record(probe, &no_answer());
    let t1 = Instant::now();
    let probe = second.await;
    assert_eq!(Instant::now() - t1, 10 * SEC);
    assert!(pending(third.as_mut()).await);
    // The probe is answered (a 404 too says the endpoint is up): closed, all go.
    gate.record(probe, &answer(404, None));
    assert!(!stats.circuit_open.load(Ordering::Relaxed));
    let t2 = Instant::now();
    let pass = third.await;
    assert_eq!(Instant::now(), t2);
    gate.record(pass, &answer(200, None));
    pass_now(&gate).await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_is_not_sent_gives_its_place_to_the_next_attempt() {
    let (gate, stats) = gate(GateSettings { circuit: Some((1, 10 * SEC)), ..settings() });
    gate.record(gate.admit().await, &no_answer());
    let probe = gate.admit().await;
    let mut next = pin!(gate.admit());
    assert!(pending(next.as_mut()).await);
    // The probe's delivery is cancelled (shutdown, say): the next attempt probes at once.
    drop(probe);
    let t0 = Instant::now();
    let probe = next.await;
    assert_eq!(Instant::now(), t0);
    assert!(stats.circuit_open.load(Ordering::Relaxed));
    gate.record(probe, &answer(200, None));
    assert!(!stats.circuit_open.load(Ordering::Relaxed));
}

#[tokio::test(start_paused = true)]
async fn circuit_failures_0_turns_the_circuit_breaker_off() {
    let (gate, stats) = gate(GateSettings { circuit: None, ..settings() });
    for _ in 0..100 {
        gate.record(pass_now(&gate).await, &no_answer());
    }
    assert!(!stats.circuit_open.load(Ordering::Relaxed));
    // The pause still works.
    gate.record(pass_now(&gate).await, &answer(503, Some("1")));
    let t0 = Instant::now();
    let _pass = gate.admit().await;
    assert_eq!(Instant::now() - t0, SEC);
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_begins_while_waiting_for_a_token_holds_that_attempt_too() {
    let (gate, _) = gate(GateSettings { rate_limit: Some((1, SEC)), ..settings() });
    let first = gate.admit().await;
    // The second waits for its token (1 s); meanwhile the first is answered 429 + 3 s.
    let t0 = Instant::now();
    let mut second = pin!(gate.admit());
    assert!(pending(second.as_mut()).await);
    tokio::time::sleep(SEC / 2).await;
    gate.record(first, &answer(429, Some("3")));
    let _pass = second.await;
    let waited = Instant::now() - t0;
    assert!(waited >= SEC / 2 + 3 * SEC, "it went only after the pause: {waited:?}");
}

// ---- configuration ----

fn config_errors(toml_text: &str) -> Vec<(String, String)> {
    let mut config: WebhookSinkConfig = toml::from_str(toml_text).unwrap();
    config.url = SecretUrl("http://127.0.0.1:9/hook".into());
    match config.validate(Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

#[test]
fn the_keys_parse_with_their_defaults() {
    let config: WebhookSinkConfig = toml::from_str("url = 'http://h/'").unwrap();
    assert_eq!(config.request.rate_limit_num, None);
    assert_eq!(config.request.rate_limit_duration_secs, 1.0);
    assert_eq!(config.circuit, CircuitConfig { failures: 5, cooldown_secs: 30.0 });
    let settings = GateSettings::of(&config);
    assert_eq!(settings, GateSettings { rate_limit: None, circuit: Some((5, 30 * SEC)), max_pause: 300 * SEC });

    let text = "url = 'http://h/'\nrequest.rate_limit_num = 1\nrequest.rate_limit_duration_secs = 2\n\
                circuit.failures = 0\ncircuit.cooldown_secs = 0.5\nretry.max_retry_after_secs = 60";
    let config: WebhookSinkConfig = toml::from_str(text).unwrap();
    let settings = GateSettings::of(&config);
    assert_eq!(settings, GateSettings { rate_limit: Some((1, 2 * SEC)), circuit: None, max_pause: 60 * SEC });
    assert!(toml::from_str::<WebhookSinkConfig>("url = 'x'\ncircuit.failurez = 1").is_err());
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    assert!(config_errors("url = ''\nrequest.rate_limit_num = 1").is_empty());
    assert!(config_errors("url = ''\nrequest.rate_limit_num = 9223372036854775807").is_empty(), "Vector's default");
    assert!(config_errors("url = ''\ncircuit.failures = 0").is_empty(), "0 turns the circuit breaker off");
    for (text, field) in [
        ("request.rate_limit_num = 0", "request.rate_limit_num"),
        ("request.rate_limit_duration_secs = 0", "request.rate_limit_duration_secs"),
        ("request.rate_limit_duration_secs = -1", "request.rate_limit_duration_secs"),
        ("request.rate_limit_duration_secs = nan", "request.rate_limit_duration_secs"),
        ("request.rate_limit_duration_secs = inf", "request.rate_limit_duration_secs"),
        ("circuit.cooldown_secs = 0", "circuit.cooldown_secs"),
        ("circuit.cooldown_secs = 1e300", "circuit.cooldown_secs"),
    ] {
        let errors = config_errors(&format!("url = ''\n{text}"));
        assert_eq!(errors.len(), 1, "{text}: {errors:?}");
        assert_eq!(errors[0].0, field, "{text}: {errors:?}");
    }
    assert!(toml::from_str::<WebhookSinkConfig>("url = ''\nrequest.rate_limit_num = -1").is_err());
}

#[test]
fn the_gate_shows_no_password() {
    let (gate, _) = gate(GateSettings { rate_limit: Some((1, SEC)), ..settings() });
    assert!(gate.target.contains("127.0.0.1") && !gate.target.contains("GateSecret9"), "{}", gate.target);
    let debug = format!("{gate:?}");
    assert!(!debug.contains("GateSecret9"), "{debug}");
}
