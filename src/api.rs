//! The operator's API (`[api]` in the pipeline file): `GET /metrics` in the Prometheus
//! (OpenMetrics) text format, `GET /health` (the process is alive) and `GET /ready` (every
//! source listens and every sink is built).
//!
//! The metrics are read from the pipeline's live counters when scraped (a collector, not
//! a copy kept up to date per event), so they cost nothing between scrapes. Labels hold
//! only component names and fixed values (status codes, reasons): never a URL, a header
//! or an event field.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::stats::{DeadLetterReason, SinkStats};
use crate::topology::PipelineView;

/// The `Content-Type` of `/metrics`: the format `prometheus_client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the API serves: the pipeline's view once it is built, and whether it is ready.
#[derive(Debug, Default)]
pub struct ApiState {
    view: RwLock<Option<PipelineView>>,
    ready: AtomicBool,
}

impl ApiState {
    /// A pipeline is built and running: `/metrics` reads it, `/ready` says so.
    pub fn set_pipeline(&self, view: PipelineView) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Some(view);
        self.ready.store(true, Ordering::Release);
    }

    /// The pipeline is not ready (starting, or shutting down).
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Whether every source listens and every sink is built.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics in the OpenMetrics text format. Blocking: it reads the dead-letter
    /// store for the stored counts.
    pub fn metrics_text(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PipelineCollector(self.clone())));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            warn!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// Binds `address` and serves the API until `shutdown`. Binding happens here, so a busy
/// port is an error at start.
pub async fn serve(
    address: SocketAddr,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(address).await.map_err(|e| format!("api: cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().unwrap_or(address);
    info!(address = %local, "api listening: /metrics, /health, /ready");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        debug!(%error, "api: accept failed");
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(state.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }))
}

async fn answer(state: Arc<ApiState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        response
    };
    if req.method() != Method::GET {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".into()));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let encoded = tokio::task::spawn_blocking(move || state.metrics_text()).await;
            match encoded {
                Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "metrics unavailable\n".into()),
            }
        }
        "/health" => reply(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
        "/ready" if state.is_ready() => reply(StatusCode::OK, "application/json", r#"{"status":"ready"}"#.into()),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "application/json", r#"{"status":"not ready"}"#.into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "routes: /metrics, /health, /ready\n".into()),
    })
}

/// Reads one counter of a sink.
type SinkCounter = fn(&SinkStats) -> u64;

/// Reads the pipeline's counters at each scrape.
#[derive(Debug)]
struct PipelineCollector(Arc<ApiState>);

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: Vec<(Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut descriptor = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in rows {
        let sample: MetricEncoder<'_> = descriptor.encode_family(&labels)?;
        metric.encode(sample)?;
    }
    Ok(())
}

