//! WATCH: what a watched table (`hooks.watch_table`) adds to an application's inserts.
//!
//! Three tables of the same shape in one database: plain (the baseline), watched by
//! `hooks.watch_table` (one matching webhook, so each row queues one delivery), and one with a
//! hand-written outbox trigger (a statement trigger inserting one event row and one delivery row
//! per inserted row, 2 indexes per table: what a user would write by hand, without matching,
//! signing or a wake-up). Figures: INSERTs of 1 row per transaction (pgbench, 1 client), and
//! one INSERT of 10,000 rows (wall time of the statement and its commit, alternating, median).

use super::*;

const SCHEMA: &str = "
CREATE SCHEMA bench_watch;
CREATE TABLE bench_watch.plain   (id bigserial PRIMARY KEY, tenant text NOT NULL, status text, amount numeric);
CREATE TABLE bench_watch.watched (id bigserial PRIMARY KEY, tenant text NOT NULL, status text, amount numeric);
CREATE TABLE bench_watch.by_hand (id bigserial PRIMARY KEY, tenant text NOT NULL, status text, amount numeric);
CREATE TABLE bench_watch.events (event_id bigserial PRIMARY KEY, tenant text NOT NULL, event_type text NOT NULL,
                                 body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON bench_watch.events (created_at);
CREATE TABLE bench_watch.deliveries (delivery_id bigserial PRIMARY KEY, event_id bigint NOT NULL,
                                     status text NOT NULL DEFAULT 'pending',
                                     next_attempt_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON bench_watch.deliveries (next_attempt_at);
CREATE FUNCTION bench_watch.outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH e AS (
        INSERT INTO bench_watch.events (tenant, event_type, body)
        SELECT n.tenant, 'by_hand/insert',
               jsonb_build_object('type', 'INSERT', 'table', 'by_hand', 'record', to_jsonb(n))
          FROM new_rows n
        RETURNING event_id)
    INSERT INTO bench_watch.deliveries (event_id) SELECT event_id FROM e;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox AFTER INSERT ON bench_watch.by_hand REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_watch.outbox();
";

pub(crate) async fn watch(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_watch").await?;
    db.batch_execute(SCHEMA).await?;
    db.execute(
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, envelope)
         VALUES ('acme', 'watched', 'watched/*', $1, 'supabase')",
        &[&ctx.receiver.url("")],
    )
    .await?;
    db.batch_execute("SELECT hooks.watch_table('bench_watch.watched', tenant_column => 'tenant')")
        .await?;
    let tables = ["plain", "watched", "by_hand"];
    let truncate = "TRUNCATE bench_watch.plain, bench_watch.watched, bench_watch.by_hand,
                    bench_watch.events, bench_watch.deliveries;
                    TRUNCATE hooks.events, hooks.outbox, hooks.queue, hooks.outcomes, hooks.attempt_log;";

    // 1 row per transaction
    let mut one: [Vec<f64>; 3] = Default::default();
    for run in 0..ctx.runs {
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            db.batch_execute(truncate).await?;
            checkpoint(&db).await?;
            let script = ctx.write(
                &format!("watch_one_{}.sql", tables[i]),
                &format!(
                    "INSERT INTO bench_watch.{} (tenant, status, amount) VALUES ('acme', 'new', 12.50);\n",
                    tables[i]
                ),
            )?;
            one[i].push(ctx.pgbench(&url, &script, 1, 8, &[])?);
        }
    }
    // one statement of 10,000 rows
    let rows: i64 = if ctx.smoke { 500 } else { 10_000 };
    let mut bulk: [Vec<f64>; 3] = Default::default();
    for run in 0..ctx.runs.max(3) {
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            db.batch_execute(truncate).await?;
            checkpoint(&db).await?;
            let t0 = Instant::now();
            db.batch_execute(&format!(
                "INSERT INTO bench_watch.{} (tenant, status, amount)
                 SELECT 'acme', 'new', g FROM generate_series(1, {rows}) g",
                tables[i]
            ))
            .await?;
            bulk[i].push(t0.elapsed().as_secs_f64() * 1000.0);
            if i == 1 {
                let queued: i64 = db.query_one("SELECT count(*) FROM hooks.queue", &[]).await?.get(0);
                if queued != rows {
                    bail!("WATCH: the watched insert of {rows} rows queued {queued} deliveries");
                }
            }
        }
    }
    for (i, what) in [(1, "watched (hooks.watch_table)"), (2, "hand-written outbox trigger")] {
        ctx.figure(Figure {
            bench: "WATCH",
            name: format!("INSERT 1 row tps, {what}"),
            unit: "tps",
            runs: one[i].clone(),
            baseline_name: "plain table".into(),
            baseline_runs: one[0].clone(),
            goal: Goal::None,
            note: "1 client; the watched table's row queues 1 delivery".into(),
        });
        ctx.figure(Figure {
            bench: "WATCH",
            name: format!("INSERT {} rows ms, {what}", num(rows as f64, 0)),
            unit: "ms",
            runs: bulk[i].clone(),
            baseline_name: "plain table".into(),
            baseline_runs: bulk[0].clone(),
            goal: Goal::None,
            note: "one statement, commit included; ratio = time / plain table's time".into(),
        });
    }
    Ok(())
}
