//! Micro-benchmarks of the CPU work per event: decoding a body, filtering, rendering the
//! body template, building the request, and the three together.
//!
//! ```text
//! cargo bench --bench pipeline
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use webhook_sink::event::{new_webhook_id, IncidentEvent};
use webhook_sink::filter::{ConditionConfig, Decision, Filter, OneOrMany};
use webhook_sink::sinks::webhook::config::{CompiledWebhook, SecretUrl};
use webhook_sink::sinks::webhook::WebhookSinkConfig;
use webhook_sink::sources::decode::Decoder;
use webhook_sink::template::mustache::Escape;
use webhook_sink::template::BodyTemplate;

/// Events in a decoded batch.
const BATCH: usize = 200;

const TRIGGERS: [&str; 2] = ["alert-created", "alert-resolved"];

/// A typical chat message: five catalog variables.
const CHAT_TEMPLATE: &str = r#"{"text": "[{{alertPriority}}] {{alertSummary}} is {{alertStatus}}", "source": "{{alertSourceName}}", "url": "{{alertUrl}}"}"#;

/// A chat message reading a custom field through the event's JSON form.
const EVENT_PATH_TEMPLATE: &str =
    r#"{"text": "[{{alertPriority}}] {{alertSummary}}", "team": "{{event.labels.team}}"}"#;

/// The `i`th event of a realistic stream, shaped like the reference payload (compact JSON,
/// ~350–400 bytes): types, priorities, hosts and teams vary.
fn event_json(i: usize) -> serde_json::Value {
    let hosts = [
        "app.compute",
        "db-1.storage",
        "edge-lb-03",
        "queue.worker-7",
    ];
    let teams = ["payments", "platform", "search"];
    let (event_type, status) = if i % 4 == 3 {
        ("alert-resolved", "RESOLVED")
    } else {
        ("alert-created", "PENDING")
    };
    let host = hosts[i % hosts.len()];
    json!({
        "id": format!("{}", 2_983_781 + i),
        "status": status,
        "summary": format!("PROBLEM Host Alert: {host} is DOWN"),
        "details": format!("CRITICAL - rta nan, lost 100%\nmonitor-{}", i % 3),
        "reportTime": "2019-08-29T09:52:39.551Z",
        "eventType": event_type,
        "priority": if i.is_multiple_of(3) { "LOW" } else { "HIGH" },
        "alertKey": format!("zabbix-{}", 12_345 + i % 50),
        "alertUrl": format!("https://example.com/alerts/{}", 2_983_781 + i),
        "alertSource": {"id": 2_101_194, "name": "Nagios Network and Hosts"},
        "labels": {"team": teams[i % teams.len()]}
    })
}

/// One event that passes every filter below (created, HIGH, Nagios, with a team label).
fn firing_event() -> IncidentEvent {
    serde_json::from_value(event_json(1)).expect("a valid event")
}

fn ndjson_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..BATCH {
        serde_json::to_writer(&mut body, &event_json(i)).expect("serializable");
        body.push(b'\n');
    }
    body
}

fn json_array_body() -> Vec<u8> {
    let events: Vec<_> = (0..BATCH).map(event_json).collect();
    serde_json::to_vec(&events).expect("serializable")
}

fn three_conditions() -> Vec<ConditionConfig> {
    vec![
        ConditionConfig {
            field: "priority".into(),
            equals: Some(OneOrMany::One("HIGH".into())),
            ..Default::default()
        },
        ConditionConfig {
            field: "alertSource.name".into(),
            matches: Some("(?i)nagios|zabbix".into()),
            ..Default::default()
        },
        ConditionConfig {
            field: "labels.team".into(),
            exists: Some(true),
            ..Default::default()
        },
    ]
}

fn triggers() -> Vec<String> {
    TRIGGERS.iter().map(|t| t.to_string()).collect()
}

/// A sink with triggers, three conditions and the chat template, as `validate` compiles it.
fn compiled_webhook() -> CompiledWebhook {
    WebhookSinkConfig {
        url: SecretUrl("https://user:secret@hooks.example.com/services/T000/B000".into()),
        triggers: Some(triggers()),
        conditions: three_conditions(),
        template: Some(CHAT_TEMPLATE.into()),
        ..Default::default()
    }
    .compile(Path::new("."))
    .expect("a valid sink config")
}

