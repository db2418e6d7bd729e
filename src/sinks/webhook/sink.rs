//! The running sink: takes events from its buffer, keeps those its filter fires for, and
//! delivers each with retries, up to `request.concurrency` alerts at once and each alert's
//! events in order. Every event ends delivered, filtered out, or in the dead letters.
//!
//! A sink with `batch` collects the events that fire into digests and delivers each
//! digest as one request the same way (see `batch`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::{debug, error, warn};

use super::alert_order::AlertOrder;
use super::batch::{digest_webhook_id, Batching};
use super::dedupe::{Dedupe, DedupeKey};
use super::gate::Gate;
use super::request_builder::RequestBuilder;
use super::retry::{AttemptResult, RetryPolicy, Verdict};
use super::service::WebhookService;
use crate::component::{Preview, Probe, StreamSink};
use crate::dead_letters::{self, DeadLetters};
use crate::event::{new_webhook_id, Event, IncidentEvent, Outcome};
use crate::filter::{Decision, Filter};
use crate::stats::{DeadLetterReason, SinkStats};

/// A webhook sink, ready to run.
#[derive(Debug)]
pub struct WebhookSink {
    /// The sink's name, in every log line.
    pub name: String,
    /// Triggers and conditions.
    pub filter: Filter,
    /// Event → request.
    pub request_builder: Arc<RequestBuilder>,
    /// Sends requests, at most `request.concurrency` at once.
    pub service: WebhookService,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Keeps each alert's events in order.
    pub order: AlertOrder,
    /// When to retry.
    pub retry: RetryPolicy,
    /// Where undeliverable events go.
    pub dead_letters: Arc<DeadLetters>,
    /// Digests, if the sink batches.
    pub batching: Option<Batching>,
    /// Recent deliveries, to drop equal events (`dedupe`); `None` when off.
    pub dedupe: Option<Dedupe>,
    /// Rate limit, `Retry-After` pause and circuit breaker, passed before every attempt.
    pub gate: Gate,
}

/// How a delivery ended, for the dead letters.
struct GaveUp {
    /// Why, for the metrics.
    kind: DeadLetterReason,
    reason: String,
    last_status: Option<u16>,
    attempts: u32,
    outcome: Outcome,
}

impl GaveUp {
    /// A body that cannot be made: rejected without an attempt.
    fn unrenderable(reason: String) -> GaveUp {
        GaveUp { kind: DeadLetterReason::Render, reason, last_status: None, attempts: 0, outcome: Outcome::Rejected }
    }
}

impl WebhookSink {
    /// Handles one event: filter, wait for its alert's turn, render, deliver, report.
    async fn process(&self, event: Event) {
        if let Some(event) = self.fires(event) {
            self.send(event).await;
        }
    }

    /// The event back if the filter fires for it; else it is counted and finished.
    fn fires(&self, event: Event) -> Option<Event> {
        SinkStats::incr(&self.stats.received);
        let incident = &event.incident;
        if let decision @ (Decision::NotTriggered { .. } | Decision::ConditionFailed { .. }) =
            self.filter.decide(incident)
        {
            SinkStats::incr(&self.stats.filtered);
            debug!(sink = %self.name, id = incident.id.as_deref(), %decision, "event filtered out");
            event.finish(Outcome::Filtered);
            return None;
        }
        Some(event)
    }

