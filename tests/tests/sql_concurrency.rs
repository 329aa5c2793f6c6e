//! The extension's outbox under concurrency and rollback, through SQL only (no sender):
//! claimers racing over the same rows, lease expiry and fencing, a rolled-back publish, and the
//! NOTIFY wake-up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beema_hooks_e2e::db::publish_on;
use beema_hooks_e2e::{signature, wait_until_sql, TestDb, Webhook};
use serde_json::json;
use tokio::sync::Barrier;

const CLAIMERS: usize = 4;
const DELIVERIES: i64 = 2000;

/// A URL nothing listens on: no sender runs in these tests, nothing is ever sent.
const NOWHERE: &str = "http://127.0.0.1:9/never-called";

/// Four sessions claim in loops, each claim inside its own transaction held open a few
/// milliseconds (so the others hit locked rows and must SKIP them), until the queue is empty.
/// No delivery may be handed out twice while its lease holds, and every one must be handed out.
/// The per-webhook cap is off here (its leases last 5 minutes, so one webhook's 2,000 rows
/// would stop at the cap): this is the row-level race; `operations.rs` races senders under the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_delivery() {
    let db = TestDb::new().await;
    db.set_default("hooks.max_in_flight_per_webhook", 0).await;
    db.register(&Webhook::new("race", "t1", "race/item", NOWHERE))
        .await;
    db.publish_series("t1", "race/item", DELIVERIES).await;
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'pending'").await,
        DELIVERIES
    );

    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let mut client = db.connect().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("claimer-{c}");
            let mut got: Vec<(i64, i32)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            barrier.wait().await;
            for i in 0u64.. {
                assert!(Instant::now() < deadline, "{me}: the queue never drained");
                let max_rows = 5 + ((i as i32 * 7 + c as i32 * 13) % 40);
                let tx = client.transaction().await.expect("begin");
                let rows = tx
                    .query(
                        "SELECT delivery_id, attempt_number FROM hooks.claim($1, $2, interval '5 minutes')",
                        &[&me, &max_rows],
                    )
                    .await
                    .expect("claim");
                // Hold the row locks a moment so the other sessions race against them.
                tokio::time::sleep(Duration::from_millis((i + c as u64) % 4)).await;
                tx.commit().await.expect("commit");
                assert!(rows.len() <= max_rows as usize, "{me}: claim returned more than max_rows");
                got.extend(rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i32>(1))));
                // Done once nothing is left unclaimed (every claim seen here has committed).
                let due: i64 = client
                    .query_one("SELECT count(*) FROM hooks.deliveries WHERE status IN ('pending', 'retrying')", &[])
                    .await
                    .expect("count due")
                    .get(0);
                if due == 0 {
                    break;
                }
                if rows.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            (me, got)
        }));
    }

    let mut owner_of: HashMap<i64, String> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut not_first = Vec::new();
    let mut per_claimer = Vec::new();
    let mut total = 0usize;
    for t in tasks {
        let (me, got) = t.await.expect("claimer task");
        per_claimer.push((me.clone(), got.len()));
        total += got.len();
        for (id, attempt) in got {
            if attempt != 1 {
                not_first.push((id, attempt));
            }
            if let Some(prev) = owner_of.insert(id, me.clone()) {
                duplicates.push((id, prev, me.clone()));
            }
        }
    }
    println!(
        "claim race: expected {DELIVERIES}, claimed {total}, distinct {}, duplicates {}, per claimer {per_claimer:?}",
        owner_of.len(),
        duplicates.len()
    );
    assert!(
        duplicates.is_empty(),
        "deliveries claimed twice while leased: {:?}",
        &duplicates[..duplicates.len().min(10)]
    );
    assert!(
        not_first.is_empty(),
        "claims other than attempt 1: {:?}",
        &not_first[..not_first.len().min(10)]
    );

    let all: HashSet<i64> = db
        .client()
        .query("SELECT delivery_id FROM hooks.deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let claimed: HashSet<i64> = owner_of.keys().copied().collect();
    assert_eq!(all.len() as i64, DELIVERIES);
    assert_eq!(
        claimed, all,
        "the union of the claims must cover every delivery exactly"
    );
    assert!(
        per_claimer.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "the claims did not interleave (no race happened): {per_claimer:?}"
    );

    // The database agrees: each row is in flight, leased to the session that received it.
    let rows = db
        .client()
        .query(
            "SELECT delivery_id, status, lease_owner, attempt_number FROM hooks.deliveries",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let id: i64 = r.get(0);
        assert_eq!(r.get::<_, String>(1), "in_flight", "delivery {id}");
        assert_eq!(
            r.get::<_, Option<String>>(2).as_deref(),
            Some(owner_of[&id].as_str()),
            "delivery {id} lease owner"
        );
        assert_eq!(r.get::<_, i32>(3), 1, "delivery {id} attempt");
    }

    // While the leases hold, nobody else gets anything.
    let late = db.connect().await;
    let n = late
        .query("SELECT * FROM hooks.claim('latecomer', 1000)", &[])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 0, "a claim during the leases must return nothing");
    db.cleanup().await;
}