fn decode(c: &mut Criterion) {
    let decoder = Decoder::default();
    let ndjson = ndjson_body();
    let array = json_array_body();
    assert_eq!(decoder.decode_sized(&ndjson).unwrap().len(), BATCH);
    assert_eq!(decoder.decode_sized(&array).unwrap().len(), BATCH);
    eprintln!(
        "decode: ndjson body {} bytes ({} bytes/event), array body {} bytes",
        ndjson.len(),
        ndjson.len() / BATCH,
        array.len()
    );

    let single = serde_json::to_vec(&event_json(1)).expect("serializable");

    let mut group = c.benchmark_group("decode");
    // A batch takes milliseconds: fewer samples keep it within the measurement time.
    group.sample_size(20);
    // Baseline for the batches: a batch costs more than `BATCH` of these if framing is
    // worse than linear in the body size.
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_event", |b| {
        b.iter(|| decoder.decode_sized(black_box(&single)).unwrap())
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("ndjson_batch_200", |b| {
        b.iter(|| decoder.decode_sized(black_box(&ndjson)).unwrap())
    });
    group.bench_function("json_array_200", |b| {
        b.iter(|| decoder.decode_sized(black_box(&array)).unwrap())
    });
    group.finish();
}

fn filter(c: &mut Criterion) {
    let event = firing_event();
    let triggers = triggers();
    let triggers_only = Filter::compile(Some(&triggers), &[]).unwrap();
    let with_conditions = Filter::compile(Some(&triggers), &three_conditions()).unwrap();
    assert_eq!(triggers_only.decide(&event), Decision::Fire);
    assert_eq!(with_conditions.decide(&event), Decision::Fire);

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));
    group.bench_function("triggers_only", |b| {
        b.iter(|| triggers_only.decide(black_box(&event)))
    });
    group.bench_function("triggers_and_3_conditions", |b| {
        b.iter(|| with_conditions.decide(black_box(&event)))
    });
    group.finish();
}

fn render(c: &mut Criterion) {
    let event = firing_event();
    let standard = BodyTemplate::Standard;
    let chat = BodyTemplate::custom(CHAT_TEMPLATE, Escape::Json).unwrap();
    let event_path = BodyTemplate::custom(EVENT_PATH_TEMPLATE, Escape::Json).unwrap();
    let team = event_path.render(&event).unwrap();
    assert!(
        std::str::from_utf8(&team).unwrap().contains("platform"),
        "{team:?}"
    );

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    group.bench_function("standard_payload", |b| {
        b.iter(|| standard.render(black_box(&event)).unwrap())
    });
    group.bench_function("custom_5_vars", |b| {
        b.iter(|| chat.render(black_box(&event)).unwrap())
    });
    group.bench_function("custom_with_event_path", |b| {
        b.iter(|| event_path.render(black_box(&event)).unwrap())
    });
    group.finish();
}

fn request(c: &mut Criterion) {
    let event = firing_event();
    let compiled = compiled_webhook();
    let builder = &compiled.request_builder;
    let body = builder.body(&event).unwrap();
    let webhook_id = new_webhook_id();

    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build", |b| {
        b.iter(|| builder.request(black_box(body.clone()), black_box(&webhook_id)))
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let event = firing_event();
    let compiled = compiled_webhook();
    let webhook_id = new_webhook_id();
    assert_eq!(compiled.filter.decide(&event), Decision::Fire);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    // What the sink does per delivered event besides I/O: decide, render, build.
    group.bench_function("per_event", |b| {
        b.iter(|| {
            let event = black_box(&event);
            let decision = compiled.filter.decide(event);
            assert!(decision == Decision::Fire);
            let body = compiled.request_builder.body(event).unwrap();
            compiled
                .request_builder
                .request(body, black_box(&webhook_id))
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, filter, render, request, pipeline
}
criterion_main!(benches);
