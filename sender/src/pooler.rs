//! A transaction pooler between the sender and Postgres (PgBouncer in transaction or statement
//! mode) hands one server session to its clients in turn. The sender needs a session of its
//! own: its LISTEN hears nothing once the transaction that ran it ends, and the claim
//! session's "awake" advisory lock and its prepared statements do not last (README, "Connection
//! poolers"). So it refuses to run through one instead of silently never being woken.

use tokio_postgres::{Client, Config, SimpleQueryMessage};
use tracing::warn;

use crate::error::{Error, Result};
use crate::tls::PgTls;

/// Connects twice, one connection after the other, each asking for its server process. Two
/// live connections of a client get two server sessions from Postgres itself or a session-mode
/// pool; behind a transaction pooler the second is served by the session the first has just
/// given back. Errors: `Error::Pooled` when they share it; a connection's error otherwise.
pub async fn check_not_pooled(pg: &Config, tls: &PgTls) -> Result<()> {
    let first = connect(pg, tls).await?;
    let first_pid = backend_pid(&first).await?;
    let second = connect(pg, tls).await?;
    let second_pid = backend_pid(&second).await?;
    if first_pid == second_pid {
        return Err(Error::Pooled(first_pid));
    }
    Ok(())
}

async fn connect(pg: &Config, tls: &PgTls) -> Result<Client> {
    let (client, connection) = pg.connect(tls.connector()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %crate::error::chain(&e), "pooler check connection closed");
        }
    });
    Ok(client)
}

/// `pg_backend_pid()` by the simple query protocol (no prepared statement, which a transaction
/// pooler would lose).
async fn backend_pid(client: &Client) -> Result<i32> {
    for m in client.simple_query("select pg_backend_pid()").await? {
        if let SimpleQueryMessage::Row(row) = m {
            if let Some(pid) = row.get(0).and_then(|v| v.parse().ok()) {
                return Ok(pid);
            }
        }
    }
    Err(Error::BadRow(
        "select pg_backend_pid() returned no pid".into(),
    ))
}
