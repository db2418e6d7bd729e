//! The `http_server` source over loopback, with a tiny raw HTTP/1.1 client so that
//! lying content-lengths, chunked bodies and keep-alive are under the test's control.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use support::free_addr;
use webhook_sink::buffer::{event_channel, EventReceiver};
use webhook_sink::component::{SourceConfig, SourceContext};
use webhook_sink::sources::http_server::HttpServerSourceConfig;

const WAIT: Duration = Duration::from_secs(10);

/// An `http_server` source running in-process, its events in `rx`.
pub(crate) struct Harness {
    pub(crate) addr: SocketAddr,
    pub(crate) rx: EventReceiver,
    pub(crate) shutdown: CancellationToken,
    pub(crate) source: JoinHandle<Result<(), ()>>,
}

/// Starts a source on a free loopback port, its config edited by `edit`, sending into a
/// channel of `capacity` events.
pub(crate) async fn start_with(capacity: usize, edit: impl FnOnce(&mut HttpServerSourceConfig)) -> Harness {
    let mut config = HttpServerSourceConfig::new(free_addr());
    edit(&mut config);
    let (out, rx) = event_channel(capacity);
    let shutdown = CancellationToken::new();
    let cx = SourceContext {
        name: "web".into(),
        out,
        shutdown: shutdown.clone(),
        stats: Default::default(),
        listeners: Default::default(),
    };
    let source = config.build(cx).await.expect("the source builds");
    Harness { addr: config.address, rx, shutdown, source: tokio::spawn(source) }
}

async fn start() -> Harness {
    start_with(64, |_| {}).await
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.body))
    }
}

/// Reads one response (headers, then `content-length` bytes of body).
async fn read_response(stream: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "connection closed before a full response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").expect("content-length").1.parse().unwrap();
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read the body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&body[..len]).expect("a JSON body");
    Resp { status, headers, body }
}

/// Sends raw request bytes on a new connection and reads the answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    timeout(WAIT, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write the request");
        read_response(&mut stream).await
    })
    .await
    .expect("an answer in time")
}

fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
    raw(addr, &request("POST", path, body)).await
}

async fn recv_ids(rx: &mut EventReceiver, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let event = timeout(WAIT, rx.recv()).await.expect("an event in time").expect("an open channel");
        ids.push(event.incident.id.as_deref().unwrap_or_default().to_string());
    }
    ids
}

fn assert_json(resp: &Resp) {
    assert_eq!(resp.header("content-type"), Some("application/json"), "{resp:?}");
}

