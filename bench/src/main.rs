//! `beema-hooks-bench [--smoke] [--runs N] [--out DIR] [--keep-dbs] [p1|p2|p3|p4|p5|fanout|cost|watch|flavors ...]`
//!
//! The benchmark suite of beema-hooks (issue 6, BENCHMARKS.md). Every figure is the median of
//! `--runs` runs (3; 1 with `--smoke`), printed beside its baseline measured in the same run on
//! the same machine, with the ratio and the goal. Nothing fails for being slow: the exit code is
//! non-zero only when a benchmark could not run (an error, a hang, a wrong result).
//!
//! Environment: `BEEMA_ADMIN_URL` (a superuser URL of the cluster with the extension installed),
//! `HOOKS_SENDER_BIN`, `PG_BIN` (for pgbench), `WRK` (default: wrk on PATH). scripts/bench.sh
//! sets them up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beema_hooks_bench::bail;
use beema_hooks_bench::procs::{self, Length, Receiver, Sender};
use beema_hooks_bench::util::{connect, db_url, median, num, repo_root, Res};
use tokio_postgres::{AsyncMessage, Client, NoTls};

mod cost;
mod flavors;
mod ordering;
mod watch;

const BENCHES: [&str; 10] = ["p1", "p2", "p3", "p4", "p5", "fanout", "cost", "watch", "flavors", "ordering"];

/// The body fields of the benchmark event (besides event, tenantId): a typical small event.
const EVENT_DATA: &str = r#""policyId":"P-1","premium":1234.5,"currency":"EUR","holder":{"name":"Jane Doe","email":"jane@example.com"}"#;
const EVENT_USER: &str = r#"{"id":"u-1","email":"agent@example.com"}"#;

// ---------------------------------------------------------------------------------------------
// Figures and the report
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Goal {
    /// value / baseline at least this.
    MinRatio(f64),
    /// baseline / value at most this (a slowdown factor).
    MaxSlowdown(f64),
    /// value at most this (absolute, in the figure's unit).
    MaxValue(f64),
    /// value at least this (absolute, in the figure's unit).
    MinValue(f64),
    /// value / baseline at most this (a cost relative to the baseline's).
    MaxRatio(f64),
    None,
}

struct Figure {
    bench: &'static str,
    name: String,
    unit: &'static str,
    runs: Vec<f64>,
    baseline_name: String,
    baseline_runs: Vec<f64>,
    goal: Goal,
    note: String,
}

impl Figure {
    fn value(&self) -> f64 {
        median(&self.runs)
    }
    fn baseline(&self) -> f64 {
        median(&self.baseline_runs)
    }
    /// value / baseline (baseline / value for a slowdown goal): the median of the per-run
    /// ratios when every run has its own baseline, else the ratio of the medians.
    fn ratio(&self) -> f64 {
        let r = |v: f64, b: f64| match self.goal {
            Goal::MaxSlowdown(_) => b / v,
            _ => v / b,
        };
        if self.runs.len() == self.baseline_runs.len() {
            let per_run: Vec<f64> = self
                .runs
                .iter()
                .zip(&self.baseline_runs)
                .map(|(v, b)| r(*v, *b))
                .collect();
            median(&per_run)
        } else {
            r(self.value(), self.baseline())
        }
    }
    fn decimals(&self) -> usize {
        if self.value().abs() >= 100.0 {
            0
        } else {
            2
        }
    }
    fn goal_text(&self) -> String {
        match self.goal {
            Goal::MinRatio(r) => format!("ratio >= {r:.2}x"),
            Goal::MaxSlowdown(r) => format!("slowdown <= {r:.2}x"),
            Goal::MaxValue(v) => format!(
                "<= {} {}",
                num(v, if v >= 100.0 { 0 } else { 1 }),
                self.unit
            ),
            Goal::MinValue(v) => format!(
                ">= {} {}",
                num(v, if v >= 100.0 { 0 } else { 1 }),
                self.unit
            ),
            Goal::MaxRatio(r) => format!("ratio <= {r:.2}x"),
            Goal::None => "-".into(),
        }
    }
    fn verdict(&self) -> &'static str {
        let ok = match self.goal {
            Goal::MinRatio(r) => self.ratio() >= r,
            Goal::MaxSlowdown(r) => self.ratio() <= r,
            Goal::MaxValue(v) => self.value() <= v,
            Goal::MinValue(v) => self.value() >= v,
            Goal::MaxRatio(r) => self.ratio() <= r,
            Goal::None => return "",
        };
        if ok {
            "met"
        } else {
            "MISSED"
        }
    }
    fn line(&self) -> String {
        let d = self.decimals();
        let runs: Vec<String> = self.runs.iter().map(|x| num(*x, d)).collect();
        let mut s = format!(
            "{:<4} {:<58} {:>9} {:<4}",
            self.bench,
            self.name,
            num(self.value(), d),
            self.unit
        );
        if !self.baseline_runs.is_empty() {
            s += &format!(
                " | {}: {} {} | ratio {:.2}x",
                self.baseline_name,
                num(
                    self.baseline(),
                    if self.baseline().abs() >= 100.0 { 0 } else { 2 }
                ),
                self.unit,
                self.ratio()
            );
        }
        s += &format!(" | goal {} {}", self.goal_text(), self.verdict());
        s += &format!(" | runs [{}]", runs.join(", "));
        if !self.baseline_runs.is_empty() {
            let b: Vec<String> = self.baseline_runs.iter().map(|x| num(*x, d)).collect();
            s += &format!(" vs [{}]", b.join(", "));
        }
        if !self.note.is_empty() {
            s += &format!(" | {}", self.note);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The context of a suite run
// ---------------------------------------------------------------------------------------------

struct Ctx {
    smoke: bool,
    runs: usize,
    out: PathBuf,
    admin_url: String,
    admin: Client,
    sender_bin: PathBuf,
    pgbench: PathBuf,
    wrk: PathBuf,
    receiver: Receiver,
    figures: Vec<Figure>,
    dbs: Vec<String>,
    keep_dbs: bool,
}

impl Ctx {
    /// A new empty database with the extension (dropped first if it exists).
    async fn fresh_db(&mut self, name: &str) -> Res<(String, Client)> {
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        if !self.dbs.iter().any(|d| d == name) {
            self.dbs.push(name.to_string());
        }
        let url = db_url(&self.admin_url, name);
        let db = connect(&url).await?;
        // BEEMA_BENCH_EXT_VERSION: measure an older version of the SQL (with the installed
        // library), for A/B comparisons in one run.
        let create = match std::env::var("BEEMA_BENCH_EXT_VERSION") {
            Ok(v) if !v.is_empty() => format!(
                "CREATE EXTENSION beema_hooks VERSION '{}'",
                v.replace('\'', "''")
            ),
            _ => "CREATE EXTENSION beema_hooks".to_string(),
        };
        db.batch_execute(&create).await?;
        // BEEMA_BENCH_SETUP_SQL: a file of SQL run after CREATE EXTENSION, for experiments
        // (for example a changed function) without installing the extension again.
        if let Ok(path) = std::env::var("BEEMA_BENCH_SETUP_SQL") {
            if !path.is_empty() {
                let sql = std::fs::read_to_string(&path)?;
                db.batch_execute(&sql).await?;
            }
        }
        Ok((url, db))
    }

    /// A new empty database with the portable flavor (dropped first if it exists), installed
    /// as on managed Postgres: `scripts/portable.sh`, then `psql -f dist/beema_hooks.sql` by
    /// `beema_owner` (owns the database, may create roles, not a superuser). The URL and client
    /// returned are the superuser's, as for [`Ctx::fresh_db`], so the measurements match.
    async fn fresh_portable_db(&mut self, name: &str) -> Res<(String, Client)> {
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        self.admin
            .batch_execute(
                "DO $$ BEGIN CREATE ROLE beema_owner LOGIN CREATEROLE;
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            )
            .await?;
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER beema_owner"))
            .await?;
        if !self.dbs.iter().any(|d| d == name) {
            self.dbs.push(name.to_string());
        }
        let root = repo_root();
        let dist = self.out.join("dist");
        let built = std::process::Command::new("bash")
            .arg(root.join("scripts/portable.sh"))
            .arg(&dist)
            .output()?;
        if !built.status.success() {
            bail!(
                "scripts/portable.sh failed ({}): {}",
                built.status,
                String::from_utf8_lossy(&built.stderr)
            );
        }
        let url = db_url(&self.admin_url, name);
        let owner_url = match url.split_once("://").and_then(|(s, r)| r.split_once('@').map(|(_, h)| (s, h))) {
            Some((scheme, host)) => format!("{scheme}://beema_owner@{host}"),
            None => bail!("cannot put the owner into {url}"),
        };
        let psql = self.pgbench.with_file_name("psql");
        let out = std::process::Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &owner_url, "-f"])
            .arg(dist.join("beema_hooks.sql"))
            .output()?;
        if !out.status.success() {
            bail!("installing the portable flavor: {}", String::from_utf8_lossy(&out.stderr));
        }
        let db = connect(&url).await?;
        Ok((url, db))
    }

    async fn drop_dbs(&mut self) {
        if self.keep_dbs {
            return;
        }
        for d in std::mem::take(&mut self.dbs) {
            if let Err(e) = self
                .admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"))
                .await
            {
                eprintln!("warning: could not drop {d}: {e}");
            }
        }
    }

    fn write(&self, name: &str, text: &str) -> Res<PathBuf> {
        let p = self.out.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// pgbench with the suite's length: `secs` seconds, or a few transactions in smoke mode.
    fn pgbench(
        &self,
        url: &str,
        script: &Path,
        clients: u32,
        secs: u64,
        defines: &[(&str, String)],
    ) -> Res<f64> {
        let length = if self.smoke {
            Length::Transactions(30)
        } else {
            Length::Secs(secs)
        };
        procs::pgbench(&self.pgbench, url, script, clients, length, defines)
    }

    fn sender(&self, db_url: &str, id: &str, concurrency: u32) -> Res<Sender> {
        Sender::start(
            &self.sender_bin,
            db_url,
            id,
            concurrency,
            &self.out.join(format!("{id}.log")),
        )
    }

    fn figure(&mut self, f: Figure) {
        println!("{}", f.line());
        self.figures.push(f);
    }
}

/// An error with its causes (tokio-postgres puts the server's message in the source).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `tenants` × `per` webhooks (tenant `t<i>`), all to `url`. Each tenant's first ten are
/// `policy/bound`, `policy/*`, `*/bound` (the three that match `policy/bound`), then
/// `policy/cancelled`, `claim/opened`, `claim/settled`, `claim/*`, `agreement/updated`,
/// `invoice.created`, `*.created`; beyond ten, 40 % wildcard patterns (`x<i>/*`) and 60 % exact
/// types (`x<i>/bound`), none matching. Returns the first webhook id: tenant t's i-th webhook
/// is `base + t * per + i`, checked here against hooks.match.
async fn fixture(db: &Client, tenants: i32, per: i32, url: &str) -> Res<i64> {
    db.execute(
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url)
         SELECT 't' || t, 'wh-' || i,
                CASE WHEN i < 10 THEN (ARRAY['policy/bound', 'policy/*', '*/bound', 'policy/cancelled',
                          'claim/opened', 'claim/settled', 'claim/*', 'agreement/updated',
                          'invoice.created', '*.created'])[i + 1]
                     WHEN i % 10 IN (1, 2, 6, 9) THEN 'x' || i || '/*'
                     ELSE 'x' || i || '/bound' END,
                $1::text
           FROM generate_series(0, $2::int - 1) t, generate_series(0, $3::int - 1) i
          ORDER BY t, i",
        &[&url, &tenants, &per],
    )
    .await?;
    let base: i64 = db
        .query_one(
            "SELECT min(webhook_id) FROM hooks.webhooks WHERE tenant_id = 't0'",
            &[],
        )
        .await?
        .get(0);
    let per64 = per as i64;
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE m.webhook_id - $1::bigint - t * $2::bigint NOT IN (0, 1, 2))
               FROM generate_series(0, $3::int - 1) t
              CROSS JOIN LATERAL hooks.match('policy/bound', 't' || t) m",
            &[&base, &per64, &tenants],
        )
        .await?;
    let (matched, wrong): (i64, i64) = (row.get(0), row.get(1));
    if matched != 3 * tenants as i64 || wrong != 0 {
        bail!(
            "fixture: policy/bound matched {matched} webhooks ({wrong} unexpected), want {}",
            3 * tenants
        );
    }
    db.batch_execute("ANALYZE hooks.webhooks").await?;
    Ok(base)
}

