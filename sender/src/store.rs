//! The connections for claim, complete and release: the sender's only way into the database
//! besides LISTEN. Claims run on one connection (the session that holds this sender's "awake"
//! lock), results and releases on another, so that writing a batch of results never holds up
//! the next claim. Each connects lazily, prepares the three statements once, and is dropped
//! after a connection-level error so the next call reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tracing::{info, warn};

use crate::delivery::{AttemptResult, Delivery, DeliveryKey, CLAIM_COLUMNS, CLAIM_COLUMNS_0_2};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::tls::PgTls;

/// Longest the sender waits for one claim, complete or release round trip.
pub const DB_OP_TIMEOUT: Duration = Duration::from_secs(30);

struct Conn {
    client: Client,
    claim: Statement,
    /// How many of (sender_id, max_rows, lease, stay_awake, max_bytes) `claim` takes: 5 from
    /// extension 0.3.0, 4 (no byte budget) in 0.2.0, 3 (no stay_awake either) in 0.1.0.
    claim_params: usize,
    complete: Statement,
    release: Statement,
}

/// One row of `hooks.sender_metrics()`.
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    pub webhook_id: i64,
    pub tenant_id: String,
    pub webhook_name: String,
    pub due: i64,
    pub overdue_seconds: f64,
    pub breaker_open: bool,
    pub held: i64,
}

/// `hooks.claim` of extension 0.3.0, with a byte budget.
const CLAIM_SQL: &str =
    "hooks.claim($1::text, $2::integer, make_interval(secs => $3::float8), $4::boolean, $5::bigint)";
/// `hooks.claim` of extension 0.2.0.
const CLAIM_SQL_0_2: &str =
    "hooks.claim($1::text, $2::integer, make_interval(secs => $3::float8), $4::boolean)";
/// `hooks.claim` of extension 0.1.0, which has no `stay_awake`.
const CLAIM_SQL_0_1: &str = "hooks.claim($1::text, $2::integer, make_interval(secs => $3::float8))";

/// Which of the store's two connections a call uses.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// `hooks.claim`: must always be the same session while it lives (the "awake" lock).
    Claim,
    /// `hooks.complete` and `hooks.release`.
    Write,
}

/// Claim, complete and release over two pipelined connections.
pub struct Store {
    pg: tokio_postgres::Config,
    tls: PgTls,
    sender_id: String,
    claim_conn: Mutex<Option<Arc<Conn>>>,
    write_conn: Mutex<Option<Arc<Conn>>>,
    /// Whether the claim connection's `hooks.claim` takes `stay_awake`.
    stays_awake: AtomicBool,
    health: Arc<Health>,
    metrics: Metrics,
}

impl Store {
    /// A store that connects on first use.
    pub fn new(
        pg: tokio_postgres::Config,
        tls: PgTls,
        sender_id: String,
        health: Arc<Health>,
        metrics: Metrics,
    ) -> Self {
        Self {
            pg,
            tls,
            sender_id,
            claim_conn: Mutex::new(None),
            write_conn: Mutex::new(None),
            stays_awake: AtomicBool::new(true),
            health,
            metrics,
        }
    }

    /// Connects now if not connected. Safe to abandon midway (nothing is claimed yet).
    pub async fn ready(&self) -> Result<()> {
        self.connection(Role::Claim).await.map(|_| ())
    }

    /// Whether claims can ask to stay awake (false with an extension older than 0.2.0, where
    /// `stay_awake` is ignored).
    pub fn can_stay_awake(&self) -> bool {
        self.stays_awake.load(Ordering::Relaxed)
    }

