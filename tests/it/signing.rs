//! Standard Webhooks signing, end to end on loopback: pipelines signing with
//! `signing.secrets` send to a recording receiver, and the real verifiers (the PyPI
//! reference library `standardwebhooks` for `v1`, `cryptography`'s ed25519 for `v1a`; see
//! support/standard_webhooks.rs) check every request exactly as it arrived. Also: key
//! rotation, retries, the `test` command, and that the keys never leave the process any
//! other way than as signatures.

use crate::support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::peer::KillOnDrop;
use support::standard_webhooks::{self, Verified};
use support::{free_addr, Dir, Receiver, Recorded};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::{load_str, PipelineConfig};
use webhook_sink::dead_letters::store_path;
use webhook_sink::sinks::webhook::signing::SigningConfig;
use webhook_sink::stats::SinkStats;
use webhook_sink::storage::dead_letters::DeadLetterStore;
use webhook_sink::topology::{Pipeline, RunReport};

const WAIT: Duration = Duration::from_secs(15);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The raw bytes of the test keys: searched for, with their encodings, wherever a key must
/// not appear.
const OLD_KEY: &[u8] = b"old-signing-secret-0123456789";
const NEW_KEY: &[u8] = b"new-signing-secret-9876543210";
const OTHER_KEY: &[u8] = b"a-secret-this-sink-never-had";
const ED25519_SEED: &[u8; 32] = b"ed25519-seed-for-signing-tests!!";

fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", B64.encode(key))
}

/// The `whsk_` key as Svix writes it: the seed, then its public key (64 bytes).
fn whsk_with_public_key() -> (String, String) {
    let seed_only = format!("whsk_{}", B64.encode(ED25519_SEED));
    let signer = SigningConfig { secrets: vec![seed_only.as_str().into()] }.compile().unwrap().0;
    let whpk = signer.public_keys().pop().unwrap();
    let public = B64.decode(whpk.strip_prefix("whpk_").unwrap()).unwrap();
    (format!("whsk_{}", B64.encode([ED25519_SEED.as_slice(), &public].concat())), whpk)
}

/// Every form a key could leak in: the `whsec_` text, its base64, the raw bytes.
fn needles(key: &[u8]) -> Vec<Vec<u8>> {
    let text = whsec(key);
    vec![text.clone().into_bytes(), text.as_bytes()["whsec_".len()..].to_vec(), key.to_vec()]
}

fn assert_absent(what: &str, haystack: &[u8], key: &[u8]) {
    for needle in needles(key) {
        let found = haystack.windows(needle.len()).any(|w| w == needle.as_slice());
        assert!(!found, "{what} holds the key `{}`", String::from_utf8_lossy(&needle));
    }
}

struct Running {
    data: tempfile::TempDir,
    config: PipelineConfig,
    source: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
    stats: Vec<(String, Arc<SinkStats>)>,
}

impl Running {
    fn stats(&self, sink: &str) -> &SinkStats {
        &self.stats.iter().find(|(n, _)| n == sink).expect("sink exists").1
    }

    async fn stop(self) -> (tempfile::TempDir, PipelineConfig) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("pipeline stops").expect("pipeline task");
        (self.data, self.config)
    }
}

/// The keys the tests' configs name as `${VAR}`.
fn env(name: &str) -> Option<String> {
    match name {
        "WHSEC_OLD" => Some(whsec(OLD_KEY)),
        "WHSEC_NEW" => Some(whsec(NEW_KEY)),
        "WHSK" => Some(whsk_with_public_key().0),
        _ => None,
    }
}

/// A pipeline: the `http_server` source `alerts` and the sink `hook` to `url` with `extra`
/// settings.
async fn start(url: &str, extra: &str) -> Running {
    let source = free_addr();
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{source}\"\n\n\
         [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n{extra}",
        data.path().display()
    );
    let config = load_str(Path::new("signing.toml"), &text, &env).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
    let stats = pipeline.stats();
    let task = tokio::spawn(pipeline.run());
    Running { data, config, source, shutdown, task, stats }
}