/// Plain tables of the same shape as hooks.events and the delivery tables (columns, defaults,
/// checks, keys, indexes, foreign keys; own sequences), without the extension's triggers.
/// 0.3.0 writes a delivery as an outbox row and a queue row (README "Storage"): then
/// bench_raw.deliveries is shaped as hooks.outbox and bench_raw.queue as hooks.queue, and the
/// result is true; earlier versions (an A/B run) have the one table hooks.deliveries.
async fn raw_tables(db: &Client) -> Res<bool> {
    let split = delivery_tables(db).await? != "hooks.deliveries";
    let like = if split { "hooks.outbox" } else { "hooks.deliveries" };
    db.batch_execute(&format!(
        "CREATE SCHEMA bench_raw;
         CREATE TABLE bench_raw.events (LIKE hooks.events INCLUDING ALL);
         CREATE SEQUENCE bench_raw.events_seq OWNED BY bench_raw.events.event_id;
         ALTER TABLE bench_raw.events ALTER event_id SET DEFAULT nextval('bench_raw.events_seq');
         CREATE TABLE bench_raw.deliveries (LIKE {like} INCLUDING ALL);
         CREATE SEQUENCE bench_raw.deliveries_seq OWNED BY bench_raw.deliveries.delivery_id;
         ALTER TABLE bench_raw.deliveries ALTER delivery_id SET DEFAULT nextval('bench_raw.deliveries_seq');
         ALTER TABLE bench_raw.deliveries
           ADD FOREIGN KEY (event_id) REFERENCES bench_raw.events ON DELETE CASCADE,
           ADD FOREIGN KEY (webhook_id) REFERENCES hooks.webhooks ON DELETE CASCADE;"
    ))
    .await?;
    if split {
        db.batch_execute(
            "CREATE TABLE bench_raw.queue (LIKE hooks.queue INCLUDING ALL);
             ALTER TABLE bench_raw.queue
               ADD FOREIGN KEY (delivery_id) REFERENCES bench_raw.deliveries ON DELETE CASCADE;",
        )
        .await?;
    }
    Ok(split)
}

/// The event JSON text for `event_type` and a tenant expression spliced into a SQL literal.
fn event_json(event_type: &str, tenant_sql: &str) -> String {
    format!(
        r#"{{"event":"{event_type}","data":{{"tenantId":"{tenant_sql}",{EVENT_DATA}}},"user":{EVENT_USER}}}"#
    )
}

/// pgbench script: one transaction = `SELECT hooks.publish(event)`. Tenant: `fixed`, or
/// `t<random 0..ntenants-1>`.
fn publish_script(event_type: &str, fixed_tenant: Option<&str>) -> String {
    match fixed_tenant {
        Some(t) => format!(
            "SELECT hooks.publish('{}'::jsonb);\n",
            event_json(event_type, t)
        ),
        None => format!(
            "\\set t random(0, :ntenants - 1)\nSELECT hooks.publish(('{}')::jsonb);\n",
            event_json(event_type, "t' || :t::text || '")
        ),
    }
}