    /// Waits for the alert's turn, renders, delivers, and reports the outcome.
    async fn send(&self, event: Event) {
        let stats = &self.stats;
        let incident = &event.incident;
        let _turn = self.order.turn(incident.alert_identity()).await;
        let body = match self.request_builder.body(incident) {
            Ok(body) => body,
            Err(error) => {
                SinkStats::incr(&stats.render_failed);
                warn!(sink = %self.name, id = incident.id.as_deref(), event_type = %incident.event_type, %error, "cannot render webhook body");
                let gave_up = GaveUp::unrenderable(format!("cannot render the body: {error}"));
                self.dead_letter(vec![event], gave_up, None).await;
                return;
            }
        };
        // Under the alert's turn: an equal event of the same alert waits for this one's
        // delivery, then sees it.
        let dedupe = self.dedupe.as_ref().map(|dedupe| {
            (dedupe, DedupeKey::new(incident.alert_identity(), incident.event_type.as_str(), &body))
        });
        if let Some((dedupe, key)) = dedupe {
            if dedupe.is_duplicate(key) {
                SinkStats::incr(&stats.deduplicated);
                debug!(sink = %self.name, id = incident.id.as_deref(), event_type = %incident.event_type, webhook_id = %event.id, "equal to an event delivered within dedupe.window_secs; dropped");
                // Done, as a filtered-out event is: acknowledged, and deleted from a disk buffer.
                event.finish(Outcome::Filtered);
                return;
            }
        }
        let result = self.deliver(&event.id, incident.id.as_deref(), body).await;
        stats.delivery_duration.observe(event.received_at.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                SinkStats::incr(&stats.delivered);
                self.remember_delivered(dedupe.map(|(_, key)| key));
                event.finish(Outcome::Delivered);
            }
            Err(gave_up) => {
                SinkStats::incr(&stats.failed);
                self.dead_letter(vec![event], gave_up, None).await;
            }
        }
    }

    /// Delivers a digest: waits for the turn of every alert in it, renders one body for
    /// all, delivers it with retries under one `webhook-id`, and reports the outcome of
    /// each event (a digest given up on goes to the dead letters whole, as one digest).
    async fn send_digest(&self, events: Vec<Event>) {
        let stats = &self.stats;
        let _turns = self.order.turns(events.iter().map(|event| event.incident.alert_identity())).await;
        // Under the turns of all its alerts: an earlier digest holding an equal event has
        // been delivered (and remembered) by now.
        let (events, keys) = self.drop_duplicates(events);
        if events.is_empty() {
            return;
        }
        let webhook_id = digest_webhook_id(&events);
        let incidents: Vec<&IncidentEvent> = events.iter().map(|event| &*event.incident).collect();
        let body = match self.request_builder.digest_body(&incidents) {
            Ok(body) => body,
            Err(error) => {
                SinkStats::add(&stats.render_failed, events.len() as u64);
                warn!(sink = %self.name, %webhook_id, events = events.len(), %error, "cannot render the digest body");
                let gave_up = GaveUp::unrenderable(format!("cannot render the digest body: {error}"));
                self.dead_letter(events, gave_up, Some(webhook_id)).await;
                return;
            }
        };
        let result = self.deliver(&webhook_id, None, body).await;
        for event in &events {
            stats.delivery_duration.observe(event.received_at.elapsed().as_secs_f64());
        }
        match result {
            Ok(()) => {
                SinkStats::add(&stats.delivered, events.len() as u64);
                self.remember_delivered(keys);
                for event in events {
                    event.finish(Outcome::Delivered);
                }
            }
            Err(gave_up) => {
                SinkStats::add(&stats.failed, events.len() as u64);
                self.dead_letter(events, gave_up, Some(webhook_id)).await;
            }
        }
    }

    /// A digest's events without those equal to one delivered within `dedupe.window_secs`
    /// or to one before them in the digest (counted, and finished as filtered out), with
    /// the dedupe keys of those kept. An event's body for the comparison is the digest of
    /// it alone. Everything is kept when `dedupe` is off.
    fn drop_duplicates(&self, events: Vec<Event>) -> (Vec<Event>, Vec<DedupeKey>) {
        let Some(dedupe) = &self.dedupe else { return (events, Vec::new()) };
        let mut kept = Vec::with_capacity(events.len());
        let mut keys: Vec<DedupeKey> = Vec::with_capacity(events.len());
        for event in events {
            let incident = &event.incident;
            // A body that cannot be rendered has no key: the digest's rendering reports it.
            let key = self
                .request_builder
                .body(incident)
                .ok()
                .map(|body| DedupeKey::new(incident.alert_identity(), incident.event_type.as_str(), &body));
            match key {
                Some(key) if dedupe.is_duplicate(key) || keys.contains(&key) => {
                    SinkStats::incr(&self.stats.deduplicated);
                    debug!(sink = %self.name, id = incident.id.as_deref(), event_type = %incident.event_type, webhook_id = %event.id, "equal to an event delivered within dedupe.window_secs; dropped");
                    event.finish(Outcome::Filtered);
                }
                Some(key) => {
                    keys.push(key);
                    kept.push(event);
                }
                None => kept.push(event),
            }
        }
        (kept, keys)
    }

    /// Remembers delivered events' dedupe keys.
    fn remember_delivered(&self, keys: impl IntoIterator<Item = DedupeKey>) {
        let Some(dedupe) = &self.dedupe else { return };
        let mut full = false;
        for key in keys {
            full |= dedupe.remember(key);
        }
        if full {
            warn!(sink = %self.name, "dedupe.max_entries deliveries in the window: the oldest are forgotten early, so their repeats may go out again; raise dedupe.max_entries");
        }
    }

    /// Sends `body` with `webhook_id` until the retry policy says it is delivered or to
    /// give up. `id` is the alert's id, for the logs (none for a digest).
    ///
    /// Hand-written rather than tower's `Retry` layer: the policy needs each answer's
    /// `Retry-After`, and the dead letters need the attempts and the last status, which a
    /// tower policy cannot hand back.
    async fn deliver(&self, webhook_id: &str, id: Option<&str>, body: Bytes) -> Result<(), GaveUp> {
        let started = Instant::now();
        // Time spent waiting for a request slot and at the gate: not trying, so not part of
        // the time `retry.max_elapsed_secs` bounds.
        let mut queued = Duration::ZERO;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Built (and signed) once a request slot is free and the gate let it through, so
            // its timestamp is that of sending.
            let request = || self.request_builder.request(body.clone(), webhook_id);
            // Only the request holds one of the service's slots; a backoff sleep does not.
            let sent = Instant::now();
            let (pass, result) = self.service.send_admitted(self.gate.admit(), request).await;
            queued += pass.admitted_at().saturating_duration_since(sent);
            self.stats.request_duration.observe(sent.elapsed().saturating_sub(pass.waited()).as_secs_f64());
            self.gate.record(pass, &result);
            let elapsed = started.elapsed().saturating_sub(queued);
            match &result {
                Ok(response) => self.stats.responses.answer(response.status.as_u16()),
                Err(_) => self.stats.responses.error(),
            }
            let verdict = match &result {
                Ok(response) => self.retry.verdict(
                    AttemptResult::Response {
                        status: response.status,
                        retry_after: response.retry_after.as_ref(),
                        excerpt: &response.excerpt,
                        location: response.location.as_deref(),
                    },
                    attempt,
                    elapsed,
                    SystemTime::now(),
                ),
                Err(error) => {
                    let text = error.to_string();
                    self.retry.verdict(AttemptResult::Error(&text), attempt, elapsed, SystemTime::now())
                }
            };
            match verdict {
                Verdict::Delivered => {
                    debug!(sink = %self.name, id, webhook_id, attempt, "webhook delivered");
                    return Ok(());
                }
                Verdict::RetryAfter(delay) => {
                    SinkStats::incr(&self.stats.retries);
                    match &result {
                        Ok(response) => warn!(
                            sink = %self.name, id, attempt, status = response.status.as_u16(),
                            reason = response.status.canonical_reason().unwrap_or(""), answer = %response.excerpt,
                            retry_in = ?delay, "webhook attempt failed; retrying"
                        ),
                        Err(error) => warn!(
                            sink = %self.name, id, attempt, target = %self.request_builder.target(), %error,
                            retry_in = ?delay, "webhook attempt failed; retrying"
                        ),
                    }
                    tokio::time::sleep(delay).await;
                }
                Verdict::GiveUp { reason, last_status, retryable } => {
                    warn!(sink = %self.name, id, webhook_id, attempts = attempt, status = last_status, %reason, "webhook not delivered; dead-lettered");
                    let (outcome, kind) = if retryable {
                        (Outcome::Failed, DeadLetterReason::RetriesExhausted)
                    } else {
                        (Outcome::Rejected, DeadLetterReason::Status)
                    };
                    return Err(GaveUp { kind, reason, last_status, attempts: attempt, outcome });
                }
            }
        }
    }

    /// Keeps events that can never be delivered (one event, or a digest's events with
    /// the digest's `webhook-id`, kept together), then reports their outcome.
    async fn dead_letter(&self, events: Vec<Event>, gave_up: GaveUp, digest: Option<String>) {
        let letters = events
            .iter()
            .map(|event| {
                let mut letter = dead_letters::letter(
                    &self.name,
                    event,
                    gave_up.reason.clone(),
                    gave_up.last_status,
                    gave_up.attempts,
                );
                letter.digest.clone_from(&digest);
                letter
            })
            .collect();
        match self.dead_letters.record(letters).await {
            Ok(()) => {
                self.stats.count_dead_letters(gave_up.kind, events.len() as u64);
                for event in events {
                    event.finish(gave_up.outcome);
                }
            }
            Err(error) => {
                // A disk buffer keeps the events (Dropped leaves them stored); a memory
                // buffer loses them, and says so.
                let id = events.first().and_then(|event| event.incident.id.as_deref());
                error!(sink = %self.name, id, events = events.len(), %error, "cannot write the dead letter");
                for event in events {
                    event.finish(Outcome::Dropped);
                }
            }
        }
    }
}

