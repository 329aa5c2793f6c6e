//! A webhook's retry policy (`retry_config`) and the delay before its next attempt.

use serde_json::Value;

use crate::error::json_type;
use crate::Error;

/// Upper bound on a receiver's `Retry-After` that is honoured: one day.
pub const MAX_RETRY_AFTER_MS: i64 = 24 * 3600 * 1000;

/// How the delay grows from one retry to the next (`retry_config.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// `backoffMs × 2^(n−1)` before retry n (the default, and the only one before 0.3.0).
    #[default]
    Exponential,
    /// `backoffMs × n` before retry n.
    Linear,
    /// `backoffMs` before every retry.
    Fixed,
}

impl Strategy {
    /// The names `retry_config.strategy` accepts, in this order.
    pub const NAMES: [&'static str; 3] = ["exponential", "linear", "fixed"];

    /// The strategy a `retry_config.strategy` value names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exponential" => Some(Self::Exponential),
            "linear" => Some(Self::Linear),
            "fixed" => Some(Self::Fixed),
            _ => None,
        }
    }
}

/// The parsed `retry_config`:
/// `{"maxAttempts":3,"backoffMs":1000,"maxBackoffMs":3600000,"strategy":"exponential","jitter":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1..=100; default 3).
    pub max_attempts: i32,
    /// Delay before the first retry (0..=86,400,000; default 1000); later retries wait as the
    /// strategy says.
    pub backoff_ms: i64,
    /// Cap on the delay (backoffMs..=604,800,000; default 3,600,000 = 1 hour).
    pub max_backoff_ms: i64,
    /// How the delay grows (default exponential).
    pub strategy: Strategy,
    /// Scale each delay by a random factor in [0.8, 1.2) (default true), so that deliveries that
    /// failed together do not all come back at the same moment.
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: 3, backoff_ms: 1000, max_backoff_ms: 3_600_000, strategy: Strategy::Exponential, jitter: true }
    }
}

fn int_field(field: &str, v: &Value, lo: i64, hi: i64) -> Result<i64, Error> {
    match v.as_i64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(field, format!("{field} is {n}; it must be between {lo} and {hi}"))),
        None => Err(Error::invalid(field, format!("{field} must be an integer, got {}", json_type(v)))),
    }
}

impl RetryConfig {
    /// Parses and bounds-checks a `retry_config` value. Missing keys take their defaults;
    /// unknown keys are refused so that a typo cannot silently mean "default".
    pub fn parse(v: &Value) -> Result<Self, Error> {
        let Value::Object(obj) = v else {
            return Err(Error::invalid("retry_config", format!("retry_config must be an object, got {}", json_type(v))));
        };
        let mut cfg = Self::default();
        for (k, val) in obj {
            match k.as_str() {
                "maxAttempts" => cfg.max_attempts = int_field("retry_config.maxAttempts", val, 1, 100)? as i32,
                "backoffMs" => cfg.backoff_ms = int_field("retry_config.backoffMs", val, 0, 86_400_000)?,
                "maxBackoffMs" => cfg.max_backoff_ms = int_field("retry_config.maxBackoffMs", val, 0, 604_800_000)?,
                "strategy" => {
                    cfg.strategy = val.as_str().and_then(Strategy::from_name).ok_or_else(|| {
                        Error::invalid(
                            "retry_config.strategy",
                            format!("retry_config.strategy must be one of {}, got {val}", Strategy::NAMES.join(", ")),
                        )
                    })?
                }
                "jitter" => {
                    cfg.jitter = val.as_bool().ok_or_else(|| {
                        Error::invalid("retry_config.jitter", format!("retry_config.jitter must be true or false, got {}", json_type(val)))
                    })?
                }
                other => return Err(Error::invalid(
                    "retry_config",
                    format!(
                        "retry_config has the unknown key {other:?}; known keys are maxAttempts, backoffMs, maxBackoffMs, strategy, jitter"
                    ),
                )),
            }
        }
        if cfg.max_backoff_ms < cfg.backoff_ms {
            if obj.contains_key("maxBackoffMs") {
                return Err(Error::invalid("retry_config.maxBackoffMs", "maxBackoffMs must not be smaller than backoffMs"));
            }
            cfg.max_backoff_ms = cfg.backoff_ms;
        }
        Ok(cfg)
    }

