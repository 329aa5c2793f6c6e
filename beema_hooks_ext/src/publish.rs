//! Event validation and pattern matching, called by `hooks.publish` and `hooks.match` (api.sql).

use hooks_core::event::{prepare, Limits};
use hooks_core::pattern;
use pgrx::prelude::*;

use crate::errors::OrRaise;
use crate::gucs;

/// Validates an event and builds its delivery body. Internal to `hooks.publish`.
///
/// Returns one row: the tenant, the event type, the event key (the event's `id`, or a fresh
/// uuid) and the exact body text that receivers get. Raises 22023, 22004 or 54000 (see the
/// README) naming the field at fault. NULL input returns no row.
#[pg_extern(volatile, parallel_safe, name = "_prepare_event")]
fn prepare_event(
    event: &str,
    now: &str,
) -> TableIterator<
    'static,
    (
        name!(tenant_id, String),
        name!(event_type, String),
        name!(event_key, String),
        name!(body, String),
    ),
> {
    let limits = Limits { max_bytes: gucs::MAX_PAYLOAD_BYTES.get().max(1024) as usize };
    let fresh = fresh_uuid();
    let p = prepare(event, limits, &fresh, now).or_raise("hooks.publish");
    TableIterator::once((p.tenant_id, p.event_type, p.event_key, p.body))
}

/// A random (version 4) uuid from Postgres' strong random source.
fn fresh_uuid() -> String {
    let mut bytes = [0u8; 16];
    strong_random(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// Fills `buf` from `pg_strong_random`, raising an error if the source fails.
pub(crate) fn strong_random(buf: &mut [u8]) {
    // SAFETY: the pointer and length describe a valid, writable buffer.
    let ok = unsafe { pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) };
    if !ok {
        error!("could not generate random bytes");
    }
}

/// Does the webhook pattern select the event type? `*` matches every event; a `*` segment
/// matches exactly one segment (`claim/*` matches `claim/opened`, `*.created` matches
/// `invoice.created`); segments are separated by `/` or `.`, and separators must agree.
/// NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe)]
fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    pattern::matches(pattern, event_type)
}

/// The literal prefixes a wildcard pattern must have to select `event_type` (`{"",claim/}` for
/// `claim/opened`): `hooks.match` looks up the patterns whose `pattern_prefix` is one of them.
/// NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe, name = "_prefixes")]
fn prefixes(event_type: &str) -> Vec<String> {
    pattern::candidate_prefixes(event_type)
        .into_iter()
        .map(str::to_owned)
        .collect()
}
