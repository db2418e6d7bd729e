//! The connections a sink sends on: at most `request.concurrency` requests at once, each on
//! a keep-alive HTTP/1.1 connection of its own.
//!
//! Written on hyper's `client::conn::http1` rather than hyper-util's pooled `Client`: a
//! sink sends to one endpoint, with a fixed number of request slots, so a slot and an idle
//! connection are all the pooling it needs. hyper-util's general pool keys every checkout
//! and return by scheme and authority (SipHash, byte by byte), re-creates its idle list
//! whenever it runs empty, and wraps each request in futures and extensions of its own;
//! replacing it took a tenth off webhook-sink's instructions per event
//! (docs/performance.md). What is kept from it: each connection runs as a task of its own
//! (driving all of them from the sink's task was tried, and was slower), keep-alive,
//! TCP_NODELAY and TLS by scheme (the same hyper-rustls connector), a connection the
//! server closed is never reused, and a request that never left because its connection
//! had just closed is sent again on a new one.
//!
//! An idle connection is closed when it is next taken after [`IDLE_TIMEOUT`], or when the
//! server closes it.
//!
//! Requests go out in origin form (`/path?query`), except on a connection to a forwarding
//! proxy (an `http://` webhook through `proxy.http`, see [`super::dial`]): there they keep
//! their absolute URI and get the proxy's `Proxy-Authorization`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
// What the connector says about a connection (`connected()`: is it to a forwarding proxy?).
use hyper_util::client::legacy::connect::Connection as _;
use tokio::sync::{Semaphore, SemaphorePermit};
// The connector is a `tower_service::Service<Uri>`: opening a connection is its `call`.
use tower_service::Service;
use tracing::debug;

use super::client::{Body, Connector};
use super::dial::ForwardProxy;
use super::target::host_header;

/// An idle connection older than this is closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection (TCP or TLS) could not be opened.
    #[error("cannot connect: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP exchange failed (connection reset or closed, malformed answer...).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The request's URI is not absolute (`http://host/...`).
    #[error("request URI {0} has no scheme or host")]
    NotAbsolute(String),
}

/// Where a connection goes.
type Endpoint = (Scheme, Authority);

/// The sending half of an open connection (its other half runs as a task).
struct Connection {
    sender: http1::SendRequest<Body>,
    endpoint: Endpoint,
    idle_since: Instant,
    /// The proxy it goes to, when it is a forwarding proxy's.
    forward: Option<ForwardProxy>,
}

/// A request slot, with the connection its last request went on.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    connection: Option<Connection>,
}

/// At most `limit` requests in flight, each on its own kept-alive connection.
pub struct Connections {
    connector: Connector,
    slots: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("free_slots", &self.slots.available_permits()).finish_non_exhaustive()
    }
}

impl Connections {
    /// Connections opened by `connector`, at most `limit` requests at once (at least one).
    pub fn new(connector: Connector, limit: usize) -> Self {
        Connections { connector, slots: Semaphore::new(limit.max(1)), idle: Mutex::new(Vec::new()) }
    }

    /// Waits for a free request slot.
    pub async fn slot(&self) -> Slot<'_> {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self.slots.acquire().await.expect("the slots semaphore is never closed");
        Slot { _permit: permit, connection: None }
    }

    /// Sends `request` (its URI absolute) on an idle connection to its endpoint, or on a
    /// new one, and returns the answer's head; its body arrives through the connection's
    /// task. A request that a reused connection closed on before writing it is sent again,
    /// once, on a new connection (hyper hands it back untouched).
    pub async fn send(&self, slot: &mut Slot<'_>, request: Request<Body>) -> Result<Response<Incoming>, ExchangeError> {
        let (mut request, endpoint) = with_host(request)?;
        let (mut connection, mut reused) = match self.take_idle(&endpoint) {
            // A connection is idle as soon as its answer has been read, which can be
            // before its task has taken note: wait for it to take the next request.
            Some(mut connection) => match connection.sender.ready().await {
                Ok(()) => (connection, true),
                Err(_) => (self.connect_boxed(&endpoint).await?, false),
            },
            None => (self.connect_boxed(&endpoint).await?, false),
        };
        loop {
            to_request_form(&mut request, connection.forward.as_ref());
            match connection.sender.try_send_request(request).await {
                Ok(response) => {
                    slot.connection = Some(connection);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        debug!("a kept-alive connection closed before the request left; sending it on a new one");
                        request = unsent;
                        reused = false;
                        connection = self.connect_boxed(&endpoint).await?;
                    }
                    _ => return Err(ExchangeError::Http(error.into_error())),
                },
            }
        }
    }

    /// Gives the slot back, keeping its connection for the next request if `reusable`
    /// (the answer was read to its end) and the connection is still open.
    pub fn release(&self, mut slot: Slot<'_>, reusable: bool) {
        if let Some(mut connection) = slot.connection.take() {
            if reusable && !connection.sender.is_closed() {
                connection.idle_since = Instant::now();
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
            }
        }
    }

    /// The most recently used idle connection to `endpoint` that is still open and young
    /// enough; older or closed ones met on the way are dropped.
    fn take_idle(&self, endpoint: &Endpoint) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(connection) = idle.pop() {
            if connection.endpoint == *endpoint
                && !connection.sender.is_closed()
                && connection.idle_since.elapsed() <= IDLE_TIMEOUT
            {
                return Some(connection);
            }
        }
        None
    }

    /// [`Connections::connect`], boxed: opening a connection is rare, but its future is
    /// large (a whole hyper connection before it is handed to its task), and inline it
    /// would make the future of every event in hand (up to 1024 per sink) that large too.
    fn connect_boxed<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<Connection, ExchangeError>> {
        Box::pin(self.connect(endpoint))
    }

    /// Opens a connection to `endpoint` (TCP, TLS for https, the HTTP/1.1 handshake) and
    /// starts its task.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, ExchangeError> {
        let uri = Uri::builder()
            .scheme(endpoint.0.clone())
            .authority(endpoint.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| ExchangeError::Connect(e.into()))?;
        let io = self.connector.clone().call(uri).await.map_err(ExchangeError::Connect)?;
        let forward = ForwardProxy::of(&io.connected());
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "webhook connection ended");
            }
        });
        Ok(Connection { sender, endpoint: endpoint.clone(), idle_since: Instant::now(), forward })
    }
}

