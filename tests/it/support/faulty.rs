//! A fault-injecting loopback HTTP/1.1 receiver (hyper 1) for delivery tests.
//!
//! Every request is recorded ([`Hit`]: arrival order, body, headers with `webhook-id`,
//! the fault applied, when and how it was answered) and answered as a script says:
//!
//! 1. a per-key script (the key is a field of the JSON body, `id` by default): a queue of
//!    faults consumed one per request of that key, then an optional fault for the key;
//! 2. a rule, a function of the request ([`RequestInfo`]: arrival number, key, body,
//!    attempt number of its `webhook-id`), that may pick a fault;
//! 3. a global queue of faults, consumed one per request;
//! 4. the default fault ([`Fault::Ok`] unless set).
//!
//! [`Faulty::down`] stops listening and closes every open connection (new connections
//! are refused); [`Faulty::up`] listens again on the same port (`SO_REUSEADDR`).
//!
//! [`rate_limit`] is a rule for an endpoint that enforces a rate limit the way chat
//! services do: 429 + `Retry-After` beyond it.
//!
//! Bounded: a body is read for at most [`IO_TIMEOUT`], at most [`MAX_HITS`] requests are
//! recorded, a [`Fault::Delay`] is capped at [`MAX_DELAY`]. A [`Fault::Hang`] holds its
//! request until the receiver goes down or is dropped. Dropping the receiver stops it and
//! every connection.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for reading one request body.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests recorded at most; later ones are still answered.
pub const MAX_HITS: usize = 100_000;
/// Longest [`Fault::Delay`] honoured.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// How one request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 200 `ok`.
    Ok,
    /// This status, body `fault`.
    Status(u16),
    /// This status with this `Retry-After` value (seconds, or an HTTP date: see
    /// [`Fault::retry_after_date`]).
    StatusRetryAfter(u16, String),
    /// The request is read, then the TCP connection is closed without an answer (RST).
    Reset,
    /// The request is read and never answered (until the receiver goes down or is dropped).
    Hang,
    /// 200 after this many milliseconds.
    Delay(u64),
}

impl Fault {
    /// `status` with `Retry-After` as the HTTP date `after` from now (whole seconds, so the
    /// wait it asks for is between `after - 1s` and `after`).
    pub fn retry_after_date(status: u16, after: Duration) -> Fault {
        Fault::StatusRetryAfter(status, httpdate::fmt_http_date(SystemTime::now() + after))
    }
}

/// What a rule sees of a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Arrival number, from 0.
    pub seq: usize,
    /// The body's key field (`id` unless [`Faulty::set_key_field`]), as text.
    pub key: Option<String>,
    /// The body as JSON, if it is.
    pub json: Option<serde_json::Value>,
    /// The `webhook-id` header.
    pub webhook_id: Option<String>,
    /// How many requests with this `webhook-id` arrived so far, this one included (1 for
    /// the first attempt); 1 when there is no `webhook-id`.
    pub attempt: u32,
    /// Lowercase names, raw values, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestInfo {
    /// The first value of header `name`, as text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }
}

fn header_value(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Arrival number, from 0.
    pub seq: usize,
    /// When it was read.
    pub arrived: Instant,
    /// When the answer was produced (`None`: reset, hanging, or not yet answered).
    pub answered: Option<Instant>,
    /// The status answered (`None`: reset, hanging, or not yet answered).
    pub status: Option<u16>,
    /// The fault applied.
    pub fault: Fault,
    /// The body's key field, as text.
    pub key: Option<String>,
    /// The `webhook-id` header.
    pub webhook_id: Option<String>,
    /// Attempt number of its `webhook-id` (see [`RequestInfo::attempt`]).
    pub attempt: u32,
    /// Lowercase names, raw values, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
    /// The body as JSON, if it is.
    pub json: Option<serde_json::Value>,
}

impl Hit {
    /// Whether it was answered 2xx.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The first value of header `name`, as text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }

