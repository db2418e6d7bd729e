//! TLS that fits: a self-signed certificate made with the real `openssl` binary and given
//! as `tls.ca_file` (the case), a CA + leaf chain, host-name checks, client
//! certificates against a loopback server that requires one, switched-off checks and
//! their warnings, the healthcheck's handshake, and the system trust store (through
//! `SSL_CERT_FILE`, set only for a child `webhook-sink`). Every sink here is the real one:
//! config → `validate` → `build` → one delivery (`probe`).

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use webhook_sink::component::{Healthcheck, SinkContext, StreamSink};
use webhook_sink::dead_letters::DeadLetters;
use webhook_sink::error::FieldError;
use webhook_sink::event::sample_event;
use webhook_sink::sinks::webhook::config::{ValidatedWebhookSink, WebhookSinkConfig};

use support::certs::{openssl, openssl_self_signed, run_openssl, ClientCerts};
use support::{Dir, Receiver, TestCerts};

const WAIT: Duration = Duration::from_secs(10);

/// A sink from the TOML of its table (no `type`/`inputs`), paths relative to `dir`.
fn sink_config(dir: &Path, toml_text: &str) -> Result<ValidatedWebhookSink, Vec<FieldError>> {
    let config: WebhookSinkConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    config.validate(dir)
}

/// Builds the validated sink for real; returns the sink and its healthcheck.
fn build(dir: &Path, sink: &ValidatedWebhookSink) -> (Box<dyn StreamSink>, Healthcheck) {
    let cx = SinkContext {
        name: "tls".into(),
        config_dir: dir.to_path_buf(),
        stats: Arc::default(),
        dead_letters: Arc::new(DeadLetters::new(&dir.join("data"))),
        shard_runtimes: Vec::new(),
    };
    let (sink, healthcheck) = sink.build(cx).unwrap_or_else(|e| panic!("build: {e}"));
    (Box::new(sink), healthcheck)
}

/// One delivery of the sample event: `Ok(answer)` on 2xx, `Err(answer)` otherwise.
async fn deliver_once(dir: &Path, toml_text: &str) -> Result<String, String> {
    let sink = sink_config(dir, toml_text).unwrap_or_else(|e| panic!("{e:?}\n{toml_text}"));
    let (sink, _healthcheck) = build(dir, &sink);
    let probe = tokio::time::timeout(WAIT * 2, sink.probe(&sample_event())).await.expect("a delivery ends in time");
    if probe.success {
        Ok(probe.answer)
    } else {
        Err(probe.answer)
    }
}

/// The healthcheck's verdict for the sink.
async fn healthcheck(dir: &Path, toml_text: &str) -> Result<(), String> {
    let sink = sink_config(dir, toml_text).unwrap_or_else(|e| panic!("{e:?}\n{toml_text}"));
    let (_sink, healthcheck) = build(dir, &sink);
    tokio::time::timeout(WAIT, healthcheck).await.expect("the healthcheck ends in time").map_err(|e| e.0)
}

/// `TestCerts` for a receiver that presents `crt`/`key` (e.g. made by openssl).
fn serving(crt: &Path, key: &Path) -> TestCerts {
    let cert_pem = std::fs::read_to_string(crt).unwrap();
    TestCerts {
        ca_pem: cert_pem.clone(),
        cert_pem,
        key_pem: std::fs::read_to_string(key).unwrap(),
        dir: tempfile::tempdir().unwrap(),
        ca_path: crt.to_path_buf(),
    }
}

fn toml_path(path: &Path) -> String {
    path.display().to_string().replace('\\', "\\\\")
}

// ---------------------------------------------------------------------------------------
// The case: a self-signed certificate made by openssl, as `tls.ca_file`

