//! The operations surface with the real sender and real receivers: secret rotation verified by a
//! receiver holding either secret; the circuit breaker pausing a failing webhook (its deliveries
//! wait instead of spending attempts), probing, and closing, while a healthy webhook keeps its
//! latency; a hanging endpoint not slowing a healthy one; `hooks.purge` over 100,000 old rows
//! while publish and claim run concurrently; the sender logging in as a member of `hooks_sender`
//! that cannot read a secret; `hooks.test_webhook`; `hooks.retry_delivery` (same webhook-id) and
//! `hooks.replay_event` (new webhook-id).
//!
//! What SQL alone can show is pinned by the pg_regress files (manage, breaker, retention,
//! security); these tests add what needs the sender binary, an HTTP receiver, or concurrency.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beema_hooks_e2e::db::admin_url;
use beema_hooks_e2e::signature;
use beema_hooks_e2e::{
    unique_name, wait_until, wait_until_sql, Receiver, Recorded, Reply, Sender, SenderOptions,
    TestDb, Webhook,
};
use serde_json::json;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

// ------------------------------------------------------------------------------------------------
// Small helpers.
// ------------------------------------------------------------------------------------------------

/// The `v1,` entries of a request's `webhook-signature` header.
fn standard_entries(r: &Recorded) -> Vec<String> {
    r.header("webhook-signature")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a Standard Webhooks receiver holding only `secret` checks: one `v1,` entry of
/// `webhook-signature` equals its own HMAC of `id.timestamp.body`.
fn standard_accepts(r: &Recorded, secret: &str) -> bool {
    let want = signature::standard(
        secret,
        &r.webhook_id(),
        &r.header("webhook-timestamp").unwrap_or_default(),
        &r.body,
    );
    standard_entries(r).contains(&want)
}

/// What a receiver of the seeds' scheme holding only `secret` checks: `X-Beema-Signature`.
fn beema_accepts(r: &Recorded, secret: &str) -> bool {
    r.header("x-beema-signature").as_deref() == Some(signature::beema(secret, &r.body).as_str())
}

/// The SQLSTATE a statement fails with, or None when it succeeds.
async fn sqlstate_of(client: &Client, sql: &str) -> Option<SqlState> {
    match client.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => Some(
            e.code()
                .cloned()
                .unwrap_or_else(|| panic!("{sql}: error without SQLSTATE: {e}")),
        ),
    }
}

async fn connect_as(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Waits until `path` has received at least `n` requests; returns them.
async fn wait_requests(rx: &Receiver, path: &str, n: usize, timeout: Duration) -> Vec<Recorded> {
    wait_until(&format!("{n} request(s) to {path}"), timeout, || async {
        rx.requests_to(path).len() >= n
    })
    .await;
    rx.requests_to(path)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Publishes `<event_type>` with `data.seq = n` every `every` on a connection of its own until
/// `stop`; returns, per seq, the instant just before its publish was sent.
fn spawn_paced_publisher(
    client: Client,
    event_type: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        let mut sent = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let seq = sent.len() as i64;
            let t = Instant::now();
            client
                .execute(
                    "SELECT hooks.publish(jsonb_build_object('event', $1::text,
                         'data', jsonb_build_object('tenantId', 'acme', 'seq', $2::bigint)))",
                    &[&event_type, &seq],
                )
                .await
                .expect("paced publish");
            sent.push(t);
            tokio::time::sleep(every).await;
        }
        sent
    })
}

/// Publish-to-arrival latency of each paced publish (by `data.seq`), sorted; panics when one
/// did not arrive (after waiting up to `timeout` for all of them).
async fn paced_latencies(
    rx: &Receiver,
    path: &str,
    sent: &[Instant],
    timeout: Duration,
) -> Vec<Duration> {
    wait_requests(rx, path, sent.len(), timeout).await;
    let mut first_arrival: HashMap<i64, Instant> = HashMap::new();
    for r in rx.requests_to(path) {
        let seq = r.json()["data"]["seq"].as_i64().expect("data.seq");
        first_arrival.entry(seq).or_insert(r.at);
    }
    let mut lat: Vec<Duration> = sent
        .iter()
        .enumerate()
        .map(|(seq, t)| {
            let at = first_arrival
                .get(&(seq as i64))
                .unwrap_or_else(|| panic!("paced publish {seq} never arrived at {path}"));
            at.saturating_duration_since(*t)
        })
        .collect();
    lat.sort();
    lat
}

// ------------------------------------------------------------------------------------------------
// 1. Secret rotation.
// ------------------------------------------------------------------------------------------------

