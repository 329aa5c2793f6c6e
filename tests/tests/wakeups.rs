//! Wake-ups with the real sender: with a 10 s poll interval, only NOTIFY (or the sender's own
//! claim-again loop) can explain a delivery within a second or two of the commit. A lost wake-up
//! shows up as a delivery that waits for the poll tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;

const SLOW_POLL_MS: u64 = 10_000;

async fn started(db: &TestDb, sender: &Sender) {
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;
}

/// A login with no privilege at all, holding the advisory keys `keys_sql` takes on its session
/// (any role may take any advisory lock key). `end` closes the session; `drop_role` drops the
/// role once the test database is gone.
struct KeyHolder {
    role: String,
    _session: tokio_postgres::Client,
}

impl KeyHolder {
    async fn hold(db: &TestDb, keys_sql: &str) -> Self {
        use beema_hooks_e2e::db::{connect, with_user};
        let role = beema_hooks_e2e::unique_name("key_holder");
        db.client()
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .expect("a role with no privilege");
        let session = connect(&with_user(db.url(), &role)).await;
        session
            .batch_execute(keys_sql)
            .await
            .expect("any role takes advisory keys");
        KeyHolder {
            role,
            _session: session,
        }
    }

    fn end(self) -> String {
        self.role
    }
}

async fn drop_role(role: &str) {
    beema_hooks_e2e::db::connect(&beema_hooks_e2e::db::admin_url())
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .expect("drop the role");
}

/// A sender polling only every [`SLOW_POLL_MS`], with `extra_args`, once it has claimed.
async fn slow_sender(db: &TestDb, extra_args: &[&str]) -> Sender {
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            poll_interval_ms: SLOW_POLL_MS,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            ..SenderOptions::default()
        },
    );
    started(db, &sender).await;
    sender
}

/// A sender polling every [`SLOW_POLL_MS`] and lingering `linger_ms` after rows, woken from idle
/// by a first publish (`n` 0) that `rx` has received: it is lingering now.
async fn woken_lingering_sender(db: &TestDb, rx: &Receiver, linger_ms: u64) -> Sender {
    let sender = slow_sender(db, &["--linger-ms", &linger_ms.to_string()]).await;
    until_idle(db, &sender).await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": 0}}))
        .await;
    wait_until("the first delivery", Duration::from_secs(2), || async {
        rx.count() >= 1
    })
    .await;
    sender
}

/// Waits until `sender` is marked idle in `hooks.senders`.
async fn until_idle(db: &TestDb, sender: &Sender) {
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT NOT awake FROM hooks.senders WHERE sender_id = '{}'",
            sender.sender_id
        ),
        Duration::from_secs(10),
    )
    .await;
}

/// An idle sender is woken by each commit: five publishes, spaced so that the sender goes back
/// to sleep in between, are each delivered well before the 10 s poll tick.
#[tokio::test]
async fn an_idle_sender_is_woken_by_each_commit() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let sender = slow_sender(&db, &[]).await;
    // Let its first (empty) claims finish so that it sleeps.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut latencies = Vec::new();
    for i in 0..5usize {
        let t = Instant::now();
        db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": i}}))
            .await;
        wait_until("the delivery arrives", Duration::from_secs(15), || async {
            rx.count() > i
        })
        .await;
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("commit -> receiver latencies with a {SLOW_POLL_MS} ms poll: {latencies:?}");
    for (i, l) in latencies.iter().enumerate() {
        assert!(
            *l < Duration::from_secs(2),
            "publish {i} took {l:?}: the sender was not woken and waited for its poll tick"
        );
    }
    drop(sender);
    db.cleanup().await;
}

