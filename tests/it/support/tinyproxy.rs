//! A real HTTP proxy for the proxy tests: Debian's `tinyproxy`, started in the foreground on
//! a free loopback port with a generated config, its log (stdout) collected, killed when
//! dropped.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::peer::{free_port, require, KillOnDrop};

/// Upper bound for tinyproxy to start listening.
const START: Duration = Duration::from_secs(10);

/// A running tinyproxy on 127.0.0.1.
pub struct Tinyproxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<u8>>>,
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy allowing `CONNECT` to `connect_ports`, requiring Basic
    /// `credentials` when given; `None` when tinyproxy is not installed (said loudly by
    /// [`require`], a failure under CI).
    pub async fn start(connect_ports: &[u16], credentials: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let binary = require("tinyproxy", "tinyproxy", &["/usr/sbin", "/usr/bin"])?;
        // The free port may be taken between finding and binding it: try a few.
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let port = free_port();
            let mut config = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 50\nLogLevel Connect\n"
            );
            for p in connect_ports {
                config.push_str(&format!("ConnectPort {p}\n"));
            }
            if let Some((user, password)) = credentials {
                config.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            let path = dir.path().join("tinyproxy.conf");
            std::fs::write(&path, config).expect("write tinyproxy.conf");
            let mut command = Command::new(&binary);
            command.arg("-d").arg("-c").arg(&path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = KillOnDrop::spawn(&mut command);
            let log: Arc<Mutex<Vec<u8>>> = Arc::default();
            for pipe in [
                child.0.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
                child.0.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let log = log.clone();
                std::thread::spawn(move || collect(pipe, &log));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + START;
            let started = loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break true;
                }
                if matches!(child.0.try_wait(), Ok(Some(_))) || Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if started {
                return Some(Tinyproxy { addr, log, _child: child, _dir: dir });
            }
            last_log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        }
        panic!("tinyproxy did not start listening within {START:?}; its log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT` (both used as given: percent-encode them).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Everything tinyproxy logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// The request lines tinyproxy logged (`POST http://… HTTP/1.1`, `CONNECT host:port
    /// HTTP/1.1`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("Request (file descriptor"))
            .filter_map(|line| line.split_once("): "))
            .map(|(_, request)| request.trim().to_string())
            .collect()
    }
}

fn collect(mut pipe: impl Read, log: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => log.lock().unwrap().extend_from_slice(&buf[..n]),
        }
    }
}
