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
//! - `BEEMA_ROOT`: the checkout whose scripts and files the tests use (set by
//!   `scripts/env.sh`; default the checkout the tests were built from, see [`repo_root`]).
//!
//! Only 127.0.0.1 is ever a target of traffic.

pub mod chaos_helpers;
pub mod db;
pub mod ports;
pub mod receiver;
pub mod sender;
pub mod signature;
pub mod wait;

pub use db::{Flavor, TestDb, Webhook};
pub use receiver::{Receiver, Recorded, Reply};
pub use sender::{Sender, SenderOptions};
pub use wait::{wait_until, wait_until_sql};

/// The checkout whose scripts and files the tests use: `$BEEMA_ROOT` (exported by
/// `scripts/env.sh`, which every project script sources), else the checkout the tests were
/// compiled in. Checkouts share one build directory, and cargo may reuse a test binary built
/// in another checkout when its sources are not newer: that checkout may be gone.
pub fn repo_root() -> std::path::PathBuf {
    match std::env::var_os("BEEMA_ROOT") {
        Some(root) if !root.is_empty() => std::path::PathBuf::from(root),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

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