/// Before rotation one secret signs. `rotate_secret` with a grace period: the sender's
/// `webhook-signature` carries two `v1,` entries, and a receiver verifying with the old secret
/// alone accepts, as does one with the new secret alone; `X-Beema-Signature` is the new
/// secret's at once. When the grace period has passed (set into the past, then a rotation with
/// grace 0) only the newest secret verifies.
#[tokio::test]
async fn rotation_both_secrets_verify_during_grace_then_only_the_new_one() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let s1 = "seeds-style-plain-secret-1";
    let (id, _) = db
        .register(&Webhook::new("rot", "acme", "*", &rx.url("/rot")).secret(Some(s1)))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    let publish = |n: i64| {
        let db = &db;
        async move {
            db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme", "n": n}}))
                .await
        }
    };
    let t = Duration::from_secs(20);

    // Before rotation: S1 alone, one entry.
    publish(1).await;
    let r1 = wait_requests(&rx, "/rot", 1, t).await.remove(0);
    r1.verify(s1).unwrap();
    assert_eq!(standard_entries(&r1).len(), 1, "{:?}", r1.headers);

    // Rotate to a generated secret with a one-hour grace period.
    let s2: String = db
        .one(&format!(
            "SELECT hooks.rotate_secret({id}, NULL, interval '1 hour')"
        ))
        .await;
    assert!(
        s2.starts_with("whsec_") && s2 != s1,
        "generated secret: {s2}"
    );
    publish(2).await;
    let r2 = wait_requests(&rx, "/rot", 2, t).await.remove(1);
    assert_eq!(r2.json()["data"]["n"], 2);
    assert_eq!(
        standard_entries(&r2).len(),
        2,
        "both secrets sign during the grace period: {:?}",
        r2.header("webhook-signature")
    );
    assert!(
        standard_accepts(&r2, s1),
        "a receiver still holding the OLD secret must accept during the grace period: {:?}",
        r2.headers
    );
    assert!(
        standard_accepts(&r2, &s2),
        "a receiver already holding the NEW secret must accept: {:?}",
        r2.headers
    );
    assert!(
        beema_accepts(&r2, &s2) && !beema_accepts(&r2, s1),
        "X-Beema-Signature uses the new secret at once: {:?}",
        r2.header("x-beema-signature")
    );
    r2.verify(&s2).unwrap();
    assert!(
        !standard_accepts(&r2, "some-other-secret"),
        "an unrelated secret must not verify"
    );

    // The grace period ends: only S2 signs.
    db.client()
        .batch_execute(&format!(
            "UPDATE hooks.webhooks SET previous_secret_expires_at = now() - interval '1 second'
              WHERE webhook_id = {id}"
        ))
        .await
        .unwrap();
    publish(3).await;
    let r3 = wait_requests(&rx, "/rot", 3, t).await.remove(2);
    assert_eq!(r3.json()["data"]["n"], 3);
    assert_eq!(standard_entries(&r3).len(), 1, "{:?}", r3.headers);
    assert!(
        !standard_accepts(&r3, s1),
        "the old secret must no longer verify after the grace period"
    );
    r3.verify(&s2).unwrap();

    // A rotation with grace 0: the replaced secret stops signing at once.
    let s3 = "third-secret-given-explicitly";
    let got: String = db
        .one(&format!(
            "SELECT hooks.rotate_secret({id}, '{s3}', interval '0')"
        ))
        .await;
    assert_eq!(got, s3);
    publish(4).await;
    let r4 = wait_requests(&rx, "/rot", 4, t).await.remove(3);
    assert_eq!(r4.json()["data"]["n"], 4);
    assert_eq!(standard_entries(&r4).len(), 1, "{:?}", r4.headers);
    assert!(!standard_accepts(&r4, &s2) && !standard_accepts(&r4, s1));
    r4.verify(s3).unwrap();

    // Every delivery succeeded, each sent once.
    wait_until_sql(
        db.client(),
        "SELECT count(*) FILTER (WHERE status = 'success') = 4 FROM hooks.deliveries",
        t,
    )
    .await;
    assert_eq!(rx.requests_to("/rot").len(), 4);
    drop(sender);
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------------
// 2. Circuit breaker.
// ------------------------------------------------------------------------------------------------

