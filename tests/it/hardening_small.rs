//! The smaller hardening items: outside text escaped in logs and answers, the `Bearer`
//! scheme in any case, integers beyond 64 bits kept exactly, `validate` warnings and every
//! error of a sink, `Host` refused as a header, `${VAR}` values never quoted in errors.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use support::{Dir, Receiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_sink::config::{load_str, ConfigErrors, PipelineConfig};
use webhook_sink::sources::auth::{AuthConfig, Authenticator};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_webhook-sink")
}

fn load(sink_extra: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineConfig, ConfigErrors> {
    let text = format!(
        "[sources.in]\ntype = \"stdin\"\n[sinks.a]\ntype = \"webhook\"\ninputs = [\"in\"]\n\
         url = \"https://hooks.example/x\"\n{sink_extra}\n"
    );
    load_str(Path::new("p.toml"), &text, env)
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn host_is_refused_as_a_header() {
    let errors = load("headers = { Host = \"internal.example\" }", &no_env).unwrap_err().to_string();
    assert!(errors.contains("sinks.a.headers.Host"), "{errors}");
    assert!(!errors.contains("internal.example"), "{errors}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let auth = Authenticator::new(&AuthConfig::Bearer { token: "t0k".into() }).unwrap();
    let allows = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        auth.allows(&headers)
    };
    for ok in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR t0k"] {
        assert!(allows(ok), "{ok}");
    }
    for refused in ["bearer T0K", "bearer t0", "Basic t0k", "bearert0k", "t0k"] {
        assert!(!allows(refused), "{refused}");
    }
    let basic = Authenticator::new(&AuthConfig::Basic { username: "u".into(), password: "p".into() }).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static("basic dTpw"));
    assert!(basic.allows(&headers), "the Basic scheme too");
}

#[test]
fn integers_beyond_64_bits_pass_through_unchanged() {
    let dir = Dir::new();
    let config = dir.write(
        "p.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.a]\ntype = \"webhook\"\ninputs = [\"in\"]\nurl = \"https://h.example/x\"\n",
    );
    let event = dir.write(
        "e.json",
        "{\"eventType\":\"alert-created\",\"id\":\"1\",\"alertKey\":\"k\",\"big\":123456789012345678901234567890,\
         \"neg\":-99999999999999999999,\"alertSource\":{\"n\":18446744073709551616},\"small\":7,\"f\":1.5}",
    );
    let out = Command::new(bin())
        .args(["render", "--sink", "a", "--config"])
        .arg(&config)
        .arg("--event")
        .arg(&event)
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{body}{}", String::from_utf8_lossy(&out.stderr));
    for exact in
        ["123456789012345678901234567890", "-99999999999999999999", "18446744073709551616", "\"small\":7", "\"f\":1.5"]
    {
        assert!(body.contains(exact), "{exact} not in {body}");
    }
}

#[test]
fn validate_warns_when_the_first_backoff_exceeds_the_retry_time() {
    let config = load("retry = { initial_backoff_secs = 30, max_backoff_secs = 60, max_elapsed_secs = 10 }", &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("sinks.a.retry.initial_backoff_secs") && w.contains("max_elapsed_secs")),
        "{warnings:?}"
    );
    let fine = load("retry = { initial_backoff_secs = 1, max_elapsed_secs = 10 }", &no_env).unwrap();
    assert!(fine.warnings.is_empty(), "{:?}", fine.warnings);
}

#[test]
fn every_error_of_a_sink_is_listed_even_with_an_unknown_key() {
    let errors = load(
        "escpe = \"json\"\ntemplte = \"x\"\nretry = { attempts = 0, atempts = 3 }\nrequest = { timeout_secs = -1 }",
        &no_env,
    )
    .unwrap_err();
    let text = errors.to_string();
    for key in [
        "sinks.a.escpe",
        "sinks.a.templte",
        "sinks.a.retry.atempts",
        "sinks.a.retry.attempts",
        "sinks.a.request.timeout_secs",
    ] {
        assert!(text.contains(&format!("`{key}`")) || text.contains(key), "{key} not in:\n{text}");
    }
    assert!(text.contains("did you mean `escape`?"), "{text}");
}

