//! Micro-benchmarks of the CPU work per event: decoding a body, filtering, rendering the
//! body template, building the request, and the three together; `dedupe`, the window's
//! check and remember per event; (`buffer_fill`) the cost of one push and one pop on a
//! sink buffer that already holds 0 to 100,000 events; and (`disk_concurrent_push`) how many
//! events a disk buffer takes in when 1 to 16 sources push batches at once (the group commit).
//!
//! ```text
//! cargo bench --bench pipeline
//! cargo bench --bench pipeline -- buffer_fill
//! cargo bench --bench pipeline -- disk_concurrent_push
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::json;
use webhook_sink::buffer::{BufferConfig, BufferType, SinkBuffer};
use webhook_sink::event::{new_webhook_id, Event, IncidentEvent, Outcome};
use webhook_sink::filter::{ConditionConfig, Decision, Filter, OneOrMany};
use webhook_sink::sinks::webhook::config::{SecretUrl, ValidatedWebhookSink};
use webhook_sink::sinks::webhook::dedupe::{Dedupe, DedupeKey};
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
    let hosts = ["app.compute", "db-1.storage", "edge-lb-03", "queue.worker-7"];
    let teams = ["payments", "platform", "search"];
    let (event_type, status) = if i % 4 == 3 { ("alert-resolved", "RESOLVED") } else { ("alert-created", "PENDING") };
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
        ConditionConfig { field: "priority".into(), equals: Some(OneOrMany::One("HIGH".into())), ..Default::default() },
        ConditionConfig {
            field: "alertSource.name".into(),
            matches: Some("(?i)nagios|zabbix".into()),
            ..Default::default()
        },
        ConditionConfig { field: "labels.team".into(), exists: Some(true), ..Default::default() },
    ]
}

fn triggers() -> Vec<String> {
    TRIGGERS.iter().map(|t| t.to_string()).collect()
}

/// A sink with triggers, three conditions and the chat template, as `validate` compiles it.
fn compiled_webhook() -> ValidatedWebhookSink {
    WebhookSinkConfig {
        url: SecretUrl("https://user:secret@hooks.example.com/services/T000/B000".into()),
        triggers: Some(triggers()),
        conditions: three_conditions(),
        template: Some(CHAT_TEMPLATE.into()),
        ..Default::default()
    }
    .validate(Path::new("."))
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
    group.bench_function("single_event", |b| b.iter(|| decoder.decode_sized(black_box(&single)).unwrap()));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("ndjson_batch_200", |b| b.iter(|| decoder.decode_sized(black_box(&ndjson)).unwrap()));
    group.bench_function("json_array_200", |b| b.iter(|| decoder.decode_sized(black_box(&array)).unwrap()));
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
    group.bench_function("triggers_only", |b| b.iter(|| triggers_only.decide(black_box(&event))));
    group.bench_function("triggers_and_3_conditions", |b| b.iter(|| with_conditions.decide(black_box(&event))));
    group.finish();
}

/// The `large` template of `bench/load.sh`.
const LARGE_TEMPLATE: &str = include_str!("../bench/templates/large.json");

fn render(c: &mut Criterion) {
    let event = firing_event();
    let standard = BodyTemplate::Standard;
    let chat = BodyTemplate::custom(CHAT_TEMPLATE, Escape::Json).unwrap();
    let event_path = BodyTemplate::custom(EVENT_PATH_TEMPLATE, Escape::Json).unwrap();
    let team = event_path.render(&event).unwrap();
    assert!(std::str::from_utf8(&team).unwrap().contains("platform"), "{team:?}");

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    group.bench_function("standard_payload", |b| b.iter(|| standard.render(black_box(&event)).unwrap()));
    group.bench_function("custom_5_vars", |b| b.iter(|| chat.render(black_box(&event)).unwrap()));
    group.bench_function("custom_with_event_path", |b| b.iter(|| event_path.render(black_box(&event)).unwrap()));
    // The load bench's `large` template: a chat message with blocks, 30 variables.
    let large = BodyTemplate::custom(LARGE_TEMPLATE, Escape::Json).unwrap();
    group.bench_function("custom_large_30_vars", |b| b.iter(|| large.render(black_box(&event)).unwrap()));
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
    group.bench_function("build", |b| b.iter(|| builder.request(black_box(body.clone()), black_box(&webhook_id))));
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
            compiled.request_builder.request(body, black_box(&webhook_id))
        })
    });
    group.finish();
}

