//! Digests (`batch`): the events that fire are delivered together, as one webhook, when
//! `batch.max_events` are together or `batch.timeout_secs` after the first; one
//! `webhook-id` per digest across retries; per-alert order across digests.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::end_to_end::{event, ndjson, post, start, wait_until};
use crate::support::faulty::{Fault, Faulty, Hit};

fn digest_sink(url: &str, settings: &str) -> String {
    format!("[sinks.digest]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{url}\"\n{settings}\n")
}

/// The events of a default digest body (a JSON array of standard payloads).
fn events_of(hit: &Hit) -> Vec<Value> {
    hit.json.as_ref().and_then(Value::as_array).cloned().unwrap_or_else(|| panic!("not a JSON array: {hit:?}"))
}

#[tokio::test]
async fn a_digest_goes_out_when_full_or_when_its_time_is_up() {
    let receiver = Faulty::start().await;
    let running = start(&digest_sink(&receiver.url("/digest"), "batch = { max_events = 5, timeout_secs = 0.5 }")).await;
    let events: Vec<Value> = (0..12).map(|i| event(&format!("a{i}"), "alert-created")).collect();
    let posted = std::time::Instant::now();
    assert_eq!(post(running.source, &ndjson(&events)).await.0, 200);
    wait_until(|| receiver.delivered().len() >= 3).await;
    let hits = receiver.delivered();
    let mut sizes: Vec<usize> = hits.iter().map(|hit| events_of(hit).len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 5, 5], "two full digests, and the rest when its time was up");
    let rest = hits.iter().find(|h| events_of(h).len() == 2).unwrap();
    // A timer never fires early: the partial digest waited for its timeout (0.5 s), which
    // started after the POST did.
    assert!(rest.arrived - posted >= Duration::from_millis(450), "{:?}", rest.arrived - posted);
    let ids: HashSet<String> = hits.iter().flat_map(events_of).map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 12, "every event once");
    let webhook_ids: HashSet<_> = hits.iter().map(|h| h.webhook_id.clone().unwrap()).collect();
    assert_eq!(webhook_ids.len(), 3, "one webhook-id per digest");
    // The receiver records a request before the sink reads its answer: wait for the count.
    let delivered = || running.stats("digest").delivered.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(|| delivered() == 12).await;
    assert_eq!(delivered(), 12);
    running.stop().await;
}

#[tokio::test]
async fn a_chat_digest_says_how_many_and_lists_them() {
    let receiver = Faulty::start().await;
    let template = r#"template = '{"text": "{{count}} alerts in the last 30 s: {{#events}}{{alertSummary}}; {{/events}}", "first": "{{first.alertId}}", "last": "{{#last}}{{alertId}}{{/last}}"}'"#;
    let running = start(&digest_sink(
        &receiver.url("/chat"),
        &format!("batch = {{ max_events = 100, timeout_secs = 0.3 }}\ntriggers = [\"alert-created\"]\n{template}"),
    ))
    .await;
    let mut events: Vec<Value> = (0..12).map(|i| event(&format!("c{i}"), "alert-created")).collect();
    // Filtered out before the digest: not counted, not listed.
    events.push(event("c99", "alert-resolved"));
    assert_eq!(post(running.source, &ndjson(&events)).await.0, 200);
    wait_until(|| !receiver.delivered().is_empty()).await;
    // A moment more, for a second digest that must not come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = receiver.delivered();
    assert_eq!(hits.len(), 1, "one chat message for the storm");
    let body = hits[0].json.clone().unwrap();
    let listed: String = (0..12).map(|i| format!("summary of c{i}; ")).collect();
    assert_eq!(body["text"], format!("12 alerts in the last 30 s: {listed}"));
    assert_eq!((&body["first"], &body["last"]), (&json!("c0"), &json!("c11")));
    running.stop().await;
}

#[tokio::test]
async fn retries_keep_the_digest_id_and_per_alert_order_holds_across_digests() {
    let receiver = Faulty::start().await;
    // Every digest's first attempt fails; a random backoff then decides which retry comes
    // first, so without per-alert turns a later digest would overtake an earlier one.
    receiver.set_rule(|info| (info.attempt == 1).then_some(Fault::Status(503)));
    let running = start(&digest_sink(
        &receiver.url("/ordered"),
        "batch = { max_events = 2, timeout_secs = 0.05 }\n\
         retry = { initial_backoff_secs = 0.05, max_backoff_secs = 0.3 }",
    ))
    .await;
    // Three alerts, four events each, interleaved: k0-0, k1-0, k2-0, k0-1, …
    let events: Vec<Value> = (0..4)
        .flat_map(|n| {
            (0..3).map(move |k| {
                let mut e = event(&format!("k{k}-{n}"), "alert-created");
                e["alertKey"] = json!(format!("k{k}"));
                e
            })
        })
        .collect();
    assert_eq!(post(running.source, &ndjson(&events)).await.0, 200);
    wait_until(|| receiver.delivered().iter().map(|h| events_of(h).len()).sum::<usize>() >= 12).await;
    let hits = receiver.hits();
    let mut next: HashMap<String, usize> = HashMap::new();
    for hit in hits.iter().filter(|h| h.delivered()) {
        assert_eq!(hit.attempt, 2, "delivered on the retry, under the first attempt's webhook-id: {hit:?}");
        for e in events_of(hit) {
            let (alert, n) = e["id"].as_str().unwrap().split_once('-').unwrap();
            let expected = next.entry(alert.to_string()).or_default();
            assert_eq!(n.parse::<usize>().unwrap(), *expected, "alert {alert} out of order");
            *expected += 1;
        }
    }
    assert_eq!(next.values().sum::<usize>(), 12, "every event delivered once");
    running.stop().await;
}

#[tokio::test]
async fn a_digest_template_that_cannot_list_several_events_is_refused_at_load() {
    let text = "[sources.alerts]\ntype = \"http_server\"\naddress = \"127.0.0.1:9\"\n\n".to_string()
        + &digest_sink(
            "http://127.0.0.1:9/x",
            "batch = { max_events = 10 }\ntemplate = '{\"text\": \"{{#events}}{{alertSummary}}\"{{/events}}}'",
        );
    let error = webhook_sink::config::load_str(std::path::Path::new("digest.toml"), &text, &|_| None).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("sinks.digest.template"), "{message}");
    assert!(message.contains("a digest of three sample events"), "{message}");
}

#[tokio::test]
async fn dedupe_drops_repeats_within_a_digest_and_across_digests() {
    let receiver = Faulty::start().await;
    let running = start(&digest_sink(
        &receiver.url("/dedupe"),
        "batch = { max_events = 2, timeout_secs = 0.05 }\ndedupe.window_secs = 60",
    ))
    .await;
    // One alert re-notified four times (one digest holds two of them, the next digests the
    // rest), and another alert once.
    let repeat = event("r1", "alert-created");
    let events = vec![repeat.clone(), repeat.clone(), repeat.clone(), event("r2", "alert-created"), repeat];
    assert_eq!(post(running.source, &ndjson(&events)).await.0, 200);
    let dedupe = |running: &crate::end_to_end::Running| {
        running.stats("digest").deduplicated.load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until(|| dedupe(&running) == 3).await;
    let delivered: Vec<String> =
        receiver.delivered().iter().flat_map(events_of).map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let mut sorted = delivered.clone();
    sorted.sort();
    assert_eq!(sorted, ["r1", "r2"], "each once: {delivered:?}");
    assert_eq!(dedupe(&running), 3);
    running.stop().await;
}
