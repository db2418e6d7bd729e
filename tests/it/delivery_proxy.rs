//! Delivery through a real HTTP proxy (Debian's tinyproxy, started by each test on a
//! loopback port): `http://` webhooks forwarded in absolute form, `https://` ones through
//! a `CONNECT` tunnel, proxy authentication from the proxy URL's userinfo, `no_proxy`,
//! and the `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` defaults (set for a child `webhook-sink`
//! process: tests share this process's environment).
//!
//! The in-process tests set `proxy.no_proxy = []` so that a `NO_PROXY` of the machine
//! running them changes nothing.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use webhook_sink::sinks::webhook::client::build_connector;
use webhook_sink::sinks::webhook::config::{ValidatedWebhookSink, WebhookSinkConfig};
use webhook_sink::sinks::webhook::service::{DeliveryError, DeliveryResponse, WebhookService};

use support::tinyproxy::Tinyproxy;
use support::{free_addr, Dir, Receiver, TestCerts};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A sink to `url` with `extra` settings (TOML), validated as the loader would.
fn sink(url: &str, extra: &str) -> ValidatedWebhookSink {
    let text = format!("url = \"{url}\"\n{extra}");
    let config: WebhookSinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.validate(Path::new(".")).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

/// A one-slot service with the sink's connector (TLS, proxies, guard).
fn service(sink: &ValidatedWebhookSink) -> WebhookService {
    WebhookService::new(build_connector(&sink.tls, &sink.dial).expect("connector"), 1, TIMEOUT)
}

/// POSTs `body` to the sink's URL (with its Basic credentials, as deliveries do).
///
/// One attempt, plus one more when the first one's kept-alive connection was closed by the
/// proxy while the request was on its way (tinyproxy closes client connections between
/// requests, and the close can cross the next request): the sink's retry policy covers
/// that in a pipeline, and this helper has none of its own.
async fn post(
    service: &WebhookService,
    sink: &ValidatedWebhookSink,
    body: &str,
) -> Result<DeliveryResponse, DeliveryError> {
    let target = sink.request_builder.target();
    let request = || {
        let mut builder = Request::post(target.uri().clone()).header(CONTENT_TYPE, "application/json");
        if let Some(auth) = target.authorization() {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        builder.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    };
    match service.send(request()).await {
        Err(DeliveryError::Transport(reason)) if reason.contains("connection closed before message completed") => {
            service.send(request()).await
        }
        answer => answer,
    }
}

#[tokio::test]
async fn http_webhooks_go_through_the_proxy_in_absolute_form() {
    let rx = Receiver::http().await;
    let Some(proxy) = Tinyproxy::start(&[], None).await else { return };
    let port = rx.addr().port();
    let sink = sink(
        &format!("http://hook:HookPw@127.0.0.1:{port}/hook?x=1"),
        &format!("proxy.http = \"{}\"\nproxy.no_proxy = []\n", proxy.url()),
    );
    let service = service(&sink);
    for i in 0..2 {
        let answer = post(&service, &sink, &format!("event {i}")).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer}");
    }

    let got = rx.wait_for(2, TIMEOUT).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for (i, request) in got.iter().enumerate() {
        assert_eq!(request.path_and_query, "/hook?x=1");
        assert_eq!(request.body_str(), format!("event {i}"));
        assert_eq!(request.header_str("host"), Some(format!("127.0.0.1:{port}")));
        let via = request.header_str("via").unwrap_or_default();
        assert!(via.contains("tinyproxy"), "the proxy's Via header proves the path: {request:?}");
        // The receiver's own Basic credentials still arrive.
        let basic = base64::engine::general_purpose::STANDARD.encode("hook:HookPw");
        assert_eq!(request.header_str("authorization"), Some(format!("Basic {basic}")));
    }
    // The proxy saw absolute-form requests. Its log arrives through a pipe read by a
    // thread, so it may trail the receiver a little: wait for it (bounded).
    let line = format!("POST http://127.0.0.1:{port}/hook?x=1 HTTP/1.1");
    for _ in 0..100 {
        if proxy.requests().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.requests(), [line.clone(), line], "proxy log:\n{}", proxy.log());
}

#[tokio::test]
async fn https_webhooks_go_through_a_connect_tunnel() {
    let certs = TestCerts::generate();
    let rx = Receiver::https(&certs).await;
    let port = rx.addr().port();
    let Some(proxy) = Tinyproxy::start(&[port], None).await else { return };
    let sink = sink(
        &rx.url("/secure"),
        &format!("tls.ca_file = {:?}\nproxy.https = \"{}\"\nproxy.no_proxy = []\n", certs.ca_path, proxy.url()),
    );
    let service = service(&sink);
    for i in 0..3 {
        let answer = post(&service, &sink, &format!("tls {i}")).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer}");
    }

    let got = rx.wait_for(3, TIMEOUT).await;
    assert_eq!(got.len(), 3, "{got:?}");
    for request in &got {
        assert_eq!(request.path_and_query, "/secure");
        // Inside the tunnel the proxy sees only TLS: it adds nothing.
        assert_eq!(request.header("via"), None, "{request:?}");
        assert_eq!(request.header("proxy-authorization"), None);
    }
    // One tunnel, kept alive for all three.
    assert_eq!(proxy.requests(), [format!("CONNECT 127.0.0.1:{port} HTTP/1.1")], "proxy log:\n{}", proxy.log());
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn proxy_authentication_comes_from_the_proxy_url_and_is_never_shown() {
    const PASSWORD: &str = "Pr0xyPass9";
    let rx = Receiver::http().await;
    let certs = TestCerts::generate();
    let rx_tls = Receiver::https(&certs).await;
    let Some(proxy) = Tinyproxy::start(&[rx_tls.addr().port()], Some(("hookuser", PASSWORD))).await else { return };
    let ca = format!("tls.ca_file = {:?}\nproxy.no_proxy = []\n", certs.ca_path);
    let with = |url: &str, proxy_url: &str| {
        sink(url, &format!("{ca}proxy.http = \"{proxy_url}\"\nproxy.https = \"{proxy_url}\"\n"))
    };

    // No credentials: an http webhook gets the proxy's 407, an https one no tunnel.
    let anonymous = with(&rx.url("/plain"), &proxy.url());
    let answer = post(&service(&anonymous), &anonymous, "x").await.unwrap();
    assert_eq!(answer.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED, "{answer}");
    let anonymous = with(&rx_tls.url("/secure"), &proxy.url());
    let error = post(&service(&anonymous), &anonymous, "x").await.unwrap_err().to_string();
    let tunnel = format!("the proxy {} did not open a tunnel to 127.0.0.1:{}", proxy.url(), rx_tls.addr().port());
    assert!(error.contains(&tunnel) && error.contains("proxy authorization required"), "{error}");

    // Wrong password: refused the same way; the password is not in the error.
    let wrong = with(&rx_tls.url("/secure"), &proxy.url_with("hookuser", "Wr0ngPass7"));
    let error = post(&service(&wrong), &wrong, "x").await.unwrap_err().to_string();
    // (tinyproxy answers wrong credentials with a 401; the error quotes its status line.)
    assert!(error.contains("did not open a tunnel") && error.contains("401 Unauthorized"), "{error}");
    assert!(error.contains("http://hookuser:***@127.0.0.1") && !error.contains("Wr0ngPass7"), "{error}");
    assert!(rx.requests().is_empty() && rx_tls.requests().is_empty());

    // With them, both deliver.
    let http = with(&rx.url("/plain"), &proxy.url_with("hookuser", PASSWORD));
    assert_eq!(post(&service(&http), &http, "plain").await.unwrap().status, StatusCode::OK);
    let https = with(&rx_tls.url("/secure"), &proxy.url_with("hookuser", PASSWORD));
    assert_eq!(post(&service(&https), &https, "secure").await.unwrap().status, StatusCode::OK);
    assert_eq!(rx.wait_for(1, TIMEOUT).await.len(), 1);
    assert_eq!(rx_tls.wait_for(1, TIMEOUT).await.len(), 1);
    assert_eq!(rx_tls.requests()[0].header("proxy-authorization"), None, "not sent inside the tunnel");

    // The credentials never show: not in the config's or the compiled sink's Debug.
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("hookuser:{PASSWORD}"));
    for text in [format!("{:?}", https.config), format!("{https:?}"), format!("{:?}", https.dial)] {
        assert!(!text.contains(PASSWORD) && !text.contains(&encoded), "{text}");
    }
    assert!(format!("{:?}", https.config).contains("http://hookuser:***@127.0.0.1"));
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let rx = Receiver::http().await;
    let Some(proxy) = Tinyproxy::start(&[], None).await else { return };
    let port = rx.addr().port();
    let proxies = format!("proxy.http = \"{0}\"\nproxy.https = \"{0}\"\n", proxy.url());
    for (url, no_proxy) in [
        (rx.url("/by-address"), "[\"127.0.0.1\"]"),
        (rx.url("/by-network"), "[\"other.example\", \"127.0.0.0/8\"]"),
        (format!("http://localhost:{port}/by-name"), "[\".localhost\"]"),
        (rx.url("/everything"), "[\"*\"]"),
    ] {
        let sink = sink(&url, &format!("{proxies}proxy.no_proxy = {no_proxy}\n"));
        assert_eq!(post(&service(&sink), &sink, "direct").await.unwrap().status, StatusCode::OK, "{url}");
    }
    let got = rx.wait_for(4, TIMEOUT).await;
    assert_eq!(got.len(), 4, "{got:?}");
    for request in &got {
        assert_eq!(request.header("via"), None, "reached directly: {request:?}");
    }
    assert!(proxy.requests().is_empty(), "the proxy saw nothing:\n{}", proxy.log());
}

