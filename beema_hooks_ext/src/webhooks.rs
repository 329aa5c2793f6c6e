//! Webhook validation (run by the table trigger on every insert and update) and the retry
//! schedule (run by `hooks.complete`).

use hooks_core::envelope::{self, Envelope};
use hooks_core::retry::RetryConfig;
use hooks_core::{event, pattern, webhook, Error};
use pgrx::prelude::*;

use crate::errors::{raise, OrRaise};

const CONTEXT: &str = "hooks.webhooks";

/// Raises 22023 naming the field when a webhook's settings are invalid: `tenant_id` and
/// `webhook_name` non-empty (at most 255 bytes), `event_type` a valid pattern, `url` absolute
/// http(s) without credentials, `headers` an object of strings (no CR/LF, not overriding the
/// delivery's own headers), `retry_config` within bounds, `timeout_ms` in 100..=120000, `secret`
/// 8..=512 bytes. Internal: called by the `hooks.webhooks` trigger. NULLs are left to the
/// table's NOT NULL constraints (SQLSTATE 23502).
#[pg_extern(stable, strict, parallel_safe, name = "_check_webhook")]
#[allow(clippy::too_many_arguments)]
fn check_webhook(
    tenant_id: &str,
    webhook_name: &str,
    event_type: &str,
    url: &str,
    headers: &str,
    retry_config: &str,
    timeout_ms: i32,
    secret: &str,
) -> bool {
    non_empty("tenant_id", tenant_id).or_raise(CONTEXT);
    non_empty("webhook_name", webhook_name).or_raise(CONTEXT);
    pattern::validate_pattern("event_type", event_type).or_raise(CONTEXT);
    webhook::validate_url(url).or_raise(CONTEXT);
    webhook::validate_headers(&parse_json("headers", headers).or_raise(CONTEXT)).or_raise(CONTEXT);
    webhook::validate_retry_config(&parse_json("retry_config", retry_config).or_raise(CONTEXT)).or_raise(CONTEXT);
    webhook::validate_timeout_ms(timeout_ms).or_raise(CONTEXT);
    webhook::validate_secret(secret).or_raise(CONTEXT);
    true
}

/// Raises 22023 naming the element when a webhook's further patterns (`event_types`) hold a
/// NULL or an invalid pattern, or more than 50. Internal: called by the `hooks.webhooks` trigger.
#[pg_extern(stable, strict, parallel_safe, name = "_check_patterns")]
fn check_patterns(event_types: Array<&str>) -> bool {
    let patterns: Vec<Option<&str>> = event_types.iter().collect();
    pattern::validate_patterns("event_types", &patterns).or_raise(CONTEXT);
    true
}

/// Raises 22023 unless `envelope` names a payload envelope (beema, standard, flat, supabase).
/// Internal: called by the `hooks.webhooks` trigger.
#[pg_extern(immutable, strict, parallel_safe, name = "_check_envelope")]
fn check_envelope(envelope: &str) -> bool {
    Envelope::parse("envelope", envelope).or_raise(CONTEXT);
    true
}

/// The body a receiver gets: the stored event body `body` in the payload envelope `envelope`
/// (README, "Payload envelopes"); `beema` returns `body` as it is. The same arguments always
/// give the same bytes. Called by `hooks.claim`. Raises 22023 for an unknown envelope.
#[pg_extern(immutable, strict, parallel_safe, name = "_render_envelope")]
fn render_envelope(envelope: &str, body: &str) -> String {
    let env = Envelope::parse("envelope", envelope).or_raise("hooks.claim");
    envelope::render(env, body).or_raise("hooks.claim")
}

/// Parses the text of a jsonb column (passed as text so that no input can panic a conversion).
fn parse_json(field: &str, text: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::invalid(field, format!("{field} is not a JSON value this extension accepts: {e}")))
}

fn non_empty(field: &str, v: &str) -> Result<(), Error> {
    if v.is_empty() || v.len() > event::MAX_ID_LEN || v.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("{field} must be 1 to {} bytes without control characters", event::MAX_ID_LEN)));
    }
    Ok(())
}

/// Milliseconds before the next attempt after failed attempt `attempt` (1-based):
/// `backoffMs * 2^(attempt-1)` from `retry_config`, scaled by `0.8 + 0.4 * jitter`, capped at
/// `maxBackoffMs`; a longer `retry_after_ms` (the receiver's `Retry-After`, bounded to one day)
/// wins. NULL `retry_after_ms` means none; other NULL arguments give NULL. An invalid
/// `retry_config` (which the trigger prevents) raises 22023.
#[pg_extern(immutable, parallel_safe)]
fn retry_delay_ms(
    retry_config: Option<&str>,
    attempt: Option<i32>,
    retry_after_ms: Option<i64>,
    jitter: Option<f64>,
) -> Option<i64> {
    let (cfg, attempt, jitter) = (retry_config?, attempt?, jitter?);
    let cfg = parse_json("retry_config", cfg).and_then(|v| RetryConfig::parse(&v)).unwrap_or_else(|e| raise("hooks.retry_delay_ms", e));
    Some(cfg.delay_ms(attempt, retry_after_ms, jitter))
}