/// (state, consecutive_failures, paused_until - last_failure_at in ms, paused_until as text)
/// of a webhook.
async fn breaker_state(db: &TestDb, id: i64) -> (String, i32, Option<f64>, Option<String>) {
    let r = db
        .client()
        .query_one(
            "SELECT h.state, h.consecutive_failures,
                    (extract(epoch FROM w.paused_until - w.last_failure_at) * 1000)::float8,
                    w.paused_until::text
               FROM hooks.webhook_health h JOIN hooks.webhooks w USING (webhook_id)
              WHERE webhook_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// (statuses, sum of attempt_number) of a webhook's deliveries.
async fn attempts_of(db: &TestDb, id: i64) -> (Vec<String>, i64) {
    let rows = db
        .client()
        .query(
            "SELECT status, attempt_number FROM hooks.deliveries WHERE webhook_id = $1
              ORDER BY delivery_id",
            &[&id],
        )
        .await
        .unwrap();
    let statuses = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let sum = rows.iter().map(|r| r.get::<_, i32>(1) as i64).sum();
    (statuses, sum)
}

/// Threshold 3, cool-down 1.5 s (set with ALTER DATABASE before the sender connects). An
/// endpoint that answers 500 for about five seconds, far longer than its retry schedule
/// (maxAttempts 4, backoff 100 ms: without a breaker every delivery would be `failed` within a
/// second): the webhook is paused (webhook_health says so), its deliveries keep their attempts
/// while it is, one probe goes out when the cool-down ends and, failing, pauses it again for
/// twice as long; once the endpoint recovers the next probe closes the breaker and every delivery
/// arrives. Meanwhile a healthy webhook's deliveries arrive promptly throughout.
#[tokio::test]
async fn breaker_pauses_keeps_attempts_probes_and_resumes_while_healthy_flows() {
    const FLAKY_EVENTS: i64 = 3;
    let db = TestDb::new().await;
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET hooks.breaker_failure_threshold = 3;
             ALTER DATABASE {0} SET hooks.breaker_cooldown_ms = 1500;
             ALTER DATABASE {0} SET hooks.breaker_max_cooldown_ms = 10000;",
            db.name()
        ))
        .await
        .unwrap();
    let rx = Receiver::start().await;
    rx.always("/flaky", Reply::status(500));
    let (flaky, flaky_secret) = db
        .register(&Webhook::new("flaky", "acme", "flaky/*", &rx.url("/flaky")).retry(4, 100))
        .await;
    let (_, healthy_secret) = db
        .register(&Webhook::new(
            "healthy",
            "acme",
            "healthy/*",
            &rx.url("/healthy"),
        ))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;

    // The healthy webhook gets an event every 150 ms for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let healthy_pub = spawn_paced_publisher(
        db.connect().await,
        "healthy/tick",
        Duration::from_millis(150),
        stop.clone(),
    );

    let outage_start = Instant::now();
    db.publish_series("acme", "flaky/item", FLAKY_EVENTS).await;

    // The breaker opens.
    wait_until_sql(
        db.client(),
        &format!("SELECT state = 'paused' FROM hooks.webhook_health WHERE webhook_id = {flaky}"),
        Duration::from_secs(10),
    )
    .await;
    let (_, failures1, pause1_ms, paused_until1) = breaker_state(&db, flaky).await;
    assert!(failures1 >= 3, "paused at {failures1} consecutive failures");
    let pause1_ms = pause1_ms.expect("paused_until and last_failure_at set");
    assert!(
        pause1_ms >= 1499.0,
        "first pause {pause1_ms} ms, expected the 1500 ms cool-down"
    );
    // Let anything already in flight land, then watch: nothing is sent to it and no attempt is
    // spent while it stays paused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_before = rx.requests_to("/flaky").len();
    let (statuses, attempts_before) = attempts_of(&db, flaky).await;
    assert!(
        statuses.iter().all(|s| s == "retrying"),
        "paused deliveries wait as retrying: {statuses:?}"
    );
    let mut samples = 0;
    loop {
        // The same pause, with at least 150 ms of it left (so that the probe at its end cannot
        // land between this check and the counts below)?
        let r = db
            .client()
            .query_one(
                "SELECT paused_until::text, paused_until > clock_timestamp() + interval '150 ms',
                        $1::text::timestamptz > clock_timestamp()
                   FROM hooks.webhooks WHERE webhook_id = $2",
                &[&paused_until1, &flaky],
            )
            .await
            .unwrap();
        let (until, time_left, first_pause_running): (Option<String>, Option<bool>, bool) =
            (r.get(0), r.get(1), r.get(2));
        if until != paused_until1 {
            assert!(
                !first_pause_running,
                "the webhook failed again during its pause: something was sent to it \
                 ({} requests, {sent_before} when the pause began)",
                rx.requests_to("/flaky").len()
            );
            break;
        }
        if time_left != Some(true) {
            break;
        }
        let (statuses, attempts) = attempts_of(&db, flaky).await;
        assert_eq!(
            attempts, attempts_before,
            "attempt numbers must not climb while paused ({statuses:?})"
        );
        assert!(
            !statuses.iter().any(|s| s == "failed" || s == "in_flight"),
            "{statuses:?}"
        );
        assert_eq!(
            rx.requests_to("/flaky").len(),
            sent_before,
            "nothing may be sent to a paused webhook"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples >= 3, "the pause was observed only {samples} times");

    // Cool-down over: exactly one probe, which fails, and the pause doubles.
    wait_until(
        "the probe fails and the breaker pauses again",
        Duration::from_secs(10),
        || async {
            let (state, _, _, until) = breaker_state(&db, flaky).await;
            state == "paused" && until != paused_until1
        },
    )
    .await;
    let (_, failures2, pause2_ms, _) = breaker_state(&db, flaky).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rx.requests_to("/flaky").len(),
        sent_before + 1,
        "half-open: exactly one probe"
    );
    assert_eq!(failures2, failures1 + 1);
    let pause2_ms = pause2_ms.unwrap();
    assert!(
        (pause2_ms - 2.0 * pause1_ms).abs() < 1.0,
        "the cool-down doubles: {pause1_ms} ms then {pause2_ms} ms"
    );
    let (statuses, attempts_after_probe) = attempts_of(&db, flaky).await;
    assert_eq!(
        attempts_after_probe,
        attempts_before + 1,
        "only the probe spent an attempt: {statuses:?}"
    );
    assert!(!statuses.iter().any(|s| s == "failed"), "{statuses:?}");

    // The endpoint recovers during the second pause; the next probe closes the breaker.
    rx.always("/flaky", Reply::ok());
    let outage = outage_start.elapsed();
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'success') = {FLAKY_EVENTS}
               FROM hooks.deliveries WHERE webhook_id = {flaky}"
        ),
        Duration::from_secs(20),
    )
    .await;
    let (state, failures3, _, _) = breaker_state(&db, flaky).await;
    assert_eq!((state.as_str(), failures3), ("active", 0));
    let (_, attempts_final) = attempts_of(&db, flaky).await;
    let flaky_reqs = rx.requests_to("/flaky");
    assert_eq!(
        attempts_final as usize,
        flaky_reqs.len(),
        "every attempt was one request"
    );
    // Without the breaker, maxAttempts 4 with backoff 100 ms (x1.2 jitter at most) spends every
    // attempt within 1.2 x (100 + 200 + 400) = 840 ms of the first failure.
    assert!(
        outage > Duration::from_millis(1200),
        "the outage ({outage:?}) must outlast the no-breaker retry schedule"
    );
    // Each delivery arrived successfully with a valid signature.
    let ok_ids: HashSet<String> = flaky_reqs.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ok_ids.len(), FLAKY_EVENTS as usize);
    for r in &flaky_reqs {
        r.verify(&flaky_secret).unwrap();
    }

    // The healthy webhook was never held up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = healthy_pub.await.unwrap();
    let lat = paced_latencies(&rx, "/healthy", &sent, Duration::from_secs(10)).await;
    println!(
        "breaker: outage {outage:?}; healthy webhook: {} deliveries, p50 {:?}, p95 {:?}, max {:?}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().unwrap()
    );
    assert!(lat.len() >= 20, "only {} healthy publishes", lat.len());
    assert!(
        *lat.last().unwrap() < Duration::from_millis(1500),
        "a healthy delivery took {:?} while another webhook was failing or paused",
        lat.last().unwrap()
    );
    for r in rx.requests_to("/healthy") {
        r.verify(&healthy_secret).unwrap();
    }
    drop(sender);
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------------
// 3. A hanging endpoint and a healthy one.
// ------------------------------------------------------------------------------------------------

