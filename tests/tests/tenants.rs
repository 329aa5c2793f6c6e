//! Roles bound to tenants (issue 14, items 1-3), with real logins and the real sender: a login
//! granted tenant A publishes for A only, whatever it sets; an admin granted A cannot read,
//! redirect, replay, retry, rotate or redeliver anything of tenant B; and the sender delivers
//! each tenant's events to that tenant's receiver only. README, "Tenants bound to roles".

use std::time::Duration;

use beema_hooks_e2e::chaos_helpers::sqlstate_of;
use beema_hooks_e2e::db::{connect, with_user};
use beema_hooks_e2e::{
    unique_name, wait_until, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::Value;

/// The SQLSTATE of `sql` run by `client`, or "ok".
async fn outcome(client: &tokio_postgres::Client, sql: &str) -> String {
    match sqlstate_of(client, sql).await {
        Ok(()) => "ok".to_owned(),
        Err((code, _, _)) => code,
    }
}

#[tokio::test]
async fn a_tenant_login_acts_for_its_tenant_only_whatever_it_sets() {
    let db = TestDb::new().await;
    let c = db.client();
    let rx = Receiver::start().await;
    rx.always("/a", Reply::ok());
    rx.always("/b", Reply::ok());
    let (a_webhook, _) = db
        .register(&Webhook::new("a", "A", "x/*", &rx.url("/a")))
        .await;
    let (b_webhook, b_secret) = db
        .register(&Webhook::new("b", "B", "x/*", &rx.url("/b")))
        .await;
    let b_event = db
        .publish(&serde_json::json!({"event": "x/legit", "id": "b-1", "data": {"tenantId": "B"}}))
        .await;
    let b_delivery: i64 = db
        .one(&format!(
            "SELECT delivery_id FROM hooks.outbox WHERE event_id = {b_event}"
        ))
        .await;

    let publisher = unique_name("tenant_a_pub");
    let admin = unique_name("tenant_a_admin");
    c.batch_execute(&format!(
        "CREATE ROLE {publisher} LOGIN IN ROLE hooks_publisher;
         CREATE ROLE {admin} LOGIN IN ROLE hooks_admin;
         SELECT hooks.grant_tenant('{publisher}', 'A'), hooks.grant_tenant('{admin}', 'A');"
    ))
    .await
    .expect("roles and grants");

    // The publisher of A: the issue's repro (RESET, then publish the victim's event), the
    // setting pointed at B, and the internal function with another role named.
    let p = connect(&with_user(db.url(), &publisher)).await;
    let victim =
        r#"SELECT hooks.publish('{"event": "x/stolen", "id": "k1", "data": {"tenantId": "B"}}')"#;
    assert_eq!(
        outcome(&p, &format!("RESET hooks.tenant_id; {victim}")).await,
        "42501"
    );
    assert_eq!(
        outcome(&p, &format!("SET hooks.tenant_id = 'B'; {victim}")).await,
        "42501"
    );
    assert_eq!(
        outcome(&p, r#"SELECT hooks._publish('{"event": "x/stolen", "data": {"tenantId": "B"}}', 'postgres')"#).await,
        "42501"
    );
    assert_eq!(
        outcome(&p, "INSERT INTO hooks.events (tenant_id, event_type, event_key, body) VALUES ('B', 'x/y', 'k1', '{}')").await,
        "42501"
    );
    assert_eq!(
        outcome(
            &p,
            r#"RESET hooks.tenant_id;
               BEGIN;
               SELECT set_config('hooks.tenant_id', 'A', true);
               SELECT hooks.publish('{"event": "x/own", "id": "a-1", "data": {"tenantId": "A"}}');
               COMMIT;"#
        )
        .await,
        "ok",
        "the publisher publishes for its own tenant"
    );

    // The admin of A, with and without the setting pointed at B: B's rows are invisible, and
    // no function reaches them (P0002: no such row, as far as it can tell).
    let a = connect(&with_user(db.url(), &admin)).await;
    for setting in ["RESET hooks.tenant_id", "SET hooks.tenant_id = 'B'"] {
        a.batch_execute(setting).await.unwrap();
        let seen: i64 = a
            .query_one(
                "SELECT (SELECT count(*) FROM hooks.webhooks WHERE tenant_id = 'B')
                      + (SELECT count(*) FROM hooks.events WHERE tenant_id = 'B')
                      + (SELECT count(*) FROM hooks.deliveries WHERE tenant_id = 'B')
                      + (SELECT count(*) FROM hooks.delivery_log WHERE tenant_id = 'B')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "{setting}: the admin of A sees rows of B");
        for call in [
            format!(
                "SELECT hooks.update_webhook({b_webhook}, '{{\"url\": \"{}\"}}')",
                rx.url("/a")
            ),
            format!("SELECT hooks.replay_event({b_event})"),
            format!("SELECT hooks.retry_delivery({b_delivery})"),
            format!("SELECT hooks.rotate_secret({b_webhook})"),
            format!("SELECT hooks.redeliver_failed({b_webhook}, now() - interval '1 day')"),
            format!("SELECT hooks.test_webhook({b_webhook})"),
            format!("UPDATE hooks.webhooks SET tenant_id = 'B' WHERE webhook_id = {a_webhook}"),
            format!("SELECT hooks.grant_tenant('{admin}', 'B')"),
            format!("SELECT hooks.grant_tenant('{publisher}')"),
        ] {
            let got = outcome(&a, &call).await;
            // (moving its own webhook to B: refused, or with the setting at B, no row to move)
            let nothing_to_move = call.starts_with("UPDATE") && setting.starts_with("SET");
            assert!(
                got == "P0002" || got == "42501" || (nothing_to_move && got == "ok"),
                "{setting}; {call}: {got}"
            );
        }
    }
    assert_eq!(
        db.count(&format!(
            "hooks.webhooks WHERE webhook_id = {a_webhook} AND tenant_id = 'A'"
        ))
        .await,
        1
    );

    // The real sender, as the owner: A's receiver gets A's event only, B's receiver B's only,
    // signed with B's unchanged secret.
    let sender = Sender::start(db.url(), SenderOptions::default());
    wait_until("both deliveries", Duration::from_secs(30), || async {
        rx.count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tenants = |path: &str| -> Vec<(String, String)> {
        rx.requests_to(path)
            .iter()
            .map(|r| {
                let body: Value = r.json();
                (
                    body["event"].as_str().unwrap_or("").to_owned(),
                    body["data"]["tenantId"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(tenants("/a"), vec![("x/own".to_owned(), "A".to_owned())]);
    assert_eq!(tenants("/b"), vec![("x/legit".to_owned(), "B".to_owned())]);
    rx.requests_to("/b")[0]
        .verify(&b_secret)
        .expect("B's secret was not rotated");
    assert_eq!(
        db.count("hooks.events WHERE event_key = 'k1'").await,
        0,
        "nothing published for B by A"
    );
    drop(sender);

    drop((p, a));
    db.cleanup().await;
    let admin_client = connect(&beema_hooks_e2e::db::admin_url()).await;
    admin_client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {publisher}; DROP ROLE IF EXISTS {admin};"
        ))
        .await
        .expect("drop the test roles");
}
