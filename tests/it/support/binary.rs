//! The `webhook-sink` binary run by a test: its stderr collected line by line, signals,
//! and bounded waits for a log line or for the exit.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::peer::KillOnDrop;

/// Longest wait for a log line.
const WAIT: Duration = Duration::from_secs(20);

/// A running `webhook-sink` (killed when dropped).
pub struct Binary {
    /// The process.
    pub child: KillOnDrop,
    log: Arc<Mutex<String>>,
}

impl Binary {
    /// Runs `webhook-sink ARGS --config FILE`, stdout discarded, stderr collected.
    pub fn start(args: &[&str], file: &Path) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
        command.args(args).arg("--config").arg(file).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = KillOnDrop::spawn(&mut command);
        let stderr = child.0.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Binary { child, log }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until `text` is in the log.
    pub async fn wait_log(&self, text: &str) {
        self.wait_log_times(text, 1).await;
    }

    /// Waits (bounded) until `text` is in the log `times` times.
    pub async fn wait_log_times(&self, text: &str, times: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(text).count() < times {
            assert!(Instant::now() < deadline, "no `{text}` (x{times}) in the log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends signal `name` (`HUP`, `TERM`, `INT`) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.0.id().to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// The exit status, waiting at most `within`; `None` if still running then.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
