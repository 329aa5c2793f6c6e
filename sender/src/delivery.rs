//! What `hooks.claim` hands out and what `hooks.complete` / `hooks.release` take back
//! (docs/sender-api.md).

use serde::Serialize;
use tokio_postgres::Row;

use crate::error::{Error, Result};

/// One claimed delivery: everything needed to send one attempt.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The delivery.
    pub delivery_id: i64,
    /// This attempt's number: the fencing token passed back to complete/release.
    pub attempt_number: i32,
    /// Stable across retries; already in the headers.
    pub delivery_uuid: String,
    /// The webhook.
    pub webhook_id: i64,
    /// The event type.
    pub event_type: String,
    /// Where to POST.
    pub url: String,
    /// Every header to send (a JSON object of strings), signatures included.
    pub headers: serde_json::Value,
    /// The exact body; its UTF-8 bytes were signed.
    pub body: String,
    /// The webhook's request timeout.
    pub timeout_ms: i32,
}

/// The columns the sender reads from `hooks.claim`, in [`Delivery::from_row`]'s order.
pub const CLAIM_COLUMNS: &str = "delivery_id, attempt_number, delivery_uuid::text, webhook_id, \
     event_type, url, headers::text, body, timeout_ms";

impl Delivery {
    /// Reads one row selected with [`CLAIM_COLUMNS`].
    pub fn from_row(row: &Row) -> Result<Self> {
        let bad = |col: &str, e: tokio_postgres::Error| Error::BadRow(format!("column {col}: {e}"));
        let headers_text: String = row.try_get(6).map_err(|e| bad("headers", e))?;
        let headers = serde_json::from_str(&headers_text)
            .map_err(|e| Error::BadRow(format!("column headers: {e}")))?;
        Ok(Self {
            delivery_id: row.try_get(0).map_err(|e| bad("delivery_id", e))?,
            attempt_number: row.try_get(1).map_err(|e| bad("attempt_number", e))?,
            delivery_uuid: row.try_get(2).map_err(|e| bad("delivery_uuid", e))?,
            webhook_id: row.try_get(3).map_err(|e| bad("webhook_id", e))?,
            event_type: row.try_get(4).map_err(|e| bad("event_type", e))?,
            url: row.try_get(5).map_err(|e| bad("url", e))?,
            headers,
            body: row.try_get(7).map_err(|e| bad("body", e))?,
            timeout_ms: row.try_get(8).map_err(|e| bad("timeout_ms", e))?,
        })
    }

    /// The (delivery, attempt) pair that identifies this lease.
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey {
            delivery_id: self.delivery_id,
            attempt_number: self.attempt_number,
        }
    }
}

/// One element of `hooks.release`'s array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryKey {
    /// The delivery.
    pub delivery_id: i64,
    /// The attempt it was claimed for.
    pub attempt_number: i32,
}

/// One element of `hooks.complete`'s array: the outcome of one HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptResult {
    /// The delivery.
    pub delivery_id: i64,
    /// The attempt it was claimed for.
    pub attempt_number: i32,
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
    /// 2xx and no error.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && matches!(self.status_code, Some(200..=299))
    }

    /// The pair that identifies the lease this result belongs to.
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey {
            delivery_id: self.delivery_id,
            attempt_number: self.attempt_number,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_json_has_the_documented_shape() {
        let r = AttemptResult {
            delivery_id: 17,
            attempt_number: 1,
            status_code: Some(200),
            error: None,
            response_body: Some("ok".into()),
            duration_ms: 12,
            retry_after_ms: None,
        };
        assert!(r.is_success());
        let json = serde_json::to_string(&[r]).unwrap_or_default();
        assert_eq!(
            json,
            r#"[{"delivery_id":17,"attempt_number":1,"status_code":200,"error":null,"response_body":"ok","duration_ms":12,"retry_after_ms":null}]"#
        );
        let key = serde_json::to_string(&[DeliveryKey {
            delivery_id: 17,
            attempt_number: 1,
        }])
        .unwrap_or_default();
        assert_eq!(key, r#"[{"delivery_id":17,"attempt_number":1}]"#);
    }

    #[test]
    fn success_needs_2xx_and_no_error() {
        let mut r = AttemptResult {
            delivery_id: 1,
            attempt_number: 1,
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            response_body: None,
            duration_ms: 1,
            retry_after_ms: Some(1000),
        };
        assert!(!r.is_success());
        r.status_code = None;
        assert!(!r.is_success());
        r.status_code = Some(204);
        r.error = None;
        assert!(r.is_success());
    }
}
