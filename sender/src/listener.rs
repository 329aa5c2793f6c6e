//! The notifier: owns the LISTEN connection. Notifications are only hints, so after every
//! (re)connect it wakes the claimer at once: anything notified while it was away was lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::tls::PgTls;

/// The channel publishers notify.
pub const CHANNEL: &str = "hooks_deliveries";

/// How often the idle LISTEN connection is pinged, to notice a dead peer.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a LISTEN connection up until `stop`, waking `wake` on every notification and after
/// every (re)connect.
pub struct Listener {
    pg: tokio_postgres::Config,
    tls: PgTls,
    wake: Arc<Notify>,
    health: Arc<Health>,
    metrics: Metrics,
}

impl Listener {
    /// A listener that wakes `wake`.
    pub fn new(
        pg: tokio_postgres::Config,
        tls: PgTls,
        wake: Arc<Notify>,
        health: Arc<Health>,
        metrics: Metrics,
    ) -> Self {
        Self {
            pg,
            tls,
            wake,
            health,
            metrics,
        }
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::database();
        let mut connected_before = false;
        loop {
            let mut listening = false;
            let res = tokio::select! {
                _ = stop.cancelled() => return,
                res = self.session(&mut listening, connected_before) => res,
            };
            if listening {
                connected_before = true;
                backoff.reset();
            }
            let err = match res {
                Ok(()) => Error::Closed,
                Err(e) => e,
            };
            self.metrics.db_errors.inc();
            self.health.failed(&err);
            let delay = backoff.next_delay();
            warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "LISTEN connection lost");
            // The claim connection getting through again means the database is back:
            // reconnect then rather than at the end of a long backoff.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
                _ = self.health.recovered() => debug!("database is back; reconnecting LISTEN now"),
            }
        }
    }

    /// One connection's life: connect, LISTEN, wake the claimer, then forward notifications
    /// and ping until the connection fails.
    async fn session(&self, listening: &mut bool, reconnect: bool) -> Result<()> {
        let (client, mut connection) = self.pg.connect(self.tls.connector()).await?;
        let drive = async {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        self.metrics.notifications.inc();
                        self.wake.notify_one();
                    }
                    Some(Ok(AsyncMessage::Notice(n))) => {
                        debug!(notice = %n.message(), "notice on LISTEN connection")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(Error::Db(e)),
                    None => return Ok(()),
                }
            }
        };
        let control = async {
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            *listening = true;
            self.health.ok();
            if reconnect {
                self.metrics.listener_reconnects.inc();
                info!("LISTEN connection re-established; claiming at once");
            } else {
                info!(channel = CHANNEL, "listening");
            }
            self.wake.notify_one();
            loop {
                tokio::time::sleep(PING_EVERY).await;
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => self.health.ok(),
                    Ok(Err(e)) => return Err(Error::Db(e)),
                    Err(_) => return Err(Error::DbTimeout(PING_TIMEOUT)),
                }
            }
        };
        tokio::select! {
            res = drive => res,
            res = control => res,
        }
    }
}