async fn post(source: SocketAddr, events: &[serde_json::Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{source}/")).body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
}

fn event(id: &str) -> serde_json::Value {
    json!({"id": id, "eventType": "alert-created", "status": "PENDING", "priority": "HIGH",
           "summary": format!("disk full on db-{id}: \"quotes\", ä ✓"), "alertSource": {"id": 1, "name": "Nagios"}})
}

fn header(request: &Recorded, name: &str) -> String {
    request.header_str(name).unwrap_or_else(|| panic!("no {name} in {request:#?}"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A copy of `request` with `change` applied: what an attacker or a broken proxy sends.
fn tampered(request: &Recorded, change: impl FnOnce(&mut Recorded)) -> Recorded {
    let mut copy = request.clone();
    change(&mut copy);
    copy
}

fn set_header(request: &mut Recorded, name: &str, value: String) {
    for (n, v) in &mut request.headers {
        if n == name {
            *v = value.clone().into_bytes();
        }
    }
}

#[tokio::test]
async fn two_secrets_sign_at_once_and_the_reference_verifier_accepts_either() {
    let receiver = Receiver::http().await;
    let running = start(&receiver.url("/hook"), "signing.secrets = [\"${WHSEC_OLD}\", \"${WHSEC_NEW}\"]\n").await;
    post(running.source, &[event("1"), event("2"), event("3")]).await;
    let requests = receiver.wait_for(3, WAIT).await;
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let before = now();
    for request in &requests {
        assert!(header(request, "webhook-id").starts_with("msg_"));
        let timestamp: u64 = header(request, "webhook-timestamp").parse().unwrap();
        assert!(timestamp <= before && before - timestamp < 60, "the attempt's time: {timestamp}");
        let signature = header(request, "webhook-signature");
        let entries: Vec<&str> = signature.split(' ').collect();
        assert_eq!(entries.len(), 2, "{signature}");
        assert!(entries.iter().all(|e| e.starts_with("v1,") && e.len() == 3 + 44), "{signature}");
        assert_eq!(request.header_all("webhook-signature").len(), 1);
    }
    running.stop().await;

    let Some(python) = standard_webhooks::python() else { return };
    // The real requests, then copies a verifier must refuse: a changed body, a changed
    // timestamp, a changed id.
    let first = &requests[0];
    let mut checked = requests.clone();
    checked.push(tampered(first, |r| r.body[2] ^= 1));
    let later = (header(first, "webhook-timestamp").parse::<u64>().unwrap() + 1).to_string();
    checked.push(tampered(first, |r| set_header(r, "webhook-timestamp", later)));
    checked.push(tampered(first, |r| set_header(r, "webhook-id", header(&requests[1], "webhook-id"))));
    let secrets = [whsec(OLD_KEY), whsec(NEW_KEY), whsec(OTHER_KEY)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let Verified { verdicts, .. } = standard_webhooks::verify(&python, &checked, &secrets, &[]);
    for (i, verdict) in verdicts.iter().enumerate().take(3) {
        // A receiver still on the old secret and one already on the new accept every request.
        assert_eq!(verdict.v1[..2], [None, None], "request {i}: {verdict:?}");
        assert!(verdict.v1[2].is_some(), "a secret the sink does not have is refused: {verdict:?}");
    }
    for (i, verdict) in verdicts.iter().enumerate().skip(3) {
        assert!(verdict.v1.iter().all(Option::is_some), "tampered copy {i} is refused: {verdict:?}");
    }
}

#[tokio::test]
async fn ed25519_v1a_signatures_verify_with_the_public_key_next_to_v1() {
    let receiver = Receiver::http().await;
    // A form-encoded custom body: the signature covers whatever bytes the template makes.
    let extra = "signing.secrets = [\"${WHSEC_NEW}\", \"${WHSK}\"]\n\
                 content_type = \"application/x-www-form-urlencoded\"\n\
                 template = \"text={{ alertSummary }}&id={{ alertId }}\"\n";
    let running = start(&receiver.url("/hook"), extra).await;
    post(running.source, &[event("a"), event("b")]).await;
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests.len(), 2, "{requests:#?}");
    running.stop().await;
    for request in &requests {
        let signature = header(request, "webhook-signature");
        let entries: Vec<&str> = signature.split(' ').collect();
        assert!(entries.len() == 2 && entries[0].starts_with("v1,") && entries[1].starts_with("v1a,"), "{signature}");
        assert!(request.body_str().starts_with("text=disk+full+on+db-"), "{}", request.body_str());
    }

    let Some(python) = standard_webhooks::python() else { return };
    let (whsk, whpk) = whsk_with_public_key();
    let mut checked = requests.clone();
    checked.push(tampered(&requests[0], |r| r.body.push(b'x')));
    let Verified { public_keys, verdicts } =
        standard_webhooks::verify(&python, &checked, &[&whsec(NEW_KEY)], &[whsk.as_str()]);
    // Python derives the same public key from the seed: the key format is read the same way.
    assert_eq!(public_keys, [whpk]);
    for verdict in &verdicts[..2] {
        // The reference library skips the `v1a` entry and accepts the `v1` one; the
        // ed25519 verifier accepts the `v1a` one.
        assert_eq!(verdict.v1, [None], "{verdict:?}");
        assert_eq!(verdict.v1a, [None], "{verdict:?}");
    }
    assert!(verdicts[2].v1[0].is_some() && verdicts[2].v1a[0].is_some(), "tampered: {:?}", verdicts[2]);
}

#[tokio::test]
async fn a_retry_keeps_the_webhook_id_and_gets_a_fresh_timestamp_and_signature() {
    let receiver = Receiver::http().await;
    receiver.set_status(503);
    // The circuit breaker off: refused many times in a row, it would hold the retries back.
    let extra = "signing.secrets = [\"${WHSEC_NEW}\"]\ncircuit.failures = 0\n\
                 retry.attempts = 200\nretry.initial_backoff_secs = 0.05\nretry.max_backoff_secs = 0.2\n";
    let running = start(&receiver.url("/hook"), extra).await;
    post(running.source, &[event("r")]).await;
    // Refused until attempts span two different seconds (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        let requests = receiver.requests();
        let mut stamps: Vec<String> = requests.iter().map(|r| header(r, "webhook-timestamp")).collect();
        stamps.dedup();
        if stamps.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no retry in a later second: {requests:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.set_status(200);
    let deadline = Instant::now() + WAIT;
    while SinkStats::get(&running.stats("hook").delivered) == 0 {
        assert!(Instant::now() < deadline, "not delivered once accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;

    let requests = receiver.requests();
    assert!(requests.len() >= 3, "{requests:#?}");
    let id = header(&requests[0], "webhook-id");
    let mut previous: Option<(u64, String)> = None;
    for request in &requests {
        assert_eq!(header(request, "webhook-id"), id, "every attempt carries the same id");
        assert_eq!(request.body, requests[0].body);
        let timestamp: u64 = header(request, "webhook-timestamp").parse().unwrap();
        let signature = header(request, "webhook-signature");
        if let Some((t, s)) = &previous {
            assert!(timestamp >= *t, "timestamps follow the attempts");
            // HMAC is deterministic: a new signature exactly when the timestamp is new.
            assert_eq!(timestamp != *t, signature != *s, "{t} {s} / {timestamp} {signature}");
        }
        previous = Some((timestamp, signature));
    }

    let Some(python) = standard_webhooks::python() else { return };
    let Verified { verdicts, .. } = standard_webhooks::verify(&python, &requests, &[&whsec(NEW_KEY)], &[]);
    for (i, verdict) in verdicts.iter().enumerate() {
        assert_eq!(verdict.v1, [None], "attempt {i}: {verdict:?}");
    }
}

/// Log lines of the pipeline, written by a subscriber set for this test's thread only.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// Current-thread runtime (the default): every task of the pipeline logs on this thread,
// where the capturing subscriber is set.
#[tokio::test]
async fn secrets_stay_out_of_logs_debug_dead_letters_and_disk_buffers() {
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let receiver = Receiver::http().await;
    receiver.set_status(404);
    let extra = "signing.secrets = [\"${WHSEC_OLD}\", \"${WHSEC_NEW}\"]\nbuffer.type = \"disk\"\n";
    let running = start(&receiver.url("/hook"), extra).await;
    for debug in [format!("{:?}", running.config), format!("{:#?}", running.config)] {
        assert_absent("the config's Debug", debug.as_bytes(), OLD_KEY);
        assert_absent("the config's Debug", debug.as_bytes(), NEW_KEY);
    }
    post(running.source, &[event("gone")]).await;
    let deadline = Instant::now() + WAIT;
    while SinkStats::get(&running.stats("hook").dead_lettered) == 0 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (data, _config) = running.stop().await;

    // It was signed (with both keys)...
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(header(&requests[0], "webhook-signature").matches("v1,").count(), 2);
    // ...and the keys are nowhere else: not in the log, the dead letter or any file.
    let log = log.0.lock().unwrap().clone();
    assert!(String::from_utf8_lossy(&log).contains("dead-lettered"), "the log was captured");
    let letters = DeadLetterStore::open(&store_path(data.path())).unwrap().list(None).unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = serde_json::to_vec(&letters[0]).unwrap();
    let files = files_under(data.path());
    assert!(files.len() >= 2, "the disk buffer and the dead letters: {files:?}");
    for key in [OLD_KEY, NEW_KEY] {
        assert_absent("the log", &log, key);
        assert_absent("the dead letter", &letter, key);
        for file in &files {
            assert_absent(&file.display().to_string(), &std::fs::read(file).unwrap(), key);
        }
    }
}

/// Runs the binary to its end (bounded): `(success, stdout, stderr)`.
fn run_binary(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = KillOnDrop::spawn(&mut command);
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.0.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "webhook-sink {args:?} did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), stdout.join().unwrap(), stderr.join().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_command_signs_its_probe_and_validate_checks_the_keys() {
    let receiver = Receiver::http().await;
    let dir = Dir::new();
    let pipeline = |secrets: &str| {
        format!(
            "[sources.alerts]\ntype = \"http_server\"\naddress = \"{}\"\n\n\
             [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\nsigning.secrets = {secrets}\n",
            free_addr(),
            receiver.url("/hook")
        )
    };
    let keys = [("WHSEC_OLD", whsec(OLD_KEY)), ("WHSEC_NEW", whsec(NEW_KEY)), ("WEBHOOK_SINK_LOG", "debug".into())];
    let output = |(ok, stdout, stderr): &(bool, String, String)| format!("ok: {ok}\n{stdout}\n{stderr}");

    // `test` sends one signed sample event; nothing it prints or logs holds a key.
    let config = dir.write("test.toml", &pipeline("[\"${WHSEC_OLD}\", \"${WHSEC_NEW}\"]"));
    let config = config.to_str().unwrap();
    let run = run_binary(&["test", "--config", config, "--sink", "hook"], &keys);
    assert!(run.0, "{}", output(&run));
    for key in [OLD_KEY, NEW_KEY] {
        assert_absent("`test` output", output(&run).as_bytes(), key);
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(header(&requests[0], "webhook-signature").matches("v1,").count(), 2);

    // `validate` names a broken key by its place, without showing it; a short one is a
    // warning, not an error.
    let bad = dir.write("bad.toml", &pipeline("[\"${WHSEC_OLD}\", \"whsec_${WHSEC_NEW}!\"]"));
    let run = run_binary(&["validate", "--config", bad.to_str().unwrap()], &keys);
    assert!(!run.0, "{}", output(&run));
    assert!(output(&run).contains("`sinks.hook.signing.secrets[1]`"), "{}", output(&run));
    for key in [OLD_KEY, NEW_KEY] {
        assert_absent("`validate` output", output(&run).as_bytes(), key);
    }
    let short = dir.write("short.toml", &pipeline("[\"whsec_c2hvcnQ=\"]"));
    let run = run_binary(&["validate", "--config", short.to_str().unwrap()], &keys);
    assert!(run.0, "{}", output(&run));
    let warning = run.1.lines().find(|l| l.starts_with("warning:")).unwrap_or_default();
    assert!(warning.contains("sinks.hook.signing.secrets[0]") && warning.contains("5 bytes"), "{}", output(&run));

    let Some(python) = standard_webhooks::python() else { return };
    let Verified { verdicts, .. } =
        standard_webhooks::verify(&python, &requests, &[&whsec(OLD_KEY), &whsec(NEW_KEY)], &[]);
    assert_eq!(verdicts[0].v1, [None, None], "{:?}", verdicts[0]);
}
