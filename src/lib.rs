//! webhook-sink: turns incident events into webhooks.
//!
//! The modules follow the data flow: [`sources`] decode what arrives into [`event`]s,
//! [`buffer`]s hold them per sink (on disk through [`storage`] when asked), [`filter`]
//! keeps the ones a sink wants, [`template`] renders their bodies, and [`sinks::webhook`]
//! builds, sends, retries and reports the requests; what can never be delivered goes to
//! the [`dead_letters`]. [`component`] holds the Vector-shaped traits a host drives,
//! [`config`] reads the pipeline file and [`topology`] wires it all together for the
//! binary ([`cli`]).

pub mod buffer;
pub mod cli;
pub mod component;
pub mod config;
pub mod dead_letters;
pub mod demo;
pub mod error;
pub mod event;
pub mod filter;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod stats;
pub mod storage;
pub mod suggest;
pub mod template;
pub mod topology;
