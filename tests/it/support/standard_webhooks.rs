//! The real Standard Webhooks verifiers, run as a Python subprocess: the reference library
//! from PyPI (`standardwebhooks`, which checks `v1` HMAC signatures and the timestamp) and
//! `cryptography`'s ed25519 for `v1a` signatures (the reference libraries do not verify
//! `v1a`). `.ci/run` installs both in a venv; the tests find its interpreter through
//! `STANDARDWEBHOOKS_PYTHON`, else at the venv's place in the cache directory.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::peer::KillOnDrop;
use super::Recorded;

/// The environment variable naming the venv's Python.
pub const PYTHON_VAR: &str = "STANDARDWEBHOOKS_PYTHON";

/// Upper bound of one verifier run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What a receiver holding these keys makes of each request, checked by the Python script:
/// for every request, per `whsec_` secret whether `standardwebhooks.Webhook(secret).verify`
/// accepts it, per `whsk_` key whether a `v1a` entry verifies with its public key.
const SCRIPT: &str = r#"
import base64, json, sys, time
from standardwebhooks.webhooks import Webhook
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

def b64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)

job = json.load(sys.stdin)
public_keys = []
for key in job["signing_keys"]:
    raw = b64(key[len("whsk_"):])
    seed = raw[:32]
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    if len(raw) == 64 and raw[32:] != public:
        raise SystemExit("the 64-byte whsk_ key's second half is not its seed's public key")
    public_keys.append("whpk_" + base64.b64encode(public).decode())

results = []
for request in job["requests"]:
    body = base64.b64decode(request["body"])
    headers = request["headers"]
    v1 = []
    for secret in job["secrets"]:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
            v1.append(None)
        except Exception as error:
            v1.append(f"{type(error).__name__}: {error}")
    v1a = []
    for public_key in public_keys:
        verdict = "no v1a signature verifies"
        try:
            msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
            if abs(time.time() - int(timestamp)) > 300:
                raise ValueError("timestamp out of tolerance")
            signed = f"{msg_id}.{timestamp}.".encode() + body
            key = Ed25519PublicKey.from_public_bytes(b64(public_key[len("whpk_"):]))
            for entry in headers["webhook-signature"].split(" "):
                version, signature = entry.split(",")
                if version != "v1a":
                    continue
                try:
                    key.verify(b64(signature), signed)
                    verdict = None
                    break
                except Exception:
                    pass
        except Exception as error:
            verdict = f"{type(error).__name__}: {error}"
        v1a.append(verdict)
    results.append({"v1": v1, "v1a": v1a})
json.dump({"public_keys": public_keys, "results": results}, sys.stdout)
"#;

/// The verifiers' Python, or `None` (said loudly; a failure under CI) when it is missing.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os(PYTHON_VAR).map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(cache.join("webhook-sink/standardwebhooks-venv/bin/python"))
    });
    let usable = candidate.filter(|python| {
        run(python, &["-c", "import standardwebhooks, cryptography"], b"").is_some_and(|(ok, _, _)| ok)
    });
    if usable.is_none() {
        let message = format!(
            "\n\n*** PEER MISSING: Python with the PyPI packages `standardwebhooks` and `cryptography` was not \
             found (`{PYTHON_VAR}`, or the venv .ci/run makes); this test's check by the real verifiers did NOT run. Run .ci/run, or: \
             python3 -m venv ~/.cache/webhook-sink/standardwebhooks-venv && \
             ~/.cache/webhook-sink/standardwebhooks-venv/bin/pip install standardwebhooks cryptography ***\n"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("{message}");
    }
    usable
}

/// One request's verdicts: `None` accepted, `Some(why)` refused; one per secret / key given.
#[derive(Debug)]
pub struct Verdict {
    /// Per `whsec_` secret, by `standardwebhooks`.
    pub v1: Vec<Option<String>>,
    /// Per `whsk_` key, by `cryptography`'s ed25519 with the key's public half.
    pub v1a: Vec<Option<String>>,
}

/// What the verifiers said.
#[derive(Debug)]
pub struct Verified {
    /// The `whpk_` of each `whsk_` key, as Python derives it from the seed.
    pub public_keys: Vec<String>,
    /// Per request, in order.
    pub verdicts: Vec<Verdict>,
}

/// Verifies `requests` (their headers and exact bodies) as receivers holding `secrets`
/// (`whsec_`) and the public halves of `signing_keys` (`whsk_`) would.
pub fn verify(python: &PathBuf, requests: &[Recorded], secrets: &[&str], signing_keys: &[&str]) -> Verified {
    let requests: Vec<Value> = requests
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(String::from_utf8_lossy(value).into_owned())))
                .collect();
            json!({"headers": headers, "body": base64::engine::general_purpose::STANDARD.encode(&r.body)})
        })
        .collect();
    let job = json!({"requests": requests, "secrets": secrets, "signing_keys": signing_keys});
    let (ok, stdout, stderr) =
        run(python, &["-c", SCRIPT], job.to_string().as_bytes()).expect("the verifier script runs");
    assert!(ok, "the verifier script failed:\n{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let verdicts = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let list = |v: &Value| -> Vec<Option<String>> {
                v.as_array().expect("a list").iter().map(|x| x.as_str().map(str::to_string)).collect()
            };
            Verdict { v1: list(&r["v1"]), v1a: list(&r["v1a"]) }
        })
        .collect();
    let public_keys =
        out["public_keys"].as_array().expect("keys").iter().map(|k| k.as_str().unwrap_or("").to_string()).collect();
    Verified { public_keys, verdicts }
}

/// Runs `python args` with `input` on stdin, bounded by [`TIMEOUT`]: `(success, stdout,
/// stderr)`, or `None` when it cannot start.
fn run(python: &PathBuf, args: &[&str], input: &[u8]) -> Option<(bool, String, String)> {
    let mut command = Command::new(python);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(command.spawn().ok()?);
    let mut stdin = child.0.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.0.stdout.take()?));
    let stderr = reader(Box::new(child.0.stderr.take()?));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().ok()? {
            break status;
        }
        assert!(Instant::now() < deadline, "{} {args:?} ran longer than {TIMEOUT:?}", python.display());
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Some((status.success(), stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default()))
}
