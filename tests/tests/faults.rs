//! Receiver faults with the real sender: retry to success, exhaustion to `failed` with the
//! attempt log complete, 410 disables the webhook, Retry-After is honoured, a timeout is
//! recorded, and a loopback target is refused without --allow-private-targets.

use std::time::Duration;

use beema_hooks_e2e::{wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook};
use serde_json::json;

type AttemptRow = (
    i32,
    String,
    Option<i32>,
    Option<String>,
    Option<i32>,
    Option<String>,
);

/// (attempt_number, outcome, status_code, error_message, duration_ms, sender_id) in order.
async fn attempts(db: &TestDb) -> Vec<AttemptRow> {
    db.client()
        .query(
            "SELECT attempt_number, outcome, status_code, error_message, duration_ms, sender_id
               FROM hooks.attempts ORDER BY attempt_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

async fn delivery(db: &TestDb) -> (String, i32, Option<i32>, Option<String>) {
    let r = db
        .client()
        .query_one(
            "SELECT status, attempt_number, status_code, error_message FROM hooks.deliveries",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// 500, 500, then 200: three attempts of the same delivery (same webhook-id, each signed), and
/// the delivery ends `success` with a complete attempt log.
#[tokio::test]
async fn retries_until_success() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.program(
        "/flaky",
        vec![Reply::status(500), Reply::status(500)],
        Reply::ok(),
    );
    let (_, secret) = db
        .register(&Webhook::new("flaky", "acme", "*", &rx.url("/flaky")).retry(5, 100))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        "SELECT status = 'success' FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    let (status, attempt, code, err) = delivery(&db).await;
    assert_eq!(
        (status.as_str(), attempt, code, err),
        ("success", 3, Some(200), None)
    );

    let reqs = rx.requests_to("/flaky");
    assert_eq!(reqs.len(), 3, "two failures and the success");
    let id = reqs[0].webhook_id();
    assert!(!id.is_empty());
    for r in &reqs {
        assert_eq!(r.webhook_id(), id, "webhook-id is stable across retries");
        r.verify(&secret).unwrap();
    }
    let log = attempts(&db).await;
    let summary: Vec<(i32, &str, Option<i32>)> =
        log.iter().map(|a| (a.0, a.1.as_str(), a.2)).collect();
    assert_eq!(
        summary,
        vec![
            (1, "failure", Some(500)),
            (2, "failure", Some(500)),
            (3, "success", Some(200))
        ]
    );
    assert_eq!(log[0].3.as_deref(), Some("HTTP 500"));
    assert!(
        log.iter()
            .all(|a| a.5.as_deref() == Some(sender.sender_id.as_str())),
        "sender id recorded: {log:?}"
    );
    assert!(
        log.iter().all(|a| a.4.is_some()),
        "durations recorded: {log:?}"
    );
    drop(sender);
    db.cleanup().await;
}

/// Always 500: after maxAttempts (3) the delivery is `failed`, the attempt log has exactly 3
/// failures, and nothing more is sent.
#[tokio::test]
async fn exhaustion_ends_failed_with_the_attempt_log_complete() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/down", Reply::status(500));
    db.register(&Webhook::new("down", "acme", "*", &rx.url("/down")).retry(3, 100))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        "SELECT status = 'failed' FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    let (status, attempt, code, err) = delivery(&db).await;
    assert_eq!(
        (status.as_str(), attempt, code, err.as_deref()),
        ("failed", 3, Some(500), Some("HTTP 500"))
    );
    let log = attempts(&db).await;
    let summary: Vec<(i32, &str, Option<i32>)> =
        log.iter().map(|a| (a.0, a.1.as_str(), a.2)).collect();
    assert_eq!(
        summary,
        vec![
            (1, "failure", Some(500)),
            (2, "failure", Some(500)),
            (3, "failure", Some(500))
        ]
    );
    // No fourth attempt.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests_to("/down").len(), 3);
    assert_eq!(db.count("hooks.attempts").await, 3);
    // Still queryable for the DBA.
    assert_eq!(
        db.count("hooks.delivery_log WHERE status = 'failed' AND attempts = 3")
            .await,
        1
    );
    drop(sender);
    db.cleanup().await;
}

/// A 410 disables the webhook but keeps its queued deliveries (README, "Disabled webhooks"): none
/// is cancelled or sent while it is disabled, and once an admin enables it again the real
/// sender delivers every one of them, each event once.
#[tokio::test]
async fn gone_410_holds_the_backlog_until_the_webhook_is_enabled() {
    const N: usize = 20;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.program("/moved", vec![Reply::status(410)], Reply::ok());
    let (id, secret) = db
        .register(&Webhook::new("moved", "acme", "*", &rx.url("/moved")).retry(5, 100))
        .await;
    db.publish_series("acme", "policy/bound", N as i64).await;
    // one request in flight at a time: the 410 answers the first, the rest are still queued
    db.set_default("hooks.max_in_flight_per_webhook", 1).await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        &format!("SELECT NOT enabled FROM hooks.webhooks WHERE webhook_id = {id}"),
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        rx.requests_to("/moved").len(),
        1,
        "nothing is sent while it is disabled"
    );
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'cancelled'")
            .await,
        0
    );
    assert_eq!(
        db.count("hooks.deliveries WHERE status IN ('pending', 'retrying')")
            .await,
        N as i64 - 1,
        "the backlog is kept"
    );

    db.client()
        .execute("SELECT hooks.enable_webhook($1)", &[&id])
        .await
        .unwrap();
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 0 FROM hooks.queue",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'success'").await,
        N as i64 - 1
    );
    let mut uuids: Vec<String> = rx
        .requests_to("/moved")
        .iter()
        .map(|r| r.webhook_id())
        .collect();
    assert_eq!(uuids.len(), N, "the 410 and then each held delivery once");
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), N);
    for r in rx.requests_to("/moved") {
        r.verify(&secret).expect("signed");
    }
    drop(sender);
    db.cleanup().await;
}

