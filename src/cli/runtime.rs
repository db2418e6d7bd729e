//! How `run` spreads the pipeline over threads: the tokio runtimes it builds from
//! `--runtime`, `--threads` and `--delivery-threads` (see the README's `run` options and
//! docs/decisions.md).

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
    /// Current-thread runtimes on threads of their own: the sources on one (connections,
    /// requests, decoding), the sinks and everything else on the main one. Events cross
    /// between them at the sinks' buffers, a batch at a time. Each sink's deliveries are
    /// spread by alert key over the main thread and `--delivery-threads` − 1 more, each
    /// with its own connections.
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
    /// See [`RuntimeKind::Split`]: the threads the sinks' deliveries are spread over,
    /// the main one included (at least 1).
    Split(usize),
    /// See [`RuntimeKind::MultiThread`]; `None`: one worker per core.
    MultiThread(Option<usize>),
}

impl Layout {
    /// The name `run --runtime` takes for it (also logged at start).
    pub fn name(self) -> &'static str {
        match self {
            Layout::OneThread => "one-thread",
            Layout::Split(_) => "split",
            Layout::MultiThread(_) => "multi-thread",
        }
    }

    /// The threads a sink's deliveries are spread over (`split`); `None`: not fixed (a
    /// sink's deliveries run wherever its tasks do).
    pub fn delivery_threads(self) -> Option<usize> {
        match self {
            Layout::OneThread => Some(1),
            Layout::Split(threads) => Some(threads),
            Layout::MultiThread(_) => None,
        }
    }
}

/// Cores at or below which `auto` splits the pipeline over two threads instead of using
/// tokio's work-stealing runtime: on 2 cores, its hand-offs between workers cost more than
/// the second worker brings (docs/performance.md, round 4).
const SMALL_HOST_CORES: usize = 2;

/// Delivery threads of `split` unless `--delivery-threads` says: one per core, at most
/// this many. Two measured on the 2-core benchmark host: +6 to +10% deliveries per second
/// over one, and three no better than two (docs/performance.md, sixth session); more
/// than the cores would only add hand-offs.
const DEFAULT_DELIVERY_THREADS: usize = 2;

