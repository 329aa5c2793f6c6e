//! The periodic stats line.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;

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
