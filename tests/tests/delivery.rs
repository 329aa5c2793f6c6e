//! Deliveries with the real sender and the local receiver: fan-out to every matching webhook and
//! nothing else, the wire format checked header by header with independent signature code, a
//! rolled-back publish sends nothing, a sender started after the publish still delivers, payload
//! filters decide which events a webhook gets.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use beema_hooks_e2e::db::publish_on;
use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;

/// One event, three matching webhooks of the tenant (exact, segment wildcard, catch-all; a
/// plain secret, a generated `whsec_` one, a given `whsec_` one), and five that must get
/// nothing: another event type, a non-matching wildcard, a disabled webhook, and two of
/// another tenant.
#[tokio::test]
async fn one_event_reaches_every_matching_webhook_signed_and_nothing_else() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;

    let mut secrets = HashMap::new();
    let matching = [
        Webhook::new("exact", "acme", "policy/bound", &rx.url("/exact"))
            .secret(Some("plain-secret-\u{e9}"))
            .headers(json!({"X-Custom-One": "1", "Authorization": "Bearer abc"})),
        Webhook::new("segment", "acme", "policy/*", &rx.url("/segment")).secret(None),
        Webhook::new("all", "acme", "*", &rx.url("/all"))
            .secret(Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
    ];
    for w in &matching {
        let (id, secret) = db.register(w).await;
        secrets.insert(format!("/{}", w.name), (id, secret));
    }
    assert!(secrets["/segment"].1.starts_with("whsec_"));
    let not_matching = [
        Webhook::new("other-type", "acme", "claim/opened", &rx.url("/other-type")),
        Webhook::new(
            "other-wildcard",
            "acme",
            "*.created",
            &rx.url("/other-wildcard"),
        ),
        Webhook::new("disabled", "acme", "policy/bound", &rx.url("/disabled")).enabled(false),
        Webhook::new(
            "other-tenant",
            "globex",
            "policy/bound",
            &rx.url("/other-tenant"),
        ),
        Webhook::new(
            "other-tenant-all",
            "globex",
            "*",
            &rx.url("/other-tenant-all"),
        ),
    ];
    for w in &not_matching {
        db.register(w).await;
    }

    let sender = Sender::start(db.url(), SenderOptions::default());
    let event = json!({
        "event": "policy/bound",
        "data": {"tenantId": "acme", "policyId": "P-1", "premium": 1234.5, "holder": "Zo\u{eb} \u{1F600}"},
        "user": {"id": "u-7"},
        "timestamp": "2024-05-01T10:00:00.000Z",
        "id": "evt-fanout-1"
    });
    let event_id = db.publish(&event).await;
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 3 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        db.count("hooks.deliveries").await,
        3,
        "exactly one delivery per matching webhook"
    );

    // Publishing the same id again is idempotent: no new deliveries, nothing more sent.
    assert_eq!(db.publish(&event).await, event_id);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(db.count("hooks.deliveries").await, 3);

    let body: String = db
        .one(&format!(
            "SELECT body FROM hooks.events WHERE event_id = {event_id}"
        ))
        .await;
    let uuids: HashMap<i64, String> = db
        .client()
        .query(
            "SELECT webhook_id, delivery_uuid::text FROM hooks.deliveries",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let requests = rx.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    println!("receiver saw: {paths:?}");
    for w in &not_matching {
        assert!(
            rx.requests_to(&format!("/{}", w.name)).is_empty(),
            "{} must get nothing",
            w.name
        );
    }
    assert_eq!(
        requests.len(),
        3,
        "one request per matching webhook: {paths:?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (path, (webhook_id, secret)) in &secrets {
        let got = rx.requests_to(path);
        assert_eq!(got.len(), 1, "{path}");
        let r = &got[0];
        assert_eq!(r.method, "POST", "{path}");
        r.verify(secret).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            &r.body[..],
            body.as_bytes(),
            "{path}: the body is hooks.events.body byte for byte"
        );
        let sent = r.json();
        assert_eq!(sent["event"], "policy/bound");
        assert_eq!(sent["data"], event["data"], "{path}: data as published");
        assert_eq!(sent["user"], event["user"]);
        assert_eq!(sent["id"], "evt-fanout-1");
        assert_eq!(sent["timestamp"], "2024-05-01T10:00:00.000Z");
        let uuid = &uuids[webhook_id];
        assert_eq!(
            r.header("x-beema-delivery").as_ref(),
            Some(uuid),
            "{path}: X-Beema-Delivery == delivery_uuid"
        );
        assert_eq!(
            r.header("webhook-id").as_ref(),
            Some(uuid),
            "{path}: webhook-id == delivery_uuid"
        );
        assert_eq!(
            r.header("x-beema-event").as_deref(),
            Some("policy/bound"),
            "{path}"
        );
        let ts: i64 = r
            .header("webhook-timestamp")
            .expect("webhook-timestamp")
            .parse()
            .expect("unix seconds");
        assert!(
            (ts - now).abs() < 120,
            "{path}: webhook-timestamp {ts} vs now {now}"
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        let ua = r.header("user-agent").unwrap_or_default();
        assert!(
            ua.starts_with("beema-hooks-sender/"),
            "{path}: User-Agent {ua:?}"
        );
        assert!(
            ua.len() > "beema-hooks-sender/".len(),
            "{path}: User-Agent carries the version: {ua:?}"
        );
        for name in [
            "x-beema-signature",
            "webhook-signature",
            "webhook-id",
            "content-type",
        ] {
            assert_eq!(r.header_count(name), 1, "{path}: {name} sent once");
        }
    }
    let exact = &rx.requests_to("/exact")[0];
    assert_eq!(
        exact.header("x-custom-one").as_deref(),
        Some("1"),
        "the webhook's own headers"
    );
    assert_eq!(exact.header("authorization").as_deref(), Some("Bearer abc"));

    // The outcome as a DBA sees it.
    let rows = db
        .client()
        .query(
            "SELECT status_code, attempt_number, delivered_at IS NOT NULL FROM hooks.deliveries",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        assert_eq!(r.get::<_, Option<i32>>(0), Some(200));
        assert_eq!(r.get::<_, i32>(1), 1);
        assert!(r.get::<_, bool>(2));
    }
    assert_eq!(
        db.count("hooks.attempts WHERE outcome = 'success' AND status_code = 200")
            .await,
        3
    );
    assert_eq!(
        db.count("hooks.delivery_log WHERE status = 'success'")
            .await,
        3
    );
    drop(sender);
    db.cleanup().await;
}

