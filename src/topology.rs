//! The host: builds every component of a pipeline config, wires sources to the sinks that
//! read them through bounded buffers, runs them, and shuts them down in order.
//!
//! Shutdown: cancelling the token stops the sources (no new input; requests being read
//! finish). Once every source has stopped, the sinks' buffers close and each sink
//! finishes what is in its buffer and in flight. If that takes longer than
//! `shutdown_timeout`, the sinks are stopped: what a disk buffer holds stays for the next
//! start, what a memory buffer held is counted in the log as not delivered.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::buffer::{SinkBuffer, SinkInput, SourceSender};
use crate::component::{SinkContext, Source, SourceContext, StreamSink};
use crate::config::PipelineConfig;
use crate::dead_letters::DeadLetters;
use crate::error::BuildError;
use crate::stats::{SinkStats, SourceStats};

/// A component could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{kind} `{name}`: {source}")]
pub struct TopologyError {
    /// `source` or `sink`.
    pub kind: &'static str,
    /// The component's name.
    pub name: String,
    /// What failed.
    #[source]
    pub source: BuildError,
}

/// What a finished run did, per sink.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Each sink's name and counters.
    pub sinks: Vec<(String, Arc<SinkStats>)>,
    /// Events accepted but not handled when the shutdown deadline passed.
    pub abandoned: u64,
}

/// What the host can see of a running pipeline: every component's live counters and each
/// sink's buffer, for `/metrics`.
#[derive(Debug, Clone)]
pub struct PipelineView {
    /// Each sink: name, counters, buffer.
    pub sinks: Vec<(String, Arc<SinkStats>, SinkBuffer)>,
    /// Each source: name, counters.
    pub sources: Vec<(String, Arc<SourceStats>)>,
    /// The pipeline's dead letters.
    pub dead_letters: Arc<DeadLetters>,
}

/// A built pipeline, ready to run.
pub struct Pipeline {
    sources: Vec<(String, Source)>,
    sinks: Vec<(String, Box<dyn StreamSink>, SinkBuffer)>,
    stats: Vec<(String, Arc<SinkStats>)>,
    view: PipelineView,
    shutdown: CancellationToken,
    shutdown_timeout: std::time::Duration,
}

impl Pipeline {
    /// Builds every sink and opens its buffer, then builds every source (binding their
    /// sockets). Healthchecks start in the background and only log.
    pub async fn build(config: &PipelineConfig, shutdown: CancellationToken) -> Result<Pipeline, TopologyError> {
        let dead_letters = Arc::new(DeadLetters::new(&config.data_dir));
        let mut sinks = Vec::new();
        let mut stats = Vec::new();
        let mut inputs: Vec<(SinkInput, &[String])> = Vec::new();
        for (name, spec) in &config.sinks {
            let sink_config = spec.as_config();
            let sink_error = |source| TopologyError { kind: "sink", name: name.clone(), source };
            let sink_stats = Arc::new(SinkStats::default());
            let cx = SinkContext {
                name: name.clone(),
                config_dir: config.dir.clone(),
                stats: sink_stats.clone(),
                dead_letters: dead_letters.clone(),
            };
            let (sink, healthcheck) = sink_config.build(cx).await.map_err(sink_error)?;
            let buffer_config = sink_config.buffer();
            let buffer = buffer_config
                .open(&config.data_dir, name)
                .map_err(|e| sink_error(BuildError::Other { message: format!("buffer: {e}") }))?;
            let (held, _) = buffer.usage();
            if held > 0 {
                info!(sink = %name, events = held, "disk buffer holds undelivered events; delivering them first");
            }
            let sink_name = name.clone();
            tokio::spawn(healthcheck.map(move |result| match result {
                Ok(()) => info!(sink = %sink_name, "healthcheck passed"),
                Err(error) => warn!(sink = %sink_name, %error, "healthcheck failed; the sink runs anyway"),
            }));
            let input = SinkInput {
                name: name.clone(),
                buffer: buffer.clone(),
                when_full: buffer_config.when_full,
                dead_letters: Some(dead_letters.clone()),
                stats: sink_stats.clone(),
            };
            inputs.push((input, &spec.inputs));
            sinks.push((name.clone(), sink, buffer));
            stats.push((name.clone(), sink_stats));
        }
        let mut sources = Vec::new();
        let mut source_views = Vec::new();
        for (name, spec) in &config.sources {
            let outputs =
                inputs.iter().filter(|(_, reads)| reads.contains(name)).map(|(input, _)| input.clone()).collect();
            let source_stats = Arc::new(SourceStats::default());
            let cx = SourceContext {
                name: name.clone(),
                out: SourceSender::new(outputs).counting(source_stats.clone()),
                shutdown: shutdown.clone(),
                stats: source_stats.clone(),
            };
            let source = spec.as_config().build(cx).await.map_err(|source| TopologyError {
                kind: "source",
                name: name.clone(),
                source,
            })?;
            sources.push((name.clone(), source));
            source_views.push((name.clone(), source_stats));
        }
        let view = PipelineView {
            sinks: sinks
                .iter()
                .zip(&stats)
                .map(|((name, _, buffer), (_, s))| (name.clone(), s.clone(), buffer.clone()))
                .collect(),
            sources: source_views,
            dead_letters,
        };
        Ok(Pipeline { sources, sinks, stats, view, shutdown, shutdown_timeout: config.shutdown_timeout })
    }

