//! Connection poolers (issue 14, item 8), with Debian's PgBouncer in front of the test cluster:
//! publishing through a transaction pooler works and wakes the sender; a tenant set with
//! `set_config(..., true)` does not outlive its transaction on the pooled server session; a
//! sender pointed at a transaction pooler exits with a clear error, and one behind a
//! session-mode pool works. README, "Connection poolers".

use std::time::Duration;

use beema_hooks_e2e::chaos_helpers::{LoggedSender, PgBouncer};
use beema_hooks_e2e::db::{admin_url, connect};
use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};

/// The cluster's host and port, and the user and database of `db`.
fn parts(db: &TestDb) -> ((String, u16), String) {
    let admin: tokio_postgres::Config = admin_url().parse().expect("admin url");
    let host = match &admin.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP host, not {other:?}"),
    };
    let mine: tokio_postgres::Config = db.url().parse().expect("db url");
    (
        (host, admin.get_ports()[0]),
        mine.get_user().expect("a user").to_owned(),
    )
}

#[tokio::test]
async fn publishers_behind_a_transaction_pooler_wake_the_sender() {
    const SLOW_POLL_MS: u64 = 20_000;
    const N: usize = 12;
    let db = TestDb::new().await;
    let ((host, port), user) = parts(&db);
    let bouncer = PgBouncer::start((&host, port), "transaction", &[&user]);
    let rx = Receiver::start().await;
    rx.always("/hook", Reply::ok());
    let (_, secret) = db
        .register(&Webhook::new("pooled", "acme", "pool/*", &rx.url("/hook")))
        .await;
    // the sender on Postgres itself, polling so rarely that only a NOTIFY can wake it in time
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            poll_interval_ms: SLOW_POLL_MS,
            ..SenderOptions::default()
        },
    );
    wait_until_sql(
        db.client(),
        "SELECT EXISTS (SELECT 1 FROM hooks.senders)",
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // three application connections through the pooler, sharing its few server sessions; the
    // tenant set per transaction, as the README says
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(connect(&bouncer.url(&user, db.name())).await);
    }
    for i in 0..N {
        apps[i % 3]
            .batch_execute(&format!(
                r#"BEGIN;
                   SELECT set_config('hooks.tenant_id', 'acme', true);
                   SELECT hooks.publish('{{"event": "pool/{i}", "data": {{"tenantId": "acme"}}}}');
                   COMMIT;"#
            ))
            .await
            .unwrap_or_else(|e| panic!("publish {i} through the pooler: {e:?}"));
        if i % 4 == 3 {
            // let the sender go idle, so the next commits must wake it
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let waited = wait_until(
        "every event, long before a poll",
        Duration::from_secs(10),
        || async { rx.count() >= N },
    )
    .await;
    assert!(
        waited < Duration::from_millis(SLOW_POLL_MS),
        "woken by NOTIFY, not by the poll"
    );
    assert_eq!(rx.count(), N);
    for r in rx.requests() {
        r.verify(&secret).expect("signed");
    }
    // the transaction's tenant stayed in it: no later client of the pool inherits it
    for app in &apps {
        let rows = app
            .simple_query("SELECT coalesce(current_setting('hooks.tenant_id', true), '')")
            .await
            .unwrap();
        let value = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            value, "",
            "a set_config(..., true) outlived its transaction"
        );
    }
    drop(sender);
    drop(apps);
    db.cleanup().await;
}

#[tokio::test]
async fn a_sender_behind_a_transaction_pooler_exits_with_a_clear_error() {
    let db = TestDb::new().await;
    let ((host, port), user) = parts(&db);
    let bouncer = PgBouncer::start((&host, port), "transaction", &[&user]);
    let mut sender = LoggedSender::start(&bouncer.url(&user, db.name()), "info", &[]);
    let status = sender
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the sender exits by itself");
    assert!(!status.success(), "exit status {status:?}");
    let log = sender.log();
    assert!(
        log.contains("transaction pooler"),
        "the log says why: {log}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_sender_behind_a_session_pool_delivers() {
    let db = TestDb::new().await;
    let ((host, port), user) = parts(&db);
    let bouncer = PgBouncer::start((&host, port), "session", &[&user]);
    let rx = Receiver::start().await;
    rx.always("/hook", Reply::ok());
    db.register(&Webhook::new("session", "acme", "s/*", &rx.url("/hook")))
        .await;
    let mut sender = LoggedSender::start(&bouncer.url(&user, db.name()), "info", &[]);
    db.publish_series("acme", "s/x", 5).await;
    wait_until(
        "every event through the session pool",
        Duration::from_secs(20),
        || async { rx.count() >= 5 },
    )
    .await;
    assert!(
        sender.wait_exit(Duration::from_millis(100)).await.is_none(),
        "still running"
    );
    drop(sender);
    db.cleanup().await;
}
