//! Bounded ingest: what senders, hostile or unlucky, can make the `http_server` source
//! hold, and that each bound is answered (408, 413, 503 + `Retry-After`) rather than
//! waited out. The memory and file-descriptor cases run the real binary (`webhook-sink
//! run`) and read its peak RSS (`VmHWM`) and open files from `/proc`; the others run the
//! source in process. Clients are raw sockets on loopback, so what is sent, and when,
//! is under the test's control. Every wait is bounded; every child is killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::source_http_server::{start_with, Harness};
use crate::support::{self, free_addr, Receiver};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Raw client

/// An answer: status, headers (lower-case names), the JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        self.body["error"].as_str().unwrap_or_default().to_string()
    }
}

/// Reads one answer; `None` if the connection ends (or fails) before a whole one.
async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok())?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&body[..len]).unwrap_or(Value::Null);
    Some(Answer { status, headers, body })
}

fn post_head(length: usize) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/x-ndjson\r\ncontent-length: {length}\r\n\r\n")
        .into_bytes()
}

/// A whole POST on a new connection, answered within `within`.
async fn post(addr: SocketAddr, body: &[u8], within: Duration) -> Answer {
    timeout(within, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&post_head(body.len())).await.expect("write the head");
        stream.write_all(body).await.expect("write the body");
        read_answer(&mut stream).await.expect("an answer")
    })
    .await
    .unwrap_or_else(|_| panic!("no answer to a POST within {within:?}"))
}

/// `GET /health` on a new connection, answered within `within`.
async fn health(addr: SocketAddr, within: Duration) -> Answer {
    timeout(within, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n").await.expect("write");
        read_answer(&mut stream).await.expect("an answer")
    })
    .await
    .unwrap_or_else(|_| panic!("/health did not answer within {within:?}"))
}