// ---------------------------------------------------------------------------------------
// The environment variables, through the binary.

const PROXY_VARIABLES: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// `webhook-sink test` of sink `hook` (to `url`, with `extra`), with only the proxy
/// variables `env` set; returns whether it succeeded, and its output.
async fn test_command(url: &str, extra: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = Dir::new();
    let config = dir.write(
        "proxy.toml",
        &format!(
            "[sources.alerts]\ntype = \"http_server\"\naddress = \"{}\"\n\n[sinks.hook]\ntype = \"webhook\"\n\
             inputs = [\"alerts\"]\nurl = \"{url}\"\nhealthcheck.enabled = false\n{extra}\n",
            free_addr()
        ),
    );
    let stdout = dir.0.path().join("stdout");
    let stderr = dir.0.path().join("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-sink"));
    command
        .args(["test", "--config", config.to_str().unwrap(), "--sink", "hook"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .env_remove("WEBHOOK_SINK_LOG");
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let mut child = support::peer::KillOnDrop::spawn(&mut command);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "webhook-sink test did not finish in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(&stdout).unwrap_or_default(),
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    (status.success(), output)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_variables_are_the_defaults() {
    let rx = Receiver::http().await;
    let certs = TestCerts::generate();
    let rx_tls = Receiver::https(&certs).await;
    let Some(proxy) = Tinyproxy::start(&[rx_tls.addr().port()], None).await else { return };
    let proxy_url = proxy.url();

    // HTTP_PROXY: through the proxy.
    let (ok, output) = test_command(&rx.url("/env"), "", &[("HTTP_PROXY", &proxy_url)]).await;
    assert!(ok, "{output}");
    let got = rx.wait_for(1, TIMEOUT).await;
    assert!(got[0].header_str("via").unwrap_or_default().contains("tinyproxy"), "{got:?}");
    assert_eq!(proxy.requests().len(), 1, "{}", proxy.log());

    // Lower-case https_proxy: a CONNECT tunnel.
    let ca = format!("tls.ca_file = {:?}", certs.ca_path);
    let (ok, output) = test_command(&rx_tls.url("/env"), &ca, &[("https_proxy", &proxy_url)]).await;
    assert!(ok, "{output}");
    assert_eq!(rx_tls.wait_for(1, TIMEOUT).await.len(), 1);
    assert_eq!(proxy.requests().last(), Some(&format!("CONNECT {} HTTP/1.1", rx_tls.addr())), "{}", proxy.log());

    // NO_PROXY, and `proxy.enabled = false`: direct, the proxy sees nothing more.
    let (ok, output) =
        test_command(&rx.url("/env"), "", &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "localhost,127.0.0.1")]).await;
    assert!(ok, "{output}");
    let (ok, output) = test_command(&rx.url("/env"), "proxy.enabled = false", &[("HTTP_PROXY", &proxy_url)]).await;
    assert!(ok, "{output}");
    let got = rx.wait_for(3, TIMEOUT).await;
    assert_eq!(got.len(), 3);
    assert!(got[1..].iter().all(|r| r.header("via").is_none()), "{got:?}");
    assert_eq!(proxy.requests().len(), 2, "{}", proxy.log());

    // A bad variable is an error naming the field and the variable, not its value.
    let (ok, output) = test_command(&rx.url("/env"), "", &[("HTTP_PROXY", "socks5://u:EnvPw5@127.0.0.1:1")]).await;
    assert!(!ok, "{output}");
    assert!(output.contains("sinks.hook.proxy.http") && output.contains("HTTP_PROXY"), "{output}");
    assert!(!output.contains("EnvPw5"), "{output}");
}
