//! Harness for the end-to-end tests: a fresh database with the extension per test
//! ([`TestDb`]), a recording HTTP receiver on 127.0.0.1 with programmable answers and its own
//! signature checks ([`Receiver`], [`signature`]), the real sender binary as a child process
//! ([`Sender`]), and polling helpers ([`wait_until`]).
//!
//! Environment:
//! - `BEEMA_ADMIN_URL`: admin connection to the cluster (default
//!   `postgres://postgres@127.0.0.1:28815/postgres`, the cluster of `scripts/pg.sh start`).
//! - `HOOKS_SENDER_BIN`: the sender binary (default
//!   `$CARGO_TARGET_DIR/release/beema-hooks-sender`, `CARGO_TARGET_DIR` defaulting to
//!   `$HOME/.cache/beema-hooks/target`).
//!
//! Only 127.0.0.1 is ever a target of traffic.

pub mod chaos_helpers;
pub mod db;
pub mod receiver;
pub mod sender;
pub mod signature;
pub mod wait;

pub use db::{Flavor, TestDb, Webhook};
pub use receiver::{Receiver, Recorded, Reply};
pub use sender::{Sender, SenderOptions};
pub use wait::{wait_until, wait_until_sql};

/// A name unique across the processes and tests of one run: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}