/// One endpoint hangs past its 2 s timeout for `hanging` deliveries; another answers at once.
/// Deliveries to the healthy one, published every 100 ms for 3.5 s while the hanging ones are
/// queued and in flight, must each arrive within 1 s.
async fn hanging_endpoint_vs_healthy(concurrency: u32, hanging: i64) {
    let db = TestDb::new().await;
    // At most half of the sender's slots per webhook (read by the sender's sessions at connect).
    db.set_default("hooks.max_in_flight_per_webhook", concurrency / 2)
        .await;
    let rx = Receiver::start().await;
    rx.always("/hang", Reply::ok().delay(Duration::from_secs(30)));
    let (hang, _) = db
        .register(
            &Webhook::new("hang", "acme", "hang/*", &rx.url("/hang"))
                .retry(1, 100)
                .timeout_ms(2000),
        )
        .await;
    let (_, fast_secret) = db
        .register(&Webhook::new("fast", "acme", "fast/*", &rx.url("/fast")))
        .await;
    let sender = Sender::start(
        db.url(),
        SenderOptions {
            concurrency,
            ..SenderOptions::default()
        },
    );
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT EXISTS (SELECT 1 FROM hooks.senders WHERE sender_id = '{}')",
            sender.sender_id
        ),
        Duration::from_secs(15),
    )
    .await;

    db.client()
        .execute(
            "SELECT count(hooks.publish(jsonb_build_object('event', 'hang/item',
                 'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
               FROM generate_series(1, $1::bigint) g",
            &[&hanging],
        )
        .await
        .unwrap();
    // The hanging requests are in flight.
    wait_until(
        "hanging requests in flight",
        Duration::from_secs(10),
        || async { !rx.requests_to("/hang").is_empty() },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let fast_pub = spawn_paced_publisher(
        db.connect().await,
        "fast/tick",
        Duration::from_millis(100),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = fast_pub.await.unwrap();
    let lat = paced_latencies(&rx, "/fast", &sent, Duration::from_secs(15)).await;
    let timeouts = db
        .count(&format!(
            "hooks.attempts WHERE webhook_id = {hang} AND error_message LIKE 'timeout after 2000 ms%'"
        ))
        .await;
    println!(
        "hanging endpoint ({hanging} deliveries, {concurrency} sender slots): {} requests received, \
         {timeouts} timeouts recorded; healthy: {} deliveries, p50 {:?}, p95 {:?}, max {:?}",
        rx.requests_to("/hang").len(),
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().unwrap()
    );
    assert!(
        timeouts >= 1,
        "the hanging endpoint's timeouts were recorded"
    );
    assert!(lat.len() >= 10);
    assert!(
        *lat.last().unwrap() < Duration::from_millis(1000),
        "a healthy delivery took {:?} while another endpoint hung (sorted latencies: {lat:?})",
        lat.last().unwrap()
    );
    for r in rx.requests_to("/fast") {
        r.verify(&fast_secret).unwrap();
    }
    drop(sender);
    db.cleanup().await;
}

/// The hanging endpoint's deliveries take half of the sender's slots.
#[tokio::test]
async fn a_hanging_endpoint_does_not_slow_a_healthy_one() {
    hanging_endpoint_vs_healthy(16, 8).await;
}

/// The hanging endpoint's deliveries outnumber the sender's slots (a burst to an endpoint that
/// hangs): hooks.max_in_flight_per_webhook keeps half of the slots free for the others.
#[tokio::test]
async fn a_hanging_endpoint_with_more_deliveries_than_slots_does_not_slow_a_healthy_one() {
    hanging_endpoint_vs_healthy(16, 32).await;
}

/// One webhook's backlog, with the in-flight cap below the senders' slots: the two senders
/// together never have more than the cap in flight against it, every delivery arrives once,
/// and the backlog drains without waiting for polls (the senders poll every 60 s here:
/// hooks.complete wakes them whenever it frees a webhook that was at its cap).
#[tokio::test]
async fn a_capped_webhook_drains_its_backlog_at_the_cap_without_waiting_for_polls() {
    const N: usize = 400;
    const CAP: usize = 4;
    let db = TestDb::new().await;
    db.set_default("hooks.max_in_flight_per_webhook", CAP).await;
    let rx = Receiver::start().await;
    rx.always("/one", Reply::ok().delay(Duration::from_millis(20)));
    let (id, secret) = db
        .register(&Webhook::new("one", "acme", "one/*", &rx.url("/one")))
        .await;
    db.client()
        .execute(
            "SELECT count(hooks.publish(jsonb_build_object('event', 'one/item',
                 'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
               FROM generate_series(1, $1::bigint) g",
            &[&(N as i64)],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let options = || SenderOptions {
        concurrency: 16,
        poll_interval_ms: 60_000,
        ..SenderOptions::default()
    };
    let a = Sender::start(db.url(), options());
    let b = Sender::start(db.url(), options());
    let got = wait_requests(&rx, "/one", N, Duration::from_secs(50)).await;
    let took = started.elapsed();
    println!(
        "{N} deliveries to one webhook capped at {CAP}, 20 ms each, 2 senders x 16 slots: \
         drained in {took:?}, at most {} at once",
        rx.max_concurrent("/one")
    );
    assert_eq!(got.len(), N, "every delivery arrived");
    assert!(
        rx.max_concurrent("/one") <= CAP,
        "{} requests to one webhook at once, over the cap of {CAP}",
        rx.max_concurrent("/one")
    );
    let ids: HashSet<String> = got.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), N, "each delivery was sent once");
    for r in &got {
        r.verify(&secret).unwrap();
    }
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT count(*) = {N} FROM hooks.deliveries WHERE webhook_id = {id} AND status = 'success'"
        ),
        Duration::from_secs(10),
    )
    .await;
    drop((a, b));
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------------
// 4. Retention under load.
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
struct OpLog {
    /// (start, latency) of each successful operation.
    ok: Vec<(Instant, Duration)>,
    /// rows claimed, per successful claim (claimer only)
    claimed: Vec<(Instant, usize)>,
    errors: Vec<String>,
}

