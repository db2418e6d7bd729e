//! The sinks: where events leave the pipeline. One type so far, `webhook`.

pub mod webhook;
