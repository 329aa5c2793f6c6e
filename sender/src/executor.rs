//! Sends one attempt: a POST with the row's headers and body, under the webhook's timeout,
//! redirects not followed, the response body read up to a cap.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{redirect, Client, StatusCode, Url};

use crate::delivery::{AttemptResult, Delivery};
use crate::error::{Error, Result};
use crate::retry_after;
use crate::ssrf::{self, GuardedResolver};

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("beema-hooks-sender/", env!("CARGO_PKG_VERSION"));

/// Timeout used when a row carries none (or a nonsensical one).
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The longest timeout honoured.
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;

const MAX_ERROR_CHARS: usize = 500;
const MAX_LOCATION_CHARS: usize = 300;

/// Runs attempts; cheap to clone, one connection pool for all.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    allow_private: bool,
    max_response_bytes: usize,
}

impl Executor {
    /// One pooled keep-alive client, no redirects, no proxies, DNS through the SSRF guard.
    pub fn new(allow_private: bool, max_response_bytes: usize) -> Result<Self> {
        let client = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(allow_private)))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            allow_private,
            max_response_bytes,
        })
    }

    /// Sends `delivery` once and describes what happened. Never fails: every problem is a
    /// failed attempt with an error message.
    pub async fn execute(&self, mut delivery: Delivery) -> AttemptResult {
        let started = Instant::now();
        // the body moves into the request: held once, not copied (README, "Memory")
        let body = std::mem::take(&mut delivery.body);
        let outcome = self.attempt(&delivery, body).await;
        AttemptResult {
            status_code: outcome.status_code,
            error: outcome.error.map(|e| clean(&e, MAX_ERROR_CHARS)),
            response_body: outcome.response_body,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            retry_after_ms: outcome.retry_after_ms,
            ..AttemptResult::for_lease(delivery.key())
        }
    }

    async fn attempt(&self, d: &Delivery, body: String) -> Outcome {
        let url = match self.target(&d.url) {
            Ok(url) => url,
            Err(e) => return Outcome::failed(e),
        };
        let headers = match header_map(&d.headers) {
            Ok(h) => h,
            Err(e) => return Outcome::failed(e),
        };
        let timeout_ms = timeout_ms(d.timeout_ms);
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(Duration::from_millis(timeout_ms))
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::failed(describe(&e, timeout_ms)),
        };
        let status = response.status();
        let retry_after_ms = if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
        {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after::parse(v, SystemTime::now()))
        } else {
            None
        };
        let error = if status.is_success() {
            None
        } else if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .map(|v| clean(&String::from_utf8_lossy(v.as_bytes()), MAX_LOCATION_CHARS))
                .unwrap_or_else(|| "(no location)".to_owned());
            Some(format!(
                "redirect {} to {location} not followed",
                status.as_u16()
            ))
        } else {
            Some(format!("HTTP {}", status.as_u16()))
        };
        let body = read_capped(response, self.max_response_bytes).await;
        Outcome {
            status_code: Some(status.as_u16()),
            error,
            response_body: Some(clean(&String::from_utf8_lossy(&body), usize::MAX)),
            retry_after_ms,
        }
    }

    /// Parses the url and applies the SSRF guard to IP literals (hostnames are checked by
    /// the resolver, at connect time).
    fn target(&self, raw: &str) -> std::result::Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| format!("invalid url: {e}"))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(format!("unsupported url scheme {other:?}")),
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                ssrf::check_ip(&ip.to_string(), ip.into(), self.allow_private)
                    .map_err(|e| refused(&e))?
            }
            Some(url::Host::Ipv6(ip)) => {
                ssrf::check_ip(&ip.to_string(), ip.into(), self.allow_private)
                    .map_err(|e| refused(&e))?
            }
            Some(url::Host::Domain(_)) => {}
            None => return Err("invalid url: no host".to_owned()),
        }
        Ok(url)
    }
}

struct Outcome {
    status_code: Option<u16>,
    error: Option<String>,
    response_body: Option<String>,
    retry_after_ms: Option<u64>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Self {
            status_code: None,
            error: Some(error),
            response_body: None,
            retry_after_ms: None,
        }
    }
}

/// The row's `headers` object as a header map. Header values may be secrets: errors name the
/// header, never its value.
fn header_map(json: &serde_json::Value) -> std::result::Result<HeaderMap, String> {
    let obj = match json {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => return Ok(HeaderMap::new()),
        _ => return Err("invalid headers: not a JSON object".to_owned()),
    };
    let mut map = HeaderMap::with_capacity(obj.len());
    for (name, value) in obj {
        let value = value
            .as_str()
            .ok_or_else(|| format!("invalid header {name:?}: value is not a string"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn timeout_ms(row: i32) -> u64 {
    match u64::try_from(row) {
        Ok(0) | Err(_) => DEFAULT_TIMEOUT_MS,
        Ok(ms) => ms.min(MAX_TIMEOUT_MS),
    }
}

/// Reads at most `cap` bytes of the body, chunk by chunk, and stops there: the rest is never
/// buffered. A body that fails midway keeps what arrived.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(cap - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    buf
}

/// What `hooks.attempts` and the delivery record when the SSRF guard refuses a target: the same
/// for every refused address (the details go to the sender's log).
pub const TARGET_REFUSED: &str =
    "target refused: it resolves to an address that is not public (the sender's log has the details)";

/// The recorded error for a target the SSRF guard refused ([`TARGET_REFUSED`]); the details
/// (the address a tenant's host resolved to, and what kind it is) go to the operator's log
/// only: the recorded error is visible to the tenant, and would map the sender's network.
fn refused(e: &Error) -> String {
    tracing::warn!("webhook target refused by the SSRF guard: {e}");
    TARGET_REFUSED.to_owned()
}

/// A short reason for a request that got no response. Never includes the url (it may hold a
/// token).
fn describe(e: &reqwest::Error, timeout_ms: u64) -> String {
    if e.is_timeout() {
        return format!("timeout after {timeout_ms} ms");
    }
    let mut source = e.source();
    let mut chain = Vec::new();
    while let Some(s) = source {
        if let Some(e @ Error::TargetRefused { .. }) = s.downcast_ref::<Error>() {
            return refused(e);
        }
        if let Some(Error::NoAddress(_)) = s.downcast_ref::<Error>() {
            return s.to_string();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => return format!("timeout after {timeout_ms} ms"),
                _ => {}
            }
        }
        let msg = s.to_string();
        // hyper's "client error (Connect)" wrapper says nothing the kind below does not.
        if !msg.starts_with("client error (") {
            chain.push(msg);
        }
        source = s.source();
    }
    // Drop wrappers that only repeat their cause.
    chain.dedup();
    let detail = chain.join(": ");
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_request() {
        "request failed"
    } else {
        "http error"
    };
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Postgres `jsonb` cannot hold NUL characters; cut overly long strings.
fn clean(s: &str, max_chars: usize) -> String {
    s.chars()
        .take(max_chars)
        .map(|c| if c == '\0' { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
