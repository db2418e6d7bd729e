//! The "bare client" ceiling of a Rust sender: a plain hyper 1.x + hyper-util legacy
//! client loop that keeps K POSTs in flight, with nothing else around it.
//!
//! `bench/load.sh` runs it against the same nginx location, with the same body, the same
//! headers (`Content-Type: application/json`, `Authorization`, `User-Agent`, a
//! `webhook-id` per request) and the same number of requests in flight as webhook-sink.
//! The client is hyper-util's pooled one, as issue 5 names it (keep-alive pool,
//! `TCP_NODELAY`, pool timer); webhook-sink now keeps a connection per request slot
//! instead (`src/sinks/webhook/connections.rs`). No events, no buffer, no
//! template, no retries: whatever webhook-sink delivers below this loop's rate is the cost
//! of its own work, and the benchmark issue's target is at least 0.8× of it.
//!
//! ```text
//! cargo build --release --example hyper_loop
//! target/release/examples/hyper_loop --url http://127.0.0.1:8080/hook --body-file body.json \
//!     --auth "Basic dXNlcjpwYXNz" --conc 32 --secs 5 [--threads 2] [--n 100000]
//! ```
//!
//! K tasks each send one request after the other until `--secs` have passed (or, with
//! `--n`, until N requests were started; then `--secs` only bounds the run, default 300 s).
//! Every request has a 10 s time limit; network errors and non-2xx answers are counted,
//! never fatal. At the end it prints one JSON line:
//! `{"requests":…,"rate":…,"cpu_us":…,"rss_mb":…,"errors":…}` where `requests` counts
//! the 2xx answers, `rate` is requests per second of the loop, `cpu_us` is the process's
//! user + system CPU time per request (from `/proc/self/stat`) and `rss_mb` its peak RSS
//! (`VmHWM`). `--threads 1` uses tokio's current-thread runtime; otherwise the
//! multi-thread runtime (with T workers if given, else one per core).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Time limit of one request (connect, send, answer, body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed request, so that a refused connection does not spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// `/proc/self/stat` counts CPU time in clock ticks of USER_HZ, which Linux fixes at 100
/// on every architecture this runs on.
const USER_HZ: f64 = 100.0;

/// Command-line arguments (clap checks them and prints `--help`).
#[derive(clap::Parser)]
#[command(name = "hyper_loop", about = "A bare hyper-util client loop: K POSTs in flight to one URL")]
struct Args {
    /// Where to POST: a plain `http://` URL.
    #[arg(long, value_parser = plain_http_uri)]
    url: Uri,
    /// The request body, sent as is.
    #[arg(long)]
    body_file: String,
    /// The `Authorization` header value.
    #[arg(long)]
    auth: Option<String>,
    /// Requests in flight (one sender task each).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    conc: u32,
    /// How long to send (default 5; with `--n`, only a bound, default 300).
    #[arg(long, value_parser = positive_secs)]
    secs: Option<f64>,
    /// Stop after starting this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    n: Option<u64>,
    /// tokio worker threads (1 = current-thread runtime; default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn plain_http_uri(value: &str) -> Result<Uri, String> {
    let url: Uri = value.parse().map_err(|e| format!("{e}"))?;
    if url.scheme_str() != Some("http") {
        return Err(format!("must be plain http://, got {url}"));
    }
    Ok(url)
}

fn positive_secs(value: &str) -> Result<f64, String> {
    value.parse::<f64>().ok().filter(|&d| d > 0.0).ok_or_else(|| "a positive number".to_string())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start with field 3, state;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Peak resident set size in MB (`VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Requests started (for `--n`).
    started: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counts {
    fn error(&self, message: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(message());
        }
    }
}

/// One of the K senders: one request at a time until the deadline (or the N-th request).
async fn sender(
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    counts: Arc<Counts>,
    limit: Option<u64>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let seq = counts.started.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|n| seq >= n) {
            break;
        }
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers.clone();
        // A distinct id per request, of the same length as webhook-sink's `msg_` + UUID.
        if let Ok(id) = HeaderValue::from_str(&format!("msg_{seq:032x}")) {
            request.headers_mut().insert("webhook-id", id);
        }
        let exchange = async {
            let response = client.request(request).await.map_err(|e| format!("request: {e:?}"))?;
            let status = response.status();
            // Read the (empty) body to the end, so that the connection goes back to the pool.
            response.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(status)) if status.is_success() => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(status)) => counts.error(|| format!("HTTP {status}")),
            Ok(Err(message)) => {
                counts.error(|| message);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            Err(_) => counts.error(|| format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
}

/// Runs the K senders; returns the seconds they took.
async fn run(args: &Args, body: Bytes, counts: Arc<Counts>) -> f64 {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http);

    let mut headers = HeaderMap::new();
    headers.insert(USER_AGENT, HeaderValue::from_static("webhook-sink/bench"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(auth) = &args.auth {
        match HeaderValue::from_str(auth) {
            Ok(value) => {
                headers.insert(AUTHORIZATION, value);
            }
            Err(e) => {
                eprintln!("hyper_loop: --auth is not a valid header value ({e}); sending none")
            }
        }
    }

    // With --n, --secs (default 300) only bounds the run.
    let secs = args.secs.unwrap_or(if args.n.is_some() { 300.0 } else { 5.0 });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..args.conc)
        .map(|_| {
            tokio::spawn(sender(
                client.clone(),
                args.url.clone(),
                headers.clone(),
                body.clone(),
                counts.clone(),
                args.n,
                deadline,
            ))
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            counts.error(|| format!("sender task failed: {e}"));
        }
    }
    started.elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let body = match std::fs::read(&args.body_file) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            eprintln!("hyper_loop: cannot read {}: {e}", args.body_file);
            return ExitCode::from(2);
        }
    };
    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(t) => tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(t)).enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hyper_loop: cannot start the tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };

    let counts = Arc::new(Counts::default());
    let cpu0 = cpu_seconds();
    let elapsed = runtime.block_on(run(&args, body, counts.clone()));
    let cpu1 = cpu_seconds();
    drop(runtime);

    let requests = counts.ok.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let rate = if elapsed > 0.0 { requests as f64 / elapsed } else { 0.0 };
    let cpu_us = match (cpu0, cpu1) {
        (Some(a), Some(b)) if requests > 0 => format!("{:.2}", (b - a) / requests as f64 * 1e6),
        _ => "null".into(),
    };
    let rss_mb = peak_rss_mb().map_or_else(|| "null".into(), |mb| format!("{mb:.1}"));
    if let Some(first) = counts.first_error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        eprintln!("hyper_loop: {errors} errors; the first: {first}");
    }
    println!(
        "{{\"requests\":{requests},\"rate\":{rate:.1},\"cpu_us\":{cpu_us},\"rss_mb\":{rss_mb},\"errors\":{errors},\"secs\":{elapsed:.3},\"conc\":{}}}",
        args.conc
    );
    if requests == 0 || errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
