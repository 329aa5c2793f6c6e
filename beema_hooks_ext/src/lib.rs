//! `beema_hooks`: transactional webhooks from inside PostgreSQL.
//!
//! The SQL surface lives in `sql/`: `schema.sql` (tables, run first), `api.sql` (publish, match,
//! claim, complete, release), `ops.sql` (views, metrics, management, retention) and
//! `security.sql` (roles, privileges, row-level security; run last). The Rust functions here are the parts SQL
//! is bad at: validating events and webhook settings with precise errors, matching event-type
//! patterns, signing, and the retry schedule. The rules themselves live in the `hooks_core`
//! crate, shared with the sender and tested there in plain Rust.

use pgrx::prelude::*;

mod errors;
mod gucs;
mod publish;
mod signing;
mod wake;
mod webhooks;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!(
    "../../sql/api.sql",
    name = "api",
    requires = [
        "schema",
        publish::prepare_event,
        publish::pattern_matches,
        publish::prefixes,
        signing::sign,
        signing::sign_standard,
        signing::generate_secret,
        signing::generate_signing_key,
        signing::public_key,
        signing::sign_standard_v1a,
        webhooks::check_webhook,
        webhooks::check_patterns,
        webhooks::check_envelope,
        webhooks::render_envelope,
        webhooks::retry_delay_ms,
        wake::notify_at_commit,
    ]
);
pgrx::extension_sql_file!("../../sql/ops.sql", name = "ops", requires = ["api"]);
pgrx::extension_sql_file!("../../sql/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    wake::init();
}

