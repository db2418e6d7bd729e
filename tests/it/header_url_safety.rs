//! Header and URL safety at load time, through the loader (`config::load_str` with an
//! environment closure, so no process environment is touched) and through the binary
//! (`webhook-sink validate` and `run`, the environment given to the child only):
//!
//! - a `${VAR}` value with a line break or a control character in a header, in
//!   `content_type` or in `url` is an error naming the key, never the value;
//! - credentials over plain `http://` are a warning at `validate` and at every start,
//!   without the password.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Dir;
use webhook_sink::config::{load_str, ConfigErrors};

/// Upper bound of every child process.
const WAIT: Duration = Duration::from_secs(20);

const TOKEN: &str = "Tok3nValueQ";
const PASSWORD: &str = "Pa55wordZk";
const INJECTED: &str = "X-Injected: 1";

fn config(sink_extra: &str) -> String {
    format!(
        "[sources.alerts]\ntype = \"stdin\"\n\n[sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n\
         healthcheck.enabled = false\n{sink_extra}\n"
    )
}

/// Loads `text` with `${TOKEN}`, `${PW}` and `${CT}` answered by `env`.
fn load(text: &str, env: &[(&str, String)]) -> Result<webhook_sink::config::PipelineConfig, ConfigErrors> {
    let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    load_str(Path::new("safety.toml"), text, &lookup)
}

/// The one error, after checking that neither its Display nor its Debug shows a secret.
fn only_error(result: Result<webhook_sink::config::PipelineConfig, ConfigErrors>) -> String {
    let errors = result.expect_err("the config is refused");
    let shown = format!("{errors}\n{errors:?}");
    for secret in [TOKEN, PASSWORD, INJECTED, "Injected"] {
        assert!(!shown.contains(secret), "`{secret}` shown:\n{shown}");
    }
    assert_eq!(errors.0.len(), 1, "{errors}");
    errors.to_string()
}

#[test]
fn a_header_value_with_a_line_break_from_the_environment_is_refused_unseen() {
    let text = config("url = \"https://hooks.example.com/x\"\nheaders = { \"X-Token\" = \"${TOKEN}\" }");
    for secret in [
        format!("{TOKEN}\r\n{INJECTED}"),
        format!("{TOKEN}\n"),
        format!("{TOKEN}\r"),
        format!("{TOKEN}\0"),
        format!("{TOKEN}\x7f"),
    ] {
        let error = only_error(load(&text, &[("TOKEN", secret.clone())]));
        assert!(
            error.starts_with("safety.toml: `sinks.hook.headers.X-Token`: value contains a "),
            "{secret:?}: {error}"
        );
    }
    // The same value without the line break loads, and its Debug hides it.
    let loaded = load(&text, &[("TOKEN", TOKEN.to_string())]).expect("a clean token loads");
    assert!(!format!("{loaded:?}").contains(TOKEN));
}

#[test]
fn content_type_with_a_line_break_from_the_environment_is_refused() {
    let text = config("url = \"https://hooks.example.com/x\"\ncontent_type = \"${CT}\"");
    let error = only_error(load(&text, &[("CT", format!("application/json\r\n{INJECTED}"))]));
    assert!(error.starts_with("safety.toml: `sinks.hook.content_type`: value contains a line break"), "{error}");
}

#[test]
fn a_url_with_a_line_break_or_white_space_from_the_environment_is_refused_unseen() {
    let with_password = config("url = \"https://bob:${PW}@hooks.example.com/x\"");
    let whole = config("url = \"${URL}\"");
    let url = format!("https://bob:{PASSWORD}@hooks.example.com/x");
    for (text, var, value, kind) in [
        (&with_password, "PW", format!("{PASSWORD}\n"), "contains a line break"),
        (&with_password, "PW", format!("{PASSWORD}\r\n{INJECTED}"), "contains a line break"),
        (&with_password, "PW", format!("{PASSWORD}\t"), "contains a control character"),
        (&whole, "URL", format!("{url}\n"), "contains a line break"),
        (&whole, "URL", format!("{url} "), "starts or ends with white space"),
        (&whole, "URL", format!(" {url}"), "starts or ends with white space"),
    ] {
        let error = only_error(load(text, &[(var, value.clone())]));
        assert!(error.starts_with("safety.toml: `sinks.hook.url`: invalid URL: "), "{value:?}: {error}");
        assert!(error.contains(kind), "{value:?}: {error}");
    }
    // A space inside a password is part of it (sent percent-decoded in Basic auth).
    assert!(load(&with_password, &[("PW", format!("{PASSWORD} x"))]).is_ok());
}

