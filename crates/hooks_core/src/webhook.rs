//! Validation of a webhook's configuration: url, extra headers, pattern, retry policy, timeout.

use serde_json::Value;

use crate::error::json_type;
use crate::retry::RetryConfig;
use crate::Error;

/// Longest url accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Most extra headers a webhook may carry.
pub const MAX_HEADERS: usize = 50;
/// Longest extra header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Per-request timeout bounds, in milliseconds.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i32> = 100..=120_000;

/// Headers the delivery itself sets; a webhook's own `headers` may not override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "x-beema-signature",
    "x-beema-event",
    "x-beema-delivery",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "user-agent",
];

/// An absolute `http`/`https` url with a host and no credentials.
pub fn validate_url(url: &str) -> Result<(), Error> {
    if url.len() > MAX_URL_LEN {
        return Err(Error::invalid("url", format!("url is {} bytes long; the limit is {MAX_URL_LEN}", url.len())));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid("url", "url contains whitespace or control characters"));
    }
    // The url itself is never echoed: it may carry credentials or tokens.
    let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", format!("url is not an absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid("url", format!("url scheme {:?} is not allowed; use http or https", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid("url", "url has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::invalid("url", "url must not carry credentials; put them in headers instead"));
    }
    Ok(())
}

/// A JSON object of header name to string value, none of them reserved, no CR/LF anywhere.
pub fn validate_headers(headers: &Value) -> Result<(), Error> {
    let Value::Object(map) = headers else {
        return Err(Error::invalid("headers", format!("headers must be an object of strings, got {}", json_type(headers))));
    };
    if map.len() > MAX_HEADERS {
        return Err(Error::invalid("headers", format!("headers has {} entries; the limit is {MAX_HEADERS}", map.len())));
    }
    for (name, value) in map {
        let field = format!("headers.{name}");
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(Error::invalid(field, format!("header name {name:?} is not a valid HTTP token")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid(field, format!("header {name:?} is set by the delivery itself and cannot be overridden")));
        }
        let Value::String(v) = value else {
            return Err(Error::invalid(field, format!("header values must be strings, got {}", json_type(value))));
        };
        if v.len() > MAX_HEADER_VALUE_LEN {
            return Err(Error::invalid(field, format!("header value is {} bytes long; the limit is {MAX_HEADER_VALUE_LEN}", v.len())));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::invalid(field, "header value contains CR, LF or another control character"));
        }
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Validates `retry_config`, returning the parsed policy.
pub fn validate_retry_config(v: &Value) -> Result<RetryConfig, Error> {
    RetryConfig::parse(v)
}

/// A per-request timeout within [`TIMEOUT_MS_RANGE`].
pub fn validate_timeout_ms(ms: i32) -> Result<(), Error> {
    if TIMEOUT_MS_RANGE.contains(&ms) {
        Ok(())
    } else {
        Err(Error::invalid("timeout_ms", format!("timeout_ms is {ms}; it must be between {} and {}", TIMEOUT_MS_RANGE.start(), TIMEOUT_MS_RANGE.end())))
    }
}

/// A secret given by the user: 8..=512 bytes, and a `whsec_` secret must decode.
pub fn validate_secret(secret: &str) -> Result<(), Error> {
    if !(8..=512).contains(&secret.len()) {
        return Err(Error::invalid("secret", "secret must be between 8 and 512 bytes long"));
    }
    if !crate::sign::secret_is_decodable(secret) {
        return Err(Error::invalid("secret", "secret starts with whsec_ but the rest is not valid base64"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls() {
        for ok in ["https://example.com/hooks", "http://127.0.0.1:8080/x?y=1", "https://[::1]/"] {
            validate_url(ok).unwrap();
        }
        for bad in ["ftp://example.com/", "/relative/path", "javascript:alert(1)", "https://user:pw@example.com/", "https://", "example.com", "", "mailto:a@b.c", "https://a.example/x\r\nX-Evil: 1", "https://a.exa mple/"] {
            let err = validate_url(bad).unwrap_err();
            assert_eq!(err.field, "url", "{bad}");
            assert!(bad.len() < 10 || !err.message.contains(bad), "echoes the url: {err}");
        }
    }

    #[test]
    fn headers() {
        validate_headers(&json!({})).unwrap();
        validate_headers(&json!({"Authorization": "Bearer x", "X-Tenant": "a"})).unwrap();
        for bad in [
            json!([]),
            json!("x"),
            json!({"X-A": 1}),
            json!({"X-A": "a\r\nX-Evil: 1"}),
            json!({"X-A": "a\nb"}),
            json!({"Bad Name": "x"}),
            json!({"": "x"}),
            json!({"X-Beema-Signature": "sha256=00"}),
            json!({"webhook-signature": "v1,x"}),
            json!({"Content-Type": "text/plain"}),
        ] {
            assert!(validate_headers(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_and_timeouts() {
        validate_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        validate_secret("a plain shared secret").unwrap();
        assert!(validate_secret("short").is_err());
        assert!(validate_secret("whsec_!!!!!!!!").is_err());
        validate_timeout_ms(10_000).unwrap();
        assert!(validate_timeout_ms(0).is_err());
        assert!(validate_timeout_ms(1_000_000).is_err());
    }
}