/// A transaction that publishes and rolls back sends nothing, even with a sender running; a
/// committed one published afterwards is delivered.
#[tokio::test]
async fn rolled_back_publish_sends_nothing() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("all", "acme", "*", &rx.url("/all")))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;

    let mut app = db.connect().await;
    let tx = app.transaction().await.unwrap();
    publish_on(
        &tx,
        &json!({"event": "policy/bound", "data": {"tenantId": "acme", "marker": "rolled-back"}}),
    )
    .await;
    publish_on(
        &tx,
        &json!({"event": "claim/opened", "data": {"tenantId": "acme", "marker": "rolled-back"}}),
    )
    .await;
    // Give the sender time to (wrongly) see anything while the transaction is open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    publish_on(
        &tx,
        &json!({"event": "policy/bound", "data": {"tenantId": "acme", "marker": "committed"}}),
    )
    .await;
    tx.commit().await.unwrap();
    wait_until(
        "the committed event arrives",
        Duration::from_secs(15),
        || async { rx.count() >= 1 },
    )
    .await;
    // Two poll intervals more for anything that should not come.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let markers: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.json()["data"]["marker"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        markers,
        vec!["committed".to_owned()],
        "only the committed event is sent"
    );
    assert_eq!(db.count("hooks.events").await, 1);
    assert_eq!(db.count("hooks.deliveries").await, 1);
    drop(sender);
    db.cleanup().await;
}

