//! The circuit breaker fits the outage, with the real sender and receiver: failures of requests
//! that were in flight together open it once (they do not stretch the pause), the cool-down
//! grows per failed probe, and the breaker delays attempts without ever starving a delivery of
//! the ones it is owed. `operations.rs` has the pause / probe / resume cycle itself.

use std::time::{Duration, Instant};

use beema_hooks_e2e::{Receiver, Reply, Sender, SenderOptions, TestDb, Webhook};

/// What the test saw of a webhook's breaker while sampling it.
#[derive(Debug, Default)]
struct Seen {
    /// The longest pause it was given, from the failure that set it (ms).
    longest_pause_ms: f64,
    /// How many distinct pauses it was given.
    pauses: usize,
    /// The highest breaker level (failed probes since it opened).
    max_level: i32,
    last_paused_until: Option<String>,
}

impl Seen {
    async fn sample(&mut self, db: &TestDb, webhook: i64) {
        let r = db
            .client()
            .query_one(
                "SELECT paused_until::text,
                        (extract(epoch FROM paused_until - last_failure_at) * 1000)::float8,
                        breaker_level
                   FROM hooks.webhooks WHERE webhook_id = $1",
                &[&webhook],
            )
            .await
            .unwrap();
        let (until, pause_ms, level): (Option<String>, Option<f64>, i32) =
            (r.get(0), r.get(1), r.get(2));
        if until.is_some() && until != self.last_paused_until {
            self.pauses += 1;
            self.longest_pause_ms = self.longest_pause_ms.max(pause_ms.unwrap_or(0.0));
        }
        if until.is_some() {
            self.last_paused_until = until;
        }
        self.max_level = self.max_level.max(level);
    }
}

