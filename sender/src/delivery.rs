//! What `hooks.claim` hands out and what `hooks.complete` / `hooks.release` take back
//! (docs/sender-api.md).

use tokio_postgres::Row;

use crate::error::{Error, Result};

/// One claimed delivery: everything needed to send one attempt.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The delivery.
    pub delivery_id: i64,
    /// This attempt's number (1 for the first), passed back to complete/release.
    pub attempt_number: i32,
    /// The lease's fencing token, passed back to complete/release; `None` from an extension
    /// older than 0.3.0, which fences on the attempt number alone.
    pub lease_token: Option<i64>,
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
     event_type, url, headers::text, body, timeout_ms, lease_token";
/// The same from an extension older than 0.3.0, whose claim issues no lease token.
pub const CLAIM_COLUMNS_0_2: &str =
    "delivery_id, attempt_number, delivery_uuid::text, webhook_id, \
     event_type, url, headers::text, body, timeout_ms, NULL::bigint";

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
            lease_token: row.try_get(9).map_err(|e| bad("lease_token", e))?,
        })
    }

    /// The lease: delivery, attempt and token.
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey {
            delivery_id: self.delivery_id,
            attempt_number: self.attempt_number,
            lease_token: self.lease_token,
        }
    }
}

/// What `hooks.release` takes; the head of every result (the contract with the extension).
pub type DeliveryKey = hooks_core::contract::LeaseKey;
/// One element of `hooks.complete`'s array (the contract with the extension).
pub use hooks_core::contract::AttemptResult;

#[cfg(test)]
mod tests {
    use super::*;
    use hooks_core::contract::CLAIM_ROW;

    /// The column names of a select list, casts dropped.
    fn names(columns: &str) -> Vec<&str> {
        columns.split(',').map(|c| c.trim().split("::").next().unwrap()).collect()
    }

    #[test]
    fn the_claim_columns_are_the_contracts_claim_row() {
        // the contract's row, without the lease expiry (the sender keeps its own deadline)
        let want: Vec<&str> = CLAIM_ROW
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "lease_expires_at")
            .collect();
        let mut got = names(CLAIM_COLUMNS);
        got.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        assert_eq!(got, sorted_want, "CLAIM_COLUMNS and hooks_core::contract::CLAIM_ROW differ");
        // 0.2.0's claim has no lease token: the same columns with a NULL in its place
        assert_eq!(names(CLAIM_COLUMNS_0_2).len(), names(CLAIM_COLUMNS).len());
        assert_eq!(names(CLAIM_COLUMNS_0_2).last(), Some(&"NULL"));
    }
}
