//! Faults the delivery guarantee must survive (issue 7), with the real sender and real Postgres:
//! the sender SIGKILLed again and again while 5,000 deliveries drain; Postgres restarted (fast
//! and immediate) under load on a throwaway cluster of the test's own; wake-ups lost while no
//! sender listens or while its LISTEN connection reconnects; 1,000 rolled-back publishes.
//! Each prints what it expected, delivered, lost and duplicated (`-- --nocapture`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beema_hooks_e2e::chaos_helpers::{healthz, metric, Cluster};
use beema_hooks_e2e::db::connect;
use beema_hooks_e2e::{
    wait_until, wait_until_sql, Receiver, Reply, Sender, SenderOptions, TestDb, Webhook,
};
use serde_json::json;
use tokio_postgres::Client;

/// A small deterministic PRNG (xorshift64*), seeded from `CHAOS_SEED` or the clock; the seed is
/// printed so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn from_env() -> (Rng, u64) {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        (Rng(seed.max(1)), seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Requests beyond the first, per webhook-id.
fn extra_requests(counts: &HashMap<String, usize>) -> HashMap<String, usize> {
    counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, &n)| (k.clone(), n - 1))
        .collect()
}

async fn uuids(client: &Client, sql: &str) -> HashSet<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

// ------------------------------------------------------------------------------------------
// 1. SIGKILL, again and again.
// ------------------------------------------------------------------------------------------