/// Samples the breaker of `webhook` into `seen` every 20 ms until `sql` is true (panics after
/// `timeout`).
async fn watch_until(db: &TestDb, webhook: i64, sql: &str, timeout: Duration, seen: &mut Seen) {
    let start = Instant::now();
    loop {
        seen.sample(db, webhook).await;
        if db.one::<bool>(sql).await {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "not within {timeout:?}: {sql}; breaker seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn breaker_settings(db: &TestDb, cooldown_ms: u32, max_cooldown_ms: u32) {
    db.set_default("hooks.breaker_failure_threshold", 5).await;
    db.set_default("hooks.breaker_cooldown_ms", cooldown_ms)
        .await;
    db.set_default("hooks.breaker_max_cooldown_ms", max_cooldown_ms)
        .await;
}

/// A one-second outage while 32 requests are in flight: their 32 failures open the breaker
/// once, for the first cool-down, and the probe after it closes it. (0.2.0 doubled the pause per
/// failed request: 32 failures paused the webhook for the maximum cool-down.)
#[tokio::test]
async fn a_one_second_outage_with_32_in_flight_pauses_for_the_first_cool_down_only() {
    const N: i64 = 64;
    let db = TestDb::new().await;
    breaker_settings(&db, 1500, 60_000).await;
    let rx = Receiver::start().await;
    let outage = Reply::status(500).delay(Duration::from_millis(300));
    rx.always("/w", outage);
    let (id, _) = db
        .register(&Webhook::new("blip", "acme", "*", &rx.url("/w")).retry(10, 100))
        .await;
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            concurrency: 32,
            ..SenderOptions::default()
        },
    );
    let start = Instant::now();
    db.publish_series("acme", "a/b", N).await;
    let mut seen = Seen::default();
    while start.elapsed() < Duration::from_secs(1) {
        seen.sample(&db, id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.always("/w", Reply::ok());
    watch_until(
        &db,
        id,
        &format!("SELECT count(*) = {N} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(30),
        &mut seen,
    )
    .await;
    let failed_requests = rx.requests_to("/w").len() - N as usize;
    println!(
        "1 s outage, {failed_requests} failed requests: {seen:?}; all delivered after {:?}",
        start.elapsed()
    );
    assert!(
        failed_requests >= 32,
        "the outage failed {failed_requests} requests"
    );
    assert_eq!(seen.pauses, 1, "one outage, one pause: {seen:?}");
    assert!(
        seen.longest_pause_ms <= 1500.0 + 1.0,
        "paused for more than the first cool-down: {seen:?}"
    );
    assert_eq!(seen.max_level, 0, "no probe failed: {seen:?}");
    drop(sender);
    db.cleanup().await;
}

/// An endpoint that fails every delivery twice and then accepts it. The first attempts, in
/// flight together, open the breaker once; the probe goes to the delivery with the most attempts
/// behind it. It is never paused for more than twice the first cool-down (one failed probe), and
/// closes by itself. (0.2.0 paused such an endpoint for 58 minutes.)
#[tokio::test]
async fn an_endpoint_failing_each_delivery_twice_is_paused_at_most_one_probe_longer() {
    const N: i64 = 20;
    let db = TestDb::new().await;
    breaker_settings(&db, 1000, 60_000).await;
    let rx = Receiver::start().await;
    rx.per_delivery("/w", 2, Reply::status(503), Reply::ok());
    let (id, _) = db
        .register(&Webhook::new("twice", "acme", "*", &rx.url("/w")).retry(5, 50))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    db.publish_series("acme", "a/b", N).await;
    let mut seen = Seen::default();
    watch_until(
        &db,
        id,
        &format!("SELECT count(*) = {N} FROM hooks.deliveries WHERE status = 'success'"),
        Duration::from_secs(30),
        &mut seen,
    )
    .await;
    println!("fail twice then succeed: {seen:?}");
    assert!(
        seen.longest_pause_ms <= 2.0 * 1000.0 + 1.0,
        "paused longer than one failed probe allows: {seen:?}"
    );
    assert!(seen.max_level <= 1, "{seen:?}");
    assert_eq!(
        db.count("hooks.deliveries WHERE attempt_number <> 3").await,
        0,
        "every delivery took exactly its three attempts"
    );
    drop(sender);
    db.cleanup().await;
}

/// A dead endpoint, `maxAttempts` 3: the breaker opens and its cool-down grows with each failed
/// probe, yet every delivery gets its three attempts and ends `failed` in `hooks.dead_letters`,
/// within its retry schedule plus one maximum cool-down (plus the sender's polling). (0.2.0 sent
/// one probe per cool-down while the others waited: 37 queued rows were never tried.)
#[tokio::test]
async fn a_dead_endpoint_ends_every_delivery_in_the_dead_letters() {
    const N: i64 = 37;
    let db = TestDb::new().await;
    breaker_settings(&db, 300, 1200).await;
    let rx = Receiver::start().await;
    rx.always("/w", Reply::status(500));
    let (id, _) = db
        .register(&Webhook::new("dead", "acme", "*", &rx.url("/w")).retry(3, 100))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    let start = Instant::now();
    db.publish_series("acme", "a/b", N).await;
    // Schedule: 100 + 200 ms (x1.2 jitter at most) between attempts; one maximum cool-down
    // (1.2 s) of holding; the rest is claiming and polling (200 ms) slack.
    let mut seen = Seen::default();
    watch_until(
        &db,
        id,
        &format!("SELECT count(*) = {N} FROM hooks.dead_letters"),
        Duration::from_secs(20),
        &mut seen,
    )
    .await;
    println!(
        "dead endpoint: all {N} in the dead letters after {:?}; breaker {seen:?}",
        start.elapsed()
    );
    assert!(seen.pauses >= 1, "the breaker opened: {seen:?}");
    assert_eq!(
        db.count("hooks.deliveries WHERE status = 'failed' AND attempt_number = 3")
            .await,
        N,
        "every delivery got exactly its three attempts"
    );
    assert_eq!(rx.requests_to("/w").len(), 3 * N as usize);
    assert_eq!(
        db.count("hooks.deliveries WHERE breaker_held_ms > 1200")
            .await,
        0,
        "no delivery was held back for more than one maximum cool-down"
    );
    drop(sender);
    db.cleanup().await;
}