#[test]
fn values_from_env_variables_are_never_quoted_in_errors() {
    let env = |name: &str| (name == "SECRET").then(|| "S3cr3tV4lue".to_string());
    for extra in [
        "escape = \"${SECRET}\"",
        "request = { timeout_secs = \"${SECRET}\" }",
        "retry = { on_status = \"${SECRET}\" }",
        "tls = { verify_certificate = \"${SECRET}\" }",
        "buffer = { type = \"${SECRET}\" }",
        "triggers = [\"${SECRET}\"]",
    ] {
        let errors = load(extra, &env).unwrap_err();
        let text = format!("{errors} {errors:?}");
        assert!(!text.contains("S3cr3tV4lue"), "{extra}: {text}");
        assert!(text.contains("sinks.a."), "{extra}: the key is named: {text}");
    }
    // Written in the file, the value is quoted as before: it is no secret.
    let text = load("escape = \"S3cr3tV4lue\"", &no_env).unwrap_err().to_string();
    assert!(text.contains("S3cr3tV4lue"), "{text}");
}

/// A receiver answering every request with 400 and a body full of terminal controls.
async fn hostile_receiver() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let body = "bad\x1b[2J\x1b]0;owned\x07 \u{9b}31m\rWARN forged\x00";
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Runs `webhook-sink run` on `config` with `input` on stdin (a stdin source ends with
/// it) and returns its stderr once it has exited (within 20 s).
async fn run_with_input(config: &std::path::Path, input: &'static [u8]) -> String {
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let guard = support::peer::KillOnDrop(child);
    let output = tokio::task::spawn_blocking(move || {
        let mut guard = guard;
        let mut stderr = String::new();
        std::io::Read::read_to_string(guard.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        stderr
    });
    tokio::time::timeout(Duration::from_secs(20), output).await.expect("run ends").unwrap()
}

fn has_controls(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

// Multi-threaded: the receiver answers while this thread waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_answers_are_escaped_in_cli_output_logs_and_dead_letters() {
    let addr = hostile_receiver().await;
    let dir = Dir::new();
    let config = dir.write(
        "p.toml",
        &format!(
            "data_dir = 'data'\n[sources.in]\ntype = \"stdin\"\n[sinks.a]\ntype = \"webhook\"\ninputs = [\"in\"]\n\
             url = \"http://{addr}/x\"\nhealthcheck = {{ enabled = false }}\n"
        ),
    );
    // `test` prints the answer.
    let out = Command::new(bin()).args(["test", "--sink", "a", "--config"]).arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("400"), "{stdout}");
    assert!(stdout.contains("bad\\u{1b}[2J"), "escaped, not dropped: {stdout}");
    assert!(!has_controls(&stdout), "{stdout:?}");

    // `run` logs it and dead-letters the event (400 is not retried).
    let stderr = run_with_input(&config, b"{\"eventType\":\"alert-created\",\"id\":\"1\",\"alertKey\":\"k\"}\n").await;
    assert!(stderr.contains("dead-lettered"), "{stderr}");
    assert!(!has_controls(&stderr), "{stderr:?}");
    assert!(!stderr.lines().any(|l| l.starts_with("WARN forged")), "{stderr}");

    let out = Command::new(bin()).args(["dead-letters", "list", "--config"]).arg(&config).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("400"), "{listed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!has_controls(&listed), "{listed:?}");
}

// Multi-threaded: the receiver answers while this thread waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_senders_cannot_forge_log_lines() {
    let receiver = Receiver::http().await;
    let dir = Dir::new();
    let config = dir.write(
        "p.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"alertmanager\"\n[sinks.a]\ntype = \"webhook\"\n\
             inputs = [\"in\"]\nurl = \"{}\"\n",
            receiver.url("/x")
        ),
    );
    let stderr = run_with_input(
        &config,
        b"{\"alerts\":[{\"status\":\"firing\",\"fingerprint\":\"f\",\"labels\":{\"a\\nERROR forged\\u001b[31m\":5}}]}\n\
              {\"alerts\":[{\"status\":\"on\\nERROR forged2\",\"fingerprint\":\"f\"}]}\n",
    )
    .await;
    assert_eq!(stderr.matches("rejected a line").count(), 2, "{stderr}");
    assert!(stderr.contains("a\\nERROR forged\\u{1b}[31m"), "escaped: {stderr}");
    assert!(!has_controls(&stderr), "{stderr:?}");
    // Every line is a log line of ours (timestamp first), none forged.
    assert!(stderr.lines().all(|l| l.starts_with(|c: char| c.is_ascii_digit())), "{stderr}");
}