/// Rounds of four publishers committing at nearly the same moment, so that commits land while
/// the sender is claiming, going idle, or asleep. Each round must be delivered within 2 s
/// (the poll tick is 10 s): a round that is not had its wake-up lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_never_lose_a_wake_up() {
    const PUBLISHERS: usize = 4;
    const ROUNDS: usize = 60;
    let db = TestDb::new().await;
    let rx = Arc::new(Receiver::start().await);
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let sender = slow_sender(&db, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(Arc::new(db.connect().await));
    }
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (p, client) in publishers.iter().enumerate() {
            let client = client.clone();
            // Staggered by a few milliseconds, differently each round.
            let stagger = Duration::from_micros(((round * 7919 + p * 3571) % 6000) as u64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(stagger).await;
                client
                    .execute(
                        "SELECT hooks.publish(jsonb_build_object('event', 'a/b', 'data',
                             jsonb_build_object('tenantId', 'acme', 'p', $1::int, 'round', $2::int)))",
                        &[&(p as i32), &(round as i32)],
                    )
                    .await
                    .expect("publish");
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
        let want = (round + 1) * PUBLISHERS;
        let deadline = Instant::now() + Duration::from_secs(2);
        while rx.count() < want {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {want} delivered 2 s after the commits: a wake-up was lost (poll tick is {SLOW_POLL_MS} ms)",
                rx.count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slowest = slowest.max(start.elapsed());
        // Sometimes let the sender fall asleep, sometimes publish again while it is busy.
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let expected = PUBLISHERS * ROUNDS;
    println!(
        "wake-ups: {ROUNDS} rounds of {PUBLISHERS} concurrent publishes, expected {expected}, received {}, slowest round {slowest:?}",
        rx.count()
    );
    assert_eq!(rx.counts_by_webhook_id().len(), expected);
    drop(sender);
    db.cleanup().await;
}

/// A publisher whose commit takes long after its wake-up check (here the application's own
/// deferred trigger, sleeping 1.5 s after `hooks.publish`; in production a slow WAL flush or a
/// synchronous standby) saw the sender awake and sent no NOTIFY. The sender, going idle while
/// that commit is in progress, waits for committing publishers at most 200 ms: it must go on
/// looking for them, not sleep until its poll tick (10 s).
#[tokio::test]
async fn a_commit_slower_than_the_idle_sender_waits_for_is_still_delivered_at_once() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    db.client()
        .batch_execute(
            "CREATE TABLE slow_commit (id int);
             CREATE FUNCTION slow_commit_sleep() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit_sleep AFTER INSERT ON slow_commit
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit_sleep();",
        )
        .await
        .expect("a table whose rows make commits slow");
    // Lingering 1 s after rows: awake when the slow commit checks, idle before it is visible.
    let sender = woken_lingering_sender(&db, &rx, 1000).await;

    // (deferred triggers fire in the order queued: the wake-up check, then the sleep)
    let began = Instant::now();
    db.connect()
        .await
        .batch_execute(
            "BEGIN;
             SELECT hooks.publish('{\"event\": \"a/b\", \"data\": {\"tenantId\": \"acme\", \"n\": 1}}');
             INSERT INTO slow_commit VALUES (1);
             COMMIT",
        )
        .await
        .expect("the slow commit");
    assert!(
        began.elapsed() >= Duration::from_millis(1400),
        "the commit was slow"
    );
    wait_until(
        "the slow commit's delivery, without waiting for the poll tick",
        Duration::from_secs(3),
        || async { rx.count() >= 2 },
    )
    .await;
    drop(sender);
    db.cleanup().await;
}