/// Two sessions inside open transactions: the second claim skips the rows the first has locked
/// (FOR UPDATE SKIP LOCKED) instead of waiting or taking them. With the per-webhook cap on (the
/// default) a webhook is claimed by one session at a time: while the first claim stays open the
/// second waits for its turn at most 200 ms, then skips the webhook's rows entirely, and gets
/// them once the first commits.
#[tokio::test]
async fn second_session_skips_rows_locked_by_an_open_claim() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("skip", "t1", "race/item", NOWHERE))
        .await;
    db.register(&Webhook::new("capped", "t1", "capped/item", NOWHERE))
        .await;
    db.publish_series("t1", "race/item", 10).await;

    let mut a = db.connect().await;
    let mut b = db.connect().await;
    for c in [&a, &b] {
        c.batch_execute("SET hooks.max_in_flight_per_webhook = 0")
            .await
            .unwrap();
    }
    let ta = a.transaction().await.unwrap();
    let got_a: HashSet<i64> = ta
        .query("SELECT delivery_id FROM hooks.claim('a', 6)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let tb = b.transaction().await.unwrap();
    // Must not block on A's locks.
    let got_b: HashSet<i64> = tokio::time::timeout(
        Duration::from_secs(5),
        tb.query("SELECT delivery_id FROM hooks.claim('b', 100)", &[]),
    )
    .await
    .expect("claim B blocked on A's locks instead of skipping them")
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    println!(
        "open-transaction race: A got {}, B got {}",
        got_a.len(),
        got_b.len()
    );
    assert_eq!(got_a.len(), 6);
    assert_eq!(got_b.len(), 4, "B gets exactly the rows A did not lock");
    assert!(
        got_a.is_disjoint(&got_b),
        "A and B were both given {:?}",
        got_a.intersection(&got_b).collect::<Vec<_>>()
    );
    tb.commit().await.unwrap();
    ta.commit().await.unwrap();

    // The cap on: B skips the webhook A is claiming, then gets the rest after A commits.
    db.publish_series("t1", "capped/item", 10).await;
    for c in [&a, &b] {
        c.batch_execute("RESET hooks.max_in_flight_per_webhook")
            .await
            .unwrap();
    }
    let ta = a.transaction().await.unwrap();
    let got_a = ta
        .query("SELECT delivery_id FROM hooks.claim('a', 6)", &[])
        .await
        .unwrap()
        .len();
    let during = tokio::time::timeout(
        Duration::from_secs(5),
        b.query("SELECT delivery_id FROM hooks.claim('b', 100)", &[]),
    )
    .await
    .expect("claim B blocked on A's claim lock instead of skipping the webhook")
    .unwrap()
    .len();
    ta.commit().await.unwrap();
    let after = b
        .query("SELECT delivery_id FROM hooks.claim('b', 100)", &[])
        .await
        .unwrap()
        .len();
    println!("with the cap: A got {got_a}, B got {during} during A's claim and {after} after");
    assert_eq!((got_a, during, after), (6, 0, 4));
    db.cleanup().await;
}

