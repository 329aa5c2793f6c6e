//! The admin HTTP server: `GET /metrics` (Prometheus text) and `GET /healthz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::health::Health;
use crate::metrics::Metrics;

/// What the admin endpoints report on.
pub struct AdminState {
    /// Served on /metrics.
    pub metrics: Metrics,
    /// Served on /healthz.
    pub health: Arc<Health>,
}

/// Serves `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => if let Err(e) = res { debug!(error = %e, "admin connection ended") },
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => match state.metrics.render() {
            Ok(text) => reply(StatusCode::OK, "text/plain; version=0.0.4", text),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/healthz" => match state.health.check() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        let metrics = match Metrics::new() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let state = Arc::new(AdminState {
            metrics,
            health: health.clone(),
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, stop.clone()));

        let res = get(addr, "/healthz").await;
        assert!(res.starts_with("HTTP/1.1 503"), "{res}");
        health.ok();
        let res = get(addr, "/healthz").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert!(res.ends_with("ok\n"), "{res}");
        let res = get(addr, "/metrics").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert!(res.contains("beema_hooks_sender_in_flight 0"), "{res}");
        let res = get(addr, "/nope").await;
        assert!(res.starts_with("HTTP/1.1 404"), "{res}");

        stop.cancel();
        let _ = server.await;
    }
}