/// 100,000 finished deliveries (and their attempts) last changed 40 days ago, plus rows that
/// must stay. `CALL hooks.purge('30 days', 5000)` runs (committing each batch, visibly) while
/// two connections publish and one claims and completes in a loop: purge deletes exactly the
/// old finished rows and the events they leave empty, keeps everything else, and publish and
/// claim keep succeeding throughout, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_exactly_old_finished_rows_while_publish_and_claim_run() {
    const OLD_EVENTS: i64 = 10_000;
    const WEBHOOKS: i64 = 10;
    const OLD: i64 = OLD_EVENTS * WEBHOOKS; // 100,000 old finished deliveries
    let db = TestDb::new().await;
    let seeded = Instant::now();
    db.client()
        .batch_execute(&format!(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
             SELECT 'acme', 'old' || i, 'old/x', 'http://127.0.0.1:9/old' || i, 'secret-old-' || i
               FROM generate_series(1, {WEBHOOKS}) i;
             INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
             VALUES ('acme', 'live', 'live/*', 'http://127.0.0.1:9/live', 'secret-live');
             -- the old history: 10,000 events x 10 webhooks, finished 40 days ago
             INSERT INTO hooks.events (tenant_id, event_type, event_key, body, created_at)
             SELECT 'acme', 'old/x', 'old-' || i, '{{}}', now() - interval '40 days'
               FROM generate_series(1, {OLD_EVENTS}) i;
             INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type, status,
                                           attempt_number, created_at, updated_at)
             SELECT w.webhook_id, e.event_id, 'acme', 'old/x',
                    (ARRAY['success', 'failed', 'cancelled'])[1 + (e.event_id % 3)::int], 1,
                    now() - interval '40 days', now() - interval '40 days'
               FROM hooks.events e CROSS JOIN hooks.webhooks w
              WHERE e.event_key LIKE 'old-%' AND w.webhook_name LIKE 'old%';
             INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, outcome, created_at)
             SELECT delivery_id, webhook_id, tenant_id, 1, 'success', now() - interval '40 days'
               FROM hooks.deliveries;
             -- must stay: old but unfinished; old event finished recently; recent finished;
             -- a recent event without deliveries. Must go: an old event without deliveries.
             INSERT INTO hooks.events (tenant_id, event_type, event_key, body, created_at) VALUES
                 ('acme', 'old/x', 'keep-old-retrying', '{{}}', now() - interval '40 days'),
                 ('acme', 'old/x', 'keep-old-pending', '{{}}', now() - interval '40 days'),
                 ('acme', 'old/x', 'keep-old-finished-recently', '{{}}', now() - interval '40 days'),
                 ('acme', 'old/x', 'keep-recent-success', '{{}}', now() - interval '1 hour'),
                 ('acme', 'old/x', 'keep-29-days', '{{}}', now() - interval '29 days'),
                 ('acme', 'old/x', 'keep-recent-empty', '{{}}', now()),
                 ('acme', 'old/x', 'drop-old-empty', '{{}}', now() - interval '40 days');
             INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type, status,
                                           attempt_number, next_attempt_at, created_at, updated_at)
             SELECT (SELECT min(webhook_id) FROM hooks.webhooks), e.event_id, 'acme', 'old/x', v.status, 1,
                    now() + interval '1 day', e.created_at, now() - v.age
               FROM hooks.events e
               JOIN (VALUES ('keep-old-retrying', 'retrying', interval '40 days'),
                            ('keep-old-pending', 'pending', interval '40 days'),
                            ('keep-old-finished-recently', 'failed', interval '1 day'),
                            ('keep-recent-success', 'success', interval '1 hour'),
                            ('keep-29-days', 'cancelled', interval '29 days'))
                    AS v(key, status, age) ON v.key = e.event_key;
             INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, outcome)
             SELECT d.delivery_id, d.webhook_id, d.tenant_id, 1, 'failure'
               FROM hooks.deliveries d JOIN hooks.events e USING (event_id)
              WHERE e.event_key LIKE 'keep-%';
             ANALYZE hooks.events, hooks.outbox, hooks.queue, hooks.outcomes, hooks.attempt_log;
             -- what must survive, by id
             CREATE TABLE public.must_stay AS
             SELECT delivery_id FROM hooks.deliveries
              WHERE NOT (status IN ('success', 'failed', 'cancelled') AND updated_at < now() - interval '30 days');
             CREATE TABLE public.events_must_stay AS
             SELECT event_id FROM hooks.events WHERE event_key LIKE 'keep-%';"
        ))
        .await
        .unwrap();
    let old_finished_sql = "hooks.deliveries WHERE status IN ('success', 'failed', 'cancelled')
                              AND updated_at < now() - interval '30 days'";
    assert_eq!(db.count(old_finished_sql).await, OLD);
    let deliveries_before = db.count("hooks.deliveries").await;
    let attempts_before = db.count("hooks.attempts").await;
    let events_before = db.count("hooks.events").await;
    let must_stay = db.count("public.must_stay").await;
    assert_eq!(must_stay, 5);
    println!(
        "retention: seeded {deliveries_before} deliveries, {attempts_before} attempts, {events_before} events in {:?}",
        seeded.elapsed()
    );

    // The concurrent workload: two publishers, one claimer/completer, one watcher.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let logs: Vec<Arc<Mutex<OpLog>>> = (0..3)
        .map(|_| Arc::new(Mutex::new(OpLog::default())))
        .collect();
    for (p, log) in logs.iter().take(2).enumerate() {
        let client = db.connect().await;
        let stop = stop.clone();
        let log = log.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let t = Instant::now();
                let r = client
                    .execute(
                        "SELECT hooks.publish(jsonb_build_object('event', 'live/x',
                             'data', jsonb_build_object('tenantId', 'acme', 'p', $1::int, 'n', $2::bigint)))",
                        &[&(p as i32), &n],
                    )
                    .await;
                {
                    let mut l = log.lock().unwrap();
                    match r {
                        Ok(_) => l.ok.push((t, t.elapsed())),
                        Err(e) => l.errors.push(format!("publish: {e:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    {
        let client = db.connect().await;
        let stop = stop.clone();
        let log = logs[2].clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = async {
                    let rows = client
                        .query(
                            "SELECT delivery_id, attempt_number FROM hooks.claim('retention-claimer', 50)",
                            &[],
                        )
                        .await?;
                    if !rows.is_empty() {
                        let results: Vec<_> = rows
                            .iter()
                            .map(|r| {
                                json!({"delivery_id": r.get::<_, i64>(0),
                                       "attempt_number": r.get::<_, i32>(1),
                                       "status_code": 200, "duration_ms": 1})
                            })
                            .collect();
                        let applied: i32 = client
                            .query_one(
                                "SELECT hooks.complete('retention-claimer', $1::text::jsonb)",
                                &[&serde_json::Value::Array(results).to_string()],
                            )
                            .await?
                            .get(0);
                        assert_eq!(applied as usize, rows.len(), "every claimed row completed");
                    }
                    Ok::<usize, tokio_postgres::Error>(rows.len())
                }
                .await;
                {
                    let mut l = log.lock().unwrap();
                    match r {
                        Ok(n) => {
                            l.ok.push((t, t.elapsed()));
                            l.claimed.push((t, n));
                        }
                        Err(e) => l.errors.push(format!("claim/complete: {e:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    // Warm up, so the workload is steady when the purge starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let watcher = {
        let client = db.connect().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM hooks.deliveries
                          WHERE status IN ('success', 'failed', 'cancelled')
                            AND updated_at < now() - interval '30 days'",
                        &[],
                    )
                    .await
                    .expect("watcher")
                    .get(0);
                seen.push(n);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };

    let purger = db.connect().await;
    let purge_start = Instant::now();
    let msgs = purger
        .simple_query("CALL hooks.purge('30 days', 5000)")
        .await
        .expect("CALL hooks.purge");
    let purge_end = Instant::now();
    let deleted: i64 = msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get("deleted").map(|s| s.parse().unwrap()),
            _ => None,
        })
        .expect("purge returns deleted");
    // Keep the workload running a little past the purge, then stop it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    let seen = watcher.await.expect("watcher");
    let purge_time = purge_end - purge_start;

    // The workload kept working during the purge, without error.
    let in_window = |t: &Instant| *t >= purge_start && *t <= purge_end;
    let mut publish_lat: Vec<Duration> = Vec::new();
    let mut publishes_total = 0usize;
    for log in logs.iter().take(2) {
        let l = log.lock().unwrap();
        assert!(l.errors.is_empty(), "publish errors: {:?}", l.errors);
        publishes_total += l.ok.len();
        publish_lat.extend(l.ok.iter().filter(|(t, _)| in_window(t)).map(|(_, d)| *d));
    }
    publish_lat.sort();
    let (claims_in_window, claimed_in_window, claim_max) = {
        let l = logs[2].lock().unwrap();
        assert!(l.errors.is_empty(), "claim errors: {:?}", l.errors);
        let claims: Vec<&(Instant, Duration)> = l.ok.iter().filter(|(t, _)| in_window(t)).collect();
        let claimed: usize = l
            .claimed
            .iter()
            .filter(|(t, _)| in_window(t))
            .map(|(_, n)| n)
            .sum();
        let max = claims.iter().map(|(_, d)| *d).max().unwrap_or_default();
        (claims.len(), claimed, max)
    };
    let intermediate: Vec<&i64> = seen.iter().filter(|&&n| n > 0 && n < OLD).collect();
    println!(
        "retention: purge of {OLD} old deliveries took {purge_time:?}, deleted {deleted}; during it: \
         {} publishes (p50 {:?}, max {:?}), {claims_in_window} claim+complete rounds delivering \
         {claimed_in_window} rows (max {claim_max:?}); the watcher saw {} intermediate counts of {} samples",
        publish_lat.len(),
        percentile(&publish_lat, 0.5),
        publish_lat.last().copied().unwrap_or_default(),
        intermediate.len(),
        seen.len()
    );
    assert!(
        !publish_lat.is_empty(),
        "no publish completed during the purge"
    );
    assert!(
        claims_in_window > 0 && claimed_in_window > 0,
        "no claim delivered during the purge"
    );
    assert!(
        *publish_lat.last().unwrap() < Duration::from_secs(3),
        "a publish waited {:?} during the purge",
        publish_lat.last().unwrap()
    );
    assert!(
        !intermediate.is_empty(),
        "purge commits each batch: another session should see the old rows shrink in steps (saw {seen:?})"
    );

    // Exactly the old finished rows (and the old events they left empty) are gone.
    assert_eq!(
        db.count(old_finished_sql).await,
        0,
        "old finished deliveries left"
    );
    assert_eq!(
        deleted,
        OLD + OLD_EVENTS + 1,
        "deleted = 100,000 deliveries + 10,000 events emptied + 1 old empty event"
    );
    assert_eq!(
        db.count("public.must_stay s WHERE NOT EXISTS (SELECT 1 FROM hooks.deliveries d WHERE d.delivery_id = s.delivery_id)")
            .await,
        0,
        "a delivery that was not old and finished was purged"
    );
    assert_eq!(
        db.count("public.events_must_stay s WHERE NOT EXISTS (SELECT 1 FROM hooks.events e WHERE e.event_id = s.event_id)")
            .await,
        0,
        "an event that still has deliveries, or is recent, was purged"
    );
    assert_eq!(
        db.count("hooks.events WHERE event_key = 'drop-old-empty'")
            .await,
        0
    );
    assert_eq!(
        db.count("hooks.events WHERE event_key LIKE 'old-%'").await,
        0
    );
    assert_eq!(
        db.count("hooks.attempts a WHERE NOT EXISTS (SELECT 1 FROM hooks.deliveries d WHERE d.delivery_id = a.delivery_id)")
            .await,
        0,
        "attempts of purged deliveries are gone with them"
    );
    // Everything the workload wrote is still there.
    let live_deliveries = db
        .count("hooks.deliveries WHERE event_type = 'live/x'")
        .await;
    let live_events = db.count("hooks.events WHERE event_type = 'live/x'").await;
    assert_eq!(live_deliveries as usize, publishes_total);
    assert_eq!(live_events as usize, publishes_total);
    let live_attempts = db
        .count("hooks.attempts a JOIN hooks.deliveries d USING (delivery_id) WHERE d.event_type = 'live/x'")
        .await;
    let claimed_total: usize = logs[2].lock().unwrap().claimed.iter().map(|(_, n)| n).sum();
    assert_eq!(
        live_attempts as usize, claimed_total,
        "every completed attempt is kept"
    );
    assert_eq!(
        db.count("hooks.deliveries").await,
        deliveries_before - OLD + publishes_total as i64
    );
    assert_eq!(
        db.count("hooks.attempts").await,
        attempts_before - OLD + claimed_total as i64
    );
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------------
// 5. The sender as a member of hooks_sender.
// ------------------------------------------------------------------------------------------------

/// A cluster-wide login role, dropped when this goes out of scope (also on panic).
struct TempRole {
    name: String,
}

impl TempRole {
    async fn create(admin: &Client, grant: &str, password: &str) -> TempRole {
        sweep_leftover_roles(admin).await;
        let name = unique_name("beema_e2e_role");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {grant}"
            ))
            .await
            .unwrap_or_else(|e| panic!("CREATE ROLE {name}: {e:?}"));
        TempRole { name }
    }
}

async fn drop_role(admin: &Client, name: &str) {
    // Its sessions (a sender being killed) may linger for a moment; DROP ROLE does not mind them,
    // but retry in case the sender's last statements still hold a catalog lock.
    for _ in 0..20 {
        match admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
            .await
        {
            Ok(()) => return,
            Err(e) => {
                eprintln!("warning: DROP ROLE {name}: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Drops `beema_e2e_role_<pid>_...` roles of test processes that no longer run.
async fn sweep_leftover_roles(admin: &Client) {
    let Ok(rows) = admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'beema\\_e2e\\_role\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(3).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                drop_role(admin, &name).await;
            }
        }
    }
}

impl Drop for TempRole {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let fut = async {
                    if let Ok((admin, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                        let driver = tokio::spawn(conn);
                        drop_role(&admin, &name).await;
                        drop(admin);
                        let _ = driver.await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), fut).await;
            });
        })
        .join();
    }
}