/// With the per-webhook cap on, claims take turns: a claim that starts while another sender's
/// claim is open waits for it to commit, then claims what the cap leaves (README, "Claims take
/// turns"). Without turns it skipped the webhook, whose claim lock the other held, and returned
/// nothing though the webhook had room.
#[tokio::test]
async fn a_claim_waits_for_the_open_claim_of_another_sender_then_takes_the_room_left() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("turns", "t1", "turns/item", NOWHERE))
        .await;
    db.publish_series("t1", "turns/item", 10).await;
    let mut a = db.connect().await;
    let b = Arc::new(db.connect().await);
    for c in [&a, &*b] {
        c.batch_execute("SET hooks.max_in_flight_per_webhook = 8")
            .await
            .unwrap();
    }
    let b_pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let ta = a.transaction().await.unwrap();
    let got_a = ta
        .query("SELECT delivery_id FROM hooks.claim('a', 6)", &[])
        .await
        .unwrap()
        .len();
    let claim_b = tokio::spawn({
        let b = b.clone();
        async move {
            b.query("SELECT delivery_id FROM hooks.claim('b', 100)", &[])
                .await
                .unwrap()
                .len()
        }
    });
    // B is waiting for its turn (the advisory lock A's claim holds until A commits); A commits
    // as soon as it is (B would give up waiting after 200 ms)
    let waiting = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = {b_pid} AND locktype = 'advisory' AND NOT granted)"
    );
    let start = Instant::now();
    while !db
        .client()
        .query_one(&waiting, &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "B never waited for its turn"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ta.commit().await.unwrap();
    let got_b = claim_b.await.unwrap();
    println!("claims taking turns: A got {got_a}, B (waiting for A) got {got_b}");
    assert_eq!(
        (got_a, got_b),
        (6, 2),
        "B takes the cap's room left after A's 6"
    );
    db.cleanup().await;
}