/// What `dedupe` adds per event: the key of the standard payload (a SHA-256 of ~400
/// bytes), then a check that misses and a remember, on a window already full (100,000
/// entries, so each remember also forgets the oldest); and a check that hits.
fn dedupe(c: &mut Criterion) {
    let event = firing_event();
    let body = compiled_webhook().request_builder.body(&event).unwrap();
    let dedupe = Dedupe::new(Duration::from_secs(3600), 100_000);
    for i in 0..100_000u32 {
        dedupe.remember(DedupeKey::new(Some(&i.to_string()), "alert-created", &body));
    }
    let hit = DedupeKey::new(Some("99999"), "alert-created", &body);

    let mut group = c.benchmark_group("dedupe");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    group.bench_function("key_check_remember_full_window", |b| {
        b.iter(|| {
            n += 1;
            let key = DedupeKey::new(Some(&format!("new-{n}")), event.event_type.as_str(), black_box(&body));
            if !dedupe.is_duplicate(key) {
                dedupe.remember(key);
            }
        })
    });
    // Remembered again: the loop above pushed the pre-filled entries out.
    dedupe.remember(hit);
    group.bench_function("key_check_duplicate", |b| {
        b.iter(|| {
            let key = DedupeKey::new(Some("99999"), "alert-created", black_box(&body));
            assert!(dedupe.is_duplicate(key));
        })
    });
    group.finish();
}

/// Events a buffer holds before `buffer_fill` measures it.
const MEMORY_FILLS: [usize; 3] = [0, 10_000, 100_000];
/// The disk buffer is filled through its own `push` (one fsync per batch of
/// [`FILL_BATCH`]); 100,000 records take a few seconds.
const DISK_FILLS: [usize; 3] = [0, 10_000, 100_000];
/// Events per push while filling.
const FILL_BATCH: usize = 5_000;

/// Opens a buffer as the topology does (`BufferConfig::open`), with room for `fill`
/// events and the one the benchmark pushes, and fills it with copies of `event`.
fn filled_buffer(
    rt: &tokio::runtime::Runtime,
    kind: BufferType,
    data_dir: &Path,
    event: &Event,
    fill: usize,
) -> SinkBuffer {
    let config = BufferConfig { kind, max_events: Some(fill + 16), max_bytes: Some(1 << 40), ..Default::default() };
    let buffer = config.open(data_dir, &format!("fill_{fill}")).expect("open the buffer");
    rt.block_on(async {
        let mut left = fill;
        while left > 0 {
            let n = left.min(FILL_BATCH);
            let reservation = buffer.try_reserve(n, (n * event.size) as u64).expect("room for the fill");
            let batch = (0..n).map(|_| event.copy()).collect();
            buffer.push(reservation, batch).await.expect("fill push");
            left -= n;
        }
    });
    assert_eq!(buffer.usage().0, fill, "events held after the fill");
    buffer
}

/// One event through the buffer, as the source and the sink do it: reserve room, push,
/// pop, report it delivered (which frees the room and, on disk, deletes the record).
/// The buffer keeps its length: the event popped is the oldest one.
async fn push_pop(buffer: &SinkBuffer, event: &Event) {
    let reservation = buffer.try_reserve(1, event.size as u64).expect("room for one more event");
    buffer.push(reservation, vec![event.copy()]).await.expect("push");
    let popped = buffer.pop().await.expect("an event");
    black_box(&popped);
    popped.finish(Outcome::Delivered);
}

