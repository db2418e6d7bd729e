//! The running sink: takes events from its buffer, keeps those its filter fires for, and
//! hands them to its shards, which deliver each with retries, up to `request.concurrency`
//! alerts at once and each alert's events in order. Every event ends delivered, filtered
//! out, or in the dead letters.
//!
//! A sink has one shard, on its own task, or one per delivery thread (`run --runtime
//! split`): then its task routes the events that fire to the shards by alert key, a
//! handful at a time, and the shards deliver on their threads ([`super::shard`]).
//!
//! A sink with `batch` collects the events that fire into digests and delivers each
//! digest as one request the same way, on one shard (see `batch`).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error};

use super::batch::Batching;
use super::shard::{shard_of, Shard};
use crate::component::{Preview, Probe, StreamSink};
use crate::event::{new_webhook_id, Event, IncidentEvent, Outcome};
use crate::filter::{Decision, Filter};
use crate::stats::SinkStats;

/// A webhook sink, ready to run.
#[derive(Debug)]
pub struct WebhookSink {
    /// The sink's name, in every log line.
    pub name: String,
    /// Triggers and conditions.
    pub filter: Filter,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Digests, if the sink batches.
    pub batching: Option<Batching>,
    /// The shard that runs on the sink's own task; it also answers `probe` and `replay`.
    pub first: Arc<Shard>,
    /// The other shards, each with the runtime (of a delivery thread) it runs on. Empty
    /// without delivery threads, and for a sink with `batch` or `request.concurrency = 1`.
    pub others: Vec<(Handle, Arc<Shard>)>,
}

impl WebhookSink {
    /// Handles one event on the first shard: filter, then deliver.
    async fn process(&self, event: Event) {
        if let Some(event) = self.fires(event) {
            self.first.send(event).await;
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

    /// Runs the shards and routes `input`'s events that fire to them by alert key, up to
    /// [`ROUTED_AT_ONCE`] ready events per hand-off; returns once the input has ended and
    /// every shard has handled what it was handed.
    async fn run_sharded(&self, input: BoxStream<'static, Event>) {
        let shards = 1 + self.others.len();
        let in_hand = (EVENTS_IN_HAND / shards).max(1);
        let mut routes = Vec::with_capacity(shards);
        let (to_first, first_input) = mpsc::channel::<Vec<Event>>(HANDOFFS_QUEUED);
        routes.push(to_first);
        // Aborted if this task is (a shutdown past its deadline): no shard outlives its sink.
        let mut running = Vec::with_capacity(self.others.len());
        for (runtime, shard) in &self.others {
            let (route, events) = mpsc::channel::<Vec<Event>>(HANDOFFS_QUEUED);
            routes.push(route);
            let shard = shard.clone();
            running.push(AbortOnDropHandle::new(
                runtime.spawn(async move { shard.run(handed(events), in_hand).await }),
            ));
        }
        let route = async move {
            let mut ready = input.ready_chunks(ROUTED_AT_ONCE);
            let mut spread = 0usize;
            while let Some(events) = ready.next().await {
                let mut routed: Vec<Vec<Event>> = (0..shards).map(|_| Vec::new()).collect();
                for event in events.into_iter().filter_map(|event| self.fires(event)) {
                    spread = spread.wrapping_add(1);
                    routed[shard_of(event.incident.alert_identity(), spread, shards)].push(event);
                }
                for (route, events) in routes.iter().zip(routed) {
                    if !events.is_empty() && route.send(events).await.is_err() {
                        // Only when a delivery thread has stopped under a running sink; its
                        // events are dropped (kept by a disk buffer) rather than misrouted.
                        error!(sink = %self.name, "a delivery thread has stopped; events dropped");
                    }
                }
            }
            // Dropping the routes ends each shard's input.
        };
        let first = self.first.run(handed(first_input), in_hand);
        futures::join!(route, first);
        for shard in running {
            if let Err(error) = shard.await {
                error!(sink = %self.name, %error, "a shard of the sink stopped early");
            }
        }
    }
}

/// The events handed to a shard, one after another.
fn handed(events: mpsc::Receiver<Vec<Event>>) -> impl futures::Stream<Item = Event> {
    tokio_stream::wrappers::ReceiverStream::new(events).flat_map(futures::stream::iter)
}

/// Most ready events routed to the shards in one go: one hand-off to a shard per this many
/// events at most, and no waiting for more once the buffer has none ready.
const ROUTED_AT_ONCE: usize = 64;

/// Hand-offs queued for a shard before the routing waits for it (back-pressure): at most
/// this many times [`ROUTED_AT_ONCE`] events wait between the sink's task and a shard.
const HANDOFFS_QUEUED: usize = 4;

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
            None if self.others.is_empty() => {
                input.for_each_concurrent(EVENTS_IN_HAND, |event| this.process(event)).await
            }
            None => this.run_sharded(input).await,
            Some(batching) => {
                let fired = input.filter_map(|event| std::future::ready(this.fires(event)));
                let digests = tokio_stream::StreamExt::chunks_timeout(fired, batching.max_events, batching.timeout);
                let in_hand = batching.digests_in_hand(EVENTS_IN_HAND, self.first.service.concurrency());
                digests.for_each_concurrent(in_hand, |events| this.first.send_digest(events)).await
            }
        }
        Ok(())
    }

    fn preview(&self, event: &IncidentEvent) -> Preview {
        match self.filter.decide(event) {
            Decision::Fire => match self.first.request_builder.body(event) {
                Ok(body) => Preview::Body(body.to_vec()),
                Err(error) => Preview::NotSent(error.to_string()),
            },
            decision => Preview::NotFired(decision.to_string()),
        }
    }

    async fn probe(&self, event: &IncidentEvent) -> Probe {
        let request = format!("POST {}", self.first.request_builder.target());
        // A batching sink's body is a digest of this one event.
        let built = match self.first.request_builder.build(event, &new_webhook_id()) {
            Ok(built) => built,
            Err(error) => return Probe { request, answer: format!("not sent: {error}"), success: false },
        };
        match self.first.service.send(built).await {
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
            Some(_) => self.first.send_digest(vec![event]).await,
            None => self.first.send(event).await,
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
        self.first.send_digest(events).await;
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
    use crate::dead_letters::DeadLetters;
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
            shard_runtimes: Vec::new(),
        };
        let (sink, _) = config.validate(dir.path()).unwrap().build(cx).unwrap();
        // Created, measured and dropped without being polled: nothing is sent.
        let future = sink.process(Event::new(sample_event(), 0));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 2 * 1024, "the future per event takes {size} bytes");
    }
}