/// `url` with its user and password replaced.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).expect("a postgres:// URL");
    let rest = &url[scheme_end..];
    let host_start = rest
        .find('/')
        .map(|slash| rest[..slash].rfind('@').map(|a| a + 1).unwrap_or(0))
        .unwrap_or_else(|| rest.rfind('@').map(|a| a + 1).unwrap_or(0));
    format!(
        "{}{user}:{password}@{}",
        &url[..scheme_end],
        &rest[host_start..]
    )
}

/// A login role that is only a member of `hooks_sender` runs the real sender, which delivers
/// (signed with the secret it cannot read); every session of the sender is that role; and that
/// role gets 42501 for `SELECT secret FROM hooks.webhooks` and for the delivery tables.
#[tokio::test]
async fn sender_runs_as_a_hooks_sender_member_that_cannot_read_secrets() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let (_, secret) = db
        .register(&Webhook::new("w", "acme", "*", &rx.url("/w")))
        .await;
    let admin = connect_as(&admin_url()).await;
    let password = format!("pw{}", std::process::id());
    let role = TempRole::create(&admin, "hooks_sender", &password).await;
    let role_url = with_user(db.url(), &role.name, &password);

    let mut sender = Sender::start(&role_url, SenderOptions::default());
    db.publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    let reqs = wait_requests(&rx, "/w", 1, Duration::from_secs(20)).await;
    reqs[0].verify(&secret).unwrap();
    wait_until_sql(
        db.client(),
        "SELECT status = 'success' FROM hooks.deliveries",
        Duration::from_secs(10),
    )
    .await;
    let recorded_by: String = db.one("SELECT sender_id FROM hooks.attempts").await;
    assert_eq!(recorded_by, sender.sender_id);
    let users: Vec<String> = db
        .client()
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'beema-hooks-sender'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, vec![role.name.clone()], "the sender's sessions");

    let as_role = connect_as(&role_url).await;
    for sql in [
        "SELECT secret FROM hooks.webhooks",
        "SELECT count(*) FROM hooks.webhooks",
        "SELECT count(*) FROM hooks.deliveries",
        "SELECT count(*) FROM hooks.delivery_log",
        "SELECT hooks.rotate_secret(1)",
    ] {
        assert_eq!(
            sqlstate_of(&as_role, sql).await,
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql} as a hooks_sender member"
        );
    }
    drop(as_role);
    sender.terminate();
    assert!(
        sender.wait_exit(Duration::from_secs(15)).await.is_some(),
        "the sender exits on SIGTERM"
    );
    drop(sender);
    db.cleanup().await;
    let name = role.name.clone();
    drop(role);
    let left: i64 = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "role {name} dropped");
}

