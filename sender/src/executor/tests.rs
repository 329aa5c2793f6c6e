//! Executor tests against in-process servers on 127.0.0.1 only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

/// What the test server does after reading a request.
#[derive(Clone)]
enum Reply {
    /// Write these bytes and close.
    Raw(&'static str),
    /// Claim a huge body and stream it.
    Huge(usize),
    /// Never answer.
    Hang,
}

/// A one-shot-per-connection HTTP server on 127.0.0.1 that reports each raw request.
async fn server(reply: Reply) -> (String, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let reply = reply.clone();
            tokio::spawn(async move { serve(stream, reply, tx).await });
        }
    });
    (format!("127.0.0.1:{port}"), rx)
}

async fn serve(mut stream: TcpStream, reply: Reply, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head, then as much body as Content-Length says.
    let head_end = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while req.len() < head_end + len {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = tx.send(req);
    match reply {
        Reply::Raw(s) => {
            let _ = stream.write_all(s.as_bytes()).await;
        }
        Reply::Huge(n) => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < n {
                let k = chunk.len().min(n - sent);
                if stream.write_all(&chunk[..k]).await.is_err() {
                    return; // the client stopped reading, as it should
                }
                sent += k;
            }
        }
        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
    }
}

fn delivery(url: String) -> Delivery {
    Delivery {
        delivery_id: 17,
        attempt_number: 2,
        lease_token: Some(41),
        delivery_uuid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        webhook_id: 3,
        event_type: "policy/bound".into(),
        url,
        headers: serde_json::json!({
            "Content-Type": "application/json",
            "X-Beema-Signature": "sha256=abc",
            "X-Beema-Event": "policy/bound",
            "webhook-id": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "X-Custom": "yes"
        }),
        body: r#"{"event":"policy/bound","data":{"tenantId":"t1","é":"ü"}}"#.into(),
        timeout_ms: 5000,
    }
}