/// Resolves `--runtime`, `--threads` and `--delivery-threads` on a host with `cores`
/// cores. `--threads` sets the workers of `multi-thread`; given alone (with `auto`),
/// `--threads 1` means `one-thread` and more means `multi-thread`, as before `--runtime`
/// existed. `--delivery-threads` is for `split` only.
pub fn resolve(
    kind: RuntimeKind,
    threads: Option<u16>,
    delivery_threads: Option<u16>,
    cores: usize,
) -> Result<Layout, String> {
    let threads = threads.map(usize::from);
    let split = Layout::Split(delivery_threads.map_or(cores.clamp(1, DEFAULT_DELIVERY_THREADS), |n| usize::from(n).max(1)));
    let layout = match (kind, threads) {
        (RuntimeKind::Auto, None) if cores <= SMALL_HOST_CORES => split,
        (RuntimeKind::Auto, None) => Layout::MultiThread(None),
        (RuntimeKind::Auto | RuntimeKind::OneThread, Some(1)) | (RuntimeKind::OneThread, None) => Layout::OneThread,
        (RuntimeKind::Auto | RuntimeKind::MultiThread, threads) => Layout::MultiThread(threads),
        (RuntimeKind::Split, None) => split,
        (RuntimeKind::OneThread, Some(n)) => return Err(fixed_threads(n, Layout::OneThread)),
        (RuntimeKind::Split, Some(n)) => return Err(fixed_threads(n, split)),
    };
    match (layout, delivery_threads) {
        (Layout::OneThread | Layout::MultiThread(_), Some(n)) => Err(format!(
            "`--delivery-threads {n}` spreads the sinks' deliveries under `--runtime split`; \
             `--runtime {}` does not take it",
            layout.name()
        )),
        _ => Ok(layout),
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
/// split `run`, and the sources' thread and delivery threads of a split `run`.
pub struct Runtimes {
    /// Runs the command (for a split `run`, everything but the sources and the other
    /// delivery threads' shares of the deliveries).
    pub main: Runtime,
    /// The sources' thread of [`Layout::Split`].
    pub sources: Option<RuntimeThread>,
    /// The delivery threads of [`Layout::Split`] besides the main one.
    pub delivery: Vec<RuntimeThread>,
}

impl Runtimes {
    /// Builds the runtimes of `layout`.
    pub fn build(layout: Layout) -> std::io::Result<Runtimes> {
        let mut builder = match layout {
            Layout::OneThread | Layout::Split(_) => Builder::new_current_thread(),
            Layout::MultiThread(workers) => {
                let mut builder = Builder::new_multi_thread();
                if let Some(workers) = workers {
                    builder.worker_threads(workers);
                }
                builder
            }
        };
        let main = builder.enable_all().build()?;
        let (sources, delivery) = match layout {
            Layout::Split(delivery) => {
                let others = (1..delivery).map(|i| RuntimeThread::start(format!("{DELIVERY_THREAD_NAME}-{i}")));
                (Some(RuntimeThread::start(SOURCES_THREAD_NAME.into())?), others.collect::<Result<_, _>>()?)
            }
            Layout::OneThread | Layout::MultiThread(_) => (None, Vec::new()),
        };
        Ok(Runtimes { main, sources, delivery })
    }
}

/// A thread of its own running a current-thread runtime (for the sources, or for a share
/// of the sinks' deliveries). Dropping it stops the runtime: what still runs there is
/// dropped (by then the pipeline has stopped), and a blocking read of stdin is left behind
/// rather than waited for.
pub struct RuntimeThread {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The sources' thread's name (`top -H`, `/proc/PID/task/*/comm`; at most 15 bytes).
pub const SOURCES_THREAD_NAME: &str = "webhook-sources";

/// The delivery threads' names, numbered from 1 (the main thread is the first):
/// `webhook-deliv-1`, … (15 bytes up to 9).
pub const DELIVERY_THREAD_NAME: &str = "webhook-deliv";

impl RuntimeThread {
    /// Starts the thread `name` and its runtime.
    pub fn start(name: String) -> std::io::Result<RuntimeThread> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            // Drives its tasks until told to stop (or until the sender is dropped).
            let _ = runtime.block_on(stopped);
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
        Ok(RuntimeThread { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Where its tasks are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for RuntimeThread {
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
        assert_eq!(resolve(RuntimeKind::Auto, None, None, 1), Ok(Layout::Split(1)));
        assert_eq!(resolve(RuntimeKind::Auto, None, None, 2), Ok(Layout::Split(2)));
        assert_eq!(resolve(RuntimeKind::Auto, None, None, 3), Ok(Layout::MultiThread(None)));
    }

    #[test]
    fn threads_alone_keeps_its_old_meaning() {
        assert_eq!(resolve(RuntimeKind::Auto, Some(1), None, 2), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::Auto, Some(4), None, 2), Ok(Layout::MultiThread(Some(4))));
        assert_eq!(resolve(RuntimeKind::MultiThread, Some(1), None, 8), Ok(Layout::MultiThread(Some(1))));
        assert_eq!(resolve(RuntimeKind::MultiThread, None, None, 2), Ok(Layout::MultiThread(None)));
        assert_eq!(resolve(RuntimeKind::OneThread, None, None, 8), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::OneThread, Some(1), None, 8), Ok(Layout::OneThread));
        assert_eq!(resolve(RuntimeKind::Split, None, None, 8), Ok(Layout::Split(2)));
    }

    #[test]
    fn threads_with_a_fixed_layout_is_refused_with_the_reason() {
        let error = resolve(RuntimeKind::Split, Some(4), None, 2).unwrap_err();
        assert!(error.contains("--threads 4") && error.contains("--runtime split"), "{error}");
        let error = resolve(RuntimeKind::OneThread, Some(2), None, 2).unwrap_err();
        assert!(error.contains("--runtime one-thread"), "{error}");
    }

    #[test]
    fn delivery_threads_are_for_split_only() {
        assert_eq!(resolve(RuntimeKind::Split, None, Some(3), 2), Ok(Layout::Split(3)));
        assert_eq!(resolve(RuntimeKind::Auto, None, Some(1), 2), Ok(Layout::Split(1)));
        let error = resolve(RuntimeKind::OneThread, None, Some(2), 2).unwrap_err();
        assert!(error.contains("--delivery-threads 2") && error.contains("--runtime one-thread"), "{error}");
        let error = resolve(RuntimeKind::Auto, None, Some(2), 8).unwrap_err();
        assert!(error.contains("--runtime multi-thread"), "{error}");
    }

    #[test]
    fn split_starts_the_sources_thread_and_the_other_delivery_threads() {
        let runtimes = Runtimes::build(Layout::Split(3)).unwrap();
        assert!(runtimes.sources.is_some());
        let names: Vec<String> = runtimes
            .delivery
            .iter()
            .map(|thread| {
                let (tx, rx) = std::sync::mpsc::channel();
                thread.handle().spawn(async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_string));
                });
                rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["webhook-deliv-1", "webhook-deliv-2"]);
        assert!(Runtimes::build(Layout::OneThread).unwrap().delivery.is_empty());
    }

    #[test]
    fn the_sources_thread_runs_what_is_spawned_there_and_stops_when_dropped() {
        let thread = RuntimeThread::start(SOURCES_THREAD_NAME.into()).unwrap();
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
