//! Polling until a condition holds.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// Polls `cond` every 50 ms until it returns true; panics with `what` after `timeout`.
/// Returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a query returning one boolean until it is true; panics after `timeout`, printing the
/// deliveries by status to explain the state.
pub async fn wait_until_sql(client: &Client, sql: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let done: bool = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0);
        if done {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let state = client
                .query(
                    "SELECT status, count(*)::text, coalesce(max(error_message), '') FROM hooks.deliveries GROUP BY status ORDER BY status",
                    &[],
                )
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| format!("{}={} ({})", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            panic!(
                "timed out after {timeout:?} waiting for: {sql}\n  deliveries by status: {state}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
