//! FLAVORS: the portable flavor (PL/pgSQL + pgcrypto, `scripts/portable.sh`) beside the native
//! one (the pgrx extension), in one run, on the same cluster (issue "Managed Postgres").
//!
//! - Publish: an `orders` INSERT + `hooks.publish` (3 of 1,000 webhooks match), pgbench at 1
//!   client, no sender running; portable against native, alternating.
//! - Delivery: 20,001 deliveries (6,667 events x 3 webhooks) drained by one sender
//!   (`--concurrency 64`) to nginx; deliveries/s and Postgres CPU per delivery, portable against
//!   native, alternating. The same drain as COST (`cost::drain`).
//!
//! The portable database is installed as a user of managed Postgres does: `psql -f
//! dist/beema_hooks.sql` by `beema_owner`, which owns the database and is not a superuser.

use super::*;
use beema_hooks_bench::procs::ClusterMeter;

/// A database of `flavor` with the COST fixture: 1,000 webhooks for publish, and tenant `cost`'s
/// 3 webhooks with their events queued for the drain.
async fn prepare(
    ctx: &mut Ctx,
    portable: bool,
    target: &str,
    events: i32,
) -> Res<(String, Client)> {
    let name = if portable {
        "bench_flavor_portable"
    } else {
        "bench_flavor_native"
    };
    let (url, db) = if portable {
        ctx.fresh_portable_db(name).await?
    } else {
        ctx.fresh_db(name).await?
    };
    db.batch_execute(cost::HAND_SCHEMA).await?;
    webhooks(&db, "cost", "cost/item", 3, target).await?;
    cost::publish_events(&db, events).await?;
    Ok((url, db))
}

pub(crate) async fn flavors(ctx: &mut Ctx) -> Res<()> {
    let nginx_bin = procs::which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    let Some(nginx_bin) = nginx_bin else {
        bail!("nginx not found (apt-get install nginx)")
    };
    let nginx = procs::Nginx::start(&nginx_bin, &ctx.out)?;
    let events: i32 = if ctx.smoke { 100 } else { 6_667 };
    let mut dbs = Vec::new();
    for portable in [false, true] {
        dbs.push(prepare(ctx, portable, &nginx.url(), events).await?);
    }
    let meter = ClusterMeter::new(&dbs[0].1).await?;
    let publish = ctx.write("flavors_publish.sql", &cost::publish_txn())?;
    let mut bases = Vec::new();
    for (_, db) in &dbs {
        bases.push(fixture(db, 100, 10, &ctx.receiver.url("")).await?);
    }

    // [native, portable]
    let mut drain: [Vec<(f64, f64)>; 2] = Default::default();
    let mut tps: [Vec<f64>; 2] = Default::default();
    // All drains first, then the publish runs.
    for run in 0..ctx.runs {
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (url, db) = &dbs[i];
            let c = cost::drain(
                ctx,
                db,
                url,
                &meter,
                &nginx.url(),
                1,
                &format!("flavors-r{run}-{i}"),
            )
            .await?;
            drain[i].push((c.rate, c.pg_us));
        }
    }
    // The publish runs after every drain: they truncate the outbox the drains requeue.
    for run in 0..ctx.runs {
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (url, db) = &dbs[i];
            truncate_outbox(db, false).await?;
            db.batch_execute("TRUNCATE bench_app.orders").await?;
            checkpoint(db).await?;
            let defines = [
                ("ntenants", "100".to_string()),
                ("per", "10".to_string()),
                ("base", bases[i].to_string()),
            ];
            tps[i].push(ctx.pgbench(url, &publish, 1, 10, &defines)?);
        }
    }
    let col =
        |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| -> Vec<f64> { v.iter().map(f).collect() };
    ctx.figure(Figure {
        bench: "FLAVORS",
        name: "portable: orders INSERT + publish tps, 1 client".into(),
        unit: "tps",
        runs: tps[1].clone(),
        baseline_name: "native".into(),
        baseline_runs: tps[0].clone(),
        goal: Goal::MinRatio(0.8),
        note: "3 of 1,000 webhooks match; no sender running".into(),
    });
    ctx.figure(Figure {
        bench: "FLAVORS",
        name: "portable: deliveries/s, 1 sender x 64 to nginx".into(),
        unit: "/s",
        runs: col(&drain[1], |c| c.0),
        baseline_name: "native".into(),
        baseline_runs: col(&drain[0], |c| c.0),
        goal: Goal::MaxSlowdown(1.2),
        note: format!(
            "{} deliveries ({events} events x 3 webhooks)",
            events as i64 * 3
        ),
    });
    ctx.figure(Figure {
        bench: "FLAVORS",
        name: "portable: Postgres CPU per delivery, 1 sender".into(),
        unit: "us",
        runs: col(&drain[1], |c| c.1),
        baseline_name: "native".into(),
        baseline_runs: col(&drain[0], |c| c.1),
        goal: Goal::MaxRatio(1.2),
        note: "postmaster + all children, over the drain only".into(),
    });
    drop(nginx);
    Ok(())
}
