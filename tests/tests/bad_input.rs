//! Bad input (issue 7): every rejected `hooks.publish` and webhook write raises a documented
//! SQLSTATE, writes nothing, and leaves the backend alive (the same backend answers `SELECT 1`
//! right after). Unusual but valid Unicode is accepted and round-trips byte for byte into
//! `hooks.events.body`. `errors.sql` (pg_regress) pins the messages of the common cases inside one
//! transaction; this adds the per-statement zero-rows and backend-alive checks, a 50 MB payload,
//! nesting 10,000 deep, Unicode, and many more spellings of each mistake.

use beema_hooks_e2e::{TestDb, Webhook};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// One connection under test, its backend pid, and what the tables held before.
struct Probe {
    c: Client,
    pid: i32,
    baseline: (i64, i64, i64),
    seen: Vec<(String, String, String)>,
}

async fn counts(c: &Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM hooks.events), (SELECT count(*) FROM hooks.deliveries),
                    (SELECT count(*) FROM hooks.webhooks)",
            &[],
        )
        .await
        .expect("counts");
    (r.get(0), r.get(1), r.get(2))
}

impl Probe {
    async fn new(db: &TestDb) -> Probe {
        let c = db.connect().await;
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let baseline = counts(&c).await;
        Probe {
            c,
            pid,
            baseline,
            seen: Vec::new(),
        }
    }

    /// Runs `sql`, which must fail with one of `allowed`; then checks that the same backend
    /// answers and that no row was written. Returns the SQLSTATE.
    async fn rejects(
        &mut self,
        label: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        allowed: &[&str],
    ) -> String {
        let err = match self.c.execute(sql, params).await {
            Ok(_) => panic!("{label}: accepted, expected SQLSTATE {allowed:?}"),
            Err(e) => e,
        };
        let (code, msg) = match err.as_db_error() {
            Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
            None => panic!("{label}: not a database error: {err:?}"),
        };
        assert!(
            allowed.contains(&code.as_str()),
            "{label}: SQLSTATE {code} ({msg}), expected one of {allowed:?}"
        );
        let alive = self
            .c
            .query_one("SELECT 1, pg_backend_pid()", &[])
            .await
            .unwrap_or_else(|e| panic!("{label}: the backend did not survive: {e:?}"));
        assert_eq!(alive.get::<_, i32>(0), 1);
        assert_eq!(alive.get::<_, i32>(1), self.pid, "{label}: same backend");
        assert_eq!(
            counts(&self.c).await,
            self.baseline,
            "{label}: nothing written"
        );
        let short: String = msg.chars().take(110).collect();
        self.seen.push((label.to_owned(), code.clone(), short));
        code
    }

    /// `hooks.publish($1::text::jsonb)` must fail with one of `allowed`.
    async fn publish_rejects(&mut self, label: &str, json_text: &str, allowed: &[&str]) -> String {
        let text = json_text.to_owned();
        self.rejects(
            label,
            "SELECT hooks.publish($1::text::jsonb)",
            &[&text],
            allowed,
        )
        .await
    }

    /// An INSERT into hooks.webhooks with these values must fail with one of `allowed`.
    #[allow(clippy::too_many_arguments)]
    async fn webhook_rejects(
        &mut self,
        label: &str,
        pattern: &str,
        url: &str,
        headers: &str,
        retry: &str,
        timeout_ms: i32,
        secret: Option<&str>,
        allowed: &[&str],
    ) -> String {
        let (p, u, h, r, s) = (
            pattern.to_owned(),
            url.to_owned(),
            headers.to_owned(),
            retry.to_owned(),
            secret.map(str::to_owned),
        );
        self.rejects(
            label,
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers, retry_config, timeout_ms, secret)
             VALUES ('acme', 'bad', $1, $2, $3::text::jsonb, $4::text::jsonb, $5, $6)",
            &[&p, &u, &h, &r, &timeout_ms, &s],
            allowed,
        )
        .await
    }

    fn print(&self, title: &str) {
        println!("{title}:");
        for (label, code, msg) in &self.seen {
            println!("  {code}  {label:<42} {msg}");
        }
    }
}