    /// Field `name` of the JSON body, as text (strings as they are, other values as JSON).
    pub fn field(&self, name: &str) -> Option<String> {
        self.json.as_ref().and_then(|j| j.get(name)).map(value_text)
    }
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

type Rule = Box<dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync>;

/// A rule ([`Faulty::set_rule`]) for an endpoint that takes at most `limit` requests in any
/// window of `per` (a sliding window: the strictest reading of "`limit` per `per`", so
/// requests bunched by a sender's jitter are refused). A request over the limit is answered
/// 429 with `Retry-After`: the whole seconds until the window has room again (at least 1).
/// A refused request does not use up the limit; one let through falls through to the rest
/// of the script (the global queue, then the default).
pub fn rate_limit(limit: usize, per: Duration) -> impl Fn(&RequestInfo) -> Option<Fault> + Send + Sync {
    let taken: Mutex<VecDeque<Instant>> = Mutex::new(VecDeque::new());
    move |_| {
        let now = Instant::now();
        let mut taken = lock(&taken);
        while taken.front().is_some_and(|at| now.duration_since(*at) >= per) {
            taken.pop_front();
        }
        if taken.len() < limit {
            taken.push_back(now);
            return None;
        }
        let room_in = per.saturating_sub(now.duration_since(taken[0]));
        let secs = room_in.as_secs() + u64::from(room_in.subsec_nanos() > 0);
        Some(Fault::StatusRetryAfter(429, secs.max(1).to_string()))
    }
}

struct KeyScript {
    queue: VecDeque<Fault>,
    then: Option<Fault>,
}

struct Script {
    key_field: String,
    by_key: HashMap<String, KeyScript>,
    rule: Option<Rule>,
    queue: VecDeque<Fault>,
    default: Fault,
}

impl Script {
    fn pick(&mut self, info: &RequestInfo) -> Fault {
        if let Some(script) = info.key.as_ref().and_then(|k| self.by_key.get_mut(k)) {
            if let Some(fault) = script.queue.pop_front() {
                return fault;
            }
            if let Some(fault) = &script.then {
                return fault.clone();
            }
        }
        if let Some(fault) = self.rule.as_ref().and_then(|rule| rule(info)) {
            return fault;
        }
        self.queue.pop_front().unwrap_or_else(|| self.default.clone())
    }
}

struct Record {
    hits: Vec<Hit>,
    arrivals: usize,
    attempts: HashMap<String, u32>,
}

struct Shared {
    script: Mutex<Script>,
    record: Mutex<Record>,
    /// Bumped on every arrival and every answer, for the waits.
    changes: watch::Sender<u64>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connections: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A fault-injecting loopback HTTP receiver. Drop stops it.
pub struct Faulty {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Faulty {
    /// Listens on `127.0.0.1:0`; every request answered [`Fault::Ok`] until scripted.
    pub async fn start() -> Faulty {
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind the faulty receiver");
        let addr = listener.local_addr().expect("local address of the faulty receiver");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                key_field: "id".to_string(),
                by_key: HashMap::new(),
                rule: None,
                queue: VecDeque::new(),
                default: Fault::Ok,
            }),
            record: Mutex::new(Record { hits: Vec::new(), arrivals: 0, attempts: HashMap::new() }),
            changes: watch::channel(0).0,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Faulty { addr, shared, server: Mutex::new(Some(task)) }
    }

    /// Its address (the same after [`Faulty::down`] / [`Faulty::up`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// The JSON body field per-key scripts and [`RequestInfo::key`] use (default `id`).
    pub fn set_key_field(&self, field: &str) {
        lock(&self.shared.script).key_field = field.to_string();
    }

    /// Faults for the next requests (after per-key scripts and the rule), one each.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.script).queue.extend(faults);
    }

    /// The fault once everything else is used up (default [`Fault::Ok`]).
    pub fn set_default(&self, fault: Fault) {
        lock(&self.shared.script).default = fault;
    }

    /// Requests whose key is `key` get `faults`, one each, then `then` for ever (`None`:
    /// the rule, the global queue and the default decide).
    pub fn script_key(&self, key: &str, faults: impl IntoIterator<Item = Fault>, then: Option<Fault>) {
        let script = KeyScript { queue: faults.into_iter().collect(), then };
        lock(&self.shared.script).by_key.insert(key.to_string(), script);
    }

    /// A rule consulted after the per-key scripts (`None` from it: fall through).
    pub fn set_rule(&self, rule: impl Fn(&RequestInfo) -> Option<Fault> + Send + Sync + 'static) {
        lock(&self.shared.script).rule = Some(Box::new(rule));
    }

    /// Stops listening and closes every connection (hanging ones too): connections are
    /// refused until [`Faulty::up`].
    pub async fn down(&self) {
        let task = lock(&self.server).take();
        if let Some(task) = task {
            task.abort();
            // Resolves once the task (listener and connections) has been dropped.
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match listen(self.addr) {
                Ok(listener) => break listener,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the faulty receiver cannot listen on {} again: {e}", self.addr),
            }
        };
        let task = tokio::spawn(accept_loop(listener, self.shared.clone()));
        *lock(&self.server) = Some(task);
    }