async fn stop(h: Harness) {
    h.shutdown.cancel();
    let result = timeout(WAIT, h.source).await.expect("the source stops in time").unwrap();
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn object_array_and_ndjson_are_accepted_in_order() {
    let mut h = start().await;

    let resp = post(h.addr, "/", r#"{"eventType":"alert-created","id":"1"}"#).await;
    assert_eq!((resp.status, &resp.body), (200, &serde_json::json!({"accepted": 1})));
    assert_json(&resp);
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["1"]);

    let array = r#"[{"eventType":"alert-created","id":"2"},{"eventType":"alert-resolved","id":"3"}]"#;
    let resp = post(h.addr, "/", array).await;
    assert_eq!((resp.status, &resp.body["accepted"]), (200, &Value::from(2)));
    assert_eq!(recv_ids(&mut h.rx, 2).await, ["2", "3"]);

    let ndjson = "{\"eventType\":\"alert-created\",\"id\":\"4\"}\n\n{\"eventType\":\"alert-created\",\"id\":\"5\"}\n{\"eventType\":\"alert-created\",\"id\":\"6\"}\n";
    let resp = post(h.addr, "/", ndjson).await;
    assert_eq!((resp.status, &resp.body["accepted"]), (200, &Value::from(3)));
    assert_eq!(recv_ids(&mut h.rx, 3).await, ["4", "5", "6"]);

    stop(h).await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let mut h = start_with(64, |c| c.path = "/events".into()).await;
    timeout(WAIT, async {
        let mut stream = TcpStream::connect(h.addr).await.unwrap();
        for id in ["a", "b", "c"] {
            let body = format!(r#"{{"eventType":"alert-created","id":"{id}"}}"#);
            stream.write_all(&request("POST", "/events?from=test", &body)).await.unwrap();
            let resp = read_response(&mut stream).await;
            assert_eq!(resp.status, 200, "{resp:?}");
        }
    })
    .await
    .unwrap();
    assert_eq!(recv_ids(&mut h.rx, 3).await, ["a", "b", "c"]);
    stop(h).await;
}

#[tokio::test]
async fn malformed_body_is_rejected_whole() {
    let mut h = start().await;
    let body = "{\"eventType\":\"alert-created\",\"id\":\"ok\"}\n{\"eventType\":\"alert-created\",\"summary\":5}\n";
    let resp = post(h.addr, "/", body).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_json(&resp);
    assert!(resp.error().starts_with("event 2 at line 2, column "), "{}", resp.error());
    assert!(resp.error().contains("summary"), "{}", resp.error());

    let resp = post(h.addr, "/", "[{\"eventType\":\"alert-created\"},\n {\"id\":\"7\"}]").await;
    assert_eq!(resp.status, 400);
    assert!(resp.error().contains("eventType"), "{}", resp.error());

    let resp = post(h.addr, "/", "{\"eventType\": ").await;
    assert_eq!(resp.status, 400);
    let resp = post(h.addr, "/", "").await;
    assert_eq!(resp.status, 400);

    // Nothing of the rejected bodies went through, and the source still takes events.
    assert!(h.rx.try_recv().is_none());
    let resp = post(h.addr, "/", r#"{"eventType":"alert-created","id":"after"}"#).await;
    assert_eq!(resp.status, 200);
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["after"]);
    stop(h).await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let mut h = start_with(64, |c| c.max_body_bytes = 64).await;

    // Declared too large: answered without the body being sent at all.
    let head = b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 1000000\r\n\r\n";
    let resp = raw(h.addr, head).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert_json(&resp);
    assert!(resp.error().contains("64"), "{}", resp.error());

    // Chunked, found too large while reading.
    let chunk = format!(r#"{{"eventType":"alert-created","id":"{}"}}"#, "x".repeat(10));
    let mut chunked = b"POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(h.addr, &chunked).await;
    assert_eq!(resp.status, 413, "{resp:?}");

    // A chunked body within the limit is taken.
    let small = r#"{"eventType":"alert-created","id":"s"}"#;
    let mut chunked = b"POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let (a, b) = small.split_at(10);
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(h.addr, &chunked).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["s"]);
    assert!(h.rx.try_recv().is_none());
    stop(h).await;
}

#[tokio::test]
async fn routes_methods_and_health() {
    let h = start_with(64, |c| c.path = "/events".into()).await;

    let resp = raw(h.addr, &request("GET", "/events", "")).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));
    assert_json(&resp);

    let resp = raw(h.addr, &request("PUT", "/events", "{}")).await;
    assert_eq!(resp.status, 405);

    let resp = post(h.addr, "/", r#"{"eventType":"alert-created"}"#).await;
    assert_eq!(resp.status, 404);
    assert_json(&resp);
    assert!(resp.error().contains("/events"), "{}", resp.error());

    let resp = raw(h.addr, &request("GET", "/nope", "")).await;
    assert_eq!(resp.status, 404);

    let resp = raw(h.addr, &request("GET", "/health", "")).await;
    assert_eq!((resp.status, &resp.body), (200, &serde_json::json!({"status": "ok"})));
    assert_json(&resp);
    stop(h).await;
}

#[tokio::test]
async fn closed_pipeline_answers_503() {
    let h = start().await;
    let Harness { addr, rx, shutdown, source } = h;
    drop(rx);
    let resp = post(addr, "/", r#"{"eventType":"alert-created"}"#).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.error(), "the pipeline is shutting down");
    shutdown.cancel();
    assert_eq!(timeout(WAIT, source).await.unwrap().unwrap(), Ok(()));
}

const THREE: &str = "{\"eventType\":\"alert-created\",\"id\":\"1\"}\n{\"eventType\":\"alert-created\",\"id\":\"2\"}\n{\"eventType\":\"alert-created\",\"id\":\"3\"}\n";

#[tokio::test]
async fn a_full_sink_gets_503_with_retry_after_and_nothing_is_half_taken() {
    let mut h = start_with(3, |c| {
        c.retry_after_secs = 7;
        c.full_wait_ms = 0;
    })
    .await;
    let one = |id: &str| format!("{{\"eventType\":\"alert-created\",\"id\":\"{id}\"}}\n");
    assert_eq!(post(h.addr, "/", &one("0")).await.status, 200);

    // Room for two more; a body of three is refused whole, with a hint when to retry.
    let resp = post(h.addr, "/", THREE).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert!(resp.error().contains("no room"), "{resp:?}");
    assert_json(&resp);

    // Once the sink has taken what it holds, the retried body goes through.
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["0"]);
    let resp = post(h.addr, "/", THREE).await;
    assert_eq!((resp.status, &resp.body["accepted"]), (200, &Value::from(3)));
    assert_eq!(recv_ids(&mut h.rx, 3).await, ["1", "2", "3"]);
    assert!(h.rx.try_recv().is_none(), "the refused body left nothing behind");
    stop(h).await;
}

#[tokio::test]
async fn a_full_sink_slows_the_sender_down_until_there_is_room() {
    let mut h = start_with(3, |c| c.full_wait_ms = 20_000).await;
    let one = |id: &str| format!("{{\"eventType\":\"alert-created\",\"id\":\"{id}\"}}\n");
    assert_eq!(post(h.addr, "/", &one("0")).await.status, 200);

    // Room for two more: a body of three waits instead of being refused…
    let addr = h.addr;
    let mut pending = tokio::spawn(async move { post(addr, "/", THREE).await });
    assert!(timeout(Duration::from_millis(300), &mut pending).await.is_err(), "answered while there was no room");
    // …and is taken whole as soon as the sink has taken what it held.
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["0"]);
    let resp = timeout(WAIT, pending).await.expect("answered once there was room").unwrap();
    assert_eq!((resp.status, &resp.body["accepted"]), (200, &Value::from(3)), "{resp:?}");
    assert_eq!(recv_ids(&mut h.rx, 3).await, ["1", "2", "3"]);
    stop(h).await;
}