/// Events taken from the buffer and being handled at once: those waiting for their
/// alert's turn or for a request slot included. Far above `request.concurrency`, so an
/// alert stuck in retries does not hold up the others; bounded, so a disk buffer is never
/// read into memory whole.
const EVENTS_IN_HAND: usize = 1024;

#[async_trait]
impl StreamSink for WebhookSink {
    async fn run(self: Box<Self>, input: BoxStream<'static, Event>) -> Result<(), ()> {
        let this = &*self;
        match self.batching {
            None => input.for_each_concurrent(EVENTS_IN_HAND, |event| this.process(event)).await,
            Some(batching) => {
                let fired = input.filter_map(|event| std::future::ready(this.fires(event)));
                let digests = tokio_stream::StreamExt::chunks_timeout(fired, batching.max_events, batching.timeout);
                let in_hand = batching.digests_in_hand(EVENTS_IN_HAND, self.service.concurrency());
                digests.for_each_concurrent(in_hand, |events| this.send_digest(events)).await
            }
        }
        Ok(())
    }

    fn preview(&self, event: &IncidentEvent) -> Preview {
        match self.filter.decide(event) {
            Decision::Fire => match self.request_builder.body(event) {
                Ok(body) => Preview::Body(body.to_vec()),
                Err(error) => Preview::NotSent(error.to_string()),
            },
            decision => Preview::NotFired(decision.to_string()),
        }
    }