// ------------------------------------------------------------------------------------------------
// 6. hooks.test_webhook.
// ------------------------------------------------------------------------------------------------

/// `hooks.test_webhook` goes through the normal path: the sender delivers a signed
/// `webhook.test` event to that webhook (whatever its pattern), and to no other webhook of the
/// tenant, even a catch-all one.
#[tokio::test]
async fn test_webhook_sends_a_signed_webhook_test_event_to_that_webhook_only() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    let (id, secret) = db
        .register(&Webhook::new("target", "acme", "policy/bound", &rx.url("/target")).secret(None))
        .await;
    db.register(&Webhook::new("catch-all", "acme", "*", &rx.url("/other")))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    let delivery_id: i64 = db.one(&format!("SELECT hooks.test_webhook({id})")).await;
    let r = wait_requests(&rx, "/target", 1, Duration::from_secs(20))
        .await
        .remove(0);
    r.verify(&secret).unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(r.header("x-beema-event").as_deref(), Some("webhook.test"));
    let body = r.json();
    assert_eq!(body["event"], "webhook.test");
    assert_eq!(body["data"]["tenantId"], "acme");
    assert_eq!(body["data"]["webhookId"], id);
    assert_eq!(body["data"]["webhookName"], "target");
    let uuid: String = db
        .one(&format!(
            "SELECT delivery_uuid::text FROM hooks.deliveries WHERE delivery_id = {delivery_id}"
        ))
        .await;
    assert_eq!(r.webhook_id(), uuid);
    assert_eq!(r.header("x-beema-delivery").as_deref(), Some(uuid.as_str()));
    wait_until_sql(
        db.client(),
        &format!(
            "SELECT status = 'success' FROM hooks.delivery_log WHERE delivery_id = {delivery_id}"
        ),
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests_to("/target").len(), 1);
    assert!(
        rx.requests_to("/other").is_empty(),
        "the test event went to another webhook"
    );
    drop(sender);
    db.cleanup().await;
}

