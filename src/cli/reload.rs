//! When `run` reloads its pipeline file: on SIGHUP, and with `--watch` when the file
//! changes. The new file is loaded and validated here; only a valid one is handed to the
//! running pipeline. An invalid one is logged with every problem, and nothing changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{self, PipelineConfig};

/// How often `--watch` looks at the file.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Sends a validated config on `reloads` for every SIGHUP, and (with `watch`) whenever the
/// file's contents change. Runs until the pipeline stops listening.
///
/// `--watch` compares the file's bytes once a second rather than using a file-system
/// watcher: editors and config-management tools replace files (rename over them), which
/// a watch on the file itself misses, and one small read a second costs nothing.
pub async fn reload_on_request(path: PathBuf, watch: bool, reloads: mpsc::Sender<PipelineConfig>) {
    let mut last = std::fs::read(&path).ok();
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            warn!(%error, "cannot listen for SIGHUP; reload with --watch only");
            None
        }
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            Some(()) = hangup_received => "SIGHUP",
            _ = tick.tick(), if watch => {
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                "the file changed"
            }
        };
        info!(config = %path.display(), "{why}: reloading");
        let Some(config) = load(&path) else { continue };
        if reloads.send(config).await.is_err() {
            return;
        }
    }
}

/// The file, validated; `None` (with every problem logged) when it is not valid.
fn load(path: &Path) -> Option<PipelineConfig> {
    match config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                warn!("{warning}");
            }
            Some(config)
        }
        Err(errors) => {
            for problem in &errors.0 {
                error!("{problem}");
            }
            error!(
                problems = errors.0.len(),
                "reload refused: the file is not valid; the running pipeline is unchanged"
            );
            None
        }
    }
}
