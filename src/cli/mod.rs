//! The command line: `run`, `validate`, `test`, `render`, `variables`, `dead-letters`
//! and `demo`.

mod dead_letters;
mod reload;
internal_mod!(
    /// The threads and runtimes `run` spreads the pipeline over.
    runtime
);

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::ApiState;
use crate::component::{Preview, SinkContext, StreamSink};
use crate::config::{self, PipelineConfig, SinkSpec, SourceSpec};
use crate::dead_letters::DeadLetters;
use crate::escape::Escaped;
use crate::event::{sample_event, IncidentEvent};
use crate::sources::decode::Decoder;
use crate::topology::{Pipeline, PipelineView, Threads};

/// Turns incident events into webhooks.
#[derive(Debug, Parser)]
#[command(name = "webhook-sink", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and every field
    /// of the event (`sink`, `id`, `attempt`, `status`, …) at the top level.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline until SIGINT/SIGTERM (or until every source has ended).
    Run {
        /// The pipeline file (.toml, .yaml or .yml).
        #[arg(long, short)]
        config: PathBuf,
        /// How the pipeline is spread over threads. `split`: the sources on one thread, the
        /// sinks on another (the default on a host with 2 cores or fewer); `one-thread`: all
        /// on one; `multi-thread`: tokio's work-stealing runtime, `--threads` workers (the
        /// default above 2 cores). See the README's Performance section.
        #[arg(long, value_enum, default_value_t = runtime::RuntimeKind::Auto)]
        runtime: runtime::RuntimeKind,
        /// Worker threads of `--runtime multi-thread` (default: one per core). Given alone,
        /// `--threads 1` means `--runtime one-thread`.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Threads of `--runtime split` that each sink's deliveries are spread over by
        /// alert key, the main one included, each with its own connections (default: one
        /// per core, at most 2). `1`: all of a sink's deliveries on the main thread.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        delivery_threads: Option<u16>,
        /// Reload the pipeline file when it changes (it is also reloaded on SIGHUP).
        #[arg(long)]
        watch: bool,
    },
    /// Check a pipeline file without sending anything; lists every problem.
    Validate {
        /// The pipeline file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send a sample event (or `--event`) through one sink's real path and print the answer.
    Test {
        /// The pipeline file.
        #[arg(long, short)]
        config: PathBuf,
        /// The sink to test.
        #[arg(long)]
        sink: String,
        /// A JSON file with the event(s) to send instead of the sample; filters are skipped.
        #[arg(long)]
        event: Option<PathBuf>,
        /// Decode `--event` as this source does. Default: incident events.
        #[arg(long)]
        source: Option<String>,
    },
    /// Print the body each event would produce in one sink, or why it would not fire.
    Render {
        /// The pipeline file.
        #[arg(long, short)]
        config: PathBuf,
        /// The sink whose filter and template to use.
        #[arg(long)]
        sink: String,
        /// A JSON file: one event, an array, or NDJSON.
        #[arg(long)]
        event: PathBuf,
        /// Decode the file as this source does (e.g. an Alertmanager payload or a mapped
        /// log event). Default: incident events.
        #[arg(long)]
        source: Option<String>,
    },
    /// List the template variables.
    Variables,
    /// Print the JSON Schema of the pipeline file (for editors and CI checks).
    Schema,
    /// List, replay or purge the events that could never be delivered.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetterCommand),
    /// Run a self-contained demo: a loopback receiver, two sinks, sample events.
    Demo,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // `run` spreads over the threads `--runtime` says; the other commands use tokio's
    // default runtime.
    let layout = match &cli.command {
        Command::Run { runtime, threads, delivery_threads, .. } => {
            match runtime::resolve(*runtime, *threads, *delivery_threads, runtime::cores()) {
                Ok(layout) => layout,
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => runtime::Layout::MultiThread(None),
    };
    let runtimes = match runtime::Runtimes::build(layout) {
        Ok(runtimes) => runtimes,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = Threads {
        sources: runtimes.sources.as_ref().map(runtime::RuntimeThread::handle),
        delivery: runtimes.delivery.iter().map(runtime::RuntimeThread::handle).collect(),
    };
    let result = runtimes.main.block_on(dispatch(cli.command, layout, threads));
    // The stdin source reads on a blocking thread that may still wait for input; don't
    // let it hold the exit.
    runtimes.main.shutdown_timeout(std::time::Duration::from_millis(200));
    drop(runtimes.sources);
    drop(runtimes.delivery);
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::field::MakeExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEBHOOK_SINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Text lines as the default formatter writes them (`message name=value …`), with the
    // control characters of every message and value escaped: they may hold text from
    // outside (a sender's JSON key in a decode error, a receiver's answer), and a raw
    // newline would forge a log line, an ESC drive the terminal. JSON lines escape anyway.
    let escaped_fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", Escaped(&text)),
            name => write!(writer, "{name}={}", Escaped(&text)),
        }
    })
    .delimited(" ");
    match format {
        LogFormat::Text => {
            builder.fmt_fields(escaped_fields).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}

/// Runs `command`; a `run` spreads its pipeline over `threads` ([`runtime::Layout`]).
async fn dispatch(command: Command, layout: runtime::Layout, threads: Threads) -> Result<ExitCode, String> {
    match command {
        Command::Run { config, watch, .. } => run(&config, watch, layout, threads).await,
        Command::Validate { config } => validate(&config),
        Command::Test { config, sink, event, source } => {
            test(&config, &sink, event.as_deref(), source.as_deref()).await
        }
        Command::Render { config, sink, event, source } => render(&config, &sink, &event, source.as_deref()).await,
        Command::Schema => {
            let schema = config::pipeline_schema();
            println!("{}", serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Variables => {
            print!("{}", variables_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(command) => dead_letters::run(command).await,
        Command::Demo => crate::demo::run().await,
    }
}

fn load(path: &Path) -> Result<PipelineConfig, String> {
    config::load(path).map_err(|errors| {
        let n = errors.0.len();
        format!("{n} problem{} in the config:\n{errors}", if n == 1 { "" } else { "s" })
    })
}

async fn run(path: &Path, watch: bool, layout: runtime::Layout, threads: Threads) -> Result<ExitCode, String> {
    let config = load(path)?;
    let shutdown = CancellationToken::new();
    for warning in &config.warnings {
        warn!("{warning}");
    }
    // The API answers `/health` while the pipeline is built, and `/ready` once it is.
    let api_state = Arc::new(ApiState::default());
    let api_stop = CancellationToken::new();
    let api = match &config.api {
        Some(api) => Some(crate::api::serve(api.address, api_state.clone(), api_stop.clone()).await?),
        None => None,
    };
    let pipeline = Pipeline::build_on(&config, shutdown.clone(), threads).await.map_err(|e| e.to_string())?;
    pipeline.open_dead_letters().await.map_err(|e| e.to_string())?;
    api_state.set_pipeline(pipeline.view());
    info!(
        config = %path.display(),
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        runtime = layout.name(),
        delivery_threads = layout.delivery_threads(),
        "webhook-sink started"
    );
    // What a forced exit (a second SIGINT/SIGTERM) counts as left; kept current across reloads.
    let current = Arc::new(std::sync::Mutex::new(pipeline.view()));
    tokio::spawn(stop_on_signals(shutdown.clone(), current.clone()));
    let not_ready = {
        let (api_state, shutdown) = (api_state.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            api_state.set_not_ready();
        })
    };
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
    let reloader = tokio::spawn(crate::cli::reload::reload_on_request(path.to_path_buf(), watch, reload_tx));
    let state_for_reload = api_state.clone();
    let report = pipeline
        .run_reloading(reloads, move |view| {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = view.clone();
            state_for_reload.set_pipeline(view);
        })
        .await;
    reloader.abort();
    not_ready.abort();
    api_stop.cancel();
    if let Some(api) = api {
        let _ = api.await;
    }
    // Anything lost (undelivered at the deadline, or a dead letter not written) is a failure.
    let lost = report.abandoned + report.dead_letters_unwritten;
    Ok(if lost == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Cancels `shutdown` on SIGINT or SIGTERM. A second one while shutting down exits the
/// process at once (status 1), after logging what each sink of `pipeline` still holds.
pub async fn stop_on_signals(shutdown: CancellationToken, pipeline: Arc<std::sync::Mutex<PipelineView>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else { return };
        let Ok(mut int) = signal(SignalKind::interrupt()) else { return };
        tokio::select! {
            _ = int.recv() => info!("SIGINT: shutting down (send it again to exit at once)"),
            _ = term.recv() => info!("SIGTERM: shutting down (send it again to exit at once)"),
        }
        shutdown.cancel();
        let signal = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        let view = pipeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
        force_exit(signal, &view);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        let _ = tokio::signal::ctrl_c().await;
        let view = pipeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
        force_exit("Ctrl-C", &view);
    }
}

/// Logs what each sink still holds and ends the process with status 1 (a second signal).
fn force_exit(signal: &str, view: &PipelineView) -> ! {
    let mut lost = 0;
    for (name, stats, buffer) in &view.sinks {
        let (held, _) = buffer.usage();
        if buffer.is_disk() {
            warn!(sink = %name, events = held, "{signal} again: exiting now; events stay in the disk buffer for the next start");
        } else {
            let left = stats.pending().max(held as u64);
            lost += left;
            error!(sink = %name, events = left, "{signal} again: exiting now; events in the memory buffer not delivered");
        }
    }
    error!(not_delivered = lost, "{signal} again: exited before the shutdown finished");
    std::process::exit(1)
}

fn validate(path: &Path) -> Result<ExitCode, String> {
    let config = load(path)?;
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    println!(
        "{}: ok ({} source{}, {} sink{})",
        path.display(),
        config.sources.len(),
        if config.sources.len() == 1 { "" } else { "s" },
        config.sinks.len(),
        if config.sinks.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Sink `name` of the pipeline, or an error that lists the sinks there are.
fn sink_spec<'a>(config: &'a PipelineConfig, name: &str) -> Result<&'a SinkSpec, String> {
    config.sink(name).ok_or_else(|| {
        format!("no sink `{name}` in {}; sinks: {}", config.path.display(), config.sink_names().join(", "))
    })
}

/// Builds sink `name` of the pipeline, for the commands that ask a sink about single
/// events (`test`, `render`, `dead-letters replay`). Its dead letters go to `dead_letters`.
async fn build_sink(
    config: &PipelineConfig,
    name: &str,
    dead_letters: Arc<DeadLetters>,
) -> Result<Box<dyn StreamSink>, String> {
    let spec = sink_spec(config, name)?;
    let cx = SinkContext {
        name: name.to_string(),
        config_dir: config.dir.clone(),
        stats: Arc::default(),
        dead_letters,
        shard_runtimes: Vec::new(),
    };
    let (sink, _healthcheck) = spec.as_config().build(cx).await.map_err(|e| format!("sink `{name}`: {e}"))?;
    Ok(sink)
}

/// Reads events from a file, decoded as `source` decodes (incident events by default).
fn read_events(config: &PipelineConfig, path: &Path, source: Option<&str>) -> Result<Vec<IncidentEvent>, String> {
    let default = Decoder::default();
    let decoder = match source {
        None => &default,
        Some(name) => config.source(name).map(SourceSpec::decoder).ok_or_else(|| {
            let names: Vec<&str> = config.sources.iter().map(|(n, _)| n.as_str()).collect();
            format!("no source `{name}` in {}; sources: {}", config.path.display(), names.join(", "))
        })?,
    };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decoder.decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

async fn test(path: &Path, name: &str, event: Option<&Path>, source: Option<&str>) -> Result<ExitCode, String> {
    let config = load(path)?;
    // A probe writes no dead letters; the store is never opened.
    let sink = build_sink(&config, name, Arc::new(DeadLetters::new(&config.data_dir))).await?;
    let events = match event {
        Some(event) => read_events(&config, event, source)?,
        None => vec![sample_event()],
    };
    let mut all_ok = true;
    for event in &events {
        let probe = sink.probe(event).await;
        println!("{}", probe.request);
        println!("-> {}", probe.answer);
        all_ok &= probe.success;
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn render(path: &Path, name: &str, event: &Path, source: Option<&str>) -> Result<ExitCode, String> {
    let config = load(path)?;
    let sink = build_sink(&config, name, Arc::new(DeadLetters::new(&config.data_dir))).await?;
    let events = read_events(&config, event, source)?;
    let several = events.len() > 1;
    for (i, event) in events.iter().enumerate() {
        if several {
            println!("--- event {}", i + 1);
        }
        match sink.preview(event) {
            Preview::Body(body) => println!("{}", String::from_utf8_lossy(&body)),
            Preview::NotSent(why) => println!("would not be sent: {why}"),
            Preview::NotFired(why) => println!("would not fire: {why}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `variables` listing.
pub fn variables_text() -> String {
    use crate::template::catalog::VARIABLES;
    let mut out = String::from("Template variables ({{ name }}):\n");
    for var in VARIABLES.iter().filter(|v| v.legacy_of.is_none()) {
        out.push_str(&format!("  {:<22} {}\n", var.name, var.description));
    }
    out.push_str("\nLegacy names:\n");
    for var in VARIABLES.iter().filter(|v| v.legacy_of.is_some()) {
        out.push_str(&format!("  {:<22} = {}\n", var.name, var.legacy_of.unwrap_or_default()));
    }
    out.push_str("\nThe whole event: {{ event.FIELD }}, e.g. {{ event.alertSource.name }}, {{ event.labels.team }}\n");
    out
}