fn executor(allow_private: bool) -> Executor {
    match Executor::new(allow_private, 65_536) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn sends_the_rows_headers_and_exact_body() {
    let (addr, mut requests) =
        server(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let d = delivery(format!("http://{addr}/hook?x=1"));
    let body = d.body.clone();
    let r = executor(true).execute(d).await;
    assert_eq!(r.status_code, Some(200));
    assert_eq!(r.error, None);
    assert_eq!(r.response_body.as_deref(), Some("ok"));
    assert_eq!(
        (r.delivery_id, r.attempt_number, r.lease_token),
        (17, 2, Some(41))
    );
    assert!(r.is_success());
    let req = requests.recv().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&req);
    assert!(text.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{text}");
    let lower = text.to_lowercase();
    for h in [
        "content-type: application/json\r\n",
        "x-beema-signature: sha256=abc\r\n",
        "x-beema-event: policy/bound\r\n",
        "webhook-id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n",
        "x-custom: yes\r\n",
        &format!(
            "user-agent: beema-hooks-sender/{}\r\n",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(lower.contains(h), "{h} missing from {text}");
    }
    assert!(req.ends_with(body.as_bytes()), "body altered: {text}");
}

#[tokio::test]
async fn caps_the_response_body() {
    let (addr, _requests) = server(Reply::Huge(10 * 1024 * 1024)).await;
    let ex = match Executor::new(true, 65_536) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let r = ex.execute(delivery(format!("http://{addr}/"))).await;
    assert_eq!(r.status_code, Some(200));
    assert_eq!(r.error, None);
    assert_eq!(r.response_body.map(|b| b.len()), Some(65_536));

    let small = match Executor::new(true, 10) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let r = small.execute(delivery(format!("http://{addr}/"))).await;
    assert_eq!(r.response_body.as_deref(), Some("xxxxxxxxxx"));
}

#[tokio::test]
async fn non_2xx_is_a_failure_with_retry_after() {
    let (addr, _r) = server(Reply::Raw(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 4\r\n\r\nbusy",
    ))
    .await;
    let r = executor(true)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.status_code, Some(503));
    assert_eq!(r.error.as_deref(), Some("HTTP 503"));
    assert_eq!(r.retry_after_ms, Some(7000));
    assert_eq!(r.response_body.as_deref(), Some("busy"));
    assert!(!r.is_success());

    let (addr, _r) = server(Reply::Raw(
        "HTTP/1.1 500 Internal Server Error\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let r = executor(true)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.error.as_deref(), Some("HTTP 500"));
    assert_eq!(r.retry_after_ms, None, "Retry-After only counts on 429/503");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (addr, mut requests) = server(Reply::Raw(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let r = executor(true)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.status_code, Some(302));
    assert_eq!(
        r.error.as_deref(),
        Some("redirect 302 to http://127.0.0.1:1/elsewhere not followed")
    );
    assert!(requests.recv().await.is_some());
    assert!(requests.try_recv().is_err(), "the redirect was followed");
}

#[tokio::test]
async fn timeout_is_reported_with_the_rows_timeout() {
    let (addr, _r) = server(Reply::Hang).await;
    let mut d = delivery(format!("http://{addr}/"));
    d.timeout_ms = 200;
    let r = executor(true).execute(d).await;
    assert_eq!(r.status_code, None);
    assert_eq!(r.error.as_deref(), Some("timeout after 200 ms"));
    assert!(
        r.duration_ms >= 200 && r.duration_ms < 5000,
        "{}",
        r.duration_ms
    );
}

#[tokio::test]
async fn connection_refused() {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    drop(listener);
    let r = executor(true)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.status_code, None);
    assert_eq!(r.error.as_deref(), Some("connection refused"));
}

#[tokio::test]
async fn private_ip_literal_is_refused_before_connecting() {
    let (addr, mut requests) =
        server(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let r = executor(false)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.status_code, None);
    // the tenant-visible error names no address (the log has it)
    assert_eq!(r.error.as_deref(), Some(TARGET_REFUSED));
    let port = addr.rsplit(':').next().unwrap_or_default();
    let r = executor(false)
        .execute(delivery(format!("http://[::ffff:127.0.0.1]:{port}/")))
        .await;
    assert_eq!(r.error.as_deref(), Some(TARGET_REFUSED));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        requests.try_recv().is_err(),
        "a refused target was contacted"
    );
}

#[tokio::test]
async fn private_hostname_is_refused_by_the_resolver() {
    let (addr, mut requests) =
        server(Reply::Raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let port = addr.rsplit(':').next().unwrap_or_default();
    let r = executor(false)
        .execute(delivery(format!("http://localhost:{port}/")))
        .await;
    assert_eq!(r.status_code, None);
    let err = r.error.unwrap_or_default();
    assert_eq!(err, TARGET_REFUSED, "what localhost resolved to is not told");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        requests.try_recv().is_err(),
        "a refused target was contacted"
    );

    // Allowed explicitly: the same name goes through.
    let r = executor(true)
        .execute(delivery(format!("http://localhost:{port}/")))
        .await;
    assert_eq!(r.error, None, "{:?}", r.error);
}

#[tokio::test]
async fn bad_rows_are_failed_attempts() {
    let mut d = delivery("ftp://example.com/x".into());
    let r = executor(false).execute(d.clone()).await;
    assert_eq!(r.error.as_deref(), Some("unsupported url scheme \"ftp\""));
    d.url = "not a url".into();
    let r = executor(false).execute(d.clone()).await;
    assert!(r.error.unwrap_or_default().starts_with("invalid url"));
    d.url = "http://127.0.0.1:1/".into();
    d.headers = serde_json::json!({"X-Secret": "line\nbreak"});
    let r = executor(true).execute(d.clone()).await;
    assert_eq!(
        r.error.as_deref(),
        Some("invalid value for header x-secret")
    );
    d.headers = serde_json::json!({"X-Num": 5});
    let r = executor(true).execute(d).await;
    assert_eq!(
        r.error.as_deref(),
        Some("invalid header \"X-Num\": value is not a string")
    );
}

#[tokio::test]
async fn nul_bytes_never_reach_jsonb() {
    let (addr, _r) = server(Reply::Raw(
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\na\0b",
    ))
    .await;
    let r = executor(true)
        .execute(delivery(format!("http://{addr}/")))
        .await;
    assert_eq!(r.response_body.as_deref(), Some("a\u{fffd}b"));
}

#[test]
fn timeouts_are_bounded() {
    assert_eq!(timeout_ms(0), DEFAULT_TIMEOUT_MS);
    assert_eq!(timeout_ms(-5), DEFAULT_TIMEOUT_MS);
    assert_eq!(timeout_ms(250), 250);
    assert_eq!(timeout_ms(i32::MAX), MAX_TIMEOUT_MS);
}

#[tokio::test]
async fn tls_failure_is_a_connection_error_without_the_url() {
    // A plain-HTTP server spoken to over https: it answers the ClientHello with plain text.
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let r = executor(true)
        .execute(delivery(format!("https://{addr}/secret-token-path")))
        .await;
    assert_eq!(r.status_code, None);
    let err = r.error.unwrap_or_default();
    assert!(err.starts_with("connection failed: "), "{err}");
    assert!(!err.contains("secret-token-path"), "{err}");
}