/// After delivering, the sender lingers (`--linger-ms`): it stays marked awake and looks for new
/// rows every millisecond, so commits in that window send no NOTIFY and are still delivered at
/// once (the poll tick is 10 s); after the linger time it goes idle, and the next commit
/// notifies again.
#[tokio::test]
async fn a_lingering_sender_is_found_by_commits_without_notify_then_goes_idle() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let (_listener, mut notes) = db.listen("hooks_deliveries").await;
    // Idle: the first commit notifies, and wakes it.
    let sender = woken_lingering_sender(&db, &rx, 1500).await;
    let woke = tokio::time::timeout(Duration::from_secs(2), notes.recv()).await;
    assert!(
        matches!(woke, Ok(Some(_))),
        "the commit to an idle sender notifies"
    );

    // Lingering: commits 200 ms apart (each delivery starts the linger time again) are
    // delivered without any NOTIFY.
    for n in 1..=5usize {
        tokio::time::sleep(Duration::from_millis(200)).await;
        db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": n}}))
            .await;
        wait_until(
            "a delivery while lingering",
            Duration::from_secs(2),
            || async { rx.count() > n },
        )
        .await;
    }
    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(300), notes.recv()).await {
        panic!("a commit notified while the sender lingered: {n:?}");
    }

    // After the linger time: idle again, and a commit notifies.
    until_idle(&db, &sender).await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": 6}}))
        .await;
    let woke = tokio::time::timeout(Duration::from_secs(2), notes.recv()).await;
    assert!(
        matches!(woke, Ok(Some(_))),
        "a commit after the linger time notifies"
    );
    wait_until("the last delivery", Duration::from_secs(2), || async {
        rx.count() >= 7
    })
    .await;
    drop(sender);
    db.cleanup().await;
}

/// The sender is updated after the extension, but may meet an older one: against 0.1.0, whose
/// `hooks.claim` has no `stay_awake`, it says so, does not linger, and delivers as before; after
/// `ALTER EXTENSION beema_hooks UPDATE` a new sender lingers again.
#[tokio::test]
async fn the_sender_delivers_from_a_0_1_0_database_without_lingering() {
    let db = TestDb::with_version("0.1.0").await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let sender = slow_sender(&db, &[]).await;
    for n in 0..3usize {
        db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": n}}))
            .await;
        wait_until("a delivery from 0.1.0", Duration::from_secs(2), || async {
            rx.count() > n
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sender.log().contains("older than 0.2.0"),
        "the sender names the old extension: {}",
        sender.log()
    );
    // (the sender writes results in batches after the requests: wait for the third)
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 3 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(10),
    )
    .await;
    drop(sender);

    db.client()
        .batch_execute("ALTER EXTENSION beema_hooks UPDATE")
        .await
        .expect("ALTER EXTENSION beema_hooks UPDATE");
    let (_listener, mut notes) = db.listen("hooks_deliveries").await;
    let sender = slow_sender(&db, &["--linger-ms", "1500"]).await;
    until_idle(&db, &sender).await;
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": 3}}))
        .await;
    wait_until(
        "the first delivery after the update",
        Duration::from_secs(2),
        || async { rx.count() >= 4 },
    )
    .await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), notes.recv()).await {}
    db.publish(&json!({"event": "a/b", "data": {"tenantId": "acme", "n": 4}}))
        .await;
    wait_until(
        "a delivery while lingering",
        Duration::from_secs(2),
        || async { rx.count() >= 5 },
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notes.recv())
            .await
            .is_err(),
        "after the update the sender lingers, so a commit right after a delivery does not notify"
    );
    assert!(!sender.log().contains("older than 0.2.0"));
    drop(sender);
    db.cleanup().await;
}

