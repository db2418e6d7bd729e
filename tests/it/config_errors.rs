//! Every config error names the file and the key (or line), and every problem is reported.

use crate::support;

use support::Dir;
use webhook_sink::config::{load_with_env, ConfigErrors, Location, PipelineConfig};

fn env(name: &str) -> Option<String> {
    match name {
        "HOOK_PASSWORD" => Some("s3cr\"et pass".into()),
        _ => None,
    }
}

fn load(name: &str, text: &str) -> (Dir, Result<PipelineConfig, ConfigErrors>) {
    let dir = Dir::new();
    let path = dir.write(name, text);
    let result = load_with_env(&path, &env);
    (dir, result)
}

fn errors(name: &str, text: &str) -> Vec<String> {
    let (_dir, result) = load(name, text);
    let errors = result.expect_err("config should be refused");
    errors
        .0
        .iter()
        .map(|e| {
            assert!(e.file.ends_with(name), "error names the file: {e}");
            e.to_string()
        })
        .collect()
}

const SOURCE: &str = "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:8687\"\n";

fn with_sink(sink: &str) -> String {
    format!("{SOURCE}\n[sinks.chat]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n{sink}")
}

fn single(name: &str, text: &str) -> String {
    let errors = errors(name, text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn a_good_config_loads_with_interpolation() {
    let (_dir, result) = load("ok.toml", &with_sink("url = \"https://user:${HOOK_PASSWORD}@hooks.example.com/x\"\n"));
    let config = result.unwrap();
    assert_eq!(config.sources.len(), 1);
    let sink = config.sink("chat").unwrap();
    assert_eq!(sink.inputs, ["alerts"]);
    let webhook_sink::config::SinkKind::Webhook(webhook) = &sink.kind;
    assert_eq!(webhook.config.url.0, "https://user:s3cr\"et pass@hooks.example.com/x");
    assert!(!format!("{config:?}").contains("s3cr"), "debug output hides the password");
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let text = single("a.toml", &with_sink("url = \"http://h/\"\ntriggerz = [\"alert-created\"]\n"));
    assert!(text.contains("`sinks.chat.triggerz`") && text.contains("did you mean `triggers`?"), "{text}");
    let text = single("b.toml", &format!("sinkz = 1\n{}", with_sink("url = \"http://h/\"")));
    assert!(
        text.contains(
            "`sinkz`: unknown key (known keys: sources, sinks, shutdown_timeout_secs, data_dir, api), did you mean `sinks`?"
        ),
        "{text}"
    );
    let text = single("c.toml", &with_sink("url = \"http://h/\"").replace("address", "adress"));
    assert!(text.contains("`sources.alerts.adress`"), "{text}");
}

#[test]
fn unknown_component_types() {
    let text = single("t.toml", &with_sink("url = \"http://h/\"").replace("type = \"webhook\"", "type = \"webhok\""));
    assert!(
        text.contains(
            "`sinks.chat.type`: unknown component type `webhok` (known types: webhook), did you mean `webhook`?"
        ),
        "{text}"
    );
    let text = single("s.toml", &with_sink("url = \"http://h/\"").replace("http_server", "amqp"));
    assert!(
        text.contains("`sources.alerts.type`: unknown component type `amqp` (known types: http_server, kafka, stdin)"),
        "{text}"
    );
}

#[test]
fn inputs_must_name_sources() {
    let text =
        single("i.toml", &with_sink("url = \"http://h/\"").replace("inputs = [\"alerts\"]", "inputs = [\"alert\"]"));
    assert!(
        text.contains("`sinks.chat.inputs[0]`: `alert` names no source (sources: alerts), did you mean `alerts`?"),
        "{text}"
    );
    let text = single("n.toml", &with_sink("url = \"http://h/\"").replace("inputs = [\"alerts\"]\n", ""));
    assert!(text.contains("`sinks.chat.inputs`: the sink has no inputs"), "{text}");
    let text = single("e.toml", &with_sink("url = \"http://h/\"").replace("[\"alerts\"]", "[]"));
    assert!(text.contains("the sink has no inputs"), "{text}");
}

#[test]
fn urls_must_be_http_with_a_host() {
    let text = single("u.toml", &with_sink("url = \"ftp://h/\""));
    assert!(text.contains("`sinks.chat.url`: unsupported URL scheme `ftp`"), "{text}");
    for url in ["http://", "https://:8443/x", "not a url"] {
        let text = single("h.toml", &with_sink(&format!("url = \"{url}\"")));
        assert!(text.contains("`sinks.chat.url`:"), "{text}");
    }
}

#[test]
fn template_and_template_file_together() {
    let text =
        single("tt.toml", &with_sink("url = \"http://h/\"\ntemplate = \"{}\"\ntemplate_file = \"t.mustache\"\n"));
    assert!(text.contains("`sinks.chat.template`: `template` and `template_file` are both set"), "{text}");
}

#[test]
fn template_errors_name_sink_line_and_column() {
    let text = single(
        "tv.toml",
        &with_sink("url = \"http://h/\"\ntemplate = '''{\n  \"text\": \"{{ alertSumary }}\"\n}'''\n"),
    );
    assert!(
        text.contains(
            "`sinks.chat.template`: line 2, column 12: unknown variable `alertSumary`, did you mean `alertSummary`?"
        ),
        "{text}"
    );
    let text = single("ts.toml", &with_sink("url = \"http://h/\"\ntemplate = '{\"a\": \"{{#alertId}}\"}'\n"));
    assert!(text.contains("`sinks.chat.template`: line 1, column 8"), "{text}");
    let text = single("tj.toml", &with_sink("url = \"http://h/\"\ntemplate = '{\"a\": \"{{alertId}}\",}'\n"));
    assert!(text.contains("does not render valid JSON"), "{text}");
}

#[test]
fn template_file_is_read_relative_to_the_config() {
    let dir = Dir::new();
    std::fs::create_dir(dir.0.path().join("templates")).unwrap();
    dir.write("templates/chat.mustache", "{\"text\": \"{{alertSummary}}\"}");
    let path = dir.write("f.toml", &with_sink("url = \"http://h/\"\ntemplate_file = \"templates/chat.mustache\"\n"));
    load_with_env(&path, &env).unwrap();
    let path = dir.write("g.toml", &with_sink("url = \"http://h/\"\ntemplate_file = \"templates/nope.mustache\"\n"));
    let text = load_with_env(&path, &env).unwrap_err().to_string();
    assert!(text.contains("`sinks.chat.template_file`: cannot read") && text.contains("nope.mustache"), "{text}");
}

#[test]
fn missing_environment_variable_is_named() {
    let text = single("v.toml", &with_sink("url = \"https://u:${NOT_SET_ANYWHERE}@h/\""));
    assert!(text.contains("`sinks.chat.url`: environment variable `NOT_SET_ANYWHERE` is not set"), "{text}");
}

#[test]
fn syntax_errors_have_lines() {
    let (_dir, result) = load("bad.toml", "[sources.alerts]\ntype = \"http_server\"\naddress = \n");
    let errors = result.unwrap_err();
    assert!(matches!(errors.0[0].location, Location::Line { line: 3, .. }), "{errors}");
    let (_dir, result) = load("bad.yaml", "sources:\n  alerts:\n    type: [unclosed\n");
    let errors = result.unwrap_err();
    assert!(matches!(errors.0[0].location, Location::Line { .. }), "{errors}");
    let text = single("x.ini", "a=1");
    assert!(text.contains("unknown config format"), "{text}");
}

#[test]
fn bad_triggers_and_conditions_are_named() {
    let text = single("tr.toml", &with_sink("url = \"http://h/\"\ntriggers = [\"alert-creatd\"]\n"));
    assert!(
        text.contains("`sinks.chat.triggers[0]`: unknown event type `alert-creatd`, did you mean `alert-created`?"),
        "{text}"
    );
    let text = single("co.toml", &with_sink("url = \"http://h/\"\n[[sinks.chat.conditions]]\nfield = \"priority\"\n"));
    assert!(text.contains("`sinks.chat.conditions[0]`: needs one test"), "{text}");
}

#[test]
fn every_problem_is_listed_at_once() {
    let text = format!(
        "{SOURCE}\n[sinks.a]\ntype = \"webhook\"\ninputs = [\"nope\"]\nurl = \"ftp://x/\"\n\n[sinks.b]\ntype = \"webhook\"\nurl = \"http://h/\"\ntemplate = '{{{{ bogus }}}}'\n"
    );
    let errors = errors("many.toml", &text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn yaml_configs_load_too() {
    let (_dir, result) = load(
        "ok.yaml",
        "sources:\n  alerts:\n    type: http_server\n    address: 127.0.0.1:8687\nsinks:\n  chat:\n    type: webhook\n    inputs: [alerts]\n    url: http://127.0.0.1:9/hook\n    triggers: [incident-created]\n",
    );
    result.unwrap();
}

#[test]
fn delivery_settings_are_checked() {
    let text = single("r.toml", &with_sink("url = \"http://h/\"\nretry.attempts = 0\n"));
    assert!(text.contains("`sinks.chat.retry.attempts`:"), "{text}");
    let text = single("s.toml", &with_sink("url = \"http://h/\"\nretry.on_status = [700]\n"));
    assert!(text.contains("`sinks.chat.retry.on_status`") && text.contains("700"), "{text}");
    let text = single("b.toml", &with_sink("url = \"http://h/\"\nbuffer.type = \"tape\"\n"));
    assert!(text.contains("`sinks.chat.buffer.type`"), "{text}");
    let text = single("m.toml", &with_sink("url = \"http://h/\"\nbuffer.max_events = 0\n"));
    assert!(text.contains("`sinks.chat.buffer.max_events`: must be at least 1"), "{text}");
    let text = single("d.toml", &format!("data_dir = 5\n{}", with_sink("url = \"http://h/\"")));
    assert!(text.contains("`data_dir`: must be a path"), "{text}");
}
