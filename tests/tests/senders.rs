//! Several senders and sender lifecycles: two senders racing over 2,000 deliveries deliver each
//! exactly once; a SIGKILLed sender's work is finished by a restarted one after the lease, with
//! duplicates only for what was in flight; SIGTERM lets in-flight requests finish, releases what
//! outlives the grace period, and exits 0.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;

fn duplicates(counts: &HashMap<String, usize>) -> HashMap<String, usize> {
    counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, &n)| (k.clone(), n))
        .collect()
}

/// Two senders on one database, 1,000 events x 2 webhooks = 2,000 deliveries, nothing crashes:
/// the receiver sees every delivery uuid exactly once, and both senders took part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_deliver_2000_exactly_once() {
    const EVENTS: i64 = 1000;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    // A little latency so that both senders have work in flight at the same time.
    rx.always("/a", Reply::ok().delay(Duration::from_millis(5)));
    rx.always("/b", Reply::ok().delay(Duration::from_millis(5)));
    let (_, secret_a) = db
        .register(&Webhook::new("a", "acme", "*", &rx.url("/a")))
        .await;
    let (_, secret_b) = db
        .register(&Webhook::new("b", "acme", "race/*", &rx.url("/b")))
        .await;
    let s1 = Sender::start(
        db.url(),
        SenderOptions {
            concurrency: 32,
            ..SenderOptions::default()
        },
    );
    let s2 = Sender::start(
        db.url(),
        SenderOptions {
            concurrency: 32,
            ..SenderOptions::default()
        },
    );
    for s in [&s1, &s2] {
        wait_until_sql(
            db.client(),
            &format!(
                "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
                s.sender_id
            ),
            Duration::from_secs(15),
        )
        .await;
    }

    let start = Instant::now();
    // Ten committed transactions of 100 events each.
    for batch in 0..10i64 {
        db.client()
            .execute(
                "SELECT count(hooks.publish(jsonb_build_object('event', 'race/item',
                     'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
                   FROM generate_series($1::bigint, $2::bigint) g",
                &[&(batch * EVENTS / 10 + 1), &((batch + 1) * EVENTS / 10)],
            )
            .await
            .unwrap();
    }
    let expected = (EVENTS * 2) as usize;
    assert_eq!(db.count("hooks.deliveries").await as usize, expected);
    wait_until_sql(
        db.client(),
        &format!("SELECT count(*) = {expected} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(90),
    )
    .await;
    let took = start.elapsed();
    // Anything late would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let counts = rx.counts_by_webhook_id();
    let dups = duplicates(&counts);
    let per_sender: Vec<(String, i64)> = db
        .client()
        .query("SELECT sender_id, count(*) FROM hooks.attempts WHERE outcome = 'success' GROUP BY 1 ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!(
        "two senders: expected {expected}, received {} requests, distinct {}, duplicates {}, took {took:?}, per sender {per_sender:?}",
        rx.count(),
        counts.len(),
        dups.len()
    );
    assert!(
        dups.is_empty(),
        "delivered more than once: {:?}",
        dups.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(counts.len(), expected, "every delivery received");
    assert_eq!(rx.count(), expected);

    let uuids: HashSet<String> = db
        .client()
        .query("SELECT delivery_uuid::text FROM hooks.deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let received: HashSet<String> = counts.keys().cloned().collect();
    assert_eq!(
        received, uuids,
        "the received webhook-ids are exactly the deliveries"
    );
    assert_eq!(
        db.count("hooks.attempts").await as usize,
        expected,
        "one attempt each, nothing lost or fenced"
    );
    assert_eq!(
        per_sender.len(),
        2,
        "both senders delivered some: {per_sender:?}"
    );

    // Spot-check signatures across both webhooks.
    for r in rx.requests().iter().step_by(97) {
        let secret = if r.path == "/a" { &secret_a } else { &secret_b };
        r.verify(secret)
            .unwrap_or_else(|e| panic!("{}: {e}", r.path));
    }
    drop((s1, s2));
    db.cleanup().await;
}

/// A sender is SIGKILLed with requests in flight; a new one is started at once. Everything is
/// delivered: what the dead sender had not claimed right away, what it had claimed once its lease
/// (lease-secs 5, timeout 1 s -> greatest(5 s, 1 s + 10 s) = 11 s) expires. Only deliveries that
/// were in flight at the kill may arrive twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_then_restart_delivers_everything() {
    const EVENTS: usize = 200;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/crash", Reply::ok().delay(Duration::from_millis(300)));
    db.register(
        &Webhook::new("crash", "acme", "*", &rx.url("/crash"))
            .timeout_ms(1000)
            .retry(5, 100),
    )
    .await;
    let opts = SenderOptions {
        concurrency: 16,
        lease_secs: Some(5),
        ..SenderOptions::default()
    };
    let mut first = Sender::start(db.url(), opts.clone());
    db.client()
        .execute(
            "SELECT count(hooks.publish(jsonb_build_object('event', 'crash/item', 'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
               FROM generate_series(1, $1::bigint) g",
            &[&(EVENTS as i64)],
        )
        .await
        .unwrap();

    wait_until(
        "the first sender is well into the work",
        Duration::from_secs(20),
        || async { rx.count() >= 40 },
    )
    .await;
    first.kill9().await;
    let killed_at = Instant::now();
    let seen_at_kill = rx.count();
    // A statement the dead sender had sent (a claim, a complete) may still commit server-side:
    // wait until its backends are gone before taking stock.
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        Duration::from_secs(10),
    )
    .await;
    // What the dead sender held: claimed, never reported.
    let in_flight: HashSet<String> = db
        .client()
        .query(
            "SELECT delivery_uuid::text FROM hooks.deliveries WHERE status = 'in_flight' AND lease_owner = $1",
            &[&first.sender_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let done_at_kill = db.count("hooks.deliveries WHERE status = 'success'").await;
    assert!(
        !in_flight.is_empty(),
        "the kill must happen with deliveries in flight"
    );
    assert!(
        done_at_kill < EVENTS as i64,
        "the kill must happen before the end"
    );

    let second = Sender::start(db.url(), opts);
    let took = wait_until_sql(
        db.client(),
        &format!("SELECT count(*) = {EVENTS} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(35),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let counts = rx.counts_by_webhook_id();
    let dups = duplicates(&counts);
    let dup_ids: HashSet<String> = dups.keys().cloned().collect();
    println!(
        "sigkill: expected {EVENTS}, received {} requests ({seen_at_kill} before the kill), distinct {}, duplicates {}, \
         in flight at kill {}, success at kill {done_at_kill}, all done {took:?} after restart ({:?} after kill)",
        rx.count(),
        counts.len(),
        dups.len(),
        in_flight.len(),
        killed_at.elapsed()
    );
    assert_eq!(
        counts.len(),
        EVENTS,
        "every delivery received at least once"
    );
    assert!(
        dup_ids.is_subset(&in_flight),
        "duplicates outside what was in flight at the kill: {:?}",
        dup_ids.difference(&in_flight).collect::<Vec<_>>()
    );
    assert!(
        dups.values().all(|&n| n == 2),
        "at most one resend each: {dups:?}"
    );
    // The reclaimed ones carry the lost attempt in the log.
    let lost = db
        .count("hooks.attempts WHERE outcome = 'lease_expired'")
        .await;
    assert_eq!(
        lost as usize,
        in_flight.len(),
        "one lease_expired attempt per delivery the dead sender held"
    );
    let by_second = db
        .client()
        .query_one(
            "SELECT count(*) FROM hooks.attempts WHERE outcome = 'success' AND sender_id = $1",
            &[&second.sender_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(
        by_second as usize >= in_flight.len(),
        "the restarted sender finished the dead one's work"
    );
    drop(second);
    db.cleanup().await;
}

/// SIGTERM while a request is in flight: the sender stops claiming (an event published after the
/// signal stays pending), lets the request finish, records it, and exits 0.
#[tokio::test]
async fn sigterm_lets_in_flight_finish_and_exits_0() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/slow", Reply::ok().delay(Duration::from_secs(2)));
    db.register(&Webhook::new("slow", "acme", "*", &rx.url("/slow")))
        .await;
    let mut sender = Sender::start(
        db.url(),
        SenderOptions {
            shutdown_grace_secs: Some(15),
            ..SenderOptions::default()
        },
    );
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": 1}}))
        .await;
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": 2}}))
        .await;
    wait_until(
        "both requests in flight",
        Duration::from_secs(15),
        || async { rx.count() >= 2 },
    )
    .await;

    sender.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": 3}}))
        .await;
    let status = sender
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the sender did not exit after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let rows: Vec<(String, i32)> = db
        .client()
        .query(
            "SELECT d.status, d.attempt_number FROM hooks.deliveries d JOIN hooks.events e USING (event_id)
              ORDER BY (e.body::jsonb->'data'->>'n')::int",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("success".to_owned(), 1),
            ("success".to_owned(), 1),
            ("pending".to_owned(), 0)
        ],
        "in-flight requests finish and are recorded; nothing new is claimed after SIGTERM"
    );
    assert_eq!(rx.count(), 2);
    db.cleanup().await;
}

/// SIGTERM while a request outlives the grace period: the sender exits 0 soon after the grace,
/// releasing the delivery (due at once, attempt not counted), and another sender delivers it.
#[tokio::test]
async fn sigterm_releases_what_outlives_the_grace_period() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.program(
        "/stuck",
        vec![Reply::ok().delay(Duration::from_secs(20))],
        Reply::ok(),
    );
    db.register(&Webhook::new("stuck", "acme", "*", &rx.url("/stuck")).timeout_ms(30_000))
        .await;
    let mut first = Sender::start(
        db.url(),
        SenderOptions {
            shutdown_grace_secs: Some(1),
            ..SenderOptions::default()
        },
    );
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    wait_until(
        "the request is in flight",
        Duration::from_secs(15),
        || async { rx.count() >= 1 },
    )
    .await;

    let t = Instant::now();
    first.terminate();
    let status = first
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the sender did not exit after the grace period");
    println!("exited {:?} after SIGTERM with grace 1 s", t.elapsed());
    assert!(status.success(), "exit status: {status:?}");
    let (st, attempt, owner): (String, i32, Option<String>) = {
        let r = db
            .client()
            .query_one(
                "SELECT status, attempt_number, lease_owner FROM hooks.deliveries",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (st.as_str(), attempt, owner),
        ("pending", 0, None),
        "released: due again, attempt not counted"
    );

    // Taken at once by another sender (no lease to wait for: the timeout is 30 s).
    let second = Sender::start(db.url(), SenderOptions::default());
    let took = wait_until_sql(
        db.client(),
        "SELECT status = 'success' FROM hooks.deliveries",
        Duration::from_secs(10),
    )
    .await;
    println!("redelivered {took:?} after the second sender started");
    assert_eq!(rx.count(), 2, "sent once by each sender");
    drop(second);
    db.cleanup().await;
}