#[tokio::test]
async fn openssl_self_signed_certificate_as_ca_file_is_trusted() {
    let Some(openssl) = openssl() else { return };
    let dir = Dir::new();
    let (crt, key) = openssl_self_signed(&openssl, dir.0.path(), "server", "127.0.0.1");
    let receiver = Receiver::https(&serving(&crt, &key)).await;
    let url = receiver.url("/hook");
    let config = format!("url = \"{url}\"\ntls.ca_file = \"server.crt\"\n");

    // Before: `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`.
    let answer = deliver_once(dir.0.path(), &config).await.expect("delivered");
    assert!(answer.contains("200"), "{answer}");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/hook");
    healthcheck(dir.0.path(), &config).await.expect("the healthcheck passes, handshake included");

    // The same certificate is not trusted without `ca_file`, and the reason is given.
    let err = deliver_once(dir.0.path(), &format!("url = \"{url}\"\n")).await.expect_err("untrusted");
    assert!(err.contains("UnknownIssuer") || err.contains("CaUsedAsEndEntity"), "{err}");
}

#[tokio::test]
async fn openssl_certificate_for_another_address_fails_on_the_name_unless_verify_hostname_is_false() {
    let Some(openssl) = openssl() else { return };
    let dir = Dir::new();
    // Made for 127.0.0.2, served on 127.0.0.1.
    let (crt, key) = openssl_self_signed(&openssl, dir.0.path(), "other", "127.0.0.2");
    let receiver = Receiver::https(&serving(&crt, &key)).await;
    let url = receiver.url("/hook");
    let config = format!("url = \"{url}\"\ntls.ca_file = \"other.crt\"\n");

    let err = deliver_once(dir.0.path(), &config).await.expect_err("wrong name");
    assert!(err.contains("not valid for name") && err.contains("127.0.0.1"), "{err}");
    let err = healthcheck(dir.0.path(), &config).await.expect_err("wrong name at start");
    assert!(err.contains("TLS handshake") && err.contains("not valid for name"), "{err}");
    assert!(receiver.requests().is_empty());

    let relaxed = format!("{config}tls.verify_hostname = false\n");
    deliver_once(dir.0.path(), &relaxed).await.expect("delivered without the name check");
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
}

// ---------------------------------------------------------------------------------------
// A CA and a leaf it signed (rcgen)

#[tokio::test]
async fn ca_and_leaf_chain_still_works_and_is_still_checked() {
    let certs = TestCerts::generate();
    let receiver = Receiver::https(&certs).await;
    let port = receiver.addr().port();
    let dir = Dir::new();
    let ca = toml_path(&certs.ca_path);

    for host in ["localhost", "127.0.0.1"] {
        let config = format!("url = \"https://{host}:{port}/chain\"\ntls.ca_file = \"{ca}\"\n");
        deliver_once(dir.0.path(), &config).await.unwrap_or_else(|e| panic!("{host}: {e}"));
        healthcheck(dir.0.path(), &config).await.unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    // `verify_hostname = false` still checks the chain: another CA's leaf is refused.
    let stranger = TestCerts::generate();
    let config = format!(
        "url = \"https://127.0.0.1:{port}/chain\"\ntls.ca_file = \"{}\"\ntls.verify_hostname = false\n",
        toml_path(&stranger.ca_path)
    );
    let err = deliver_once(dir.0.path(), &config).await.expect_err("chain to an untrusted CA");
    assert!(err.contains("UnknownIssuer") || err.contains("BadSignature"), "{err}");
    assert_eq!(receiver.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------
// mTLS

/// A loopback HTTPS server that requires a client certificate signed by `client_ca`
/// (rustls' `WebPkiClientVerifier`), answering 200 to every request. Drop stops it.
struct MtlsServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for MtlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MtlsServer {
    async fn start(server: &TestCerts, client_ca_pem: &str) -> MtlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(client_ca_pem.as_bytes()).unwrap()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
        let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while conns.try_join_next().is_some() {}
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(stream)).await else { return };
                    let service = service_fn(move |_req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("ok")))) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        MtlsServer { addr, requests, task }
    }
}

