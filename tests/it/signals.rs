//! Signals and shutdown: SIGHUP reloads and keeps the process and its memory buffer; a
//! second SIGTERM/SIGINT during shutdown exits at once, counting what is left;
//! `shutdown_timeout_secs` bounds the whole shutdown, a stalled client included.

use crate::support;
use support::binary::Binary;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{free_addr, Receiver};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::topology::Pipeline;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// A pipeline file: an http_server source on `source`, one webhook sink `a` to `url`
/// (retrying quickly and for long), a memory buffer.
fn pipeline_file(dir: &Path, source: SocketAddr, url: &str, shutdown_timeout_secs: u32) -> std::path::PathBuf {
    let text = format!(
        "shutdown_timeout_secs = {shutdown_timeout_secs}\ndata_dir = '{}'\n\
         [sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\
         [sinks.a]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n\
         retry = {{ attempts = 10000, initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }}\n\
         circuit.failures = 0\n",
        dir.display()
    );
    let file = dir.join("p.toml");
    std::fs::write(&file, text).unwrap();
    file
}

async fn post(url: &str, body: String) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(url).body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.unwrap().expect("the source answers");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn batch(n: usize) -> String {
    (0..n).map(|i| format!("{{\"eventType\":\"alert-created\",\"id\":\"{i}\",\"alertKey\":\"k{i}\"}}\n")).collect()
}

#[tokio::test]
async fn sighup_keeps_the_process_and_its_memory_buffer() {
    let receiver = Receiver::http().await;
    receiver.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let source = free_addr();
    let file = pipeline_file(dir.path(), source, &receiver.url("/hook"), 20);
    let mut binary = Binary::start(&["run"], &file);
    binary.wait_log("webhook-sink started").await;
    assert_eq!(post(&format!("http://{source}/"), batch(3)).await, 200);
    // The receiver refuses: the events wait in the memory buffer, retried.
    receiver.wait_for(3, WAIT).await;

    binary.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while !binary.log().contains("SIGHUP: reloading") {
        if let Some(status) = binary.child.0.try_wait().unwrap() {
            panic!("SIGHUP ended the process ({status}), dropping its memory buffer\n{}", binary.log());
        }
        assert!(Instant::now() < deadline, "no reload on SIGHUP:\n{}", binary.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(binary.exit_within(Duration::from_millis(500)).await, None, "SIGHUP ended the process");

    // Nothing was dropped: once the receiver accepts, all three arrive and the process
    // stops cleanly.
    receiver.set_status(200);
    binary.signal("TERM");
    let status = binary.exit_within(WAIT).await.expect("the process exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", binary.log());
    assert!(binary.log().contains("delivered=3"), "{}", binary.log());
}

#[tokio::test]
async fn a_second_signal_during_shutdown_exits_at_once_counting_what_is_left() {
    for (first, second) in [("TERM", "TERM"), ("INT", "TERM"), ("TERM", "INT")] {
        let receiver = Receiver::http().await;
        receiver.set_status(503);
        let dir = tempfile::tempdir().unwrap();
        let source = free_addr();
        // A long shutdown: the sink would retry for a minute before giving up.
        let file = pipeline_file(dir.path(), source, &receiver.url("/hook"), 60);
        let mut binary = Binary::start(&["run"], &file);
        binary.wait_log("webhook-sink started").await;
        assert_eq!(post(&format!("http://{source}/"), batch(3)).await, 200);
        receiver.wait_for(3, WAIT).await;

        binary.signal(first);
        binary.wait_log("shutting down").await;
        assert_eq!(binary.exit_within(Duration::from_millis(300)).await, None, "the first signal waits for the sinks");
        binary.signal(second);
        let status = binary.exit_within(Duration::from_secs(10)).await;
        let log = binary.log();
        let status = status.unwrap_or_else(|| panic!("SIG{first} then SIG{second}: still running\n{log}"));
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains("events in the memory buffer not delivered sink=a events=3"), "{log}");
        assert!(log.contains("not_delivered=3"), "{log}");
    }
}

#[tokio::test]
async fn a_stalled_client_does_not_stretch_the_shutdown_past_shutdown_timeout() {
    let receiver = Receiver::http().await;
    let dir = tempfile::tempdir().unwrap();
    let source = free_addr();
    let text = format!(
        "shutdown_timeout_secs = 1\ndata_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\
         [sinks.a]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\n",
        dir.path().display(),
        receiver.url("/hook")
    );
    let config = load_str(Path::new("p.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
    let run = tokio::spawn(pipeline.run());

    // A client sends its headers and part of the body, then stalls.
    let mut stalled = tokio::net::TcpStream::connect(source).await.unwrap();
    stalled.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"id\":").await.unwrap();
    // One complete request, so the stalled one is surely being read by now.
    assert_eq!(post(&format!("http://{source}/"), batch(1)).await, 200);

    shutdown.cancel();
    // The shutdown ends near the 1 s deadline; before, the stalled request added a fixed 10 s.
    let report = tokio::time::timeout(Duration::from_secs(7), run)
        .await
        .unwrap_or_else(|_| panic!("the shutdown took more than 7 s (shutdown_timeout_secs = 1)"))
        .unwrap();
    assert_eq!(report.abandoned, 0);
    drop(stalled);
}
