//! Moving a database between flavors in place (`scripts/move_flavor.sh`), with its data: a
//! portable database with webhooks (one with several event types), events, deliveries in every
//! state, attempts and a watched table moves to the native extension and back; every row is
//! kept each time, sequences continue, the watched table keeps publishing, and the moved
//! database publishes and claims signed deliveries. Then the real sender delivers from it.

use std::process::Command;
use std::time::Duration;

use beema_hooks_e2e::db::{admin_url, connect, publish_on, snapshot_rows, with_database, OWNER};
use beema_hooks_e2e::{wait_until_sql, Flavor, Receiver, Sender, SenderOptions, TestDb, Webhook};

use serde_json::json;

fn move_to(flavor: &str, url: &str) {
    let root = beema_hooks_e2e::repo_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/move_flavor.sh"))
        .args([flavor, url])
        .output()
        .expect("run scripts/move_flavor.sh");
    assert!(
        out.status.success(),
        "move to {flavor} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn c_functions(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
          WHERE p.pronamespace = 'hooks'::regnamespace AND l.lanname = 'c'",
        &[],
    )
    .await
    .expect("pg_proc")
    .get(0)
}

async fn one_i64(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Publishes, claims and checks the X-Beema-Signature of what it claimed.
async fn publishes_and_signs(su: &tokio_postgres::Client, key: &str) {
    publish_on(
        su,
        &json!({"event": "claim/opened", "id": key, "data": {"tenantId": "acme", "name": "Zoë"}}),
    )
    .await;
    let signed: bool = su
        .query_one(
            "SELECT bool_and(hooks.verify(c.body, w.secret, c.headers ->> 'X-Beema-Signature'))
               FROM hooks.claim('mover', 100) c JOIN hooks.webhooks w USING (webhook_id)
              WHERE c.body LIKE '%' || $1 || '%'",
            &[&key],
        )
        .await
        .expect("claim")
        .get(0);
    assert!(
        signed,
        "the moved database's claimed deliveries are not signed right"
    );
}

#[tokio::test]
async fn a_database_moves_between_flavors_and_keeps_every_row() {
    let db = TestDb::of(Flavor::Portable).await;
    let superuser_url = with_database(&admin_url(), db.name());
    let c = db.client();

    let (crm, _) = db
        .register(&Webhook::new("crm", "acme", "claim/*", "https://crm.example/").retry(2, 100))
        .await;
    c.execute(
        "UPDATE hooks.webhooks SET event_types = '{invoice.*,orders/*}' WHERE webhook_id = $1",
        &[&crm],
    )
    .await
    .expect("event_types");
    db.register(&Webhook::new("off", "acme", "policy/*", "https://off.example/").enabled(false))
        .await;
    for i in 0..5 {
        db.publish(&json!({"event": "claim/opened", "id": format!("c{i}"), "data": {"tenantId": "acme", "n": i}})).await;
    }
    // an ordered webhook: one key's head and two deliveries waiting behind it
    let (ledger, _) = db
        .register(&Webhook::new(
            "ledger",
            "acme",
            "ledger/*",
            "https://ledger.example/",
        ))
        .await;
    c.execute(
        "UPDATE hooks.webhooks SET ordering_key = 'data.account' WHERE webhook_id = $1",
        &[&ledger],
    )
    .await
    .expect("ordering_key");
    for seq in 1..=3 {
        db.publish(&json!({"event": "ledger/posted", "data": {"tenantId": "acme", "account": "A-1", "seq": seq}}))
            .await;
    }
    let claimed = c
        .query(
            "SELECT delivery_id, attempt_number, lease_token FROM hooks.claim('s1', 3)",
            &[],
        )
        .await
        .expect("claim");
    let result = |i: usize, code: i32| {
        json!({"delivery_id": claimed[i].get::<_, i64>(0), "attempt_number": claimed[i].get::<_, i32>(1),
               "lease_token": claimed[i].get::<_, Option<i64>>(2), "status_code": code,
               "error": if code < 300 { serde_json::Value::Null } else { json!("HTTP 500") },
               "response_body": "", "duration_ms": 3, "retry_after_ms": null})
    };
    c.query_one(
        "SELECT hooks.complete('s1', $1::text::jsonb)",
        &[&json!([result(0, 204), result(1, 500)]).to_string()],
    )
    .await
    .expect("complete");
    c.batch_execute(
        "CREATE TABLE public.orders (id bigint PRIMARY KEY, tenant text NOT NULL, amount numeric);
         GRANT hooks_publisher TO CURRENT_USER;
         SELECT hooks.watch_table('public.orders', tenant_column => 'tenant');
         INSERT INTO public.orders VALUES (1, 'acme', 10.5);",
    )
    .await
    .expect("a watched table");
    let before = db.snapshot_rows().await;
    // (the move runs as a superuser, and so does the rest: the moved objects are its)
    let su = connect(&superuser_url).await;
    assert!(
        before
            .iter()
            .any(|r| r.starts_with("hooks.webhook_patterns: ")),
        "no multi-pattern rows to move"
    );
    assert_eq!(c_functions(&su).await, 0);
    assert!(
        before.iter().any(|r| r.starts_with("hooks.order_keys: ")),
        "no ordering keys to move"
    );

    // portable -> native
    move_to("native", &superuser_url);
    let su = connect(&superuser_url).await;
    let ext = one_i64(
        &su,
        "SELECT count(*) FROM pg_extension WHERE extname = 'beema_hooks'",
    )
    .await;
    assert_eq!(ext, 1, "no native extension after the move");
    assert!(
        c_functions(&su).await > 0,
        "the native flavor has its Rust functions"
    );
    // every row kept; and the portable install's owner, who acted for every tenant as its
    // owner, now does by a grant (the native install belongs to the superuser)
    let (grants, rows): (Vec<String>, Vec<String>) = snapshot_rows(&su)
        .await
        .into_iter()
        .partition(|r| r.starts_with("hooks.tenant_grants: "));
    assert_eq!(rows, before, "moving to native changed rows");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(
        grants[0].starts_with(&format!("hooks.tenant_grants: ({OWNER},,")),
        "the old owner's grant of every tenant: {grants:?}"
    );
    let next_event: i64 = publish_on(
        &su,
        &json!({"event": "orders/sync", "data": {"tenantId": "acme"}}),
    )
    .await;
    assert_eq!(
        next_event, 10,
        "event ids continue after the move (8 published, 1 watched insert)"
    );
    publishes_and_signs(&su, "after-native").await;
    c.batch_execute("INSERT INTO public.orders VALUES (2, 'acme', 20)")
        .await
        .expect("insert");
    let watched = one_i64(
        &su,
        "SELECT count(*) FROM hooks.events WHERE event_type = 'orders/insert'",
    )
    .await;
    assert_eq!(watched, 2, "the watched table publishes after the move");
    let moved = snapshot_rows(&su).await;

    // native -> portable
    move_to("portable", &superuser_url);
    let su = connect(&superuser_url).await;
    assert_eq!(
        c_functions(&su).await,
        0,
        "C functions left after moving to portable"
    );
    let ext = one_i64(
        &su,
        "SELECT count(*) FROM pg_extension WHERE extname = 'beema_hooks'",
    )
    .await;
    assert_eq!(ext, 0);
    assert_eq!(
        snapshot_rows(&su).await,
        moved,
        "moving back to portable changed rows"
    );
    publishes_and_signs(&su, "after-portable").await;
    c.batch_execute("DELETE FROM public.orders WHERE id = 1")
        .await
        .expect("delete");
    let deleted = one_i64(
        &su,
        "SELECT count(*) FROM hooks.events WHERE event_type = 'orders/delete'",
    )
    .await;
    assert_eq!(deleted, 1, "the watched table publishes after moving back");

    // and the real sender delivers from the moved database (expired leases count as attempts:
    // retryConfig of 5, so every delivery still has attempts left)
    let receiver = Receiver::start().await;
    su.execute(
        "UPDATE hooks.webhooks SET url = $1, enabled = true, retry_config = '{\"maxAttempts\": 5, \"backoffMs\": 100}'",
        &[&receiver.url("/hook")],
    )
    .await
    .expect("url");
    su.execute(
        "UPDATE hooks.queue SET next_attempt_at = now() - interval '1 second' WHERE NOT behind",
        &[],
    )
    .await
    .expect("due now");
    let sender = Sender::start(&superuser_url, SenderOptions::default());
    wait_until_sql(
        &su,
        "SELECT count(*) = 0 FROM hooks.deliveries WHERE status IN ('pending', 'in_flight', 'retrying')",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        receiver.count() > 0,
        "nothing delivered from the moved database"
    );
    let failed = one_i64(
        &su,
        "SELECT count(*) FROM hooks.deliveries WHERE status = 'failed'",
    )
    .await;
    assert_eq!(failed, 0, "deliveries failed after the move");
    let ledger_seqs: Vec<i64> = receiver
        .requests_to("/hook")
        .iter()
        .map(|r| r.json())
        .filter(|v| v["event"] == "ledger/posted")
        .map(|v| v["data"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ledger_seqs,
        vec![1, 2, 3],
        "the ordered key, in order, after two moves"
    );
    drop(sender);
}