/// Two-phase commit (issue 14, item 7): `PREPARE TRANSACTION` refuses a transaction that has
/// NOTIFYed. In the native flavor the wake-up's NOTIFY is sent by a commit callback, so a
/// publishing transaction prepares as it is, and after COMMIT PREPARED the idle sender's poll
/// delivers it; in the portable flavor PREPARE refuses it (0A000) while no sender is awake, and
/// `SET LOCAL hooks.wake = 'poll'` makes it work there. ROLLBACK PREPARED sends nothing
/// (README, "Wake-ups"). On a cluster of the test's own, which allows prepared transactions;
/// with the flavor of BEEMA_FLAVOR.
#[tokio::test]
async fn a_prepared_transaction_publishes_and_is_delivered_after_commit_prepared() {
    use beema_hooks_e2e::chaos_helpers::Cluster;
    use beema_hooks_e2e::db::{connect, portable_sql, psql_file, publish_on};
    use beema_hooks_e2e::Flavor;

    let cluster = Cluster::start();
    let admin = connect(&cluster.url()).await;
    admin
        .batch_execute("CREATE DATABASE twophase")
        .await
        .expect("create database");
    let url = cluster.url_of("twophase");
    match Flavor::from_env() {
        Flavor::Native => connect(&url)
            .await
            .batch_execute("CREATE EXTENSION beema_hooks")
            .await
            .expect("extension"),
        Flavor::Portable => {
            psql_file(&url, &portable_sql()).expect("portable install");
        }
    }
    let c = connect(&url).await;
    let rx = Receiver::start().await;
    c.execute(
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES ('acme', 'w', 'tx/*', $1, 'secret-2pc')",
        &[&rx.url("/hook")],
    )
    .await
    .expect("webhook");
    let _sender = Sender::start(
        &url,
        SenderOptions {
            poll_interval_ms: 1_000,
            ..SenderOptions::default()
        },
    );
    wait_until_sql(
        &c,
        "SELECT EXISTS (SELECT 1 FROM hooks.senders)",
        Duration::from_secs(15),
    )
    .await;
    // (idle: it claimed nothing, so a publisher would NOTIFY)
    tokio::time::sleep(Duration::from_millis(300)).await;

    let flavor = Flavor::from_env();
    let p = connect(&url).await;
    // With no setting: the native flavor's commit callback sends no NOTIFY from a transaction
    // that is prepared, so PREPARE works; the portable flavor (no library, no callback) queues
    // the NOTIFY at once, PREPARE refuses it (0A000), and hooks.wake = 'poll' is its way.
    p.batch_execute("BEGIN").await.expect("begin");
    publish_on(
        &p,
        &json!({"event": "tx/plain", "data": {"tenantId": "acme"}}),
    )
    .await;
    let prepared = p.batch_execute("PREPARE TRANSACTION 'beema_plain'").await;
    match flavor {
        Flavor::Native => {
            prepared.expect("PREPARE of a publishing transaction");
            p.batch_execute("COMMIT PREPARED 'beema_plain'")
                .await
                .expect("COMMIT PREPARED");
        }
        Flavor::Portable => {
            let refused = prepared.expect_err("PREPARE after a NOTIFY");
            assert_eq!(refused.code().map(|s| s.code()), Some("0A000"), "{refused}");
            p.batch_execute("ROLLBACK").await.ok();
        }
    }

    // prepared, then rolled back: nothing is ever sent
    p.batch_execute("BEGIN; SET LOCAL hooks.wake = 'poll'")
        .await
        .expect("begin");
    publish_on(
        &p,
        &json!({"event": "tx/rolled-back", "data": {"tenantId": "acme"}}),
    )
    .await;
    p.batch_execute("PREPARE TRANSACTION 'beema_rollback'")
        .await
        .expect("PREPARE");
    p.batch_execute("ROLLBACK PREPARED 'beema_rollback'")
        .await
        .expect("ROLLBACK PREPARED");

    p.batch_execute("BEGIN; SET LOCAL hooks.wake = 'poll'")
        .await
        .expect("begin");
    publish_on(
        &p,
        &json!({"event": "tx/prepared", "data": {"tenantId": "acme"}}),
    )
    .await;
    p.batch_execute("PREPARE TRANSACTION 'beema_poll'")
        .await
        .expect("PREPARE with hooks.wake = poll");
    p.batch_execute("COMMIT PREPARED 'beema_poll'")
        .await
        .expect("COMMIT PREPARED");
    let expected: Vec<&str> = match flavor {
        Flavor::Native => vec!["tx/plain", "tx/prepared"],
        Flavor::Portable => vec!["tx/prepared"],
    };
    wait_until(
        "the prepared publishes delivered by the poll",
        Duration::from_secs(20),
        || async { rx.count() >= expected.len() },
    )
    .await;
    // one more poll: the rolled-back one never comes
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let got = rx.requests();
    let mut events: Vec<String> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or("").to_owned())
        .collect();
    events.sort();
    assert_eq!(events, expected, "only the committed events");
    for r in &got {
        r.verify("secret-2pc").expect("signed");
    }
}

