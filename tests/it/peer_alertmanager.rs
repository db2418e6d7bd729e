//! A real Prometheus Alertmanager (Debian package `prometheus-alertmanager`) notifies
//! webhook-sink's `http_server` source with `decoding.codec = "alertmanager"`; a webhook
//! sink renders a custom template to a recording receiver.
//!
//! One alert is posted to Alertmanager's API, then resolved (`endsAt` = now). Exactly one
//! `alert-created` and then one `alert-resolved` webhook must arrive, with the alert's
//! fingerprint as their id. Alertmanager runs on loopback with its own config and storage
//! in a temporary folder, clustering off, and is killed on every path.
//!
//! Then, with a `repeat_interval` of seconds and a group of two alerts: every repeat of a
//! firing alert carries the `webhook-id` of its first notification (also when the group is
//! re-sent because the other alert resolved), the resolve gets another, and a sink with
//! `dedupe` delivers each state once.

use crate::support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::peer::{free_port, require, KillOnDrop};
use support::Receiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::stats::SinkStats;
use webhook_sink::topology::{Pipeline, RunReport};

/// Upper bound for Alertmanager to become ready and for each notification to arrive.
const WAIT: Duration = Duration::from_secs(20);

/// Upper bound for one HTTP exchange with Alertmanager.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to watch for extra notifications after the last expected one: longer than
/// `group_interval` (1s), the soonest Alertmanager would send again.
const QUIET: Duration = Duration::from_millis(1500);

/// The sink's template: catalog variables and `event.` fields of the Alertmanager alert.
const TEMPLATE: &str = r#"{"id": "{{alertId}}", "key": "{{alertKey}}", "status": "{{alertStatus}}", "type": "{{eventType}}", "summary": "{{alertSummary}}", "details": "{{alertDetails}}", "priority": "{{alertPriority}}", "time": "{{reportTime}}", "alertname": "{{event.labels.alertname}}", "runbook": "{{event.annotations.runbook_url}}", "group": "{{event.groupStatus}}", "receiver": "{{event.receiver}}", "source": "{{alertSourceName}}", "url": "{{alertUrl}}", "link": "{{link}}"}"#;

const GENERATOR_URL: &str = "http://prometheus.example.org:9090/graph?g0.expr=node_filesystem_avail_bytes&g0.tab=1";

/// The webhook-sink pipeline, running in this process.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<RunReport>,
    stats: Vec<(String, Arc<SinkStats>)>,
}