    async fn probe(&self, event: &IncidentEvent) -> Probe {
        let request = format!("POST {}", self.request_builder.target());
        // A batching sink's body is a digest of this one event.
        let built = match self.request_builder.build(event, &new_webhook_id()) {
            Ok(built) => built,
            Err(error) => return Probe { request, answer: format!("not sent: {error}"), success: false },
        };
        match self.service.send(built).await {
            Ok(response) => Probe { request, answer: response.to_string(), success: response.is_success() },
            Err(error) => Probe { request, answer: format!("failed: {error}"), success: false },
        }
    }

    async fn replay(&self, mut event: Event) -> Outcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        event.finalizer.push(move |outcome| {
            let _ = tx.send(outcome);
        });
        match self.batching {
            Some(_) => self.send_digest(vec![event]).await,
            None => self.send(event).await,
        }
        rx.await.unwrap_or(Outcome::Dropped)
    }

    async fn replay_digest(&self, events: Vec<Event>) -> Vec<Outcome> {
        if self.batching.is_none() {
            let mut outcomes = Vec::with_capacity(events.len());
            for event in events {
                outcomes.push(self.replay(event).await);
            }
            return outcomes;
        }
        let mut receivers = Vec::with_capacity(events.len());
        let events = events
            .into_iter()
            .map(|mut event| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                event.finalizer.push(move |outcome| {
                    let _ = tx.send(outcome);
                });
                receivers.push(rx);
                event
            })
            .collect();
        self.send_digest(events).await;
        let mut outcomes = Vec::with_capacity(receivers.len());
        for rx in receivers {
            outcomes.push(rx.await.unwrap_or(Outcome::Dropped));
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::SinkContext;
    use crate::event::sample_event;
    use crate::sinks::webhook::config::{SecretUrl, WebhookSinkConfig};

    /// Up to [`EVENTS_IN_HAND`] of these futures are alive at once, so their size is
    /// memory: at 2 KB that is 2 MB per sink. Opening a connection once made them 5 KB
    /// (5 MB more at peak) until it was boxed; this keeps it so.
    #[test]
    fn the_future_per_event_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let config = WebhookSinkConfig { url: SecretUrl("http://127.0.0.1:9/hook".into()), ..Default::default() };
        let cx = SinkContext {
            name: "size".into(),
            config_dir: dir.path().to_path_buf(),
            stats: Arc::default(),
            dead_letters: Arc::new(DeadLetters::new(dir.path())),
        };
        let (sink, _) = config.validate(dir.path()).unwrap().build(cx).unwrap();
        // Created, measured and dropped without being polled: nothing is sent.
        let future = sink.process(Event::new(sample_event(), 0));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 2 * 1024, "the future per event takes {size} bytes");
    }
}