    /// `hooks.claim(sender_id, max_rows, lease, stay_awake, max_bytes)`: leases up to `max_rows`
    /// due deliveries whose bodies add up to at most `max_bytes` (or the first one alone, when it
    /// is larger). Rows the sender cannot read are logged and left to their lease.
    pub async fn claim(
        &self,
        max_rows: u32,
        lease: Duration,
        stay_awake: bool,
        max_bytes: u64,
    ) -> Result<Vec<Delivery>> {
        let max_rows = i32::try_from(max_rows).unwrap_or(i32::MAX);
        let lease_secs = lease.as_secs_f64();
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let conn = self.connection(Role::Claim).await?;
        let params: [&(dyn ToSql + Sync); 5] = [
            &self.sender_id,
            &max_rows,
            &lease_secs,
            &stay_awake,
            &max_bytes,
        ];
        // (older extensions take fewer: no byte budget before 0.3.0, no stay_awake in 0.1.0)
        let params = &params[..conn.claim_params];
        let res = tokio::time::timeout(DB_OP_TIMEOUT, conn.client.query(&conn.claim, params)).await;
        let rows = self.observe(Role::Claim, &conn, res).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match Delivery::from_row(row) {
                Ok(d) => out.push(d),
                Err(e) => {
                    self.metrics.db_errors.inc();
                    tracing::error!(error = %e, "skipping a claimed row; it is retried when its lease expires");
                }
            }
        }
        Ok(out)
    }

    /// `hooks.sender_metrics()`: the per-webhook figures the sender exports (README,
    /// "Alerting"), on the results connection. `None` when the extension has no such function
    /// (older than 0.3.0).
    pub async fn webhook_metrics(&self) -> Result<Option<Vec<WebhookMetrics>>> {
        let conn = self.connection(Role::Write).await?;
        let res = tokio::time::timeout(
            DB_OP_TIMEOUT,
            conn.client.query(
                "select webhook_id, tenant_id, webhook_name, due, overdue_seconds, breaker_open, held
                   from hooks.sender_metrics()",
                &[],
            ),
        )
        .await;
        if let Ok(Err(e)) = &res {
            if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) {
                return Ok(None);
            }
        }
        let rows = self.observe(Role::Write, &conn, res).await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookMetrics {
                    webhook_id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                    webhook_name: r.try_get(2)?,
                    due: r.try_get(3)?,
                    overdue_seconds: r.try_get(4)?,
                    breaker_open: r.try_get(5)?,
                    held: r.try_get(6)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
            .map(Some)
            .map_err(Error::Db)
    }

    /// `hooks.complete(sender_id, results)`: returns how many results were applied.
    pub async fn complete(&self, results: &[AttemptResult]) -> Result<u64> {
        let json = serde_json::to_string(results)?;
        let conn = self.connection(Role::Write).await?;
        let res = tokio::time::timeout(
            DB_OP_TIMEOUT,
            conn.client
                .query_one(&conn.complete, &[&self.sender_id, &json]),
        )
        .await;
        let row = self.observe(Role::Write, &conn, res).await?;
        applied_count(&row)
    }

    /// `hooks.release(sender_id, deliveries)`: returns how many were released.
    pub async fn release(&self, keys: &[DeliveryKey]) -> Result<u64> {
        let json = serde_json::to_string(keys)?;
        let conn = self.connection(Role::Write).await?;
        let res = tokio::time::timeout(
            DB_OP_TIMEOUT,
            conn.client
                .query_one(&conn.release, &[&self.sender_id, &json]),
        )
        .await;
        let row = self.observe(Role::Write, &conn, res).await?;
        applied_count(&row)
    }

    /// Turns a round trip's outcome into a result, updating health and metrics, and drops the
    /// connection when it is broken.
    async fn observe<T>(
        &self,
        role: Role,
        conn: &Arc<Conn>,
        res: std::result::Result<
            std::result::Result<T, tokio_postgres::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<T> {
        let err = match res {
            Ok(Ok(v)) => {
                self.health.ok();
                return Ok(v);
            }
            Ok(Err(e)) => Error::Db(e),
            Err(_) => Error::DbTimeout(DB_OP_TIMEOUT),
        };
        self.metrics.db_errors.inc();
        self.health.failed(&err);
        let broken = match &err {
            Error::Db(e) => {
                e.as_db_error().is_none() || conn.client.is_closed() || err.is_transient()
            }
            _ => true,
        };
        if broken {
            let mut slot = self.slot(role).lock().await;
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *slot = None;
            }
        }
        Err(err)
    }

    fn slot(&self, role: Role) -> &Mutex<Option<Arc<Conn>>> {
        match role {
            Role::Claim => &self.claim_conn,
            Role::Write => &self.write_conn,
        }
    }

    async fn connection(&self, role: Role) -> Result<Arc<Conn>> {
        let mut slot = self.slot(role).lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        match self.connect(role).await {
            Ok(c) => {
                self.health.ok();
                info!(role = ?role, "database connection established");
                if matches!(role, Role::Claim) {
                    self.stays_awake
                        .store(c.claim_params >= 4, Ordering::Relaxed);
                }
                let c = Arc::new(c);
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.metrics.db_errors.inc();
                self.health.failed(&e);
                Err(e)
            }
        }
    }

    async fn connect(&self, role: Role) -> Result<Conn> {
        let work = async {
            let (client, connection) = self.pg.connect(self.tls.connector()).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    warn!(error = %crate::error::chain(&e), role = ?role, "database connection closed");
                }
            });
            let (claim, claim_params) = prepare_claim(&client, role).await?;
            let complete = client
                .prepare("select hooks.complete($1::text, $2::text::jsonb)::bigint")
                .await?;
            let release = client
                .prepare("select hooks.release($1::text, $2::text::jsonb)::bigint")
                .await?;
            Ok::<_, Error>(Conn {
                client,
                claim,
                claim_params,
                complete,
                release,
            })
        };
        tokio::time::timeout(DB_OP_TIMEOUT, work)
            .await
            .unwrap_or(Err(Error::DbTimeout(DB_OP_TIMEOUT)))
    }
}

/// Prepares the claim of the newest form the extension has: 0.3.0's (lease tokens, a byte
/// budget), 0.2.0's (no token: results are fenced by the attempt number; no budget) or 0.1.0's
/// (no token, no stay_awake). Returns it with how many parameters it takes. The extension is
/// updated before the senders, but may not be.
async fn prepare_claim(client: &Client, role: Role) -> Result<(Statement, usize)> {
    let outdated = |what: &str| {
        if matches!(role, Role::Claim) {
            warn!("beema_hooks extension {what}; run ALTER EXTENSION beema_hooks UPDATE");
        }
    };
    match client
        .prepare(&format!("select {CLAIM_COLUMNS} from {CLAIM_SQL}"))
        .await
    {
        Ok(st) => return Ok((st, 5)),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_COLUMN) => {}
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {}
        Err(e) => return Err(e.into()),
    }
    match client
        .prepare(&format!("select {CLAIM_COLUMNS_0_2} from {CLAIM_SQL_0_2}"))
        .await
    {
        Ok(st) => {
            outdated("older than 0.3.0: claims issue no lease tokens, results are fenced by attempt number, and claims take no byte budget");
            Ok((st, 4))
        }
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
            outdated("older than 0.2.0: hooks.claim has no stay_awake, not lingering after rows");
            let st = client
                .prepare(&format!("select {CLAIM_COLUMNS_0_2} from {CLAIM_SQL_0_1}"))
                .await?;
            Ok((st, 3))
        }
        Err(e) => Err(e.into()),
    }
}

fn applied_count(row: &tokio_postgres::Row) -> Result<u64> {
    let n: Option<i64> = row.try_get(0).map_err(Error::Db)?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}