/// pgbench script: one transaction = the equivalent raw INSERTs into bench_raw: one event row
/// (with a body of the same shape, key and timestamp made in SQL as publish does) and `:n`
/// delivery rows for webhooks `:w .. :w + n - 1` (known in advance: no matching).
fn raw_script(event_type: &str, fixed_tenant: Option<&str>, split: bool) -> String {
    let insert = if split {
        "d AS (INSERT INTO bench_raw.deliveries (webhook_id, event_id, tenant_id, event_type)
      SELECT :w::bigint + o, e.event_id, e.tenant_id, e.event_type FROM e, generate_series(0, :n::int - 1) o
      RETURNING delivery_id, webhook_id, tenant_id)
INSERT INTO bench_raw.queue (delivery_id, webhook_id, tenant_id) SELECT * FROM d;"
    } else {
        "d AS (SELECT 1)
INSERT INTO bench_raw.deliveries (webhook_id, event_id, tenant_id, event_type)
SELECT :w::bigint + o, e.event_id, e.tenant_id, e.event_type FROM e, generate_series(0, :n::int - 1) o;"
    };
    let (set, tenant) = match fixed_tenant {
        Some(t) => ("\\set w :lo\n".to_string(), format!("'{t}'")),
        None => (
            "\\set t random(0, :ntenants - 1)\n\\set w :base + :t * :per\n".to_string(),
            "'t' || :t::text".to_string(),
        ),
    };
    format!(
        "{set}WITH k AS (SELECT gen_random_uuid()::text AS key),
e AS (INSERT INTO bench_raw.events (tenant_id, event_type, event_key, body)
      SELECT {tenant}, '{event_type}', k.key,
             '{{\"id\":\"' || k.key || '\",\"event\":\"{event_type}\",\"data\":{{\"tenantId\":\"' || {tenant} || '\",{EVENT_DATA}}},\"user\":{EVENT_USER},\"timestamp\":\"' || now()::text || '\"}}'
        FROM k
      RETURNING event_id, tenant_id, event_type),
{insert}
"
    )
}

/// The tables that hold deliveries: 0.3.0 keeps them in three (`hooks.deliveries` is a view
/// over them, README "Storage"), earlier versions (an A/B run) in the one table
/// `hooks.deliveries`. The first one named holds every delivery once.
async fn delivery_tables(db: &Client) -> Res<&'static str> {
    let split: bool = db
        .query_one("SELECT to_regclass('hooks.outbox') IS NOT NULL", &[])
        .await?
        .get(0);
    Ok(if split {
        "hooks.outbox, hooks.queue, hooks.outcomes"
    } else {
        "hooks.deliveries"
    })
}

/// A query for whether any delivery is still live (pending, retrying or in flight): one probe,
/// of `hooks.queue` in 0.3.0 (the view `hooks.deliveries` cannot use an index for a status),
/// of the due index of `hooks.deliveries` before.
async fn live_probe_sql(db: &Client) -> Res<&'static str> {
    Ok(if delivery_tables(db).await? == "hooks.deliveries" {
        "SELECT EXISTS (SELECT FROM hooks.deliveries WHERE status IN ('pending', 'retrying', 'in_flight'))"
    } else {
        "SELECT EXISTS (SELECT FROM hooks.queue)"
    })
}

/// Empties the outbox (and the raw tables). A running sender's claim or complete may deadlock
/// with the TRUNCATE's locks: the TRUNCATE is then tried again.
async fn truncate_outbox(db: &Client, raw: bool) -> Res<()> {
    let extra = if raw {
        ", bench_raw.deliveries, bench_raw.events"
    } else {
        ""
    };
    let tables = delivery_tables(db).await?;
    let sql = format!("TRUNCATE hooks.attempt_log, {tables}, hooks.events{extra} CASCADE");
    let mut tries = 0;
    loop {
        match db.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if tries < 20
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Publishes `n` events of `event_type` for `tenant` in one transaction (through hooks.publish,
/// so the bodies are the product's own).
async fn publish_many(db: &Client, event_type: &str, tenant: &str, n: i32) -> Res<()> {
    db.execute(
        &format!(
            "SELECT count(hooks.publish(jsonb_build_object('event', $1::text, 'data',
                 jsonb_build_object('tenantId', $2::text, 'n', g) || '{{{EVENT_DATA}}}'::jsonb,
                 'user', '{EVENT_USER}'::jsonb)))
               FROM generate_series(1, $3::int) g"
        ),
        &[&event_type, &tenant, &n],
    )
    .await?;
    Ok(())
}

/// Deletes every delivery and attempt and queues again one delivery per (event of `tenant`,
/// webhook of that tenant), event by event: a fresh backlog of the same events, in which
/// consecutive rows go to different webhooks (as publish writes them).
async fn requeue(db: &Client, tenant: &str) -> Res<i64> {
    let tables = delivery_tables(db).await?;
    db.batch_execute(&format!("TRUNCATE hooks.attempt_log, {tables}"))
        .await?;
    db.execute(
        "INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type)
         SELECT w.webhook_id, e.event_id, e.tenant_id, e.event_type
           FROM hooks.events e JOIN hooks.webhooks w ON w.tenant_id = e.tenant_id
          WHERE e.tenant_id = $1::text
          ORDER BY e.event_id, w.webhook_id",
        &[&tenant],
    )
    .await?;
    db.batch_execute(&format!("VACUUM ANALYZE {tables}")).await?;
    checkpoint(db).await?;
    Ok(db
        .query_one("SELECT count(*) FROM hooks.deliveries", &[])
        .await?
        .get(0))
}

/// `n` webhooks of `tenant`, all for `event_type`, all to `url`.
async fn webhooks(db: &Client, tenant: &str, event_type: &str, n: i32, url: &str) -> Res<()> {
    db.execute(
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url)
         SELECT $1::text, $1::text || '-' || i, $2::text, $4::text FROM generate_series(1, $3::int) i ORDER BY i",
        &[&tenant, &event_type, &n, &url],
    )
    .await?;
    Ok(())
}

async fn checkpoint(db: &Client) -> Res<()> {
    db.batch_execute("CHECKPOINT").await?;
    Ok(())
}

async fn remaining(db: &Client) -> Res<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM hooks.deliveries WHERE status IN ('pending', 'retrying', 'in_flight')", &[])
        .await?
        .get(0))
}

