//! The producer and its executors: one `tokio::select!` over shutdown, finished tasks,
//! notifications and the poll tick. It never claims more rows than it has free slots, claims
//! again at once while full batches come back, and backs off while the database is unreachable.
//!
//! Awake and idle: a claim that returns rows marks this sender awake in the database, and
//! publishers then skip `NOTIFY`, trusting it to look again soon. After rows it lingers
//! (`--linger-ms`): it looks every [`LINGER_LOOK`] with `stay_awake`, so that while events keep
//! coming nobody notifies and nothing waits for a wake-up; once the linger time has passed
//! without rows, a plain claim that finds nothing marks it idle, and publishers notify again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::{jittered, Backoff};
use crate::delivery::{AttemptResult, Delivery, DeliveryKey};
use crate::executor::Executor;
use crate::metrics::Metrics;
use crate::store::Store;

/// How often a lingering sender looks for new rows: one look starts this long after the last
/// one started, or at once when that took longer.
pub const LINGER_LOOK: Duration = Duration::from_millis(1);

/// A lingering look that found nothing while at least this many of the sender's requests were
/// in flight is followed by the next one once the completer has written results (at most
/// [`BUSY_LINGER_LOOK`] later): rows due then are mostly held back by the per-webhook in-flight
/// cap, which only written results free, and a look at them reads a window of the due rows, and
/// locks some, not one probe (BENCHMARKS.md, "Claims at the cap, continued" and "Looks after
/// written results"). Few requests in flight (a sender keeping up with its events) keep the
/// 1 ms looks.
pub const BUSY_IN_FLIGHT: usize = 16;

/// The longest wait for written results before the next look after an empty one with
/// [`BUSY_IN_FLIGHT`] requests in flight (other senders' results free the cap too).
pub const BUSY_LINGER_LOOK: Duration = Duration::from_millis(12);

/// What the worker needs to know.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Slots: requests in flight at most.
    pub concurrency: u32,
    /// Rows per claim at most.
    pub batch_size: u32,
    /// Request body bytes held at most (a single larger delivery is still claimed, alone).
    pub max_inflight_bytes: u64,
    /// Lease asked for on each claim.
    pub lease: Duration,
    /// Claim at least this often.
    pub poll_interval: Duration,
    /// Stay awake this long after the last claimed rows (zero: go idle at once).
    pub linger: Duration,
    /// How long in-flight requests may run on after a stop.
    pub shutdown_grace: Duration,
}

/// How one executor task ended.
enum TaskEnd {
    /// The attempt ran and its result went to the completer.
    Finished {
        webhook_id: i64,
        success: bool,
        duration: Duration,
    },
    /// Stopped before it finished; to be released.
    Unfinished(DeliveryKey),
}

/// When a lingering look follows the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextLook {
    /// This long after the last one started.
    After(Duration),
    /// Once the completer has written results since the last one started, and at most this
    /// long after it started.
    AfterWrite(Duration),
}

/// When the lingering look after one that claimed `claimed` rows starts, with `in_flight`
/// requests running.
fn linger_look(claimed: usize, in_flight: usize) -> NextLook {
    if claimed == 0 && in_flight >= BUSY_IN_FLIGHT {
        NextLook::AfterWrite(BUSY_LINGER_LOOK)
    } else {
        NextLook::After(LINGER_LOOK)
    }
}

/// Claims deliveries and runs them.
pub struct Worker {
    settings: WorkerSettings,
    store: Arc<Store>,
    executor: Executor,
    metrics: Metrics,
    wake: Arc<Notify>,
    results: mpsc::Sender<AttemptResult>,
    /// Counts the completer's writes of results.
    written: watch::Receiver<u64>,
    slots: Arc<Semaphore>,
    /// The byte budget: one permit per byte of the request bodies held by running tasks.
    bytes: Arc<Semaphore>,
    /// Its size in permits.
    budget: usize,
    /// The budget, not the slots, held the last claim back: claim again when a task ends.
    byte_bound: bool,
    tasks: JoinSet<TaskEnd>,
    running: HashMap<Id, DeliveryKey>,
    unfinished: Vec<DeliveryKey>,
}

