//! webhook-sink: turns incident events into webhooks.
//!
//! The modules follow the data flow: [`sources`] decode what arrives into [`event`]s,
//! [`buffer`]s hold them per sink (on disk through `storage` when asked), [`filter`]
//! keeps the ones a sink wants, `template` renders their bodies, and [`sinks::webhook`]
//! builds, sends, retries and reports the requests; what can never be delivered goes to
//! the [`dead_letters`]. [`component`] holds the Vector-shaped traits a host drives,
//! [`config`] reads and validates the pipeline file and [`topology`] wires it all together
//! for the binary (`cli`).
//!
//! # What is public
//!
//! The host-facing surface: the component traits and their contexts, the event model,
//! every config struct of the pipeline file (so a host can build a sink from code), the
//! pipeline loader and [`topology::Pipeline`]. The machinery behind them (storage, the
//! template engine, the HTTP client and service) is crate-private. The crate's own
//! integration tests and benchmarks reach it through the `internals` feature, which the
//! crate turns on for itself as a dev-dependency; it carries no stability promise.

#![warn(missing_docs)]

/// Declares a module that is public with the `internals` feature (the crate's own tests and
/// benchmarks) and crate-private without it.
///
/// Hand-written: a proc-macro attribute (the `visibility` crate) cannot be put on an
/// out-of-line `mod name;` on stable Rust.
macro_rules! internal_mod {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    };
}

pub mod api;
pub mod buffer;
pub mod cli;
pub mod component;
pub mod config;
pub mod dead_letters;
internal_mod!(
    /// The self-contained demo (`webhook-sink demo`).
    demo
);
pub mod error;
pub mod escape;
pub mod event;
pub mod filter;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod stats;
internal_mod!(
    /// redb files: the disk buffer's queue and the dead-letter store.
    storage
);
internal_mod!(
    /// "Did you mean": the closest known name to a misspelt one.
    suggest
);
internal_mod!(
    /// Body templates: the mustache engine, the variable catalog, load-time checks.
    template
);
pub mod topology;