// ------------------------------------------------------------------------------------------------
// 7. retry_delivery and replay_event.
// ------------------------------------------------------------------------------------------------

/// A delivery that failed (500 until maxAttempts) is a dead letter; after the endpoint recovers,
/// `hooks.retry_delivery` sends it again with the SAME webhook-id (receivers dedup on it: it
/// never arrived), with a fresh attempt budget. `hooks.replay_event` then sends the event again
/// to every matching webhook, each with a NEW webhook-id (a deliberate second delivery).
#[tokio::test]
async fn retry_keeps_the_webhook_id_and_replay_gets_a_new_one() {
    let db = TestDb::new().await;
    let rx = Receiver::start().await;
    rx.always("/down", Reply::status(500));
    let (down, down_secret) = db
        .register(&Webhook::new("down", "acme", "*", &rx.url("/down")).retry(2, 50))
        .await;
    let (_, up_secret) = db
        .register(&Webhook::new("up", "acme", "policy/*", &rx.url("/up")))
        .await;
    let sender = Sender::start(db.url(), SenderOptions::default());
    let event_id = db
        .publish(&json!({"event": "policy/bound", "data": {"tenantId": "acme"}}))
        .await;
    wait_until_sql(
        db.client(),
        &format!("SELECT EXISTS (SELECT 1 FROM hooks.dead_letters WHERE webhook_id = {down})"),
        Duration::from_secs(20),
    )
    .await;
    let (delivery_id, attempts): (i64, i32) = {
        let r = db
            .client()
            .query_one(
                "SELECT delivery_id, attempts FROM hooks.dead_letters WHERE webhook_id = $1",
                &[&down],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(attempts, 2);
    let failed = wait_requests(&rx, "/down", 2, Duration::from_secs(5)).await;
    let first_id = failed[0].webhook_id();
    assert!(!first_id.is_empty());
    assert!(failed.iter().all(|r| r.webhook_id() == first_id));
    let up_first = wait_requests(&rx, "/up", 1, Duration::from_secs(10))
        .await
        .remove(0);

    // Retry: the same webhook-id, delivered now that the endpoint is back.
    rx.always("/down", Reply::ok());
    let (status, attempt): (String, i32) = {
        let r = db
            .client()
            .query_one(
                "SELECT status, attempt_number FROM hooks.retry_delivery($1)",
                &[&delivery_id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), attempt), ("pending", 0));
    let retried = wait_requests(&rx, "/down", 3, Duration::from_secs(20))
        .await
        .remove(2);
    assert_eq!(retried.webhook_id(), first_id, "retry keeps the webhook-id");
    retried.verify(&down_secret).unwrap();
    wait_until_sql(
        db.client(),
        &format!("SELECT status = 'success' AND attempt_number = 1 FROM hooks.deliveries WHERE delivery_id = {delivery_id}"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        db.count(&format!(
            "hooks.dead_letters WHERE delivery_id = {delivery_id}"
        ))
        .await,
        0
    );

    // Replay: both matching webhooks get it again, each with a new webhook-id.
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 2 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(10),
    )
    .await;
    let queued: i32 = db
        .one(&format!("SELECT hooks.replay_event({event_id})"))
        .await;
    assert_eq!(queued, 2);
    let down_replay = wait_requests(&rx, "/down", 4, Duration::from_secs(20))
        .await
        .remove(3);
    let up_replay = wait_requests(&rx, "/up", 2, Duration::from_secs(20))
        .await
        .remove(1);
    assert_ne!(
        down_replay.webhook_id(),
        first_id,
        "replay gets a new webhook-id"
    );
    assert_ne!(
        up_replay.webhook_id(),
        up_first.webhook_id(),
        "replay gets a new webhook-id"
    );
    assert_ne!(down_replay.webhook_id(), up_replay.webhook_id());
    down_replay.verify(&down_secret).unwrap();
    up_replay.verify(&up_secret).unwrap();
    assert_eq!(down_replay.body, retried.body, "the same event body");
    assert_eq!(up_replay.body, up_first.body);
    wait_until_sql(
        db.client(),
        "SELECT count(*) = 2 AND bool_and(status = 'success') FROM hooks.deliveries",
        Duration::from_secs(10),
    )
    .await;
    // The deliveries now carry the new uuids (what the delivery log shows).
    let uuids: HashSet<String> = db
        .client()
        .query("SELECT delivery_uuid::text FROM hooks.delivery_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        uuids,
        HashSet::from([down_replay.webhook_id(), up_replay.webhook_id()])
    );
    drop(sender);
    db.cleanup().await;
}
