//! Real peer programs (Alertmanager, syslog-ng, …) for integration tests.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The peer binary `name` (searched in PATH and `extra_dirs`), or `None` when it is not
/// installed. A missing peer is said loudly on stderr, and is a test failure under CI
/// (`CI` set): `.ci/run` installs every peer, so a missing one there is a broken setup.
pub fn require(name: &str, package: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let found = path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "\n\n*** PEER MISSING: `{name}` is not installed (Debian package `{package}`); this test did NOT run. \
             Install it with `apt-get install {package}` or run .ci/run. ***\n"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("{message}");
    }
    found
}

/// A child process killed (and reaped) when dropped, so no test leaves a peer running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Starts `command`, panicking with the command line if it cannot start.
    pub fn spawn(command: &mut Command) -> KillOnDrop {
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        KillOnDrop(child)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
