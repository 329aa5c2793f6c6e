//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, in milliseconds from now,
//! bounded to one day.

use std::time::SystemTime;

/// The longest wait a receiver can ask for.
pub const MAX_RETRY_AFTER_MS: u64 = hooks_core::contract::MAX_RETRY_AFTER_MS as u64;

/// Parses a `Retry-After` value relative to `now`. `None` when it is neither form. A date in
/// the past means "now" (0); anything beyond a day is cut to a day.
pub fn parse(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let ms = at
        .duration_since(now)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("0", now()), Some(0));
        assert_eq!(parse("120", now()), Some(120_000));
        assert_eq!(parse(" 5 ", now()), Some(5_000));
        assert_eq!(parse("86400", now()), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(parse("86401", now()), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(
            parse("99999999999999999999999", now()),
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now()), Some(0));
        assert_eq!(parse("Sun, 06 Nov 1994 08:50:07 GMT", now()), Some(30_000));
        // Obsolete forms are accepted too.
        assert_eq!(parse("Sunday, 06-Nov-94 08:50:07 GMT", now()), Some(30_000));
        assert_eq!(parse("Sun Nov  6 08:50:07 1994", now()), Some(30_000));
        // In the past: retry now.
        assert_eq!(parse("Sat, 05 Nov 1994 08:49:37 GMT", now()), Some(0));
        // Far future: a day.
        assert_eq!(
            parse("Fri, 01 Jan 2100 00:00:00 GMT", now()),
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for v in [
            "",
            "  ",
            "-5",
            "1.5",
            "soon",
            "5s",
            "Sun, 99 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(v, now()), None, "{v:?}");
        }
    }
}