/// 410 Gone: the delivery fails at once (no retry although attempts are left) and the webhook is
/// disabled, so later events no longer create deliveries for it.
#[tokio::test]
async fn gone_410_disables_the_webhook() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/gone", Reply::status(410));
    let (id, _) = db
        .register(&Webhook::new("gone", "acme", "*", &rx.url("/gone")).retry(5, 100))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        &format!("SELECT NOT enabled FROM hooks.webhooks WHERE webhook_id = {id}"),
        Duration::from_secs(20),
    )
    .await;
    let (status, attempt, code, _) = delivery(&db).await;
    assert_eq!((status.as_str(), attempt, code), ("failed", 1, Some(410)));
    let reason: Option<String> = db
        .one(&format!(
            "SELECT disabled_reason FROM hooks.webhooks WHERE webhook_id = {id}"
        ))
        .await;
    assert!(
        reason.as_deref().unwrap_or("").contains("410"),
        "disabled_reason: {reason:?}"
    );

    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        db.count("hooks.deliveries").await,
        1,
        "a disabled webhook gets no new deliveries"
    );
    assert_eq!(rx.requests_to("/gone").len(), 1);
    drop(sender);
    db.cleanup().await;
}

/// 429 with `Retry-After: 2` although backoffMs is 100: the next attempt comes no sooner than
/// about 2 s later.
#[tokio::test]
async fn retry_after_is_honoured() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.program(
        "/busy",
        vec![Reply::status(429).header("Retry-After", "2")],
        Reply::ok(),
    );
    db.register(&Webhook::new("busy", "acme", "*", &rx.url("/busy")).retry(3, 100))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        "SELECT status = 'success' FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    let reqs = rx.requests_to("/busy");
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    println!("Retry-After: 2 -> second attempt {gap:?} after the first");
    // The delay starts when the result is written, a little after the 429 arrived.
    assert!(
        gap >= Duration::from_millis(1900),
        "second attempt only {gap:?} after a 429 with Retry-After: 2"
    );
    assert!(gap < Duration::from_secs(6), "second attempt took {gap:?}");
    let log = attempts(&db).await;
    assert_eq!(log[0].2, Some(429));
    assert_eq!(log[1].1, "success");
    drop(sender);
    db.cleanup().await;
}

