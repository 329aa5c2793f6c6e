//! Ordered delivery per key (README, "Ordered delivery per key"), with the real sender and a real
//! HTTP receiver: two senders, a retry for every delivery and a SIGKILLed sender keep each key's
//! events in commit order; a key blocked by a failed delivery holds up nothing else and goes on
//! when an admin skips or retries it; a publisher holding a key while its head finishes delays
//! nothing for good, and publishers of one key queue in commit order.

use std::collections::HashMap;
use std::time::Duration;

use beema_hooks_e2e::db::{connect, publish_on};
use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Recorded, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;

/// Each key's events in the order the receiver got them: (key, seq) of every request to `path`,
/// grouped by key, repeats (retries, resends) included.
fn seqs_by_key(requests: &[Recorded]) -> HashMap<String, Vec<i64>> {
    let mut m: HashMap<String, Vec<i64>> = HashMap::new();
    for r in requests {
        let v = r.json();
        let key = v["data"]["account"].as_str().unwrap_or_default().to_owned();
        m.entry(key)
            .or_default()
            .push(v["data"]["seq"].as_i64().unwrap());
    }
    m
}

/// Drops repeated values after their first appearance.
fn first_appearances(seqs: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

async fn ordered_webhook(db: &TestDb, w: Webhook, on_failure: &str) -> i64 {
    let (id, _) = db.register(&w).await;
    db.client()
        .execute(
            "SELECT hooks.update_webhook($1, jsonb_build_object('ordering_key', 'data.account', 'ordering_on_failure', $2::text))",
            &[&id, &on_failure],
        )
        .await
        .unwrap();
    id
}

/// 20 keys x 12 events from 4 publishers at once (each key's events from one publisher, one
/// transaction each, so commit order is seq order); every delivery's first request fails (503),
/// so every one is retried; two senders, one of them SIGKILLed halfway and replaced. Every event
/// arrives, and per key the receiver never sees an event before all requests of the one before
/// it: the seqs of a key's requests, repeats included, never go down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_in_commit_order_across_two_senders_retries_and_a_sigkill() {
    const KEYS: i64 = 20;
    const PER_KEY: i64 = 12;
    let db = TestDb::new().await;
    // (every delivery fails once: the circuit breaker would pause the webhook)
    db.set_default("hooks.breaker_failure_threshold", 0).await;
    let rx = Receiver::start().await;
    rx.per_delivery(
        "/o",
        1,
        Reply::status(503),
        Reply::ok().delay(Duration::from_millis(5)),
    );
    ordered_webhook(
        &db,
        Webhook::new("ordered", "acme", "account/*", &rx.url("/o"))
            .timeout_ms(1000)
            .retry(6, 20),
        "skip",
    )
    .await;
    let opts = SenderOptions {
        concurrency: 16,
        lease_secs: Some(5),
        ..SenderOptions::default()
    };
    let mut s1 = Sender::start(db.url(), opts.clone());
    let s2 = Sender::start(db.url(), opts.clone());

    let mut publishers = Vec::new();
    for p in 0..4i64 {
        let url = db.url().to_owned();
        publishers.push(tokio::spawn(async move {
            let client = connect(&url).await;
            for seq in 1..=PER_KEY {
                for k in (0..KEYS).filter(|k| k % 4 == p) {
                    publish_on(
                        &client,
                        &json!({"event": "account/changed",
                                "data": {"tenantId": "acme", "account": format!("A{k}"), "seq": seq}}),
                    )
                    .await;
                }
            }
        }));
    }
    wait_until(
        "the senders are well into the work",
        Duration::from_secs(30),
        || async { rx.count() >= 150 },
    )
    .await;
    s1.kill9().await;
    let s3 = Sender::start(db.url(), opts);
    for p in publishers {
        p.await.unwrap();
    }
    let total = KEYS * PER_KEY;
    wait_until_sql(
        db.client(),
        &format!("SELECT count(*) = {total} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(90),
    )
    .await;

    let requests = rx.requests_to("/o");
    let by_key = seqs_by_key(&requests);
    let lost = db
        .count("hooks.attempts WHERE outcome = 'lease_expired'")
        .await;
    println!(
        "ordering: {total} deliveries, {} requests, {lost} attempts lost with the killed sender",
        requests.len()
    );
    assert_eq!(by_key.len() as i64, KEYS);
    for (key, seqs) in &by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "key {key}: an event arrived before all requests of the one before it: {seqs:?}"
        );
        assert_eq!(
            first_appearances(seqs),
            (1..=PER_KEY).collect::<Vec<_>>(),
            "key {key}: each event, in commit order"
        );
    }
    assert_eq!(
        db.count("hooks.order_keys WHERE head IS NOT NULL").await,
        0,
        "every key idle at the end"
    );
    drop((s2, s3));
    db.cleanup().await;
}

