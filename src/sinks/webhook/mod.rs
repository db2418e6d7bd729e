//! The `webhook` sink, split as Vector's http sink is: `config` (fields and build) →
//! `sink` (consumes the event stream, routes it to its shards by alert key) → `shard`
//! (delivers with retries) → `request_builder` (event → request) → `service`
//! (sends, over `connections`, one kept-alive connection per request slot, opened by
//! `client`, over `dial`: direct or through a `proxy`, with the SSRF guard; TLS from `tls`).
//! `target` turns the URL into a request target and credentials;
//! `healthcheck` checks the endpoint at start; `alert_order` keeps each alert's events in
//! order; `signing` adds Standard Webhooks signatures; `gate` holds attempts back for the
//! rate limit, a `Retry-After` pause and the circuit breaker; `batch` collects events into
//! digests; `dedupe` drops events equal to one delivered within a window.

internal_mod!(
    /// Keeps each alert's events in order.
    alert_order
);
internal_mod!(
    /// The HTTP(S) connector: hyper + rustls.
    client
);
pub mod batch;
pub mod config;
internal_mod!(
    /// One kept-alive connection per request slot.
    connections
);
pub mod dedupe;
internal_mod!(
    /// The TCP connection: direct or through a proxy, with the SSRF guard.
    dial
);
internal_mod!(
    /// What every attempt passes: rate limit, `Retry-After` pause, circuit breaker.
    gate
);
internal_mod!(
    /// The start-up check of the endpoint.
    healthcheck
);
pub mod proxy;
internal_mod!(
    /// Event → HTTP request.
    request_builder
);
pub mod retry;
internal_mod!(
    /// Sends one request and reads the answer.
    service
);
internal_mod!(
    /// One shard of a sink's deliveries: its connections, alert order and retries.
    shard
);
internal_mod!(
    /// Standard Webhooks signatures.
    signing
);
internal_mod!(
    /// The running sink.
    sink
);
internal_mod!(
    /// The URL as a request target, with its Basic credentials.
    target
);
internal_mod!(
    /// TLS: trusted roots, pinned certificates, client certificates.
    tls
);

pub use config::WebhookSinkConfig;
