//! The fast loopback receiver: HTTP/1.1 keep-alive, answers `200 ok` at once (or after
//! `?delay_ms=N`), counts requests, and records commit-to-receipt latency for bodies that carry
//! `"commitTs": <unix microseconds>`.
//!
//! Control endpoints (not counted): `GET /_stats` returns
//! `{"count":N,"latency":{"n":..,"p50_us":..,"p90_us":..,"p99_us":..,"max_us":..}}`,
//! `POST /_reset` clears the count and the samples.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    count: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    /// (commitTs, seq) seen: a repeated receipt (a retry of a delivery that did arrive) is
    /// counted as a duplicate, not as a latency sample.
    seen: Mutex<std::collections::HashSet<(u64, u64)>>,
    duplicates: AtomicU64,
}

/// Microseconds since the Unix epoch, from the same clock Postgres' `clock_timestamp()` reads.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The value of `"commitTs":<digits>` in a body, without parsing the whole JSON.
pub fn commit_ts(body: &[u8]) -> Option<u64> {
    json_u64(body, b"\"commitTs\"")
}

/// The unsigned number after the first `key` (with its quotes) in a body.
pub fn json_u64(body: &[u8], key: &[u8]) -> Option<u64> {
    let pos = body.windows(key.len()).position(|w| w == key)?;
    let rest = &body[pos + key.len()..];
    let rest = &rest[rest.iter().position(|&c| c != b' ' && c != b':')?..];
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let digits: &[u8] = &rest[..rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Percentile (nearest rank) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn delay_of(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/_stats") => {
            let mut v = st.latencies_us.lock().unwrap().clone();
            v.sort_unstable();
            let over_500ms = v.iter().filter(|&&x| x > 500_000).count();
            let body = serde_json::json!({
                "count": st.count.load(Ordering::Relaxed),
                "duplicates": st.duplicates.load(Ordering::Relaxed),
                "latency": {
                    "over_500ms": over_500ms,
                    "n": v.len(),
                    "p50_us": percentile(&v, 0.50),
                    "p90_us": percentile(&v, 0.90),
                    "p99_us": percentile(&v, 0.99),
                    "max_us": v.last().copied().unwrap_or(0),
                }
            });
            Ok(text(StatusCode::OK, body.to_string()))
        }
        (&Method::POST, "/_reset") => {
            st.count.store(0, Ordering::Relaxed);
            st.duplicates.store(0, Ordering::Relaxed);
            st.latencies_us.lock().unwrap().clear();
            st.seen.lock().unwrap().clear();
            Ok(text(StatusCode::OK, "reset"))
        }
        _ => {
            let delay = delay_of(req.uri().query());
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "bad body")),
            };
            // Receipt = the whole body is here.
            if let Some(ts) = commit_ts(&body) {
                let lat = now_us().saturating_sub(ts);
                let seq = json_u64(&body, b"\"seq\"").unwrap_or(0);
                if st.seen.lock().unwrap().insert((ts, seq)) {
                    st.latencies_us.lock().unwrap().push(lat);
                } else {
                    st.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            st.count.fetch_add(1, Ordering::Relaxed);
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Ok(text(StatusCode::OK, "ok"))
        }
    }
}

/// Serves on `addr` forever; calls `ready` with the bound address first.
pub async fn serve(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    ready(listener.local_addr()?);
    let st = Arc::new(State::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of file descriptors or similar: don't spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, st.clone()));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_commit_ts() {
        assert_eq!(
            commit_ts(br#"{"data":{"commitTs":1700000000123456,"x":1}}"#),
            Some(1700000000123456)
        );
        assert_eq!(commit_ts(br#"{"data":{"commitTs": "42"}}"#), Some(42));
        assert_eq!(commit_ts(br#"{"data":{}}"#), None);
        assert_eq!(
            json_u64(br#"{"data":{"seq":7,"commitTs":9}}"#, b"\"seq\""),
            Some(7)
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn delays() {
        assert_eq!(
            delay_of(Some("a=1&delay_ms=20")),
            Some(Duration::from_millis(20))
        );
        assert_eq!(delay_of(Some("delay_ms=0")), None);
        assert_eq!(delay_of(None), None);
    }
}