impl Running {
    /// `more` is appended to the pipeline file (more sinks).
    async fn start(source_port: u16, sink_url: &str, more: &str) -> Running {
        let text = format!(
            "[sources.alertmanager]\ntype = \"http_server\"\naddress = \"127.0.0.1:{source_port}\"\n\
             path = \"/alertmanager\"\ndecoding.codec = \"alertmanager\"\n\n\
             [sinks.chat]\ntype = \"webhook\"\ninputs = [\"alertmanager\"]\nurl = \"{sink_url}\"\n\
             template = '''{TEMPLATE}'''\n{more}"
        );
        let config = load_str(Path::new("peer_alertmanager.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let pipeline = Pipeline::build(&config, shutdown.clone()).await.unwrap();
        let stats = pipeline.stats();
        let task = tokio::spawn(pipeline.run());
        Running { shutdown, task, stats }
    }

    fn failed(&self) -> u64 {
        self.stats.iter().map(|(_, s)| SinkStats::get(&s.failed)).sum()
    }

    /// The counters of the sink `name`.
    fn sink(&self, name: &str) -> &SinkStats {
        self.stats.iter().find(|(n, _)| n == name).map(|(_, s)| &**s).expect("the sink exists")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("pipeline stops").expect("pipeline task");
    }
}

/// A running Alertmanager on loopback; killed when dropped.
struct Alertmanager {
    process: KillOnDrop,
    port: u16,
    log: PathBuf,
}

impl Alertmanager {
    /// Starts `binary` with a config in `dir` whose one receiver posts to webhook-sink's
    /// source on `source_port`, grouping alerts by `group_by` and repeating a notification
    /// every `repeat_interval`.
    fn start(binary: &Path, dir: &Path, source_port: u16, group_by: &str, repeat_interval: &str) -> Alertmanager {
        // group_wait 100ms sends the first notification at once, group_interval 1s sends
        // changes (a resolution) soon after.
        let config = format!(
            "route:\n  receiver: webhook-sink\n  group_by: {group_by}\n  group_wait: 100ms\n  group_interval: 1s\n  \
             repeat_interval: {repeat_interval}\nreceivers:\n  - name: webhook-sink\n    webhook_configs:\n      \
             - url: http://127.0.0.1:{source_port}/alertmanager\n        send_resolved: true\n"
        );
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("write alertmanager.yml");
        let storage = dir.join("data");
        std::fs::create_dir(&storage).expect("create storage folder");
        let log = dir.join("alertmanager.log");
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");

        let port = free_port();
        let process = KillOnDrop::spawn(
            Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
                // Empty: no clustering (else it binds 0.0.0.0:9094 and gossips).
                .arg("--cluster.listen-address=")
                .arg("--log.level=info")
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err)),
        );
        Alertmanager { process, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Alertmanager's output so far, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Polls `GET /-/ready` until it answers 200, at most [`WAIT`].
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.process.0.try_wait() {
                panic!("Alertmanager exited early ({status}):\n{}", self.log());
            }
            if let Ok((200, _)) = http("GET", &self.url("/-/ready"), None).await {
                return;
            }
            if Instant::now() > deadline {
                panic!("Alertmanager not ready after {WAIT:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts alerts to `POST /api/v2/alerts`.
    async fn post_alerts(&self, alerts: &Value) {
        let answer = http("POST", &self.url("/api/v2/alerts"), Some(alerts.to_string())).await;
        assert!(matches!(answer, Ok((200, _))), "posting alerts: {answer:?}\n{}", self.log());
    }

    /// The fingerprint Alertmanager gave the alert named `alertname`.
    async fn fingerprint(&self, alertname: &str) -> String {
        let (status, body) = http("GET", &self.url("/api/v2/alerts"), None).await.expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        let alerts: Vec<Value> = serde_json::from_str(&body).expect("alerts as JSON");
        let alert = alerts.iter().find(|a| a["labels"]["alertname"] == alertname).expect("the alert is listed");
        alert["fingerprint"].as_str().expect("fingerprint").to_string()
    }
}

/// One HTTP/1.1 exchange: (status, body).
async fn http(method: &str, url: &str, body: Option<String>) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| "timed out".to_string())?
}

/// `t` as RFC 3339 in UTC, whole seconds (`2024-05-01T10:00:00Z`), as Alertmanager
/// writes such a time back.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[test]
fn rfc3339_formats_utc_dates() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3723)), "2000-02-29T01:02:03Z");
    assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59Z");
}

/// The body the template renders for the test alert.
fn expected_body(fingerprint: &str, created: bool, time: &str, alertmanager: &str) -> String {
    let (status, kind, group) =
        if created { ("PENDING", "alert-created", "firing") } else { ("RESOLVED", "alert-resolved", "resolved") };
    format!(
        r#"{{"id": "{fingerprint}", "key": "{fingerprint}", "status": "{status}", "type": "{kind}", "summary": "Disk almost full on db1", "details": "/var on db1:9100 is 97% full", "priority": "HIGH", "time": "{time}", "alertname": "DiskFull", "runbook": "https://runbooks.example.org/disk-full", "group": "{group}", "receiver": "webhook-sink", "source": "Alertmanager (webhook-sink)", "url": "{alertmanager}", "link": "{GENERATOR_URL}"}}"#
    )
}

