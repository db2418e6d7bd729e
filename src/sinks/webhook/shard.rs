//! One shard of a sink's deliveries: the events it is handed are delivered with retries,
//! each alert's in order, and end delivered, deduplicated or in the dead letters.
//!
//! A sink has one shard, or one per delivery thread (`run --runtime split`): each shard
//! has its own connections and request slots (a share of `request.concurrency`) and its
//! own per-alert order, and the shards of a sink share its gate (rate limit, `Retry-After`
//! pause, circuit breaker), its dedupe window, its counters and the dead letters. Every
//! event of an alert goes to the same shard ([`shard_of`]), so the alert's order holds.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tracing::{debug, error, warn};

use super::alert_order::AlertOrder;
use super::batch::digest_webhook_id;
use super::dedupe::{Dedupe, DedupeKey};
use super::gate::Gate;
use super::request_builder::RequestBuilder;
use super::retry::{AttemptResult, RetryPolicy, Verdict};
use super::service::WebhookService;
use crate::dead_letters::{self, DeadLetters};
use crate::event::{Event, IncidentEvent, Outcome};
use crate::stats::{DeadLetterReason, SinkStats};

/// One shard of a sink's deliveries: its own connections and alert order, the sink's
/// shared gate, dedupe window, counters and dead letters.
#[derive(Debug)]
pub struct Shard {
    /// The sink's name, in every log line.
    pub name: String,
    /// Event → request.
    pub request_builder: Arc<RequestBuilder>,
    /// Sends requests over this shard's connections, at most its share of
    /// `request.concurrency` at once.
    pub service: WebhookService,
    /// The sink's counters.
    pub stats: Arc<SinkStats>,
    /// Keeps each alert's events in order (an alert's events all come to one shard).
    pub order: AlertOrder,
    /// When to retry.
    pub retry: RetryPolicy,
    /// Where undeliverable events go.
    pub dead_letters: Arc<DeadLetters>,
    /// The sink's recent deliveries, to drop equal events (`dedupe`); `None` when off.
    pub dedupe: Option<Arc<Dedupe>>,
    /// The sink's rate limit, `Retry-After` pause and circuit breaker, passed before every
    /// attempt of every shard.
    pub gate: Arc<Gate>,
}

/// The shard, of `shards`, that delivers the events of the alert `key` (`alertKey`, else
/// `id`): always the same one for a key, so that an alert's events stay in order. An
/// event without either has no order to keep and goes to shard `spread % shards`.
///
/// std's `DefaultHasher` with its fixed keys: the same key lands on the same shard in
/// every sink and every run, and nothing outside chooses the keys to unbalance it more
/// than a sender of many events of one alert can anyway.
pub fn shard_of(key: Option<&str>, spread: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    match key {
        Some(key) => {
            let mut hasher = std::hash::DefaultHasher::new();
            key.hash(&mut hasher);
            (hasher.finish() % shards as u64) as usize
        }
        None => spread % shards,
    }
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

impl Shard {
    /// Delivers every event of `events` (those the sink's filter fired for), up to
    /// `in_hand` at once; returns once the stream has ended and every event is handled.
    pub async fn run(&self, events: impl Stream<Item = Event>, in_hand: usize) {
        events.for_each_concurrent(in_hand, |event| self.send(event)).await;
    }

    /// Waits for the alert's turn, renders, delivers, and reports the outcome.
    pub async fn send(&self, event: Event) {
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
    pub async fn send_digest(&self, events: Vec<Event>) {
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_always_lands_on_the_same_shard_and_alerts_spread() {
        let keys: Vec<String> = (0..1000).map(|n| format!("alert-{n}")).collect();
        let mut per_shard = [0usize; 2];
        for key in &keys {
            let shard = shard_of(Some(key), 0, 2);
            assert_eq!(shard, shard_of(Some(key), 7, 2), "{key}: the spread counter does not move an alert");
            per_shard[shard] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 400), "1000 alerts over 2 shards: {per_shard:?}");
        // Without an alert key there is no order to keep: events take turns.
        assert_eq!((0..4).map(|spread| shard_of(None, spread, 2)).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert_eq!(shard_of(Some("x"), 3, 1), 0);
        assert_eq!(shard_of(Some("x"), 3, 0), 0, "no shards is taken as one");
    }
}
