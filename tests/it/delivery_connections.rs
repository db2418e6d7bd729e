//! How `WebhookService` keeps its connections: no more than its request slots, reused
//! while the server keeps them, replaced when the server closed one, when an answer was
//! cut short or when a request ran out of time. The peers here are raw TCP servers on loopback, so
//! each test decides exactly when a connection closes.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webhook_sink::sinks::webhook::client::{build_connector, TlsOptions};
use webhook_sink::sinks::webhook::dial::DialOptions;
use webhook_sink::sinks::webhook::service::{DeliveryError, WebhookService};

use support::raw_http::read_request;
use support::Receiver;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the raw server does with each request on a connection.
#[derive(Clone, Copy)]
enum Answer {
    /// `204`, then the connection stays open.
    KeepAlive,
    /// `204`, then the server closes the connection without saying so beforehand (as an
    /// idle timeout would).
    ThenClose,
    /// `204` with `Connection: close`, then the server closes.
    ConnectionClose,
    /// `500` with a body of this many bytes (`answer-N ` and padding, N counting the
    /// server's requests from 1), connection kept.
    BigBody(usize),
    /// Reads the request and never answers (until the client gives up).
    Hang,
}

/// A loopback HTTP/1.1 server answering by hand; counts the connections it accepted.
struct RawServer {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Starts a server answering the n-th connection (0-based) as `answer(n)` says.
    async fn start(answer: fn(usize) -> Answer) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answer(n), r.clone()));
            }
        });
        RawServer { url, connections, requests, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, answer: Answer, requests: Arc<AtomicUsize>) {
    let mut pending = Vec::new();
    // Bounded: no test sends more than this many requests on one connection.
    for _ in 0..1000 {
        if read_request(&mut stream, &mut pending).await.is_none() {
            return;
        }
        let number = requests.fetch_add(1, Ordering::SeqCst) + 1;
        let reply = match answer {
            Answer::KeepAlive | Answer::ThenClose => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            Answer::ConnectionClose => "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string(),
            Answer::BigBody(n) => {
                // `answer-N ` then padding: each answer says which request it answers.
                let mut body = format!("answer-{number} ");
                body.push_str(&"e".repeat(n.saturating_sub(body.len())));
                format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            }
            Answer::Hang => {
                // Until the client closes its end.
                let mut rest = [0u8; 64];
                let _ = tokio::time::timeout(TIMEOUT, stream.read(&mut rest)).await;
                return;
            }
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if matches!(answer, Answer::ThenClose | Answer::ConnectionClose) {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn service(slots: usize, timeout: Duration) -> WebhookService {
    WebhookService::new(build_connector(&TlsOptions::default(), &DialOptions::default()).unwrap(), slots, timeout)
}

fn request(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url).body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[tokio::test]
async fn concurrent_requests_use_at_most_one_connection_per_slot() {
    let rx = Receiver::http().await;
    let service = service(3, TIMEOUT);
    for round in 0..2 {
        let sends = (0..12).map(|i| service.send(request(&rx.url("/slots"), &format!("{round}-{i}"))));
        for result in futures::future::join_all(sends).await {
            assert_eq!(result.unwrap().status, StatusCode::OK);
        }
    }
    assert_eq!(rx.wait_for(24, TIMEOUT).await.len(), 24);
    let connections = rx.connections();
    assert!((1..=3).contains(&connections), "{connections} connections for 3 slots");
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_quietly() {
    let server = RawServer::start(|_| Answer::ThenClose).await;
    let service = service(1, TIMEOUT);
    for i in 0..3 {
        let response = service.send(request(&server.url, &i.to_string())).await.unwrap();
        assert_eq!(response.status, StatusCode::NO_CONTENT);
        // The server's close reaches the client while the connection is idle.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.requests(), 3);
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn connection_close_in_the_answer_is_honoured() {
    let server = RawServer::start(|_| Answer::ConnectionClose).await;
    let service = service(1, TIMEOUT);
    for i in 0..3 {
        let response = service.send(request(&server.url, &i.to_string())).await.unwrap();
        assert_eq!(response.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(server.requests(), 3);
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn a_kept_connection_carries_every_request() {
    let server = RawServer::start(|_| Answer::KeepAlive).await;
    let service = service(1, TIMEOUT);
    for i in 0..20 {
        assert_eq!(service.send(request(&server.url, &i.to_string())).await.unwrap().status, StatusCode::NO_CONTENT);
    }
    assert_eq!(server.requests(), 20);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn an_answer_cut_short_does_not_spill_into_the_next() {
    // 100 KB is more than the service reads of an answer (64 KB): the rest must be
    // drained or the connection dropped, never read as the next answer.
    let server = RawServer::start(|_| Answer::BigBody(100 * 1024)).await;
    let service = service(1, TIMEOUT);
    let first = service.send(request(&server.url, "1")).await.unwrap();
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(first.excerpt.starts_with("answer-1 eee") && first.excerpt.ends_with('…'), "{}", first.excerpt);
    let second = service.send(request(&server.url, "2")).await.unwrap();
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(second.excerpt.starts_with("answer-2 eee"), "{}", second.excerpt);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn an_answer_read_whole_keeps_its_connection() {
    let server = RawServer::start(|_| Answer::BigBody(1000)).await;
    let service = service(1, TIMEOUT);
    for i in 0..3 {
        let response = service.send(request(&server.url, &i.to_string())).await.unwrap();
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.excerpt.len(), 200 + '…'.len_utf8());
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_timed_out_request_gives_up_its_connection() {
    // The first connection never answers; later ones do.
    let server = RawServer::start(|n| if n == 0 { Answer::Hang } else { Answer::KeepAlive }).await;
    let service = service(1, Duration::from_millis(300));
    let error = service.send(request(&server.url, "1")).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Timeout(_)), "{error}");
    // The slot is free again and the next request goes on a new connection.
    let response = service.send(request(&server.url, "2")).await.unwrap();
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_and_frees_the_slot() {
    // A port with nothing listening: bind, note the port, close.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let service = service(1, TIMEOUT);
    for _ in 0..2 {
        let error = service.send(request(&format!("http://127.0.0.1:{port}/x"), "x")).await.unwrap_err();
        match &error {
            DeliveryError::Transport(text) => assert!(text.starts_with("cannot connect: "), "{text}"),
            other => panic!("expected a transport error, got {other}"),
        }
    }
}

#[tokio::test]
async fn a_relative_uri_is_refused_with_its_name() {
    let service = service(1, TIMEOUT);
    let error = service.send(request("/no/host", "x")).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Transport(_)), "{error}");
    assert_eq!(error.to_string(), "request URI /no/host has no scheme or host");
}