/// Runs the binary to its end (killed after [`WAIT`]) with `env` set for the child only;
/// returns exit success, stdout and stderr.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.env("NO_COLOR", "1").env_remove("WEBHOOK_SINK_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start webhook-sink");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the child's output");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn credentials_over_plain_http_are_a_warning_at_validate_and_at_start() {
    let dir = Dir::new();
    let path = dir.write(
        "clear.toml",
        &config(
            "url = \"http://bob:${PW}@hooks.example.com/x\"\nheaders = { \"Authorization\" = \"Bearer ${TOKEN}\" }",
        ),
    );
    let path = path.to_str().expect("temporary paths are UTF-8");
    let env = [("PW", PASSWORD), ("TOKEN", TOKEN)];

    let (ok, stdout, stderr) = run_binary(&["validate", "--config", path], &env);
    assert!(ok, "validate accepts it (a warning is not an error):\n{stdout}\n{stderr}");
    for key in ["`sinks.hook.url`", "`sinks.hook.headers.Authorization`"] {
        assert!(
            stdout.lines().any(|l| l.starts_with("warning: ")
                && l.contains(key)
                && l.ends_with("credentials sent in clear text over http://; use https://")),
            "a warning for {key}:\n{stdout}"
        );
    }
    assert!(stdout.lines().any(|l| l.ends_with(": ok (1 source, 1 sink)")), "{stdout}");

    // `run` with a stdin source and no input starts, says the same, and ends by itself.
    let (ok, run_stdout, run_stderr) = run_binary(&["run", "--config", path], &env);
    assert!(ok, "run ends by itself:\n{run_stdout}\n{run_stderr}");
    assert!(
        run_stderr.lines().any(|l| l.contains("`sinks.hook.url`") && l.contains("credentials sent in clear text")),
        "run logs the warning:\n{run_stderr}"
    );

    for (what, text) in [("validate", format!("{stdout}{stderr}")), ("run", format!("{run_stdout}{run_stderr}"))] {
        for secret in [PASSWORD, TOKEN] {
            assert!(!text.contains(secret), "{what}: `{secret}` printed:\n{text}");
        }
    }

    // Over https, or to loopback, there is nothing to warn about.
    for url in ["https://bob:${PW}@hooks.example.com/x", "http://bob:${PW}@127.0.0.1:9/x"] {
        let path = dir.write("quiet.toml", &config(&format!("url = \"{url}\"")));
        let (ok, stdout, stderr) = run_binary(&["validate", "--config", path.to_str().unwrap()], &env);
        assert!(ok && !stdout.contains("warning"), "{url}:\n{stdout}\n{stderr}");
    }
}

#[test]
fn validate_names_the_header_key_and_never_the_injected_value() {
    let dir = Dir::new();
    let path = dir.write(
        "inject.toml",
        &config("url = \"https://hooks.example.com/x\"\nheaders = { \"X-Token\" = \"${TOKEN}\" }"),
    );
    let injected = format!("{TOKEN}\r\n{INJECTED}");
    let (ok, stdout, stderr) = run_binary(&["validate", "--config", path.to_str().unwrap()], &[("TOKEN", &injected)]);
    assert!(!ok, "refused:\n{stdout}\n{stderr}");
    assert!(stderr.contains("`sinks.hook.headers.X-Token`: value contains a line break"), "{stderr}");
    for secret in [TOKEN, "Injected"] {
        assert!(!format!("{stdout}{stderr}").contains(secret), "`{secret}` printed:\n{stdout}\n{stderr}");
    }
}
