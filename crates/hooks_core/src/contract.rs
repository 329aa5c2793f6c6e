//! The contract between the sender and the extension (docs/sender-api.md): what the sender
//! passes back to `hooks.complete` and `hooks.release`, and the fence that decides whether it
//! still applies. The extension reads these JSON objects with `jsonb_to_recordset`; the field
//! names below are the column names it declares there.

use serde::Serialize;

pub use crate::retry::MAX_RETRY_AFTER_MS;
pub use crate::webhook::TIMEOUT_MS_RANGE;

/// The bounds both sides rely on. A claim leases each delivery for at least its webhook's
/// request timeout plus this margin (`hooks.claim`: `greatest(lease, timeout + 10 s)`), so a
/// request that times out still reports within its lease.
pub const LEASE_MARGIN_MS: i64 = 10_000;

/// The longest lease a claim grants for the request timeout alone: the longest timeout a
/// webhook may have plus [`LEASE_MARGIN_MS`]. A sender retries writing a result for at least
/// this long; after the lease it would be `lease_lost` anyway.
pub const MAX_TIMEOUT_LEASE_MS: i64 = *TIMEOUT_MS_RANGE.end() as i64 + LEASE_MARGIN_MS;

/// The columns `hooks.claim` returns, in order, with their SQL types (`format_type`): one
/// claimed delivery. The sender reads them by position (`CLAIM_COLUMNS` in the sender's
/// `delivery.rs`, whose unit test checks it against this list), and the e2e test
/// `claim_and_complete_columns_are_the_contracts` checks this list against the installed
/// function, so a column changed on one side fails a test, not a delivery.
pub const CLAIM_ROW: &[(&str, &str)] = &[
    ("delivery_id", "bigint"),
    ("attempt_number", "integer"),
    ("delivery_uuid", "uuid"),
    ("webhook_id", "bigint"),
    ("event_type", "text"),
    ("url", "text"),
    ("headers", "jsonb"),
    ("body", "text"),
    ("timeout_ms", "integer"),
    ("lease_expires_at", "timestamp with time zone"),
    ("lease_token", "bigint"),
];

/// The record `hooks.complete` reads each element of its array as (`jsonb_to_recordset(...) AS
/// r(...)`): the fields of [`AttemptResult`], with their SQL types.
pub const RESULT_RECORD: &[(&str, &str)] = &[
    ("delivery_id", "bigint"),
    ("attempt_number", "integer"),
    ("lease_token", "bigint"),
    ("status_code", "integer"),
    ("error", "text"),
    ("response_body", "text"),
    ("duration_ms", "integer"),
    ("retry_after_ms", "bigint"),
];

/// The record `hooks.release` reads each element of its array as: the fields of [`LeaseKey`].
pub const LEASE_KEY_RECORD: &[(&str, &str)] = &[
    ("delivery_id", "bigint"),
    ("attempt_number", "integer"),
    ("lease_token", "bigint"),
];

/// Identifies one lease of one delivery: what `hooks.release` takes, and the head of every
/// result.
///
/// `lease_token` is the fence: `hooks.claim` issues a new one for every lease, never reused
/// (not by release, retry, replay or redeliver), and `complete`/`release` apply only while the
/// delivery still holds that token. `attempt_number` is the attempt the lease was for (it
/// names the attempt in the log); it was the fence before extension 0.3.0, and is still used
/// as such for a result without a token (a sender older than 0.3.0). `lease_token` is `None`
/// only against an extension older than 0.3.0, whose claim issues none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct LeaseKey {
    /// The delivery.
    pub delivery_id: i64,
    /// The attempt it was claimed for.
    pub attempt_number: i32,
    /// The lease's token, unique for all time.
    pub lease_token: Option<i64>,
}

/// One element of `hooks.complete`'s array: the facts of one HTTP attempt. The extension
/// decides what they mean (success, retry, final failure, breaker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptResult {
    /// The delivery.
    pub delivery_id: i64,
    /// The attempt it was claimed for.
    pub attempt_number: i32,
    /// The lease's token (see [`LeaseKey`]).
    pub lease_token: Option<i64>,
    /// The HTTP status, or null when no response came.
    pub status_code: Option<u16>,
    /// Null on a 2xx; otherwise a short reason.
    pub error: Option<String>,
    /// The start of the response body (the database keeps 1,000 characters).
    pub response_body: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// The receiver's Retry-After on 429/503, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl AttemptResult {
    /// A result for the lease `key` with every fact empty: fill in what happened.
    pub fn for_lease(key: LeaseKey) -> Self {
        Self {
            delivery_id: key.delivery_id,
            attempt_number: key.attempt_number,
            lease_token: key.lease_token,
            status_code: None,
            error: None,
            response_body: None,
            duration_ms: 0,
            retry_after_ms: None,
        }
    }

    /// 2xx and no error.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && matches!(self.status_code, Some(200..=299))
    }

    /// The lease this result belongs to.
    pub fn key(&self) -> LeaseKey {
        LeaseKey {
            delivery_id: self.delivery_id,
            attempt_number: self.attempt_number,
            lease_token: self.lease_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_names(v: serde_json::Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn sorted(names: impl IntoIterator<Item = impl ToString>) -> Vec<String> {
        let mut v: Vec<String> = names.into_iter().map(|n| n.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_sql_records_name_every_field_of_the_types() {
        let key = LeaseKey { delivery_id: 1, attempt_number: 1, lease_token: Some(1) };
        let result = serde_json::to_value(AttemptResult::for_lease(key)).unwrap();
        assert_eq!(sorted(field_names(result)), sorted(RESULT_RECORD.iter().map(|(n, _)| n)));
        let key = serde_json::to_value(key).unwrap();
        assert_eq!(sorted(field_names(key)), sorted(LEASE_KEY_RECORD.iter().map(|(n, _)| n)));
    }

    #[test]
    fn result_json_has_the_documented_shape() {
        let key = LeaseKey {
            delivery_id: 17,
            attempt_number: 1,
            lease_token: Some(9001),
        };
        let r = AttemptResult {
            status_code: Some(200),
            response_body: Some("ok".into()),
            duration_ms: 12,
            ..AttemptResult::for_lease(key)
        };
        assert!(r.is_success());
        assert_eq!(r.key(), key);
        assert_eq!(
            serde_json::to_string(&[r]).unwrap_or_default(),
            r#"[{"delivery_id":17,"attempt_number":1,"lease_token":9001,"status_code":200,"error":null,"response_body":"ok","duration_ms":12,"retry_after_ms":null}]"#
        );
        assert_eq!(
            serde_json::to_string(&[key]).unwrap_or_default(),
            r#"[{"delivery_id":17,"attempt_number":1,"lease_token":9001}]"#
        );
    }

    #[test]
    fn success_needs_2xx_and_no_error() {
        let mut r = AttemptResult {
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            retry_after_ms: Some(1000),
            ..AttemptResult::for_lease(LeaseKey {
                delivery_id: 1,
                attempt_number: 1,
                lease_token: None,
            })
        };
        assert!(!r.is_success());
        r.status_code = None;
        assert!(!r.is_success());
        r.status_code = Some(204);
        r.error = None;
        assert!(r.is_success());
    }
}
