//! The peers' own example configs are checked by the peers themselves: `amtool
//! check-config` for Alertmanager and `syslog-ng --syntax-only` for syslog-ng. (The
//! webhook-sink configs beside them are checked by tests/cli.rs; Vector cannot be
//! installed here, its example is exercised through tests/vector_compat.rs.)

use crate::support;

use std::path::Path;
use std::process::Command;

use support::peer::require;

fn example(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples").join(path).display().to_string()
}

#[test]
fn alertmanager_example_passes_amtool_check_config() {
    let Some(amtool) = require("amtool", "prometheus-alertmanager", &[]) else { return };
    let out = Command::new(amtool).args(["check-config", &example("alertmanager/alertmanager.yml")]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "amtool check-config failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn syslog_ng_example_passes_its_syntax_check() {
    let Some(syslog_ng) = require("syslog-ng", "syslog-ng-core", &["/usr/sbin"]) else { return };
    let out =
        Command::new(syslog_ng).args(["--syntax-only", "-f", &example("syslog-ng/syslog-ng.conf")]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "syslog-ng --syntax-only failed:\n{text}");
}