/// Events published while no sender runs are delivered by a sender started later (it claims at
/// once on start; no NOTIFY is needed). Its admin port answers /healthz and /metrics.
#[tokio::test]
async fn sender_started_after_the_publish_still_delivers() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("late", "acme", "claim/*", &rx.url("/late")))
        .await;
    for i in 0..5 {
        db.publish(&json!({"event": "claim/opened", "data": {"tenantId": "acme", "n": i}}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0);
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'pending'").await,
        5
    );

    let sender = Sender::start(db.url(), SenderOptions::default());
    let took = wait_until_sql(
        db.client(),
        "SELECT count(*) = 5 FROM hooks.deliveries WHERE status = 'success'",
        Duration::from_secs(20),
    )
    .await;
    println!("5 backlog deliveries done {took:?} after the sender started");
    let counts = rx.counts_by_webhook_id();
    assert_eq!(counts.len(), 5, "5 distinct deliveries: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each exactly once: {counts:?}"
    );

    let (status, _) = sender.admin_get("/healthz").await.expect("GET /healthz");
    assert!(status.contains(" 200"), "/healthz: {status}");
    let (status, metrics) = sender.admin_get("/metrics").await.expect("GET /metrics");
    assert!(status.contains(" 200"), "/metrics: {status}");
    assert!(
        metrics.contains("# TYPE"),
        "/metrics is Prometheus text:\n{metrics}"
    );
    drop(sender);
    db.cleanup().await;
}

/// Payload filters with the real sender: a webhook with a containment filter gets only the
/// events whose body contains it, one with a jsonpath predicate only those it holds for (an
/// event where the predicate meets a string instead of a number is skipped, and its publish
/// commits), and an unfiltered webhook gets them all, signed as always.
#[tokio::test]
async fn payload_filters_decide_which_events_are_sent() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("all", "acme", "policy/*", &rx.url("/all")))
        .await;
    let (bound_id, bound_secret) = db
        .register(&Webhook::new(
            "bound",
            "acme",
            "policy/*",
            &rx.url("/bound"),
        ))
        .await;
    let (large_id, _) = db
        .register(&Webhook::new(
            "large",
            "acme",
            "policy/*",
            &rx.url("/large"),
        ))
        .await;
    db.client()
        .execute(
            "UPDATE hooks.webhooks SET filter = '{\"data\": {\"status\": \"bound\"}}' WHERE webhook_id = $1",
            &[&bound_id],
        )
        .await
        .unwrap();
    db.client()
        .execute(
            "UPDATE hooks.webhooks SET filter_path = '$.data.premium > 1000' WHERE webhook_id = $1",
            &[&large_id],
        )
        .await
        .unwrap();
    let sender = Sender::start(db.url(), SenderOptions::default());
    let events = [
        json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": 1, "status": "bound", "premium": 500}}),
        json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": 2, "status": "bound", "premium": 5000}}),
        json!({"event": "policy/quoted", "data": {"tenantId": "acme", "n": 3, "status": "quoted", "premium": 1500}}),
        json!({"event": "policy/quoted", "data": {"tenantId": "acme", "n": 4, "status": "quoted", "premium": "a lot"}}),
    ];
    for e in &events {
        db.publish(e).await;
    }
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 8 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ns = |path: &str| -> Vec<i64> {
        let mut n: Vec<i64> = rx
            .requests_to(path)
            .iter()
            .map(|r| r.json()["data"]["n"].as_i64().unwrap())
            .collect();
        n.sort();
        n
    };
    assert_eq!(ns("/all"), [1, 2, 3, 4], "no filter: every event");
    assert_eq!(ns("/bound"), [1, 2], "filter {{data: {{status: bound}}}}");
    assert_eq!(ns("/large"), [2, 3], "filter_path $.data.premium > 1000");
    for r in rx.requests_to("/bound") {
        r.verify(&bound_secret).unwrap();
    }
    assert_eq!(db.count("hooks.events").await, 4, "every publish committed");
    drop(sender);
    db.cleanup().await;
}