/// `#[pg_test]`s: each runs inside a transaction of a real Postgres with the extension installed.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).expect("query failed")
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(sql).unwrap_or(0)
    }

    fn webhook(tenant: &str, name: &str, pattern: &str) -> i64 {
        one::<i64>(&format!(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
             VALUES ('{tenant}', '{name}', '{pattern}', 'http://127.0.0.1:9/{name}', 'test-secret-123')
             RETURNING webhook_id"
        ))
        .expect("webhook id")
    }

    /// SQLSTATE of running `sql`, or "ok".
    fn sqlstate_of(sql: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .expect("helper");
        Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()])
            .expect("sqlstate_of")
            .expect("not null")
    }

    #[pg_test]
    fn sign_matches_rfc4231_and_node() {
        // RFC 4231 test case 2 (key "Jefe").
        assert_eq!(
            one::<String>("SELECT hooks.sign('what do ya want for nothing?', 'Jefe')").as_deref(),
            Some("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // Non-ASCII payload: the UTF-8 bytes are signed, as Node does.
        let sig = one::<String>("SELECT hooks.sign('{\"name\":\"Zoë 🚀\"}', 's3cret')").unwrap();
        assert!(one::<bool>(&format!("SELECT hooks.verify('{{\"name\":\"Zoë 🚀\"}}', 's3cret', '{sig}')")).unwrap());
        assert!(!one::<bool>(&format!("SELECT hooks.verify('{{\"name\":\"Zoe 🚀\"}}', 's3cret', '{sig}')")).unwrap());
        assert_eq!(one::<String>("SELECT hooks.sign(NULL, 'x')"), None);
    }

    #[pg_test]
    fn standard_webhooks_signature() {
        let sig = one::<String>(
            "SELECT hooks.sign_standard('msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{\"test\": 2432232314}',
                                        ARRAY['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'])",
        );
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert!(one::<bool>(
            "SELECT hooks.verify_standard('msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{\"test\": 2432232314}',
                    'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'v1,bad v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=')"
        )
        .unwrap());
        let secret = one::<String>("SELECT hooks.generate_secret()").unwrap();
        assert!(secret.starts_with("whsec_") && secret.len() == 6 + 44, "{secret}");
    }

    #[pg_test]
    fn publish_writes_one_event_and_one_delivery_per_match() {
        let bound = webhook("acme", "bound", "policy/bound");
        let all = webhook("acme", "all", "*");
        let claims = webhook("acme", "claims", "claim/*");
        webhook("other", "bound", "policy/bound");
        Spi::run("UPDATE hooks.webhooks SET enabled = false WHERE webhook_name = 'claims'").unwrap();

        let id = one::<i64>(r#"SELECT hooks.publish('{"event":"policy/bound","data":{"tenantId":"acme","n":1}}')"#).unwrap();
        assert_eq!(count("SELECT count(*) FROM hooks.events"), 1);
        let got = Spi::connect(|c| {
            c.select(&format!("SELECT webhook_id FROM hooks.deliveries WHERE event_id = {id} ORDER BY webhook_id"), None, &[])
                .unwrap()
                .map(|row| row.get::<i64>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(got, vec![bound, all]);
        assert!(claims > 0);
        assert_eq!(count("SELECT count(*) FROM hooks.match('policy/bound', 'acme')"), 2);
        assert_eq!(count("SELECT count(*) FROM hooks.match('claim/opened', 'acme')"), 1);
    }

    #[pg_test]
    fn publish_is_idempotent_per_tenant_id() {
        webhook("acme", "all", "*");
        webhook("beta", "all", "*");
        let a = one::<i64>(r#"SELECT hooks.publish('{"event":"claim/opened","id":"evt-1","data":{"tenantId":"acme"}}')"#);
        let b = one::<i64>(r#"SELECT hooks.publish('{"event":"claim/opened","id":"evt-1","data":{"tenantId":"acme"}}')"#);
        let c = one::<i64>(r#"SELECT hooks.publish('{"event":"claim/opened","id":"evt-1","data":{"tenantId":"beta"}}')"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(count("SELECT count(*) FROM hooks.deliveries"), 2);
    }

    #[pg_test]
    fn publish_rejects_bad_input_with_sqlstates() {
        webhook("acme", "all", "*");
        let cases = [
            ("SELECT hooks.publish(NULL)", "22004"),
            ("SELECT hooks.publish('[]')", "22023"),
            ("SELECT hooks.publish('42')", "22023"),
            ("SELECT hooks.publish('{}')", "22004"),
            (r#"SELECT hooks.publish('{"event":"","data":{"tenantId":"acme"}}')"#, "22023"),
            (r#"SELECT hooks.publish('{"event":7,"data":{"tenantId":"acme"}}')"#, "22023"),
            (r#"SELECT hooks.publish('{"event":"a/b"}')"#, "22004"),
            (r#"SELECT hooks.publish('{"event":"a/b","data":{"tenantId":1}}')"#, "22023"),
            (r#"SELECT hooks.publish('{"event":"a/b","data":{"tenantId":"acme"},"user":[]}')"#, "22023"),
            (r#"SELECT hooks.publish(jsonb_build_object('event','a/b','data',jsonb_build_object('tenantId','acme','x',repeat('y', 2000000))))"#, "54000"),
        ];
        for (sql, want) in cases {
            assert_eq!(sqlstate_of(sql), want, "{sql}");
        }
        assert_eq!(count("SELECT count(*) FROM hooks.events"), 0);
        assert_eq!(count("SELECT count(*) FROM hooks.deliveries"), 0);
    }

    #[pg_test]
    fn webhook_validation_on_plain_dml() {
        let ins = |url: &str, pattern: &str, headers: &str, retry: &str| {
            sqlstate_of(&format!(
                "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers, retry_config)
                 VALUES ('acme', md5(random()::text), '{pattern}', '{url}', '{headers}', '{retry}')"
            ))
        };
        assert_eq!(ins("https://example.com/h", "claim/*", "{}", "{}"), "ok");
        assert_eq!(ins("ftp://example.com/h", "claim/*", "{}", "{}"), "22023");
        assert_eq!(ins("/relative", "claim/*", "{}", "{}"), "22023");
        assert_eq!(ins("javascript:alert(1)", "claim/*", "{}", "{}"), "22023");
        assert_eq!(ins("https://u:p@example.com/", "claim/*", "{}", "{}"), "22023");
        assert_eq!(ins("https://example.com/h", "cl*m/x", "{}", "{}"), "22023");
        assert_eq!(ins("https://example.com/h", "claim/*", r#"{"X-A":"a\r\nB: c"}"#, "{}"), "22023");
        assert_eq!(ins("https://example.com/h", "claim/*", r#"{"X-Beema-Signature":"x"}"#, "{}"), "22023");
        assert_eq!(ins("https://example.com/h", "claim/*", "{}", r#"{"maxAttempts":-1}"#), "22023");
        assert_eq!(ins("https://example.com/h", "claim/*", "{}", r#"{"backoffMs":1e15}"#), "22023");
        // updates are validated too, and a missing secret is generated
        let id = webhook("acme", "w", "policy/bound");
        assert_eq!(sqlstate_of(&format!("UPDATE hooks.webhooks SET url = 'nope' WHERE webhook_id = {id}")), "22023");
        assert_eq!(
            sqlstate_of("INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'gen', '*', 'https://x.example/')"),
            "ok"
        );
        let secret = one::<String>("SELECT secret FROM hooks.webhooks WHERE webhook_name = 'gen'").unwrap();
        assert!(secret.starts_with("whsec_"));
    }

    #[pg_test]
    fn claim_complete_retry_and_fail() {
        Spi::run(
            r#"INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, retry_config)
               VALUES ('acme', 'w', '*', 'http://127.0.0.1:9/w', 'test-secret-123', '{"maxAttempts":2,"backoffMs":0}')"#,
        )
        .unwrap();
        Spi::run(r#"SELECT hooks.publish('{"event":"policy/bound","data":{"tenantId":"acme"}}')"#).unwrap();

        let (id, attempt, headers, body) = Spi::connect(|c| {
            let row = c.select("SELECT delivery_id, attempt_number, headers, body FROM hooks.claim('s1', 10)", None, &[]).unwrap().first();
            (
                row.get::<i64>(1).unwrap().unwrap(),
                row.get::<i32>(2).unwrap().unwrap(),
                row.get::<pgrx::JsonB>(3).unwrap().unwrap().0,
                row.get::<String>(4).unwrap().unwrap(),
            )
        });
        assert_eq!(attempt, 1);
        let sig = one::<String>(&format!("SELECT hooks.sign($b${body}$b$, 'test-secret-123')")).unwrap();
        assert_eq!(headers["X-Beema-Signature"].as_str(), Some(sig.as_str()));
        assert_eq!(headers["X-Beema-Event"].as_str(), Some("policy/bound"));
        assert_eq!(headers["Content-Type"].as_str(), Some("application/json"));
        // claimed rows are not claimed again while the lease holds
        assert_eq!(count("SELECT count(*) FROM hooks.claim('s2', 10)"), 0);

        // a stale completion (wrong attempt) changes nothing
        let applied = one::<i32>(&format!(
            "SELECT hooks.complete('s1', '[{{\"delivery_id\":{id},\"attempt_number\":7,\"status_code\":200}}]')"
        ));
        assert_eq!(applied, Some(0));
        // failure with attempts left -> retrying, due at once (backoffMs 0)
        let applied = one::<i32>(&format!(
            "SELECT hooks.complete('s1', '[{{\"delivery_id\":{id},\"attempt_number\":1,\"status_code\":500,\"response_body\":\"boom\",\"duration_ms\":3}}]')"
        ));
        assert_eq!(applied, Some(1));
        assert_eq!(one::<String>("SELECT status FROM hooks.deliveries").as_deref(), Some("retrying"));
        assert_eq!(one::<String>("SELECT error_message FROM hooks.deliveries").as_deref(), Some("HTTP 500"));
        // the last attempt fails for good
        assert_eq!(count("SELECT count(*) FROM hooks.claim('s1', 10)"), 1);
        Spi::run(&format!(
            "SELECT hooks.complete('s1', '[{{\"delivery_id\":{id},\"attempt_number\":2,\"status_code\":null,\"error\":\"timeout after 100 ms\"}}]')"
        ))
        .unwrap();
        assert_eq!(one::<String>("SELECT status FROM hooks.deliveries").as_deref(), Some("failed"));
        assert_eq!(count("SELECT count(*) FROM hooks.attempts WHERE outcome = 'lease_lost'"), 1);
        assert_eq!(count("SELECT count(*) FROM hooks.attempts WHERE outcome = 'failure'"), 2);
    }

    #[pg_test]
    fn gone_disables_the_webhook_and_holds_its_queue() {
        let w = webhook("acme", "w", "*");
        Spi::run(r#"SELECT hooks.publish('{"event":"a/b","data":{"tenantId":"acme"}}')"#).unwrap();
        let id = one::<i64>("SELECT delivery_id FROM hooks.claim('s1', 1)").unwrap();
        Spi::run(r#"SELECT hooks.publish('{"event":"a/c","data":{"tenantId":"acme"}}')"#).unwrap();
        Spi::run(&format!(
            "SELECT hooks.complete('s1', '[{{\"delivery_id\":{id},\"attempt_number\":1,\"status_code\":410}}]')"
        ))
        .unwrap();
        assert_eq!(one::<bool>(&format!("SELECT enabled FROM hooks.webhooks WHERE webhook_id = {w}")), Some(false));
        assert_eq!(count("SELECT count(*) FROM hooks.deliveries WHERE status = 'failed'"), 1);
        // the queued delivery waits for the webhook to be enabled again (README, "Disabled webhooks")
        assert_eq!(count("SELECT count(*) FROM hooks.deliveries WHERE status = 'pending'"), 1);
        assert_eq!(count("SELECT count(*) FROM hooks.deliveries WHERE status = 'cancelled'"), 0);
    }

    #[pg_test]
    fn release_makes_rows_due_without_counting_the_attempt() {
        webhook("acme", "w", "*");
        Spi::run(r#"SELECT hooks.publish('{"event":"a/b","data":{"tenantId":"acme"}}')"#).unwrap();
        let id = one::<i64>("SELECT delivery_id FROM hooks.claim('s1', 1)").unwrap();
        let n = one::<i32>(&format!("SELECT hooks.release('s1', '[{{\"delivery_id\":{id},\"attempt_number\":1}}]')"));
        assert_eq!(n, Some(1));
        assert_eq!(one::<String>("SELECT status || ':' || attempt_number FROM hooks.deliveries").as_deref(), Some("pending:0"));
        assert_eq!(count("SELECT count(*) FROM hooks.claim('s2', 1)"), 1);
    }

    #[pg_test]
    fn retry_schedule_is_exponential_and_capped() {
        assert_eq!(one::<i64>(r#"SELECT hooks.retry_delay_ms('{"backoffMs":1000}', 3, NULL, 0.5)"#), Some(4000));
        assert_eq!(one::<i64>(r#"SELECT hooks.retry_delay_ms('{"backoffMs":1000,"maxBackoffMs":5000}', 10, NULL, 0.5)"#), Some(5000));
        assert_eq!(one::<i64>(r#"SELECT hooks.retry_delay_ms('{}', 1, 30000, 0.5)"#), Some(30000));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
