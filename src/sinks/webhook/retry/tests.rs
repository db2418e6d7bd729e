//! Unit tests of the retry policy and its configuration: no network, no sleeping.

use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};

use super::*;

const T0: Duration = Duration::ZERO;

fn now() -> SystemTime {
    // A whole second, so HTTP dates (second precision) round-trip exactly.
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn response(status: u16) -> AttemptResult<'static> {
    AttemptResult::Response {
        status: StatusCode::from_u16(status).unwrap(),
        retry_after: None,
        excerpt: "",
        location: None,
    }
}

fn with_retry_after(status: u16, value: &HeaderValue) -> AttemptResult<'_> {
    AttemptResult::Response {
        status: StatusCode::from_u16(status).unwrap(),
        retry_after: Some(value),
        excerpt: "",
        location: None,
    }
}

fn policy() -> RetryPolicy {
    RetryConfig::default().policy().with_rng_seed(7)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---- config ----

#[test]
fn default_matches_the_file_defaults() {
    let from_json: RetryConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(from_json, RetryConfig::default());
    let from_toml: RetryConfig = toml::from_str("").unwrap();
    assert_eq!(from_toml, RetryConfig::default());
    let d = RetryConfig::default();
    assert_eq!(d.attempts, 8);
    assert_eq!(d.max_elapsed_secs, 600.0);
    assert_eq!(d.initial_backoff_secs, 0.5);
    assert_eq!(d.max_backoff_secs, 60.0);
    assert_eq!(d.max_retry_after_secs, 300.0);
    assert_eq!(d.on_status, RetryOn::Default);
    assert!(d.validate().is_empty());
}

#[test]
fn unknown_fields_are_rejected() {
    let error = toml::from_str::<RetryConfig>("max_attempts = 3").unwrap_err();
    assert!(error.to_string().contains("max_attempts"), "{error}");
}

#[test]
fn config_round_trips() {
    for on_status in [RetryOn::Default, RetryOn::None, RetryOn::All, RetryOn::Statuses(vec![429, 503])] {
        let config = RetryConfig { attempts: 3, on_status, ..Default::default() };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<RetryConfig>(&json).unwrap(), config);
        let toml_text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<RetryConfig>(&toml_text).unwrap(), config);
    }
}

