//! Prometheus metrics, served on the admin port's `/metrics`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::Result;

const NAMESPACE: &str = "beema_hooks_sender";

/// Every metric the sender keeps, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Attempts by outcome: `success`, `failure` (non-2xx, timeout, connection error, refused
    /// target), `released` (given back unsent at shutdown).
    pub deliveries: IntCounterVec,
    /// Wall time of each HTTP attempt.
    pub attempt_duration: Histogram,
    /// Attempts per webhook by outcome (`success`, `failure`), for alerts per webhook.
    pub webhook_attempts: IntCounterVec,
    /// Per webhook, from the database every --webhook-metrics-interval-secs
    /// (hooks.sender_metrics, README "Alerting"); labels tenant_id, webhook_id, webhook_name.
    pub webhook_due: IntGaugeVec,
    pub webhook_overdue_seconds: GaugeVec,
    pub webhook_breaker_open: IntGaugeVec,
    pub webhook_held: IntGaugeVec,
    /// HTTP requests running now.
    pub in_flight: IntGauge,
    /// Bytes of the request bodies those hold (bounded by --max-inflight-bytes).
    pub in_flight_bytes: IntGauge,
    /// Rows returned per claim (its count is the number of claims).
    pub claim_batch_size: Histogram,
    /// Results the database did not apply because the lease had been lost.
    pub lease_lost: IntCounter,
    /// Results that could not be written at all after retries.
    pub results_dropped: IntCounter,
    /// Times the LISTEN connection was re-established after a drop.
    pub listener_reconnects: IntCounter,
    /// Notifications received on `hooks_deliveries`.
    pub notifications: IntCounter,
    /// Failed database round trips (connect, claim, complete, release, LISTEN, ping).
    pub db_errors: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        let hopts = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramOpts::new(name, help)
                .namespace(NAMESPACE)
                .buckets(buckets)
        };
        let deliveries = IntCounterVec::new(
            opts(
                "deliveries_total",
                "Delivery attempts by outcome (success, failure, released).",
            ),
            &["outcome"],
        )?;
        let attempt_duration = Histogram::with_opts(hopts(
            "attempt_duration_seconds",
            "Duration of HTTP delivery attempts.",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        ))?;
        let webhook_attempts = IntCounterVec::new(
            opts(
                "webhook_attempts_total",
                "Delivery attempts per webhook by outcome (success, failure).",
            ),
            &["webhook_id", "outcome"],
        )?;
        let per_webhook = ["tenant_id", "webhook_id", "webhook_name"];
        let webhook_due = IntGaugeVec::new(
            opts(
                "webhook_due",
                "Deliveries of the webhook due and not sent (from hooks.sender_metrics).",
            ),
            &per_webhook,
        )?;
        let webhook_overdue_seconds = GaugeVec::new(
            opts(
                "webhook_overdue_seconds",
                "How long the webhook's oldest due delivery has waited past its due time.",
            ),
            &per_webhook,
        )?;
        let webhook_breaker_open = IntGaugeVec::new(
            opts(
                "webhook_breaker_open",
                "1 while the webhook's circuit breaker holds its deliveries back.",
            ),
            &per_webhook,
        )?;
        let webhook_held = IntGaugeVec::new(
            opts(
                "webhook_held",
                "Deliveries a disabled webhook holds until it is enabled again.",
            ),
            &per_webhook,
        )?;
        let in_flight =
            IntGauge::with_opts(opts("in_flight", "HTTP delivery attempts in flight."))?;
        let in_flight_bytes = IntGauge::with_opts(opts(
            "in_flight_bytes",
            "Bytes of request bodies held by attempts in flight (at most --max-inflight-bytes, or one larger delivery alone).",
        ))?;
        let claim_batch_size = Histogram::with_opts(hopts(
            "claim_batch_size",
            "Rows returned per hooks.claim call.",
            vec![
                0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ],
        ))?;
        let lease_lost = IntCounter::with_opts(opts(
            "results_lease_lost_total",
            "Results hooks.complete did not apply because the lease was lost.",
        ))?;
        let results_dropped = IntCounter::with_opts(opts(
            "results_dropped_total",
            "Results that could not be written back after retries.",
        ))?;
        let listener_reconnects = IntCounter::with_opts(opts(
            "listener_reconnects_total",
            "Times the LISTEN connection was re-established.",
        ))?;
        let notifications = IntCounter::with_opts(opts(
            "notifications_total",
            "Notifications received on hooks_deliveries.",
        ))?;
        let db_errors =
            IntCounter::with_opts(opts("db_errors_total", "Failed database round trips."))?;

        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(webhook_attempts.clone()))?;
        registry.register(Box::new(webhook_due.clone()))?;
        registry.register(Box::new(webhook_overdue_seconds.clone()))?;
        registry.register(Box::new(webhook_breaker_open.clone()))?;
        registry.register(Box::new(webhook_held.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(in_flight_bytes.clone()))?;
        registry.register(Box::new(claim_batch_size.clone()))?;
        registry.register(Box::new(lease_lost.clone()))?;
        registry.register(Box::new(results_dropped.clone()))?;
        registry.register(Box::new(listener_reconnects.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(db_errors.clone()))?;
        // Show every outcome from the start, at zero.
        for outcome in ["success", "failure", "released"] {
            deliveries.with_label_values(&[outcome]);
        }
        Ok(Self {
            registry,
            deliveries,
            attempt_duration,
            webhook_attempts,
            webhook_due,
            webhook_overdue_seconds,
            webhook_breaker_open,
            webhook_held,
            in_flight,
            in_flight_bytes,
            claim_batch_size,
            lease_lost,
            results_dropped,
            listener_reconnects,
            notifications,
            db_errors,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Count of attempts with this outcome so far.
    pub fn outcome_count(&self, outcome: &str) -> u64 {
        self.deliveries.with_label_values(&[outcome]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = match Metrics::new() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        m.deliveries.with_label_values(&["success"]).inc();
        m.claim_batch_size.observe(3.0);
        m.listener_reconnects.inc();
        let text = m.render().unwrap_or_default();
        for needle in [
            "beema_hooks_sender_deliveries_total{outcome=\"success\"} 1",
            "beema_hooks_sender_deliveries_total{outcome=\"failure\"} 0",
            "beema_hooks_sender_attempt_duration_seconds_bucket",
            "beema_hooks_sender_in_flight 0",
            "beema_hooks_sender_in_flight_bytes 0",
            "beema_hooks_sender_claim_batch_size_sum 3",
            "beema_hooks_sender_listener_reconnects_total 1",
            "beema_hooks_sender_db_errors_total 0",
            "beema_hooks_sender_results_lease_lost_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(m.outcome_count("success"), 1);
    }
}