#[tokio::test]
async fn mtls_server_refuses_a_sink_without_a_client_certificate_and_takes_one_with_it() {
    let server_certs = TestCerts::generate();
    let client = ClientCerts::generate(None);
    let server = MtlsServer::start(&server_certs, &client.ca_pem).await;
    let dir = Dir::new();
    dir.write("client.crt", &client.cert_pem);
    dir.write("client.key", &client.key_pem);
    let base = format!(
        "url = \"https://localhost:{}/m\"\ntls.ca_file = \"{}\"\n",
        server.addr.port(),
        toml_path(&server_certs.ca_path)
    );

    let err = deliver_once(dir.0.path(), &base).await.expect_err("no client certificate");
    assert!(err.contains("CertificateRequired"), "{err}");
    let err = healthcheck(dir.0.path(), &base).await.expect_err("no client certificate, said at start");
    assert!(err.contains("TLS handshake") && err.contains("CertificateRequired"), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);

    let with_cert = format!("{base}tls.crt_file = \"client.crt\"\ntls.key_file = \"client.key\"\n");
    deliver_once(dir.0.path(), &with_cert).await.expect("delivered with the client certificate");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    healthcheck(dir.0.path(), &with_cert).await.expect("healthcheck with the client certificate");

    // A client certificate from a CA the server does not know is refused too.
    let stranger = ClientCerts::generate(None);
    dir.write("stranger.crt", &stranger.cert_pem);
    dir.write("stranger.key", &stranger.key_pem);
    let other = format!("{base}tls.crt_file = \"stranger.crt\"\ntls.key_file = \"stranger.key\"\n");
    let err = deliver_once(dir.0.path(), &other).await.expect_err("a client certificate the server does not trust");
    assert!(err.contains("alert"), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_keys_in_pkcs1_and_sec1_work_too() {
    let Some(openssl) = openssl() else { return };
    let server_certs = TestCerts::generate();
    let dir = Dir::new();
    let path = dir.0.path();
    // RSA: openssl makes a PKCS#8 key, rcgen a certificate for it, openssl the PKCS#1 form.
    run_openssl(
        &openssl,
        path,
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa8.key"],
    );
    run_openssl(&openssl, path, &["pkey", "-in", "rsa8.key", "-traditional", "-out", "rsa1.key"]);
    let rsa = ClientCerts::generate(Some(&std::fs::read_to_string(path.join("rsa8.key")).unwrap()));
    // ECDSA: rcgen's PKCS#8 key, openssl's SEC1 form.
    let ec = ClientCerts::generate(None);
    dir.write("ec8.key", &ec.key_pem);
    run_openssl(&openssl, path, &["pkey", "-in", "ec8.key", "-traditional", "-out", "ec1.key"]);

    for (client, crt, key, marker) in
        [(&rsa, "rsa.crt", "rsa1.key", "BEGIN RSA PRIVATE KEY"), (&ec, "ec.crt", "ec1.key", "BEGIN EC PRIVATE KEY")]
    {
        assert!(std::fs::read_to_string(path.join(key)).unwrap().contains(marker), "{key} is not in the form tested");
        dir.write(crt, &client.cert_pem);
        let server = MtlsServer::start(&server_certs, &client.ca_pem).await;
        let config = format!(
            "url = \"https://localhost:{}/m\"\ntls.ca_file = \"{}\"\ntls.crt_file = \"{crt}\"\ntls.key_file = \"{key}\"\n",
            server.addr.port(),
            toml_path(&server_certs.ca_path)
        );
        deliver_once(path, &config).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(server.requests.load(Ordering::SeqCst), 1, "{key}");
    }
}

// ---------------------------------------------------------------------------------------
// Errors of the client certificate fields

#[test]
fn crt_and_key_errors_name_the_field_and_the_file_and_never_the_key() {
    let dir = Dir::new();
    let a = ClientCerts::generate(None);
    let b = ClientCerts::generate(None);
    dir.write("a.crt", &a.cert_pem);
    dir.write("a.key", &a.key_pem);
    dir.write("b.key", &b.key_pem);
    let errors = |tls: &str| -> Vec<FieldError> {
        sink_config(dir.0.path(), &format!("url = \"https://127.0.0.1:1/\"\n{tls}"))
            .err()
            .unwrap_or_else(|| panic!("{tls} was accepted"))
    };
    let one = |tls: &str, field: &str, words: &[&str]| {
        let errors = errors(tls);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, field, "{errors:?}");
        for word in words {
            assert!(errors[0].message.contains(word), "{word:?} not in {:?}", errors[0].message);
        }
        let text = format!("{errors:?} {}", errors[0]);
        for key in [&a.key_pem, &b.key_pem] {
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "key material in {text}");
            }
        }
    };

    one("tls.crt_file = \"a.crt\"\n", "tls.key_file", &["is missing"]);
    one("tls.key_file = \"a.key\"\n", "tls.crt_file", &["is missing"]);
    one("tls.crt_file = \"nope.crt\"\ntls.key_file = \"a.key\"\n", "tls.crt_file", &["nope.crt", "cannot be read"]);
    one("tls.crt_file = \"a.crt\"\ntls.key_file = \"nope.key\"\n", "tls.key_file", &["nope.key", "cannot be read"]);
    one("tls.crt_file = \"a.crt\"\ntls.key_file = \"b.key\"\n", "tls.key_file", &["b.key", "does not belong", "a.crt"]);
    one("tls.crt_file = \"a.key\"\ntls.key_file = \"a.key\"\n", "tls.crt_file", &["a.key", "no PEM certificate"]);
    one("tls.crt_file = \"a.crt\"\ntls.key_file = \"a.crt\"\n", "tls.key_file", &["a.crt", "no PEM private key"]);
    one("tls.ca_file = \"a.key\"\n", "tls.ca_file", &["a.key", "no PEM certificates"]);
    one("tls.ca_file = \"nope.pem\"\n", "tls.ca_file", &["nope.pem"]);
}

