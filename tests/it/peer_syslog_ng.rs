//! A real syslog-ng (Debian `syslog-ng-core` + `syslog-ng-mod-http`) feeding the
//! `http_server` source through its `http()` destination, in batches framed as JSON
//! arrays, decoded by the `mapped` codec and delivered as webhooks to a recording
//! receiver.
//!
//! syslog-ng runs in the foreground with its own config, persist file, pid file and
//! control socket in a temp dir, listens for syslog lines on a loopback TCP port, and
//! is killed on every path (`KillOnDrop`).

use crate::support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::peer::{free_port, require, KillOnDrop};
use support::Receiver;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use webhook_sink::config::load_str;
use webhook_sink::topology::Pipeline;

/// Upper bound for syslog-ng to start listening and for the webhooks to arrive.
const WAIT: Duration = Duration::from_secs(20);

/// The syslog-ng config: a TCP syslog source, an `http()` destination POSTing batches
/// of up to 3 lines as a JSON array of `format-json` objects.
fn syslog_ng_conf(syslog_port: u16, source_port: u16) -> String {
    format!(
        r#"@version: 3.38
# Keep the HOST of the message (not the sender's address); no DNS, no statistics.
options {{ keep-hostname(yes); use-dns(no); dns-cache(no); stats-freq(0); }};

source s_syslog {{ network(transport("tcp") ip("127.0.0.1") port({syslog_port})); }};

destination d_webhook_sink {{
  http(
    url("http://127.0.0.1:{source_port}/logs")
    method("POST")
    headers("Content-Type: application/json")
    body("$(format-json host=$HOST program=$PROGRAM pid=$PID level=$LEVEL message=$MESSAGE)")
    batch-lines(3) batch-timeout(200)
    body-prefix("[") delimiter(",") body-suffix("]")
  );
}};

log {{ source(s_syslog); destination(d_webhook_sink); }};
"#
    )
}

/// The webhook-sink pipeline: the mapped codec reads the `format-json` keys above.
fn pipeline_toml(source_port: u16, receiver_url: &str) -> String {
    format!(
        r#"
[sources.syslog]
type = "http_server"
address = "127.0.0.1:{source_port}"
path = "/logs"

[sources.syslog.decoding]
codec = "mapped"

[sources.syslog.decoding.mapping]
event_type = {{ field = "level", map = {{ err = "alert-created", crit = "alert-created", notice = "alert-resolved" }}, default = "alert-created" }}
alert_key = {{ template = "{{{{host}}}}/{{{{program}}}}" }}
summary = {{ template = "{{{{host}}}} {{{{program}}}}: {{{{message}}}}" }}
priority = {{ field = "level", map = {{ crit = "HIGH", err = "HIGH" }}, default = "LOW" }}
source_name = {{ value = "syslog-ng" }}

[sinks.chat]
type = "webhook"
inputs = ["syslog"]
url = "{receiver_url}"
template = '{{"type": "{{{{eventType}}}}", "key": "{{{{alertKey}}}}", "priority": "{{{{alertPriority}}}}", "text": "{{{{alertSummary}}}}", "from": "{{{{alertSourceName}}}}", "pid": "{{{{event.source.pid}}}}"}}'
"#
    )
}

