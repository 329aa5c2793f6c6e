//! The portable flavor's PL/pgSQL twins (sql/portable.sql) against their Rust originals: one
//! database of each flavor, the same generated corpus through both, and every call must give
//! the same result, or fail with the same SQLSTATE and message (up to where a message quotes a
//! parser: JSON and URL syntax errors are worded by serde_json and the url crate in the native
//! flavor, by Postgres in the portable one). The corpus is thousands of
//! events, patterns, webhooks, payloads with non-ASCII text, secrets of both forms and bad
//! inputs, from a fixed seed (BEEMA_TWINS_SEED picks another; a failure names its seed).

use beema_hooks_e2e::{Flavor, TestDb};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// splitmix64: a small deterministic generator, so a failing input can be regenerated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What one call gave: its result as text, or its SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Value(Option<String>),
    Error { code: String, message: String },
}

/// Where a message goes on with a parser's own words (serde_json's, the url crate's, Postgres'),
/// which the two flavors cannot share: messages are compared up to there.
const PARSER_DETAIL: [&str; 3] = [
    "is not JSON: ",
    "is not valid JSON: ",
    "is not an absolute URL: ",
];

async fn run(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Outcome {
    match client.query_one(sql, params).await {
        Ok(row) => Outcome::Value(row.get(0)),
        Err(e) => match e.as_db_error() {
            Some(db) => Outcome::Error {
                code: db.code().code().to_owned(),
                message: PARSER_DETAIL
                    .iter()
                    .find_map(|m| {
                        db.message()
                            .find(m)
                            .map(|i| db.message()[..i + m.len()].to_owned() + "...")
                    })
                    .unwrap_or_else(|| db.message().to_owned()),
            },
            None => panic!("{sql}: {e}"),
        },
    }
}

/// Both flavors' databases, and the tally of what was compared.
struct Twins {
    native: TestDb,
    portable: TestDb,
    calls: usize,
    errors: usize,
    seed: u64,
}

impl Twins {
    async fn new(seed: u64) -> Twins {
        let (native, portable) =
            tokio::join!(TestDb::of(Flavor::Native), TestDb::of(Flavor::Portable));
        Twins {
            native,
            portable,
            calls: 0,
            errors: 0,
            seed,
        }
    }

    /// Runs `sql` in both databases and requires the same outcome.
    async fn same(&mut self, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Outcome {
        let (n, p) = tokio::join!(
            run(self.native.client(), sql, params),
            run(self.portable.client(), sql, params)
        );
        assert_eq!(
            n, p,
            "{what}: the portable twin differs from the native original (seed {}; left native, right portable)\nsql: {sql}\nparams: {params:?}",
            self.seed
        );
        self.calls += 1;
        if matches!(n, Outcome::Error { .. }) {
            self.errors += 1;
        }
        n
    }

    /// Runs `sql` in both databases (settings, say).
    async fn both(&self, sql: &str) {
        for db in [&self.native, &self.portable] {
            db.client()
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

const SEGMENTS: &[&str] = &[
    "a", "b", "claim", "policy", "opened", "x1", "Zoë", "ünï", "🚀", "*", "", "-", "_", "a*", "**",
    " ", "\t", "\u{a0}", "\u{85}", "é", "\u{1}",
];

/// An event type or pattern: segments joined by '/' or '.', sometimes broken.
fn event_type(r: &mut Rng) -> String {
    if r.chance(5) {
        return r
            .pick(&[
                "*",
                "",
                "/",
                ".",
                "a/",
                "/a",
                "a..b",
                "claim/*",
                "*.created",
                "*/*",
            ])
            .to_owned();
    }
    if r.chance(2) {
        return "a/".repeat(130);
    }
    let n = 1 + r.below(4);
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push_str(r.pick(&["/", ".", "/", "/"]));
        }
        let seg = if r.chance(85) {
            r.pick(&["a", "b", "claim", "policy", "opened", "x1", "Zoë", "*"])
        } else {
            r.pick(SEGMENTS)
        };
        s.push_str(seg);
    }
    s
}

/// A JSON string literal of arbitrary text: non-ASCII, escapes, control characters.
fn json_string(r: &mut Rng) -> String {
    let pieces: &[&str] = &[
        "a",
        "Zoë",
        "🚀",
        "ünïcödé",
        "\"",
        "\\",
        "\n",
        "\t",
        "\u{1}",
        "\u{7f}",
        "\u{85}",
        "/",
        " ",
        "x y",
        "\u{2028}",
        "日本",
    ];
    let n = r.below(6);
    let s: String = (0..n).map(|_| r.pick(pieces)).collect();
    serde_json::Value::String(s).to_string()
}

/// A JSON number's text, in the shapes jsonb and serde_json treat differently if anything does.
fn json_number(r: &mut Rng) -> String {
    r.pick(&[
        "0",
        "-0",
        "1",
        "-17",
        "1.50",
        "1e2",
        "1E-3",
        "0.1",
        "12345678901234567890123",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "3.14159265358979323846264338327950288",
        "1.0",
        "100",
    ])
    .to_owned()
}

/// Any JSON value's text, nested up to `depth`.
fn json_value(r: &mut Rng, depth: usize) -> String {
    match r.below(if depth == 0 { 4 } else { 6 }) {
        0 => json_string(r),
        1 => json_number(r),
        2 => r.pick(&["true", "false"]).to_owned(),
        3 => "null".to_owned(),
        4 => {
            let n = r.below(4);
            let items: Vec<String> = (0..n).map(|_| json_value(r, depth - 1)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => json_object(r, depth - 1, &[]),
    }
}

/// A JSON object's text with random keys, and `fixed` fields first.
fn json_object(r: &mut Rng, depth: usize, fixed: &[(String, String)]) -> String {
    let mut fields: Vec<String> = fixed.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for _ in 0..r.below(4) {
        let key = if r.chance(70) {
            r.pick(&[
                "\"n\"",
                "\"kind\"",
                "\"Zoë\"",
                "\"a b\"",
                "\"x\"",
                "\"ünï\"",
            ])
            .to_owned()
        } else {
            json_string(r)
        };
        fields.push(format!("{key}: {}", json_value(r, depth)));
    }
    format!("{{{}}}", fields.join(", "))
}

/// An id, tenant or timestamp field value: mostly fine, sometimes each way of being wrong.
fn id_value(r: &mut Rng) -> String {
    if r.chance(85) {
        return serde_json::Value::String(
            r.pick(&["acme", "t-1", "Zoë & Co", "🚀", "k1", "ünï"])
                .to_owned(),
        )
        .to_string();
    }
    match r.below(7) {
        0 => "\"\"".to_owned(),
        1 => json_number(r),
        2 => format!("\"{}\"", "x".repeat(254 + r.below(4))),
        3 => "\"a\\u0001b\"".to_owned(),
        4 => "{}".to_owned(),
        5 => "null".to_owned(),
        _ => json_string(r),
    }
}

fn timestamp_value(r: &mut Rng) -> String {
    match r.below(10) {
        0..=3 => "\"2026-11-30T12:00:00.000Z\"".to_owned(),
        4 => "\"\"".to_owned(),
        5 => format!("\"{}\"", "t".repeat(63 + r.below(3))),
        6 => json_number(r),
        7 => "true".to_owned(),
        8 => "null".to_owned(),
        _ => "{}".to_owned(),
    }
}

/// An event as an application might publish it, or get wrong.
fn event(r: &mut Rng) -> String {
    let mut fixed = Vec::new();
    let name = if r.chance(80) {
        serde_json::Value::String(
            r.pick(&[
                "policy/bound",
                "claim/opened",
                "invoice.created",
                "Zoë/ünï",
                "a.b/c",
            ])
            .to_owned(),
        )
        .to_string()
    } else {
        serde_json::Value::String(event_type(r)).to_string()
    };
    match r.below(20) {
        0 => {}
        1 => fixed.push(("\"event\"".to_owned(), json_value(r, 1))),
        2 => fixed.push(("\"name\"".to_owned(), name.clone())),
        3 => {
            fixed.push(("\"event\"".to_owned(), name.clone()));
            fixed.push(("\"name\"".to_owned(), "\"other/x\"".to_owned()));
        }
        _ => fixed.push(("\"event\"".to_owned(), name)),
    }
    let tenant = id_value(r);
    match r.below(12) {
        0 => {}
        1 => fixed.push(("\"data\"".to_owned(), "null".to_owned())),
        2 => fixed.push(("\"data\"".to_owned(), json_value(r, 1))),
        3 => {
            fixed.push(("\"tenantId\"".to_owned(), tenant));
        }
        _ => {
            let data = json_object(r, 3, &[("\"tenantId\"".to_owned(), tenant)]);
            fixed.push(("\"data\"".to_owned(), data));
        }
    }
    if r.chance(30) {
        let user = if r.chance(80) {
            json_object(r, 1, &[])
        } else {
            json_value(r, 1)
        };
        fixed.push(("\"user\"".to_owned(), user));
    }
    if r.chance(50) {
        fixed.push(("\"id\"".to_owned(), id_value(r)));
    }
    if r.chance(40) {
        fixed.push(("\"timestamp\"".to_owned(), timestamp_value(r)));
    }
    if r.chance(3) {
        let depth = 120 + r.below(16);
        fixed.push((
            "\"deep\"".to_owned(),
            format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        ));
    }
    if r.chance(3) {
        fixed.push((
            "\"big\"".to_owned(),
            format!("\"{}\"", "é".repeat(1500 + r.below(1000))),
        ));
    }
    if r.chance(10) {
        return r
            .pick(&["[1, 2]", "\"policy/bound\"", "42", "null", "true", "{}"])
            .to_owned();
    }
    json_object(r, 2, &fixed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_twins_match_their_rust_originals() {
    let seed = std::env::var("BEEMA_TWINS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let mut r = Rng(seed);
    let mut t = Twins::new(seed).await;

    // Events: validation, SQLSTATEs, and the body byte for byte (a fresh event id, when the
    // event has none, is random: such bodies are compared with it masked).
    let prepare = "SELECT string_agg(concat_ws(E'\\x1f', p.tenant_id, p.event_type,
                          CASE WHEN $1::text::jsonb ? 'id' AND $1::text::jsonb -> 'id' <> 'null' THEN p.event_key ELSE '<fresh>' END,
                          CASE WHEN $1::text::jsonb ? 'id' AND $1::text::jsonb -> 'id' <> 'null' THEN p.body
                               ELSE replace(p.body, p.event_key, '<fresh>') END), E'\\x1e')
                     FROM hooks._prepare_event($1::text::jsonb::text, '2026-12-01T00:00:00.000Z') AS p";
    let mut bodies = Vec::new();
    for i in 0..3000 {
        if i == 2500 {
            t.both("SET hooks.max_payload_bytes = 2048").await;
        }
        let ev = event(&mut r);
        if let Outcome::Value(Some(v)) = t.same("_prepare_event", prepare, &[&ev]).await {
            if let Some(body) = v.split('\x1f').nth(3) {
                bodies.push(body.replace("<fresh>", "00000000-0000-4000-8000-000000000000"));
            }
        }
    }
    t.both("RESET hooks.max_payload_bytes").await;
    assert!(
        bodies.len() > 600,
        "too few valid events in the corpus: {}",
        bodies.len()
    );

    // Envelopes, rendered from stored bodies (and a few that are not JSON objects).
    let names = [
        "beema",
        "standard",
        "flat",
        "supabase",
        "Standard",
        "cloudevents",
        "",
    ];
    for (i, body) in bodies.iter().enumerate().take(1500) {
        let env = names[i % names.len()];
        t.same(
            "_render_envelope",
            "SELECT hooks._render_envelope($1, $2)",
            &[&env, body],
        )
        .await;
        t.same(
            "_check_envelope",
            "SELECT hooks._check_envelope($1)::text",
            &[&env],
        )
        .await;
    }
    // (supabase-shaped data, as table-change events carry it)
    for i in 0..200 {
        let record = json_object(&mut r, 2, &[]);
        let ev = format!(
            r#"{{"event": "orders/insert", "data": {{"tenantId": "acme", "type": "INSERT", "table": "orders", "schema": "public", "record": {record}, "old_record": {}}}}}"#,
            if i % 2 == 0 {
                "null".to_owned()
            } else {
                json_object(&mut r, 1, &[])
            }
        );
        if let Outcome::Value(Some(v)) = t.same("_prepare_event", prepare, &[&ev]).await {
            let body = v.split('\x1f').nth(3).unwrap_or_default().to_owned();
            t.same(
                "_render_envelope",
                "SELECT hooks._render_envelope('supabase', $1)",
                &[&body],
            )
            .await;
        }
    }
    for bad in ["[1]", "not json", "\"x\"", "{}"] {
        t.same(
            "_render_envelope",
            "SELECT hooks._render_envelope('flat', $1)",
            &[&bad],
        )
        .await;
    }

    // Patterns: matching, prefixes, validation (alone and as lists).
    for _ in 0..3000 {
        let (p, e) = (event_type(&mut r), event_type(&mut r));
        let p = if r.chance(30) {
            e.replacen(|c| c != '/' && c != '.', "*", 1)
        } else {
            p
        };
        t.same(
            "pattern_matches",
            "SELECT hooks.pattern_matches($1, $2)::text",
            &[&p, &e],
        )
        .await;
        t.same("_prefixes", "SELECT hooks._prefixes($1)::text", &[&e])
            .await;
    }
    for _ in 0..500 {
        let n = if r.chance(5) { 51 } else { r.below(5) };
        let list: Vec<Option<String>> = (0..n)
            .map(|_| {
                if r.chance(3) {
                    None
                } else {
                    Some(event_type(&mut r))
                }
            })
            .collect();
        t.same(
            "_check_patterns",
            "SELECT hooks._check_patterns($1)::text",
            &[&list],
        )
        .await;
    }

    // Webhooks: every field, each way of being wrong.
    let urls = [
        "https://a.example/hook",
        "http://127.0.0.1:8080/x?y=1#z",
        "https://a.example",
        "http://[::1]:9000/",
        "https://ünï.example/",
        "HTTPS://A.EXAMPLE/",
        "http:a.example/x",
        "https:\\\\a.example",
        "http://a.example:/",
        "http://a.example:65535/",
        "http://a.example:65536/",
        "http://a.example:8x/",
        "http://",
        "https:///x",
        "ftp://a.example/",
        "javascript:alert(1)",
        "/relative",
        "a.example/x",
        "mailto:x@a.example",
        "https://user:pw@a.example/",
        "https://user@a.example/",
        "https://@a.example/",
        "https://a.example/ x",
        "https://a.exa\tmple/",
        "http://1.2.3.4/",
        "http://1.2.3.256/",
        "http://999.1.1.1/",
        "http://0x7f.1/",
        "http://1.2.3/",
        "http://08.1.1.1/",
        "http://a<b.example/",
        "http://a^b.example/",
        "http://[::1/",
        "http://[zz]/",
        "https://a.example:443/p/../q",
    ];
    let header_sets = [
        r#"{}"#,
        r#"{"X-Api-Key": "k"}"#,
        r#"{"Authorization": "Bearer Zoë 🚀"}"#,
        r#"{"x-beema-signature": "x"}"#,
        r#"{"Content-Type": "a"}"#,
        r#"{"X A": "v"}"#,
        r#"{"": "v"}"#,
        r#"{"X-A": 1}"#,
        r#"{"X-A": "a\r\nX-B: 1"}"#,
        r#"{"X-A": "a\tb"}"#,
        r#"{"X-A": "a\u007fb"}"#,
        r#"[1]"#,
        r#""x""#,
        r#"{"Ünï": "v"}"#,
        r#"{"X-A": null}"#,
    ];
    let retry_keys = [
        "maxAttempts",
        "backoffMs",
        "maxBackoffMs",
        "strategy",
        "jitter",
        "maxAtempts",
    ];
    let retry_values = [
        "0",
        "1",
        "3",
        "100",
        "101",
        "-1",
        "1.5",
        "1000",
        "99999999999",
        "604800000",
        "604800001",
        "\"3\"",
        "true",
        "null",
        "\"linear\"",
        "\"fixed\"",
        "\"exponential\"",
        "\"Fixed\"",
        "false",
        "86400000",
        "86400001",
        "[1]",
        "9223372036854775808",
    ];
    let mut retry_configs = vec!["{}".to_owned(), "[]".to_owned(), "3".to_owned()];
    for _ in 0..400 {
        let fields: Vec<String> = (0..r.below(4))
            .map(|_| {
                let known = if r.chance(90) {
                    retry_keys.len() - 1
                } else {
                    retry_keys.len()
                };
                let k = retry_keys[r.below(known)];
                let v = if r.chance(75) {
                    match k {
                        "strategy" => r
                            .pick(&["\"linear\"", "\"fixed\"", "\"exponential\""])
                            .to_owned(),
                        "jitter" => r.pick(&["true", "false"]).to_owned(),
                        "maxAttempts" => (1 + r.below(10)).to_string(),
                        _ => r
                            .pick(&["0", "100", "1000", "5000", "60000", "3600000"])
                            .to_owned(),
                    }
                } else {
                    retry_values[r.below(retry_values.len())].to_owned()
                };
                format!("\"{k}\": {v}")
            })
            .collect();
        retry_configs.push(format!("{{{}}}", fields.join(", ")));
    }
    let secret_of = |r: &mut Rng| -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        match r.below(9) {
            0 | 1 => {
                let n = 24 + r.below(16);
                format!("whsec_{}", b64.encode(r.bytes(n)))
            }
            2 => {
                let n = 1 + r.below(3);
                "whsec_".to_owned() + &b64.encode(r.bytes(n))
            }
            3 => "whsec_not base64!".to_owned(),
            4 => format!("whsec_{}", b64.encode(r.bytes(30)).trim_end_matches('=')),
            5 => "whsec_AB==".to_owned(),
            6 => "short".to_owned(),
            7 => "s".repeat(505 + r.below(10)),
            _ => format!("plain-secret-{}-Zoë", r.next()),
        }
    };
    for _ in 0..2000 {
        let tenant = if r.chance(90) {
            "acme".to_owned()
        } else {
            let long = r.below(2) * 300;
            r.pick(&["", "a\u{1}b", "Zoë"]).to_owned() + &"x".repeat(long)
        };
        let name = if r.chance(95) {
            "w1"
        } else {
            r.pick(&["", "tab\there", "\u{9f}"])
        };
        let pattern = if r.chance(70) {
            r.pick(&["*", "claim/*", "policy/bound", "*.created"])
                .to_owned()
        } else {
            event_type(&mut r)
        };
        let url = urls[r.below(urls.len())].to_owned();
        let url = if r.chance(2) {
            format!("https://a.example/{}", "p".repeat(2040))
        } else {
            url
        };
        let headers = if r.chance(2) {
            format!(
                "{{{}}}",
                (0..51)
                    .map(|i| format!("\"X-H{i}\": \"v\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if r.chance(2) {
            format!("{{\"X-Big\": \"{}\"}}", "v".repeat(4090 + r.below(10)))
        } else {
            header_sets[r.below(header_sets.len())].to_owned()
        };
        let retry = &retry_configs[r.below(retry_configs.len())];
        let spread = if r.chance(80) { 1 } else { 8 };
        let timeout: i32 = [10_000, 100, 99, 120_000, 120_001, 0, -5, 5_000][r.below(spread)];
        let secret = secret_of(&mut r);
        t.same(
            "_check_webhook",
            "SELECT hooks._check_webhook($1, $2, $3, $4, $5::text::jsonb::text, $6::text::jsonb::text, $7, $8)::text",
            &[&tenant, &name, &pattern, &url, &headers, retry, &timeout, &secret],
        )
        .await;
    }

    // Retry schedules: every strategy, jitter edge, attempt and Retry-After.
    for _ in 0..2500 {
        let cfg = &retry_configs[r.below(retry_configs.len())];
        let attempt: Option<i32> = if r.chance(3) {
            None
        } else {
            Some(*r.pick(&[&-1, &0, &1, &2, &3, &7, &20, &40, &41, &63, &i32::MAX]))
        };
        let retry_after: Option<i64> = if r.chance(60) {
            None
        } else {
            Some(*r.pick(&[&-5, &0, &1500, &90_000_000, &i64::MAX]))
        };
        let jitter: Option<f64> = if r.chance(3) {
            None
        } else {
            Some(*r.pick(&[
                &0.0,
                &0.5,
                &0.999_999,
                &1.0,
                &-1.0,
                &2.0,
                &f64::NAN,
                &f64::INFINITY,
                &0.123_456_789,
            ]))
        };
        t.same(
            "retry_delay_ms",
            "SELECT hooks.retry_delay_ms($1::text::jsonb::text, $2, $3, $4)::text",
            &[cfg, &attempt, &retry_after, &jitter],
        )
        .await;
    }

    // Signatures: X-Beema-Signature and Standard Webhooks, signing and verifying, with
    // non-ASCII payloads, both forms of secret and a rotation's two secrets.
    for i in 0..1500 {
        let payload = if i % 3 == 0 {
            bodies[i % bodies.len()].clone()
        } else {
            serde_json::from_str::<String>(&json_string(&mut r)).unwrap_or_default()
        };
        let secret = secret_of(&mut r);
        let sig = t
            .same("sign", "SELECT hooks.sign($1, $2)", &[&payload, &secret])
            .await;
        let Outcome::Value(Some(sig)) = sig else {
            panic!("sign gave no value")
        };
        let candidates = [
            sig.clone(),
            sig.trim_start_matches("sha256=").to_owned(),
            sig.to_uppercase().replace("SHA256=", "sha256="),
            format!(" {sig}\n"),
            sig.replace('a', "b"),
            sig[..sig.len() - 1].to_owned(),
            "sha256=zz".to_owned(),
            String::new(),
        ];
        let candidate = &candidates[r.below(candidates.len())];
        t.same(
            "verify",
            "SELECT hooks.verify($1, $2, $3)::text",
            &[&payload, &secret, candidate],
        )
        .await;

        let msg_id = format!("msg_{}", r.next());
        let ts: i64 = *r.pick(&[&1_614_265_330i64, &0, &-1, &i64::MAX, &1_796_000_000]);
        let secrets: Vec<Option<String>> = (0..1 + r.below(3))
            .map(|_| {
                if r.chance(10) {
                    None
                } else {
                    Some(secret_of(&mut r))
                }
            })
            .collect();
        let header = t
            .same(
                "sign_standard",
                "SELECT hooks.sign_standard($1, $2, $3, $4)",
                &[&msg_id, &ts, &payload, &secrets],
            )
            .await;
        let Outcome::Value(Some(header)) = header else {
            panic!("sign_standard gave no value")
        };
        let one = secrets
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_else(|| secret.clone());
        let tampered = [
            header.clone(),
            header.replace("v1,", "v2,"),
            format!("v1,AAAA {header}"),
            header.replace('A', "B"),
            "v1,!!".to_owned(),
        ];
        let h = &tampered[r.below(tampered.len())];
        t.same(
            "verify_standard",
            "SELECT hooks.verify_standard($1, $2, $3, $4, $5)::text",
            &[&msg_id, &ts, &payload, &one, h],
        )
        .await;
    }

    // generate_secret is random: the same form in both.
    for db in [&t.native, &t.portable] {
        let ok: bool = db
            .one(
                "SELECT bool_and(s ~ '^whsec_[A-Za-z0-9+/]{43}=$' AND length(decode(substr(s, 7), 'base64')) = 32)
                   FROM (SELECT hooks.generate_secret() AS s FROM generate_series(1, 200)) g",
            )
            .await;
        assert!(ok, "generate_secret is not whsec_<base64 of 32 bytes>");
    }

    assert!(
        t.calls > 15_000 && t.errors > 1_500,
        "corpus too small or too tame: {} calls, {} errors",
        t.calls,
        t.errors
    );
    eprintln!(
        "twins: {} calls compared, {} of them errors, all alike (seed {seed})",
        t.calls, t.errors
    );
}

/// No function in schema hooks is written in C in the portable flavor.
#[tokio::test]
async fn portable_flavor_has_no_c_functions() {
    let db = TestDb::of(Flavor::Portable).await;
    let c: Vec<String> = db
        .client()
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.pronamespace = 'hooks'::regnamespace AND l.lanname NOT IN ('sql', 'plpgsql')",
            &[],
        )
        .await
        .expect("pg_proc")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        c.is_empty(),
        "functions of schema hooks not in SQL or PL/pgSQL: {c:?}"
    );
    let native = TestDb::of(Flavor::Native).await;
    let missing: Vec<String> = {
        let sig = "SELECT p.oid::regprocedure::text || ' ' || coalesce(pg_get_function_result(p.oid), 'procedure') FROM pg_proc p
                    WHERE p.pronamespace = 'hooks'::regnamespace ORDER BY 1";
        let n: Vec<String> = native
            .client()
            .query(sig, &[])
            .await
            .expect("native")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let p: Vec<String> = db
            .client()
            .query(sig, &[])
            .await
            .expect("portable")
            .iter()
            .map(|r| r.get(0))
            .collect();
        n.into_iter().filter(|f| !p.contains(f)).collect()
    };
    assert!(
        missing.is_empty(),
        "functions of the native flavor missing from the portable one: {missing:?}"
    );
}