// ---------------------------------------------------------------------------------------
// verify_certificate = false, and the warnings

#[tokio::test]
async fn verify_certificate_false_delivers_to_an_untrusted_certificate_with_a_loud_warning() {
    let certs = TestCerts::generate();
    let receiver = Receiver::https(&certs).await;
    let dir = Dir::new();
    let url = receiver.url("/anything");

    deliver_once(dir.0.path(), &format!("url = \"{url}\"\n")).await.expect_err("verified by default");
    let config = format!("url = \"{url}\"\ntls.verify_certificate = false\n");
    deliver_once(dir.0.path(), &config).await.expect("delivered without verification");
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
    let warnings = sink_config(dir.0.path(), &config).unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].field, "tls.verify_certificate");

    // `validate` says it, with the key path.
    let pipeline = dir.write(
        "pipeline.toml",
        &format!(
            "[sources.alerts]\ntype = \"stdin\"\n\n[sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n\
             url = \"{url}\"\ntls.verify_certificate = false\ntls.verify_hostname = false\n"
        ),
    );
    let out = run_bin(&["validate", "--config", &pipeline.display().to_string()], &[]).await;
    assert!(out.success, "{out:?}");
    let line = out.stdout.lines().find(|l| l.contains("sinks.hook.tls.verify_certificate")).unwrap_or_else(|| {
        panic!("no warning for verify_certificate:\n{}", out.stdout);
    });
    assert!(
        line.starts_with("warning: ")
            && line.contains("certificates are not verified: anyone on the path can read and change webhooks"),
        "{line}"
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("warning: ") && l.contains("sinks.hook.tls.verify_hostname")),
        "no warning for verify_hostname:\n{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------------------
// The healthcheck does the handshake

