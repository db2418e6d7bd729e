//! Hosting the webhook sink from another Rust pipeline through the component traits only:
//! build it from its config, feed it a stream of events, wait for it to finish.
//!
//! ```text
//! cargo run --example embed -- http://127.0.0.1:8080/hook
//! ```

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use webhook_sink::component::{SinkConfig, SinkContext};
use webhook_sink::dead_letters::DeadLetters;
use webhook_sink::event::{Event, EventKind, IncidentEvent};
use webhook_sink::sinks::webhook::config::SecretUrl;
use webhook_sink::sinks::webhook::WebhookSinkConfig;
use webhook_sink::stats::SinkStats;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080/hook".into());
    let config = WebhookSinkConfig {
        url: SecretUrl(url),
        triggers: Some(vec!["alert-created".into()]),
        template: Some(r#"{"text": "{{ alertSummary }}"}"#.into()),
        ..Default::default()
    };
    let stats = Arc::new(SinkStats::default());
    let dead_letters = Arc::new(DeadLetters::new(Path::new("webhook-sink-data")));
    // No runtimes of other threads to shard deliveries over: all on the sink's own task.
    let cx = SinkContext {
        name: "embedded".into(),
        config_dir: ".".into(),
        stats: stats.clone(),
        dead_letters,
        shard_runtimes: Vec::new(),
    };
    let (sink, healthcheck) = config.build(cx).await?;
    if let Err(error) = healthcheck.await {
        eprintln!("healthcheck: {error}");
    }
    let mut incident = IncidentEvent::new(EventKind::Created);
    incident.summary = Some("disk full on db-1".into());
    let events = futures::stream::iter([Event::new(incident, 0)]).boxed();
    let _ = sink.run(events).await;
    println!("delivered {}, failed {}", SinkStats::get(&stats.delivered), SinkStats::get(&stats.failed));
    Ok(())
}
