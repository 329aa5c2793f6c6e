//! COST: what a delivery and a publish cost the application's database, beside what a user
//! would build by hand, measured in the same run (issue "Delivery core v0.3", BENCHMARKS.md).
//!
//! - Drain: 20,001 deliveries (6,667 events × 3 webhooks, bodies of about 300 bytes) drained
//!   by one sender (`--concurrency 64`) to nginx (`return 200`), by four senders, and by one
//!   sender to the suite's own receiver. Per delivery: Postgres CPU (the postmaster and all its
//!   children, exited ones included), the senders' CPU, and WAL bytes written over the drain
//!   only (after a CHECKPOINT).
//! - Baseline: a bare SQL queue on the same cluster, the same bodies in a narrow table:
//!   2 pgbench clients, each claiming 100 rows `FOR UPDATE SKIP LOCKED` with a lease, then
//!   marking them done by id, each in its own transaction.
//! - Publish: an `orders` INSERT + `hooks.publish` (3 of 1,000 webhooks match) against the
//!   same transaction writing a hand-rolled outbox (1 event row + 3 delivery rows, 2 indexes
//!   per table), at 1 and 8 clients, no sender running.

use super::*;
use beema_hooks_bench::procs::ClusterMeter;

/// What one drain cost, per delivery (or per row of the bare queue).
pub(crate) struct Cost {
    pub(crate) rate: f64,
    pub(crate) pg_us: f64,
    pub(crate) sender_us: f64,
    pub(crate) wal_b: f64,
}