/// The claim returns every wire header with signatures that the receiver's independent code
/// accepts for the exact body.
#[tokio::test]
async fn claim_returns_headers_signed_over_the_exact_body() {
    let db = TestDb::new().await;
    let (_, plain_secret) = db
        .register(
            &Webhook::new("plain", "t1", "policy/bound", NOWHERE)
                .secret(Some("It's a secret \u{e9}\u{1F511}"))
                .headers(json!({"X-Tenant-Route": "eu-1"})),
        )
        .await;
    let (_, generated) = db
        .register(&Webhook::new("gen", "t1", "policy/*", NOWHERE).secret(None))
        .await;
    assert!(
        generated.starts_with("whsec_"),
        "a missing secret is generated as whsec_...: {generated}"
    );
    let event_id = db
        .publish(&json!({"event": "policy/bound", "data": {"tenantId": "t1", "note": "caf\u{e9} \u{2713} \u{1F600}"}, "id": "e-1"}))
        .await;
    let body: String = db
        .one(&format!(
            "SELECT body FROM hooks.events WHERE event_id = {event_id}"
        ))
        .await;

    let rows = db
        .client()
        .query(
            "SELECT c.delivery_uuid::text, c.headers::text, c.body, w.secret, c.event_type
               FROM hooks.claim('s', 10) c JOIN hooks.webhooks w USING (webhook_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let secrets: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(3)).collect();
    assert!(secrets.contains(&plain_secret) && secrets.contains(&generated));
    for r in rows {
        let uuid: String = r.get(0);
        let headers: serde_json::Value = serde_json::from_str(&r.get::<_, String>(1)).unwrap();
        let claimed_body: String = r.get(2);
        let secret: String = r.get(3);
        assert_eq!(
            claimed_body, body,
            "the claimed body is the stored event body"
        );
        let h = |name: &str| -> Option<String> {
            headers
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        signature::verify(&secret, claimed_body.as_bytes(), h)
            .unwrap_or_else(|e| panic!("secret {secret:?}: {e}"));
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert_eq!(h("x-beema-event").as_deref(), Some("policy/bound"));
        assert_eq!(h("x-beema-delivery").as_deref(), Some(uuid.as_str()));
        assert_eq!(h("webhook-id").as_deref(), Some(uuid.as_str()));
        let ts: i64 = h("webhook-timestamp").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (ts - now).abs() < 60,
            "webhook-timestamp {ts} is not now ({now})"
        );
        if secret == plain_secret {
            assert_eq!(
                h("x-tenant-route").as_deref(),
                Some("eu-1"),
                "the webhook's own headers are included"
            );
        }
    }
    db.cleanup().await;
}

/// A lease that expired is claimed again (attempt 2) with the lost attempt logged, and the first
/// sender's late result neither overwrites the new holder's state nor counts.
#[tokio::test]
async fn expired_lease_is_reclaimed_and_the_late_result_is_fenced_off() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("lease", "t1", "a/b", NOWHERE))
        .await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "t1"}}))
        .await;
    let c = db.client();

    let a = c
        .query(
            "SELECT delivery_id, attempt_number FROM hooks.claim('sender-a', 10)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    let id: i64 = a[0].get(0);
    assert_eq!(a[0].get::<_, i32>(1), 1);
    assert_eq!(
        c.query("SELECT 1 FROM hooks.claim('sender-b', 10)", &[])
            .await
            .unwrap()
            .len(),
        0,
        "leased"
    );

    // Make A's lease run out (waiting for the real one would take timeout + 10 s).
    c.execute("UPDATE hooks.queue SET next_attempt_at = now() - interval '1 second' WHERE delivery_id = $1", &[&id])
        .await
        .unwrap();
    let b = c
        .query(
            "SELECT delivery_id, attempt_number FROM hooks.claim('sender-b', 10)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "an expired lease is claimable again");
    assert_eq!(b[0].get::<_, i64>(0), id);
    assert_eq!(b[0].get::<_, i32>(1), 2, "the reclaim is attempt 2");

    // A finally reports attempt 1: logged as lease_lost, applied to nothing.
    let late = json!([{"delivery_id": id, "attempt_number": 1, "status_code": 500, "error": "HTTP 500",
                       "response_body": "late", "duration_ms": 5, "retry_after_ms": null}]);
    let applied = complete(&c, "sender-a", &late.to_string()).await;
    assert_eq!(applied, 0, "a result for a lost lease must not be applied");
    let row = c
        .query_one("SELECT status, lease_owner, attempt_number, error_message FROM hooks.deliveries WHERE delivery_id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "in_flight");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("sender-b"));
    assert_eq!(row.get::<_, i32>(2), 2);
    assert_eq!(
        row.get::<_, Option<String>>(3),
        None,
        "the late failure must not be written on the delivery"
    );

    let ok = json!([{"delivery_id": id, "attempt_number": 2, "status_code": 204, "error": null,
                     "response_body": "", "duration_ms": 3, "retry_after_ms": null}]);
    let applied = complete(&c, "sender-b", &ok.to_string()).await;
    assert_eq!(applied, 1);
    assert_eq!(
        db.one::<String>(&format!(
            "SELECT status FROM hooks.deliveries WHERE delivery_id = {id}"
        ))
        .await,
        "success"
    );

    let log: Vec<(i32, String, Option<String>)> = c
        .query("SELECT attempt_number, outcome, sender_id FROM hooks.attempts WHERE delivery_id = $1 ORDER BY attempt_id", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let outcomes: Vec<(i32, &str)> = log.iter().map(|(n, o, _)| (*n, o.as_str())).collect();
    assert_eq!(
        outcomes,
        vec![(1, "lease_expired"), (1, "lease_lost"), (2, "success")],
        "attempt log: {log:?}"
    );
    db.cleanup().await;
}

async fn no_notification_within(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    d: Duration,
) {
    if let Ok(Some(n)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected NOTIFY on {} ({:?})", n.channel(), n.payload());
    }
}

/// A publish in a transaction that rolls back leaves no event, no delivery and wakes nobody; the
/// same publish committed wakes a LISTENer once (no sender is awake in a fresh database).
#[tokio::test]
async fn rolled_back_publish_leaves_nothing_and_notifies_nobody() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("w1", "acme", "policy/bound", NOWHERE))
        .await;
    db.register(&Webhook::new("w2", "acme", "*", NOWHERE)).await;
    let (_listener, mut rx) = db.listen("hooks_deliveries").await;
    assert_eq!(db.count("hooks.senders WHERE awake").await, 0);

    let mut app = db.connect().await;
    let tx = app.transaction().await.unwrap();
    let event = json!({"event": "policy/bound", "data": {"tenantId": "acme", "policy": 1}, "id": "rolled-back"});
    publish_on(&tx, &event).await;
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM hooks.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inside, 2, "the transaction itself sees its two deliveries");
    tx.rollback().await.unwrap();

    assert_eq!(db.count("hooks.events").await, 0, "events after rollback");
    assert_eq!(
        db.count("hooks.deliveries").await,
        0,
        "deliveries after rollback"
    );
    assert_eq!(
        db.count("hooks.attempts").await,
        0,
        "attempts after rollback"
    );
    no_notification_within(&mut rx, Duration::from_millis(700)).await;

    // Committed: one wake-up for the whole transaction, however many events it published.
    let tx = app.transaction().await.unwrap();
    publish_on(
        &tx,
        &json!({"event": "policy/bound", "data": {"tenantId": "acme"}, "id": "c-1"}),
    )
    .await;
    publish_on(
        &tx,
        &json!({"event": "claim/opened", "data": {"tenantId": "acme"}, "id": "c-2"}),
    )
    .await;
    let committed_at = Instant::now();
    tx.commit().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("a committed publish must wake a LISTENer when no sender is awake")
        .expect("listener closed");
    println!("NOTIFY received {:?} after commit", committed_at.elapsed());
    assert_eq!(n.channel(), "hooks_deliveries");
    no_notification_within(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(db.count("hooks.events").await, 2);
    assert_eq!(
        db.count("hooks.deliveries").await,
        3,
        "policy/bound matches 2 webhooks, claim/opened 1"
    );
    db.cleanup().await;
}

async fn publish(db: &TestDb) {
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme"}}))
        .await;
}

async fn notified(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    what: &str,
) {
    if tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .is_err()
    {
        panic!("no NOTIFY within 3 s: {what}");
    }
}

async fn claim(sender: &tokio_postgres::Client) -> usize {
    sender
        .query("SELECT 1 FROM hooks.claim('s1', 10)", &[])
        .await
        .expect("claim")
        .len()
}

/// The NOTIFY economy of DESIGN.md: while a sender is awake (its last claim, on its own
/// session, returned rows), a publish does not notify; once it is idle again (its claim came
/// back empty) or its session is gone (crashed), a publish notifies.
#[tokio::test]
async fn publish_notifies_only_while_no_sender_is_awake() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("w", "acme", "*", NOWHERE)).await;
    let (_listener, mut rx) = db.listen("hooks_deliveries").await;
    publish(&db).await;
    notified(&mut rx, "the first publish notifies (no sender at all)").await;

    // The sender's own claim session (claims must not share the publisher's session).
    let sender = db.connect().await;

    // A claim that returns rows marks the sender awake: publishers stay quiet.
    assert_eq!(claim(&sender).await, 1);
    publish(&db).await;
    no_notification_within(&mut rx, Duration::from_millis(700)).await;
    assert_eq!(
        db.count("hooks.senders WHERE sender_id = 's1' AND awake")
            .await,
        1
    );

    // It drains the queue and comes back empty-handed: idle, so the next publish notifies.
    assert_eq!(claim(&sender).await, 1, "the second event");
    assert_eq!(claim(&sender).await, 0);
    publish(&db).await;
    notified(&mut rx, "a publish while every sender is idle must notify").await;
    assert_eq!(
        db.count("hooks.senders WHERE sender_id = 's1' AND awake")
            .await,
        0
    );

    // Awake again, then the session dies without going idle: it must not look awake.
    assert_eq!(claim(&sender).await, 1);
    publish(&db).await;
    no_notification_within(&mut rx, Duration::from_millis(500)).await;
    drop(sender);
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        Duration::from_secs(10),
    )
    .await; // only the LISTEN connection is left
    publish(&db).await;
    notified(
        &mut rx,
        "a publish after the awake sender's session died must notify",
    )
    .await;
    db.cleanup().await;
}

