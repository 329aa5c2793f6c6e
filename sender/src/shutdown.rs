//! SIGTERM/SIGINT: the first stops claiming; a second one stops in-flight requests at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;

/// Installs the handlers (failing now if it cannot) and returns the task that cancels `stop`
/// on the first signal and `hard_stop` on the second.
pub fn install(
    stop: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = stop.cancelled() => return,
        };
        info!(
            signal = name,
            "shutting down: no new claims, finishing in-flight requests"
        );
        stop.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hard_stop.cancelled() => return,
        };
        warn!(
            signal = name,
            "second signal: stopping in-flight requests now"
        );
        hard_stop.cancel();
    }))
}
