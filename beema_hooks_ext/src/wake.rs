//! The senders' wake-up at commit (README, "Wake-ups").
//!
//! `hooks._notify_at_commit()` asks for one NOTIFY on channel `hooks_deliveries` when the current
//! transaction commits. It is sent from a transaction callback at PRE_COMMIT, which runs after
//! the deferred triggers (where publishing transactions ask for it) and before Postgres queues
//! the transaction's notifications. A transaction that ends in `PREPARE TRANSACTION` asks in
//! the same way and sends nothing: Postgres refuses to prepare a transaction that ran NOTIFY,
//! and its deliveries are found by the senders' poll after `COMMIT PREPARED`. The portable
//! flavor's twin (sql/portable.sql) calls `pg_notify` at once, so there a transaction that
//! will be prepared says `SET LOCAL hooks.wake = 'poll'`.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

const CHANNEL: &std::ffi::CStr = c"hooks_deliveries";

thread_local! {
    /// Whether this backend's current transaction asked for the wake-up.
    static ASKED: Cell<bool> = const { Cell::new(false) };
}

/// Registers the transaction callback (once per backend, from `_PG_init`).
pub fn init() {
    // SAFETY: called once while the library loads; the callback has the signature Postgres
    // expects and needs no argument.
    unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    let asked = ASKED.with(|a| a.replace(false));
    if asked && event == pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT {
        // pg_notify(CHANNEL, ''): PRE_COMMIT runs inside the transaction, before
        // PreCommit_Notify queues the transaction's notifications.
        let channel = CHANNEL.to_str().expect("ASCII").into_datum().expect("a text datum");
        let payload = "".into_datum().expect("a text datum");
        // SAFETY: pg_notify takes two non-NULL text arguments and returns void.
        unsafe {
            pg_sys::OidFunctionCall2Coll(pg_sys::Oid::from(pg_sys::F_PG_NOTIFY), pg_sys::InvalidOid, channel, payload);
        }
    }
    // every other end (PRE_PREPARE, ABORT, the parallel events) forgets the request
}

/// Asks for one NOTIFY on `hooks_deliveries` when this transaction commits (none when it is
/// prepared or rolled back). Internal to the wake-up check and the management functions.
#[pg_extern(volatile, parallel_unsafe, name = "_notify_at_commit")]
fn notify_at_commit() {
    ASKED.with(|a| a.set(true));
}
