//! The host: builds every component of a pipeline config, wires sources to the sinks that
//! read them through bounded buffers, runs them, reloads them, and shuts them down in order.
//!
//! Reload ([`Pipeline::run_reloading`]): a new, already validated config is compared with
//! the running one component by component. Unchanged components keep running untouched.
//! A changed sink is built anew and takes over the old one's buffer (the buffer object
//! itself, so a disk buffer's file stays open and nothing is copied): the old sink stops
//! taking events, finishes the ones it has in hand, and then the new one starts, so each
//! alert's order holds and no event is sent twice. A removed sink stops being fed and
//! finishes its buffer like at shutdown. A changed source starts on the same listening
//! socket as the old one (no connection is refused in between); the old one then stops
//! taking connections and finishes the requests it has. Sources are rewired to the new set
//! of sinks in one step. What cannot change while running is refused as a whole, with the
//! reason logged and nothing changed: `data_dir`, a sink's `buffer.type`, a `stdin`
//! source.
//!
//! Shutdown: cancelling the token stops the sources (no new input; requests being read
//! finish). Once every source has stopped, the sinks' buffers close and each sink
//! finishes what is in its buffer and in flight. `shutdown_timeout` bounds the whole of
//! it, counted from the cancellation: a source still finishing requests when it passes
//! (a stalled client) is stopped, its requests unanswered; sinks still running are
//! stopped: what a disk buffer holds stays for the next start, what a memory buffer held
//! is counted in the log as not delivered.

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::buffer::{SinkBuffer, SinkInput, SourceSender};
use crate::component::{Listeners, SinkContext, Source, SourceContext, StreamSink};
use crate::config::{PipelineConfig, SinkSpec, SourceSpec};
use crate::dead_letters::DeadLetters;
use crate::error::BuildError;
use crate::event::Event;
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
    /// Events whose dead letter could not be written (lost for a memory buffer).
    pub dead_letters_unwritten: u64,
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

/// A sink of the running pipeline.
struct SinkSlot {
    name: String,
    spec: SinkSpec,
    buffer: SinkBuffer,
    stats: Arc<SinkStats>,
    input: SinkInput,
    /// Built, waiting for `run`.
    pending: Option<Box<dyn StreamSink>>,
    /// Ends the sink's input stream (a reload replaces or removes it).
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// The sink this one replaced, still finishing its events (aborted with this one when
    /// the shutdown deadline passes).
    replaced: Option<tokio::task::AbortHandle>,
}

/// A source of the running pipeline.
struct SourceSlot {
    name: String,
    spec: SourceSpec,
    sender: SourceSender,
    stats: Arc<SourceStats>,
    /// Stops this source alone (a child of the pipeline's shutdown token).
    stop: CancellationToken,
    /// Built, waiting for `run` (in a mutex only so the pipeline is `Sync`: a source's
    /// future is `Send` but not `Sync`).
    pending: std::sync::Mutex<Option<Source>>,
    /// Tells the finished source apart from the one that replaced it under the same name.
    generation: u64,
}

/// A built pipeline, ready to run.
pub struct Pipeline {
    config: PipelineConfig,
    dead_letters: Arc<DeadLetters>,
    listeners: Listeners,
    sinks: Vec<SinkSlot>,
    sources: Vec<SourceSlot>,
    /// Sinks removed by a reload, finishing their buffers.
    retiring: Vec<(String, Arc<SinkStats>, SinkBuffer, JoinHandle<()>)>,
    shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline passes: sources still running are dropped.
    sources_deadline: CancellationToken,
    generation: u64,
    /// The runtimes of other threads the pipeline's parts run on (`run --runtime split`).
    threads: Threads,
}

/// The runtimes on other threads that parts of a pipeline run on, besides the one the
/// pipeline itself runs on (`run --runtime split`). The default: none, everything on the
/// pipeline's own runtime.
#[derive(Debug, Clone, Default)]
pub struct Threads {
    /// The runtime the sources are built and run on; `None`: the pipeline's own.
    pub sources: Option<tokio::runtime::Handle>,
    /// Runtimes each sink may spread its deliveries over, besides the pipeline's own, each
    /// alert's events on one of them ([`SinkContext::shard_runtimes`]).
    pub delivery: Vec<tokio::runtime::Handle>,
}

