//! The integration tests, in one test binary (one link step instead of one per file).
//! Each file is a module; `support` holds the shared receivers, certificates and peer
//! helpers. Fixtures stay in `tests/fixtures/`.

mod support;

mod cli;
mod config_errors;
mod crash_recovery;
mod dedupe;
mod delivery_connections;
mod delivery_faults;
mod delivery_proxy;
mod delivery_shards;
mod delivery_target;
mod delivery_tls;
mod digests;
mod end_to_end;
mod fuzz;
mod hardening_small;
mod header_url_safety;
mod ingest_limits;
mod layering;
mod metrics;
mod mustache_spec;
mod peer_alertmanager;
mod peer_configs;
mod peer_kafka;
mod peer_syslog_ng;
mod redirects;
mod reload;
mod runtime_split;
mod schema;
mod signals;
mod signing;
mod source_http_server;
mod ssrf;
mod storage_crash;
mod storage_faults;
mod storm_gate;
mod vector_compat;
