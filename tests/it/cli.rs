//! The `webhook-sink` binary end to end: `validate`, `render`, `test` and `run` (with the
//! `http_server` and `stdin` sources), driven as a user would, over loopback only.
//!
//! Every child process is killed when its guard drops, every wait is bounded.

#[allow(unused_imports)]
use crate::support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{free_addr, Dir, Receiver};

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_webhook-sink")
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Collects everything a pipe yields on a thread of its own, so the child never blocks
/// on a full pipe and the test can look at the output while the child runs.
struct Collector {
    text: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn new(mut pipe: impl Read + Send + 'static) -> Self {
        let text: Arc<Mutex<Vec<u8>>> = Arc::default();
        let thread = std::thread::spawn({
            let text = text.clone();
            move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => text.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            }
        });
        Collector { text, thread: Some(thread) }
    }

    fn get(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.text.lock().unwrap()))
    }

    /// Waits (bounded) for the pipe to reach its end, once the child has exited.
    async fn finish(&mut self) {
        let deadline = Instant::now() + WAIT;
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// A running `webhook-sink`; killed (and reaped) when dropped.
struct Proc {
    child: Child,
    stdout: Collector,
    stderr: Collector,
}

impl Proc {
    /// Starts the binary with `args`, output piped; stdin is null unless `stdin_piped`.
    fn spawn(args: &[&str], env: &[(&str, &str)], stdin_piped: bool) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin_piped { Stdio::piped() } else { Stdio::null() })
            .env_remove("WEBHOOK_SINK_LOG");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("start webhook-sink");
        let stdout = Collector::new(child.stdout.take().unwrap());
        let stderr = Collector::new(child.stderr.take().unwrap());
        Proc { child, stdout, stderr }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stdout(&self) -> String {
        self.stdout.get()
    }

    fn stderr(&self) -> String {
        self.stderr.get()
    }

    /// Sends SIGTERM (through `kill(1)`: `libc` is not a dependency).
    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (bounded) until stderr holds `needle`; panics with the output otherwise.
    async fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.stderr().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stderr.finish().await;
                if self.stderr().contains(needle) {
                    return;
                }
                panic!("webhook-sink exited ({status}) before logging {needle:?}; stderr:\n{}", self.stderr());
            }
            if Instant::now() >= deadline {
                panic!("no {needle:?} on stderr within {WAIT:?}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (bounded) for the process to exit, then for its output to end.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "webhook-sink did not exit within {WAIT:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        self.stdout.finish().await;
        self.stderr.finish().await;
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a short-lived command printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to its end (bounded) and returns what it printed.
async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut proc = Proc::spawn(args, env, false);
    let status = proc.wait_exit().await;
    Output { status, stdout: proc.stdout(), stderr: proc.stderr() }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// POSTs `body` to `addr` + `path` with a raw HTTP/1.1 request and returns the status
/// and the body of the answer.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the source");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(WAIT, exchange).await.expect("the source answers")
}

/// The fields of the `sink finished` summary line of sink `name`.
fn summary(stderr: &str, name: &str) -> HashMap<String, String> {
    let sink_field = format!("sink={name}");
    let line = stderr
        .lines()
        .find(|l| l.contains("sink finished") && l.split_whitespace().any(|w| w == sink_field))
        .unwrap_or_else(|| panic!("no `sink finished` line for `{name}` in:\n{stderr}"));
    line.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn event(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"id":"{id}","eventType":"{event_type}","alertKey":"key-{id}","summary":"Alert {id}","priority":"HIGH"}}"#
    )
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// An `http_server` source on `source` and one webhook sink `hook` to `url`.
fn http_pipeline(source: SocketAddr, url: &str) -> String {
    format!(
        "[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\npath = \"/events\"\n\n\
         [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n"
    )
}

// ---------------------------------------------------------------------------------------
// validate

/// The `${NAME}`s referenced in `text`.
fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !names.iter().any(|n| n == name)
                {
                    names.push(name.to_string());
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

fn is_webhook_sink_config(path: &Path, text: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => true,
        // Peers' own YAML (vector.yaml) has `sinks:` too; ours has webhook sinks.
        Some("yaml" | "yml") => {
            text.lines().any(|l| l.starts_with("sinks:")) && text.lines().any(|l| l.trim() == "type: webhook")
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_accepts_every_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    // Every file below config-examples/, sub-folders (one per peer) included.
    let mut files: Vec<PathBuf> = Vec::new();
    let mut folders = vec![dir.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if !is_webhook_sink_config(&file, &text) {
            continue;
        }
        let values: Vec<(String, String)> = placeholders(&text)
            .into_iter()
            .map(|name| {
                let upper = name.to_ascii_uppercase();
                let value = if ["ADDRESS", "RECEIVER", "HOST"].iter().any(|k| upper.contains(k)) {
                    free_addr().to_string()
                } else {
                    "value".to_string()
                };
                (name, value)
            })
            .collect();
        let env: Vec<(&str, &str)> = values.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let out = run_to_end(&["validate", "--config", path_str(&file)], &env).await;
        let name = file.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
        let ok_line = out.stdout.lines().any(|l| l.contains(&name) && l.contains(": ok"));
        if !out.status.success() || !ok_line {
            failures.push(format!(
                "{name}: {} (env {values:?})\nstdout:\n{}\nstderr:\n{}",
                out.status, out.stdout, out.stderr
            ));
        }
        checked.push(name);
    }
    assert!(checked.iter().any(|n| n == "demo.toml"), "demo.toml was validated: {checked:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_lists_every_problem_of_a_broken_config() {
    let dir = Dir::new();
    let path = dir.write(
        "broken.toml",
        "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:8687\"\n\n\
         [sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"ftp://hooks.example.com/x\"\n\n\
         [sinks.chat.request]\nconcurrency = 0\n",
    );
    let out = run_to_end(&["validate", "--config", path_str(&path)], &[]).await;
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(!out.stdout.contains(": ok"), "no ok line for a broken file:\n{}", out.stdout);
    assert!(out.stderr.contains("2 problems"), "the count of problems:\n{}", out.stderr);
    for key in ["`sinks.chat.url`", "`sinks.chat.request.concurrency`"] {
        assert!(
            out.stderr.lines().any(|l| l.contains("broken.toml") && l.contains(key)),
            "a line names the file and {key}:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("ftp"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// render

const RENDER_CONFIG: &str = r#"
[sources.alerts]
type = "http_server"
address = "127.0.0.1:8687"

[sinks.chat]
type = "webhook"
inputs = ["alerts"]
url = "http://127.0.0.1:9/chat"
triggers = ["alert-created"]
template = '{"text": "[{{ alertPriority }}] {{ alertSummary }}", "id": "{{ alertId }}"}'

[[sinks.chat.conditions]]
field = "priority"
equals = "HIGH"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn render_prints_the_body_or_why_an_event_would_not_fire() {
    let dir = Dir::new();
    let config = dir.write("render.toml", RENDER_CONFIG);
    let config = path_str(&config);

    // One firing event: stdout is exactly the rendered body.
    let firing = dir
        .write("firing.json", r#"{"id":"7","eventType":"alert-created","summary":"Disk \"full\"","priority":"HIGH"}"#);
    let out = run_to_end(&["render", "--config", config, "--sink", "chat", "--event", path_str(&firing)], &[]).await;
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let body = body_json(out.stdout.trim().as_bytes());
    assert_eq!(body["text"], "[HIGH] Disk \"full\"");
    assert_eq!(body["id"], "7");

    // Three events in one NDJSON file: fires, wrong type, failing condition.
    let events = format!(
        "{}\n{}\n{}\n",
        r#"{"id":"1","eventType":"alert-created","summary":"One","priority":"HIGH"}"#,
        r#"{"id":"2","eventType":"alert-acknowledged","summary":"Two","priority":"HIGH"}"#,
        r#"{"id":"3","eventType":"alert-created","summary":"Three","priority":"LOW"}"#,
    );
    let events = dir.write("events.ndjson", &events);
    let out = run_to_end(&["render", "--config", config, "--sink", "chat", "--event", path_str(&events)], &[]).await;
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let sections: Vec<&str> = out.stdout.split("--- event ").skip(1).collect();
    assert_eq!(sections.len(), 3, "one section per event:\n{}", out.stdout);

    let first = sections[0].split_once('\n').unwrap().1;
    assert_eq!(body_json(first.trim().as_bytes())["text"], "[HIGH] One");

    let second = sections[1];
    assert!(
        second.contains("would not fire: ") && second.contains("alert-acknowledged") && second.contains("triggers"),
        "the type is not a trigger:\n{second}"
    );
    assert!(!second.contains("Two"), "nothing rendered:\n{second}");

    let third = sections[2];
    assert!(
        third.contains("would not fire: ")
            && third.contains("conditions[0]")
            && third.contains("priority")
            && third.contains("HIGH"),
        "the failing condition is named:\n{third}"
    );
    assert!(!third.contains("Three"), "nothing rendered:\n{third}");
}

// ---------------------------------------------------------------------------------------
// test

/// The `-> STATUS ...` line `test` prints for the answer.
fn answer_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("-> ")).unwrap_or_else(|| panic!("no answer line in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn test_sends_one_sample_event_and_reports_the_status() {
    let receiver = Receiver::http().await;
    let dir = Dir::new();
    let config = dir.write("test.toml", &http_pipeline(free_addr(), &receiver.url("/hook")));
    let args = ["test", "--config", path_str(&config), "--sink", "hook"];

    let out = run_to_end(&args, &[]).await;
    assert!(out.status.success(), "{}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "exactly one request: {requests:#?}");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path_and_query, "/hook");
    let body = requests[0].body_str();
    assert!(body.contains(r#""eventType":"alert-created""#), "the sample event: {body}");
    assert!(answer_line(&out.stdout).contains("200 OK"), "status shown:\n{}", out.stdout);

    receiver.set_status(500);
    let out = run_to_end(&args, &[]).await;
    assert!(!out.status.success(), "a 500 answer fails the test command");
    assert!(answer_line(&out.stdout).contains("500 Internal Server Error"), "status shown:\n{}", out.stdout);
    assert_eq!(receiver.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------
// run

#[tokio::test(flavor = "multi_thread")]
async fn run_delivers_posted_events_and_stops_on_sigterm() {
    let receiver = Receiver::http().await;
    let source = free_addr();
    let dir = Dir::new();
    let config = dir.write("run.toml", &http_pipeline(source, &receiver.url("/hook")));
    // One worker thread: the whole pipeline also runs on a single thread.
    let mut proc = Proc::spawn(&["run", "--config", path_str(&config), "--threads", "1"], &[], false);
    proc.wait_stderr("webhook-sink started").await;

    let body = format!(
        "{}\n{}\n{}\n",
        event("a1", "alert-created"),
        event("a2", "alert-acknowledged"),
        event("a3", "alert-resolved")
    );
    let (status, answer) = post(source, "/events", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["accepted"], 3);

    let requests = receiver.wait_for(3, WAIT).await;
    let mut ids: Vec<String> =
        requests.iter().map(|r| body_json(&r.body)["id"].as_str().unwrap_or("").to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "a3"], "{requests:#?}");

    proc.terminate();
    let status = proc.wait_exit().await;
    let stderr = proc.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let fields = summary(&stderr, "hook");
    assert_eq!(fields.get("delivered").map(String::as_str), Some("3"), "{stderr}");
    assert_eq!(fields.get("failed").map(String::as_str), Some("0"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// secrets

const PASSWORD: &str = "Sup3rS3cretPw";
const TOKEN: &str = "TokenValueXyz987";

fn secret_pipeline(source: SocketAddr, receiver: SocketAddr, template: &str) -> String {
    format!(
        "[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\npath = \"/events\"\n\n\
         [sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n\
         url = \"http://alice:Sup3rS3cretPw%21@{receiver}/hook\"\n\
         headers = {{ \"X-Token\" = \"{TOKEN}\" }}\nretry.attempts = 1\n{template}"
    )
}

fn assert_no_secrets(what: &str, text: &str) {
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:Sup3rS3cretPw!");
    let basic_no_pad = base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:Sup3rS3cretPw!");
    for secret in [PASSWORD, "Sup3rS3cretPw!", TOKEN, &basic, &basic_no_pad] {
        assert!(!text.contains(secret), "{what}: `{secret}` appears in the output:\n{text}");
    }
}

/// Runs the pipeline, POSTs one event, waits for `log` on stderr, stops it; returns
/// stdout + stderr.
async fn run_one_event(config: &Path, source: SocketAddr, log: &str) -> String {
    let env = [("WEBHOOK_SINK_LOG", "debug")];
    let mut proc = Proc::spawn(&["run", "--config", path_str(config)], &env, false);
    proc.wait_stderr("webhook-sink started").await;
    let (status, answer) = post(source, "/events", &event("s1", "alert-created")).await;
    assert_eq!(status, 200, "{answer}");
    proc.wait_stderr(log).await;
    proc.terminate();
    proc.wait_exit().await;
    format!("{}\n{}", proc.stdout(), proc.stderr())
}

/// The WARN/ERROR lines of `output` that hold `needle`.
fn problem_lines<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    output.lines().filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(needle)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_logs_or_output() {
    let dir = Dir::new();

    // 1. The endpoint answers 500.
    let receiver = Receiver::http().await;
    receiver.set_status(500);
    let source = free_addr();
    let config = dir.write("rejected.toml", &secret_pipeline(source, receiver.addr(), ""));
    let output = run_one_event(&config, source, "webhook not delivered").await;
    assert_no_secrets("endpoint answers 500", &output);
    let lines = problem_lines(&output, "webhook not delivered");
    assert!(
        lines.iter().any(|l| l.contains("sink=chat") && l.contains("500") && l.contains("Internal Server Error")),
        "the log names the sink, the status and its reason:\n{output}"
    );
    // The secrets were sent, to the endpoint only.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:Sup3rS3cretPw!");
    assert_eq!(requests[0].header_str("authorization"), Some(format!("Basic {basic}")));
    assert_eq!(requests[0].header_str("x-token").as_deref(), Some(TOKEN));

    // `test` against the same endpoint prints the target and the answer, not the secrets.
    let out =
        run_to_end(&["test", "--config", path_str(&config), "--sink", "chat"], &[("WEBHOOK_SINK_LOG", "debug")]).await;
    assert!(!out.status.success());
    assert!(answer_line(&out.stdout).contains("500"), "{}", out.stdout);
    assert_no_secrets("test command", &format!("{}\n{}", out.stdout, out.stderr));
    drop(receiver);

    // 2. The endpoint is down: the connection is refused.
    let source = free_addr();
    let down = free_addr();
    let config = dir.write("down.toml", &secret_pipeline(source, down, ""));
    let output = run_one_event(&config, source, "webhook not delivered").await;
    assert_no_secrets("endpoint down", &output);
    let lines = problem_lines(&output, "webhook not delivered");
    assert!(
        lines.iter().any(|l| l.contains("sink=chat") && l.to_lowercase().contains("refused")),
        "the log names the sink and the failure:\n{output}"
    );

    // 3. `validate` with a template error in that sink.
    let config = dir.write(
        "template.toml",
        &secret_pipeline(free_addr(), free_addr(), "template = '{\"text\": \"{{ alertSumary }}\"}'\n"),
    );
    let out = run_to_end(&["validate", "--config", path_str(&config)], &[("WEBHOOK_SINK_LOG", "debug")]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("template.toml") && out.stderr.contains("`sinks.chat.template`"),
        "the error names the file and the key:\n{}",
        out.stderr
    );
    assert_no_secrets("validate", &format!("{}\n{}", out.stdout, out.stderr));
}

// ---------------------------------------------------------------------------------------
// graceful shutdown

/// A receiver that answers each request only after `delay`, telling when a request has
/// arrived and recording the bodies it answered.
struct SlowReceiver {
    addr: SocketAddr,
    arrived: tokio::sync::watch::Receiver<usize>,
    answered: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowReceiver {
    async fn start(delay: Duration) -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
        let arrived_tx = Arc::new(arrived_tx);
        let answered: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let task = tokio::spawn({
            let answered = answered.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    while connections.try_join_next().is_some() {}
                    let arrived_tx = arrived_tx.clone();
                    let answered = answered.clone();
                    connections.spawn(async move {
                        let _ = tokio::time::timeout(WAIT, Self::serve(stream, delay, &arrived_tx, &answered)).await;
                    });
                }
            }
        });
        SlowReceiver { addr, arrived, answered, task }
    }

    /// Serves the requests of one connection (a healthcheck connects and sends nothing).
    async fn serve(
        mut stream: TcpStream,
        delay: Duration,
        arrived: &tokio::sync::watch::Sender<usize>,
        answered: &Mutex<Vec<Vec<u8>>>,
    ) {
        let mut buf = Vec::new();
        loop {
            let Some(body) = support::raw_http::read_request(&mut stream, &mut buf).await else {
                return;
            };
            arrived.send_modify(|n| *n += 1);
            tokio::time::sleep(delay).await;
            let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            answered.lock().unwrap().push(body);
        }
    }

    async fn wait_arrived(&mut self, n: usize) {
        tokio::time::timeout(WAIT, self.arrived.wait_for(|count| *count >= n))
            .await
            .expect("the request reaches the slow receiver")
            .unwrap();
    }
}

impl Drop for SlowReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish() {
    let mut receiver = SlowReceiver::start(Duration::from_secs(1)).await;
    let source = free_addr();
    let dir = Dir::new();
    let url = format!("http://{}/slow", receiver.addr);
    let config = dir.write("slow.toml", &http_pipeline(source, &url));
    let mut proc = Proc::spawn(&["run", "--config", path_str(&config)], &[], false);
    proc.wait_stderr("webhook-sink started").await;

    let (status, answer) = post(source, "/events", &event("slow1", "alert-created")).await;
    assert_eq!(status, 200, "{answer}");
    receiver.wait_arrived(1).await;
    assert!(receiver.answered.lock().unwrap().is_empty(), "SIGTERM is sent before the answer");
    proc.terminate();

    let status = proc.wait_exit().await;
    let stderr = proc.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let answered = receiver.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 1, "the answer was written");
    assert_eq!(body_json(&answered[0])["id"], "slow1");
    let fields = summary(&stderr, "hook");
    assert_eq!(
        fields.get("delivered").map(String::as_str),
        Some("1"),
        "the request in flight was finished, not cut:\n{stderr}"
    );
    assert_eq!(fields.get("failed").map(String::as_str), Some("0"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// stdin

#[tokio::test(flavor = "multi_thread")]
async fn stdin_source_runs_to_end_of_input_and_names_bad_lines() {
    stdin_run(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_source_runs_to_end_of_input_on_one_thread() {
    // `--threads 1` is tokio's current-thread runtime: stdin is read on a blocking thread
    // beside it, and the process still ends by itself.
    stdin_run(&["--threads", "1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_source_runs_to_end_of_input_on_the_sources_thread() {
    // `--runtime split`: stdin is read on a blocking thread of the sources' runtime, which
    // stops once the pipeline has, so the process still ends by itself.
    stdin_run(&["--runtime", "split"]).await;
}

async fn stdin_run(extra_args: &[&str]) {
    let receiver = Receiver::http().await;
    let dir = Dir::new();
    let config = dir.write(
        "stdin.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n\n\
             [sinks.hook]\ntype = \"webhook\"\ninputs = [\"in\"]\nurl = \"{}\"\n",
            receiver.url("/hook")
        ),
    );
    let args: Vec<&str> =
        ["run", "--config", path_str(&config)].into_iter().chain(extra_args.iter().copied()).collect();
    let mut proc = Proc::spawn(&args, &[], true);
    {
        let mut stdin = proc.child.stdin.take().unwrap();
        let input = format!(
            "{}\n{{\"eventType\": \"alert-created\", \"id\": }}\n{}\n",
            event("in1", "alert-created"),
            event("in3", "alert-resolved")
        );
        stdin.write_all(input.as_bytes()).unwrap();
        // Dropping it closes standard input.
    }

    let status = proc.wait_exit().await;
    let stderr = proc.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let requests = receiver.wait_for(2, Duration::from_secs(1)).await;
    let ids: Vec<String> =
        requests.iter().map(|r| body_json(&r.body)["id"].as_str().unwrap_or("").to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["in1", "in3"], "{requests:#?}");
    assert!(
        stderr.lines().any(|l| l.contains("rejected") && l.contains("line=2")),
        "the bad line is named by its number:\n{stderr}"
    );
    let fields = summary(&stderr, "hook");
    assert_eq!(fields.get("delivered").map(String::as_str), Some("2"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// dead letters

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_replayed_and_purged() {
    let receiver = Receiver::http().await;
    receiver.set_status(404);
    let dir = Dir::new();
    let config = dir.write(
        "dl.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n\n\
             [sinks.hook]\ntype = \"webhook\"\ninputs = [\"in\"]\nurl = \"{}\"\ntriggers = [\"alert-created\"]\n",
            receiver.url("/hook")
        ),
    );
    let cfg = path_str(&config);
    // Three events refused for good (404 is not retried): all three become dead letters.
    let mut proc = Proc::spawn(&["run", "--config", cfg], &[], true);
    {
        let mut stdin = proc.child.stdin.take().unwrap();
        let input = format!(
            "{}\n{}\n{}\n",
            event("d1", "alert-created"),
            event("d2", "alert-created"),
            event("d3", "alert-created")
        );
        stdin.write_all(input.as_bytes()).unwrap();
    }
    assert!(proc.wait_exit().await.success(), "{}", proc.stderr());
    let first_ids: Vec<String> = receiver.requests().iter().filter_map(|r| r.header_str("webhook-id")).collect();
    assert_eq!(first_ids.len(), 3);

    let list = run_to_end(&["dead-letters", "list", "--config", cfg, "--json"], &[]).await;
    assert!(list.status.success(), "{}", list.stderr);
    let letters: Vec<Value> = list.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 3, "{}", list.stdout);
    for letter in &letters {
        assert_eq!(letter["sink"], "hook");
        assert_eq!(letter["last_status"], 404);
        assert_eq!(letter["attempts"], 1);
        assert!(letter["reason"].as_str().unwrap().contains("HTTP 404"), "{letter}");
        assert!(first_ids.contains(&letter["webhook_id"].as_str().unwrap().to_string()));
    }
    let table = run_to_end(&["dead-letters", "list", "--config", cfg], &[]).await;
    assert!(table.stdout.contains("3 dead letters"), "{}", table.stdout);

    // Replay one, limited by --seq, to a healthy endpoint: same webhook-id, filters aside.
    receiver.set_status(200);
    let seq = letters[1]["seq"].as_u64().unwrap().to_string();
    let replay = run_to_end(&["dead-letters", "replay", "--config", cfg, "--seq", &seq], &[]).await;
    assert!(replay.status.success(), "{}\n{}", replay.stdout, replay.stderr);
    let last = receiver.requests().last().cloned().unwrap();
    assert_eq!(last.header_str("webhook-id").as_deref(), letters[1]["webhook_id"].as_str());
    let left = run_to_end(&["dead-letters", "list", "--config", cfg, "--json"], &[]).await;
    assert_eq!(left.stdout.lines().count(), 2, "{}", left.stdout);

    // Purge the rest of the sink's.
    let purge = run_to_end(&["dead-letters", "purge", "--config", cfg, "--sink", "hook"], &[]).await;
    assert!(purge.stdout.contains("purged 2 dead letters"), "{}", purge.stdout);
    let none = run_to_end(&["dead-letters", "list", "--config", cfg], &[]).await;
    assert!(none.stdout.contains("no dead letters"), "{}", none.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_given_up_on_is_dead_lettered_together_and_replayed_as_one_digest() {
    let receiver = Receiver::http().await;
    receiver.set_status(422);
    let dir = Dir::new();
    let config = dir.write(
        "digest.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n\n\
             [sinks.digest]\ntype = \"webhook\"\ninputs = [\"in\"]\nurl = \"{}\"\n\
             batch = {{ max_events = 3, timeout_secs = 0.2 }}\n",
            receiver.url("/digest")
        ),
    );
    let cfg = path_str(&config);
    let mut proc = Proc::spawn(&["run", "--config", cfg], &[], true);
    {
        let mut stdin = proc.child.stdin.take().unwrap();
        let input: String = ["g1", "g2", "g3"].iter().map(|id| event(id, "alert-created") + "\n").collect();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    assert!(proc.wait_exit().await.success(), "{}", proc.stderr());
    let refused = receiver.requests();
    assert_eq!(refused.len(), 1, "three events, one digest, refused for good (422 is not retried)");
    let digest_id = refused[0].header_str("webhook-id").unwrap();

    let list = run_to_end(&["dead-letters", "list", "--config", cfg, "--json"], &[]).await;
    let letters: Vec<Value> = list.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 3, "each event keeps its own dead letter: {}", list.stdout);
    for letter in &letters {
        assert_eq!(letter["digest"], digest_id.as_str(), "{letter}");
        assert_eq!(letter["last_status"], 422);
    }
    let table = run_to_end(&["dead-letters", "list", "--config", cfg], &[]).await;
    assert!(table.stdout.contains(&format!("[digest {digest_id}]")), "{}", table.stdout);

    receiver.set_status(200);
    let replay = run_to_end(&["dead-letters", "replay", "--config", cfg], &[]).await;
    assert!(replay.status.success(), "{}\n{}", replay.stdout, replay.stderr);
    assert!(replay.stdout.contains("replayed: 3 delivered, 0 not delivered"), "{}", replay.stdout);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "the replay is one digest again");
    assert_eq!(requests[1].header_str("webhook-id").as_deref(), Some(digest_id.as_str()), "with the same id");
    let ids: Vec<String> =
        body_json(&requests[1].body).as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    assert_eq!(ids, ["g1", "g2", "g3"]);
    let left = run_to_end(&["dead-letters", "list", "--config", cfg], &[]).await;
    assert!(left.stdout.contains("no dead letters"), "{}", left.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn render_decodes_as_a_source_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("config-examples/alertmanager/webhook-sink.toml");
    let payload = root.join("tests/fixtures/alertmanager/firing.json");
    let args = [
        "render",
        "--config",
        path_str(&config),
        "--sink",
        "chat",
        "--source",
        "alertmanager",
        "--event",
        path_str(&payload),
    ];
    let out = run_to_end(&args, &[("CHAT_TOKEN", "x")]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let body: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(body["id"], "c0ffee0123456789");
    assert_eq!(body["text"], "[HIGH] Disk full on db-1 is PENDING");
    // Without --source the file is read as incident events, which it is not.
    let plain =
        run_to_end(&args[..5].iter().chain(&args[7..]).copied().collect::<Vec<_>>(), &[("CHAT_TOKEN", "x")]).await;
    assert!(!plain.status.success());
    assert!(plain.stderr.contains("eventType"), "{}", plain.stderr);
}