/// The addresses a source config listens on (for releasing sockets no source uses).
fn listen_address(spec: &SourceSpec) -> Option<std::net::SocketAddr> {
    match spec {
        SourceSpec::HttpServer(c) => Some(c.config.address),
        SourceSpec::Stdin(_) | SourceSpec::Kafka(_) => None,
    }
}

/// The events of `buffer`, until it is closed and drained or `stop` is cancelled (then
/// what is left stays in the buffer for the sink that takes over).
fn input(buffer: SinkBuffer, stop: CancellationToken) -> BoxStream<'static, Event> {
    // `pop` is cancel-safe: an event is taken from the buffer only in the poll that returns it.
    // One `cancelled` future for the whole stream, registered once: a new one per event
    // would take the token's lock twice per event.
    let stopped = Box::pin(stop.cancelled_owned());
    futures::stream::unfold((buffer, stopped), |(buffer, mut stopped)| async move {
        let event = tokio::select! {
            biased;
            () = &mut stopped => None,
            event = buffer.pop() => event,
        };
        event.map(|event| (event, (buffer, stopped)))
    })
    .boxed()
}

fn spawn_sink(name: String, sink: Box<dyn StreamSink>, input: BoxStream<'static, Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if sink.run(input).await.is_err() {
            error!(sink = %name, "sink stopped with an error");
        }
    })
}

impl Pipeline {
    /// Builds every sink and opens its buffer, then builds every source (binding their
    /// sockets). Healthchecks start in the background and only log.
    pub async fn build(config: &PipelineConfig, shutdown: CancellationToken) -> Result<Pipeline, TopologyError> {
        Self::build_on(config, shutdown, Threads::default()).await
    }

    /// As [`Pipeline::build`], with every source (those of later reloads too) built and run
    /// on `threads.sources` when given: their sockets, requests and decoding then take
    /// none of the sinks' thread. Events cross to the sinks' side at the buffers, a batch
    /// at a time. Every sink (those of later reloads too) may shard its deliveries over
    /// `threads.delivery`.
    pub async fn build_on(
        config: &PipelineConfig,
        shutdown: CancellationToken,
        threads: Threads,
    ) -> Result<Pipeline, TopologyError> {
        let mut pipeline = Pipeline {
            config: config.clone(),
            dead_letters: Arc::new(DeadLetters::new(&config.data_dir)),
            listeners: Listeners::default(),
            sinks: Vec::new(),
            sources: Vec::new(),
            retiring: Vec::new(),
            shutdown,
            sources_deadline: CancellationToken::new(),
            generation: 0,
            threads,
        };
        for (name, spec) in &config.sinks {
            let slot = pipeline.build_sink(name, spec, None).await?;
            pipeline.sinks.push(slot);
        }
        for (name, spec) in &config.sources {
            let slot = pipeline.build_source(name, spec, pipeline.outputs_for(name)).await?;
            pipeline.sources.push(slot);
        }
        Ok(pipeline)
    }

