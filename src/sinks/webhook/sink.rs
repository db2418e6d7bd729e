//! The running sink: takes events from its input, keeps those its filter fires for, and
//! delivers them with up to `request.concurrency` requests in flight.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::{debug, warn};

use super::alert_order::AlertOrder;
use super::request_builder::RequestBuilder;
use super::service::WebhookService;
use crate::component::{SinkStats, StreamSink};
use crate::event::Event;
use crate::filter::{Decision, Filter};

/// A webhook sink, ready to run.
#[derive(Debug)]
pub struct WebhookSink {
    /// The sink's name, in every log line.
    pub name: String,
    /// Triggers and conditions.
    pub filter: Filter,
    /// Event → request.
    pub request_builder: Arc<RequestBuilder>,
    /// Sends requests.
    pub service: WebhookService,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Keeps each alert's events in order.
    pub order: AlertOrder,
}

impl WebhookSink {
    /// Handles one event: filter, wait for its alert's turn, render, send, report.
    async fn process(&self, event: Event) {
        let stats = &self.stats;
        SinkStats::incr(&stats.received);
        let incident = &event.incident;
        if let decision @ (Decision::NotTriggered { .. } | Decision::ConditionFailed { .. }) =
            self.filter.decide(incident)
        {
            SinkStats::incr(&stats.filtered);
            debug!(sink = %self.name, id = incident.id.as_deref(), %decision, "event filtered out");
            return;
        }
        let _turn = self.order.turn(incident.alert_identity()).await;
        let request = match self.request_builder.build(incident) {
            Ok(request) => request,
            Err(error) => {
                SinkStats::incr(&stats.render_failed);
                warn!(sink = %self.name, id = incident.id.as_deref(), event_type = %incident.event_type, %error, "cannot render webhook body; event dropped");
                return;
            }
        };
        match self.service.send(request).await {
            Ok(response) if response.is_success() => {
                SinkStats::incr(&stats.delivered);
                debug!(sink = %self.name, id = incident.id.as_deref(), status = response.status.as_u16(), "webhook delivered");
            }
            Ok(response) => {
                SinkStats::incr(&stats.failed);
                warn!(
                    sink = %self.name,
                    id = incident.id.as_deref(),
                    status = response.status.as_u16(),
                    reason = response.status.canonical_reason().unwrap_or(""),
                    answer = %response.excerpt,
                    "webhook rejected by endpoint"
                );
            }
            Err(error) => {
                SinkStats::incr(&stats.failed);
                warn!(sink = %self.name, id = incident.id.as_deref(), target = %self.request_builder.target(), %error, "webhook delivery failed");
            }
        }
    }
}

#[async_trait]
impl StreamSink for WebhookSink {
    async fn run(self: Box<Self>, input: BoxStream<'static, Event>) -> Result<(), ()> {
        let this = &*self;
        input.for_each_concurrent(this.concurrency, |event| this.process(event)).await;
        Ok(())
    }
}
