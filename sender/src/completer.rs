//! The completer: collects attempt results and writes them back in batches through
//! `hooks.complete`, retrying while the database is away. A result that cannot be written
//! is logged at error level with its ids; its delivery is retried when the lease expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::delivery::AttemptResult;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::Store;

/// Flush when this many results are waiting.
pub const MAX_BATCH: usize = 100;
/// Flush at least this often while results are waiting. A result not yet written still counts
/// as a request in flight for its webhook's cap (`hooks.max_in_flight_per_webhook`), so waiting
/// long here starves claims: at 25 ms about 80 results were unwritten at a time, the cap of 32
/// bound with 3 webhooks, and claims spent most of their time passing over capped rows.
/// BENCHMARKS.md (COST): 5 ms instead of 25 ms gave 2x the deliveries per second and 0.6x the
/// Postgres CPU per delivery.
pub const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// Batches results into `hooks.complete`.
pub struct Completer {
    store: Arc<Store>,
    metrics: Metrics,
    retry_budget: Duration,
    /// Counts the batches written (the worker looks again after one: see `worker::NextLook`).
    written: watch::Sender<u64>,
}

impl Completer {
    /// A completer that keeps retrying a batch for up to `retry_budget` (the lease: after
    /// that the result would be `lease_lost` anyway), and counts each batch written in
    /// `written`.
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        retry_budget: Duration,
        written: watch::Sender<u64>,
    ) -> Self {
        Self {
            store,
            metrics,
            retry_budget,
            written,
        }
    }

    /// Runs until every sender of `rx` is gone and everything received is written.
    pub async fn run(self, mut rx: mpsc::Receiver<AttemptResult>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            match rx.recv().await {
                Some(r) => batch.push(r),
                None => break,
            }
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                }
            }
            self.flush(&batch).await;
            batch.clear();
        }
        debug!("completer drained");
    }

    async fn flush(&self, batch: &[AttemptResult]) {
        match self.write(batch).await {
            Ok(()) => {}
            // The database refused the batch itself: write the results one by one so that a
            // single bad result does not take the others down with it.
            Err(e) if !e.is_transient() && batch.len() > 1 => {
                warn!(error = %e, results = batch.len(), "batch rejected; writing results one by one");
                for r in batch {
                    if let Err(e) = self.write(std::slice::from_ref(r)).await {
                        self.give_up(std::slice::from_ref(r), &e);
                    }
                }
            }
            Err(e) => self.give_up(batch, &e),
        }
    }

    /// Writes `batch`, retrying transient errors within the budget.
    async fn write(&self, batch: &[AttemptResult]) -> Result<(), Error> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.store.complete(batch).await {
                Ok(applied) => {
                    let lost = u64::try_from(batch.len())
                        .unwrap_or(u64::MAX)
                        .saturating_sub(applied);
                    if lost > 0 {
                        self.metrics.lease_lost.inc_by(lost);
                        warn!(
                            results = batch.len(),
                            lease_lost = lost,
                            "some results arrived after their lease was lost"
                        );
                    }
                    debug!(results = batch.len(), applied, "results written");
                    self.written.send_modify(|n| *n = n.wrapping_add(1));
                    return Ok(());
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    if !e.is_transient() || started.elapsed() + delay > self.retry_budget {
                        return Err(e);
                    }
                    warn!(error = %e, results = batch.len(), retry_in_ms = delay.as_millis() as u64, "writing results failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn give_up(&self, batch: &[AttemptResult], e: &Error) {
        self.metrics
            .results_dropped
            .inc_by(u64::try_from(batch.len()).unwrap_or(u64::MAX));
        let ids: Vec<String> = batch
            .iter()
            .map(|r| format!("{}#{}", r.delivery_id, r.attempt_number))
            .collect();
        error!(
            error = %e,
            results = batch.len(),
            deliveries = %ids.join(","),
            "results could not be written; these deliveries will be sent again when their lease expires"
        );
    }
}