#[tokio::test]
async fn a_sink_that_stays_full_gets_503_once_the_wait_is_over() {
    let h = start_with(1, |c| c.full_wait_ms = 300).await;
    assert_eq!(post(h.addr, "/", r#"{"eventType":"alert-created"}"#).await.status, 200);
    let started = std::time::Instant::now();
    let resp = post(h.addr, "/", r#"{"eventType":"alert-created"}"#).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "refused before the wait was over");
    assert_eq!(resp.header("retry-after"), Some("5"));
    stop(h).await;
}

#[tokio::test]
async fn a_request_waiting_for_room_is_answered_503_when_shutdown_begins() {
    let h = start_with(1, |c| c.full_wait_ms = 60_000).await;
    assert_eq!(post(h.addr, "/", r#"{"eventType":"alert-created"}"#).await.status, 200);
    let addr = h.addr;
    let mut pending = tokio::spawn(async move { post(addr, "/", r#"{"eventType":"alert-created"}"#).await });
    assert!(timeout(Duration::from_millis(300), &mut pending).await.is_err(), "answered while there was no room");
    h.shutdown.cancel();
    let resp = timeout(WAIT, pending).await.expect("answered once shutdown began").unwrap();
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.error(), "the pipeline is shutting down");
    assert_eq!(timeout(WAIT, h.source).await.unwrap().unwrap(), Ok(()));
}

#[tokio::test]
async fn acknowledgements_answer_once_delivered() {
    let mut h = start_with(8, |c| c.acknowledgements = true).await;
    let addr = h.addr;
    let mut pending = tokio::spawn(async move { post(addr, "/", THREE).await });
    assert!(
        timeout(Duration::from_millis(300), &mut pending).await.is_err(),
        "answered before the events were delivered"
    );
    assert_eq!(recv_ids(&mut h.rx, 3).await, ["1", "2", "3"]);
    let resp = timeout(WAIT, pending).await.expect("answered once delivered").unwrap();
    assert_eq!((resp.status, &resp.body["delivered"]), (200, &Value::from(true)), "{resp:?}");
    stop(h).await;
}

async fn wait_until_refused(addr: SocketAddr) {
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("new connections are refused after shutdown");
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let Harness { addr, mut rx, shutdown, mut source } = start_with(8, |c| c.acknowledgements = true).await;

    // An idle keep-alive connection, to be closed by the shutdown.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&request("GET", "/health", "")).await.unwrap();
    assert_eq!(timeout(WAIT, read_response(&mut idle)).await.unwrap().status, 200);

    let mut pending = tokio::spawn(async move { post(addr, "/", THREE).await });
    assert!(timeout(Duration::from_millis(300), &mut pending).await.is_err(), "waiting for the acknowledgement");

    shutdown.cancel();
    wait_until_refused(addr).await;
    // The request in flight keeps the source running.
    assert!(timeout(Duration::from_millis(200), &mut source).await.is_err(), "stopped with a request in flight");
    assert!(!pending.is_finished());

    // The idle connection was closed.
    let mut rest = Vec::new();
    let n = timeout(WAIT, idle.read_to_end(&mut rest)).await.expect("the idle connection closes").unwrap_or(0);
    assert_eq!(n, 0);

    assert_eq!(recv_ids(&mut rx, 3).await, ["1", "2", "3"]);
    let resp = timeout(WAIT, pending).await.expect("answered once drained").unwrap();
    assert_eq!((resp.status, &resp.body["accepted"]), (200, &Value::from(3)));

    let result = timeout(WAIT, source).await.expect("the source stops once the request is answered").unwrap();
    assert_eq!(result, Ok(()));
    assert!(TcpStream::connect(addr).await.is_err(), "connections are refused after shutdown");
    // The source let go of its output: the channel is closed.
    assert!(timeout(WAIT, rx.recv()).await.unwrap().is_none());
}

fn with_header(method: &str, path: &str, header: &str, body: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nhost: test\r\n{header}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

#[tokio::test]
async fn bearer_auth_is_required_when_configured() {
    use webhook_sink::sources::auth::AuthConfig;
    let mut h = start_with(8, |c| c.auth = Some(AuthConfig::Bearer { token: "s3cret-token".into() })).await;
    let body = r#"{"eventType":"alert-created","id":"1"}"#;

    let resp = post(h.addr, "/", body).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    assert_eq!(resp.error(), "missing or wrong credentials");
    let resp = raw(h.addr, &with_header("POST", "/", "authorization: Bearer wrong", body)).await;
    assert_eq!(resp.status, 401);
    let resp = raw(h.addr, &with_header("POST", "/", "authorization: Bearer s3cret-token", body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["1"]);
    // Health probes need no credentials.
    assert_eq!(raw(h.addr, &request("GET", "/health", "")).await.status, 200);
    assert!(h.rx.try_recv().is_none(), "rejected requests sent nothing");
    stop(h).await;
}

#[tokio::test]
async fn basic_auth_is_required_when_configured() {
    use webhook_sink::sources::auth::AuthConfig;
    let mut h =
        start_with(8, |c| c.auth = Some(AuthConfig::Basic { username: "am".into(), password: "p@ss".into() })).await;
    let body = r#"{"eventType":"alert-created","id":"2"}"#;
    let resp = post(h.addr, "/", body).await;
    assert_eq!((resp.status, resp.header("www-authenticate")), (401, Some("Basic realm=\"webhook-sink\"")));
    // base64("am:p@ss")
    let resp = raw(h.addr, &with_header("POST", "/", "authorization: Basic YW06cEBzcw==", body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["2"]);
    stop(h).await;
}

#[tokio::test]
async fn too_deep_json_is_refused_with_its_position() {
    let mut h = start_with(8, |c| c.decoding.max_depth = 3).await;
    let deep = r#"{"eventType":"alert-created","id":"1","x":{"y":{"z":{}}}}"#;
    let resp = post(h.addr, "/", deep).await;
    assert_eq!(resp.status, 400);
    assert!(
        resp.error().contains("line 1, column 53") && resp.error().contains("deeper than the limit of 3"),
        "{resp:?}"
    );
    let ok = r#"{"eventType":"alert-created","id":"2","x":{"y":{}}}"#;
    assert_eq!(post(h.addr, "/", ok).await.status, 200);
    assert_eq!(recv_ids(&mut h.rx, 1).await, ["2"]);
    stop(h).await;
}
