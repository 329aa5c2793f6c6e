//! The sender's memory is bounded by bytes, not only by rows (issue 14, item 5): a claim asks
//! for no more body bytes than are left of `--max-inflight-bytes`, and a delivery larger than
//! all of it is still claimed, alone. README, "Memory".

use std::time::Duration;

use beema_hooks_e2e::chaos_helpers::{vm_hwm_kb, LoggedSender};
use beema_hooks_e2e::{wait_until, Receiver, Reply, TestDb, Webhook};

/// The sender's fixed part in the README's bound, in bytes (runtime, TLS roots, connections).
const FIXED: u64 = 48 * 1024 * 1024;

/// 10 events of 20 MB (the admin raised the payload limit in hooks.settings) and a 25 MiB
/// budget: every one is delivered intact, never more than two bodies' worth at once (the
/// budget, plus one delivery larger than what was left of it), and the sender's peak RSS stays
/// under the README's bound, FIXED + 2 x (budget + largest delivery) + concurrency x
/// max-response-bytes. Without the budget one claim of 10 rows would hold 200 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_claimed_within_the_byte_budget() {
    const N: usize = 10;
    const BODY: usize = 20_000_000;
    const BUDGET: u64 = 25 * 1024 * 1024;
    const CONCURRENCY: u64 = 16;
    const MAX_RESPONSE: u64 = 65_536;
    let db = TestDb::new().await;
    db.client()
        .execute(
            "INSERT INTO hooks.settings (name, value) VALUES ('hooks.max_payload_bytes', 67108864)",
            &[],
        )
        .await
        .expect("the admin raises the payload limit");
    let rx = Receiver::start().await;
    rx.always("/big", Reply::ok().delay(Duration::from_millis(200)));
    let (_, secret) = db
        .register(&Webhook::new("big", "acme", "big/*", &rx.url("/big")))
        .await;
    db.client()
        .execute(
            "SELECT count(hooks.publish(jsonb_build_object('event', 'big/x', 'data',
                 jsonb_build_object('tenantId', 'acme', 'n', g, 'x', repeat('y', $1)))))
               FROM generate_series(1, $2::integer) g",
            &[&(BODY as i32), &(N as i32)],
        )
        .await
        .expect("publish 10 x 20 MB");

    let sender = LoggedSender::start(
        db.url(),
        "info",
        &[
            "--max-inflight-bytes",
            &BUDGET.to_string(),
            "--concurrency",
            &CONCURRENCY.to_string(),
        ],
    );
    // the most requests the receiver saw at once
    wait_until("every large event", Duration::from_secs(180), || async {
        rx.requests_to("/big").len() >= N
    })
    .await;
    let peak = vm_hwm_kb(sender.pid()).expect("the sender's peak RSS") * 1024;
    let got = rx.requests_to("/big");
    assert_eq!(got.len(), N);
    for r in &got {
        assert!(r.body.len() > BODY, "a body of {} bytes", r.body.len());
        r.verify(&secret).expect("signed, intact");
    }
    assert!(
        rx.max_concurrent("/big") <= 2,
        "{} large requests at once: the budget holds one 20 MB body and the next only alone",
        rx.max_concurrent("/big")
    );
    let largest = got.iter().map(|r| r.body.len() as u64).max().unwrap();
    let bound = FIXED + 2 * (BUDGET + largest) + CONCURRENCY * MAX_RESPONSE;
    println!(
        "peak RSS {} MB, bound {} MB (fixed {} MB + 2 x ({} MiB budget + {} MB largest) + {} x {} B)",
        peak / 1_000_000,
        bound / 1_000_000,
        FIXED / 1_000_000,
        BUDGET >> 20,
        largest / 1_000_000,
        CONCURRENCY,
        MAX_RESPONSE
    );
    assert!(peak < bound, "peak RSS {peak} B over the bound {bound} B");
    db.cleanup().await;
}