    /// Opens the dead-letter store now and keeps it open for the run: the start-up check of
    /// `webhook-sink run`, so that dead letters which cannot be kept (a read-only or missing
    /// `data_dir`, another process holding the store) stop the start instead of being lost
    /// later. Hosts that build several pipelines on one `data_dir` in one process skip it.
    pub async fn open_dead_letters(&self) -> Result<(), TopologyError> {
        let dead_letters = self.dead_letters.clone();
        tokio::task::spawn_blocking(move || dead_letters.open_now())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| TopologyError {
                kind: "dead letters",
                name: self.config.data_dir.display().to_string(),
                source: BuildError::Other {
                    message: format!("cannot open the dead-letter store for writing: {message}"),
                },
            })
    }

    /// Builds one sink; with `reuse`, on the buffer and counters of the sink it replaces.
    async fn build_sink(
        &self,
        name: &str,
        spec: &SinkSpec,
        reuse: Option<(SinkBuffer, Arc<SinkStats>)>,
    ) -> Result<SinkSlot, TopologyError> {
        let sink_config = spec.as_config();
        let sink_error = |source| TopologyError { kind: "sink", name: name.to_string(), source };
        let buffer_config = sink_config.buffer();
        let (buffer, stats) = match reuse {
            Some((buffer, stats)) => {
                buffer.set_limits(buffer_config.limits());
                (buffer, stats)
            }
            None => {
                let buffer = buffer_config
                    .open(&self.config.data_dir, name)
                    .map_err(|e| sink_error(BuildError::Other { message: format!("buffer: {e}") }))?;
                if let SinkBuffer::Disk(disk) = &buffer {
                    disk.quarantine_to(name, self.dead_letters.clone());
                }
                let (held, _) = buffer.usage();
                if held > 0 {
                    info!(sink = %name, events = held, "disk buffer holds undelivered events; delivering them first");
                }
                (buffer, Arc::new(SinkStats::default()))
            }
        };
        let cx = SinkContext {
            name: name.to_string(),
            config_dir: self.config.dir.clone(),
            stats: stats.clone(),
            dead_letters: self.dead_letters.clone(),
            shard_runtimes: self.threads.delivery.clone(),
        };
        let (sink, healthcheck) = sink_config.build(cx).await.map_err(sink_error)?;
        let sink_name = name.to_string();
        tokio::spawn(healthcheck.map(move |result| match result {
            Ok(()) => info!(sink = %sink_name, "healthcheck passed"),
            Err(error) => warn!(sink = %sink_name, %error, "healthcheck failed; the sink runs anyway"),
        }));
        let input = SinkInput {
            name: name.to_string(),
            buffer: buffer.clone(),
            when_full: buffer_config.when_full,
            dead_letters: Some(self.dead_letters.clone()),
            stats: stats.clone(),
        };
        Ok(SinkSlot {
            name: name.to_string(),
            spec: spec.clone(),
            buffer,
            stats,
            input,
            pending: Some(sink),
            stop: CancellationToken::new(),
            task: None,
            replaced: None,
        })
    }

    /// The inputs of the sinks that read source `name`.
    fn outputs_for(&self, name: &str) -> Vec<SinkInput> {
        self.sinks.iter().filter(|s| s.spec.inputs.iter().any(|i| i == name)).map(|s| s.input.clone()).collect()
    }

    /// Builds one source, sending to `outputs` (binding or sharing its socket).
    async fn build_source(
        &self,
        name: &str,
        spec: &SourceSpec,
        outputs: Vec<SinkInput>,
    ) -> Result<SourceSlot, TopologyError> {
        let stats = Arc::new(SourceStats::default());
        let sender = SourceSender::new(outputs).counting(stats.clone());
        let stop = self.shutdown.child_token();
        let cx = SourceContext {
            name: name.to_string(),
            out: sender.clone(),
            shutdown: stop.clone(),
            stats: stats.clone(),
            listeners: self.listeners.clone(),
        };
        let built = match &self.threads.sources {
            // Built there, so that its sockets are registered with that runtime's reactor.
            Some(runtime) => {
                let spec = spec.clone();
                runtime.spawn(async move { spec.as_config().build(cx).await }).await.unwrap_or_else(|e| {
                    Err(BuildError::Other { message: format!("the sources' runtime stopped while building it: {e}") })
                })
            }
            None => spec.as_config().build(cx).await,
        };
        let source = built.map_err(|source| TopologyError { kind: "source", name: name.to_string(), source })?;
        Ok(SourceSlot {
            name: name.to_string(),
            spec: spec.clone(),
            sender,
            stats,
            stop,
            pending: std::sync::Mutex::new(Some(source)),
            generation: 0,
        })
    }

    /// What `/metrics` reads while the pipeline runs (after a reload, ask again).
    pub fn view(&self) -> PipelineView {
        PipelineView {
            sinks: self.sinks.iter().map(|s| (s.name.clone(), s.stats.clone(), s.buffer.clone())).collect(),
            sources: self.sources.iter().map(|s| (s.name.clone(), s.stats.clone())).collect(),
            dead_letters: self.dead_letters.clone(),
        }
    }

    /// Each sink's name and counters (live).
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        self.sinks.iter().map(|s| (s.name.clone(), s.stats.clone())).collect()
    }

    /// Runs until every source has stopped (at end of input, or after the shutdown token
    /// is cancelled) and the sinks have drained, or the shutdown deadline has passed.
    pub async fn run(self) -> RunReport {
        let (_keep, reloads) = mpsc::channel(1);
        self.run_reloading(reloads, |_| {}).await
    }

    /// As [`Pipeline::run`], applying each config that arrives on `reloads` (already
    /// validated); `changed` is told the new view after each reload that was applied.
    pub async fn run_reloading(
        mut self,
        mut reloads: mpsc::Receiver<PipelineConfig>,
        changed: impl Fn(PipelineView) + Send,
    ) -> RunReport {
        for slot in &mut self.sinks {
            if let Some(sink) = slot.pending.take() {
                slot.task = Some(spawn_sink(slot.name.clone(), sink, input(slot.buffer.clone(), slot.stop.clone())));
            }
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64)>();
        let mut live: HashSet<(String, u64)> = HashSet::new();
        for slot in &mut self.sources {
            self.generation += 1;
            slot.generation = self.generation;
            if let Some(source) = slot.pending.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
                live.insert((slot.name.clone(), slot.generation));
                spawn_source(
                    self.threads.sources.as_ref(),
                    slot.name.clone(),
                    slot.generation,
                    source,
                    done_tx.clone(),
                    self.sources_deadline.clone(),
                );
            }
        }
        // Set once shutdown is asked for: it bounds the whole shutdown, sources included.
        let mut deadline: Option<tokio::time::Instant> = None;
        let stopping = self.shutdown.clone();
        while !live.is_empty() {
            let past_deadline = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = done_rx.recv() => {
                    live.remove(&done);
                }
                () = stopping.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + self.config.shutdown_timeout);
                }
                () = past_deadline, if !self.sources_deadline.is_cancelled() => {
                    self.sources_deadline.cancel();
                }
                Some(config) = reloads.recv(), if !self.shutdown.is_cancelled() => {
                    match self.apply(config, &done_tx, &mut live).await {
                        Ok(summary) => {
                            info!(%summary, "reloaded");
                            changed(self.view());
                        }
                        Err(reason) => error!(%reason, "reload refused; the running pipeline is unchanged"),
                    }
                }
            }
        }
        info!("all sources stopped; draining sinks");
        for slot in &self.sources {
            if let Some(address) = listen_address(&slot.spec) {
                self.listeners.release(&address);
            }
        }
        self.drain(deadline).await
    }

    /// Applies a new config (see the module doc). `Err` says why nothing was changed.
    async fn apply(
        &mut self,
        new: PipelineConfig,
        done_tx: &mpsc::UnboundedSender<(String, u64)>,
        live: &mut HashSet<(String, u64)>,
    ) -> Result<String, String> {
        if new.data_dir != self.config.data_dir {
            return Err("`data_dir` cannot change while running; restart to use the new one".into());
        }
        for (name, spec) in &new.sinks {
            if let Some(old) = self.sinks.iter().find(|s| &s.name == name) {
                if old.spec.as_config().buffer().kind != spec.as_config().buffer().kind {
                    return Err(format!("sink `{name}`: `buffer.type` cannot change while running; restart to apply"));
                }
            }
        }
        for (name, spec) in &new.sources {
            if let Some(old) = self.sources.iter().find(|s| &s.name == name) {
                let stdin = matches!(old.spec, SourceSpec::Stdin(_)) || matches!(spec, SourceSpec::Stdin(_));
                if stdin && old.spec != *spec {
                    return Err(format!("source `{name}`: a `stdin` source cannot change while running"));
                }
            }
        }

        // Build every new and changed sink first: a failure changes nothing.
        let mut built: Vec<(SinkSlot, bool)> = Vec::new();
        for (name, spec) in &new.sinks {
            let old = self.sinks.iter().find(|s| &s.name == name);
            match old {
                Some(old) if old.spec == *spec => {}
                Some(old) => {
                    let slot = self
                        .build_sink(name, spec, Some((old.buffer.clone(), old.stats.clone())))
                        .await
                        .map_err(|e| e.to_string())?;
                    built.push((slot, true));
                }
                None => built.push((self.build_sink(name, spec, None).await.map_err(|e| e.to_string())?, false)),
            }
        }
        let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        // The sinks of the new config, in its order: kept, replaced or new.
        let mut old_sinks: Vec<SinkSlot> = std::mem::take(&mut self.sinks);
        let mut built_by_name: std::collections::HashMap<String, (SinkSlot, bool)> =
            built.into_iter().map(|(slot, replaces)| (slot.name.clone(), (slot, replaces))).collect();
        for (name, _) in &new.sinks {
            let old_index = old_sinks.iter().position(|s| &s.name == name);
            match (built_by_name.remove(name), old_index) {
                (None, Some(i)) => self.sinks.push(old_sinks.remove(i)),
                (Some((mut slot, true)), Some(i)) => {
                    // Hand over: the old sink stops taking events and finishes the ones in
                    // hand, then the new one starts on the same buffer.
                    let old = old_sinks.remove(i);
                    old.stop.cancel();
                    let previous = old.task;
                    slot.replaced = previous.as_ref().map(JoinHandle::abort_handle);
                    let sink = slot.pending.take();
                    let stream = input(slot.buffer.clone(), slot.stop.clone());
                    let sink_name = name.clone();
                    slot.task = Some(tokio::spawn(async move {
                        if let Some(previous) = previous {
                            let _ = previous.await;
                        }
                        if let Some(sink) = sink {
                            if sink.run(stream).await.is_err() {
                                error!(sink = %sink_name, "sink stopped with an error");
                            }
                        }
                    }));
                    changed.push(name.clone());
                    self.sinks.push(slot);
                }
                (Some((mut slot, _)), _) => {
                    if let Some(sink) = slot.pending.take() {
                        slot.task = Some(spawn_sink(name.clone(), sink, input(slot.buffer.clone(), slot.stop.clone())));
                    }
                    added.push(name.clone());
                    self.sinks.push(slot);
                }
                (None, None) => {}
            }
        }

        // Sources: build the new and changed ones (a changed one shares the old socket).
        let mut new_sources = Vec::new();
        for (name, spec) in &new.sources {
            match self.sources.iter().position(|s| &s.name == name) {
                Some(i) if self.sources[i].spec == *spec => new_sources.push(self.sources.remove(i)),
                found => {
                    let outputs = self.outputs_for(name);
                    let mut slot = match self.build_source(name, spec, outputs).await {
                        Ok(slot) => slot,
                        Err(error) => {
                            // Sinks were already swapped: keep the old source rather than none.
                            error!(%error, "reload: source not rebuilt; the old one keeps running");
                            if let Some(i) = found {
                                new_sources.push(self.sources.remove(i));
                            }
                            continue;
                        }
                    };
                    self.generation += 1;
                    slot.generation = self.generation;
                    if let Some(source) = slot.pending.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
                        live.insert((name.clone(), slot.generation));
                        let deadline = self.sources_deadline.clone();
                        let runtime = self.threads.sources.as_ref();
                        spawn_source(runtime, name.clone(), slot.generation, source, done_tx.clone(), deadline);
                    }
                    if let Some(i) = found {
                        let old = self.sources.remove(i);
                        old.stop.cancel();
                        if listen_address(&old.spec) != listen_address(spec) {
                            if let Some(address) = listen_address(&old.spec) {
                                self.listeners.release(&address);
                            }
                        }
                        changed.push(name.clone());
                    } else {
                        added.push(name.clone());
                    }
                    new_sources.push(slot);
                }
            }
        }
        for old in self.sources.drain(..) {
            old.stop.cancel();
            if let Some(address) = listen_address(&old.spec) {
                self.listeners.release(&address);
            }
            removed.push(old.name.clone());
        }
        self.sources = new_sources;

        // Rewire every source to the new set of sinks in one step each.
        let mut retired_outputs = Vec::new();
        for slot in &self.sources {
            retired_outputs.push(slot.sender.rewire(self.outputs_for(&slot.name)));
        }
        // Sinks no longer in the config: no source feeds them now. Once every batch that
        // started before the rewiring is in, their buffers close and they finish what is left.
        for old in old_sinks {
            removed.push(old.name.clone());
            let (name, stats, buffer) = (old.name.clone(), old.stats.clone(), old.buffer.clone());
            let task = old.task.unwrap_or_else(|| tokio::spawn(async {}));
            let retired = retired_outputs.clone();
            let closing = buffer.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    if retired.iter().all(|outputs| Arc::strong_count(outputs) == 1) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                closing.close();
            });
            self.retiring.push((name, stats, buffer, task));
        }
        self.config = new;
        Ok(format!(
            "added: [{}], changed: [{}], removed: [{}]",
            added.join(", "),
            changed.join(", "),
            removed.join(", ")
        ))
    }

    /// Closes every buffer and waits for the sinks to finish, within the shutdown deadline
    /// once shutdown was asked for (`deadline`, when it was asked for while sources ran).
    async fn drain(mut self, deadline: Option<tokio::time::Instant>) -> RunReport {
        let mut sink_tasks = JoinSet::new();
        // Aborted past the deadline: a sink still running holds its buffer and the dead letters.
        let mut aborts = Vec::new();
        let mut all: Vec<(String, Arc<SinkStats>, SinkBuffer)> = Vec::new();
        for slot in &mut self.sinks {
            // No source pushes any more: each sink ends once its buffer is drained.
            slot.buffer.close();
            aborts.extend(slot.replaced.take());
            if let Some(task) = slot.task.take() {
                aborts.push(task.abort_handle());
                sink_tasks.spawn(async move {
                    let _ = task.await;
                });
            }
            all.push((slot.name.clone(), slot.stats.clone(), slot.buffer.clone()));
        }
        for (name, stats, buffer, task) in self.retiring.drain(..) {
            buffer.close();
            aborts.push(task.abort_handle());
            sink_tasks.spawn(async move {
                let _ = task.await;
            });
            all.push((name, stats, buffer));
        }
        let drain = async { while sink_tasks.join_next().await.is_some() {} };
        tokio::pin!(drain);
        let mut abandoned = 0;
        let drained = tokio::select! {
            () = &mut drain => true,
            () = self.shutdown.cancelled() => false,
        };
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + self.config.shutdown_timeout);
        let timed_out = !drained && tokio::time::timeout_at(deadline, &mut drain).await.is_err();
        if timed_out {
            for (name, stats, buffer) in &all {
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
        if timed_out {
            for abort in &aborts {
                abort.abort();
            }
            // Wait for the aborted sinks to be dropped, so their files are closed on return.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut drain).await;
        }
        // Make the deletions of delivered records durable, so a clean stop sends nothing twice.
        for (_, _, buffer) in &all {
            if let SinkBuffer::Disk(disk) = buffer {
                disk.flush();
            }
        }
        let stats: Vec<(String, Arc<SinkStats>)> = all.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
        for (name, stats) in &stats {
            info!(
                sink = %name,
                received = SinkStats::get(&stats.received),
                delivered = SinkStats::get(&stats.delivered),
                failed = SinkStats::get(&stats.failed),
                filtered = SinkStats::get(&stats.filtered),
                deduplicated = SinkStats::get(&stats.deduplicated),
                render_failed = SinkStats::get(&stats.render_failed),
                dead_lettered = SinkStats::get(&stats.dead_lettered),
                retries = SinkStats::get(&stats.retries),
                "sink finished"
            );
        }
        let dead_letters_unwritten = self.dead_letters.unwritten();
        if dead_letters_unwritten > 0 {
            error!(
                events = dead_letters_unwritten,
                "dead letters could not be written: those of memory-buffered sinks are lost"
            );
        }
        RunReport { sinks: stats, abandoned, dead_letters_unwritten }
    }
}

/// Runs a source on `runtime` (else on the current one) until it ends, or until `deadline`
/// is cancelled (the shutdown deadline passed while it was still finishing requests: it is
/// dropped, and with it those requests).
fn spawn_source(
    runtime: Option<&tokio::runtime::Handle>,
    name: String,
    generation: u64,
    source: Source,
    done: mpsc::UnboundedSender<(String, u64)>,
    deadline: CancellationToken,
) {
    let running = async move {
        tokio::select! {
            result = source => if result.is_err() {
                error!(source = %name, "source stopped with an error");
            },
            () = deadline.cancelled() => {
                warn!(source = %name, "shutdown deadline passed; source stopped, requests still in flight dropped");
            }
        }
        let _ = done.send((name, generation));
    };
    match runtime {
        Some(runtime) => drop(runtime.spawn(running)),
        None => drop(tokio::spawn(running)),
    }
}