fn ev(extra: Value) -> String {
    let mut e = json!({"event": "policy/bound", "data": {"tenantId": "acme"}});
    if let (Value::Object(o), Value::Object(x)) = (&mut e, extra) {
        for (k, v) in x {
            o.insert(k, v);
        }
    }
    e.to_string()
}

/// Every malformed event: an error with the documented SQLSTATE (22004 missing, 22023 wrong,
/// 54000 too large or too deep, 42501 another tenant; the jsonb parser's own 22P02/22P05/54001
/// before our function runs), nothing written, the backend alive.
#[tokio::test]
async fn malformed_events_are_rejected_with_nothing_written() {
    let db = TestDb::new().await;
    db.register(&Webhook::new("all", "acme", "*", "https://a.example/all"))
        .await;
    let mut p = Probe::new(&db).await;
    const MISSING: &[&str] = &["22004"];
    const WRONG: &[&str] = &["22023"];

    p.rejects("NULL", "SELECT hooks.publish(NULL)", &[], MISSING)
        .await;
    for (label, text) in [
        ("JSON null", "null"),
        ("array", "[1, 2]"),
        ("empty array", "[]"),
        (
            "array of events",
            r#"[{"event": "a/b", "data": {"tenantId": "acme"}}]"#,
        ),
        ("string", r#""policy/bound""#),
        ("integer", "42"),
        ("huge number", "1e400"),
        ("boolean", "true"),
    ] {
        p.publish_rejects(label, text, WRONG).await;
    }
    for (label, text) in [
        ("empty object", "{}".to_owned()),
        (
            "missing event name",
            json!({"data": {"tenantId": "acme"}}).to_string(),
        ),
        ("missing tenant", json!({"event": "a/b"}).to_string()),
        (
            "missing tenant, empty data",
            json!({"event": "a/b", "data": {}}).to_string(),
        ),
        (
            "tenant only in user",
            json!({"event": "a/b", "user": {"tenantId": "acme"}}).to_string(),
        ),
    ] {
        p.publish_rejects(label, &text, MISSING).await;
    }
    let long = "x".repeat(256);
    for (label, extra) in [
        ("empty event name", json!({"event": ""})),
        ("blank event name", json!({"event": " "})),
        ("event name 7", json!({"event": 7})),
        ("event name true", json!({"event": true})),
        ("event name null", json!({"event": null})),
        ("event name array", json!({"event": ["a/b"]})),
        ("event name object", json!({"event": {"a": "b"}})),
        ("event name with *", json!({"event": "claim/*"})),
        ("event name empty segment", json!({"event": "claim//x"})),
        ("event name trailing /", json!({"event": "claim/"})),
        ("event name control char", json!({"event": "claim/\u{1}x"})),
        ("event name newline", json!({"event": "claim/\nx"})),
        ("event name 256 bytes", json!({"event": long})),
        ("tenant empty", json!({"data": {"tenantId": ""}})),
        ("tenant number", json!({"data": {"tenantId": 12}})),
        ("tenant null", json!({"data": {"tenantId": null}})),
        ("tenant array", json!({"data": {"tenantId": ["acme"]}})),
        (
            "tenant control char",
            json!({"data": {"tenantId": "ac\nme"}}),
        ),
        ("tenant 256 bytes", json!({"data": {"tenantId": long}})),
        (
            "top-level tenant number",
            json!({"data": null, "tenantId": 5}),
        ),
        ("data a string", json!({"data": "acme"})),
        ("data an array", json!({"data": [{"tenantId": "acme"}]})),
        ("data a number", json!({"data": 5})),
        ("id a number", json!({"id": 5})),
        ("id true", json!({"id": true})),
        ("id an object", json!({"id": {}})),
        ("id an array", json!({"id": ["a"]})),
        ("id empty", json!({"id": ""})),
        ("id 256 bytes", json!({"id": long})),
        ("id control char", json!({"id": "a\u{7}b"})),
        ("user a string", json!({"user": "bob"})),
        ("user an array", json!({"user": [1]})),
        ("user a number", json!({"user": 5})),
        ("timestamp an object", json!({"timestamp": {}})),
        ("timestamp an array", json!({"timestamp": [2026]})),
        ("timestamp true", json!({"timestamp": true})),
        ("timestamp negative", json!({"timestamp": -1})),
        ("timestamp fractional", json!({"timestamp": 1.5})),
        ("timestamp empty", json!({"timestamp": ""})),
        ("timestamp 65 chars", json!({"timestamp": "2".repeat(65)})),
    ] {
        p.publish_rejects(label, &ev(extra), WRONG).await;
    }

    p.publish_rejects(
        "name (Inngest) 7",
        &json!({"name": 7, "data": {"tenantId": "acme"}}).to_string(),
        WRONG,
    )
    .await;

    // The jsonb parser refuses these before hooks.publish runs.
    p.publish_rejects("not JSON", "not json", &["22P02"]).await;
    p.publish_rejects("trailing garbage", r#"{"event": "a/b"} x"#, &["22P02"])
        .await;
    p.publish_rejects(
        r"\u0000 escape",
        r#"{"event": "a/b", "data": {"tenantId": "acme", "s": "\u0000"}}"#,
        &["22P05"],
    )
    .await;
    p.publish_rejects(
        "lone high surrogate",
        r#"{"event": "a/b", "data": {"tenantId": "acme", "s": "\ud800"}}"#,
        &["22P02"],
    )
    .await;
    p.publish_rejects(
        "lone low surrogate",
        r#"{"event": "a/b", "data": {"tenantId": "acme", "s": "\udc00x"}}"#,
        &["22P02"],
    )
    .await;
    let raw_nul = "{\"event\": \"a/b\", \"data\": {\"tenantId\": \"acme\", \"s\": \"a\u{0}b\"}}";
    p.publish_rejects("raw NUL byte in the text", raw_nul, &["22021"])
        .await;

    // Size and depth.
    let fifty_mb = format!(
        r#"{{"event": "big/one", "data": {{"tenantId": "acme", "blob": "{}"}}}}"#,
        "x".repeat(50 * 1024 * 1024)
    );
    let big = p
        .publish_rejects("50 MB payload", &fifty_mb, &["54000"])
        .await;
    drop(fifty_mb);
    let deep_arrays = format!(
        r#"{{"event": "deep/one", "data": {{"tenantId": "acme", "deep": {}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_a = p
        .publish_rejects(
            "nesting 10,000 deep (arrays)",
            &deep_arrays,
            &["54000", "54001"],
        )
        .await;
    let deep_objects = format!(
        r#"{{"event": "deep/one", "data": {{"tenantId": "acme", "deep": {}1{}}}}}"#,
        r#"{"a": "#.repeat(10_000),
        "}".repeat(10_000)
    );
    let deep_o = p
        .publish_rejects(
            "nesting 10,000 deep (objects)",
            &deep_objects,
            &["54000", "54001"],
        )
        .await;
    let deep_200 = format!(
        r#"{{"event": "deep/one", "data": {{"tenantId": "acme", "deep": {}{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    p.publish_rejects("nesting 200 deep", &deep_200, &["54000"])
        .await;

    // Publishing for another tenant than the session's.
    p.c.batch_execute("SET hooks.tenant_id = 'globex'")
        .await
        .unwrap();
    p.publish_rejects(
        "another tenant than hooks.tenant_id",
        &ev(json!({})),
        &["42501"],
    )
    .await;
    p.c.batch_execute("RESET hooks.tenant_id").await.unwrap();
    // The size limit itself is bounded (1 KiB .. 64 MiB).
    p.rejects(
        "SET hooks.max_payload_bytes = 1e9",
        "SET hooks.max_payload_bytes = 1000000000",
        &[],
        &["22023"],
    )
    .await;

    p.print("bad events (SQLSTATE, case, message)");
    println!(
        "bad events: {} cases, each rejected, nothing written, backend {} alive; 50 MB -> {big}; \
         10,000 deep -> {deep_a} (arrays), {deep_o} (objects)",
        p.seen.len(),
        p.pid
    );
    db.cleanup().await;
}

/// Unusual but valid Unicode (emoji with modifiers and ZWJ, RTL text and the RLO override,
/// combining marks, U+FFFF, U+FFFE, U+10FFFF, a BOM, U+2028/U+2029, an escaped surrogate pair,
/// non-ASCII keys, tenant and event type) is accepted and stored exactly: the body in
/// hooks.events parses back to the same strings.
#[tokio::test]
async fn unusual_unicode_is_accepted_and_round_trips() {
    let db = TestDb::new().await;
    let (_, _) = db
        .register(&Webhook::new(
            "all",
            "acmé-租户",
            "*",
            "https://a.example/all",
        ))
        .await;
    let cases: Vec<(&str, String)> = vec![
        ("emoji", "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈".to_owned()),
        ("rtl", "مرحبا بالعالم שלום \u{202E}txt.exe".to_owned()),
        (
            "combining",
            "e\u{301} A\u{30A} Z\u{36B}\u{33F}\u{344}\u{31A}\u{350}".to_owned(),
        ),
        (
            "noncharacters",
            "\u{FFFF}\u{FFFE}\u{10FFFF}\u{FDD0}".to_owned(),
        ),
        (
            "bom and separators",
            "\u{FEFF}a\u{2028}b\u{2029}c\u{200B}d".to_owned(),
        ),
        ("cjk and math", "漢字かなカナ한글 𝕏 ∑ ∞ 𝄞".to_owned()),
    ];
    let mut ids = Vec::new();
    for (label, s) in &cases {
        let event = json!({"event": "événement/créé", "data": {"tenantId": "acmé-租户", "clé": "値", "s": s}});
        let id = db.publish(&event).await;
        ids.push((label, s.clone(), id));
    }
    // An escaped surrogate pair in the JSON text is the emoji it encodes.
    let escaped = r#"{"event": "événement/créé", "data": {"tenantId": "acmé-租户", "s": "\ud83d\ude00 \u00e9"}}"#;
    let id: i64 = db
        .client()
        .query_one("SELECT hooks.publish($1::text::jsonb)", &[&escaped])
        .await
        .unwrap()
        .get(0);
    ids.push((&"escaped surrogate pair", "😀 é".to_owned(), id));

    for (label, want, id) in &ids {
        let row = db
            .client()
            .query_one(
                "SELECT body, tenant_id, event_type FROM hooks.events WHERE event_id = $1",
                &[id],
            )
            .await
            .unwrap();
        let body: String = row.get(0);
        let parsed: Value = serde_json::from_str(&body).expect("stored body is JSON");
        assert_eq!(parsed["data"]["s"].as_str(), Some(want.as_str()), "{label}");
        assert_eq!(row.get::<_, String>(1), "acmé-租户");
        assert_eq!(row.get::<_, String>(2), "événement/créé");
        assert_eq!(parsed["event"], "événement/créé");
        println!(
            "unicode {label:<22} stored {} bytes of body: ok",
            body.len()
        );
    }
    assert_eq!(db.count("hooks.events").await, ids.len() as i64);
    assert_eq!(
        db.count("hooks.deliveries").await,
        ids.len() as i64,
        "the non-ASCII tenant's catch-all webhook matched each"
    );
    db.cleanup().await;
}

/// Every invalid webhook: 22023 (23502 for a NULL in a required column), nothing written, the
/// backend alive; through plain INSERT, UPDATE, hooks.create_webhook and hooks.update_webhook.
#[tokio::test]
async fn invalid_webhooks_are_rejected_with_nothing_written() {
    let db = TestDb::new().await;
    let (id, _) = db
        .register(&Webhook::new("good", "acme", "*", "https://a.example/good"))
        .await;
    let mut p = Probe::new(&db).await;
    const BAD: &[&str] = &["22023"];
    let ok_url = "https://a.example/hook";
    let r = r#"{"maxAttempts": 3, "backoffMs": 1000}"#;

    for (label, url) in [
        ("ftp url", "ftp://a.example/hook"),
        ("relative url", "/relative/path"),
        ("relative url without slash", "relative/path"),
        ("scheme-relative url", "//a.example/hook"),
        ("javascript: url", "javascript:alert(1)"),
        ("data: url", "data:text/plain,hello"),
        ("file: url", "file:///etc/passwd"),
        ("gopher url", "gopher://a.example/"),
        ("no host", "http://"),
        ("unterminated IPv6 host", "http://[::1/"),
        ("user and password", "https://user:pw@a.example/hook"),
        ("user only", "https://user@a.example/hook"),
        ("password only", "https://:pw@a.example/hook"),
        ("bad port", "https://a.example:99999/hook"),
        ("space in host", "https://a b.example/"),
        ("empty url", ""),
        (
            "2049-byte url",
            &format!("https://a.example/{}", "p".repeat(2031)),
        ),
    ] {
        p.webhook_rejects(label, "*", url, "{}", r, 1000, None, BAD)
            .await;
    }
    let long_value = "v".repeat(4097);
    let many: String = format!(
        "{{{}}}",
        (0..51)
            .map(|i| format!(r#""X-H{i}": "v""#))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (label, headers) in [
        (
            "header value with CR/LF",
            json!({"X-A": "a\r\nX-Evil: 1"}).to_string(),
        ),
        (
            "header value with LF",
            json!({"X-A": "a\nX-Evil: 1"}).to_string(),
        ),
        ("header value with CR", json!({"X-A": "a\rb"}).to_string()),
        (
            "header value with DEL",
            json!({"X-A": "a\u{7f}b"}).to_string(),
        ),
        (
            "header value with a control char",
            json!({"X-A": "a\u{1}b"}).to_string(),
        ),
        (
            "header name with CR/LF",
            json!({"X-A\r\nX-Evil": "1"}).to_string(),
        ),
        ("header name with a space", json!({"X A": "1"}).to_string()),
        ("header name with a colon", json!({"X-A:": "1"}).to_string()),
        ("empty header name", json!({"": "1"}).to_string()),
        ("non-ASCII header name", json!({"X-Clé": "1"}).to_string()),
        ("header value a number", json!({"X-A": 1}).to_string()),
        ("header value null", json!({"X-A": null}).to_string()),
        (
            "header value an object",
            json!({"X-A": {"b": "c"}}).to_string(),
        ),
        ("headers an array", json!([["X-A", "1"]]).to_string()),
        ("headers a string", json!("X-A: 1").to_string()),
        (
            "header value 4097 bytes",
            json!({"X-A": long_value}).to_string(),
        ),
        ("51 headers", many.clone()),
        (
            "override X-Beema-Signature",
            json!({"X-Beema-Signature": "sha256=00"}).to_string(),
        ),
        (
            "override x-beema-signature",
            json!({"x-beema-signature": "sha256=00"}).to_string(),
        ),
        (
            "override X-BEEMA-EVENT",
            json!({"X-BEEMA-EVENT": "other"}).to_string(),
        ),
        (
            "override X-Beema-Delivery",
            json!({"X-Beema-Delivery": "d"}).to_string(),
        ),
        (
            "override webhook-id",
            json!({"webhook-id": "x"}).to_string(),
        ),
        (
            "override Webhook-Timestamp",
            json!({"Webhook-Timestamp": "0"}).to_string(),
        ),
        (
            "override webhook-signature",
            json!({"webhook-signature": "v1,AAAA"}).to_string(),
        ),
        (
            "override Content-Type",
            json!({"Content-Type": "text/plain"}).to_string(),
        ),
        (
            "override Content-Length",
            json!({"Content-Length": "0"}).to_string(),
        ),
        (
            "override Transfer-Encoding",
            json!({"Transfer-Encoding": "chunked"}).to_string(),
        ),
        ("override Host", json!({"Host": "evil.example"}).to_string()),
    ] {
        p.webhook_rejects(label, "*", ok_url, &headers, r, 1000, None, BAD)
            .await;
    }
    for (label, retry) in [
        ("maxAttempts -1", json!({"maxAttempts": -1})),
        ("maxAttempts 0", json!({"maxAttempts": 0})),
        ("maxAttempts 101", json!({"maxAttempts": 101})),
        ("maxAttempts 1e9", json!({"maxAttempts": 1_000_000_000})),
        (
            "maxAttempts 2^63",
            json!({"maxAttempts": 9_223_372_036_854_775_808u64}),
        ),
        ("maxAttempts 1.5", json!({"maxAttempts": 1.5})),
        ("maxAttempts \"3\"", json!({"maxAttempts": "3"})),
        ("maxAttempts null", json!({"maxAttempts": null})),
        ("backoffMs -1", json!({"backoffMs": -1})),
        ("backoffMs 1e11", json!({"backoffMs": 99_999_999_999i64})),
        (
            "maxBackoffMs < backoffMs",
            json!({"backoffMs": 5000, "maxBackoffMs": 10}),
        ),
        ("maxBackoffMs -5", json!({"maxBackoffMs": -5})),
        ("strategy unknown", json!({"strategy": "random"})),
        ("strategy in capitals", json!({"strategy": "Linear"})),
        ("strategy a number", json!({"strategy": 2})),
        ("jitter a string", json!({"jitter": "no"})),
        ("jitter a number", json!({"jitter": 0})),
        ("unknown key (typo)", json!({"maxAtempts": 3})),
        ("retry_config an array", json!([3, 1000])),
        ("retry_config a number", json!(3)),
        ("retry_config a string", json!("3x1000")),
        ("retry_config null (JSON)", json!(null)),
    ] {
        p.webhook_rejects(
            label,
            "*",
            ok_url,
            "{}",
            &retry.to_string(),
            1000,
            None,
            BAD,
        )
        .await;
    }
    for (label, pattern) in [
        ("pattern claim/x*", "claim/x*"),
        ("pattern **", "**"),
        ("pattern */**", "*/**"),
        ("pattern a*b", "a*b"),
        ("pattern claim//x", "claim//x"),
        ("pattern /claim", "/claim"),
        ("pattern claim/", "claim/"),
        ("pattern .", "."),
        ("empty pattern", ""),
        ("pattern with a space", "claim /x"),
        ("pattern with a tab", "claim/\tx"),
        ("pattern with a newline", "claim/\nx"),
        ("pattern 256 bytes", &"p".repeat(256)),
    ] {
        p.webhook_rejects(label, pattern, ok_url, "{}", r, 1000, None, BAD)
            .await;
    }
    for (label, timeout) in [
        ("timeout_ms -1", -1),
        ("timeout_ms 0", 0),
        ("timeout_ms 99", 99),
        ("timeout_ms 120001", 120_001),
        ("timeout_ms i32::MAX", i32::MAX),
    ] {
        p.webhook_rejects(label, "*", ok_url, "{}", r, timeout, None, BAD)
            .await;
    }
    for (label, secret) in [
        ("secret of 7 bytes", "1234567".to_owned()),
        ("secret of 513 bytes", "s".repeat(513)),
        ("whsec_ secret not base64", "whsec_not*base64!".to_owned()),
    ] {
        p.webhook_rejects(label, "*", ok_url, "{}", r, 1000, Some(&secret), BAD)
            .await;
    }
    // Required columns.
    p.rejects(
        "NULL url",
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'bad', '*', NULL)",
        &[],
        &["23502"],
    )
    .await;
    p.rejects(
        "empty tenant",
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('', 'bad', '*', 'https://a.example/')",
        &[],
        BAD,
    )
    .await;
    p.rejects(
        "tenant with a newline",
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES (E'ac\\nme', 'bad', '*', 'https://a.example/')",
        &[],
        BAD,
    )
    .await;
    // UPDATE and the management functions validate the same way.
    p.rejects(
        "UPDATE to a javascript: url",
        "UPDATE hooks.webhooks SET url = 'javascript:alert(1)'",
        &[],
        BAD,
    )
    .await;
    p.rejects(
        "UPDATE headers to override the signature",
        r#"UPDATE hooks.webhooks SET headers = '{"X-Beema-Signature": "sha256=00"}'"#,
        &[],
        BAD,
    )
    .await;
    p.rejects(
        "create_webhook with ftp://",
        "SELECT hooks.create_webhook('acme', 'bad', '*', 'ftp://a.example/')",
        &[],
        BAD,
    )
    .await;
    p.rejects(
        "create_webhook with a negative retry",
        r#"SELECT hooks.create_webhook('acme', 'bad', '*', 'https://a.example/', retry_config => '{"maxAttempts": -3}')"#,
        &[],
        BAD,
    )
    .await;
    p.rejects(
        "update_webhook to credentials in url",
        "SELECT hooks.update_webhook($1, '{\"url\": \"https://u:p@a.example/\"}')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "update_webhook of the secret",
        "SELECT hooks.update_webhook($1, '{\"secret\": \"a-new-secret\"}')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "update_webhook with CR/LF in a header",
        "SELECT hooks.update_webhook($1, '{\"headers\": {\"X-A\": \"a\\r\\nb\"}}')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "update_webhook with a bad pattern",
        "SELECT hooks.update_webhook($1, '{\"event_type\": \"claim/x*\"}')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "update_webhook with a non-object",
        "SELECT hooks.update_webhook($1, '[1]')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "rotate_secret with a 40-day grace",
        "SELECT hooks.rotate_secret($1, NULL, '40 days')",
        &[&id],
        BAD,
    )
    .await;
    p.rejects(
        "rotate_secret with a negative grace",
        "SELECT hooks.rotate_secret($1, NULL, '-1 hour')",
        &[&id],
        BAD,
    )
    .await;
    // Nothing changed on the good webhook either.
    let (url, headers): (String, String) = {
        let row =
            p.c.query_one(
                "SELECT url, headers::text FROM hooks.webhooks WHERE webhook_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (url.as_str(), headers.as_str()),
        ("https://a.example/good", "{}")
    );
    p.print("bad webhooks (SQLSTATE, case, message)");
    println!(
        "bad webhooks: {} cases, each rejected, nothing written, backend {} alive",
        p.seen.len(),
        p.pid
    );
    db.cleanup().await;
}

/// A url containing CR/LF (which the WHATWG URL parser would silently drop) is refused with
/// 22023, without echoing the url, and nothing is stored: it can never smuggle a header into a
/// request.
#[tokio::test]
async fn a_url_with_crlf_cannot_inject_a_header() {
    let db = TestDb::new().await;
    let url = "https://a.example/inj\r\nX-Evil: 1";
    let err = db
        .client()
        .execute(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
             VALUES ('acme', 'inj', '*', $1, 'secret-of-inj')",
            &[&url],
        )
        .await
        .expect_err("a url with CR/LF was accepted");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "22023", "{db_err}");
    assert!(
        !db_err.message().contains("X-Evil"),
        "the url is echoed: {db_err}"
    );
    let stored: i64 = db
        .client()
        .query_one("SELECT count(*) FROM hooks.webhooks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    db.cleanup().await;
}