/// A webhook's claim lock is not an advisory key any role can hold. A role with no privilege
/// at all holds the advisory key that claims took per webhook until this was fixed (0.2.0 too:
/// `pg_advisory_lock(1751936875, webhook_id)`) and the claims' turn:
/// every event of that webhook is still delivered, at the in-flight cap (held, such a key kept
/// the webhook's deliveries passed over as "another sender is claiming it", for as long as it
/// was held).
#[tokio::test]
async fn a_webhook_claim_key_held_by_any_role_holds_back_no_delivery() {
    const N: usize = 20;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/hook", Reply::ok());
    let (webhook_id, _) = db
        .register(&Webhook::new("w", "acme", "held/*", &rx.url("/hook")))
        .await;
    db.client()
        .batch_execute("INSERT INTO hooks.settings (name, value) VALUES ('hooks.max_in_flight_per_webhook', 4)")
        .await
        .expect("an in-flight cap");

    let holder = KeyHolder::hold(
        &db,
        &format!(
            "SELECT pg_advisory_lock(1751936875, {webhook_id}), pg_advisory_lock(7233327398000003)"
        ),
    )
    .await;

    let sender = Sender::start(
        db.url(),
        SenderOptions {
            poll_interval_ms: 200,
            ..SenderOptions::default()
        },
    );
    started(&db, &sender).await;
    let p = db.connect().await;
    for i in 0..N {
        p.batch_execute(&format!(
            r#"SELECT hooks.publish('{{"event": "held/{i}", "data": {{"tenantId": "acme"}}}}')"#
        ))
        .await
        .unwrap_or_else(|e| panic!("publish {i}: {e:?}"));
    }
    wait_until(
        "every event delivered while the keys are held",
        Duration::from_secs(20),
        || async { rx.count() >= N },
    )
    .await;
    assert_eq!(rx.count(), N);
    // (the sender writes results in batches, after the requests: wait for them to be recorded)
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT count(*) = {N} FROM hooks.deliveries WHERE webhook_id = {webhook_id} AND status = 'success'"
        ),
        Duration::from_secs(20),
    )
    .await;

    let role = holder.end();
    drop(sender);
    db.cleanup().await;
    drop_role(&role).await;
}

/// Advisory locks are no lever (issue 14, item 6): any role may take any advisory lock key, and
/// a login with no privilege at all holds the wake-up's "commit" key exclusively and its
/// "awake" key shared, and the claims' turn ("claims") exclusively. Publishing commits neither
/// wait nor fail (each runs with a 200 ms lock_timeout, which a wait for the held key would
/// exceed), and every event is still delivered: the NOTIFY a held commit key makes publishers
/// send, or at worst the senders' poll (README, "Wake-ups"); the sender's claims go on without
/// their turn (README, "Claims take turns").
#[tokio::test]
async fn advisory_locks_held_by_any_role_stall_no_commit() {
    const N: usize = 20;
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/hook", Reply::ok());
    db.register(&Webhook::new("w", "acme", "lock/*", &rx.url("/hook")))
        .await;
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            poll_interval_ms: 1_000,
            ..SenderOptions::default()
        },
    );
    started(&db, &sender).await;

    let holder = KeyHolder::hold(
        &db,
        "SELECT pg_advisory_lock(7233327398000001), pg_advisory_lock_shared(7233327398000002),
                pg_advisory_lock(7233327398000003)",
    )
    .await;

    let p = db.connect().await;
    for i in 0..N {
        p.batch_execute(&format!(
            r#"BEGIN;
               SET LOCAL lock_timeout = '200ms';
               SELECT hooks.publish('{{"event": "lock/{i}", "data": {{"tenantId": "acme"}}}}');
               COMMIT;"#
        ))
        .await
        .unwrap_or_else(|e| panic!("publishing commit {i} while the keys are held: {e:?}"));
    }
    wait_until("every event delivered", Duration::from_secs(20), || async {
        rx.count() >= N
    })
    .await;
    assert_eq!(rx.count(), N);

    let role = holder.end();
    drop(sender);
    db.cleanup().await;
    drop_role(&role).await;
}