/// Waits until the receiver has seen `n` requests and no delivery is left; returns the time
/// from `t0`. Errors after `timeout` (a hang, not slowness: the timeout is generous).
async fn wait_drained(
    ctx: &Ctx,
    db: &Client,
    n: i64,
    t0: Instant,
    timeout: Duration,
) -> Res<Duration> {
    while (ctx.receiver.count().await? as i64) < n {
        if t0.elapsed() > timeout {
            bail!(
                "only {} of {n} deliveries arrived within {timeout:?}",
                ctx.receiver.count().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        if remaining(db).await? == 0 {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("deliveries still unfinished after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn all_succeeded(db: &Client) -> Res<()> {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'success'), count(*) FROM hooks.deliveries",
            &[],
        )
        .await?;
    let (ok, all): (i64, i64) = (row.get(0), row.get(1));
    if ok != all {
        bail!("{} of {all} deliveries did not succeed", all - ok);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P1: publish cost
// ---------------------------------------------------------------------------------------------

async fn p1(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_p1").await?;
    let base = fixture(&db, 100, 10, &ctx.receiver.url("")).await?;
    let split = raw_tables(&db).await?;
    // The draining sender's backlog: spread over 100 webhooks, as publish would write it (no
    // webhook's in-flight cap binds).
    webhooks(&db, "backlog", "backlog/item", 100, &ctx.receiver.url("")).await?;
    let publish = ctx.write("p1_publish.sql", &publish_script("policy/bound", None))?;
    let raw = ctx.write("p1_raw.sql", &raw_script("policy/bound", None, split))?;
    let defines = [
        ("ntenants", "100".to_string()),
        ("per", "10".to_string()),
        ("base", base.to_string()),
        ("n", "3".to_string()),
    ];
    let secs = 10;
    let mut backlog: i32 = if ctx.smoke { 2_000 } else { 60_000 };

    for mode in ["idle", "draining", "live"] {
        let mut sender = None;
        if mode != "idle" {
            let mut s = ctx.sender(&url, &format!("p1-{mode}"), 64)?;
            s.wait_healthy(Duration::from_secs(30)).await?;
            sender = Some(s);
        }
        let mut tps: [[Vec<f64>; 2]; 2] = Default::default(); // [clients][raw, publish]
        let mut dry = 0;
        for run in 0..ctx.runs {
            for (ci, clients) in [1u32, 8].into_iter().enumerate() {
                // raw first in even runs, publish first in odd ones: drift cancels out
                for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let script = if vi == 0 { &raw } else { &publish };
                    truncate_outbox(&db, true).await?;
                    if mode == "draining" {
                        db.execute(
                            "INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
                             SELECT 'backlog', 'backlog/item', 'b' || g,
                                    '{\"id\":\"b' || g || '\",\"event\":\"backlog/item\",\"data\":{\"tenantId\":\"backlog\",\"n\":' || g || '},\"user\":{},\"timestamp\":\"2024-05-01T12:00:00.000Z\"}'
                               FROM generate_series(1, $1::int / 100) g",
                            &[&backlog],
                        )
                        .await?;
                        db.execute(
                            "INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type)
                             SELECT w.webhook_id, e.event_id, 'backlog', 'backlog/item'
                               FROM hooks.events e JOIN hooks.webhooks w ON w.tenant_id = 'backlog'
                              WHERE e.tenant_id = 'backlog'
                              ORDER BY e.event_id, w.webhook_id",
                            &[],
                        )
                        .await?;
                    }
                    checkpoint(&db).await?;
                    if mode == "draining" {
                        // The insert above notified the sender; let it get going.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let t = ctx.pgbench(&url, script, clients, secs, &defines)?;
                    tps[ci][vi].push(t);
                    if mode == "draining" {
                        let left: i64 = db
                            .query_one(
                                "SELECT count(*) FROM hooks.deliveries WHERE tenant_id = 'backlog' AND status <> 'success'",
                                &[],
                            )
                            .await?
                            .get(0);
                        if left == 0 {
                            dry += 1;
                            backlog = backlog.saturating_mul(2);
                        }
                    }
                }
            }
        }
        if let Some(mut s) = sender {
            if !s.proc.alive() {
                bail!("the {mode} sender died during P1");
            }
            s.stop()?;
        }
        let what = match mode {
            "idle" => "sender idle",
            "draining" => "sender draining",
            _ => "sender live",
        };
        for (ci, clients) in [1u32, 8].into_iter().enumerate() {
            let note = if mode == "draining" && dry > 0 {
                format!("backlog ran dry in {dry} run(s); grown to {backlog}")
            } else {
                String::new()
            };
            ctx.figure(Figure {
                bench: "P1",
                name: format!(
                    "publish tps, {clients} client{}, {what}",
                    if clients > 1 { "s" } else { "" }
                ),
                unit: "tps",
                runs: tps[ci][1].clone(),
                baseline_name: "raw INSERTs".into(),
                baseline_runs: tps[ci][0].clone(),
                goal: if mode == "live" {
                    Goal::None
                } else {
                    Goal::MinRatio(0.8)
                },
                note,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P2: delivery rate
// ---------------------------------------------------------------------------------------------

fn lua_long(s: &str) -> String {
    format!("[==[{s}]==]")
}

async fn p2(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_p2").await?;
    let meter = procs::ClusterMeter::new(&db).await?;
    // The backlog: n deliveries of n / hooks events to `hooks` webhooks (each event matches
    // them all), so consecutive rows go to different webhooks and no per-webhook cap binds.
    let (n, hooks): (i32, i32) = if ctx.smoke { (500, 10) } else { (50_000, 100) };
    webhooks(&db, "p2", "bench/delivery", hooks, &ctx.receiver.url("")).await?;
    publish_many(&db, "bench/delivery", "p2", n / hooks).await?;
    // The same number of deliveries all to one webhook (an endpoint's backlog after an outage).
    webhooks(&db, "p2one", "bench/one", 1, &ctx.receiver.url("")).await?;
    publish_many(&db, "bench/one", "p2one", n).await?;
    let window = Duration::from_secs(if ctx.smoke { 2 } else { 10 });

    // The raw load: the very body and headers the sender sends (a real claim's), same receiver.
    let row = db
        .query_one("SELECT headers::text, body FROM hooks.claim('bench-probe', 1) WHERE event_type = 'bench/delivery'", &[])
        .await?;
    let (headers, body): (String, String) = (row.get(0), row.get(1));
    let headers: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&headers)?;
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = {}\n", lua_long(&body));
    for (k, v) in &headers {
        lua += &format!(
            "wrk.headers[{}] = {}\n",
            lua_long(k),
            lua_long(v.as_str().unwrap_or_default())
        );
    }
    lua += &format!(
        "wrk.headers[\"User-Agent\"] = \"beema-hooks-sender/{}\"\n",
        env!("CARGO_PKG_VERSION")
    );
    let lua = ctx.write("p2_wrk.lua", &lua)?;
    let concurrency = 64u32;
    let wrk_secs = if ctx.smoke { 1 } else { 10 };

    let mut raw_rps = Vec::new();
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu_us: [Vec<f64>; 3] = Default::default();
    let mut pg_us: [Vec<f64>; 3] = Default::default();
    let mut batch: [Vec<f64>; 3] = Default::default();
    let mut one_rate = Vec::new();
    let mut one_batch = Vec::new();
    for run in 0..ctx.runs {
        ctx.receiver.reset().await?;
        let r = procs::wrk(
            &ctx.wrk,
            &ctx.receiver.url(""),
            &lua,
            concurrency,
            2,
            wrk_secs,
        )?;
        raw_rps.push(r);
        for (si, senders) in [1usize, 2, 4].into_iter().enumerate() {
            let queued = requeue(&db, "p2").await?;
            ctx.receiver.reset().await?;
            let (pg0, _) = meter.read(&db).await?;
            let t0 = Instant::now();
            let mut ss = Vec::new();
            for k in 0..senders {
                ss.push(ctx.sender(&url, &format!("p2-r{run}-s{senders}-{k}"), concurrency)?);
            }
            let took = wait_drained(ctx, &db, queued, t0, Duration::from_secs(600)).await?;
            let cpu: f64 = ss.iter().filter_map(|s| s.proc.cpu_secs()).sum();
            let pg = meter.read(&db).await?.0 - pg0;
            let (mut claims, mut claimed) = (0.0, 0.0);
            for s in &ss {
                claims += s
                    .metric("beema_hooks_sender_claim_batch_size_count")
                    .await
                    .unwrap_or(0.0);
                claimed += s
                    .metric("beema_hooks_sender_claim_batch_size_sum")
                    .await
                    .unwrap_or(0.0);
            }
            pg_us[si].push(pg * 1e6 / queued as f64);
            batch[si].push(if claims > 0.0 {
                claimed / claims
            } else {
                f64::NAN
            });
            for s in &mut ss {
                s.stop()?;
            }
            all_succeeded(&db).await?;
            rates[si].push(queued as f64 / took.as_secs_f64());
            cpu_us[si].push(cpu * 1e6 / queued as f64);
        }
        // One webhook: what gets delivered in a fixed window.
        requeue(&db, "p2one").await?;
        ctx.receiver.reset().await?;
        let mut s = ctx.sender(&url, &format!("p2-r{run}-one"), concurrency)?;
        tokio::time::sleep(window).await;
        let done: i64 = db
            .query_one(
                "SELECT count(*) FROM hooks.deliveries WHERE status = 'success'",
                &[],
            )
            .await?
            .get(0);
        let claims = s
            .metric("beema_hooks_sender_claim_batch_size_count")
            .await
            .unwrap_or(0.0);
        let claimed = s
            .metric("beema_hooks_sender_claim_batch_size_sum")
            .await
            .unwrap_or(0.0);
        s.stop()?;
        if done == 0 {
            bail!("P2: nothing delivered to the single webhook in {window:?}");
        }
        one_rate.push(done as f64 / window.as_secs_f64());
        one_batch.push(if claims > 0.0 {
            claimed / claims
        } else {
            f64::NAN
        });
    }
    for (si, senders) in [1usize, 2, 4].into_iter().enumerate() {
        ctx.figure(Figure {
            bench: "P2",
            name: format!(
                "deliveries/s, {senders} sender{} x {concurrency}",
                if senders > 1 { "s" } else { "" }
            ),
            unit: "/s",
            runs: rates[si].clone(),
            baseline_name: format!("wrk -c{concurrency}"),
            baseline_runs: raw_rps.clone(),
            goal: if senders == 1 { Goal::MinRatio(0.5) } else { Goal::None },
            note: format!(
                "{n} queued for {hooks} webhooks; CPU per delivery: sender {} us, Postgres {} us; {} rows per claim",
                num(median(&cpu_us[si]), 0),
                num(median(&pg_us[si]), 0),
                num(median(&batch[si]), 1)
            ),
        });
    }
    ctx.figure(Figure {
        bench: "P2",
        name: format!("deliveries/s, 1 sender x {concurrency}, all to ONE webhook"),
        unit: "/s",
        runs: one_rate,
        baseline_name: format!("wrk -c{concurrency}"),
        baseline_runs: raw_rps.clone(),
        goal: Goal::None,
        note: format!(
            "{n} queued; successes in the first {} s; {} rows per claim",
            window.as_secs(),
            num(median(&one_batch), 1)
        ),
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P3: commit-to-receipt latency
// ---------------------------------------------------------------------------------------------

/// The raw path, the lower bound of any LISTEN/NOTIFY design: a listener that POSTs each
/// notification ("seq commitTs") to the receiver at once, on one keep-alive connection.
async fn raw_forwarder(
    db_url: &str,
    addr: std::net::SocketAddr,
) -> Res<tokio::task::JoinHandle<()>> {
    use http_body_util::{BodyExt, Full};
    let (client, mut conn) = tokio_postgres::connect(db_url, NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    });
    client.batch_execute("LISTEN bench_raw").await?;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(tokio::spawn(async move {
        let _client = client;
        while let Some(p) = rx.recv().await {
            let (seq, ts) = p.split_once(' ').unwrap_or(("0", "0"));
            let body = format!("{{\"data\":{{\"seq\":{seq},\"commitTs\":{ts}}}}}");
            let req = hyper::Request::post("/hook")
                .header("host", addr.to_string())
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body)))
                .unwrap();
            if send.ready().await.is_err() {
                break;
            }
            match send.send_request(req).await {
                Ok(resp) => {
                    let _ = resp.into_body().collect().await;
                }
                Err(_) => break,
            }
        }
    }))
}

struct LoopStats {
    sent: usize,
    errors: usize,
    max_lag: Duration,
}

/// Open loop: event i starts at t0 + i/rate on connection i % k, whatever earlier ones do.
async fn open_loop(
    conns: &[Arc<Client>],
    raw: bool,
    base: i64,
    rate: u32,
    secs: u64,
) -> Res<LoopStats> {
    let publish_sql = "SELECT hooks.publish(jsonb_build_object('event', 'agreement/updated', 'data',
          jsonb_build_object('tenantId', $1::text, 'seq', $2::bigint, 'agreementId', 'A-1',
                             'commitTs', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)))";
    let raw_sql = "WITH e AS (
            INSERT INTO bench_raw.events (tenant_id, event_type, event_key, body)
            VALUES ($1::text, 'agreement/updated', gen_random_uuid()::text, '{}')
            RETURNING event_id, tenant_id, event_type),
          d AS (
            INSERT INTO bench_raw.deliveries (webhook_id, event_id, tenant_id, event_type)
            SELECT $3::bigint, event_id, tenant_id, event_type FROM e)
          SELECT pg_notify('bench_raw', $2::bigint || ' ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
            FROM e";
    let mut stmts = Vec::new();
    for c in conns {
        stmts.push(c.prepare(if raw { raw_sql } else { publish_sql }).await?);
    }
    let n = (rate as u64 * secs) as usize;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut max_lag = Duration::ZERO;
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let due = t0 + period * i as u32;
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(tokio::time::Instant::now() - due);
        let c = conns[i % conns.len()].clone();
        let st = stmts[i % conns.len()].clone();
        let t = (i % 100) as i64;
        let tenant = format!("t{t}");
        let seq = i as i64;
        let wid = base + t * 10 + 7; // agreement/updated
        handles.push(tokio::spawn(async move {
            if raw {
                c.query(&st, &[&tenant, &seq, &wid]).await
            } else {
                c.query(&st, &[&tenant, &seq]).await
            }
        }));
    }
    let mut errors = 0;
    for h in handles {
        match h.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if errors == 0 {
                    eprintln!("P3 publish error: {e}");
                }
                errors += 1;
            }
            Err(_) => errors += 1,
        }
    }
    Ok(LoopStats {
        sent: n,
        errors,
        max_lag,
    })
}

async fn p3(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_p3").await?;
    let base = fixture(&db, 100, 10, &ctx.receiver.url("")).await?;
    let one: i64 = db
        .query_one(
            "SELECT count(*) FROM hooks.match('agreement/updated', 't5')",
            &[],
        )
        .await?
        .get(0);
    if one != 1 {
        bail!("P3 fixture: agreement/updated matched {one} webhooks, want 1");
    }
    raw_tables(&db).await?;
    let (rate, secs) = if ctx.smoke { (100, 1) } else { (500, 30) };
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Arc::new(connect(&url).await?));
    }
    let forwarder = raw_forwarder(&url, ctx.receiver.addr).await?;
    let mut sender = ctx.sender(&url, "p3", 64)?;
    sender.wait_healthy(Duration::from_secs(30)).await?;

    // [raw, publish] x [p50, p90, p99, max] in ms
    let mut lat: [[Vec<f64>; 4]; 2] = Default::default();
    let mut notes: [Vec<String>; 2] = Default::default();
    for run in 0..ctx.runs {
        for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let raw = vi == 0;
            truncate_outbox(&db, true).await?;
            checkpoint(&db).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            ctx.receiver.reset().await?;
            let ls = open_loop(&conns, raw, base, rate, secs).await?;
            if ls.errors > 0 {
                bail!(
                    "P3: {} of {} publishing transactions failed",
                    ls.errors,
                    ls.sent
                );
            }
            // Wait for every delivery (a generous bound: missing ones are reported, not fatal).
            let deadline = Instant::now() + Duration::from_secs(if ctx.smoke { 30 } else { 60 });
            let mut st = ctx.receiver.stats().await?;
            while st["latency"]["n"].as_u64().unwrap_or(0) < ls.sent as u64
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                st = ctx.receiver.stats().await?;
            }
            let got = st["latency"]["n"].as_u64().unwrap_or(0);
            if got == 0 {
                bail!(
                    "P3: nothing arrived at the receiver ({})",
                    if raw { "raw" } else { "publish" }
                );
            }
            for (k, key) in ["p50_us", "p90_us", "p99_us", "max_us"]
                .into_iter()
                .enumerate()
            {
                lat[vi][k].push(st["latency"][key].as_f64().unwrap_or(f64::NAN) / 1000.0);
            }
            // Slow HTTP attempts (a connect that waited for a SYN retransmit shows as ~1 s here)
            // tell a slow request from a late claim.
            let slow: i64 = if raw {
                0
            } else {
                db.query_one(
                    "SELECT count(*) FROM hooks.attempts WHERE duration_ms >= 500",
                    &[],
                )
                .await?
                .get(0)
            };
            let mut note = format!(
                "run {run}: publisher max lag {:.1} ms, {} over 500 ms, {} duplicate receipts, {slow} attempts >= 500 ms",
                ls.max_lag.as_secs_f64() * 1000.0,
                st["latency"]["over_500ms"].as_u64().unwrap_or(0),
                st["duplicates"].as_u64().unwrap_or(0)
            );
            if (got as usize) < ls.sent {
                note += &format!(
                    ", {} of {} missing at the deadline",
                    ls.sent - got as usize,
                    ls.sent
                );
            }
            notes[vi].push(note);
        }
    }
    forwarder.abort();
    if !sender.proc.alive() {
        bail!("the P3 sender died");
    }
    let wakeups = sender
        .metric("beema_hooks_sender_notifications_total")
        .await
        .unwrap_or(f64::NAN);
    let claims = sender
        .metric("beema_hooks_sender_claim_batch_size_count")
        .await
        .unwrap_or(f64::NAN);
    sender.stop()?;
    notes[1].push(format!(
        "sender over all runs: {} notifications, {} claims",
        num(wakeups, 0),
        num(claims, 0)
    ));
    for (k, (pname, goal)) in [
        ("p50", Goal::MaxValue(5.0)),
        ("p90", Goal::None),
        ("p99", Goal::MaxValue(25.0)),
        ("max", Goal::None),
    ]
    .into_iter()
    .enumerate()
    {
        ctx.figure(Figure {
            bench: "P3",
            name: format!("commit-to-receipt {pname}, {rate} events/s x {secs} s"),
            unit: "ms",
            runs: lat[1][k].clone(),
            baseline_name: "raw NOTIFY->POST".into(),
            baseline_runs: lat[0][k].clone(),
            goal,
            note: if k == 0 {
                notes[1].join("; ")
            } else {
                String::new()
            },
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P4: claim rate with a large not-due backlog
// ---------------------------------------------------------------------------------------------

async fn p4(ctx: &mut Ctx) -> Res<()> {
    // not-due rows = webhooks x events
    let (nw, ne, due): (i32, i32, i32) = if ctx.smoke {
        (5, 1000, 300)
    } else {
        (1000, 1000, 20_000)
    };
    if due % nw != 0 {
        bail!("P4: due rows must be a multiple of the webhooks");
    }
    let not_due = nw as i64 * ne as i64;
    let mut dbs = Vec::new();
    for (name, with_backlog) in [("bench_p4_empty", false), ("bench_p4_backlog", true)] {
        let (_url, db) = ctx.fresh_db(name).await?;
        db.execute(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url)
             SELECT 'p4', 'wh-' || i, 'p4/e' || i, $2::text FROM generate_series(1, $1::int) i ORDER BY i",
            &[&nw, &ctx.receiver.url("")],
        )
        .await?;
        db.execute(
            "INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
             SELECT 'p4', 'p4/later', 'later-' || g, '{\"id\":\"later-' || g || '\",\"event\":\"p4/later\",\"data\":{\"tenantId\":\"p4\"}}'
               FROM generate_series(1, $1::int) g",
            &[&ne],
        )
        .await?;
        if with_backlog {
            // Into the tables themselves: an INSERT into the view hooks.deliveries (0.3.0)
            // works too, one row at a time through its trigger.
            let sql = if delivery_tables(&db).await? == "hooks.deliveries" {
                "INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type, status,
                                               attempt_number, next_attempt_at, status_code, error_message)
                 SELECT w.webhook_id, e.event_id, 'p4', 'p4/later', 'retrying', 1,
                        now() + interval '1 day' + random() * interval '1 day', 503, 'HTTP 503'
                   FROM hooks.webhooks w CROSS JOIN hooks.events e
                  WHERE e.event_type = 'p4/later'"
            } else {
                "WITH o AS (
                     INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
                     SELECT w.webhook_id, e.event_id, 'p4', 'p4/later'
                       FROM hooks.webhooks w CROSS JOIN hooks.events e
                      WHERE e.event_type = 'p4/later'
                     RETURNING delivery_id, webhook_id)
                 INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, status, attempt_number,
                                          next_attempt_at, status_code, error_message)
                 SELECT o.delivery_id, o.webhook_id, 'p4', 'retrying', 1,
                        now() + interval '1 day' + random() * interval '1 day', 503, 'HTTP 503'
                   FROM o"
            };
            db.batch_execute(sql).await?;
        }
        let tables = delivery_tables(&db).await?;
        db.batch_execute(&format!("VACUUM ANALYZE hooks.webhooks, hooks.events, {tables}"))
            .await?;
        dbs.push((name, db));
    }

    // [empty, backlog] x runs: (claim+complete rows/s, claim-only rows/s)
    let mut cycle: [Vec<f64>; 2] = Default::default();
    let mut claim_only: [Vec<f64>; 2] = Default::default();
    for run in 0..ctx.runs {
        for di in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let db = &dbs[di].1;
            // due / nw events, each to every webhook, event by event (as publish writes them).
            db.execute(
                "INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
                 SELECT 'p4', 'p4/due', 'due-' || g, '{\"id\":\"due-' || g || '\",\"event\":\"p4/due\",\"data\":{\"tenantId\":\"p4\",\"n\":' || g || '}}'
                   FROM generate_series(1, $1::int / $2::int) g",
                &[&due, &nw],
            )
            .await?;
            db.batch_execute(
                "INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type)
                 SELECT w.webhook_id, e.event_id, 'p4', 'p4/due'
                   FROM hooks.events e CROSS JOIN hooks.webhooks w
                  WHERE e.event_type = 'p4/due'
                  ORDER BY e.event_id, w.webhook_id",
            )
            .await?;
            let tables = delivery_tables(db).await?;
            db.batch_execute(&format!("VACUUM ANALYZE {tables}, hooks.events"))
                .await?;
            checkpoint(db).await?;
            let sid = format!("p4-{run}");
            let claim = db
                .prepare("SELECT delivery_id, attempt_number FROM hooks.claim($1::text, 100)")
                .await?;
            let complete = db
                .prepare("SELECT hooks.complete($1::text, $2::text::jsonb)")
                .await?;
            let mut in_claim = Duration::ZERO;
            let mut rows_done = 0usize;
            let t0 = Instant::now();
            loop {
                let t = Instant::now();
                let rows = db.query(&claim, &[&sid]).await?;
                in_claim += t.elapsed();
                if rows.is_empty() {
                    break;
                }
                let results: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        let (id, att): (i64, i32) = (r.get(0), r.get(1));
                        format!(
                            r#"{{"delivery_id":{id},"attempt_number":{att},"status_code":200,"error":null,"response_body":"ok","duration_ms":1,"retry_after_ms":null}}"#
                        )
                    })
                    .collect();
                let applied: i32 = db
                    .query_one(&complete, &[&sid, &format!("[{}]", results.join(","))])
                    .await?
                    .get(0);
                if applied as usize != rows.len() {
                    bail!("P4: complete applied {applied} of {} results", rows.len());
                }
                rows_done += rows.len();
            }
            let took = t0.elapsed();
            if rows_done != due as usize {
                bail!("P4: claimed {rows_done} rows, {due} were due");
            }
            cycle[di].push(rows_done as f64 / took.as_secs_f64());
            claim_only[di].push(rows_done as f64 / in_claim.as_secs_f64());
            let all = tables.split(',').next().unwrap_or(tables);
            db.batch_execute(&format!(
                "DELETE FROM hooks.attempt_log;
                 DELETE FROM {all} WHERE event_type = 'p4/due';
                 DELETE FROM hooks.events WHERE event_type = 'p4/due';"
            ))
            .await?;
            db.batch_execute(&format!("VACUUM ANALYZE {tables}, hooks.events, hooks.attempt_log"))
                .await?;
        }
    }
    let label = if not_due >= 1_000_000 {
        "1M".to_string()
    } else {
        num(not_due as f64, 0)
    };
    ctx.figure(Figure {
        bench: "P4",
        name: format!("claim rows/s (claim time only), {label} not due"),
        unit: "/s",
        runs: claim_only[1].clone(),
        baseline_name: "empty".into(),
        baseline_runs: claim_only[0].clone(),
        goal: Goal::MaxSlowdown(1.5),
        note: format!("{due} due rows, claim(100) in a loop"),
    });
    ctx.figure(Figure {
        bench: "P4",
        name: format!("claim+complete rows/s, {label} not due"),
        unit: "/s",
        runs: cycle[1].clone(),
        baseline_name: "empty".into(),
        baseline_runs: cycle[0].clone(),
        goal: Goal::MaxSlowdown(1.5),
        note: String::new(),
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P5: sender memory
// ---------------------------------------------------------------------------------------------

async fn p5(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_p5").await?;
    let delay = if ctx.smoke { 5 } else { 50 };
    // The receiver holds each request `delay` ms so that all 256 slots really fill; 100
    // webhooks so that no per-webhook in-flight cap binds.
    let (n, hooks): (i32, i32) = if ctx.smoke { (500, 10) } else { (50_000, 100) };
    webhooks(
        &db,
        "p5",
        "bench/memory",
        hooks,
        &ctx.receiver.url(&format!("delay_ms={delay}")),
    )
    .await?;
    let events = n / hooks;
    let concurrency = 256;
    let mut idle_mb = Vec::new();
    let mut peak_mb = Vec::new();
    let mut max_in_flight = Vec::new();
    let mut rates = Vec::new();
    for run in 0..ctx.runs {
        // Baseline: the same sender, connected, with nothing to do.
        truncate_outbox(&db, false).await?;
        let mut s = ctx.sender(&url, &format!("p5-idle-{run}"), concurrency)?;
        s.wait_healthy(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 2 })).await;
        idle_mb.push(s.proc.status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0);
        s.stop()?;
        // Events were truncated too: publish them again.
        publish_many(&db, "bench/memory", "p5", events).await?;
        let queued = requeue(&db, "p5").await?;
        ctx.receiver.reset().await?;
        let t0 = Instant::now();
        let mut s = ctx.sender(&url, &format!("p5-drain-{run}"), concurrency)?;
        let mut inflight = 0f64;
        let timeout = Duration::from_secs(600);
        loop {
            if let Some(v) = s.metric("beema_hooks_sender_in_flight").await {
                inflight = inflight.max(v);
            }
            if ctx.receiver.count().await? as i64 >= queued && remaining(&db).await? == 0 {
                break;
            }
            if t0.elapsed() > timeout {
                bail!("P5: not drained after {timeout:?}");
            }
            if !s.proc.alive() {
                bail!("P5: the sender died while draining");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = t0.elapsed();
        peak_mb.push(s.proc.status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0);
        s.stop()?;
        all_succeeded(&db).await?;
        max_in_flight.push(inflight);
        rates.push(queued as f64 / took.as_secs_f64());
    }
    ctx.figure(Figure {
        bench: "P5",
        name: format!("sender peak RSS (VmHWM), --concurrency {concurrency}, draining"),
        unit: "MB",
        runs: peak_mb,
        baseline_name: "same sender idle".into(),
        baseline_runs: idle_mb,
        goal: Goal::MaxValue(64.0),
        note: format!(
            "{n} queued for {hooks} webhooks, receiver holds each request {delay} ms; max in flight seen {}; {} deliveries/s",
            num(median(&max_in_flight), 0),
            num(median(&rates), 0)
        ),
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fan-out and matching
// ---------------------------------------------------------------------------------------------

async fn fanout(ctx: &mut Ctx) -> Res<()> {
    let secs = 8;
    // 1, 10, 100 matching webhooks per event (exact patterns of tenant "fan"), beside the P1
    // fixture (1,000 webhooks in 100 tenants).
    {
        let (url, db) = ctx.fresh_db("bench_fanout").await?;
        fixture(&db, 100, 10, &ctx.receiver.url("")).await?;
        let split = raw_tables(&db).await?;
        let mut cases = Vec::new();
        for n in [1i32, 10, 100] {
            let et = format!("fan/e{n}");
            db.execute(
                "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url)
                 SELECT 'fan', $1::text || '-' || i, $1::text, $3::text FROM generate_series(1, $2::int) i ORDER BY i",
                &[&et, &n, &ctx.receiver.url("")],
            )
            .await?;
            let row = db
                .query_one(
                    "SELECT count(*), min(webhook_id), max(webhook_id) FROM hooks.match($1::text, 'fan')",
                    &[&et],
                )
                .await?;
            let (cnt, lo, hi): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if cnt != n as i64 || hi - lo + 1 != n as i64 {
                bail!("fan-out fixture: {et} matched {cnt} webhooks ({lo}..{hi}), want {n} contiguous");
            }
            let p = ctx.write(
                &format!("fan_publish_{n}.sql"),
                &publish_script(&et, Some("fan")),
            )?;
            let r = ctx.write(&format!("fan_raw_{n}.sql"), &raw_script(&et, Some("fan"), split))?;
            cases.push((format!("{n} matching/event"), n, lo, p, r));
        }
        // 100 webhooks whose pattern matches, each with a payload filter: 50 containment
        // filters and 50 jsonpath predicates, 5 of each passing, so 10 deliveries per event
        // (compare with 10 matching/event above, and with the raw 1+10 rows).
        {
            let et = "fan/filtered";
            db.execute(
                "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, filter, filter_path)
                 SELECT 'fan', 'filtered-' || i, $1::text, $2::text,
                        CASE WHEN i <= 50 THEN jsonb_build_object('data', jsonb_build_object('tenantId',
                                                   CASE WHEN i <= 5 THEN 'fan' ELSE 'other-' || i END)) END,
                        CASE WHEN i > 50 THEN format('$.data.tenantId == \"%s\"',
                                                   CASE WHEN i <= 55 THEN 'fan' ELSE 'other-' || i END)::jsonpath END
                   FROM generate_series(1, 100) i ORDER BY i",
                &[&et, &ctx.receiver.url("")],
            )
            .await?;
            let row = db
                .query_one(
                    &format!("SELECT count(*), min(webhook_id) FROM hooks.match('{}'::jsonb)", event_json(et, "fan")),
                    &[],
                )
                .await?;
            let (cnt, lo): (i64, i64) = (row.get(0), row.get(1));
            if cnt != 10 {
                bail!("fan-out fixture: {et} passed the filters of {cnt} webhooks, want 10");
            }
            let p = ctx.write("fan_publish_filtered.sql", &publish_script(et, Some("fan")))?;
            let r = ctx.write("fan_raw_filtered.sql", &raw_script(et, Some("fan"), split))?;
            cases.push(("100 filtered webhooks, 10 pass".to_owned(), 10, lo, p, r));
        }
        db.batch_execute("ANALYZE hooks.webhooks").await?;
        let mut tps: Vec<[Vec<f64>; 2]> = vec![Default::default(); cases.len()];
        for run in 0..ctx.runs {
            for (ci, (_, n, lo, p, r)) in cases.iter().enumerate() {
                let defines = [("lo", lo.to_string()), ("n", n.to_string())];
                for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let script = if vi == 0 { r } else { p };
                    truncate_outbox(&db, true).await?;
                    checkpoint(&db).await?;
                    tps[ci][vi].push(ctx.pgbench(&url, script, 1, secs, &defines)?);
                }
            }
        }
        for (ci, (label, n, ..)) in cases.iter().enumerate() {
            ctx.figure(Figure {
                bench: "FAN",
                name: format!("publish tps, {label}, 1 client"),
                unit: "tps",
                runs: tps[ci][1].clone(),
                baseline_name: format!("raw 1+{n} rows"),
                baseline_runs: tps[ci][0].clone(),
                goal: Goal::None,
                note: format!(
                    "{} delivery rows/s",
                    num(median(&tps[ci][1]) * *n as f64, 0)
                ),
            });
        }
    }
    // Registered webhooks growing to 10,000; the event still matches 3.
    let sizes: Vec<(i32, i32)> = if ctx.smoke {
        vec![(10, 10), (1, 100)]
    } else {
        vec![(100, 10), (100, 100), (1, 10_000)]
    };
    for (tenants, per) in sizes {
        let (url, db) = ctx.fresh_db("bench_fanreg").await?;
        let base = fixture(&db, tenants, per, &ctx.receiver.url("")).await?;
        let split = raw_tables(&db).await?;
        let publish = ctx.write("reg_publish.sql", &publish_script("policy/bound", None))?;
        let raw = ctx.write("reg_raw.sql", &raw_script("policy/bound", None, split))?;
        let defines = [
            ("ntenants", tenants.to_string()),
            ("per", per.to_string()),
            ("base", base.to_string()),
            ("n", "3".to_string()),
        ];
        let mut tps: [Vec<f64>; 2] = Default::default();
        for run in 0..ctx.runs {
            for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                let script = if vi == 0 { &raw } else { &publish };
                truncate_outbox(&db, true).await?;
                checkpoint(&db).await?;
                tps[vi].push(ctx.pgbench(&url, script, 1, secs, &defines)?);
            }
        }
        let total = tenants as i64 * per as i64;
        let patterns = if per <= 10 {
            4
        } else {
            4 + (per - 10) * 4 / 10
        };
        ctx.figure(Figure {
            bench: "FAN",
            name: format!(
                "publish tps, {} registered ({} tenant{} x {}), 1 client",
                num(total as f64, 0),
                tenants,
                if tenants > 1 { "s" } else { "" },
                num(per as f64, 0)
            ),
            unit: "tps",
            runs: tps[1].clone(),
            baseline_name: "raw INSERTs".into(),
            baseline_runs: tps[0].clone(),
            goal: Goal::None,
            note: format!("3 match; {patterns} wildcard patterns per tenant"),
        });
        drop(db);
        ctx.admin
            .batch_execute("DROP DATABASE IF EXISTS bench_fanreg WITH (FORCE)")
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn usage() -> ! {
    eprintln!(
        "usage: beema-hooks-bench [--smoke] [--runs N] [--out DIR] [--keep-dbs] [{}]...",
        BENCHES.join("|")
    );
    std::process::exit(2);
}

async fn machine(ctx: &Ctx) -> Res<()> {
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let version: String = ctx
        .admin
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let mut settings = Vec::new();
    for s in [
        "shared_buffers",
        "max_connections",
        "synchronous_commit",
        "fsync",
        "wal_level",
        "max_wal_size",
        "checkpoint_timeout",
        "work_mem",
    ] {
        let v: String = ctx.admin.query_one(&format!("SHOW {s}"), &[]).await?.get(0);
        settings.push(format!("{s}={v}"));
    }
    println!(
        "machine: {cpus} CPUs, {:.1} GiB RAM, load {}; PostgreSQL {version}: {}",
        mem / 1024.0 / 1024.0,
        loadavg(),
        settings.join(" ")
    );
    println!(
        "mode: {}, {} run(s) per figure, figure = median; out: {}",
        if ctx.smoke {
            "SMOKE (tiny sizes: the figures mean nothing)"
        } else {
            "full"
        },
        ctx.runs,
        ctx.out.display()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut smoke = false;
    let mut runs = None;
    let mut out = None;
    let mut keep_dbs = false;
    let mut selected = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--keep-dbs" => keep_dbs = true,
            "--runs" => {
                runs = Some(
                    args.next()
                        .and_then(|v| v.parse::<usize>().ok())
                        .filter(|&n| n >= 1)
                        .unwrap_or_else(|| usage()),
                )
            }
            "--out" => out = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            "-h" | "--help" => usage(),
            b if BENCHES.contains(&b) => {
                if !selected.iter().any(|s| s == b) {
                    selected.push(b.to_string())
                }
            }
            _ => usage(),
        }
    }
    if selected.is_empty() {
        selected = BENCHES.iter().map(|s| s.to_string()).collect();
    }
    let runs = runs.unwrap_or(if smoke { 1 } else { 3 });
    match run(smoke, runs, out, keep_dbs, &selected).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("beema-hooks-bench: {}", chain(&*e));
            std::process::exit(1);
        }
    }
}

/// Runs the selected benchmarks; Ok(false) when one of them broke.
async fn run(
    smoke: bool,
    runs: usize,
    out: Option<PathBuf>,
    keep_dbs: bool,
    selected: &[String],
) -> Res<bool> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let admin_url = env(
        "BEEMA_ADMIN_URL",
        "postgres://postgres@127.0.0.1:28815/postgres",
    );
    let home = env("HOME", "/root");
    let target = env(
        "CARGO_TARGET_DIR",
        &format!("{home}/.cache/beema-hooks/target"),
    );
    let sender_bin = PathBuf::from(env(
        "HOOKS_SENDER_BIN",
        &format!("{target}/release/beema-hooks-sender"),
    ));
    let pgbench = PathBuf::from(env("PG_BIN", "/usr/lib/postgresql/15/bin")).join("pgbench");
    let wrk = std::env::var("WRK")
        .map(PathBuf::from)
        .ok()
        .or_else(|| procs::which("wrk"));
    let out = out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("beema-hooks-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&out)?;
    for (what, p) in [("sender", &sender_bin), ("pgbench", &pgbench)] {
        if !p.is_file() {
            bail!("{what} not found at {}", p.display());
        }
    }
    let wrk = match wrk {
        Some(w) => w,
        None if selected.iter().any(|s| s == "p2") => {
            bail!("wrk not found (apt-get install wrk, or set WRK)")
        }
        None => PathBuf::from("wrk"),
    };
    let receiver_bin = std::env::current_exe()?.with_file_name("bench-receiver");
    let receiver = Receiver::start(&receiver_bin, 2)?;
    let admin = connect(&admin_url)
        .await
        .map_err(|e| format!("cannot connect to {admin_url}: {e}"))?;
    let mut ctx = Ctx {
        smoke,
        runs,
        out,
        admin_url,
        admin,
        sender_bin,
        pgbench,
        wrk,
        receiver,
        figures: Vec::new(),
        dbs: Vec::new(),
        keep_dbs,
    };
    machine(&ctx).await?;
    let started = Instant::now();
    let mut broken = Vec::new();
    for b in selected {
        let t = Instant::now();
        println!("--- {b} (load {})", loadavg());
        // A benchmark that broke may have lost the server (a crash, a restart): connect again.
        if ctx.admin.is_closed() {
            match connect(&ctx.admin_url).await {
                Ok(c) => ctx.admin = c,
                Err(e) => {
                    println!(
                        "--- {b} BROKE: cannot connect to {}: {}",
                        ctx.admin_url,
                        chain(&*e)
                    );
                    broken.push(b.clone());
                    continue;
                }
            }
        }
        let r = match b.as_str() {
            "p1" => p1(&mut ctx).await,
            "p2" => p2(&mut ctx).await,
            "p3" => p3(&mut ctx).await,
            "p4" => p4(&mut ctx).await,
            "p5" => p5(&mut ctx).await,
            "fanout" => fanout(&mut ctx).await,
            "cost" => cost::cost(&mut ctx).await,
            "watch" => watch::watch(&mut ctx).await,
            "flavors" => flavors::flavors(&mut ctx).await,
            "ordering" => ordering::ordering(&mut ctx).await,
            _ => unreachable!(),
        };
        match r {
            Ok(()) => println!(
                "--- {b} done in {:.0} s (load {})",
                t.elapsed().as_secs_f64(),
                loadavg()
            ),
            Err(e) => {
                println!(
                    "--- {b} BROKE after {:.0} s: {}",
                    t.elapsed().as_secs_f64(),
                    chain(&*e)
                );
                broken.push(b.clone());
            }
        }
    }
    ctx.drop_dbs().await;

    let mut summary = format!(
        "\n=== summary ({}; {} run(s) per figure: value = median of runs, ratio = median of per-run ratios; {:.0} s; load at end {})\n",
        if smoke { "SMOKE: tiny sizes, the figures mean nothing" } else { "full" },
        ctx.runs,
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    for f in &ctx.figures {
        summary += &f.line();
        summary.push('\n');
    }
    if !broken.is_empty() {
        summary += &format!("BROKEN: {}\n", broken.join(", "));
    }
    print!("{summary}");
    let _ = std::fs::write(ctx.out.join("summary.txt"), &summary);
    Ok(broken.is_empty())
}
