//! `beema-hooks-sender`: the sidecar that turns committed beema_hooks outbox rows into HTTP
//! deliveries. It touches no table: it claims, completes and releases through the
//! extension's SQL functions (docs/sender-api.md).
//!
//! Services, River-style: a [`listener`] owns the LISTEN connection; the [`worker`] (producer)
//! wakes on a notification, a jittered poll tick or a freed slot and claims through the
//! [`store`]; [`executor`] tasks send one attempt each behind the [`ssrf`] guard; the
//! [`completer`] writes results back in batches. [`admin`] serves `/metrics` and `/healthz`.
//! Both database connections go through [`tls`].

pub mod admin;
pub mod backoff;
pub mod completer;
pub mod config;
pub mod delivery;
pub mod error;
pub mod executor;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod pooler;
pub mod retry_after;
pub mod shutdown;
pub mod ssrf;
pub mod stats;
pub mod store;
pub mod tls;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
