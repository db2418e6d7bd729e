//! How `run` spreads the pipeline over threads: the tokio runtimes it builds from
//! `--runtime` and `--threads` (see the README's `run` options and docs/decisions.md).

use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// How the pipeline is spread over threads (`run --runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// `split` on a host of 2 cores or fewer, `multi-thread` above.
    #[default]
    Auto,
    /// The whole pipeline on one thread (tokio's current-thread runtime): nothing is
    /// handed off between threads.
    OneThread,
    /// Two threads, each a current-thread runtime: the sources on one (connections,
    /// requests, decoding), the sinks and everything else on the other. Events cross
    /// between them at the sinks' buffers, a batch at a time.
    Split,
    /// tokio's work-stealing runtime: `--threads` workers (default one per core), any task
    /// on any of them.
    MultiThread,
}

/// What `run` builds, once `auto` and `--threads` are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// See [`RuntimeKind::OneThread`].
    OneThread,
    /// See [`RuntimeKind::Split`].
    Split,
    /// See [`RuntimeKind::MultiThread`]; `None`: one worker per core.
    MultiThread(Option<usize>),
}

impl Layout {
    /// The name `run --runtime` takes for it (also logged at start).
    pub fn name(self) -> &'static str {
        match self {
            Layout::OneThread => "one-thread",
            Layout::Split => "split",
            Layout::MultiThread(_) => "multi-thread",
        }
    }
}

/// Cores at or below which `auto` splits the pipeline over two threads instead of using
/// tokio's work-stealing runtime: on 2 cores, its hand-offs between workers cost more than
/// the second worker brings (docs/performance.md, round 4).
const SMALL_HOST_CORES: usize = 2;

/// Resolves `--runtime` and `--threads` on a host with `cores` cores. `--threads` sets the
/// workers of `multi-thread`; given alone (with `auto`), `--threads 1` means `one-thread`
/// and more means `multi-thread`, as before `--runtime` existed.
pub fn resolve(kind: RuntimeKind, threads: Option<u16>, cores: usize) -> Result<Layout, String> {
    let threads = threads.map(usize::from);
    match (kind, threads) {
        (RuntimeKind::Auto, None) if cores <= SMALL_HOST_CORES => Ok(Layout::Split),
        (RuntimeKind::Auto, None) => Ok(Layout::MultiThread(None)),
        (RuntimeKind::Auto | RuntimeKind::OneThread, Some(1)) | (RuntimeKind::OneThread, None) => Ok(Layout::OneThread),
        (RuntimeKind::Auto | RuntimeKind::MultiThread, threads) => Ok(Layout::MultiThread(threads)),
        (RuntimeKind::Split, None) => Ok(Layout::Split),
        (RuntimeKind::OneThread, Some(n)) => Err(fixed_threads(n, Layout::OneThread)),
        (RuntimeKind::Split, Some(n)) => Err(fixed_threads(n, Layout::Split)),
    }
}

fn fixed_threads(threads: usize, layout: Layout) -> String {
    format!(
        "`--threads {threads}` sets the workers of `--runtime multi-thread`; `--runtime {}` has its threads fixed",
        layout.name()
    )
}

/// The cores of this host (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The runtimes of one command: the main one, which runs everything but the sources of a
/// split `run`, and the sources' thread of a split `run`.
pub struct Runtimes {
    /// Runs the command (for a split `run`, everything but the sources).
    pub main: Runtime,
    /// The sources' thread of [`Layout::Split`].
    pub sources: Option<SourcesThread>,
}

impl Runtimes {
    /// Builds the runtimes of `layout`.
    pub fn build(layout: Layout) -> std::io::Result<Runtimes> {
        let mut builder = match layout {
            Layout::OneThread | Layout::Split => Builder::new_current_thread(),
            Layout::MultiThread(workers) => {
                let mut builder = Builder::new_multi_thread();
                if let Some(workers) = workers {
                    builder.worker_threads(workers);
                }
                builder
            }
        };
        let main = builder.enable_all().build()?;
        let sources = match layout {
            Layout::Split => Some(SourcesThread::start()?),
            Layout::OneThread | Layout::MultiThread(_) => None,
        };
        Ok(Runtimes { main, sources })
    }
}

/// A thread of its own running a current-thread runtime for the sources. Dropping it stops
/// the runtime: what still runs there is dropped (by then the pipeline has stopped its
/// sources), and a blocking read of stdin is left behind rather than waited for.
pub struct SourcesThread {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The sources' thread's name (`top -H`, `/proc/PID/task/*/comm`; at most 15 bytes).
pub const SOURCES_THREAD_NAME: &str = "webhook-sources";

impl SourcesThread {
    /// Starts the thread and its runtime.
    pub fn start() -> std::io::Result<SourcesThread> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(SOURCES_THREAD_NAME.into()).spawn(move || {
            // Drives the sources' tasks until told to stop (or until the sender is dropped).
            let _ = runtime.block_on(stopped);
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
        Ok(SourcesThread { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the sources are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for SourcesThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Bounded: the runtime's own shutdown waits at most 200 ms for blocking tasks.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_splits_on_small_hosts_and_uses_workers_on_larger_ones() {
        assert_eq!(resolve(RuntimeKind::Auto, None, 1), Ok(Layout::Split));
        assert_eq!(resolve(RuntimeKind::Auto, None, 2), Ok(Layout::Split));
        assert_eq!(resolve(RuntimeKind::Auto, None, 3), Ok(Layout::MultiThread(None)));
    }

    #[test]
    fn threads_alone_keeps_its_old_meaning() {
        assert_eq!(resolve(RuntimeKind::Auto, Some(1), 2), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::Auto, Some(4), 2), Ok(Layout::MultiThread(Some(4))));
        assert_eq!(resolve(RuntimeKind::MultiThread, Some(1), 8), Ok(Layout::MultiThread(Some(1))));
        assert_eq!(resolve(RuntimeKind::MultiThread, None, 2), Ok(Layout::MultiThread(None)));
        assert_eq!(resolve(RuntimeKind::OneThread, None, 8), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::OneThread, Some(1), 8), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::Split, None, 8), Ok(Layout::Split));
    }

    #[test]
    fn threads_with_a_fixed_layout_is_refused_with_the_reason() {
        let error = resolve(RuntimeKind::Split, Some(4), 2).unwrap_err();
        assert!(error.contains("--threads 4") && error.contains("--runtime split"), "{error}");
        let error = resolve(RuntimeKind::OneThread, Some(2), 2).unwrap_err();
        assert!(error.contains("--runtime one-thread"), "{error}");
    }

    #[test]
    fn the_sources_thread_runs_what_is_spawned_there_and_stops_when_dropped() {
        let thread = SourcesThread::start().unwrap();
        let name = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        thread.handle().spawn(async move {
            *seen.lock().unwrap() = std::thread::current().name().map(str::to_string);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name.lock().unwrap().as_deref(), Some(SOURCES_THREAD_NAME));
        let handle = thread.handle();
        drop(thread);
        // The runtime is gone: a task spawned now never runs.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(handle.spawn(async move {
            let _ = tx.send(());
        }));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}
