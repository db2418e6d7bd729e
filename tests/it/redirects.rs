//! Redirects are not followed: an endpoint answering 301, 302, 307 or 308 with a
//! `Location` gets one request, the event goes to the dead letters at once with a reason
//! naming the status and the Location (its userinfo hidden), and the Location's target
//! receives nothing — whatever `retry.on_status` says.
//!
//! In-process: a real pipeline (`config::load_str` + `Pipeline`) with an `http_server`
//! source, over loopback only; every wait is bounded.

use crate::support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{free_addr, Receiver};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::dead_letters::store_path;
use webhook_sink::stats::SinkStats;
use webhook_sink::storage::dead_letters::{DeadLetter, DeadLetterStore};
use webhook_sink::topology::Pipeline;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(10);
/// The password in the Locations: it must not reach the dead letters.
const LOCATION_PASSWORD: &str = "L0cati0nPw";

/// A loopback server that answers `GET|POST /STATUS` with that status and a `Location`
/// pointing at `target` (`?from=STATUS` added), and counts the requests per path.
/// Dropping it stops it and its connections.
struct Redirector {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    async fn start(target: String) -> Redirector {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the redirector");
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let task = tokio::spawn({
            let hits = hits.clone();
            async move {
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (hits, target) = (hits.clone(), target.clone());
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let (hits, target) = (hits.clone(), target.clone());
                        async move {
                            let path = request.uri().path().trim_start_matches('/').to_string();
                            *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                            let _ = tokio::time::timeout(WAIT, request.into_body().collect()).await;
                            let status = path.parse::<u16>().unwrap_or(500);
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("location", format!("{target}?from={path}"))
                                .body(Full::new(Bytes::from_static(b"moved")))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    connections.spawn(async move {
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
            }
        });
        Redirector { addr, hits, task }
    }

    fn url(&self, status: u16) -> String {
        format!("http://{}/{status}", self.addr)
    }

    fn hits(&self, status: u16) -> usize {
        self.hits.lock().unwrap().get(&status.to_string()).copied().unwrap_or(0)
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The dead letters under `data_dir`, once the running pipeline has let go of the store.
async fn dead_letters(data_dir: &Path) -> Vec<DeadLetter> {
    let path = store_path(data_dir);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match DeadLetterStore::open(&path) {
            Ok(store) => return store.list(None).unwrap(),
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("cannot open the dead letters: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn post(source: SocketAddr, body: &str) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request =
        http::Request::post(format!("http://{source}/")).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("the source answers within the bound")
        .expect("the source answers");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_dead_lettered_after_one_request_naming_its_location() {
    let elsewhere = Receiver::http().await;
    // The Location carries credentials of its own: they must not be kept.
    let target = format!("http://intruder:{LOCATION_PASSWORD}@{}/target", elsewhere.addr());
    let redirector = Redirector::start(target).await;
    let statuses = [301u16, 302, 307, 308];

    let data = tempfile::tempdir().unwrap();
    let source = free_addr();
    let mut text = format!(
        "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n",
        data.path().display()
    );
    for status in statuses {
        // `"all"` for two of them: a redirect is never retried, whatever on_status says.
        let on_status = if status % 2 == 0 { "\"all\"" } else { "\"default\"" };
        text.push_str(&format!(
            "[sinks.s{status}]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"http://user:SinkPw@{}\"\n\
             healthcheck.enabled = false\nretry.on_status = {on_status}\nretry.initial_backoff_secs = 0.01\n\
             retry.max_backoff_secs = 0.02\n\n",
            redirector.url(status).trim_start_matches("http://"),
        ));
    }
    let config = load_str(Path::new("redirects.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.expect("the pipeline builds");
    let stats = pipeline.stats();
    let task = tokio::spawn(pipeline.run());

    let event = r#"{"id":"r1","eventType":"alert-created","summary":"moved endpoint"}"#;
    assert_eq!(post(source, event).await, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.iter().any(|(_, s)| SinkStats::get(&s.dead_lettered) < 1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Long enough for a retry (backoff ≤ 20 ms) to show up, if there were one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("the pipeline stops").expect("pipeline task");

    for (name, s) in &stats {
        assert_eq!(SinkStats::get(&s.dead_lettered), 1, "{name} dead-lettered its event");
        assert_eq!(SinkStats::get(&s.retries), 0, "{name} did not retry");
        assert_eq!(SinkStats::get(&s.delivered), 0, "{name} delivered nothing");
    }
    for status in statuses {
        assert_eq!(redirector.hits(status), 1, "one request to the endpoint answering {status}");
    }
    assert!(elsewhere.requests().is_empty(), "the Location's target received nothing: {:?}", elsewhere.requests());
    assert_eq!(elsewhere.connections(), 0, "not even a connection to the Location's target");

    let letters = dead_letters(data.path()).await;
    assert_eq!(letters.len(), statuses.len(), "{letters:#?}");
    for status in statuses {
        let letter = letters.iter().find(|l| l.sink == format!("s{status}")).expect("a dead letter per sink");
        assert_eq!(letter.last_status, Some(status));
        assert_eq!(letter.attempts, 1);
        assert_eq!(
            letter.reason,
            format!(
                "redirect {status} to http://***@{}/target?from={status} not followed (redirects could carry \
                 credentials elsewhere)",
                elsewhere.addr()
            )
        );
        let stored = serde_json::to_string(letter).unwrap();
        for secret in [LOCATION_PASSWORD, "SinkPw"] {
            assert!(!stored.contains(secret), "`{secret}` in the dead letter: {stored}");
        }
    }
}
