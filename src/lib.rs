//! webhook-sink library.
