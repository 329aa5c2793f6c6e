//! Database health as seen by every round trip, for `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Healthy when the latest database round trip (from any connection) succeeded and one
/// succeeded within the window.
pub struct Health {
    started: Instant,
    window: Duration,
    seq: AtomicU64,
    last_ok_seq: AtomicU64,
    last_err_seq: AtomicU64,
    last_ok_ms: AtomicU64,
    last_error: Mutex<String>,
    recovered: Notify,
}

impl Health {
    /// A tracker that calls the database stale after `window` without a successful round trip.
    pub fn new(window: Duration) -> Self {
        Self {
            started: Instant::now(),
            window,
            seq: AtomicU64::new(0),
            last_ok_seq: AtomicU64::new(0),
            last_err_seq: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            last_error: Mutex::new("no database round trip yet".to_owned()),
            recovered: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a successful round trip.
    pub fn ok(&self) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.last_ok_ms.store(self.now_ms(), Ordering::SeqCst);
        let previous_ok = self.last_ok_seq.fetch_max(seq, Ordering::SeqCst);
        if self.last_err_seq.load(Ordering::SeqCst) > previous_ok {
            self.recovered.notify_waiters();
        }
    }

    /// Resolves at the next success that follows a failure: the database is back, so
    /// whoever is backing off may stop waiting.
    pub async fn recovered(&self) {
        self.recovered.notified().await;
    }

    /// Records a failed round trip.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.last_err_seq.fetch_max(seq, Ordering::SeqCst);
        if let Ok(mut last) = self.last_error.lock() {
            *last = error.to_string();
        }
    }

    /// `Ok(())` when healthy, else why not.
    pub fn check(&self) -> Result<(), String> {
        let ok_seq = self.last_ok_seq.load(Ordering::SeqCst);
        let err_seq = self.last_err_seq.load(Ordering::SeqCst);
        let last_error = || {
            self.last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default()
        };
        if ok_seq == 0 || err_seq > ok_seq {
            return Err(format!("database unreachable: {}", last_error()));
        }
        let age = self
            .now_ms()
            .saturating_sub(self.last_ok_ms.load(Ordering::SeqCst));
        if u128::from(age) > self.window.as_millis() {
            return Err(format!("no successful database round trip for {age} ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_latest_round_trip() {
        let h = Health::new(Duration::from_secs(60));
        assert!(h.check().is_err());
        h.ok();
        assert!(h.check().is_ok());
        h.failed(&"connection refused");
        assert_eq!(
            h.check(),
            Err("database unreachable: connection refused".to_owned())
        );
        h.ok();
        assert!(h.check().is_ok());
    }

    #[test]
    fn goes_stale() {
        let h = Health::new(Duration::from_millis(0));
        h.ok();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.check().is_err());
    }

    #[tokio::test]
    async fn signals_recovery_after_a_failure() {
        let h = std::sync::Arc::new(Health::new(Duration::from_secs(60)));
        h.ok();
        h.failed(&"down");
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.recovered().await })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.ok();
        let woke = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert!(matches!(woke, Ok(Ok(()))));
    }
}