async fn claim_staying_awake(sender: &tokio_postgres::Client) -> usize {
    sender
        .query(
            "SELECT 1 FROM hooks.claim('s1', 10, '60 seconds', stay_awake => true)",
            &[],
        )
        .await
        .expect("claim")
        .len()
}

/// A lingering sender: `stay_awake` claims that find nothing keep it awake (publishers stay
/// quiet and their rows are found by its next look, with no wait for committing publishers),
/// however many of them it makes; one plain claim that finds nothing makes it idle again.
#[tokio::test]
async fn stay_awake_claims_keep_publishers_quiet_until_a_plain_empty_claim() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("w", "acme", "*", NOWHERE)).await;
    let (_listener, mut rx) = db.listen("hooks_deliveries").await;
    let sender = db.connect().await;

    // Idle: staying awake on an empty queue marks it awake at once.
    assert_eq!(claim_staying_awake(&sender).await, 0);
    assert_eq!(
        db.count("hooks.senders WHERE sender_id = 's1' AND awake")
            .await,
        1
    );
    publish(&db).await;
    no_notification_within(&mut rx, Duration::from_millis(500)).await;

    // Rows, then many empty looks: the awake lock is held throughout, never dropped and taken
    // again, so no publish in between notifies; each row is found by the next look.
    assert_eq!(claim_staying_awake(&sender).await, 1);
    for round in 0..20 {
        assert_eq!(claim_staying_awake(&sender).await, 0, "round {round}");
        publish(&db).await;
        assert_eq!(claim_staying_awake(&sender).await, 1, "round {round}");
    }
    no_notification_within(&mut rx, Duration::from_millis(500)).await;
    let holds: i64 = db
        .one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND mode = 'ShareLock' AND objid = (7233327398000002 & 4294967295)::oid
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
    assert_eq!(holds, 1, "one awake sender, one lock");

    // A plain claim that finds nothing: idle, the lock is gone, the next publish notifies.
    assert_eq!(claim(&sender).await, 0);
    assert_eq!(
        db.count("hooks.senders WHERE sender_id = 's1' AND awake")
            .await,
        0
    );
    publish(&db).await;
    notified(&mut rx, "a publish after the sender went idle must notify").await;
    db.cleanup().await;
}

