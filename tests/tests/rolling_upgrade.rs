//! A rolling upgrade: the extension is updated first, then the senders. A sender of the previous
//! version (0.2.0) left running across `ALTER EXTENSION beema_hooks UPDATE` keeps delivering:
//! its leases from before the update, its results (which carry no lease token) and its later
//! claims all still work, nothing is lost and no result is rejected. Then a sender of this
//! version delivers from the updated database. The 0.2.0 sender is played through SQL, with
//! exactly the statements and JSON shapes that sender sends (its `store.rs` and `delivery.rs`).

use std::time::Duration;

use beema_hooks_e2e::{wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook};
use serde_json::json;

/// What the 0.2.0 sender prepares as its claim.
const OLD_CLAIM: &str = "select delivery_id, attempt_number, delivery_uuid::text, webhook_id, \
     event_type, url, headers::text, body, timeout_ms \
     from hooks.claim($1::text, $2::integer, make_interval(secs => $3::float8), $4::boolean)";

/// (delivery_id, attempt_number) of each row the old sender claims.
async fn old_claim(c: &tokio_postgres::Client) -> Vec<(i64, i32)> {
    c.query(OLD_CLAIM, &[&"old-sender", &10i32, &60f64, &false])
        .await
        .expect("the 0.2.0 sender's claim")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// 0.2.0's result shape: no lease_token.
fn old_result(id: i64, attempt: i32) -> serde_json::Value {
    json!({"delivery_id": id, "attempt_number": attempt, "status_code": 200, "error": null,
           "response_body": "ok", "duration_ms": 3, "retry_after_ms": null})
}

async fn applied(c: &tokio_postgres::Client, function: &str, arg: serde_json::Value) -> i64 {
    c.query_one(
        &format!("select hooks.{function}($1::text, $2::text::jsonb)::bigint"),
        &[&"old-sender", &arg.to_string()],
    )
    .await
    .unwrap_or_else(|e| panic!("the 0.2.0 sender's {function}: {e}"))
    .get(0)
}

#[tokio::test]
async fn a_0_2_0_sender_keeps_delivering_across_the_update_then_a_new_one_takes_over() {
    let db = TestDb::with_version("0.2.0").await;
    let rx = Receiver::start().await;
    rx.always("/w", Reply::ok());
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    for n in 0..3 {
        db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": n}}))
            .await;
    }
    // The old sender's session (its claim connection) holds three leases across the update.
    let old = db.connect().await;
    let leased = old_claim(&old).await;
    assert_eq!(leased.len(), 3);

    db.client()
        .batch_execute("ALTER EXTENSION beema_hooks UPDATE")
        .await
        .expect("ALTER EXTENSION beema_hooks UPDATE under live leases");
    assert_eq!(
        db.one::<String>("SELECT extversion FROM pg_extension WHERE extname = 'beema_hooks'")
            .await,
        env!("CARGO_PKG_VERSION")
    );

    // Its results for leases from before the update apply; so does its release.
    let (done, rest) = leased.split_at(2);
    let results: Vec<_> = done.iter().map(|&(id, a)| old_result(id, a)).collect();
    assert_eq!(applied(&old, "complete", json!(results)).await, 2);
    let (rid, ra) = rest[0];
    assert_eq!(
        applied(
            &old,
            "release",
            json!([{"delivery_id": rid, "attempt_number": ra}])
        )
        .await,
        1
    );
    // It claims from the updated extension (the released row and a new one) and completes.
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": 3}}))
        .await;
    let again = old_claim(&old).await;
    assert_eq!(again.len(), 2, "{again:?}");
    let results: Vec<_> = again.iter().map(|&(id, a)| old_result(id, a)).collect();
    assert_eq!(applied(&old, "complete", json!(results)).await, 2);
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'success'").await,
        4
    );
    assert_eq!(
        db.count("hooks.attempts WHERE outcome = 'lease_lost'")
            .await,
        0
    );
    drop(old);

    // A sender of this version, with lease tokens, delivers what comes next.
    let sender = Sender::start(db.url(), SenderOptions::default());
    for n in 4..6 {
        db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": n}}))
            .await;
    }
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 6 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        rx.requests_to("/w").len(),
        2,
        "the new sender sent the two new deliveries"
    );
    assert!(
        !sender.log().contains("older than"),
        "the new sender found the updated extension: {}",
        sender.log()
    );
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'success' AND lease_token IS NOT NULL")
            .await,
        4,
        "every lease taken since the update has a token (2 of 6 were taken before)"
    );
    drop(sender);
    db.cleanup().await;
}

/// The other order: a sender of this version meets a database not yet updated (0.2.0, whose
/// claim issues no lease tokens). It says so, and delivers, its results fenced by attempt number.
#[tokio::test]
async fn the_sender_delivers_from_a_0_2_0_database_and_names_it() {
    let db = TestDb::with_version("0.2.0").await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish_series("acme", "a/b", 3).await;
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 3 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(rx.requests_to("/w").len(), 3);
    assert!(
        sender.log().contains("older than 0.3.0"),
        "the sender names the old extension: {}",
        sender.log()
    );
    drop(sender);
    db.cleanup().await;
}
