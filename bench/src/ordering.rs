//! ORDER: what ordered delivery per key (a webhook's `ordering_key`) costs the drain. The same
//! backlog, 20,000 events spread over 1,000 keys (20 per key, queued in one transaction), is
//! drained by one sender (`--concurrency 64`) to the suite's own receiver, once to a webhook
//! with `ordering_key` (each key's events one at a time, in order) and once to the same webhook
//! without (the baseline), alternating. Per delivery: the rate and Postgres CPU (the postmaster
//! and all its children). And publish: one `hooks.publish` per transaction (pgbench, 1 client,
//! a random key of the 1,000), to each webhook.

use super::*;
use beema_hooks_bench::procs::ClusterMeter;

pub(crate) async fn ordering(ctx: &mut Ctx) -> Res<()> {
    let (url, db) = ctx.fresh_db("bench_order").await?;
    let meter = ClusterMeter::new(&db).await?;
    let (events, keys): (i32, i32) = if ctx.smoke {
        (500, 50)
    } else {
        (20_000, 1_000)
    };
    db.execute(
        "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, ordering_key)
         VALUES ('ordered', 'ordered', 'order/item', $1, 'data.account'),
                ('free', 'free', 'order/item', $1, NULL)",
        &[&ctx.receiver.url("")],
    )
    .await?;
    let scripts = [
        ctx.write("order_publish_free.sql", &publish_one("free", keys))?,
        ctx.write("order_publish_ordered.sql", &publish_one("ordered", keys))?,
    ];
    let truncate =
        "TRUNCATE hooks.events, hooks.outbox, hooks.queue, hooks.outcomes, hooks.attempt_log,
                              hooks.order_keys, hooks.order_pending";
    // [free, ordered] x runs
    let mut tps: [Vec<f64>; 2] = Default::default();
    let mut rate: [Vec<f64>; 2] = Default::default();
    let mut pg_us: [Vec<f64>; 2] = Default::default();
    for run in 0..ctx.runs {
        for vi in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let tenant = ["free", "ordered"][vi];
            // publish: one event per transaction, no sender running
            db.batch_execute(truncate).await?;
            checkpoint(&db).await?;
            tps[vi].push(ctx.pgbench(&url, &scripts[vi], 1, 8, &[])?);
            // the drain: a backlog queued in one statement
            db.batch_execute(truncate).await?;
            db.execute(
                &format!(
                    "SELECT count(hooks.publish(jsonb_build_object('event', 'order/item',
                         'data', jsonb_build_object('tenantId', $1::text, 'account', 'A' || (g % $3::int), 'n', g, {}))))
                       FROM generate_series(1, $2::int) g",
                    "'policyId', 'P-1', 'premium', 1234.5, 'currency', 'EUR'"
                ),
                &[&tenant, &events, &keys],
            )
            .await?;
            db.batch_execute("VACUUM ANALYZE hooks.outbox, hooks.queue, hooks.order_keys")
                .await?;
            checkpoint(&db).await?;
            let (cpu0, _) = meter.read(&db).await?;
            let t0 = Instant::now();
            let mut s = ctx.sender(&url, &format!("order-{tenant}-{run}"), 64)?;
            loop {
                let busy: bool = db
                    .query_one("SELECT EXISTS (SELECT FROM hooks.queue)", &[])
                    .await?
                    .get(0);
                if !busy {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    bail!("ORDER: deliveries still unfinished after 600 s");
                }
                if !s.proc.alive() {
                    bail!("ORDER: {} died (see its log)", s.proc.name);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = t0.elapsed();
            let (cpu1, _) = meter.read(&db).await?;
            s.stop()?;
            all_succeeded(&db).await?;
            rate[vi].push(events as f64 / took.as_secs_f64());
            pg_us[vi].push((cpu1 - cpu0) * 1e6 / events as f64);
        }
    }
    let note =
        format!("{events} events over {keys} keys, one sender (concurrency 64), own receiver");
    ctx.figure(Figure {
        bench: "ORDER",
        name: format!("deliveries/s, ordering on ({keys} keys)"),
        unit: "/s",
        runs: rate[1].clone(),
        baseline_name: "no ordering".into(),
        baseline_runs: rate[0].clone(),
        goal: Goal::None,
        note: note.clone(),
    });
    ctx.figure(Figure {
        bench: "ORDER",
        name: "publish tps, 1 client, ordering on".into(),
        unit: "tps",
        runs: tps[1].clone(),
        baseline_name: "no ordering".into(),
        baseline_runs: tps[0].clone(),
        goal: Goal::None,
        note: format!(
            "one hooks.publish per transaction, a random key of {keys}, no sender running"
        ),
    });
    ctx.figure(Figure {
        bench: "ORDER",
        name: "Postgres CPU per delivery, ordering on".into(),
        unit: "us",
        runs: pg_us[1].clone(),
        baseline_name: "no ordering".into(),
        baseline_runs: pg_us[0].clone(),
        goal: Goal::None,
        note,
    });
    Ok(())
}

/// A pgbench script: one publish for `tenant`'s webhook with a random key of `keys`.
fn publish_one(tenant: &str, keys: i32) -> String {
    format!(
        "\\set k random(1, {keys})\n\
         SELECT hooks.publish(jsonb_build_object('event', 'order/item', 'data', jsonb_build_object(\
         'tenantId', '{tenant}', 'account', 'A' || :k, 'n', 1, 'policyId', 'P-1', 'premium', 1234.5)));\n"
    )
}
