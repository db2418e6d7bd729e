//! `Target` + `WebhookService` (its connections and connector) against the recording
//! receiver: what goes on the wire, TLS, keep-alive.

use crate::support;

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use webhook_sink::sinks::webhook::client::{build_connector, ClientError, TlsOptions};
use webhook_sink::sinks::webhook::dial::DialOptions;
use webhook_sink::sinks::webhook::service::{DeliveryError, WebhookService};
use webhook_sink::sinks::webhook::target::Target;

use support::{Receiver, TestCerts};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A one-slot service with the given TLS settings.
fn build_client(tls: &TlsOptions) -> Result<WebhookService, ClientError> {
    Ok(WebhookService::new(build_connector(tls, &DialOptions::default())?, 1, TIMEOUT))
}

/// POST `body` to `target` with its credentials; returns status and the answer's excerpt.
async fn post(client: &WebhookService, target: &Target, body: &[u8]) -> Result<(StatusCode, String), DeliveryError> {
    let mut builder = Request::post(target.uri().clone()).header(CONTENT_TYPE, "application/json");
    if let Some(auth) = target.authorization() {
        builder = builder.header(AUTHORIZATION, auth.clone());
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let response = client.send(request).await?;
    Ok((response.status, response.excerpt))
}

/// `Basic base64(user:password)` computed from the already-decoded credentials.
fn expected_basic(user: &str, password: &str) -> Vec<u8> {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())).into_bytes()
}

/// Display of the error and every source, then the Debug form of the top.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.push_str(" | ");
    text.push_str(&format!("{err:?}"));
    text
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn post_with_encoded_credentials_arrives_exactly() {
    let rx = Receiver::http().await;
    let port = rx.addr().port();
    let client = build_client(&TlsOptions::default()).unwrap();

    // user `al@ice böb`, password `p:a/s%s+w@rd ä🔑` (the `+` stays a plus).
    let user_enc = "al%40ice%20b%C3%B6b";
    let pass_enc = "p%3Aa%2Fs%25s+w%40rd%20%C3%A4%F0%9F%94%91";
    let url = format!("http://{user_enc}:{pass_enc}@127.0.0.1:{port}/hooks/a%2Fb/c?x=1&y=%20z+w");
    let target = Target::parse(&url).unwrap();

    let body: &[u8] = b"{\"summary\":\"disk full \xc3\xa4\"}\n\x00\xff";
    let (status, response) = post(&client, &target, body).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response, "ok");

    let got = rx.wait_for(1, TIMEOUT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.path_and_query, "/hooks/a%2Fb/c?x=1&y=%20z+w");
    assert_eq!(req.body, body);
    assert_eq!(req.header_str("content-length"), Some(body.len().to_string()));
    assert_eq!(req.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(req.header("authorization"), Some(expected_basic("al@ice böb", "p:a/s%s+w@rd ä🔑").as_slice()));
    assert_eq!(req.header_all("authorization").len(), 1);
    assert_eq!(req.header_str("host"), Some(format!("127.0.0.1:{port}")));

    // No userinfo anywhere: not in the request target, not in any header.
    assert!(!req.path_and_query.contains('@'));
    for needle in ["al%40ice", "al@ice", "ice b", "p%3Aa", "p:a/s", "w@rd", "w%40rd", "@127.0.0.1"] {
        assert!(!req.path_and_query.contains(needle), "{needle} in request target");
        for (name, value) in &req.headers {
            assert!(!contains(value, needle.as_bytes()), "{needle:?} found in header {name}");
        }
    }
}

#[tokio::test]
async fn raw_specials_and_user_without_password() {
    let rx = Receiver::http().await;
    let port = rx.addr().port();
    let client = build_client(&TlsOptions::default()).unwrap();

    // Unencoded `:` and `@` inside the password, `+` in the user.
    let target = Target::parse(&format!("http://b+ob:raw:pass@word@127.0.0.1:{port}/raw")).unwrap();
    post(&client, &target, b"1").await.unwrap();
    // A user without a password sends `user:`.
    let target = Target::parse(&format!("http://onlyuser@127.0.0.1:{port}/user")).unwrap();
    post(&client, &target, b"2").await.unwrap();
    // No userinfo: no authorization header at all.
    let target = Target::parse(&rx.url("/none")).unwrap();
    post(&client, &target, b"3").await.unwrap();

    let got = rx.wait_for(3, TIMEOUT).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].path_and_query, "/raw");
    assert_eq!(got[0].header("authorization"), Some(expected_basic("b+ob", "raw:pass@word").as_slice()));
    assert_eq!(got[1].path_and_query, "/user");
    assert_eq!(got[1].header("authorization"), Some(expected_basic("onlyuser", "").as_slice()));
    assert_eq!(got[2].path_and_query, "/none");
    assert_eq!(got[2].header("authorization"), None);
    for req in &got {
        assert_eq!(req.header_str("host"), Some(format!("127.0.0.1:{port}")));
    }
}

#[tokio::test]
async fn ipv6_loopback_target() {
    let addr: SocketAddr = "[::1]:0".parse().unwrap();
    let rx = Receiver::http_on(addr).await;
    let port = rx.addr().port();
    assert_eq!(rx.url("/v6?q=1"), format!("http://[::1]:{port}/v6?q=1"));
    let client = build_client(&TlsOptions::default()).unwrap();

    let target = Target::parse(&format!("http://six%20user:p%C3%A4ss@[::1]:{port}/v6?q=1")).unwrap();
    assert_eq!(target.host(), "[::1]");
    assert_eq!(target.port(), port);
    post(&client, &target, b"hello v6").await.unwrap();

    let got = rx.wait_for(1, TIMEOUT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path_and_query, "/v6?q=1");
    assert_eq!(got[0].body, b"hello v6");
    assert_eq!(got[0].header_str("host"), Some(format!("[::1]:{port}")));
    assert_eq!(got[0].header("authorization"), Some(expected_basic("six user", "päss").as_slice()));
}

