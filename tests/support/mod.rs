//! Shared helpers for integration tests: `mod support;` in any `tests/*.rs`.
#![allow(dead_code)]

pub mod certs;
pub mod faulty;
pub mod peer;
pub mod receiver;

#[allow(unused_imports)]
pub use certs::TestCerts;
#[allow(unused_imports)]
pub use receiver::{Receiver, Recorded};