impl Worker {
    /// A worker that sends results to `results`; `written` counts the completer's writes.
    pub fn new(
        settings: WorkerSettings,
        store: Arc<Store>,
        executor: Executor,
        metrics: Metrics,
        wake: Arc<Notify>,
        results: mpsc::Sender<AttemptResult>,
        written: watch::Receiver<u64>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.concurrency as usize));
        let budget = usize::try_from(settings.max_inflight_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let bytes = Arc::new(Semaphore::new(budget));
        Self {
            settings,
            store,
            executor,
            metrics,
            wake,
            results,
            written,
            slots,
            bytes,
            budget,
            byte_bound: false,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            unfinished: Vec::new(),
        }
    }

    /// Claims and sends until `stop`; then lets in-flight requests finish for the grace
    /// period, stops the rest (`hard_stop` ends the wait early), and returns the deliveries
    /// that must be released. Results already sent to the completer are not among them.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) -> Vec<DeliveryKey> {
        // Claim once at start, whatever notifications say.
        let mut want_claim = true;
        // Lingering: awake until then, looking again at `look_at`.
        let mut awake_until: Option<Instant> = None;
        let mut look_at: Option<Instant> = None;
        // ... or once the completer has written results since the last look began.
        let mut look_on_write = false;
        // Claim retries are cheap (one connect attempt each), so they stay frequent; a
        // notification (the LISTEN connection is up, so the database is too) cuts them short.
        let mut db_backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut retry_at: Option<Instant> = None;
        let poll = tokio::time::sleep(jittered(self.settings.poll_interval));
        tokio::pin!(poll);

        loop {
            if stop.is_cancelled() {
                break;
            }
            if self.reap_ready() && std::mem::take(&mut self.byte_bound) {
                want_claim = true;
            }
            let free = self.slots.available_permits();
            if want_claim && free > 0 && self.bytes.available_permits() == 0 {
                // the byte budget is used up: claim again once a task ends
                self.byte_bound = true;
            }
            let backing_off = retry_at.is_some_and(|t| t > Instant::now());
            if want_claim && free > 0 && self.bytes.available_permits() > 0 && !backing_off {
                look_at = None;
                look_on_write = false;
                // (results written from now on may have freed what this look passes over)
                self.written.borrow_and_update();
                let started = Instant::now();
                let stay_awake =
                    awake_until.is_some_and(|t| t > Instant::now()) && self.store.can_stay_awake();
                match self.claim(free, stay_awake, &stop, &hard_stop).await {
                    Ok((n, asked)) => {
                        let linger = self.settings.linger;
                        if n > 0 && !linger.is_zero() {
                            awake_until = Some(Instant::now() + linger);
                        }
                        if n > 0 && (n == asked || linger.is_zero()) {
                            // A full batch (or no lingering): there may be more at once.
                            want_claim = true;
                        } else if n > 0 || stay_awake {
                            // Awake in the database, so publishers do not notify: look again
                            // shortly. The first look after the linger time goes idle.
                            want_claim = false;
                            match linger_look(n, self.tasks.len()) {
                                NextLook::After(wait) => look_at = Some(started + wait),
                                NextLook::AfterWrite(at_most) => {
                                    look_at = Some(started + at_most);
                                    look_on_write = true;
                                }
                            }
                        } else {
                            // The queue is empty and this sender is now marked idle, so
                            // publishers notify again.
                            want_claim = false;
                            awake_until = None;
                        }
                        retry_at = None;
                        db_backoff.reset();
                    }
                    Err(e) => {
                        let delay = db_backoff.next_delay();
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "claim failed");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
                poll.as_mut()
                    .reset(Instant::now() + jittered(self.settings.poll_interval));
                continue;
            }

            let retry_sleep = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now));
            let look_sleep = tokio::time::sleep_until(look_at.unwrap_or_else(Instant::now));
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.reaped(joined);
                    if std::mem::take(&mut self.byte_bound) {
                        want_claim = true;
                    }
                }
                _ = self.wake.notified() => {
                    want_claim = true;
                    retry_at = None;
                }
                _ = look_sleep, if look_at.is_some() => {
                    look_at = None;
                    look_on_write = false;
                    want_claim = true;
                }
                Ok(()) = self.written.changed(), if look_on_write => {
                    look_at = None;
                    look_on_write = false;
                    want_claim = true;
                }
                _ = &mut poll => {
                    want_claim = true;
                    poll.as_mut().reset(Instant::now() + jittered(self.settings.poll_interval));
                }
                _ = retry_sleep, if want_claim && backing_off => {}
            }
        }

        self.drain(hard_stop).await
    }

    /// Claims up to `min(free, batch_size)` rows and starts one task per row. Returns how many
    /// rows came back and how many were asked for.
    async fn claim(
        &mut self,
        free: usize,
        stay_awake: bool,
        stop: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> crate::error::Result<(usize, usize)> {
        // Connecting may hang on an unreachable host: let a stop interrupt it. The claim
        // itself is not interrupted, since its rows must be run or released.
        tokio::select! {
            ready = self.store.ready() => ready?,
            _ = stop.cancelled() => return Ok((0, 0)),
        }
        let want = free.min(self.settings.batch_size as usize);
        let Ok(mut permits) = self.slots.clone().try_acquire_many_owned(want as u32) else {
            return Ok((0, want));
        };
        let max_bytes = self.bytes.available_permits();
        let rows = self
            .store
            .claim(
                want as u32,
                self.settings.lease,
                stay_awake,
                max_bytes as u64,
            )
            .await?;
        self.metrics.claim_batch_size.observe(rows.len() as f64);
        let n = rows.len();
        let total: usize = rows.iter().map(|d| d.body.len()).sum();
        if !rows.is_empty() {
            debug!(rows = n, asked = want, bytes = total, max_bytes, "claimed");
        }
        // The claim stopped at the budget rather than at the rows asked for (its bodies fill
        // more than half of what was left): claim again as soon as a task gives bytes back.
        self.byte_bound = n < want && total.saturating_mul(2) > max_bytes;
        for delivery in rows {
            // `want` permits were taken for at most `want` rows, so the split always succeeds.
            let permit = permits.split(1);
            // The bodies fit what was left, except a single delivery larger than all of it,
            // which takes all that is left while it runs.
            let share = delivery
                .body
                .len()
                .min(self.bytes.available_permits())
                .min(u32::MAX as usize) as u32;
            let bytes = self.bytes.clone().try_acquire_many_owned(share).ok();
            self.spawn(delivery, permit, bytes, hard_stop.clone());
        }
        self.show_bytes_held();
        Ok((n, want))
    }

    fn spawn(
        &mut self,
        delivery: Delivery,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        bytes: Option<tokio::sync::OwnedSemaphorePermit>,
        hard_stop: CancellationToken,
    ) {
        let key = delivery.key();
        let executor = self.executor.clone();
        let results = self.results.clone();
        let handle = self.tasks.spawn(async move {
            let _slot = permit;
            let _bytes = bytes;
            let webhook_id = delivery.webhook_id;
            tokio::select! {
                biased;
                _ = hard_stop.cancelled() => TaskEnd::Unfinished(key),
                result = executor.execute(delivery) => {
                    let success = result.is_success();
                    let duration = Duration::from_millis(result.duration_ms);
                    if success {
                        debug!(delivery_id = key.delivery_id, attempt = key.attempt_number, webhook_id,
                            status = result.status_code, duration_ms = result.duration_ms, "delivered");
                    } else {
                        info!(delivery_id = key.delivery_id, attempt = key.attempt_number, webhook_id,
                            status = result.status_code, error = result.error.as_deref().unwrap_or(""),
                            duration_ms = result.duration_ms, "attempt failed");
                    }
                    if results.send(result).await.is_err() {
                        error!(delivery_id = key.delivery_id, attempt = key.attempt_number,
                            "completer stopped; result lost, the delivery is retried when its lease expires");
                    }
                    TaskEnd::Finished { webhook_id, success, duration }
                }
            }
        });
        self.running.insert(handle.id(), key);
        self.metrics.in_flight.set(self.tasks.len() as i64);
    }

    /// Sets the gauge of the request body bytes running tasks hold.
    fn show_bytes_held(&self) {
        let held = self.budget.saturating_sub(self.bytes.available_permits());
        self.metrics.in_flight_bytes.set(held as i64);
    }

    /// Reaps the tasks that have ended; returns whether there were any.
    fn reap_ready(&mut self) -> bool {
        let mut any = false;
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.reaped(joined);
            any = true;
        }
        any
    }

    fn reaped(&mut self, joined: Result<(Id, TaskEnd), JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let key = self.running.remove(&id);
        match joined {
            Ok((
                _,
                TaskEnd::Finished {
                    webhook_id,
                    success,
                    duration,
                },
            )) => {
                let outcome = if success { "success" } else { "failure" };
                self.metrics.deliveries.with_label_values(&[outcome]).inc();
                self.metrics
                    .webhook_attempts
                    .with_label_values(&[&webhook_id.to_string(), outcome])
                    .inc();
                self.metrics
                    .attempt_duration
                    .observe(duration.as_secs_f64());
            }
            Ok((_, TaskEnd::Unfinished(key))) => self.unfinished.push(key),
            Err(e) => {
                // A panicking attempt is recorded as a failed attempt, not retried at once:
                // releasing it could loop.
                error!(error = %e, delivery = ?key, "attempt task failed");
                if let Some(key) = key {
                    let result = AttemptResult {
                        error: Some("internal error in the sender".to_owned()),
                        ..AttemptResult::for_lease(key)
                    };
                    if self.results.try_send(result).is_err() {
                        error!(delivery = ?key, "could not queue the result of a failed task");
                    }
                    self.metrics
                        .deliveries
                        .with_label_values(&["failure"])
                        .inc();
                }
            }
        }
        self.metrics.in_flight.set(self.tasks.len() as i64);
        self.show_bytes_held();
    }

    /// Waits for in-flight tasks up to the grace period, then stops the rest.
    async fn drain(mut self, hard_stop: CancellationToken) -> Vec<DeliveryKey> {
        if !self.tasks.is_empty() {
            info!(
                in_flight = self.tasks.len(),
                grace_secs = self.settings.shutdown_grace.as_secs(),
                "stopped claiming; waiting for in-flight requests"
            );
        }
        let grace = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(grace);
        let mut stopping = false;
        while !self.tasks.is_empty() {
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next_with_id() => self.reaped(joined),
                _ = &mut grace, if !stopping => {
                    warn!(in_flight = self.tasks.len(), "grace period over; stopping in-flight requests");
                    hard_stop.cancel();
                    stopping = true;
                }
                _ = hard_stop.cancelled(), if !stopping => {
                    warn!(in_flight = self.tasks.len(), "stopping in-flight requests now");
                    stopping = true;
                }
            }
        }
        self.metrics.in_flight.set(0);
        self.metrics
            .deliveries
            .with_label_values(&["released"])
            .inc_by(self.unfinished.len() as u64);
        std::mem::take(&mut self.unfinished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingering_looks_wait_for_written_results_only_when_empty_with_many_requests_in_flight() {
        let after_write = NextLook::AfterWrite(Duration::from_millis(12));
        let after_1ms = NextLook::After(Duration::from_millis(1));
        // nothing claimed, 16 or more in flight: rows held back by the cap, which written
        // results free; look again after the next write, or in 12 ms
        assert_eq!(linger_look(0, 16), after_write);
        assert_eq!(linger_look(0, 64), after_write);
        // rows claimed, or few in flight (a sender keeping up with its events): 1 ms
        assert_eq!(linger_look(1, 64), after_1ms);
        assert_eq!(linger_look(0, 15), after_1ms);
        assert_eq!(linger_look(0, 0), after_1ms);
    }
}