/// Whether the peer closed the connection (read gives 0 or an error) within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut rest = [0u8; 1024];
    loop {
        match timeout(within, stream.read(&mut rest)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn event_line(i: usize, details: usize) -> String {
    format!(
        "{{\"eventType\":\"alert-created\",\"id\":\"{i}\",\"alertKey\":\"k{i}\",\"summary\":\"host {i} is down\",\"details\":\"{}\"}}\n",
        "x".repeat(details)
    )
}

/// NDJSON of about `size` bytes, of events of about 300 bytes.
fn ndjson(size: usize) -> Vec<u8> {
    let mut body = String::new();
    let mut i = 0;
    loop {
        let line = event_line(i, 200);
        if body.len() + line.len() > size {
            break;
        }
        body.push_str(&line);
        i += 1;
    }
    body.into_bytes()
}

// ---------------------------------------------------------------------------------------
// In-process source

async fn stop(h: Harness) {
    h.shutdown.cancel();
    drop(h.rx);
    let _ = timeout(WAIT, h.source).await.expect("the source stops in time");
}

// ---------------------------------------------------------------------------------------
// The real binary

/// A running `webhook-sink run` (its log in a file), killed and reaped on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    source: SocketAddr,
    _dir: support::Dir,
}

impl Proc {
    /// Runs a pipeline: an `http_server` source with `source_extra` keys, and a webhook
    /// sink per `(name, extra keys)` of `sinks`, all to `url`. `nofile`: the open-file
    /// limit of the process (`ulimit -n`).
    async fn run(source_extra: &str, sinks: &[(&str, &str)], url: &str, nofile: Option<u32>) -> Proc {
        let dir = support::Dir::new();
        let source = free_addr();
        let data = dir.0.path().join("data");
        let mut text = format!(
            "data_dir = '{}'\nshutdown_timeout_secs = 1\n\n[sources.in]\ntype = \"http_server\"\naddress = \"{source}\"\n{source_extra}\n",
            data.display()
        );
        for (name, extra) in sinks {
            text.push_str(&format!(
                "\n[sinks.{name}]\ntype = \"webhook\"\ninputs = [\"in\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n{extra}\n"
            ));
        }
        let config = dir.write("pipeline.toml", &text);
        let log = dir.0.path().join("log");
        let file = std::fs::File::create(&log).unwrap();
        let bin = env!("CARGO_BIN_EXE_webhook-sink");
        let mut command = match nofile {
            // `ulimit` in a shell that then becomes the binary (`libc` is not a dependency).
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .env("WEBHOOK_SINK_LOG", "warn")
            .spawn()
            .expect("start webhook-sink");
        let proc = Proc { child, log, source, _dir: dir };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(source).await.is_err() {
            assert!(Instant::now() < deadline, "webhook-sink did not listen; log:\n{}", proc.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proc
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status_kb(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc/PID/status");
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Peak resident memory, in MiB.
    fn peak_rss_mib(&self) -> u64 {
        self.status_kb("VmHWM:") / 1024
    }

    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// 1. Memory, time and connections

/// 60 connections each send a 10 MiB body (the default `max_body_bytes`), all but its
/// last byte, and wait. Before: every byte was kept (RSS 14 → 617 MB) and none was
/// answered. Now bodies count against `max_inflight_body_bytes` (128 MiB) as they
/// arrive; the ones that would go over it are read on but thrown away, and answered 503
/// + `Retry-After` once sent. All defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_big_bodies_at_once_keep_memory_bounded() {
    let receiver = Receiver::http().await;
    let proc = Proc::run("", &[("hook", "")], &receiver.url("/"), None).await;
    let start_rss = proc.peak_rss_mib();
    let body = Arc::new(ndjson(10 * MIB - 4096));
    let mut clients = Vec::new();
    for _ in 0..60 {
        let (addr, body) = (proc.source, body.clone());
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(&post_head(body.len())).await.expect("write the head");
            stream.write_all(&body[..body.len() - 1]).await.expect("write the body");
            stream
        }));
    }
    let mut streams = Vec::new();
    for client in clients {
        streams.push(timeout(Duration::from_secs(60), client).await.expect("every body is read").unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = proc.peak_rss_mib();
    eprintln!("peak RSS {start_rss} → {peak} MiB with 60 × 10 MiB bodies sent but the last byte");
    assert!(peak < 320, "peak RSS {peak} MiB (from {start_rss}) for 60 × 10 MiB bodies; log:\n{}", proc.log());
    assert_eq!(health(proc.source, Duration::from_secs(2)).await.status, 200, "/health answers meanwhile");

    // The last bytes: the bodies held are decoded (and refused: 35,000 events do not fit
    // a buffer of 1000), the ones thrown away are answered 503.
    let (mut refused, mut held) = (0, 0);
    for mut stream in streams {
        stream.write_all(&body[body.len() - 1..]).await.expect("write the last byte");
        let answer = timeout(WAIT, read_answer(&mut stream)).await.expect("answered at once").expect("whole");
        match answer.status {
            503 => {
                assert_eq!(answer.header("retry-after"), Some("5"), "{answer:?}");
                assert!(answer.error().contains("max_inflight_body_bytes"), "{answer:?}");
                refused += 1;
            }
            413 => {
                assert!(answer.error().contains("buffer.max_events = 1000"), "{answer:?}");
                held += 1;
            }
            _ => panic!("{answer:?}"),
        }
    }
    eprintln!("{held} bodies held (then 413), {refused} refused (503)");
    assert!(held <= 13, "at most 128 MiB of bodies are held: {held}");
    assert!(refused >= 30, "the bodies beyond the budget are refused: {refused}");
    assert!(receiver.requests().is_empty(), "nothing of a refused body is delivered");
}

/// A body that stops after `[` is answered 408 once `body_timeout_secs` have passed,
/// and so is one that trickles (the timeout is for the whole body, not between bytes).
/// Before: never answered.
#[tokio::test]
async fn a_stalled_or_trickling_body_is_answered_408_within_the_timeout() {
    let mut h = start_with(64, |c| c.body_timeout_secs = 1.0).await;

    let started = Instant::now();
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(&post_head(1000)).await.unwrap();
    stream.write_all(b"[").await.unwrap();
    let answer = timeout(Duration::from_secs(5), read_answer(&mut stream)).await.expect("answered").expect("whole");
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "answered after {took:?}");
    assert!(answer.error().contains("body_timeout_secs"), "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut stream, Duration::from_secs(2)).await, "the connection is closed after the 408");

    // A byte every 200 ms keeps the connection busy, not the body on time.
    let started = Instant::now();
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(&post_head(1000)).await.unwrap();
    let answer = timeout(Duration::from_secs(5), async {
        loop {
            tokio::select! {
                answer = read_answer(&mut stream) => break answer,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            // The select dropped the read: resume with a fresh one after one more byte.
            let _ = stream.write_all(b" ").await;
        }
    })
    .await
    .expect("answered");
    let answer = answer.expect("a whole answer");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A body sent on time is taken, and the source goes on.
    let answer = post(h.addr, event_line(1, 10).as_bytes(), WAIT).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(timeout(WAIT, h.rx.recv()).await.unwrap().is_some());
    stop(h).await;
}

/// Keeps `n` connections sending a body slowly: the head of a 1 MiB POST and `[`, then
/// a byte a second. Returns the streams (dropping them ends the trickle).
async fn slow_bodies(addr: SocketAddr, n: usize) -> (Vec<Arc<tokio::sync::Mutex<TcpStream>>>, JoinHandle<()>) {
    let mut streams = Vec::new();
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect(addr).await else { continue };
        if stream.write_all(&post_head(MIB)).await.is_ok() && stream.write_all(b"[").await.is_ok() {
            streams.push(Arc::new(tokio::sync::Mutex::new(stream)));
        }
    }
    let trickle = {
        let streams = streams.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for stream in &streams {
                    let _ = stream.lock().await.write_all(b" ").await;
                }
            }
        })
    };
    (streams, trickle)
}

/// 150 slow bodies hold 150 connections: `/health` and a good sender are still answered
/// at once (the default `max_connections` is 512).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_do_not_stop_health_nor_a_good_sender() {
    let receiver = Receiver::http().await;
    let proc = Proc::run("", &[("hook", "")], &receiver.url("/"), None).await;
    let (streams, trickle) = slow_bodies(proc.source, 150).await;
    assert_eq!(streams.len(), 150);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    assert_eq!(health(proc.source, Duration::from_secs(2)).await.status, 200);
    let answer = post(proc.source, event_line(1, 10).as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1, "the good event is delivered");
    trickle.abort();
}

/// With a low open-file limit (`ulimit -n 128`), 150 slow bodies used to take every file
/// descriptor: `/health` and good senders timed out. Now the source serves fewer
/// connections than the limit allows (warning about it), keeps slots to answer
/// `/health`, and answers a POST over the cap 503 + `Retry-After` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_cannot_take_every_file_descriptor() {
    let receiver = Receiver::http().await;
    let proc = Proc::run("", &[("hook", "")], &receiver.url("/"), Some(128)).await;
    let (_streams, trickle) = slow_bodies(proc.source, 150).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let answer = health(proc.source, Duration::from_secs(2)).await;
    assert_eq!(answer.status, 200, "{answer:?}; log:\n{}", proc.log());
    let answer = post(proc.source, event_line(1, 10).as_bytes(), Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    match answer.status {
        200 => {}
        503 => {
            assert_eq!(answer.header("retry-after"), Some("5"), "{answer:?}");
            assert!(answer.error().contains("too many connections"), "{answer:?}");
        }
        other => panic!("a good sender gets 200 or 503 + Retry-After, got {other}: {answer:?}"),
    }
    let files = proc.open_files();
    assert!(files < 128, "{files} files open with a limit of 128");
    let log = proc.log();
    assert!(log.contains("open-file limit") && log.contains("max_connections"), "{log}");
    trickle.abort();
}

/// Past `max_connections`, a POST is answered 503 + `Retry-After` and closed, and
/// `/health` still answers; once a connection ends, its slot serves again.
#[tokio::test]
async fn connections_over_the_cap_get_503_and_health_still_answers() {
    let mut h = start_with(64, |c| c.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(h.addr).await.unwrap();
        stream.write_all(&post_head(100)).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let answer = post(h.addr, event_line(1, 10).as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert!(answer.error().contains("too many connections") && answer.error().contains("4"), "{answer:?}");
    assert_eq!(health(h.addr, Duration::from_secs(2)).await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(h.rx.try_recv().is_none(), "nothing of the refused POST was taken");

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = post(h.addr, event_line(2, 10).as_bytes(), WAIT).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(timeout(WAIT, h.rx.recv()).await.unwrap().unwrap().incident.id.as_deref(), Some("2"));
    stop(h).await;
}

/// Bodies count against `max_inflight_body_bytes` as they arrive: one that would go over
/// it is not kept but read on and thrown away, and answered 503 + `Retry-After` as soon
/// as it is sent; the others are taken, and what they held is given back.
#[tokio::test]
async fn bodies_over_the_in_flight_budget_get_503_not_buffered() {
    let mut h = start_with(64, |c| {
        c.max_body_bytes = MIB;
        c.max_inflight_body_bytes = 2 * MIB as u64;
    })
    .await;
    // One event of about 900 KiB per body.
    let body = event_line(0, 900 * 1024).into_bytes();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(h.addr).await.unwrap();
        stream.write_all(&post_head(body.len())).await.unwrap();
        stream.write_all(&body[..body.len() - 10]).await.unwrap();
        streams.push(stream);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 1.8 MiB held: a third body goes over 2 MiB. It is read on, thrown away, and
    // answered once sent.
    let mut third = TcpStream::connect(h.addr).await.unwrap();
    third.write_all(&post_head(body.len())).await.unwrap();
    third.write_all(&body).await.unwrap();
    let answer = timeout(Duration::from_secs(2), read_answer(&mut third)).await.expect("answered at once").unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert!(answer.error().contains("max_inflight_body_bytes = 2097152"), "{answer:?}");

    for mut stream in streams {
        stream.write_all(&body[body.len() - 10..]).await.unwrap();
        let answer = timeout(WAIT, read_answer(&mut stream)).await.unwrap().unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for _ in 0..2 {
        assert!(timeout(WAIT, h.rx.recv()).await.unwrap().is_some());
    }
    // Given back: another body is taken.
    assert_eq!(post(h.addr, &body, WAIT).await.status, 200);
    stop(h).await;
}

// ---------------------------------------------------------------------------------------
// 2. One batch larger than the buffer

/// One 10 MiB NDJSON body of 349,525 tiny events, into three sinks whose buffers hold
/// 1000 events (`buffer.max_events`, memory buffers). Before: accepted whole into each
/// (peak RSS 723 MB with one sink, 912 MB with three). Now: 413 naming the sink and its
/// limit, decoding stops at event 1001, nothing is delivered; a body that fits is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_larger_than_a_sink_buffer_is_refused_whole_and_the_bound_holds() {
    let receiver = Receiver::http().await;
    let sinks = [("a", "buffer.max_events = 1000"), ("b", "buffer.max_events = 5000"), ("c", "")];
    let proc = Proc::run("", &sinks, &receiver.url("/"), None).await;
    let line = b"{\"eventType\":\"alert-created\"}\n";
    let body: Vec<u8> = line.repeat(10 * MIB / line.len());

    let answer = post(proc.source, &body, WAIT).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let error = answer.error();
    assert!(error.contains("at least 1001 events"), "{error}");
    assert!(error.contains("sink `a`") && error.contains("buffer.max_events = 1000"), "{error}");
    assert!(error.contains("nothing of it was"), "{error}");
    let peak = proc.peak_rss_mib();
    assert!(peak < 150, "peak RSS {peak} MiB for a refused 10 MiB body");

    // A body of 1001 small events is refused too; one of 1000 fits every buffer.
    let over: Vec<u8> = line.repeat(1001);
    assert_eq!(post(proc.source, &over, WAIT).await.status, 413);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.requests().is_empty(), "nothing of a refused body is delivered");
    let fits: Vec<u8> = line.repeat(1000);
    let answer = post(proc.source, &fits, WAIT).await;
    assert_eq!((answer.status, &answer.body["accepted"]), (200, &Value::from(1000)), "{answer:?}");
    assert_eq!(receiver.wait_for(3000, WAIT).await.len(), 3000, "1000 events to each of 3 sinks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 3000, "and nothing else");
}

/// With `acknowledgements`, a body larger than the buffer is refused the same way
/// (413, before anything is taken), and one that fits is answered once delivered.
#[tokio::test]
async fn a_too_large_body_is_refused_with_acknowledgements_too() {
    let mut h = start_with(10, |c| c.acknowledgements = true).await;
    let eleven: String = (0..11).map(|i| event_line(i, 10)).collect();
    let answer = post(h.addr, eleven.as_bytes(), WAIT).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.error().contains("sink `sink0`") && answer.error().contains("buffer.max_events = 10"));
    assert!(h.rx.try_recv().is_none());

    let ten: String = (0..10).map(|i| event_line(i, 10)).collect();
    let addr = h.addr;
    let pending = tokio::spawn(async move { post(addr, ten.as_bytes(), WAIT).await });
    for _ in 0..10 {
        assert!(timeout(WAIT, h.rx.recv()).await.unwrap().is_some());
    }
    let answer = pending.await.unwrap();
    assert_eq!((answer.status, &answer.body["delivered"]), (200, &Value::from(true)), "{answer:?}");
    stop(h).await;
}
