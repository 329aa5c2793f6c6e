//! Backups: a `pg_dump` of a database using beema_hooks, restored with `pg_restore` into a new
//! database, keeps every webhook, event, delivery and attempt (the extension marks its tables
//! with `pg_extension_config_dump`, without which pg_dump would write the extension but none of
//! its rows), and the restored outbox keeps working, with new ids after the restored ones.

use std::process::Command;

use beema_hooks_e2e::chaos_helpers::pg_bin;
use beema_hooks_e2e::db::{admin_url, connect, with_database, TestDb, Webhook};
use serde_json::json;
use tokio_postgres::Client;

/// Row count and a digest of every row, per table of the extension.
async fn fingerprint(client: &Client) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for (table, key) in [
        ("webhooks", "webhook_id"),
        ("events", "event_id"),
        ("deliveries", "delivery_id"),
        ("attempts", "attempt_id"),
        ("senders", "sender_id"),
    ] {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.{key}), ''))
                       FROM hooks.{table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((table.to_owned(), row.get(0), row.get(1)));
    }
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pg_dump_and_restore_keep_the_outbox_and_its_history() {
    let db = TestDb::new().await;
    db.register(&Webhook::new(
        "crm",
        "acme",
        "policy/*",
        "https://crm.example/hook",
    ))
    .await;
    db.register(&Webhook::new("audit", "acme", "*", "https://audit.example/hook").retry(5, 1000))
        .await;
    // a webhook with further patterns: their index (hooks.webhook_patterns) is not dumped, the
    // restore rebuilds it from hooks.webhooks
    let (claims, _) = db
        .register(&Webhook::new(
            "claims",
            "acme",
            "claim/opened",
            "https://claims.example/hook",
        ))
        .await;
    db.client()
        .execute(
            "UPDATE hooks.webhooks SET event_types = '{invoice.created,order.*}' WHERE webhook_id = $1",
            &[&claims],
        )
        .await
        .unwrap();
    for i in 0..5 {
        db.publish(&json!({"event": "policy/bound", "id": format!("e{i}"),
                           "data": {"tenantId": "acme", "n": i}}))
            .await;
    }
    // history: successes, a failure waiting for its retry, and rows still pending
    db.client()
        .batch_execute(
            "SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object(
                        'delivery_id', delivery_id, 'attempt_number', attempt_number,
                        'status_code', CASE WHEN delivery_id % 2 = 0 THEN 200 ELSE 503 END))
                      FROM hooks.claim('s1', 6)));",
        )
        .await
        .unwrap();
    let before = fingerprint(db.client()).await;
    let statuses: i64 = db
        .one("SELECT count(DISTINCT status) FROM hooks.deliveries")
        .await;
    assert!(
        statuses >= 3,
        "the fixture has success, retrying and pending rows"
    );

    let dir = std::env::temp_dir().join(beema_hooks_e2e::unique_name("beema_dump"));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("db.dump");
    run(Command::new(pg_bin().join("pg_dump"))
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(format!("--dbname={}", db.url())));

    let restored_name = beema_hooks_e2e::unique_name("beema_e2e");
    let admin = connect(&admin_url()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {restored_name}"))
        .await
        .unwrap();
    let restored_url = with_database(&admin_url(), &restored_name);
    run(Command::new(pg_bin().join("pg_restore"))
        .arg("--exit-on-error")
        .arg(format!("--dbname={restored_url}"))
        .arg(&dump));
    let restored = connect(&restored_url).await;

    let after = fingerprint(&restored).await;
    assert_eq!(
        after, before,
        "every row of every table came back as it was"
    );

    let patterns: Vec<String> = restored
        .query(
            "SELECT pattern || ' -> ' || w.webhook_name FROM hooks.webhook_patterns p
               JOIN hooks.webhooks w USING (webhook_id) ORDER BY pattern",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(patterns, ["invoice.created -> claims", "order.* -> claims"]);
    let matched: Vec<String> = restored
        .query(
            "SELECT webhook_name FROM hooks.match('order.created', 'acme') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        matched,
        ["audit", "claims"],
        "the further patterns match after the restore"
    );

    // the restored outbox works: a new event gets a new id, its deliveries are claimed
    let max_event: i64 = restored
        .query_one("SELECT max(event_id) FROM hooks.events", &[])
        .await
        .unwrap()
        .get(0);
    let new_event: i64 = restored
        .query_one(
            "SELECT hooks.publish('{\"event\": \"policy/bound\", \"id\": \"after\", \"data\": {\"tenantId\": \"acme\"}}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        new_event > max_event,
        "ids continue after the restored ones"
    );
    let claimed: i64 = restored
        .query_one(
            "SELECT count(*) FROM hooks.claim('s2', 100) c
               JOIN hooks.deliveries d USING (delivery_id) WHERE d.event_id = $1",
            &[&new_event],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claimed, 2, "the new event's two deliveries are claimed");

    drop(restored);
    admin
        .batch_execute(&format!("DROP DATABASE {restored_name} WITH (FORCE)"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    db.cleanup().await;
}