    /// Every request recorded so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.shared.record).hits.clone()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(Hit::delivered).collect()
    }

    /// Waits (at most `timeout`) until `done` holds for the hits; returns them either way.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.hits(),
            }
        }
    }

    /// Waits (at most `timeout`) until `n` requests were answered 2xx; returns those.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        self.wait_until(timeout, |hits| hits.iter().filter(|h| h.delivered()).count() >= n).await;
        self.delivered()
    }

    /// Waits until nothing new has happened for `quiet`, at most `timeout` in all.
    pub async fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let until = (tokio::time::Instant::now() + quiet).min(deadline);
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < deadline => {}
                _ => return self.hits(),
            }
        }
    }

    /// Requests being handled now (read, not yet answered, reset or dropped).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.server).take() {
            // Aborting the accept loop drops its JoinSet: every connection task ends too.
            task.abort();
        }
    }
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so the port can be taken again after `down`.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        connections.spawn(serve(stream, shared.clone()));
    }
}

/// Serves one connection until the client closes it or a [`Fault::Reset`] kills it.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, to make the close of a reset abortive (RST).
    let (stream, killer) = match split_handle(stream) {
        Ok(pair) => pair,
        Err(_) => return,
    };
    let kill = Arc::new(Notify::new());
    let service = {
        let (shared, kill) = (shared.clone(), kill.clone());
        service_fn(move |req| handle(req, shared.clone(), kill.clone()))
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = kill.notified() => {
            let _ = killer.set_zero_linger();
            // Dropping the connection, then the second handle, closes the socket with RST.
        }
    }
    drop(killer);
}

fn split_handle(stream: TcpStream) -> std::io::Result<(TcpStream, TcpSocket)> {
    let std_stream = stream.into_std()?;
    let second = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, TcpSocket::from_std_stream(second)))
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed();
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    kill: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(IO_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        _ => Vec::new(),
    };
    let _in_flight = InFlight::new(shared.clone());
    let headers: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let webhook_id = parts.headers.get("webhook-id").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let key_field = lock(&shared.script).key_field.clone();
    let key = json.as_ref().and_then(|j| j.get(&key_field)).map(value_text);

    let (index, fault) = {
        // One lock order (record, then script) so arrival numbers and attempts match the
        // order faults are picked in.
        let mut record = lock(&shared.record);
        let seq = record.arrivals;
        record.arrivals += 1;
        let attempt = match &webhook_id {
            Some(id) => {
                let n = record.attempts.entry(id.clone()).or_insert(0);
                *n += 1;
                *n
            }
            None => 1,
        };
        let info = RequestInfo {
            seq,
            key: key.clone(),
            json: json.clone(),
            webhook_id: webhook_id.clone(),
            attempt,
            headers: headers.clone(),
        };
        let fault = lock(&shared.script).pick(&info);
        let index = (record.hits.len() < MAX_HITS).then(|| {
            record.hits.push(Hit {
                seq,
                arrived: Instant::now(),
                answered: None,
                status: None,
                fault: fault.clone(),
                key,
                webhook_id,
                attempt,
                headers,
                body,
                json,
            });
            record.hits.len() - 1
        });
        (index, fault)
    };
    shared.changed();

    let (status, retry_after) = match &fault {
        Fault::Ok => (200, None),
        Fault::Status(status) => (*status, None),
        Fault::StatusRetryAfter(status, value) => (*status, Some(value.clone())),
        Fault::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(*ms).min(MAX_DELAY)).await;
            (200, None)
        }
        Fault::Reset => {
            // The connection task drops the connection; this request is never answered.
            kill.notify_one();
            std::future::pending().await
        }
        Fault::Hang => std::future::pending().await,
    };
    if let Some(index) = index {
        let mut record = lock(&shared.record);
        let hit = &mut record.hits[index];
        hit.answered = Some(Instant::now());
        hit.status = Some(status);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status).header(hyper::header::CONTENT_TYPE, "text/plain");
    if let Some(value) = retry_after {
        response = response.header(hyper::header::RETRY_AFTER, value);
    }
    let body = if status.is_success() { "ok" } else { "fault" };
    Ok(response.body(Full::new(Bytes::from_static(body.as_bytes()))).expect("a valid response"))
}
