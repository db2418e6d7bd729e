//! A recording loopback HTTP/HTTPS server for integration tests.
//!
//! Every request is recorded with the header values exactly as they arrived
//! (hyper lowercases the names) and answered with the configured status and
//! body `ok`. Dropping the [`Receiver`] stops the accept loop and every open
//! connection.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::certs::TestCerts;

/// Upper bound for a TLS handshake or for reading one request body.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Lowercase names, raw values, in arrival order (values of a repeated name are adjacent).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// E.g. `HTTP/1.1`.
    pub version: String,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive), as raw bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name`, as text (invalid UTF-8 replaced).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// All values of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).collect()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Number of recorded requests, for `wait_for`.
    count: watch::Sender<usize>,
    status: AtomicU16,
    connections: AtomicUsize,
}

/// A loopback HTTP or HTTPS server that records what it receives. Drop stops it.
pub struct Receiver {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Plain HTTP on `127.0.0.1:0`.
    pub async fn http() -> Receiver {
        Self::http_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Plain HTTP on `addr` (e.g. `[::1]:0`). Panics with a clear message if
    /// the address cannot be bound (e.g. no IPv6 loopback).
    pub async fn http_on(addr: SocketAddr) -> Receiver {
        Self::start(addr, None).await
    }

    /// HTTPS on `127.0.0.1:0`, presenting `certs`' leaf (valid for
    /// `localhost`, `127.0.0.1` and `::1`).
    pub async fn https(certs: &TestCerts) -> Receiver {
        Self::https_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), certs).await
    }

    /// HTTPS on `addr`.
    pub async fn https_on(addr: SocketAddr, certs: &TestCerts) -> Receiver {
        Self::start(addr, Some(tls_acceptor(certs))).await
    }

    async fn start(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("test receiver cannot bind {addr}: {e} (is this loopback address available?)"));
        let addr = listener.local_addr().expect("local address of test receiver");
        let (count, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            count,
            status: AtomicU16::new(200),
            connections: AtomicUsize::new(0),
        });
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        Receiver { addr, tls: is_tls, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (`https` with TLS; IPv6 in brackets).
    /// A missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let slash = if path.starts_with('/') { "" } else { "/" };
        // SocketAddr's Display brackets IPv6 addresses.
        format!("{scheme}://{}{slash}{path}", self.addr)
    }

    /// Status for following requests (default 200); the body is always `ok`.
    pub fn set_status(&self, status: u16) {
        assert!(StatusCode::from_u16(status).is_ok(), "invalid status code {status}");
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Everything recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Wait (at most `timeout`) until at least `n` requests were recorded;
    /// returns what has been recorded by then (never panics on timeout).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.shared.count.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        self.requests()
    }

    /// Number of TCP connections accepted so far (including ones whose TLS
    /// handshake failed).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("addr", &self.addr).field("tls", &self.tls).finish_non_exhaustive()
    }
}

fn tls_acceptor(certs: &TestCerts) -> TlsAcceptor {
    let chain = CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("parse test server certificate");
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).expect("parse test server key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("test server TLS config");
    TlsAcceptor::from(Arc::new(config))
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // e.g. too many open files: back off briefly and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &tls {
            None => {
                conns.spawn(serve(stream, shared));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    if let Ok(Ok(stream)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(stream)).await {
                        serve(stream, shared).await;
                    }
                });
            }
        }
    }
}

async fn serve<S>(io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, shared.clone()));
    // Keep-alive is on by default; the connection ends when the client closes
    // it or the receiver is dropped.
    let _ = http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(IO_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        _ => Vec::new(),
    };
    let recorded = Recorded {
        method: parts.method.as_str().to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect(),
        body,
        version: format!("{:?}", parts.version),
    };
    {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(recorded);
        shared.count.send_replace(requests.len());
    }
    let status =
        StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("static response");
    Ok(response)
}
