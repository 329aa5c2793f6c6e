//! Installing the portable flavor's plain-SQL file (`scripts/portable.sh`, `psql -f`) as a user
//! of managed Postgres does: by the database's owner, who is not a superuser. Run again over an
//! install filled with rows in every state, it changes nothing and keeps every row; over the
//! native extension or a foreign schema `hooks` it stops with 42P06 and changes nothing.

use beema_hooks_e2e::db::{portable_sql, psql_file, with_database, with_user, OWNER};
use std::time::Duration;

use beema_hooks_e2e::{
    wait_until, Flavor, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;

#[tokio::test]
async fn plain_sql_rerun_keeps_every_row_and_refuses_other_installs() {
    let db = TestDb::of(Flavor::Portable).await;
    let owner_is_superuser: bool = db
        .one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .await;
    assert!(
        !owner_is_superuser,
        "the portable install must be made by a non-superuser owner"
    );

    // Rows in every state: pending, in flight, retrying, succeeded, failed, cancelled.
    let c = db.client();
    let (hook, _) = db
        .register(&Webhook::new("crm", "acme", "claim/*", "https://crm.example/").retry(2, 100))
        .await;
    let (other, _) = db
        .register(&Webhook::new(
            "other",
            "acme",
            "policy/*",
            "https://other.example/",
        ))
        .await;
    for i in 0..6 {
        db.publish(&json!({"event": "claim/opened", "id": format!("c{i}"), "data": {"tenantId": "acme", "n": i, "name": "Zoë"}}))
            .await;
    }
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    let claimed = c
        .query("SELECT delivery_id, attempt_number, lease_token FROM hooks.claim('s1', 4) WHERE webhook_id = $1", &[&hook])
        .await
        .expect("claim");
    assert!(claimed.len() >= 3, "claimed {}", claimed.len());
    let result = |i: usize, code: i32| {
        json!({"delivery_id": claimed[i].get::<_, i64>(0), "attempt_number": claimed[i].get::<_, i32>(1),
               "lease_token": claimed[i].get::<_, Option<i64>>(2), "status_code": code,
               "error": if code < 300 { serde_json::Value::Null } else { json!("HTTP 500") },
               "response_body": "", "duration_ms": 3, "retry_after_ms": null})
    };
    let results = json!([result(0, 204), result(1, 500)]);
    c.query_one(
        "SELECT hooks.complete('s1', $1::text::jsonb)",
        &[&results.to_string()],
    )
    .await
    .expect("complete");
    c.execute(
        "SELECT hooks.disable_webhook($1, 'paused for the test')",
        &[&other],
    )
    .await
    .expect("disable");
    let states: Vec<String> = c
        .query(
            "SELECT DISTINCT status FROM hooks.deliveries ORDER BY 1",
            &[],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(states.len() >= 4, "rows in too few states: {states:?}");
    let before = db.snapshot_rows().await;

    // Rerun by the owner: nothing to do, nothing changed.
    let out = psql_file(db.url(), &portable_sql()).expect("rerunning the plain-SQL file");
    assert!(
        out.contains("already installed: nothing to do"),
        "rerun said: {out}"
    );
    assert_eq!(db.snapshot_rows().await, before, "a rerun changed rows");
    let version: String = db
        .one("SELECT obj_description('hooks'::regnamespace, 'pg_namespace')")
        .await;
    assert_eq!(
        version,
        format!("beema_hooks {} portable", env!("CARGO_PKG_VERSION"))
    );

    // The rerun database still works: publish, claim a signed delivery.
    db.publish(&json!({"event": "claim/settled", "data": {"tenantId": "acme"}}))
        .await;
    let signed: bool = db
        .one(
            "SELECT hooks.verify(c.body, w.secret, c.headers ->> 'X-Beema-Signature')
                FROM hooks.claim('s2', 10) c JOIN hooks.webhooks w USING (webhook_id)
               WHERE c.event_type = 'claim/settled'",
        )
        .await;
    assert!(signed);

    // Over the native extension: refused, nothing changed.
    let native = TestDb::of(Flavor::Native).await;
    let err = psql_file(native.url(), &portable_sql())
        .expect_err("the plain file must refuse a native database");
    assert!(err.contains("belongs to the native extension"), "{err}");
    let ext: i64 = native
        .one("SELECT count(*) FROM pg_extension WHERE extname = 'beema_hooks'")
        .await;
    assert_eq!(ext, 1);

    // Over a schema hooks of something else: refused, named.
    let foreign = TestDb::of(Flavor::Portable).await;
    foreign
        .client()
        .batch_execute("COMMENT ON SCHEMA hooks IS 'beema_hooks 0.2.9 portable'")
        .await
        .expect("comment");
    let err = psql_file(foreign.url(), &portable_sql())
        .expect_err("the plain file must refuse another version");
    assert!(
        err.contains("0.2.9") && err.contains("is not beema_hooks"),
        "{err}"
    );

    // The owner's URL is what a managed-Postgres user has: the owner role, no superuser.
    assert_eq!(
        db.url(),
        with_user(
            &with_database(&beema_hooks_e2e::db::admin_url(), db.name()),
            OWNER
        )
    );
}

/// The owner of a managed database (not a superuser: `ALTER DATABASE ... SET` of a setting the
/// server does not know is refused to it) sets the in-flight cap as a row of `hooks.settings`,
/// and the real sender honours it, even with a higher cap in its own connection string's
/// options (a row beats what a session sets): README, "Settings".
#[tokio::test]
async fn the_owner_sets_the_cap_in_hooks_settings_and_the_sender_keeps_it() {
    const N: usize = 60;
    const CAP: usize = 2;
    let db = TestDb::of(Flavor::Portable).await;
    let c = db.client();
    let refused = c
        .batch_execute(&format!(
            "ALTER DATABASE {} SET hooks.max_in_flight_per_webhook = {CAP}",
            db.name()
        ))
        .await
        .expect_err("a non-superuser owner may not set an unknown setting per database");
    assert_eq!(refused.code().map(|s| s.code()), Some("42501"), "{refused}");
    c.execute(
        "INSERT INTO hooks.settings (name, value) VALUES ('hooks.max_in_flight_per_webhook', $1)",
        &[&(CAP as i32)],
    )
    .await
    .expect("the owner writes hooks.settings");

    let rx = Receiver::start().await;
    rx.always("/one", Reply::ok().delay(Duration::from_millis(30)));
    let (_, secret) = db
        .register(&Webhook::new("one", "acme", "one/*", &rx.url("/one")))
        .await;
    c.execute(
        "SELECT count(hooks.publish(jsonb_build_object('event', 'one/item', 'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
           FROM generate_series(1, $1::bigint) g",
        &[&(N as i64)],
    )
    .await
    .expect("publish");
    let url = format!(
        "{}?options=-c%20hooks.max_in_flight_per_webhook%3D50",
        db.url()
    );
    let sender = Sender::start(
        &url,
        SenderOptions {
            concurrency: 16,
            ..SenderOptions::default()
        },
    );
    wait_until("every delivery", Duration::from_secs(30), || async {
        rx.requests_to("/one").len() >= N
    })
    .await;
    assert!(
        rx.max_concurrent("/one") <= CAP,
        "{} requests at once, over the cap of {CAP} in hooks.settings",
        rx.max_concurrent("/one")
    );
    for r in rx.requests_to("/one") {
        r.verify(&secret).expect("signed");
    }
    drop(sender);
}
