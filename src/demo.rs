//! `webhook-sink demo`: the whole path on loopback with nothing set up. It starts a small
//! receiver, runs the pipeline of `config-examples/demo.toml` through the real host,
//! POSTs sample events to its `http_server` source and prints what the receiver got.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::topology::Pipeline;

const DEMO_CONFIG: &str = include_str!("../config-examples/demo.toml");
const EXPECTED_DELIVERIES: usize = 10;

/// One request as the demo receiver saw it.
struct Seen {
    head: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Runs the demo and prints what arrived.
pub async fn run() -> Result<ExitCode, String> {
    let receiver =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind a receiver: {e}"))?;
    let receiver_addr = receiver.local_addr().map_err(|e| e.to_string())?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    tokio::spawn(serve_receiver(receiver, seen.clone()));

    let source_addr = free_port()?;
    let data_dir = std::env::temp_dir().join(format!("webhook-sink-demo-{}", std::process::id()));
    let env = |name: &str| match name {
        "DEMO_SOURCE_ADDRESS" => Some(source_addr.to_string()),
        "DEMO_RECEIVER" => Some(receiver_addr.to_string()),
        "DEMO_DATA_DIR" => Some(data_dir.display().to_string()),
        _ => None,
    };
    let config =
        config::load_str(Path::new("config-examples/demo.toml"), DEMO_CONFIG, &env).map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.map_err(|e| e.to_string())?;
    let running = tokio::spawn(pipeline.run());

    println!("webhook-sink demo");
    println!("  source  http_server on http://{source_addr}/events");
    println!("  sinks   chat (created/resolved, custom JSON), tickets (all, standard payload, basic auth),");
    println!("          pager (HIGH priority from Nagios sources, text/plain)");
    println!("  receiver http://{receiver_addr}\n");
    let answer = post_events(source_addr).await?;
    println!("POST /events with 4 events (NDJSON) -> {answer}\n");

    for _ in 0..100 {
        if seen.lock().map(|s| s.len()).unwrap_or(0) >= EXPECTED_DELIVERIES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let report = running.await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&data_dir);

    let seen = std::mem::take(&mut *seen.lock().map_err(|_| "receiver state poisoned".to_string())?);
    println!("The receiver got {} webhooks:\n", seen.len());
    for request in &seen {
        println!("{}", request.head);
        for (name, value) in &request.headers {
            println!("  {name}: {value}");
        }
        let body = String::from_utf8_lossy(&request.body);
        match serde_json::from_slice::<serde_json::Value>(&request.body) {
            Ok(value) => println!("  body: {}", serde_json::to_string(&value).unwrap_or_default()),
            Err(_) => println!("  body: {body}"),
        }
        println!();
    }
    for (name, stats) in &report.sinks {
        println!(
            "sink {name:<8} received {} delivered {} filtered out {} failed {}",
            crate::stats::SinkStats::get(&stats.received),
            crate::stats::SinkStats::get(&stats.delivered),
            crate::stats::SinkStats::get(&stats.filtered),
            crate::stats::SinkStats::get(&stats.failed),
        );
    }
    Ok(if seen.len() == EXPECTED_DELIVERIES { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

async fn post_events(source: SocketAddr) -> Result<String, String> {
    let events = [
        json!({"id": "1001", "eventType": "alert-created", "status": "PENDING", "priority": "HIGH",
               "summary": "PROBLEM Host Alert: app.compute is DOWN", "reportTime": "2026-11-28T09:52:39.551Z",
               "alertSource": {"id": 2101194, "name": "Nagios Network and Hosts"},
               "links": [{"href": "https://runbooks.example.com/app-compute", "text": "Runbook"}]}),
        json!({"id": "1001", "eventType": "alert-acknowledged", "status": "ACCEPTED", "priority": "HIGH",
               "summary": "PROBLEM Host Alert: app.compute is DOWN",
               "alertSource": {"id": 2101194, "name": "Nagios Network and Hosts"},
               "assignedTo": {"username": "abr", "firstName": "Andreas"}}),
        json!({"id": "1001", "eventType": "incident-resolved", "status": "RESOLVED", "priority": "HIGH",
               "summary": "RECOVERY Host Alert: app.compute is UP",
               "alertSource": {"id": 2101194, "name": "Nagios Network and Hosts"}}),
        json!({"id": "1002", "eventType": "alert-created", "status": "PENDING", "priority": "LOW",
               "summary": "Disk 81% full on \"db-2\"", "alertSource": {"id": 7, "name": "Zabbix"},
               "labels": {"team": "storage"}}),
    ];
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("http://{source}/events"))
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| format!("cannot reach the source: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(format!("{status} {}", String::from_utf8_lossy(&body)))
}

async fn serve_receiver(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<Seen>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let head = format!("{} {} {:?}", request.method(), request.uri(), request.version());
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect();
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(Seen { head, headers, body });
                    }
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