/// A webhook whose keys block on a final failure: key "bad" fails every request, the other keys
/// are delivered in full meanwhile; "bad" waits with its later events queued behind the failed
/// one (hooks.blocked_keys). hooks.skip_delivery lets the next go (which fails and blocks again);
/// once the receiver recovers, hooks.retry_delivery sends the failed one again first and the key
/// drains in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_key_holds_up_only_itself_until_skipped_or_retried() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/o", Reply::ok());
    rx.when_body_contains("/o", Some(("\"account\":\"bad\"", Reply::status(500))));
    ordered_webhook(
        &db,
        Webhook::new("ordered", "acme", "account/*", &rx.url("/o")).retry(2, 20),
        "block",
    )
    .await;
    let _sender = Sender::start(db.url(), SenderOptions::default());
    for seq in 1..=5 {
        for key in ["bad", "k1", "k2", "k3"] {
            db.publish(&json!({"event": "account/changed",
                               "data": {"tenantId": "acme", "account": key, "seq": seq}}))
                .await;
        }
    }
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 15 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(30),
    )
    .await;
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 1 FROM hooks.blocked_keys WHERE order_key = 'bad' AND waiting = 4",
        Duration::from_secs(30),
    )
    .await;
    let by_key = seqs_by_key(&rx.requests_to("/o"));
    for key in ["k1", "k2", "k3"] {
        assert_eq!(by_key[key], vec![1, 2, 3, 4, 5], "key {key}");
    }
    assert_eq!(
        by_key["bad"],
        vec![1, 1],
        "bad: its first event, twice, then nothing"
    );

    // skipped: the second goes, fails twice and blocks the key again
    let skipped: String = db
        .client()
        .query_one(
            "SELECT (hooks.skip_delivery(delivery_id, 'test')).status FROM hooks.blocked_keys",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, "failed");
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 1 FROM hooks.blocked_keys WHERE order_key = 'bad' AND waiting = 3",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(seqs_by_key(&rx.requests_to("/o"))["bad"], vec![1, 1, 2, 2]);

    // the receiver recovers: retrying the blocked one sends it first, then the rest in order
    rx.when_body_contains("/o", None);
    db.client()
        .execute(
            "SELECT hooks.retry_delivery(delivery_id) FROM hooks.blocked_keys",
            &[],
        )
        .await
        .unwrap();
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 19 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        seqs_by_key(&rx.requests_to("/o"))["bad"],
        vec![1, 1, 2, 2, 2, 3, 4, 5]
    );
    assert_eq!(db.count("hooks.blocked_keys").await, 0);
    db.cleanup().await;
}

/// Publishers of one key queue in commit order, and a publisher that holds a key never stalls
/// a sender: A publishes K#2 and stays open while K#1 is delivered and completed (the sender
/// cannot settle K then and leaves it in hooks.order_pending); B's publish of K#3 waits for A.
/// After A and then B commit, K#2 and K#3 follow in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_of_a_key_queue_in_commit_order_and_never_stall_the_sender() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/o", Reply::ok());
    ordered_webhook(
        &db,
        Webhook::new("ordered", "acme", "account/*", &rx.url("/o")),
        "skip",
    )
    .await;
    let ev = |seq: i64| json!({"event": "account/changed", "data": {"tenantId": "acme", "account": "K", "seq": seq}});
    db.publish(&ev(1)).await;

    let mut a = db.connect().await;
    let ta = a.transaction().await.unwrap();
    publish_on(&ta, &ev(2)).await;
    let url = db.url().to_owned();
    let b = tokio::spawn(async move {
        let mut b = connect(&url).await;
        let tb = b.transaction().await.unwrap();
        publish_on(&tb, &ev(3)).await;
        tb.commit().await.unwrap();
    });

    // K#1 is delivered and completed while A holds the key: settled later, not waited for
    let _sender = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 1 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(15),
    )
    .await;
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 1 FROM hooks.order_pending",
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B's publish of the same key waits for A");
    assert_eq!(rx.count(), 1);

    ta.commit().await.unwrap();
    b.await.unwrap();
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 3 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(seqs_by_key(&rx.requests_to("/o"))["K"], vec![1, 2, 3]);
    assert_eq!(db.count("hooks.order_pending").await, 0);
    db.cleanup().await;
}