/// Several event types per webhook with the real sender: a webhook on `policy/bound` that also
/// lists `claim/*` and `invoice.created` gets one request per event of any of them (an event
/// its patterns select twice is still sent once), and nothing for other types.
#[tokio::test]
async fn several_event_types_reach_one_webhook_once_each() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let (id, secret) = db
        .register(&Webhook::new(
            "multi",
            "acme",
            "policy/bound",
            &rx.url("/multi"),
        ))
        .await;
    db.client()
        .execute(
            "UPDATE hooks.webhooks SET event_types = '{claim/*,invoice.created,*.created}' WHERE webhook_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let sender = Sender::start(db.url(), SenderOptions::default());
    for event in [
        "policy/bound",
        "claim/opened",
        "invoice.created",
        "policy/lapsed",
        "claim/opened/late",
    ] {
        db.publish(&json!({"event": event, "data": {"tenantId": "acme"}}))
            .await;
    }
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 3 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got: Vec<String> = rx
        .requests_to("/multi")
        .iter()
        .map(|r| {
            r.verify(&secret).unwrap();
            r.header("X-Beema-Event").unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["claim/opened", "invoice.created", "policy/bound"]);
    drop(sender);
    db.cleanup().await;
}

/// Payload envelopes with the real sender: one event to four webhooks, one per envelope, each
/// failing its first attempt. Every receiver gets the body in its envelope's shape (keys in the
/// documented order, the number's digits and the non-ASCII text as published), both signatures
/// verify over the bytes received, and the retry carries exactly the same bytes.
#[tokio::test]
async fn payload_envelopes_shape_the_body_the_same_on_every_attempt() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let mut secrets = Vec::new();
    for envelope in ["beema", "standard", "flat", "supabase"] {
        let path = format!("/{envelope}");
        rx.program(&path, vec![Reply::status(500)], Reply::ok());
        let (id, secret) = db
            .register(&Webhook::new(envelope, "acme", "policy/*", &rx.url(&path)).retry(3, 100))
            .await;
        db.client()
            .execute(
                "UPDATE hooks.webhooks SET envelope = $2 WHERE webhook_id = $1",
                &[&id, &envelope],
            )
            .await
            .unwrap();
        secrets.push((envelope, secret));
    }
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.client()
        .execute(
            r#"SELECT hooks.publish('{"event": "policy/bound", "id": "evt-7", "timestamp": "2026-12-01T10:00:00.000Z",
                 "data": {"tenantId": "acme", "premium": 1234.50, "holder": "Zoë", "type": "INSERT",
                          "table": "policies", "schema": "public", "record": {"id": 7}}}')"#,
            &[],
        )
        .await
        .unwrap();
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 4 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    // (data's keys in jsonb's order: by length, then bytewise)
    let data = r#"{"type":"INSERT","table":"policies","holder":"Zoë","record":{"id":7},"schema":"public","premium":1234.50,"tenantId":"acme"}"#;
    let want = [
        (
            "beema",
            format!(r#"{{"id":"evt-7","event":"policy/bound","data":{data},"user":{{}},"timestamp":"2026-12-01T10:00:00.000Z"}}"#),
        ),
        (
            "standard",
            format!(r#"{{"type":"policy/bound","timestamp":"2026-12-01T10:00:00.000Z","data":{data}}}"#),
        ),
        (
            "flat",
            format!(r#"{{"id":"evt-7","timestamp":"2026-12-01T10:00:00.000Z","event_type":"policy/bound","data":{data}}}"#),
        ),
        (
            "supabase",
            r#"{"type":"INSERT","table":"policies","schema":"public","record":{"id":7},"old_record":null}"#.to_owned(),
        ),
    ];
    for ((envelope, body), (_, secret)) in want.iter().zip(&secrets) {
        let reqs = rx.requests_to(&format!("/{envelope}"));
        assert_eq!(reqs.len(), 2, "{envelope}: a failure and the retry");
        for r in &reqs {
            assert_eq!(std::str::from_utf8(&r.body).unwrap(), body, "{envelope}");
            r.verify(secret)
                .unwrap_or_else(|e| panic!("{envelope}: {e}"));
        }
        assert_eq!(reqs[0].webhook_id(), reqs[1].webhook_id());
    }
    drop(sender);
    db.cleanup().await;
}

/// Webhooks on table changes with the real sender: a table watched with `hooks.watch_table`,
/// a webhook with the supabase envelope. Committed inserts, updates and deletes arrive with the
/// fields a Supabase database-webhook receiver reads (`type`, `table`, `schema`, `record`,
/// `old_record`), the excluded column never appears, the condition holds back updates that do
/// not change the status, and a rolled-back statement sends nothing.
#[tokio::test]
async fn table_changes_arrive_as_supabase_payloads() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let (id, secret) = db
        .register(&Webhook::new(
            "claims",
            "acme",
            "claims/*",
            &rx.url("/claims"),
        ))
        .await;
    db.client()
        .batch_execute(&format!(
            "UPDATE hooks.webhooks SET envelope = 'supabase' WHERE webhook_id = {id};
             CREATE TABLE claims (id int PRIMARY KEY, tenant text NOT NULL, status text, secret_note text);
             SELECT hooks.watch_table('claims', tenant_column => 'tenant',
                                      exclude_columns => ARRAY['secret_note'],
                                      condition => 'OLD.status IS DISTINCT FROM NEW.status');"
        ))
        .await
        .unwrap();
    let sender = Sender::start(db.url(), SenderOptions::default());
    // each statement its own transaction (one simple query of several would be one)
    for sql in [
        "INSERT INTO claims VALUES (1, 'acme', 'new', 'do not send'), (2, 'acme', 'new', NULL)",
        "UPDATE claims SET secret_note = 'still not' WHERE id = 1",
        "UPDATE claims SET status = 'open' WHERE id = 1",
        "DELETE FROM claims WHERE id = 2",
        "BEGIN; INSERT INTO claims VALUES (3, 'acme', 'rolled back', NULL); ROLLBACK;",
    ] {
        db.client().batch_execute(sql).await.unwrap();
    }
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 4 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got: Vec<serde_json::Value> = rx
        .requests_to("/claims")
        .iter()
        .map(|r| {
            r.verify(&secret).unwrap();
            assert!(!String::from_utf8_lossy(&r.body).contains("secret_note"));
            r.json()
        })
        .collect();
    got.sort_by_key(|b| b.to_string());
    // what a Supabase receiver reads: exactly these five fields
    for b in &got {
        let mut keys: Vec<&String> = b.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["old_record", "record", "schema", "table", "type"]);
        assert_eq!(
            (b["table"].as_str(), b["schema"].as_str()),
            (Some("claims"), Some("public"))
        );
    }
    let summary: Vec<String> = got
        .iter()
        .map(|b| format!("{} {} {}", b["type"], b["record"], b["old_record"]))
        .collect();
    assert_eq!(
        summary,
        [
            r#""DELETE" null {"id":2,"status":"new","tenant":"acme"}"#,
            r#""INSERT" {"id":1,"status":"new","tenant":"acme"} null"#,
            r#""INSERT" {"id":2,"status":"new","tenant":"acme"} null"#,
            r#""UPDATE" {"id":1,"status":"open","tenant":"acme"} {"id":1,"status":"new","tenant":"acme"}"#,
        ]
    );
    drop(sender);
    db.cleanup().await;
}