/// 5,000 deliveries (500 events x 10 webhooks) drain while the sender is SIGKILLed five times
/// at random moments (a random progress point in each fifth of the work, plus a random few
/// milliseconds) and restarted at once each time. The lease is greatest(--lease-secs 1,
/// timeout 500 ms + 10 s) = 10.5 s, so what each dead sender held comes back 10.5 s later.
/// Every delivery ends `success`; requests sent twice are only those whose delivery the dead
/// sender held in flight (claimed, result never written), at most once more per kill that
/// caught it; and each such hold is logged as one `lease_expired` attempt. `CHAOS_SEED=<n>`
/// replays a run's kill points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_while_5000_deliveries_drain() {
    const WEBHOOKS: i64 = 10;
    const EVENTS: i64 = 500;
    const DELIVERIES: i64 = EVENTS * WEBHOOKS;
    const KILLS: usize = 5;
    let (mut rng, seed) = Rng::from_env();
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    // Ten webhooks share the work (no single one near hooks.max_in_flight_per_webhook), each
    // with a little latency so that every kill catches requests in flight.
    let mut secrets = HashMap::new();
    for i in 0..WEBHOOKS {
        let path = format!("/k{i}");
        rx.always(&path, Reply::ok().delay(Duration::from_millis(10)));
        let (_, secret) = db
            .register(
                &Webhook::new(&format!("k{i}"), "acme", "*", &rx.url(&path))
                    .timeout_ms(500)
                    .retry(10, 100),
            )
            .await;
        secrets.insert(path, secret);
    }
    // Five committed transactions of 100 events x 10 webhooks.
    for batch in 0..5i64 {
        db.client()
            .execute(
                "SELECT count(hooks.publish(jsonb_build_object('event', 'kill/item',
                     'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
                   FROM generate_series($1::bigint, $2::bigint) g",
                &[&(batch * EVENTS / 5 + 1), &((batch + 1) * EVENTS / 5)],
            )
            .await
            .unwrap();
    }
    assert_eq!(db.count("hooks.deliveries").await, DELIVERIES);

    // Kill points: random progress (received requests), one in each fifth of the span from
    // 5 % to 85 % of the work, so that every restarted sender gets going before the next kill.
    let (lo, hi) = (DELIVERIES as u64 / 20, DELIVERIES as u64 * 85 / 100);
    let step = (hi - lo) / KILLS as u64;
    let points: Vec<usize> = (0..KILLS as u64)
        .map(|k| rng.range(lo + k * step + step / 4, lo + (k + 1) * step) as usize)
        .collect();
    let opts = SenderOptions {
        concurrency: 32,
        lease_secs: Some(1),
        poll_interval_ms: 200,
        ..SenderOptions::default()
    };
    let start = Instant::now();
    let mut sender = Sender::start(db.url(), opts.clone());
    let mut killed: Vec<(String, HashSet<String>)> = Vec::new();
    for (i, &point) in points.iter().enumerate() {
        wait_until(
            &format!("kill {i}: {point} requests received"),
            Duration::from_secs(90),
            || async { rx.count() >= point },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 40))).await;
        sender.kill9().await;
        // A statement the dead sender had sent may still commit server-side: wait until its
        // backends are gone before taking stock of what it held.
        wait_until_sql(
            db.client(),
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            Duration::from_secs(15),
        )
        .await;
        let held = {
            let rows = db
                .client()
                .query(
                    "SELECT delivery_uuid::text FROM hooks.deliveries WHERE status = 'in_flight' AND lease_owner = $1",
                    &[&sender.sender_id],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<HashSet<_>>()
        };
        let done = db.count("hooks.deliveries WHERE status = 'success'").await;
        println!(
            "kill {i} at {:?}: {} requests received (point {point}), {done} success, {} in flight held by the dead sender",
            start.elapsed(),
            rx.count(),
            held.len()
        );
        killed.push((sender.sender_id.clone(), held));
        sender = Sender::start(db.url(), opts.clone());
    }
    let took = wait_until_sql(
        db.client(),
        &format!("SELECT count(*) = {DELIVERIES} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(90),
    )
    .await;
    // Anything late would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let counts = rx.counts_by_webhook_id();
    let extra = extra_requests(&counts);
    let held_total: usize = killed.iter().map(|(_, h)| h.len()).sum();
    let all = uuids(
        db.client(),
        "SELECT delivery_uuid::text FROM hooks.deliveries",
    )
    .await;
    let received: HashSet<String> = counts.keys().cloned().collect();
    let lost = all.difference(&received).count();
    let extra_total: usize = extra.values().sum();
    println!(
        "sigkill x{KILLS} (seed {seed}): expected {DELIVERIES}, delivered {} distinct, lost {lost}, duplicated {} deliveries \
         ({extra_total} extra requests), in flight at the kills {held_total} ({:?}), total requests {}, \
         all success {:?} after the last restart, {:?} in all",
        counts.len(),
        extra.len(),
        killed.iter().map(|(_, h)| h.len()).collect::<Vec<_>>(),
        rx.count(),
        took,
        start.elapsed()
    );
    assert_eq!(lost, 0, "every committed delivery reached the receiver");
    assert_eq!(
        received, all,
        "the receiver saw exactly the deliveries, nothing else"
    );
    assert!(
        killed.iter().filter(|(_, h)| !h.is_empty()).count() >= KILLS - 1,
        "the kills must catch work in flight"
    );
    // Duplicates only for what a dead sender held, at most once more per kill that caught it.
    for (id, n) in &extra {
        let caught = killed.iter().filter(|(_, h)| h.contains(id)).count();
        assert!(
            *n <= caught,
            "delivery {id} was sent {} times but was in flight at only {caught} kill(s)",
            n + 1
        );
    }
    assert!(extra_total <= held_total);
    // Each hold of a dead sender is logged once as a lost attempt, and no live sender lost one.
    let dead: Vec<String> = killed.iter().map(|(s, _)| s.clone()).collect();
    let expired_dead: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM hooks.attempts WHERE outcome = 'lease_expired' AND sender_id = ANY($1)",
            &[&dead],
        )
        .await
        .unwrap()
        .get(0);
    let expired_all = db
        .count("hooks.attempts WHERE outcome = 'lease_expired'")
        .await;
    assert_eq!(
        expired_dead as usize, held_total,
        "one lease_expired per held delivery"
    );
    assert_eq!(expired_all, expired_dead, "no live sender's lease expired");
    assert_eq!(
        db.count("hooks.deliveries WHERE status <> 'success'").await,
        0
    );
    for r in rx.requests().iter().step_by(97) {
        r.verify(&secrets[&r.path]).unwrap();
    }
    drop(sender);
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------
// 2. Postgres restarts.
// ------------------------------------------------------------------------------------------

/// Publishes small transactions until stopped, reconnecting through outages. Counts the
/// transactions confirmed committed and those whose outcome is unknown (error on the way).
fn spawn_publisher(
    url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    unsure: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n: i64 = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let res = client
                    .execute(
                        "SELECT count(hooks.publish(jsonb_build_object('event', 'pg/restart',
                             'data', jsonb_build_object('tenantId', 'acme', 'n', $1::bigint * 10 + g))))
                           FROM generate_series(1, 3) g",
                        &[&n],
                    )
                    .await;
                match res {
                    Ok(_) => {
                        acked.fetch_add(3, Ordering::SeqCst);
                    }
                    Err(_) => {
                        unsure.fetch_add(3, Ordering::SeqCst);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    })
}