/// (delivery_id, attempt_number, lease_token) of each row `sender` claims.
async fn claim_leases(c: &tokio_postgres::Client, sender: &str) -> Vec<(i64, i32, i64)> {
    c.query(
        "SELECT delivery_id, attempt_number, lease_token FROM hooks.claim($1, 10)",
        &[&sender],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// `hooks.complete(sender, results)` with the results as JSON text; how many it applied.
async fn complete(c: &tokio_postgres::Client, sender: &str, results: &str) -> i32 {
    c.query_one(
        "SELECT hooks.complete($1::text, $2::text::jsonb)",
        &[&sender, &results],
    )
    .await
    .unwrap()
    .get(0)
}

/// Makes every live lease run out now (waiting for a real one takes timeout + 10 s).
async fn expire_leases(c: &tokio_postgres::Client) {
    c.execute(
        "UPDATE hooks.queue SET next_attempt_at = now() - interval '1 second'
          WHERE status = 'in_flight'",
        &[],
    )
    .await
    .unwrap();
}

/// A poison row (its sender dies, or cannot report, every time) is not retried forever: each
/// expired lease counts as an attempt, and once `maxAttempts` leases expired the delivery ends
/// `failed`, in `hooks.dead_letters`, saying that the sender never reported.
#[tokio::test]
async fn a_lease_that_keeps_expiring_ends_failed_after_max_attempts() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("poison", "t1", "a/b", NOWHERE).retry(2, 10))
        .await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "t1"}}))
        .await;
    let c = db.client();

    let mut tokens = Vec::new();
    for attempt in 1..=2 {
        let got = claim_leases(c, "dies-every-time").await;
        assert_eq!(got.len(), 1, "claim {attempt}: {got:?}");
        assert_eq!(got[0].1, attempt, "the reclaim is the next attempt");
        tokens.push(got[0].2);
        expire_leases(c).await;
    }
    assert_ne!(tokens[0], tokens[1], "every lease has its own token");

    let got = claim_leases(c, "dies-every-time").await;
    assert!(
        got.is_empty(),
        "no attempt is left after 2 expired leases, yet it was claimed again: {got:?}"
    );
    let row = c
        .query_one(
            "SELECT status, attempt_number, error_message FROM hooks.deliveries",
            &[],
        )
        .await
        .unwrap();
    let (status, attempts, error): (String, i32, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!((status.as_str(), attempts), ("failed", 2));
    let error = error.unwrap_or_default();
    assert!(
        error.contains("never reported"),
        "the error says why: {error}"
    );
    assert_eq!(db.count("hooks.dead_letters").await, 1);
    let outcomes: Vec<(i32, String)> = c
        .query(
            "SELECT attempt_number, outcome FROM hooks.attempts ORDER BY attempt_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outcomes,
        vec![(1, "lease_expired".into()), (2, "lease_expired".into())]
    );
    // Nothing more is ever handed out, however often the senders look.
    expire_leases(c).await;
    assert!(claim_leases(c, "another").await.is_empty());
    db.cleanup().await;
}