/// Waits (at most [`WAIT`]) for `n` requests at the receiver, with everything useful in
/// the panic message if they do not come.
async fn wait_for(receiver: &Receiver, n: usize, running: &Running, alertmanager: &Alertmanager) {
    let got = receiver.wait_for(n, WAIT).await;
    assert!(
        got.len() >= n,
        "expected {n} webhooks within {WAIT:?}, got {}: {:#?}\nsink failures: {}\nAlertmanager log:\n{}",
        got.len(),
        got.iter().map(|r| r.body_str()).collect::<Vec<_>>(),
        running.failed(),
        alertmanager.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_firing_then_resolved_become_created_then_resolved_webhooks() {
    let Some(binary) = require("prometheus-alertmanager", "prometheus-alertmanager", &[]) else {
        return;
    };
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("temporary folder");
    let receiver = Receiver::http().await;
    let source_port = free_port();
    let running = Running::start(source_port, &receiver.url("/chat"), "").await;
    // group_by ['...']: every alert is a group of its own; repeat_interval 1h rules out
    // re-notifications during the test.
    let mut alertmanager = Alertmanager::start(&binary, dir.path(), source_port, "['...']", "1h");
    alertmanager.wait_ready().await;
    let external_url = alertmanager.url("");

    let starts_at = rfc3339(SystemTime::now() - Duration::from_secs(60));
    let alert = json!({
        "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical", "team": "storage"},
        "annotations": {
            "summary": "Disk almost full on db1",
            "description": "/var on db1:9100 is 97% full",
            "runbook_url": "https://runbooks.example.org/disk-full"
        },
        "startsAt": starts_at,
        "generatorURL": GENERATOR_URL
    });
    alertmanager.post_alerts(&json!([alert])).await;
    let fingerprint = alertmanager.fingerprint("DiskFull").await;

    wait_for(&receiver, 1, &running, &alertmanager).await;
    let created = receiver.requests();
    assert_eq!(created.len(), 1, "one notification for the firing alert");
    assert_eq!(created[0].method, "POST");
    assert_eq!(created[0].path_and_query, "/chat");
    assert_eq!(created[0].body_str(), expected_body(&fingerprint, true, &starts_at, &external_url));

    // Resolution: the same alert with `endsAt` = now.
    let ends_at = rfc3339(SystemTime::now());
    let mut resolved_alert = alert.clone();
    resolved_alert["endsAt"] = json!(ends_at);
    alertmanager.post_alerts(&json!([resolved_alert])).await;

    wait_for(&receiver, 2, &running, &alertmanager).await;
    // Nothing more may come: a repeat would be due after repeat_interval (1h) only.
    tokio::time::sleep(QUIET).await;
    let got = receiver.requests();
    let bodies: Vec<String> = got.iter().map(|r| r.body_str()).collect();
    assert_eq!(got.len(), 2, "exactly one created and one resolved webhook: {bodies:#?}");
    assert_eq!(bodies[0], expected_body(&fingerprint, true, &starts_at, &external_url));
    assert_eq!(bodies[1], expected_body(&fingerprint, false, &ends_at, &external_url));
    for body in &bodies {
        serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body}"));
    }
    assert_eq!(running.failed(), 0);

    drop(alertmanager);
    running.stop().await;
    eprintln!("peer_alertmanager: created and resolved webhooks in {:.1?}", began.elapsed());
}