/// A fresh connection to the throwaway cluster (the previous one died with the restart).
async fn reconnect(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                if c.simple_query("SELECT 1").await.is_ok() {
                    return c;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("cannot reconnect to {url}: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_healthz(sender: &Sender, want: u16, timeout: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let got = healthz(sender).await;
        if got == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "/healthz still {got} {:?} after the change, expected {want}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a blocking pg_ctl action off the async workers.
async fn blocking<F: FnOnce() + Send + 'static>(f: F) {
    tokio::task::spawn_blocking(f).await.expect("pg_ctl task");
}

/// On a throwaway cluster of its own (the shared one is never touched), with a publisher
/// committing every 40 ms throughout: `pg_ctl restart -m fast`, then `-m immediate` (crash
/// recovery), then for each mode a stop held for 2 s before starting again. The sender
/// reconnects by itself (claim and LISTEN connections), /healthz answers 503 while the database
/// is down and 200 once it is back, every committed delivery is delivered, and nothing stays
/// `in_flight`. A request is sent twice only if its first sending overlapped an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_fast_and_immediate() {
    let cluster = Arc::new(tokio::task::spawn_blocking(Cluster::start).await.unwrap());
    let url = cluster.url();
    let admin = connect(&url).await;
    admin
        .batch_execute("CREATE EXTENSION beema_hooks")
        .await
        .unwrap_or_else(|e| panic!("CREATE EXTENSION on the throwaway cluster: {e:?}"));
    let rx = Receiver::start().await;
    rx.always("/pg", Reply::ok().delay(Duration::from_millis(20)));
    admin
        .execute(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, retry_config, timeout_ms)
             VALUES ('acme', 'pg', '*', $1, 'secret-of-pg', '{\"maxAttempts\": 10, \"backoffMs\": 100}', 1000)",
            &[&rx.url("/pg")],
        )
        .await
        .unwrap();
    drop(admin);
    let sender = Sender::start(
        &url,
        SenderOptions {
            concurrency: 16,
            lease_secs: Some(1),
            poll_interval_ms: 300,
            ..SenderOptions::default()
        },
    );
    wait_healthz(&sender, 200, Duration::from_secs(20)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let unsure = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(url.clone(), stop.clone(), acked.clone(), unsure.clone());

    let mut report = Vec::new();
    // (start, end) of each outage: from the pg_ctl call to deliveries flowing again.
    let mut outages: Vec<(Instant, Instant)> = Vec::new();
    for mode in ["fast", "immediate"] {
        // A quick bounce: pg_ctl restart.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = rx.count();
        let c = cluster.clone();
        let t = Instant::now();
        blocking(move || c.pg_ctl_restart(mode)).await;
        let restart_took = t.elapsed();
        wait_until(
            &format!("deliveries flow again after restart -m {mode}"),
            Duration::from_secs(30),
            || async { rx.count() > before + 10 },
        )
        .await;
        outages.push((t, Instant::now()));
        let healthy_after = wait_healthz(&sender, 200, Duration::from_secs(30)).await;
        report.push(format!(
            "restart -m {mode}: pg_ctl took {restart_took:?}, deliveries flowing and /healthz 200 {:?} after",
            healthy_after
        ));

        // An outage long enough to watch: stop, hold 2 s, start.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let c = cluster.clone();
        let t = Instant::now();
        blocking(move || c.pg_ctl_stop(mode)).await;
        let to_503 = wait_healthz(&sender, 503, Duration::from_secs(15)).await;
        let (_, body) = sender.admin_get("/healthz").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(healthz(&sender).await, 503, "still down, still 503");
        assert!(
            sender_running(&sender),
            "the sender must survive the outage"
        );
        let c = cluster.clone();
        blocking(move || c.pg_ctl_start()).await;
        let to_200 = wait_healthz(&sender, 200, Duration::from_secs(30)).await;
        let before = rx.count();
        wait_until(
            &format!("deliveries flow again after stop -m {mode} / start"),
            Duration::from_secs(30),
            || async { rx.count() > before + 10 },
        )
        .await;
        outages.push((t, Instant::now()));
        report.push(format!(
            "stop -m {mode} (2 s down) / start: /healthz 503 {to_503:?} after the stop ({:?}), 200 {to_200:?} after the start",
            body.lines().last().unwrap_or("")
        ));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    publisher.await.unwrap();

    let client = reconnect(&url).await;
    let events: i64 = client
        .query_one("SELECT count(*) FROM hooks.events", &[])
        .await
        .unwrap()
        .get(0);
    let (acked, unsure) = (acked.load(Ordering::SeqCst), unsure.load(Ordering::SeqCst));
    assert!(
        events as u64 >= acked && events as u64 <= acked + unsure,
        "events {events}: every acknowledged commit is there ({acked}), and at most the {unsure} unsure ones more"
    );
    // The leases of anything stranded expire within 11 s; everything must end success.
    let took = wait_until_sql(
        &client,
        "SELECT bool_and(status = 'success') AND count(*) > 0 FROM hooks.deliveries",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_flight: i64 = client
        .query_one(
            "SELECT count(*) FROM hooks.deliveries WHERE status = 'in_flight'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let all = uuids(&client, "SELECT delivery_uuid::text FROM hooks.deliveries").await;
    let counts = rx.counts_by_webhook_id();
    let received: HashSet<String> = counts.keys().cloned().collect();
    let lost = all.difference(&received).count();
    let extra = extra_requests(&counts);
    let extra_total: usize = extra.values().sum();
    let expired: i64 = client
        .query_one(
            "SELECT count(*) FROM hooks.attempts WHERE outcome = 'lease_expired'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let lease_lost: i64 = client
        .query_one(
            "SELECT count(*) FROM hooks.attempts WHERE outcome = 'lease_lost'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (_, metrics) = sender.admin_get("/metrics").await.unwrap();
    let reconnects =
        metric(&metrics, "beema_hooks_sender_listener_reconnects_total").unwrap_or(0.0);
    let db_errors = metric(&metrics, "beema_hooks_sender_db_errors_total").unwrap_or(0.0);
    let dropped = metric(&metrics, "beema_hooks_sender_results_dropped_total").unwrap_or(0.0);
    for line in &report {
        println!("{line}");
    }
    println!(
        "postgres restarts: expected {} (acked {acked}, unsure {unsure}), delivered {} distinct, lost {lost}, \
         duplicated {} ({extra_total} extra requests), lease_expired {expired}, lease_lost {lease_lost}, \
         in_flight at the end {in_flight}, all success {took:?} after the publisher stopped; \
         listener reconnects {reconnects}, db errors {db_errors}, results dropped {dropped}",
        all.len(),
        counts.len(),
        extra.len()
    );
    assert_eq!(lost, 0, "nothing committed is lost");
    assert_eq!(received, all, "the receiver saw exactly the deliveries");
    assert_eq!(in_flight, 0, "nothing stuck in in_flight");
    // A request is sent again only when its first sending overlapped an outage: it was in
    // flight at the stop, or its claim (asynchronous commit) or its result was lost with it.
    let requests = rx.requests();
    for id in extra.keys() {
        let first = requests
            .iter()
            .filter(|r| &r.webhook_id() == id)
            .map(|r| r.at)
            .min()
            .unwrap();
        assert!(
            outages.iter().any(|(start, end)| {
                first + Duration::from_secs(3) >= *start && first <= *end + Duration::from_secs(2)
            }),
            "delivery {id} was sent again although its first sending overlapped no outage"
        );
    }
    assert!(
        reconnects >= 4.0,
        "the LISTEN connection re-established after each of the 4 outages: {reconnects}"
    );
    assert_eq!(healthz(&sender).await, 200);
    drop(sender);
    drop(client);
    // The cluster is stopped and removed by its Drop, also when an assertion above fails.
    drop(cluster);
}

fn sender_running(sender: &Sender) -> bool {
    sender.pid() > 0 && std::path::Path::new(&format!("/proc/{}", sender.pid())).exists()
}

// ------------------------------------------------------------------------------------------
// 4. Lost wake-ups.
// ------------------------------------------------------------------------------------------

/// The backend pids of this database's LISTEN connection(s), other than ours.
async fn listen_backends(db: &TestDb) -> Vec<i32> {
    db.client()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn notifications(sender: &Sender) -> f64 {
    let (_, m) = sender.admin_get("/metrics").await.unwrap();
    metric(&m, "beema_hooks_sender_notifications_total").unwrap_or(0.0)
}

/// With a 3 s poll interval (so a delivery within it cannot be the poll tick's doing twice):
/// (a) an event committed while no sender runs is delivered by a sender started afterwards
/// within the poll interval of its start; (b) three times, the sender's LISTEN backend is
/// terminated and an event committed in the same round trip (so its NOTIFY goes out while
/// nobody listens: the sender's notification counter proves it never arrived), and it is
/// delivered within the poll interval anyway (the listener reconnects and claims at once); a
/// second event published then is woken by NOTIFY again; (c) the same with every backend of the
/// sender terminated (its claim connection too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_wakeups_are_delivered_within_the_poll_interval() {
    const POLL_MS: u64 = 3000;
    let poll = Duration::from_millis(POLL_MS);
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;

    // (a) Committed while no sender listens.
    db.publish(&json!({"event": "wake/before-start", "data": {"tenantId": "acme"}}))
        .await;
    let t = Instant::now();
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            poll_interval_ms: POLL_MS,
            ..SenderOptions::default()
        },
    );
    wait_until("the event published before the start", poll, || async {
        rx.count() >= 1
    })
    .await;
    let mut report = vec![format!(
        "published before the sender started: delivered {:?} after its start",
        t.elapsed()
    )];

    let mut expected = 1usize;
    for round in 0..4 {
        let all_backends = round == 3;
        wait_until("a LISTEN backend", Duration::from_secs(20), || async {
            !listen_backends(&db).await.is_empty()
        })
        .await;
        // Let the sender go idle, so that publishers notify.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let victims: Vec<i32> = if all_backends {
            db.client()
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND backend_type = 'client backend'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        } else {
            listen_backends(&db).await
        };
        assert!(!victims.is_empty());
        // Terminate, wait (polling every millisecond) until the backends are gone, and publish,
        // all in one round trip and one transaction: the commit, and its NOTIFY, come within a
        // millisecond or two of the LISTEN connection's death, long before any reconnect (which
        // backs off at least 125 ms). (pg_terminate_backend's own wait polls every 100 ms: too
        // coarse.)
        let pids = victims
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let notes_before = notifications(&sender).await;
        let t0 = Instant::now();
        db.client()
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_terminate_backend(p) FROM unnest(ARRAY[{pids}]) p;
                 DO $$ BEGIN
                     FOR i IN 1..5000 LOOP
                         PERFORM pg_stat_clear_snapshot();
                         IF NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ANY (ARRAY[{pids}])) THEN
                             RETURN;
                         END IF;
                         PERFORM pg_sleep(0.001);
                     END LOOP;
                     RAISE EXCEPTION 'backends {pids} did not exit';
                 END $$;
                 SELECT hooks.publish('{{\"event\": \"wake/missed\", \"data\": {{\"tenantId\": \"acme\", \"round\": {round}}}}}');
                 COMMIT;"
            ))
            .await
            .unwrap();
        expected += 1;
        wait_until(
            &format!("round {round}: the event whose NOTIFY was lost, within the {POLL_MS} ms poll interval"),
            poll,
            || async { rx.count() >= expected },
        )
        .await;
        let missed_delivered = t0.elapsed();
        let notified = notifications(&sender).await - notes_before;
        assert_eq!(
            notified, 0.0,
            "round {round}: its NOTIFY went out while nobody listened"
        );

        // Listening again: the next commit is woken by NOTIFY.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t1 = Instant::now();
        db.publish(&json!({"event": "wake/after", "data": {"tenantId": "acme", "round": round}}))
            .await;
        expected += 1;
        wait_until(&format!("round {round}: the next event"), poll, || async {
            rx.count() >= expected
        })
        .await;
        let next_delivered = t1.elapsed();
        let notified_after = notifications(&sender).await - notes_before;
        report.push(format!(
            "round {round}: terminated {} ({} backend(s)) and committed at once: delivered {missed_delivered:?} \
             after the commit without its NOTIFY; the next commit {next_delivered:?} (notifications received {notified_after})",
            if all_backends { "every backend of the sender" } else { "the LISTEN backend" },
            victims.len(),
        ));
    }
    let (_, metrics) = sender.admin_get("/metrics").await.unwrap();
    let reconnects =
        metric(&metrics, "beema_hooks_sender_listener_reconnects_total").unwrap_or(0.0);
    for line in &report {
        println!("lost wake-ups: {line}");
    }
    println!(
        "lost wake-ups: expected {expected}, delivered {}, duplicated {}, listener reconnects {reconnects}",
        rx.counts_by_webhook_id().len(),
        rx.count() - rx.counts_by_webhook_id().len()
    );
    assert_eq!(rx.counts_by_webhook_id().len(), expected);
    assert_eq!(rx.count(), expected, "no duplicates");
    assert!(reconnects >= 4.0, "listener reconnects: {reconnects}");
    drop(sender);
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------
// 5. Rollbacks.
// ------------------------------------------------------------------------------------------

/// With a sender running (idle, so any wake-up would NOTIFY): 1,000 publishes that never commit:
/// 400 in transactions that ROLLBACK, 200 in transactions aborted by an error, 300 rolled back
/// to a savepoint inside transactions that COMMIT, and 100 behind nested savepoints rolled back
/// to the outer one before COMMIT. Nothing is sent, no row is left, and no NOTIFY is sent; a
/// committed event published afterwards is delivered (the pipeline was alive all along).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rolled_back_publishes_send_nothing() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    db.register(&Webhook::new("all", "acme", "*", &rx.url("/all")))
        .await;
    db.register(&Webhook::new("roll", "acme", "roll/*", &rx.url("/roll")))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}' AND NOT awake)",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;
    let (_listener, mut notes) = db.listen("hooks_deliveries").await;
    let c = db.connect().await;
    let publish = "SELECT hooks.publish(jsonb_build_object('event', 'roll/back', 'data',
                       jsonb_build_object('tenantId', 'acme', 'n', $1::int)))";
    let mut n = 0i32;
    let mut published = 0;
    let start = Instant::now();
    // 400: BEGIN; 50 publishes; ROLLBACK.
    for _ in 0..8 {
        c.batch_execute("BEGIN").await.unwrap();
        for _ in 0..50 {
            n += 1;
            c.execute(publish, &[&n]).await.unwrap();
        }
        c.batch_execute("ROLLBACK").await.unwrap();
        published += 50;
    }
    // 200: BEGIN; 50 publishes; an error aborts the transaction; ROLLBACK.
    for _ in 0..4 {
        c.batch_execute("BEGIN").await.unwrap();
        for _ in 0..50 {
            n += 1;
            c.execute(publish, &[&n]).await.unwrap();
        }
        assert!(c.batch_execute("SELECT 1/0").await.is_err());
        c.batch_execute("ROLLBACK").await.unwrap();
        published += 50;
    }
    // 300: BEGIN; SAVEPOINT; 50 publishes; ROLLBACK TO SAVEPOINT; COMMIT.
    for _ in 0..6 {
        c.batch_execute("BEGIN; CREATE TEMP TABLE IF NOT EXISTS kept(x int); SAVEPOINT s")
            .await
            .unwrap();
        for _ in 0..50 {
            n += 1;
            c.execute(publish, &[&n]).await.unwrap();
        }
        c.batch_execute("ROLLBACK TO SAVEPOINT s; INSERT INTO kept VALUES (1); COMMIT")
            .await
            .unwrap();
        published += 50;
    }
    // 100: nested savepoints, rolled back to the outer one; the transaction commits.
    for _ in 0..4 {
        c.batch_execute("BEGIN; SAVEPOINT a").await.unwrap();
        for _ in 0..10 {
            n += 1;
            c.execute(publish, &[&n]).await.unwrap();
        }
        c.batch_execute("SAVEPOINT b").await.unwrap();
        for _ in 0..15 {
            n += 1;
            c.execute(publish, &[&n]).await.unwrap();
        }
        c.batch_execute("RELEASE SAVEPOINT b; ROLLBACK TO SAVEPOINT a; COMMIT")
            .await
            .unwrap();
        published += 25;
    }
    assert_eq!(published, 1000);
    let kept: i64 = c
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 6, "the savepoint transactions did commit");
    let publishing = start.elapsed();
    // Give a wrongly sent delivery every chance to show up (the poll tick is 200 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut notified = 0;
    while notes.try_recv().is_ok() {
        notified += 1;
    }
    let rows = (
        db.count("hooks.events").await,
        db.count("hooks.deliveries").await,
        db.count("hooks.attempts").await,
    );
    println!(
        "rollback: published {published} without committing them (in {publishing:?}); expected 0, delivered {}, \
         rows (events, deliveries, attempts) {rows:?}, NOTIFYs {notified}",
        rx.count()
    );
    assert_eq!(rx.count(), 0, "a rolled-back publish must send nothing");
    assert_eq!(rows, (0, 0, 0), "a rolled-back publish leaves no row");
    assert_eq!(notified, 0, "a rolled-back publish notifies nobody");

    // The pipeline was alive: a committed publish goes out.
    db.publish(&json!({"event": "roll/committed", "data": {"tenantId": "acme"}}))
        .await;
    wait_until("the committed event", Duration::from_secs(10), || async {
        rx.count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2, "one committed event x two matching webhooks");
    drop(sender);
    db.cleanup().await;
}
