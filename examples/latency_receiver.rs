//! The receiver of `bench/load.sh`'s latency passes: answers every POST with 204 (401 when
//! the `Authorization` header is not the expected one) and logs one line per request,
//! with the time it arrived in microseconds.
//!
//! nginx, the receiver of the throughput runs, stamps its log with `$msec`: milliseconds,
//! from a clock it updates once per turn of its event loop. That is too coarse for a 2 ms
//! p99 target, so the latency passes use this instead. Its log has nginx's latency
//! format, so `bench/bench.py count` reads either:
//!
//! ```text
//! 1796303318.213456 204 {"text": "…", "alert": "17", …, "sentAt": 1796303318.208766}
//! ```
//!
//! The time is taken once the whole body has arrived (as nginx logs after reading it).
//! A newline in a body is written as a space, so that each request stays one line.
//! Lines are buffered and written out every 100 ms (`bench.py wait` counts them while the
//! run goes on) and at the end: SIGTERM or SIGQUIT (what load.sh sends nginx) flush the
//! log and stop the receiver.
//!
//! ```text
//! cargo build --release --example latency_receiver
//! target/release/examples/latency_receiver --port 8080 --auth "Basic dXNlcjpwYXNz" --log access.log
//! ```
//!
//! One thread answers (tokio's current-thread runtime), like nginx's one worker in
//! load.sh. The file writes go to a second thread: 100 ms of lines are about 1.3 MB at
//! 50,000 events/s, and a write of that size takes 0.26 ms, at times 2.4 ms, on the
//! benchmark VM. Written from the answering thread, the requests that queued meanwhile
//! were stamped late, as if the sink had been slow.

use std::cell::RefCell;
use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};

/// How often buffered log lines are written to the file.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Command-line arguments (clap checks them and prints `--help`).
#[derive(clap::Parser)]
#[command(name = "latency_receiver", about = "Answers POSTs with 204 and logs their arrival in microseconds")]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The expected `Authorization` header value; other requests get 401.
    #[arg(long)]
    auth: String,
    /// The log file (created or truncated).
    #[arg(long)]
    log: std::path::PathBuf,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latency_receiver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latency_receiver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lines not yet written to the file.
type Pending = Rc<RefCell<Vec<u8>>>;

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let file = std::fs::File::create(&args.log)?;
    let (to_writer, lines) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::Builder::new().name("log-writer".into()).spawn(move || write_lines(file, lines))?;
    let pending: Pending = Rc::default();
    let auth: Rc<str> = args.auth.into();
    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (pending, auth) = (pending.clone(), auth.clone());
                tokio::task::spawn_local(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, pending.clone(), auth.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // A writer that stopped has failed: leave, and report its error below.
            _ = flush.tick() => if !hand_out(&pending, &to_writer) { break },
            _ = term.recv() => break,
            _ = quit.recv() => break,
        }
    }
    hand_out(&pending, &to_writer);
    drop(to_writer);
    writer.join().map_err(|_| std::io::Error::other("the log writer panicked"))?
}

/// Reads the whole body, then logs the arrival time, the status and the body.
async fn answer(
    request: Request<Incoming>,
    pending: Pending,
    auth: Rc<str>,
) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    let authorized =
        request.headers().get(http::header::AUTHORIZATION).is_some_and(|value| value.as_bytes() == auth.as_bytes());
    let body = request.into_body().collect().await?.to_bytes();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let status = if authorized { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED };
    {
        let mut lines = pending.borrow_mut();
        let _ = write!(lines, "{}.{:06} {} ", now.as_secs(), now.subsec_micros(), status.as_u16());
        lines.extend(body.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
        lines.push(b'\n');
    }
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

/// Hands the lines logged since the last turn to the writer thread; false once the writer
/// has stopped (on a write error, which joining it returns).
fn hand_out(pending: &Pending, to_writer: &std::sync::mpsc::Sender<Vec<u8>>) -> bool {
    let lines = std::mem::take(&mut *pending.borrow_mut());
    lines.is_empty() || to_writer.send(lines).is_ok()
}

/// The writer thread: appends each handed-out chunk, and syncs the file once the
/// answering side is done.
fn write_lines(mut file: std::fs::File, lines: std::sync::mpsc::Receiver<Vec<u8>>) -> std::io::Result<()> {
    for chunk in lines {
        file.write_all(&chunk)?;
    }
    file.sync_all()
}