#[tokio::test]
async fn https_with_extra_ca_file() {
    let certs = TestCerts::generate();
    let rx = Receiver::https(&certs).await;
    let port = rx.addr().port();
    assert!(rx.url("/x").starts_with("https://127.0.0.1:"));

    let client = build_client(&TlsOptions { ca_file: Some(certs.ca_path.clone()) }).unwrap();
    let target = Target::parse(&format!("https://tls%20user:s3cr%2Ft@127.0.0.1:{port}/secure?a=b")).unwrap();
    assert!(target.is_https());
    let (status, _) = post(&client, &target, b"over tls").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let got = rx.wait_for(1, TIMEOUT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path_and_query, "/secure?a=b");
    assert_eq!(got[0].body, b"over tls");
    assert_eq!(got[0].header_str("host"), Some(format!("127.0.0.1:{port}")));
    assert_eq!(got[0].header("authorization"), Some(expected_basic("tls user", "s3cr/t").as_slice()));
}

#[tokio::test]
async fn https_without_ca_is_rejected_as_unknown_issuer() {
    let certs = TestCerts::generate();
    let rx = Receiver::https(&certs).await;

    let client = build_client(&TlsOptions::default()).unwrap();
    let target = Target::parse(&rx.url("/secure")).unwrap();
    let err = post(&client, &target, b"should not arrive").await.expect_err("untrusted certificate must be rejected");
    let chain = error_chain(&err);
    assert!(
        chain.to_lowercase().contains("certificate") && chain.contains("UnknownIssuer"),
        "error chain does not name the certificate problem: {chain}"
    );
    assert!(rx.requests().is_empty());
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let rx = Receiver::http().await;
    let client = build_client(&TlsOptions::default()).unwrap();
    let target = Target::parse(&rx.url("/keep")).unwrap();

    for i in 0..5 {
        let (status, body) = post(&client, &target, format!("req {i}").as_bytes()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok");
    }
    let got = rx.wait_for(5, TIMEOUT).await;
    assert_eq!(got.len(), 5);
    for (i, req) in got.iter().enumerate() {
        assert_eq!(req.body, format!("req {i}").as_bytes());
    }
    assert_eq!(rx.connections(), 1, "sequential requests should share one connection");
}

#[tokio::test]
async fn keep_alive_over_tls() {
    let certs = TestCerts::generate();
    let rx = Receiver::https(&certs).await;
    let client = build_client(&TlsOptions { ca_file: Some(certs.ca_path.clone()) }).unwrap();
    let target = Target::parse(&rx.url("/keep")).unwrap();
    for _ in 0..5 {
        post(&client, &target, b"x").await.unwrap();
    }
    assert_eq!(rx.wait_for(5, TIMEOUT).await.len(), 5);
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn receiver_answers_with_configured_status() {
    let rx = Receiver::http().await;
    let client = build_client(&TlsOptions::default()).unwrap();
    let target = Target::parse(&rx.url("status")).unwrap();
    rx.set_status(503);
    let (status, body) = post(&client, &target, b"").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "ok");
    rx.set_status(204);
    let (status, _) = post(&client, &target, b"").await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(rx.requests().len(), 2);
    assert_eq!(rx.requests()[0].path_and_query, "/status");
}

#[tokio::test]
async fn wait_for_is_bounded() {
    let rx = Receiver::http().await;
    let started = std::time::Instant::now();
    let got = rx.wait_for(1, Duration::from_millis(100)).await;
    assert!(got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_ca_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-ca.pem");
    let err = build_client(&TlsOptions { ca_file: Some(path.clone()) }).unwrap_err();
    match &err {
        ClientError::CaFile { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected CaFile, got {other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert!(err.source().is_some());
}

#[test]
fn ca_file_without_certificates() {
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("not-pem.txt");
    std::fs::write(&text, "this is not a certificate\n").unwrap();
    // A PEM file that holds only a private key has no certificates either.
    let key_only = dir.path().join("key.pem");
    std::fs::write(&key_only, &certs.key_pem).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();

    for path in [text, key_only, empty] {
        let err = build_client(&TlsOptions { ca_file: Some(path.clone()) }).unwrap_err();
        assert!(matches!(&err, ClientError::NoCertificates { path: p } if *p == path), "{path:?}: {err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn ca_file_with_broken_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.pem");
    std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let err = build_client(&TlsOptions { ca_file: Some(path.clone()) }).unwrap_err();
    assert!(matches!(&err, ClientError::BadCertificate { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[tokio::test]
async fn ca_file_with_ca_and_other_sections_is_accepted() {
    // Extra non-certificate sections (e.g. a key) are ignored, the CA still loads.
    let certs = TestCerts::generate();
    let path = certs.dir.path().join("bundle.pem");
    std::fs::write(&path, format!("{}{}", certs.key_pem, certs.ca_pem)).unwrap();
    let rx = Receiver::https(&certs).await;
    let client = build_client(&TlsOptions { ca_file: Some(path) }).unwrap();
    let target = Target::parse(&rx.url("/bundle")).unwrap();
    post(&client, &target, b"b").await.unwrap();
    assert_eq!(rx.wait_for(1, TIMEOUT).await.len(), 1);
}
