//! Pure logic shared by the `beema_hooks` extension and the sender.
//!
//! Nothing here touches Postgres or the network, so every rule (what an event must look like,
//! which pattern matches which event type, how a delivery is signed, when a retry is due) is
//! unit-tested and fuzzed in plain Rust, and the extension only adds the SQL glue.

pub mod contract;
pub mod envelope;
pub mod error;
pub mod event;
pub mod pattern;
pub mod retry;
pub mod sign;
pub mod webhook;

pub use error::{Error, ErrorKind};
