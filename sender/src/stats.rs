//! The periodic stats line.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::collections::HashSet;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::Store;

/// Logs what happened since the last line, every `every`, until `stop`.
pub async fn run(metrics: Metrics, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut last = Snapshot::take(&metrics);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Snapshot::take(&metrics);
        info!(
            delivered = now.delivered - last.delivered,
            failed = now.failed - last.failed,
            in_flight = metrics.in_flight.get(),
            claims = now.claims - last.claims,
            claimed = now.claimed - last.claimed,
            lease_lost = now.lease_lost - last.lease_lost,
            db_errors = now.db_errors - last.db_errors,
            interval_secs = every.as_secs(),
            "stats"
        );
        last = now;
    }
}

struct Snapshot {
    delivered: u64,
    failed: u64,
    claims: u64,
    claimed: u64,
    lease_lost: u64,
    db_errors: u64,
}

impl Snapshot {
    fn take(m: &Metrics) -> Self {
        Self {
            delivered: m.outcome_count("success"),
            failed: m.outcome_count("failure"),
            claims: m.claim_batch_size.get_sample_count(),
            claimed: m.claim_batch_size.get_sample_sum() as u64,
            lease_lost: m.lease_lost.get(),
            db_errors: m.db_errors.get(),
        }
    }
}

/// Reads `hooks.sender_metrics()` every `every` until `stop` and sets the per-webhook gauges
/// (README, "Alerting"): the series of webhooks that no longer have anything to report go.
/// Stops, saying so, when the extension is older than 0.3.0.
pub async fn webhook_metrics(
    store: Arc<Store>,
    metrics: Metrics,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the label sets exported by the last read: those not read again are removed afterwards
    // (not all reset first, which a scrape in between would see as every series gone)
    let mut shown: HashSet<[String; 3]> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.webhook_metrics().await {
            Ok(Some(rows)) => {
                let mut now_shown = HashSet::with_capacity(rows.len());
                for r in rows {
                    let id = r.webhook_id.to_string();
                    let labels = [r.tenant_id.as_str(), id.as_str(), r.webhook_name.as_str()];
                    now_shown.insert(labels.map(str::to_owned));
                    metrics.webhook_due.with_label_values(&labels).set(r.due);
                    metrics
                        .webhook_overdue_seconds
                        .with_label_values(&labels)
                        .set(r.overdue_seconds);
                    metrics
                        .webhook_breaker_open
                        .with_label_values(&labels)
                        .set(i64::from(r.breaker_open));
                    metrics.webhook_held.with_label_values(&labels).set(r.held);
                }
                for gone in shown.difference(&now_shown) {
                    let labels = [gone[0].as_str(), gone[1].as_str(), gone[2].as_str()];
                    let _ = metrics.webhook_due.remove_label_values(&labels);
                    let _ = metrics.webhook_overdue_seconds.remove_label_values(&labels);
                    let _ = metrics.webhook_breaker_open.remove_label_values(&labels);
                    let _ = metrics.webhook_held.remove_label_values(&labels);
                }
                shown = now_shown;
            }
            Ok(None) => {
                info!("the beema_hooks extension is older than 0.3.0: no per-webhook metrics");
                return;
            }
            Err(e) => warn!(error = %e, "reading hooks.sender_metrics() failed"),
        }
    }
}
