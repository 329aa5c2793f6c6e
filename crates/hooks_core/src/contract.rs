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
