//! Exponential backoff with jitter for reconnecting to the database. (The retry schedule of a
//! delivery is the extension's business, not this.)

use std::time::Duration;

use rand::Rng;

/// Doubles from `base` up to `cap`; each delay is drawn from the upper half of the current step.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The schedule for database reconnects: 250 ms doubling to 30 s.
    pub fn database() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `d` scaled by a random factor in [0.9, 1.1], so that senders started together drift apart.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?}"
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100));
        }
    }
}