fn per_sink(
    view: &PipelineView,
    value: impl Fn(&SinkStats) -> u64,
) -> Vec<(Vec<(&'static str, String)>, ConstCounter)> {
    view.sinks.iter().map(|(name, stats, _)| (vec![("sink", name.clone())], ConstCounter::new(value(stats)))).collect()
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(view) = self.0.view.read().unwrap_or_else(|p| p.into_inner()).clone() else { return Ok(()) };
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let e = &mut encoder;

        let mut requests = Vec::new();
        for (source, stats) in &view.sources {
            for (status, n) in stats.requests.snapshot() {
                requests.push((vec![("source", source.clone()), ("status", status)], ConstCounter::new(n)));
            }
        }
        family(
            e,
            "webhook_sink_source_requests",
            "Requests a source answered, by status.",
            MetricType::Counter,
            requests,
        )?;
        let events =
            view.sources.iter().map(|(s, stats)| (vec![("source", s.clone())], ConstCounter::new(get(&stats.events))));
        family(
            e,
            "webhook_sink_source_events",
            "Events a source decoded and handed to its sinks' buffers.",
            MetricType::Counter,
            events.collect(),
        )?;

        let sink_counters: [(&str, &str, SinkCounter); 5] = [
            ("webhook_sink_events_received", "Events that entered the sink's buffer.", |s| SinkStats::get(&s.accepted)),
            ("webhook_sink_events_filtered", "Events the sink's triggers or conditions did not fire for.", |s| {
                SinkStats::get(&s.filtered)
            }),
            ("webhook_sink_events_delivered", "Events delivered (answered 2xx).", |s| SinkStats::get(&s.delivered)),
            (
                "webhook_sink_events_deduplicated",
                "Events dropped as equal to one delivered within dedupe.window_secs.",
                |s| SinkStats::get(&s.deduplicated),
            ),
            ("webhook_sink_retries", "Attempts that were retried.", |s| SinkStats::get(&s.retries)),
        ];
        for (name, help, value) in sink_counters {
            family(e, name, help, MetricType::Counter, per_sink(&view, value))?;
        }

        let mut dead = Vec::new();
        for (sink, stats, _) in &view.sinks {
            for (i, reason) in DeadLetterReason::ALL.iter().enumerate() {
                let labels = vec![("sink", sink.clone()), ("reason", reason.label().to_string())];
                dead.push((labels, ConstCounter::new(get(&stats.dead_lettered_by[i]))));
            }
        }
        family(
            e,
            "webhook_sink_events_dead_lettered",
            "Events put into the dead letters, by reason.",
            MetricType::Counter,
            dead,
        )?;

        let mut responses = Vec::new();
        for (sink, stats, _) in &view.sinks {
            for (status, n) in stats.responses.snapshot() {
                responses.push((vec![("sink", sink.clone()), ("status", status)], ConstCounter::new(n)));
            }
        }
        family(
            e,
            "webhook_sink_http_responses",
            "Answers of the endpoint by status code (`error`: no answer).",
            MetricType::Counter,
            responses,
        )?;

        for (name, help, pick) in [
            (
                "webhook_sink_delivery_duration_seconds",
                "From entering the sink's buffer to the final answer (delivered or given up).",
                (|s: &SinkStats| s.delivery_duration.clone()) as fn(&SinkStats) -> _,
            ),
            (
                "webhook_sink_request_duration_seconds",
                "One attempt: waiting for a request slot, connecting, the answer (not waiting at the gate).",
                |s: &SinkStats| s.request_duration.clone(),
            ),
        ] {
            let rows = view.sinks.iter().map(|(sink, stats, _)| (vec![("sink", sink.clone())], pick(stats))).collect();
            family(e, name, help, MetricType::Histogram, rows)?;
        }

        let gauge = |f: &dyn Fn(&crate::buffer::SinkBuffer) -> i64| -> Vec<(Vec<(&'static str, String)>, ConstGauge)> {
            view.sinks
                .iter()
                .map(|(sink, _, buffer)| (vec![("sink", sink.clone())], ConstGauge::new(f(buffer))))
                .collect()
        };
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        family(
            e,
            "webhook_sink_buffer_events",
            "Events held by the sink's buffer, queued and in flight.",
            MetricType::Gauge,
            gauge(&|b| clamp(b.usage().0 as u64)),
        )?;
        family(
            e,
            "webhook_sink_buffer_bytes",
            "Bytes of events held by the sink's buffer.",
            MetricType::Gauge,
            gauge(&|b| clamp(b.usage().1)),
        )?;
        family(
            e,
            "webhook_sink_buffer_max_events",
            "Most events the sink's buffer holds (buffer.max_events).",
            MetricType::Gauge,
            gauge(&|b| clamp(b.limits().events as u64)),
        )?;
        // One pass over the store for every sink, not one per sink.
        let stored = match view.dead_letters.stored() {
            Ok(counts) => view
                .sinks
                .iter()
                .map(|(sink, _, _)| {
                    let n = counts.get(sink).copied().unwrap_or(0);
                    (vec![("sink", sink.clone())], ConstGauge::new(clamp(n as u64)))
                })
                .collect(),
            Err(error) => {
                debug!(%error, "metrics: cannot count the stored dead letters");
                Vec::new()
            }
        };
        family(e, "webhook_sink_dead_letters", "Dead letters stored now.", MetricType::Gauge, stored)?;
        let circuit = view
            .sinks
            .iter()
            .map(|(sink, stats, _)| {
                let open = stats.circuit_open.load(Ordering::Relaxed);
                (vec![("sink", sink.clone())], ConstGauge::new(i64::from(open)))
            })
            .collect();
        family(
            e,
            "webhook_sink_circuit_open",
            "1 while the sink's circuit breaker holds requests back (open, or sending its probe), else 0.",
            MetricType::Gauge,
            circuit,
        )?;
        Ok(())
    }
}