/// The fence is the lease token, never reused: a sender that released a delivery (attempt not
/// counted) and claimed it again under the same sender id, for the same attempt number, gets a
/// new token, and a late result of the first lease is logged as `lease_lost` and changes nothing.
#[tokio::test]
async fn a_stale_result_after_release_and_reclaim_by_the_same_sender_is_lease_lost() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("fence", "t1", "a/b", NOWHERE))
        .await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "t1"}}))
        .await;
    let c = db.client();
    let first = claim_leases(c, "s").await;
    assert_eq!(first.len(), 1);
    let (id, attempt1, token1) = first[0];
    let result = |attempt: i32, token: i64, status: i32| {
        let error = (status != 200).then(|| format!("HTTP {status}"));
        json!([{"delivery_id": id, "attempt_number": attempt, "lease_token": token,
                "status_code": status, "error": error, "response_body": "", "duration_ms": 4,
                "retry_after_ms": null}])
        .to_string()
    };
    let released: i32 = c
        .query_one(
            "SELECT hooks.release('s', $1::text::jsonb)",
            &[
                &json!([{"delivery_id": id, "attempt_number": attempt1, "lease_token": token1}])
                    .to_string(),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 1);
    let second = claim_leases(c, "s").await;
    assert_eq!(second.len(), 1);
    let (_, attempt2, token2) = second[0];
    assert_eq!(attempt2, attempt1, "a released attempt is not counted");
    assert_ne!(token2, token1, "a new lease, a new token");

    let applied = complete(&c, "s", &result(attempt1, token1, 500)).await;
    assert_eq!(
        applied, 0,
        "the first lease's result must not apply to the second"
    );
    let row = c
        .query_one(
            "SELECT status, lease_token, error_message FROM hooks.deliveries WHERE delivery_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "in_flight");
    assert_eq!(row.get::<_, Option<i64>>(1), Some(token2));
    assert_eq!(row.get::<_, Option<String>>(2), None);
    // Releasing with the stale token does nothing either.
    let released: i32 = c
        .query_one(
            "SELECT hooks.release('s', $1::text::jsonb)",
            &[
                &json!([{"delivery_id": id, "attempt_number": attempt1, "lease_token": token1}])
                    .to_string(),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 0);

    let applied = complete(&c, "s", &result(attempt2, token2, 200)).await;
    assert_eq!(applied, 1);
    let log: Vec<String> = c
        .query(
            "SELECT outcome FROM hooks.attempts WHERE delivery_id = $1 ORDER BY attempt_id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(log, vec!["lease_lost", "success"]);
    assert_eq!(
        db.one::<String>(&format!(
            "SELECT status FROM hooks.deliveries WHERE delivery_id = {id}"
        ))
        .await,
        "success"
    );
    db.cleanup().await;
}

/// The wake-up check is armed only by queued deliveries: a publish that matches no webhook, and
/// one whose savepoint rolled back, commit without a NOTIFY even though no sender is awake; one
/// matching publish in the same kind of transaction wakes a LISTENer once. Management functions
/// that queue deliveries again (`replay_event`) wake it too.
#[tokio::test]
async fn only_queued_deliveries_wake_the_senders() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("w", "acme", "policy/*", NOWHERE))
        .await;
    let (_listener, mut rx) = db.listen("hooks_deliveries").await;
    let mut app = db.connect().await;

    // No webhook matches: an event row, no delivery, no NOTIFY.
    let tx = app.transaction().await.unwrap();
    publish_on(
        &tx,
        &json!({"event": "claim/opened", "data": {"tenantId": "acme"}}),
    )
    .await;
    tx.commit().await.unwrap();
    assert_eq!(db.count("hooks.events").await, 1);
    assert_eq!(db.count("hooks.deliveries").await, 0);
    no_notification_within(&mut rx, Duration::from_millis(500)).await;

    // A matching publish inside a savepoint that rolls back, then a non-matching one: no NOTIFY.
    let mut tx = app.transaction().await.unwrap();
    let sp = tx.savepoint("sp").await.unwrap();
    publish_on(
        &sp,
        &json!({"event": "policy/bound", "data": {"tenantId": "acme"}}),
    )
    .await;
    sp.rollback().await.unwrap();
    publish_on(
        &tx,
        &json!({"event": "claim/closed", "data": {"tenantId": "acme"}}),
    )
    .await;
    tx.commit().await.unwrap();
    assert_eq!(db.count("hooks.deliveries").await, 0);
    no_notification_within(&mut rx, Duration::from_millis(500)).await;

    // A matching publish: one NOTIFY on commit.
    let e = db
        .publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    notified(&mut rx, "a publish that queued a delivery").await;
    no_notification_within(&mut rx, Duration::from_millis(300)).await;

    // Replaying it queues it again (a new delivery uuid) and wakes the senders.
    let queued: i32 = db
        .client()
        .query_one("SELECT hooks.replay_event($1)", &[&e])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    notified(&mut rx, "replay_event").await;
    db.cleanup().await;
}

/// The bounds of the typed contract (`hooks_core::contract`) are the ones the SQL applies: a
/// webhook with the longest request timeout is leased for that timeout plus the lease margin,
/// however short a lease the claim asks for; and a `Retry-After` beyond the cap waits the cap.
#[tokio::test]
async fn claim_and_complete_keep_the_bounds_of_the_contract() {
    use hooks_core::contract::{MAX_RETRY_AFTER_MS, MAX_TIMEOUT_LEASE_MS, TIMEOUT_MS_RANGE};
    let db = TestDb::new().await;
    let mut hook = Webhook::new("bounds", "t1", "bounds/item", NOWHERE);
    hook.timeout_ms = *TIMEOUT_MS_RANGE.end();
    db.register(&hook).await;
    db.publish_series("t1", "bounds/item", 1).await;

    let c = db.connect().await;
    let row = c
        .query_one(
            "SELECT delivery_id, attempt_number, lease_token,
                    (extract(epoch FROM lease_expires_at - now()) * 1000)::bigint
               FROM hooks.claim('bounds-sender', 1, interval '1 second')",
            &[],
        )
        .await
        .unwrap();
    let (id, attempt, token, lease_ms): (i64, i32, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(
        (MAX_TIMEOUT_LEASE_MS..MAX_TIMEOUT_LEASE_MS + 2_000).contains(&lease_ms),
        "lease of {lease_ms} ms for a {} ms timeout; the contract says {MAX_TIMEOUT_LEASE_MS} ms",
        TIMEOUT_MS_RANGE.end()
    );

    let result = json!([{
        "delivery_id": id, "attempt_number": attempt, "lease_token": token,
        "status_code": 503, "error": "HTTP 503", "duration_ms": 5,
        "retry_after_ms": MAX_RETRY_AFTER_MS * 10,
    }]);
    let applied = complete(&c, "bounds-sender", &result.to_string()).await;
    assert_eq!(applied, 1);
    let wait_ms: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM next_attempt_at - now()) * 1000)::bigint
               FROM hooks.deliveries WHERE delivery_id = $1 AND status = 'retrying'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (MAX_RETRY_AFTER_MS - 5_000..=MAX_RETRY_AFTER_MS + 5_000).contains(&wait_ms),
        "Retry-After of 10 days waits {wait_ms} ms; the contract caps it at {MAX_RETRY_AFTER_MS} ms"
    );
}