/// Queues the deliveries of tenant `cost` again, to `target`, and drains them with `senders`
/// senders. Only the drain is measured: the queue is written, vacuumed and checkpointed first.
pub(crate) async fn drain(
    ctx: &Ctx,
    db: &Client,
    url: &str,
    meter: &ClusterMeter,
    target: &str,
    senders: usize,
    label: &str,
) -> Res<Cost> {
    db.execute(
        "UPDATE hooks.webhooks SET url = $1 WHERE tenant_id = 'cost'",
        &[&target],
    )
    .await?;
    let queued = requeue(db, "cost").await?;
    let probe = live_probe_sql(db).await?;
    let (cpu0, wal0) = meter.read(db).await?;
    let t0 = Instant::now();
    let mut ss = Vec::new();
    for k in 0..senders {
        ss.push(ctx.sender(url, &format!("{label}-{k}"), 64)?);
    }
    let timeout = Duration::from_secs(600);
    loop {
        // One probe, not a count (`remaining`): the poll runs every 10 ms and its cost lands in
        // the Postgres CPU being measured.
        let busy: bool = db.query_one(probe, &[]).await?.get(0);
        if !busy {
            break;
        }
        if t0.elapsed() > timeout {
            bail!("COST: deliveries still unfinished after {timeout:?}");
        }
        for s in &mut ss {
            if !s.proc.alive() {
                bail!("COST: {} died (see its log)", s.proc.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t0.elapsed();
    let (cpu1, wal1) = meter.read(db).await?;
    let sender_cpu: f64 = ss.iter().filter_map(|s| s.proc.cpu_secs()).sum();
    for s in &mut ss {
        s.stop()?;
    }
    all_succeeded(db).await?;
    let n = queued as f64;
    Ok(Cost {
        rate: n / took.as_secs_f64(),
        pg_us: (cpu1 - cpu0) * 1e6 / n,
        sender_us: sender_cpu * 1e6 / n,
        wal_b: (wal1 - wal0) / n,
    })
}

/// The bare SQL queue: a narrow table holding the same bodies, and a pgbench script that claims
/// 100 due rows with a lease and then marks them done by id (two transactions).
const BARE_SCHEMA: &str = "
CREATE SCHEMA bench_bare;
CREATE TABLE bench_bare.queue (
    id          bigserial   PRIMARY KEY,
    due_at      timestamptz NOT NULL DEFAULT now(),
    status      text        NOT NULL DEFAULT 'pending',
    lease_owner text,
    lease_until timestamptz,
    attempts    integer     NOT NULL DEFAULT 0,
    body        text        NOT NULL
);
CREATE INDEX queue_due_idx ON bench_bare.queue (due_at) WHERE status = 'pending';
";

const BARE_SCRIPT: &str = "\
WITH c AS (UPDATE bench_bare.queue SET status = 'in_flight', lease_owner = 'c' || :client_id, \
lease_until = now() + interval '30 seconds', attempts = attempts + 1 \
WHERE id IN (SELECT id FROM bench_bare.queue WHERE status = 'pending' AND due_at <= now() \
ORDER BY due_at LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, body) \
SELECT coalesce(array_agg(id), '{}')::text AS ids, sum(octet_length(body)) AS bytes FROM c
\\gset
UPDATE bench_bare.queue SET status = 'done', lease_owner = NULL, lease_until = NULL WHERE id = ANY (:ids::bigint[]);
";

/// Fills the bare queue with `rows` rows (the bodies of tenant `cost`'s events, 3 rows each) and
/// drains it with 2 pgbench clients.
async fn bare_drain(
    ctx: &Ctx,
    db: &Client,
    url: &str,
    meter: &ClusterMeter,
    rows: i64,
) -> Res<Cost> {
    db.batch_execute("TRUNCATE bench_bare.queue").await?;
    db.execute(
        "INSERT INTO bench_bare.queue (body)
         SELECT e.body FROM hooks.events e CROSS JOIN generate_series(1, 3)
          WHERE e.tenant_id = 'cost' ORDER BY e.event_id LIMIT $1::bigint",
        &[&rows],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE bench_bare.queue").await?;
    checkpoint(db).await?;
    let script = ctx.out.join("cost_bare.sql");
    let clients = 2u32;
    let (cpu0, wal0) = meter.read(db).await?;
    let t0 = Instant::now();
    let mut left = rows;
    for _ in 0..5 {
        // Each client claims 100 per transaction; a claim that loses rows to the other client's
        // lock is made up by the next round.
        let per_client = ((left + 199) / 200).max(1) as u64;
        procs::pgbench(
            &ctx.pgbench,
            url,
            &script,
            clients,
            Length::Transactions(per_client),
            &[],
        )?;
        left = db
            .query_one(
                "SELECT count(*) FROM bench_bare.queue WHERE status <> 'done'",
                &[],
            )
            .await?
            .get(0);
        if left == 0 {
            break;
        }
    }
    let took = t0.elapsed();
    let (cpu1, wal1) = meter.read(db).await?;
    if left != 0 {
        bail!("COST: the bare queue kept {left} rows not done");
    }
    let n = rows as f64;
    Ok(Cost {
        rate: n / took.as_secs_f64(),
        pg_us: (cpu1 - cpu0) * 1e6 / n,
        sender_us: 0.0,
        wal_b: (wal1 - wal0) / n,
    })
}

/// The app's own table and the hand-rolled outbox (2 indexes per table).
pub(crate) const HAND_SCHEMA: &str = "
CREATE SCHEMA bench_app;
CREATE TABLE bench_app.orders (
    order_id   bigserial     PRIMARY KEY,
    tenant_id  text          NOT NULL,
    customer   text          NOT NULL,
    amount     numeric(12,2) NOT NULL,
    created_at timestamptz   NOT NULL DEFAULT now()
);
CREATE SCHEMA bench_hand;
CREATE TABLE bench_hand.events (
    event_id   bigserial   PRIMARY KEY,
    tenant_id  text        NOT NULL,
    event_type text        NOT NULL,
    event_key  text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, event_key)
);
CREATE TABLE bench_hand.deliveries (
    delivery_id     bigserial   PRIMARY KEY,
    event_id        bigint      NOT NULL REFERENCES bench_hand.events,
    webhook_id      bigint      NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due_idx ON bench_hand.deliveries (next_attempt_at) WHERE status = 'pending';
";

const ORDER_INSERT: &str = "INSERT INTO bench_app.orders (tenant_id, customer, amount) VALUES ('t' || :t, 'Jane Doe', 1234.50);";

pub(crate) fn publish_txn() -> String {
    format!(
        "\\set t random(0, :ntenants - 1)\nBEGIN;\n{ORDER_INSERT}\nSELECT hooks.publish(('{}')::jsonb);\nEND;\n",
        event_json("policy/bound", "t' || :t::text || '")
    )
}

fn hand_txn() -> String {
    let ty = "policy/bound";
    format!(
        "\\set t random(0, :ntenants - 1)\n\\set w :base + :t * :per\nBEGIN;\n{ORDER_INSERT}\n\
WITH k AS (SELECT gen_random_uuid()::text AS key),
e AS (INSERT INTO bench_hand.events (tenant_id, event_type, event_key, body)
      SELECT 't' || :t, '{ty}', k.key,
             '{{\"id\":\"' || k.key || '\",\"event\":\"{ty}\",\"data\":{{\"tenantId\":\"t' || :t || '\",{EVENT_DATA}}},\"user\":{EVENT_USER},\"timestamp\":\"' || now()::text || '\"}}'
        FROM k
      RETURNING event_id)
INSERT INTO bench_hand.deliveries (event_id, webhook_id)
SELECT e.event_id, :w::bigint + o FROM e, generate_series(0, 2) o;
END;
"
    )
}

/// Publishes `events` events of tenant `cost` (bodies of about 300 bytes), for the drains.
pub(crate) async fn publish_events(db: &Client, events: i32) -> Res<()> {
    db.execute(
        &format!(
            "SELECT count(hooks.publish(jsonb_build_object('event', 'cost/item', 'data',
                 jsonb_build_object('tenantId', 'cost', 'n', g, 'note', repeat('n', 40)) || '{{{EVENT_DATA}}}'::jsonb,
                 'user', '{EVENT_USER}'::jsonb)))
               FROM generate_series(1, $1::int) g"
        ),
        &[&events],
    )
    .await?;
    Ok(())
}

pub(crate) async fn cost(ctx: &mut Ctx) -> Res<()> {
    let nginx_bin = std::env::var("NGINX")
        .map(PathBuf::from)
        .ok()
        .or_else(|| procs::which("nginx"))
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    let Some(nginx_bin) = nginx_bin else {
        bail!("nginx not found (apt-get install nginx, or set NGINX)")
    };
    let nginx = procs::Nginx::start(&nginx_bin, &ctx.out)?;
    let (url, db) = ctx.fresh_db("bench_cost").await?;
    let meter = ClusterMeter::new(&db).await?;
    db.batch_execute(BARE_SCHEMA).await?;
    db.batch_execute(HAND_SCHEMA).await?;
    ctx.write("cost_bare.sql", BARE_SCRIPT)?;

    // The drain: events × 3 webhooks, bodies of about 300 bytes.
    let events: i32 = if ctx.smoke { 200 } else { 6_667 };
    webhooks(&db, "cost", "cost/item", 3, &nginx.url()).await?;
    publish_events(&db, events).await?;
    let body_bytes: f64 = db
        .query_one(
            "SELECT avg(octet_length(body))::float8 FROM hooks.events WHERE tenant_id = 'cost'",
            &[],
        )
        .await?
        .get(0);
    let deliveries = events as i64 * 3;
    let bare_rows = deliveries;

    let mut bare: Vec<Cost> = Vec::new();
    let mut one: Vec<Cost> = Vec::new();
    let mut four: Vec<Cost> = Vec::new();
    let mut ours: Vec<Cost> = Vec::new();
    for run in 0..ctx.runs {
        // Baseline and product alternate (ABBA) so that drift cancels out.
        let order: [u8; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            if which == 0 {
                bare.push(bare_drain(ctx, &db, &url, &meter, bare_rows).await?);
            } else {
                let n = nginx.url();
                one.push(drain(ctx, &db, &url, &meter, &n, 1, &format!("cost-r{run}-one")).await?);
                four.push(
                    drain(ctx, &db, &url, &meter, &n, 4, &format!("cost-r{run}-four")).await?,
                );
                let r = ctx.receiver.url("");
                ours.push(
                    drain(ctx, &db, &url, &meter, &r, 1, &format!("cost-r{run}-ours")).await?,
                );
            }
        }
    }
    let col = |v: &[Cost], f: fn(&Cost) -> f64| -> Vec<f64> { v.iter().map(f).collect() };
    let what = format!(
        "{deliveries} deliveries ({events} events x 3 webhooks), bodies of {} B",
        num(body_bytes, 0)
    );
    ctx.figure(Figure {
        bench: "COST",
        name: "deliveries/s, 1 sender x 64 to nginx".into(),
        unit: "/s",
        runs: col(&one, |c| c.rate),
        baseline_name: "bare SQL queue rows/s".into(),
        baseline_runs: col(&bare, |c| c.rate),
        goal: Goal::MinValue(12_000.0),
        note: format!(
            "{what}; sender CPU {} us per delivery (runs [{}]); bare queue: 2 pgbench clients claiming 100 with a lease, then done by id",
            num(median(&col(&one, |c| c.sender_us)), 0),
            col(&one, |c| c.sender_us)
                .iter()
                .map(|x| num(*x, 0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    ctx.figure(Figure {
        bench: "COST",
        name: "Postgres CPU per delivery, 1 sender".into(),
        unit: "us",
        runs: col(&one, |c| c.pg_us),
        baseline_name: "bare queue per row".into(),
        baseline_runs: col(&bare, |c| c.pg_us),
        goal: Goal::MaxRatio(1.5),
        note: "postmaster + all children, exited ones included, over the drain only".into(),
    });
    ctx.figure(Figure {
        bench: "COST",
        name: "WAL per delivery, 1 sender".into(),
        unit: "B",
        runs: col(&one, |c| c.wal_b),
        baseline_name: "bare queue per row".into(),
        baseline_runs: col(&bare, |c| c.wal_b),
        goal: Goal::MaxValue(700.0),
        note: format!(
            "over the drain only, after a CHECKPOINT; bodies of {} B",
            num(body_bytes, 0)
        ),
    });
    ctx.figure(Figure {
        bench: "COST",
        name: "Postgres CPU per delivery, 4 senders x 64".into(),
        unit: "us",
        runs: col(&four, |c| c.pg_us),
        baseline_name: "1 sender".into(),
        baseline_runs: col(&one, |c| c.pg_us),
        goal: Goal::MaxRatio(1.1),
        note: format!(
            "{} deliveries/s; sender CPU {} us per delivery; WAL {} B per delivery",
            num(median(&col(&four, |c| c.rate)), 0),
            num(median(&col(&four, |c| c.sender_us)), 0),
            num(median(&col(&four, |c| c.wal_b)), 0)
        ),
    });
    ctx.figure(Figure {
        bench: "COST",
        name: "deliveries/s, 1 sender x 64 to the suite's receiver".into(),
        unit: "/s",
        runs: col(&ours, |c| c.rate),
        baseline_name: "to nginx".into(),
        baseline_runs: col(&one, |c| c.rate),
        goal: Goal::None,
        note: format!(
            "Postgres CPU {} us, sender CPU {} us, WAL {} B per delivery",
            num(median(&col(&ours, |c| c.pg_us)), 0),
            num(median(&col(&ours, |c| c.sender_us)), 0),
            num(median(&col(&ours, |c| c.wal_b)), 0)
        ),
    });
    drop(nginx);

    // Publish beside a hand-rolled outbox, in the application's own transaction.
    let base = fixture(&db, 100, 10, &ctx.receiver.url("")).await?;
    let publish = ctx.write("cost_publish.sql", &publish_txn())?;
    let hand = ctx.write("cost_hand.sql", &hand_txn())?;
    let defines = [
        ("ntenants", "100".to_string()),
        ("per", "10".to_string()),
        ("base", base.to_string()),
    ];
    let mut tps: [[Vec<f64>; 2]; 2] = Default::default(); // [clients][hand, publish]
    for run in 0..ctx.runs {
        for (ci, clients) in [1u32, 8].into_iter().enumerate() {
            for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                truncate_outbox(&db, false).await?;
                db.batch_execute(
                    "TRUNCATE bench_app.orders, bench_hand.deliveries, bench_hand.events",
                )
                .await?;
                checkpoint(&db).await?;
                let script = if vi == 0 { &hand } else { &publish };
                tps[ci][vi].push(ctx.pgbench(&url, script, clients, 10, &defines)?);
            }
        }
    }
    for (ci, clients) in [1u32, 8].into_iter().enumerate() {
        ctx.figure(Figure {
            bench: "COST",
            name: format!(
                "orders INSERT + publish tps, {clients} client{}",
                if clients > 1 { "s" } else { "" }
            ),
            unit: "tps",
            runs: tps[ci][1].clone(),
            baseline_name: "hand-rolled outbox".into(),
            baseline_runs: tps[ci][0].clone(),
            goal: Goal::MinRatio(0.9),
            note: "3 of 1,000 webhooks match; no sender running (every commit takes the wake-up path); outbox: 1 event + 3 delivery rows, 2 indexes per table".into(),
        });
    }
    Ok(())
}