/// Waits (at most [`WAIT`]) until the requests at the receiver satisfy `done`, with
/// everything useful in the panic message if they do not.
async fn wait_until(
    what: &str,
    receiver: &Receiver,
    running: &Running,
    alertmanager: &Alertmanager,
    done: impl Fn(&[support::receiver::Recorded]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = receiver.requests();
        if done(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; got {:#?}\nsink failures: {}\nAlertmanager log:\n{}",
            got.iter().map(|r| (r.path_and_query.clone(), r.body_str())).collect::<Vec<_>>(),
            running.failed(),
            alertmanager.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook as the tests read it: (path, summary, event type, fingerprint, webhook-id).
fn webhook(request: &support::receiver::Recorded) -> (String, String, String, String, String) {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or_else(|e| panic!("{e}: {}", request.body_str()));
    let text = |field: &str| body[field].as_str().unwrap_or_else(|| panic!("no {field}: {body}")).to_string();
    let id = request.header_str("webhook-id").expect("every webhook has a webhook-id");
    (request.path_and_query.clone(), text("summary"), text("type"), text("id"), id)
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_repeats_keep_their_webhook_id_and_dedupe_sends_each_state_once() {
    use webhook_sink::event::stable_webhook_id;
    use webhook_sink::sources::decode::alertmanager::alert_identity;

    let Some(binary) = require("prometheus-alertmanager", "prometheus-alertmanager", &[]) else {
        return;
    };
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("temporary folder");
    let receiver = Receiver::http().await;
    let source_port = free_port();
    // `chat` sends every notification; `deduped` drops what it delivered within the hour.
    let deduped = format!(
        "\n[sinks.deduped]\ntype = \"webhook\"\ninputs = [\"alertmanager\"]\nurl = \"{}\"\n\
         template = '''{TEMPLATE}'''\ndedupe.window_secs = 3600\n",
        receiver.url("/deduped")
    );
    let running = Running::start(source_port, &receiver.url("/chat"), &deduped).await;
    // Both alerts in one group; the group repeated every 2 s (Alertmanager looks at each
    // group_interval, 1 s).
    let mut alertmanager = Alertmanager::start(&binary, dir.path(), source_port, "['alertname']", "2s");
    alertmanager.wait_ready().await;

    let starts_at = rfc3339(SystemTime::now() - Duration::from_secs(60));
    let alert = |instance: &str| {
        json!({
            "labels": {"alertname": "DiskFull", "instance": instance, "severity": "critical"},
            "annotations": {"summary": format!("Disk almost full on {instance}")},
            "startsAt": starts_at,
            "generatorURL": GENERATOR_URL
        })
    };
    alertmanager.post_alerts(&json!([alert("db1"), alert("db2")])).await;
    let at = |path: &'static str| move |r: &&support::receiver::Recorded| r.path_and_query == path;
    // The first notification and a repeat: two webhooks each.
    wait_until("a repeated notification", &receiver, &running, &alertmanager, |got| {
        got.iter().filter(at("/chat")).count() >= 4
    })
    .await;

    // db1 resolves: the group goes out again, db1 resolved beside db2 still firing.
    let ends_at = rfc3339(SystemTime::now());
    let mut resolved = alert("db1");
    resolved["endsAt"] = json!(ends_at);
    alertmanager.post_alerts(&json!([resolved])).await;
    let resolve_at = |path: &'static str| {
        move |got: &[support::receiver::Recorded]| got.iter().filter(at(path)).any(|r| webhook(r).2 == "alert-resolved")
    };
    wait_until("the resolve", &receiver, &running, &alertmanager, resolve_at("/chat")).await;
    wait_until("the resolve, deduplicated sink", &receiver, &running, &alertmanager, resolve_at("/deduped")).await;
    // Let go of Alertmanager (it would repeat db2 every 2 s), then look at what came.
    drop(alertmanager);

    let got: Vec<_> = receiver.requests().iter().map(webhook).collect();
    let chat: Vec<_> = got.iter().filter(|w| w.0 == "/chat").collect();
    let (db1, db2) = ("Disk almost full on db1", "Disk almost full on db2");
    let count = |summary: &str, kind: &str| chat.iter().filter(|w| w.1 == summary && w.2 == kind).count();
    assert!(count(db1, "alert-created") >= 2 && count(db2, "alert-created") >= 3, "{chat:#?}");
    assert_eq!(count(db1, "alert-resolved"), 1, "{chat:#?}");

    // The id of each alert state is the one its identity gives, on every repeat and in
    // both sinks; the three states have three ids.
    let fingerprint = |summary: &str| chat.iter().find(|w| w.1 == summary).expect("notified").3.clone();
    let expected = |summary: &str, kind: &str| {
        let resolved = kind == "alert-resolved";
        let ends_at = resolved.then_some(ends_at.as_str());
        let identity = alert_identity(Some("webhook-sink"), &fingerprint(summary), resolved, Some(&starts_at), ends_at)
            .expect("Alertmanager sends the times an identity needs");
        stable_webhook_id(&identity)
    };
    let states = [(db1, "alert-created"), (db2, "alert-created"), (db1, "alert-resolved")];
    let ids: Vec<String> = states.iter().map(|(summary, kind)| expected(summary, kind)).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
    for w in &got {
        let state = states.iter().position(|(summary, kind)| w.1 == *summary && w.2 == *kind).expect("a known state");
        assert_eq!(w.4, ids[state], "{w:?}: the webhook-id of its state");
    }

    // The deduplicated sink delivered each state once; the repeats that reached it were
    // counted. (Its copies are handled beside chat's: wait until it has seen as many.)
    let mut deduped: Vec<_> = got.iter().filter(|w| w.0 == "/deduped").map(|w| (w.1.as_str(), w.2.as_str())).collect();
    deduped.sort();
    assert_eq!(deduped, [(db1, "alert-created"), (db1, "alert-resolved"), (db2, "alert-created")]);
    let stats = running.sink("deduped");
    let deadline = Instant::now() + WAIT;
    while SinkStats::get(&stats.delivered) + SinkStats::get(&stats.deduplicated) < chat.len() as u64 {
        assert!(Instant::now() < deadline, "the deduplicated sink did not handle {} events", chat.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(SinkStats::get(&stats.delivered), 3);
    assert!(SinkStats::get(&stats.deduplicated) >= chat.len() as u64 - 3);
    assert_eq!(running.failed(), 0);

    running.stop().await;
    eprintln!("peer_alertmanager: {} repeats kept their ids, in {:.1?}", chat.len() - 3, began.elapsed());
}