#[tokio::test]
async fn healthcheck_reports_a_certificate_problem_at_start_and_passes_a_good_setup() {
    let certs = TestCerts::generate();
    let receiver = Receiver::https(&certs).await;
    let dir = Dir::new();
    let url = receiver.url("/h");

    let err = healthcheck(dir.0.path(), &format!("url = \"{url}\"\n")).await.expect_err("untrusted certificate");
    assert!(err.contains("TLS handshake with 127.0.0.1:") && err.contains("UnknownIssuer"), "{err}");
    let good = format!("url = \"{url}\"\ntls.ca_file = \"{}\"\n", toml_path(&certs.ca_path));
    healthcheck(dir.0.path(), &good).await.expect("trusted certificate");
    assert!(receiver.requests().is_empty(), "the healthcheck sends nothing");

    // Plain http: a connection through the same connector.
    let plain = Receiver::http().await;
    healthcheck(dir.0.path(), &format!("url = \"{}\"\n", plain.url("/h"))).await.expect("http endpoint up");
    let closed = support::free_addr();
    let err = healthcheck(dir.0.path(), &format!("url = \"http://{closed}/h\"\n")).await.expect_err("nobody listens");
    assert!(err.contains(&format!("cannot connect to {closed}")), "{err}");
    assert!(plain.requests().is_empty());
}

// ---------------------------------------------------------------------------------------
// The system trust store

/// What a child `webhook-sink` printed.
#[derive(Debug)]
struct BinOutput {
    success: bool,
    stdout: String,
    #[allow(dead_code)] // shown by Debug when an assertion fails
    stderr: String,
}

/// Runs the binary with `args` and extra environment `env` (for the child only: the
/// tests share this process's environment), killed after a bounded wait.
async fn run_bin(args: &[&str], env: &[(&str, &str)]) -> BinOutput {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR").env_remove("WEBHOOK_SINK_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start webhook-sink");
    let deadline = Instant::now() + WAIT * 4;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("webhook-sink {args:?} did not end in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let read = |pipe: Option<Box<dyn std::io::Read>>| {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read>));
    BinOutput { success: status.success(), stdout, stderr }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_system_trust_store_is_consulted() {
    let certs = TestCerts::generate();
    let receiver = Receiver::https(&certs).await;
    let dir = Dir::new();
    let pipeline = dir.write(
        "pipeline.toml",
        &format!(
            "[sources.alerts]\ntype = \"stdin\"\n\n[sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n\
             url = \"{}\"\nrequest.timeout_secs = 10\n",
            receiver.url("/system")
        ),
    );
    let pipeline = pipeline.display().to_string();
    let args = ["test", "--config", pipeline.as_str(), "--sink", "hook"];
    let ca = certs.ca_path.display().to_string();

    // The machine's own store does not know the test CA.
    let out = run_bin(&args, &[]).await;
    assert!(!out.success, "{out:?}");
    assert!(out.stdout.contains("UnknownIssuer"), "{out:?}");

    // rustls-native-certs reads the store from SSL_CERT_FILE when it is set.
    let out = run_bin(&args, &[("SSL_CERT_FILE", ca.as_str())]).await;
    assert!(out.success, "{out:?}");
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);

    // An unreadable store is no error: the bundled roots still apply, and `ca_file` too.
    let missing: PathBuf = dir.0.path().join("no-such-bundle.pem");
    let missing = missing.display().to_string();
    let out = run_bin(&args, &[("SSL_CERT_FILE", missing.as_str())]).await;
    assert!(!out.success && out.stdout.contains("UnknownIssuer"), "{out:?}");
    let with_ca = dir.write(
        "with-ca.toml",
        &format!(
            "[sources.alerts]\ntype = \"stdin\"\n\n[sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\n\
             url = \"{}\"\ntls.ca_file = \"{}\"\n",
            receiver.url("/ca"),
            toml_path(&certs.ca_path)
        ),
    );
    let with_ca = with_ca.display().to_string();
    let out = run_bin(&["test", "--config", &with_ca, "--sink", "hook"], &[("SSL_CERT_FILE", missing.as_str())]).await;
    assert!(out.success, "{out:?}");
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);
}
