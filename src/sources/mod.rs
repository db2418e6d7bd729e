//! Sources: where incident events come from, and how their bytes become events.

pub mod auth;
pub mod decode;
pub mod http_server;
pub mod kafka;
pub mod stdin;
mod validated;

pub use validated::ValidatedSource;
