//! The `webhook` sink, split as Vector's http sink is: `config` (fields and build) →
//! `sink` (consumes the event stream) → `request_builder` (event → request) → `service`
//! (sends, over `connections`, one kept-alive connection per request slot, opened by
//! `client`). `target` turns the URL into a request target and credentials;
//! `healthcheck` checks the endpoint at start; `alert_order` keeps each alert's events in
//! order.

pub mod alert_order;
pub mod client;
pub mod config;
pub mod connections;
pub mod healthcheck;
pub mod request_builder;
pub mod retry;
pub mod service;
pub mod sink;
pub mod target;

pub use config::WebhookSinkConfig;