/// The receiver code in the README ("Receiving webhooks", Node and Python) run against a real
/// delivery: it accepts the request as sent, and refuses it with the body changed or with a
/// `webhook-timestamp` 10 minutes old (a replayed capture, re-signed by nobody). Node is run
/// when it is installed.
#[tokio::test]
async fn readme_receivers_verify_and_refuse_replays() {
    let readme = std::fs::read_to_string(beema_hooks_e2e::repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Receiving webhooks")
        .expect("README section")..];
    let block = |lang: &str| -> String {
        let start = section.find(&format!("```{lang}\n")).expect("code block") + lang.len() + 4;
        section[start..start + section[start..].find("```").unwrap()].to_owned()
    };
    let (python, node) = (block("python"), block("js"));

    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let (_, secret) = db
        .register(&Webhook::new("r", "acme", "*", &rx.url("/r")).secret(None))
        .await;
    assert!(secret.starts_with("whsec_"));
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "name": "Zoë"}}))
        .await;
    wait_until("the delivery arrives", Duration::from_secs(15), || async {
        rx.count() >= 1
    })
    .await;
    let req = rx.requests_to("/r").remove(0);

    let dir = std::env::temp_dir().join(beema_hooks_e2e::unique_name("readme_receivers"));
    std::fs::create_dir_all(&dir).unwrap();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let old = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 600)
        .to_string();
    let mut stale = headers.clone();
    stale.insert("webhook-timestamp".into(), json!(old));
    let cases = [
        ("as sent", req.body.to_vec(), headers.clone(), "True"),
        (
            "body changed",
            [&req.body[..], b" "].concat(),
            headers.clone(),
            "False",
        ),
        (
            "timestamp 10 minutes old",
            req.body.to_vec(),
            stale,
            "False",
        ),
    ];
    for (i, (what, body, headers, want)) in cases.iter().enumerate() {
        let body_path = dir.join(format!("body{i}"));
        let headers_path = dir.join(format!("headers{i}.json"));
        std::fs::write(&body_path, body).unwrap();
        std::fs::write(&headers_path, serde_json::to_string(headers).unwrap()).unwrap();
        // Python: headers as a web framework gives them (case-insensitive)
        let script = format!(
            "{python}\nimport json\nclass H(dict):\n    def __getitem__(self, k): return dict.__getitem__(self, k.lower())\n    def get(self, k, d=None): return dict.get(self, k.lower(), d)\n\
             print(verify(open({b:?}, 'rb').read(), H(json.load(open({h:?}))), {secret:?}))\n",
            b = body_path.display().to_string(),
            h = headers_path.display().to_string(),
        );
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            got,
            *want,
            "Python, {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Node: headers lowercased, as Node gives them
        let script = format!(
            "{node}\nconst fs = require('fs');\n\
             console.log(verify(fs.readFileSync({b:?}), JSON.parse(fs.readFileSync({h:?}, 'utf8')), {secret:?}) ? 'True' : 'False');\n",
            b = body_path.display().to_string(),
            h = headers_path.display().to_string(),
        );
        match std::process::Command::new("node")
            .arg("-e")
            .arg(&script)
            .output()
        {
            Ok(out) => {
                let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert_eq!(
                    got,
                    *want,
                    "Node, {what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => println!("node not run ({e}): only the Python receiver was checked"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(sender);
    db.cleanup().await;
}

/// Asymmetric `v1a` signatures (ed25519; native flavor only): a webhook asking for `v1` and
/// `v1a` gets both in `webhook-signature`; the `v1a` one verifies with PyNaCl (Debian's
/// python3-nacl, not our code) and the public key from `hooks.public_key`, and fails for a
/// changed body; `v1` still verifies with the secret. On the portable flavor (pgcrypto has no
/// ed25519) the webhook is refused with 0A000. README, "Asymmetric signatures".
#[tokio::test]
async fn v1a_signatures_verify_with_pynacl() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/ed", Reply::ok());
    let (id, secret) = db
        .register(&Webhook::new("ed", "acme", "ed/*", &rx.url("/ed")))
        .await;
    let asked = db
        .client()
        .query_one(
            "SELECT hooks.public_key(w.signing_key) FROM hooks.update_webhook($1, '{\"signatures\": [\"v1\", \"v1a\"]}') w",
            &[&id],
        )
        .await;
    if beema_hooks_e2e::Flavor::from_env() == beema_hooks_e2e::Flavor::Portable {
        let e = asked.expect_err("v1a on the portable flavor");
        assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
        db.cleanup().await;
        return;
    }
    let public_key: String = asked.expect("v1a on the native flavor").get(0);
    assert!(public_key.starts_with("whpk_"), "{public_key}");
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish(&json!({"event": "ed/signed", "data": {"tenantId": "acme", "n": "ü"}}))
        .await;
    wait_until("the signed delivery", Duration::from_secs(20), || async {
        rx.count() >= 1
    })
    .await;
    let r = &rx.requests()[0];
    r.verify(&secret)
        .expect("X-Beema-Signature and v1 verify with the secret");
    let header = r.header("webhook-signature").unwrap();
    assert!(
        header.starts_with("v1,") && header.contains(" v1a,"),
        "{header}"
    );
    let nacl = |body: &[u8]| {
        let out = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import base64, sys, nacl.signing\n\
                 pk, msg_id, ts, header = sys.argv[1:5]\n\
                 body = sys.stdin.buffer.read()\n\
                 key = nacl.signing.VerifyKey(base64.b64decode(pk[len('whpk_'):]))\n\
                 signed = msg_id.encode() + b'.' + ts.encode() + b'.' + body\n\
                 for entry in header.split(' '):\n\
                 \x20   if entry.startswith('v1a,'):\n\
                 \x20       try:\n\
                 \x20           key.verify(signed, base64.b64decode(entry[4:]))\n\
                 \x20           sys.exit(0)\n\
                 \x20       except Exception:\n\
                 \x20           pass\n\
                 sys.exit(1)\n",
                &public_key,
                &r.header("webhook-id").unwrap(),
                &r.header("webhook-timestamp").unwrap(),
                &header,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("/usr/bin/python3 with python3-nacl");
        use std::io::Write;
        let mut child = out;
        child.stdin.take().unwrap().write_all(body).unwrap();
        child.wait().expect("python3").code()
    };
    assert_eq!(nacl(&r.body), Some(0), "PyNaCl verifies the v1a signature");
    let mut changed = r.body.to_vec();
    changed[3] ^= 1;
    assert_eq!(nacl(&changed), Some(1), "and refuses it for a changed body");
    drop(sender);
    db.cleanup().await;
}
