//! Shared helpers for the integration tests (`crate::support` in any `tests/it/*.rs`).
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod faulty;
pub mod kafka;
pub mod peer;
pub mod raw_http;
pub mod receiver;
pub mod standard_webhooks;
pub mod tinyproxy;

#[allow(unused_imports)]
pub use certs::TestCerts;
#[allow(unused_imports)]
pub use receiver::{Receiver, Recorded};

/// A loopback address nobody listens on (bound, read, released; fine for tests).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// A temporary directory for config and event files, removed when dropped.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    /// A new empty directory.
    pub fn new() -> Self {
        Dir(tempfile::tempdir().expect("a temporary directory"))
    }

    /// Writes `text` to `name` inside it and returns the path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }
}