/// The typed contract (`hooks_core::contract`) is what the installed functions declare:
/// `hooks.claim`'s result columns, and the records `hooks.complete` and `hooks.release` read
/// their JSON arrays as. A column added, renamed or retyped on one side fails here.
#[tokio::test]
async fn claim_and_complete_columns_are_the_contracts() {
    use hooks_core::contract::{CLAIM_ROW, LEASE_KEY_RECORD, RESULT_RECORD};
    let db = TestDb::new().await;
    let c = db.connect().await;
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };

    let claim: Vec<(String, String)> = c
        .query(
            "SELECT a.name, format_type(a.type, NULL)
               FROM pg_proc p,
                    unnest(p.proargnames, p.proallargtypes::oid[], p.proargmodes::text[]) AS a(name, type, mode)
              WHERE p.oid = 'hooks.claim(text, integer, interval, boolean, bigint)'::regprocedure AND a.mode = 't'
              ORDER BY array_position(p.proargnames, a.name)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(claim, pairs(CLAIM_ROW), "hooks.claim's columns");

    // `jsonb_to_recordset(<array>) AS r(<name> <type>, ...)` in the function's source
    let record = |src: &str| -> Vec<(String, String)> {
        let start = src
            .find("jsonb_to_recordset(")
            .expect("reads its array with jsonb_to_recordset");
        let rest = &src[start..];
        let open = rest.find("AS r(").expect("AS r(") + "AS r(".len();
        let close = open + rest[open..].find(')').unwrap();
        rest[open..close]
            .split(',')
            .map(|col| {
                let mut it = col.split_whitespace();
                (
                    it.next().unwrap().to_string(),
                    it.collect::<Vec<_>>().join(" "),
                )
            })
            .collect()
    };
    let src = |f: &str| {
        let c = &c;
        let f = f.to_string();
        async move {
            let row = c
                .query_one(
                    "SELECT prosrc FROM pg_proc WHERE oid = $1::text::regprocedure",
                    &[&f],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(
        record(&src("hooks.complete(text, jsonb)").await),
        pairs(RESULT_RECORD),
        "hooks.complete's record"
    );
    assert_eq!(
        record(&src("hooks.release(text, jsonb)").await),
        pairs(LEASE_KEY_RECORD),
        "hooks.release's record"
    );
    db.cleanup().await;
}