/// Backoff strategies with the real sender, jitter off, every attempt answered 500: `linear`
/// (300 ms x n) waits at least 300, 600 and 900 ms before retries 2, 3 and 4; `fixed` (300 ms)
/// waits at least 300 ms each time and does not grow (exponential would wait 1,200 ms before the
/// fourth attempt). Both end `failed` after maxAttempts.
#[tokio::test]
async fn backoff_strategies_space_the_retries() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/linear", Reply::status(500));
    rx.always("/fixed", Reply::status(500));
    for (name, strategy) in [("linear", "linear"), ("fixed", "fixed")] {
        db.register(
            &Webhook::new(name, "acme", "*", &rx.url(&format!("/{name}"))).retry_config(json!({
                "maxAttempts": 4, "backoffMs": 300, "strategy": strategy, "jitter": false
            })),
        )
        .await;
    }
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    wait_until_sql(
        db.client(),
        "SELECT count(*) FILTER (WHERE status = 'failed') = 2 FROM hooks.deliveries",
        Duration::from_secs(30),
    )
    .await;

    let gaps = |path: &str| -> Vec<Duration> {
        let reqs = rx.requests_to(path);
        assert_eq!(reqs.len(), 4, "{path}: maxAttempts 4");
        reqs.windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .collect()
    };
    let linear = gaps("/linear");
    let fixed = gaps("/fixed");
    println!("linear: gaps {linear:?}; fixed: gaps {fixed:?}");
    // Each delay starts when the result is written, after the request arrived: a lower bound.
    for (gap, want) in linear.iter().zip([300, 600, 900]) {
        assert!(
            *gap >= Duration::from_millis(want),
            "linear: {linear:?}, wanted at least {want} ms"
        );
    }
    for gap in &fixed {
        assert!(*gap >= Duration::from_millis(300), "fixed: {fixed:?}");
    }
    assert!(
        fixed[2] < Duration::from_millis(1200),
        "fixed: the fourth attempt came {:?} after the third, as if the delay grew: {fixed:?}",
        fixed[2]
    );
    let codes: Vec<(String, i32)> = db
        .client()
        .query(
            "SELECT status, attempt_number FROM hooks.deliveries ORDER BY delivery_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(codes, [("failed".to_owned(), 4), ("failed".to_owned(), 4)]);
    drop(sender);
    db.cleanup().await;
}

/// The receiver answers after 3 s, the webhook's timeout is 1 s: the attempt fails with an error
/// naming the timeout, no status code, and a duration near the timeout.
#[tokio::test]
async fn timeout_is_recorded() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/slow", Reply::ok().delay(Duration::from_secs(3)));
    db.register(
        &Webhook::new("slow", "acme", "*", &rx.url("/slow"))
            .retry(1, 100)
            .timeout_ms(1000),
    )
    .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        "SELECT status = 'failed' FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    let (_, attempt, code, err) = delivery(&db).await;
    assert_eq!(attempt, 1);
    assert_eq!(code, None, "no response, no status code");
    let err = err.unwrap_or_default();
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "error_message: {err:?}"
    );
    let log = attempts(&db).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, "failure");
    let ms = log[0].4.unwrap_or(0);
    assert!(
        (900..2900).contains(&ms),
        "duration_ms {ms} should be about the 1000 ms timeout"
    );
    assert_eq!(rx.requests_to("/slow").len(), 1);
    drop(sender);
    db.cleanup().await;
}

/// Without --allow-private-targets a loopback url is refused before connecting: the receiver
/// sees nothing and the attempt is a failure whose error says it was refused, without the
/// resolved address, which only the sender's log shows.
#[tokio::test]
async fn loopback_target_refused_without_allow_private_targets() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("ssrf", "acme", "*", &rx.url("/ssrf")).retry(1, 100))
        .await;
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            allow_private_targets: false,
            ..SenderOptions::default()
        },
    );
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;

    wait_until_sql(
        db.client(),
        "SELECT status = 'failed' FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    let (_, attempt, code, err) = delivery(&db).await;
    let err = err.unwrap_or_default();
    println!("refusal recorded as: {err:?}");
    assert_eq!((attempt, code), (1, None));
    // The tenant sees that the target was refused, not what its host resolved to (that would
    // map the sender's network); the operator's log has the address and why.
    assert!(
        err.contains("refused") && err.contains("not public"),
        "error_message should say why: {err:?}"
    );
    assert!(
        !err.contains("127.0.0.1") && !err.to_lowercase().contains("loopback"),
        "error_message must not name the resolved address: {err:?}"
    );
    let log = sender.log();
    assert!(
        log.contains("127.0.0.1") && log.contains("loopback"),
        "the sender's log keeps the detail for operators"
    );
    let log = attempts(&db).await;
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].1.as_str(), log[0].2), ("failure", None));
    assert_eq!(rx.count(), 0, "the refused target must never be contacted");
    drop(sender);
    db.cleanup().await;
}