/// Whether the cost of one push + one pop stays flat as the buffer holds more events
/// (no per-event work that grows with the queue length).
fn buffer_fill(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let json = serde_json::to_vec(&event_json(1)).expect("serializable");
    let event = Event::new(firing_event(), json.len());
    let dir = tempfile::tempdir().expect("a temp dir");

    let mut group = c.benchmark_group("buffer_fill");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (kind, label, fills) in [(BufferType::Memory, "memory", MEMORY_FILLS), (BufferType::Disk, "disk", DISK_FILLS)] {
        // A disk push+pop is an fsync (milliseconds): few iterations per sample.
        group.sampling_mode(if kind == BufferType::Disk { SamplingMode::Flat } else { SamplingMode::Auto });
        for fill in fills {
            let data_dir = dir.path().join(label);
            // Filled on first use, so that a filter that skips this benchmark skips the fill.
            let mut filled: Option<SinkBuffer> = None;
            group.bench_with_input(BenchmarkId::new(label, fill), &fill, |b, &fill| {
                let buffer = filled.get_or_insert_with(|| {
                    let started = Instant::now();
                    let buffer = filled_buffer(&rt, kind, &data_dir, &event, fill);
                    eprintln!("buffer_fill: {label} buffer filled with {fill} events in {:.2?}", started.elapsed());
                    buffer
                });
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            push_pop(buffer, &event).await;
                        }
                        started.elapsed()
                    })
                })
            });
            if let Some(buffer) = filled {
                assert_eq!(buffer.usage().0, fill, "the buffer kept its length");
                buffer.close();
                drop(buffer);
                let _ = std::fs::remove_file(BufferConfig::disk_path(&data_dir, &format!("fill_{fill}")));
            }
        }
    }
    group.finish();
}

/// Sources pushing into one disk buffer at once in `disk_concurrent_push`.
const PUSHERS: [usize; 3] = [1, 4, 16];

/// Events per second a disk buffer takes in when `pushers` sources each push a batch of
/// [`BATCH`] events at the same time. Pushes that arrive while a commit is in progress share
/// the next one (the group commit), so the rate should grow with the pushers rather than
/// stay at one fsync per batch. The pushed events are popped and reported delivered after
/// each iteration, untimed, so that the buffer stays short.
fn disk_concurrent_push(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let json = serde_json::to_vec(&event_json(1)).expect("serializable");
    let event = Event::new(firing_event(), json.len());
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = BufferConfig {
        kind: BufferType::Disk,
        max_events: Some(1 << 20),
        max_bytes: Some(1 << 40),
        ..Default::default()
    };
    let buffer = config.open(dir.path(), "concurrent").expect("open the buffer");

    let mut group = c.benchmark_group("disk_concurrent_push");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for pushers in PUSHERS {
        group.throughput(Throughput::Elements((pushers * BATCH) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(pushers), &pushers, |b, &pushers| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batches: Vec<_> = (0..pushers)
                            .map(|_| {
                                let reservation =
                                    buffer.try_reserve(BATCH, (BATCH * event.size) as u64).expect("room for the batch");
                                (reservation, (0..BATCH).map(|_| event.copy()).collect::<Vec<_>>())
                            })
                            .collect();
                        let started = Instant::now();
                        let pushes = batches.into_iter().map(|(reservation, batch)| buffer.push(reservation, batch));
                        for pushed in futures::future::join_all(pushes).await {
                            pushed.expect("push");
                        }
                        spent += started.elapsed();
                        for _ in 0..pushers * BATCH {
                            buffer.pop().await.expect("an event").finish(Outcome::Delivered);
                        }
                    }
                    spent
                })
            })
        });
    }
    group.finish();
    buffer.close();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, filter, render, request, pipeline, dedupe
}
criterion_group! {
    name = buffers;
    config = config();
    targets = buffer_fill, disk_concurrent_push
}
criterion_main!(benches, buffers);
