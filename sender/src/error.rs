//! The crate's one error type.

use std::net::IpAddr;
use std::time::Duration;

use crate::ssrf::Forbidden;

/// Everything that can go wrong in the sender.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or environment variable is invalid; reported before anything connects.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A database round trip failed (connection, query, or a server-side error).
    #[error("database: {}", chain(.0))]
    Db(#[from] tokio_postgres::Error),

    /// The server closed a connection.
    #[error("database connection closed")]
    Closed,

    #[error(
        "--database-url leads to a transaction pooler (two connections were served by the same \
         server process, pid {0}): the sender needs sessions of its own for LISTEN and its \
         advisory locks. Point it at Postgres itself or at a session-mode pool; publishers may \
         stay behind the transaction pooler (README, \"Connection poolers\")"
    )]
    Pooled(i32),

    /// A database round trip took longer than the sender is willing to wait.
    #[error("database operation timed out after {} ms", .0.as_millis())]
    DbTimeout(Duration),

    /// `hooks.claim` returned a row the sender cannot read.
    #[error("unexpected row from hooks.claim: {0}")]
    BadRow(String),

    /// The SSRF guard refused a webhook target before connecting to it.
    #[error("{}", refusal_message(.host, .addr, .reason))]
    TargetRefused {
        /// The host as written in the url.
        host: String,
        /// The first forbidden address it resolved to.
        addr: IpAddr,
        /// Why that address is forbidden.
        reason: Forbidden,
    },

    /// A host resolved to no address at all.
    #[error("dns: {0} resolved to no address")]
    NoAddress(String),

    /// Socket-level failure (binding the admin port, DNS lookup, signals).
    #[error("{0}")]
    Io(#[from] std::io::Error),

    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),

    /// Registering or encoding metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// Results or releases could not be serialized.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// An error and its causes, `outer: inner: innermost`. tokio-postgres puts the useful part
/// ("Connection refused", the server's message) in the causes, not in its own message.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

fn refusal_message(host: &str, addr: &IpAddr, reason: &Forbidden) -> String {
    if host == addr.to_string() {
        format!("target {addr} refused: {reason}")
    } else {
        format!("target {host} ({addr}) refused: {reason}")
    }
}

impl Error {
    /// Whether retrying the same database call later may succeed: connection problems,
    /// timeouts, serialization failures, deadlocks and server shutdowns are transient; a
    /// function raising an error on our input is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Db(e) => match e.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08") // connection exception
                        || code.starts_with("40") // serialization failure, deadlock
                        || code.starts_with("53") // insufficient resources
                        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                        || code == "55P03" // lock not available
                }
            },
            Error::DbTimeout(_) => true,
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("error connecting to server")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            chain(&Outer(io)),
            "error connecting to server: Connection refused"
        );
    }
}