/// syslog-ng's own log, for failure messages.
fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Connects to syslog-ng's TCP source, waiting (bounded) for it to listen and failing
/// at once, with its log, if it exits.
async fn connect(syslog_ng: &mut KillOnDrop, port: u16, log: &Path) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            return stream;
        }
        if let Ok(Some(status)) = syslog_ng.0.try_wait() {
            panic!(
                "syslog-ng exited ({status}) before listening (is `syslog-ng-mod-http` installed?):\n{}",
                log_of(log)
            );
        }
        assert!(Instant::now() < deadline, "syslog-ng did not listen within {WAIT:?}:\n{}", log_of(log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn syslog_ng_http_destination_feeds_the_mapped_codec() {
    let Some(binary) = require("syslog-ng", "syslog-ng-core", &["/usr/sbin"]) else {
        return;
    };
    let started = Instant::now();

    // webhook-sink, in-process: http_server source on /logs → webhook sink → receiver.
    let receiver = Receiver::http().await;
    let source_port = free_port();
    let text = pipeline_toml(source_port, &receiver.url("/hooks/chat"));
    let config = load_str(Path::new("peer_syslog_ng.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::build(&config, shutdown.clone()).await.expect("the pipeline builds");
    let task = tokio::spawn(pipeline.run());

    // syslog-ng, in the foreground, everything of its own in a temp dir.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| -> PathBuf { dir.path().join(name) };
    let syslog_port = free_port();
    std::fs::write(file("syslog-ng.conf"), syslog_ng_conf(syslog_port, source_port)).expect("write config");
    let log = file("syslog-ng.log");
    let mut command = Command::new(&binary);
    command
        .arg("-F")
        .arg("-e")
        .arg("--no-caps")
        .arg("-f")
        .arg(file("syslog-ng.conf"))
        .arg("-R")
        .arg(file("syslog-ng.persist"))
        .arg("-p")
        .arg(file("syslog-ng.pid"))
        .arg("-c")
        .arg(file("syslog-ng.ctl"))
        // libcurl behind `http()` honours proxy variables; loopback must stay direct.
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(File::create(file("syslog-ng.stdout")).expect("stdout file"))
        .stderr(File::create(&log).expect("log file"));
    let mut syslog_ng = KillOnDrop::spawn(&mut command);

    // Three RFC 3164 lines: <11> is user.err, <10> user.crit, <13> user.notice.
    let mut stream = connect(&mut syslog_ng, syslog_port, &log).await;
    let lines = concat!(
        "<11>May  1 10:00:00 db1 postgres[42]: disk \"/var\" is full\n",
        "<10>May  1 10:00:01 web1 nginx[7]: upstream down\n",
        "<13>May  1 10:05:00 db1 postgres[42]: disk \"/var\" has room again\n",
    );
    stream.write_all(lines.as_bytes()).await.expect("send syslog lines");
    stream.shutdown().await.expect("close syslog connection");

    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3, "webhooks within {WAIT:?}: {got:#?}\nsyslog-ng log:\n{}", log_of(&log));
    for request in &got {
        assert_eq!((request.method.as_str(), request.path_and_query.as_str()), ("POST", "/hooks/chat"));
        assert_eq!(request.header_str("content-type").as_deref(), Some("application/json"));
    }
    let bodies: Vec<String> = got.iter().map(|r| r.body_str()).collect();
    let created_db1 = r#"{"type": "alert-created", "key": "db1/postgres", "priority": "HIGH", "text": "db1 postgres: disk \"/var\" is full", "from": "syslog-ng", "pid": "42"}"#;
    let created_web1 = r#"{"type": "alert-created", "key": "web1/nginx", "priority": "HIGH", "text": "web1 nginx: upstream down", "from": "syslog-ng", "pid": "7"}"#;
    let resolved_db1 = r#"{"type": "alert-resolved", "key": "db1/postgres", "priority": "LOW", "text": "db1 postgres: disk \"/var\" has room again", "from": "syslog-ng", "pid": "42"}"#;
    let mut sorted = bodies.clone();
    sorted.sort();
    let mut expected = vec![created_db1, created_web1, resolved_db1];
    expected.sort();
    assert_eq!(sorted, expected, "bodies as received: {bodies:#?}");
    // Different alerts may overtake each other; one alert's events keep their order.
    let position = |body: &str| bodies.iter().position(|b| b == body).unwrap();
    assert!(position(created_db1) < position(resolved_db1), "{bodies:#?}");

    drop(syslog_ng);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("the pipeline stops").expect("pipeline task");
    eprintln!("syslog-ng peer test took {:?}", started.elapsed());
}