/// Where an absolute request URI says to connect (its scheme and authority); the request
/// gets a `Host` header if it has none ([`host_header`]).
fn with_host(mut request: Request<Body>) -> Result<(Request<Body>, Endpoint), ExchangeError> {
    let uri = request.uri();
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(ExchangeError::NotAbsolute(uri.to_string()));
    };
    if !request.headers().contains_key(HOST) {
        if let Some(host) = host_header(request.uri()) {
            request.headers_mut().insert(HOST, host);
        }
    }
    Ok((request, (scheme, authority)))
}

/// The request target a connection needs: the origin form (`/path?query`) an HTTP/1.1
/// server expects, or, to a forwarding proxy, the absolute URI it kept, with the proxy's
/// `Proxy-Authorization`. Applying it again (a request sent again on a new connection to
/// the same endpoint) changes nothing.
fn to_request_form(request: &mut Request<Body>, forward: Option<&ForwardProxy>) {
    match forward {
        None => {
            if request.uri().scheme().is_some() {
                let path = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
                *request.uri_mut() = Uri::from(path);
            }
        }
        Some(proxy) => proxy.authorize(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(uri: &str) -> (Option<String>, String, String) {
        let request = Request::post(uri).body(Body::default()).unwrap();
        let (mut request, (scheme, authority)) = with_host(request).unwrap();
        to_request_form(&mut request, None);
        let host = request.headers().get(HOST).map(|h| h.to_str().unwrap().to_string());
        (host, request.uri().to_string(), format!("{scheme}://{authority}"))
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        assert_eq!(
            split("http://a.example/x?y=1"),
            (Some("a.example".into()), "/x?y=1".into(), "http://a.example".into())
        );
        assert_eq!(
            split("https://a.example:8443"),
            (Some("a.example:8443".into()), "/".into(), "https://a.example:8443".into())
        );
        assert_eq!(split("http://[::1]:9/v6"), (Some("[::1]:9".into()), "/v6".into(), "http://[::1]:9".into()));
    }

    #[test]
    fn to_a_forwarding_proxy_requests_keep_their_absolute_uri_and_get_its_credentials() {
        let request = Request::post("http://a.example:8080/x?y=1").body(Body::default()).unwrap();
        let (mut request, _) = with_host(request).unwrap();
        let proxy = ForwardProxy::new(Some(http::HeaderValue::from_static("Basic dTpw")));
        to_request_form(&mut request, Some(&proxy));
        to_request_form(&mut request, Some(&proxy));
        assert_eq!(request.uri(), "http://a.example:8080/x?y=1");
        assert_eq!(request.headers()[HOST], "a.example:8080");
        assert_eq!(request.headers().get_all(http::header::PROXY_AUTHORIZATION).iter().count(), 1);
        assert!(request.headers()[http::header::PROXY_AUTHORIZATION].is_sensitive());
        let mut request = Request::post("http://a.example/x").body(Body::default()).unwrap();
        to_request_form(&mut request, Some(&ForwardProxy::new(None)));
        assert_eq!(request.uri(), "http://a.example/x");
        assert!(!request.headers().contains_key(http::header::PROXY_AUTHORIZATION));
    }

    #[test]
    fn a_host_already_set_is_kept() {
        let request =
            Request::post("http://127.0.0.1:9/x").header(HOST, "virtual.example").body(Body::default()).unwrap();
        let (request, _) = with_host(request).unwrap();
        assert_eq!(request.headers()[HOST], "virtual.example");
    }
}