    /// What `/metrics` reads while the pipeline runs.
    pub fn view(&self) -> PipelineView {
        self.view.clone()
    }

    /// Each sink's name and counters (live).
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        self.stats.clone()
    }

    /// Runs until every source has stopped (at end of input, or after the shutdown token
    /// is cancelled) and the sinks have drained, or the shutdown deadline has passed.
    pub async fn run(self) -> RunReport {
        let mut sink_tasks = JoinSet::new();
        let buffers: Vec<SinkBuffer> = self.sinks.iter().map(|(_, _, buffer)| buffer.clone()).collect();
        for (name, sink, buffer) in self.sinks {
            let input =
                futures::stream::unfold(buffer, |buffer| async move { buffer.pop().await.map(|e| (e, buffer)) })
                    .boxed();
            sink_tasks.spawn(async move {
                if sink.run(input).await.is_err() {
                    error!(sink = %name, "sink stopped with an error");
                }
            });
        }
        let mut source_tasks = JoinSet::new();
        for (name, source) in self.sources {
            source_tasks.spawn(async move {
                if source.await.is_err() {
                    error!(source = %name, "source stopped with an error");
                }
            });
        }
        while source_tasks.join_next().await.is_some() {}
        info!("all sources stopped; draining sinks");
        // No source pushes any more: each sink ends once its buffer is drained.
        for buffer in &buffers {
            buffer.close();
        }
        let drain = async { while sink_tasks.join_next().await.is_some() {} };
        tokio::pin!(drain);
        let mut abandoned = 0;
        let drained = tokio::select! {
            () = &mut drain => true,
            () = self.shutdown.cancelled() => false,
        };
        if !drained && tokio::time::timeout(self.shutdown_timeout, &mut drain).await.is_err() {
            for ((name, stats), buffer) in self.stats.iter().zip(&buffers) {
                let (held, _) = buffer.usage();
                match buffer {
                    SinkBuffer::Disk(_) if held > 0 => {
                        info!(sink = %name, events = held, "shutdown deadline passed; events stay in the disk buffer for the next start")
                    }
                    _ => {
                        let pending = stats.pending().max(held as u64);
                        abandoned += pending;
                        if pending > 0 {
                            error!(sink = %name, events = pending, "shutdown deadline passed; events in the memory buffer not delivered");
                        }
                    }
                }
            }
        }
        // Make the deletions of delivered records durable, so a clean stop sends nothing twice.
        for buffer in &buffers {
            if let SinkBuffer::Disk(disk) = buffer {
                disk.flush();
            }
        }
        for (name, stats) in &self.stats {
            info!(
                sink = %name,
                received = SinkStats::get(&stats.received),
                delivered = SinkStats::get(&stats.delivered),
                failed = SinkStats::get(&stats.failed),
                filtered = SinkStats::get(&stats.filtered),
                render_failed = SinkStats::get(&stats.render_failed),
                dead_lettered = SinkStats::get(&stats.dead_lettered),
                retries = SinkStats::get(&stats.retries),
                "sink finished"
            );
        }
        RunReport { sinks: self.stats, abandoned }
    }
}