#[test]
fn on_status_from_toml() {
    let parse = |text: &str| toml::from_str::<RetryConfig>(text).map(|c| c.on_status);
    assert_eq!(parse(r#"on_status = "default""#).unwrap(), RetryOn::Default);
    assert_eq!(parse(r#"on_status = "none""#).unwrap(), RetryOn::None);
    assert_eq!(parse(r#"on_status = "all""#).unwrap(), RetryOn::All);
    assert_eq!(parse("on_status = [429, 503]").unwrap(), RetryOn::Statuses(vec![429, 503]));
    assert_eq!(parse("on_status = []").unwrap(), RetryOn::Statuses(vec![]));
    for (text, named) in [
        ("on_status = [700]", "700"),
        ("on_status = [429, 99]", "99"),
        ("on_status = [-1]", "-1"),
        (r#"on_status = "sometimes""#, "sometimes"),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(named), "{text}: {error}");
    }
    assert!(parse("on_status = 429").is_err());
    assert!(parse(r#"on_status = ["429"]"#).is_err());
}

#[test]
fn on_status_from_json() {
    let parse = |v: serde_json::Value| serde_json::from_value::<RetryOn>(v);
    assert_eq!(parse(serde_json::json!("all")).unwrap(), RetryOn::All);
    assert_eq!(parse(serde_json::json!([408])).unwrap(), RetryOn::Statuses(vec![408]));
    let error = parse(serde_json::json!([600])).unwrap_err().to_string();
    assert!(error.contains("600"), "{error}");
    assert_eq!(serde_json::to_value(RetryOn::Statuses(vec![429])).unwrap(), serde_json::json!([429]));
    assert_eq!(serde_json::to_value(RetryOn::None).unwrap(), serde_json::json!("none"));
}

#[test]
fn validate_reports_each_problem() {
    let config = RetryConfig {
        attempts: 0,
        max_elapsed_secs: f64::INFINITY,
        initial_backoff_secs: 90.0,
        max_backoff_secs: 60.0,
        max_retry_after_secs: -1.0,
        on_status: RetryOn::Statuses(vec![429, 700]),
    };
    let fields: Vec<&str> = config.validate().iter().map(|(f, _)| *f).collect();
    assert_eq!(
        fields,
        [
            "retry.attempts",
            "retry.max_elapsed_secs",
            "retry.max_retry_after_secs",
            "retry.initial_backoff_secs",
            "retry.on_status",
        ]
    );
    let nan = RetryConfig { initial_backoff_secs: f64::NAN, ..Default::default() };
    assert_eq!(nan.validate().len(), 1, "{:?}", nan.validate());
    let zeros = RetryConfig {
        attempts: 1,
        max_elapsed_secs: 0.0,
        initial_backoff_secs: 0.0,
        max_backoff_secs: 0.0,
        max_retry_after_secs: 0.0,
        on_status: RetryOn::None,
    };
    assert!(zeros.validate().is_empty());
}

#[test]
fn policy_of_bad_values_does_not_panic() {
    let config = RetryConfig {
        attempts: 0,
        max_elapsed_secs: f64::NAN,
        initial_backoff_secs: 1e300,
        max_backoff_secs: f64::INFINITY,
        max_retry_after_secs: -5.0,
        on_status: RetryOn::Default,
    };
    let policy = config.policy().with_rng_seed(1);
    assert_eq!(policy.attempts(), 1);
    assert_eq!(policy.max_elapsed(), Duration::ZERO);
    assert_eq!(policy.backoff_ceiling(u32::MAX), Duration::MAX);
    let _ = policy.verdict(response(503), 1, T0, now());
}

// ---- statuses ----

#[test]
fn default_statuses() {
    let p = policy();
    for code in [408, 429, 500, 502, 503, 504, 599] {
        assert!(p.retries_status(StatusCode::from_u16(code).unwrap()), "{code}");
    }
    for code in [200, 204, 301, 400, 401, 403, 404, 409, 422, 501] {
        assert!(!p.retries_status(StatusCode::from_u16(code).unwrap()), "{code}");
    }
}

#[test]
fn each_retry_on_form() {
    let s = |c: u16| StatusCode::from_u16(c).unwrap();
    assert!(!RetryOn::None.retries(s(503)));
    assert!(!RetryOn::None.retries(s(429)));
    assert!(RetryOn::All.retries(s(404)));
    assert!(RetryOn::All.retries(s(501)));
    assert!(!RetryOn::All.retries(s(302)), "a 3xx is never retried, not even under `all`");
    assert!(!RetryOn::All.retries(s(200)));
    let list = RetryOn::Statuses(vec![429, 503, 200]);
    assert!(list.retries(s(429)));
    assert!(list.retries(s(503)));
    assert!(!list.retries(s(500)));
    assert!(!list.retries(s(200)), "a 2xx is never retried");
    assert!(!RetryOn::Statuses(vec![301, 307]).retries(s(307)), "nor a 3xx");
}

#[test]
fn a_redirect_in_on_status_is_a_config_error() {
    let config = RetryConfig { on_status: RetryOn::Statuses(vec![429, 308]), ..Default::default() };
    let errors = config.validate();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "retry.on_status");
    assert!(errors[0].1.starts_with("308 is a redirect"), "{}", errors[0].1);
}

// ---- redirects ----

fn redirect(status: u16, location: Option<&str>) -> AttemptResult<'_> {
    AttemptResult::Response {
        status: StatusCode::from_u16(status).unwrap(),
        retry_after: None,
        excerpt: "moved",
        location,
    }
}

#[test]
fn a_redirect_gives_up_at_once_naming_the_location_whatever_on_status_says() {
    let retry_after = HeaderValue::from_static("1");
    for on_status in [RetryOn::Default, RetryOn::None, RetryOn::All, RetryOn::Statuses(vec![301, 302, 307, 308])] {
        let p = RetryConfig { on_status: on_status.clone(), ..Default::default() }.policy();
        for status in [300, 301, 302, 303, 304, 307, 308, 399] {
            let expected = Verdict::GiveUp {
                reason: format!(
                    "redirect {status} to https://other.example/x not followed (redirects could carry credentials \
                     elsewhere)"
                ),
                last_status: Some(status),
                retryable: false,
            };
            assert_eq!(p.verdict(redirect(status, Some("https://other.example/x")), 1, T0, now()), expected);
            // A Retry-After on a redirect changes nothing.
            let with_wait = AttemptResult::Response {
                status: StatusCode::from_u16(status).unwrap(),
                retry_after: Some(&retry_after),
                excerpt: "",
                location: Some("https://other.example/x"),
            };
            assert_eq!(p.verdict(with_wait, 1, T0, now()), expected, "{on_status:?}");
        }
    }
}

#[test]
fn a_redirect_without_a_location_says_so() {
    assert_eq!(
        policy().verdict(redirect(302, None), 1, T0, now()),
        Verdict::GiveUp {
            reason: "redirect 302 without a Location not followed (redirects could carry credentials elsewhere)".into(),
            last_status: Some(302),
            retryable: false,
        }
    );
}

// ---- verdicts ----

#[test]
fn success_is_delivered() {
    let p = policy();
    assert_eq!(p.verdict(response(200), 1, T0, now()), Verdict::Delivered);
    assert_eq!(p.verdict(response(204), 8, T0, now()), Verdict::Delivered);
    // Even with no attempts or time left.
    assert_eq!(p.verdict(response(202), 99, Duration::from_secs(9999), now()), Verdict::Delivered);
}

#[test]
fn a_status_not_retried_gives_up_at_once() {
    let p = policy();
    let result = AttemptResult::Response {
        status: StatusCode::NOT_FOUND,
        retry_after: None,
        excerpt: "no such hook",
        location: None,
    };
    assert_eq!(
        p.verdict(result, 1, T0, now()),
        Verdict::GiveUp { reason: "HTTP 404 Not Found: no such hook".into(), last_status: Some(404), retryable: false }
    );
    assert_eq!(
        p.verdict(response(501), 1, T0, now()),
        Verdict::GiveUp { reason: "HTTP 501 Not Implemented".into(), last_status: Some(501), retryable: false }
    );
    let none = RetryConfig { on_status: RetryOn::None, ..Default::default() }.policy();
    assert!(matches!(
        none.verdict(response(503), 1, T0, now()),
        Verdict::GiveUp { retryable: false, last_status: Some(503), .. }
    ));
}

#[test]
fn unknown_status_has_no_reason_phrase() {
    let p = RetryConfig { on_status: RetryOn::None, ..Default::default() }.policy();
    let result = AttemptResult::Response {
        status: StatusCode::from_u16(599).unwrap(),
        retry_after: None,
        excerpt: "x",
        location: None,
    };
    assert!(matches!(
        p.verdict(result, 1, T0, now()),
        Verdict::GiveUp { reason, .. } if reason == "HTTP 599: x"
    ));
}

#[test]
fn retryable_status_and_errors_are_retried() {
    let p = policy();
    for result in [
        response(503),
        response(429),
        response(408),
        AttemptResult::Error("connection refused"),
        AttemptResult::Error("no answer within 30s"),
    ] {
        match p.verdict(result, 1, T0, now()) {
            Verdict::RetryAfter(d) => assert!(d <= secs(0.5), "{d:?}"),
            other => panic!("{result:?}: {other:?}"),
        }
    }
}

#[test]
fn attempts_run_out() {
    let p = policy();
    let result = AttemptResult::Response {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
        excerpt: "down",
        location: None,
    };
    assert!(matches!(p.verdict(result, 7, T0, now()), Verdict::RetryAfter(_)));
    assert_eq!(
        p.verdict(result, 8, T0, now()),
        Verdict::GiveUp {
            reason: "gave up after 8 attempts: HTTP 503 Service Unavailable: down".into(),
            last_status: Some(503),
            retryable: true,
        }
    );
    assert_eq!(
        p.verdict(AttemptResult::Error("connection reset"), 8, T0, now()),
        Verdict::GiveUp {
            reason: "gave up after 8 attempts: connection reset".into(),
            last_status: None,
            retryable: true,
        }
    );
    let once = RetryConfig { attempts: 1, ..Default::default() }.policy();
    assert_eq!(
        once.verdict(AttemptResult::Error("timeout"), 1, T0, now()),
        Verdict::GiveUp { reason: "gave up after 1 attempt: timeout".into(), last_status: None, retryable: true }
    );
}

#[test]
fn time_runs_out() {
    let p = policy();
    let elapsed = Duration::from_millis(599_900);
    // A Retry-After of 1 s would end past the 600 s budget.
    let one = HeaderValue::from_static("1");
    assert_eq!(
        p.verdict(with_retry_after(503, &one), 3, elapsed, now()),
        Verdict::GiveUp {
            reason: "gave up after 599.9s (3 attempts): HTTP 503 Service Unavailable".into(),
            last_status: Some(503),
            retryable: true,
        }
    );
    // Already past the budget: any wait ends too late.
    assert!(matches!(
        p.verdict(AttemptResult::Error("refused"), 2, Duration::from_secs(601), now()),
        Verdict::GiveUp { retryable: true, last_status: None, reason }
            if reason == "gave up after 601.0s (2 attempts): refused"
    ));
    // Exactly at the budget is still fine.
    let zero = HeaderValue::from_static("0");
    assert_eq!(
        p.verdict(with_retry_after(429, &zero), 2, Duration::from_secs(600), now()),
        Verdict::RetryAfter(Duration::ZERO)
    );
}

// ---- Retry-After ----

#[test]
fn retry_after_seconds_is_used() {
    let p = policy();
    let value = HeaderValue::from_static("120");
    assert_eq!(p.verdict(with_retry_after(429, &value), 1, T0, now()), Verdict::RetryAfter(Duration::from_secs(120)));
}

#[test]
fn retry_after_is_clamped() {
    let p = policy();
    let value = HeaderValue::from_static("3600");
    assert_eq!(p.verdict(with_retry_after(503, &value), 1, T0, now()), Verdict::RetryAfter(Duration::from_secs(300)));
    let huge = HeaderValue::from_static("99999999999999999999999");
    assert_eq!(p.verdict(with_retry_after(503, &huge), 1, T0, now()), Verdict::RetryAfter(Duration::from_secs(300)));
}

#[test]
fn retry_after_http_date() {
    let p = policy();
    let future = HeaderValue::from_str(&httpdate::fmt_http_date(now() + Duration::from_secs(90))).unwrap();
    assert_eq!(p.verdict(with_retry_after(503, &future), 1, T0, now()), Verdict::RetryAfter(Duration::from_secs(90)));
    let past = HeaderValue::from_str(&httpdate::fmt_http_date(now() - Duration::from_secs(90))).unwrap();
    assert_eq!(p.verdict(with_retry_after(503, &past), 1, T0, now()), Verdict::RetryAfter(Duration::ZERO));
}

#[test]
fn garbage_retry_after_falls_back_to_backoff() {
    let p = policy();
    let value = HeaderValue::from_static("soon");
    match p.verdict(with_retry_after(503, &value), 3, T0, now()) {
        Verdict::RetryAfter(d) => assert!(d <= secs(2.0), "{d:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn retry_after_ignored_for_status_not_retried() {
    let p = policy();
    let value = HeaderValue::from_static("5");
    assert!(matches!(p.verdict(with_retry_after(400, &value), 1, T0, now()), Verdict::GiveUp { retryable: false, .. }));
}

#[test]
fn parse_retry_after_forms() {
    let parse = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now());
    assert_eq!(parse("0"), Some(Duration::ZERO));
    assert_eq!(parse("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse(" 30 "), Some(Duration::from_secs(30)));
    assert_eq!(parse("99999999999999999999999"), Some(Duration::MAX));
    let date = httpdate::fmt_http_date(now() + Duration::from_secs(45));
    assert_eq!(parse(&date), Some(Duration::from_secs(45)));
    // Obsolete RFC 850 form, also accepted by RFC 9110 recipients.
    assert_eq!(parse("Tuesday, 14-Nov-23 22:14:05 GMT"), Some(Duration::from_secs(1_700_000_045 - 1_700_000_000)));
    assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    for garbage in ["", "soon", "-5", "1.5", "5s", "Wed, 32 Oct 2015 07:28:00 GMT"] {
        assert_eq!(parse(garbage), None, "{garbage:?}");
    }
    let not_text = HeaderValue::from_bytes(b"\xff12").unwrap();
    assert_eq!(parse_retry_after(&not_text, now()), None);
}

// ---- backoff ----

#[test]
fn backoff_ceilings_double_up_to_the_cap() {
    let p = policy();
    let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(p.backoff_ceiling(i as u32 + 1), secs(*want), "attempt {}", i + 1);
    }
    let mut previous = Duration::ZERO;
    for attempt in (0..200).chain([1000, u32::MAX - 1, u32::MAX]) {
        let ceiling = p.backoff_ceiling(attempt);
        assert!(ceiling >= previous, "attempt {attempt}");
        assert!(ceiling <= Duration::from_secs(60), "attempt {attempt}");
        previous = ceiling;
    }
    // Attempt 0 is treated as the first.
    assert_eq!(p.backoff_ceiling(0), secs(0.5));
}

#[test]
fn tiny_initial_backoff_still_reaches_the_cap() {
    let p = RetryConfig { initial_backoff_secs: 1e-9, max_backoff_secs: 3600.0, ..Default::default() }.policy();
    assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(3600));
}

#[test]
fn jitter_stays_in_range_and_spreads() {
    let config = RetryConfig { attempts: u32::MAX, max_elapsed_secs: 1e9, ..Default::default() };
    let p = config.policy().with_rng_seed(42);
    for attempt in 1..=12 {
        let ceiling = p.backoff_ceiling(attempt);
        let delays: Vec<Duration> = (0..500)
            .map(|_| match p.verdict(AttemptResult::Error("e"), attempt, T0, now()) {
                Verdict::RetryAfter(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
        // Full jitter: the waits cover the range, low and high.
        assert!(delays.iter().any(|d| *d < ceiling / 10), "attempt {attempt}");
        assert!(delays.iter().any(|d| *d > ceiling * 9 / 10), "attempt {attempt}");
    }
}

#[test]
fn a_seed_makes_jitter_deterministic() {
    let waits = |p: &RetryPolicy| -> Vec<Verdict> {
        (1..8).map(|attempt| p.verdict(AttemptResult::Error("e"), attempt, T0, now())).collect()
    };
    let a = RetryConfig::default().policy().with_rng_seed(9);
    let b = RetryConfig::default().policy().with_rng_seed(9);
    let c = RetryConfig::default().policy().with_rng_seed(10);
    let (wa, wb, wc) = (waits(&a), waits(&b), waits(&c));
    assert_eq!(wa, wb);
    assert_ne!(wa, wc);
    // Clones of equal policies fork equally.
    let (ca, cb) = (a.clone(), b.clone());
    assert_eq!(waits(&ca), waits(&cb));
}

#[test]
fn zero_backoff_retries_immediately() {
    let p = RetryConfig { initial_backoff_secs: 0.0, max_backoff_secs: 0.0, ..Default::default() }.policy();
    assert_eq!(p.verdict(response(500), 1, T0, now()), Verdict::RetryAfter(Duration::ZERO));
}

#[test]
fn policy_is_shareable_between_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RetryPolicy>();
    let debug = format!("{:?}", policy());
    assert!(debug.contains("attempts: 8"), "{debug}");
}