    /// Milliseconds to wait after failed attempt number `attempt` (1-based) before the next:
    /// `backoffMs × 2^(attempt−1)` (exponential), `backoffMs × attempt` (linear) or `backoffMs`
    /// (fixed); with jitter on, scaled by a factor in [0.8, 1.2) taken from `jitter` (a uniform
    /// random number in [0, 1)); capped at `maxBackoffMs`. A receiver's `Retry-After` (clamped to
    /// [`MAX_RETRY_AFTER_MS`]) is honoured when it asks for longer.
    pub fn delay_ms(&self, attempt: i32, retry_after_ms: Option<i64>, jitter: f64) -> i64 {
        let n = attempt.max(1) as i64;
        let base = match self.strategy {
            Strategy::Exponential => self.backoff_ms.saturating_mul(1i64 << (n - 1).min(40)),
            Strategy::Linear => self.backoff_ms.saturating_mul(n),
            Strategy::Fixed => self.backoff_ms,
        } as f64;
        let factor = if !self.jitter {
            1.0
        } else if jitter.is_finite() {
            0.8 + 0.4 * jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let delay = ((base * factor) as i64).min(self.max_backoff_ms).max(0);
        match retry_after_ms {
            Some(ra) => delay.max(ra.clamp(0, MAX_RETRY_AFTER_MS)),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_seed_shape() {
        assert_eq!(RetryConfig::parse(&json!({})).unwrap(), RetryConfig::default());
        let c = RetryConfig::parse(&json!({"maxAttempts": 5, "backoffMs": 200})).unwrap();
        assert_eq!((c.max_attempts, c.backoff_ms, c.max_backoff_ms), (5, 200, 3_600_000));
    }

    #[test]
    fn rejects_out_of_bounds() {
        for bad in [
            json!([]),
            json!({"maxAttempts": 0}),
            json!({"maxAttempts": -3}),
            json!({"maxAttempts": 1000}),
            json!({"maxAttempts": "3"}),
            json!({"backoffMs": -1}),
            json!({"backoffMs": 1.5}),
            json!({"backoffMs": 1e12}),
            json!({"backoffMs": 5000, "maxBackoffMs": 10}),
            json!({"maxAtempts": 3}),
        ] {
            assert!(RetryConfig::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exponential_capped_jittered() {
        let c = RetryConfig { max_attempts: 10, backoff_ms: 1000, max_backoff_ms: 10_000, ..RetryConfig::default() };
        assert_eq!(c.delay_ms(1, None, 0.5), 1000);
        assert_eq!(c.delay_ms(2, None, 0.5), 2000);
        assert_eq!(c.delay_ms(3, None, 0.5), 4000);
        assert_eq!(c.delay_ms(9, None, 0.5), 10_000);
        assert_eq!(c.delay_ms(1, None, 0.0), 800);
        assert_eq!(c.delay_ms(1, None, 0.999_999), 1199);
        assert_eq!(c.delay_ms(1000, None, 0.5), 10_000);
    }

    #[test]
    fn linear_and_fixed_schedules() {
        let linear = RetryConfig::parse(&json!({"backoffMs": 500, "maxBackoffMs": 2000, "strategy": "linear"})).unwrap();
        let delays: Vec<i64> = (1..=6).map(|n| linear.delay_ms(n, None, 0.5)).collect();
        assert_eq!(delays, [500, 1000, 1500, 2000, 2000, 2000]);
        assert_eq!(linear.delay_ms(1, None, 0.0), 400);
        let fixed = RetryConfig::parse(&json!({"backoffMs": 750, "strategy": "fixed", "jitter": false})).unwrap();
        for (n, jitter) in [(1, 0.0), (2, 0.99), (50, 0.3), (1000, 0.5)] {
            assert_eq!(fixed.delay_ms(n, None, jitter), 750);
        }
        assert_eq!(fixed.delay_ms(3, Some(5000), 0.1), 5000);
        let exact = RetryConfig::parse(&json!({"backoffMs": 1000, "jitter": false})).unwrap();
        assert_eq!((1..=4).map(|n| exact.delay_ms(n, None, 0.0)).collect::<Vec<_>>(), [1000, 2000, 4000, 8000]);
        assert_eq!(RetryConfig::parse(&json!({"strategy": "exponential"})).unwrap(), RetryConfig::default());
    }

    #[test]
    fn rejects_unknown_strategies_and_non_boolean_jitter() {
        for bad in [
            json!({"strategy": "random"}),
            json!({"strategy": 1}),
            json!({"strategy": "Linear"}),
            json!({"jitter": "no"}),
            json!({"jitter": 0}),
        ] {
            let err = RetryConfig::parse(&bad).unwrap_err();
            assert!(err.to_string().contains("retry_config."), "{bad}: {err}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_bounded() {
        let c = RetryConfig::default();
        assert_eq!(c.delay_ms(1, Some(30_000), 0.5), 30_000);
        assert_eq!(c.delay_ms(1, Some(10), 0.5), 1000);
        assert_eq!(c.delay_ms(1, Some(i64::MAX), 0.5), MAX_RETRY_AFTER_MS);
    }
}
