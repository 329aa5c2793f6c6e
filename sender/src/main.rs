//! Wires the sender's services together and runs them until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::config::SslMode;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use beema_hooks_sender::admin::{self, AdminState};
use beema_hooks_sender::backoff::Backoff;
use beema_hooks_sender::completer::Completer;
use beema_hooks_sender::config::LogFormat;
use beema_hooks_sender::delivery::DeliveryKey;
use beema_hooks_sender::executor::Executor;
use beema_hooks_sender::health::Health;
use beema_hooks_sender::listener::Listener;
use beema_hooks_sender::metrics::Metrics;
use beema_hooks_sender::store::Store;
use beema_hooks_sender::tls::PgTls;
use beema_hooks_sender::worker::{Worker, WorkerSettings};
use beema_hooks_sender::{pooler, shutdown, stats, Config, Error, Result};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("beema-hooks-sender: {e}");
        return ExitCode::from(2);
    }
    init_logging(config.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "sender failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(config: Config) -> Result<()> {
    let pg = config.pg_config().map_err(Error::Config)?;
    let tls = PgTls::new(pg.get_ssl_mode(), config.pg_ca_file.as_deref()).map_err(Error::Config)?;
    let metrics = Metrics::new()?;
    // /healthz goes stale when nothing reached the database for this long (the claimer
    // polls every poll interval and the listener pings every 15 s, so this only trips when
    // both are stuck).
    let health = Arc::new(Health::new(
        config
            .poll_interval()
            .saturating_mul(3)
            .max(Duration::from_secs(60)),
    ));
    let admin_listener = TcpListener::bind(config.admin_addr).await.map_err(|e| {
        Error::Config(format!(
            "cannot listen on --admin-addr {}: {e}",
            config.admin_addr
        ))
    })?;
    let executor = Executor::new(config.allow_private_targets, config.max_response_bytes)?;

    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let services_stop = CancellationToken::new();
    let signals = shutdown::install(stop.clone(), hard_stop.clone())?;

    info!(
        version = env!("CARGO_PKG_VERSION"),
        sender_id = %config.sender_id,
        database = %config.database_label(),
        sslmode = ?pg.get_ssl_mode(),
        tls = %tls.trust(),
        admin_addr = %config.admin_addr,
        concurrency = config.concurrency,
        worker_threads = ?config.worker_threads,
        batch_size = config.batch_size(),
        max_inflight_bytes = config.max_inflight_bytes,
        poll_interval_ms = config.poll_interval_ms,
        lease_secs = config.lease_secs,
        allow_private_targets = config.allow_private_targets,
        "starting"
    );
    if config.pg_ca_file.is_some() && pg.get_ssl_mode() == SslMode::Disable {
        warn!("--pg-ca-file is ignored: the connection string says sslmode=disable");
    }
    if config.allow_private_targets {
        warn!("--allow-private-targets is on: webhooks may reach loopback and private networks");
    }

    let store = Arc::new(Store::new(
        pg.clone(),
        tls.clone(),
        config.sender_id.clone(),
        health.clone(),
        metrics.clone(),
    ));
    let wake = Arc::new(Notify::new());

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        services_stop.clone(),
    ));
    let stats = (config.stats_interval_secs > 0).then(|| {
        tokio::spawn(stats::run(
            metrics.clone(),
            Duration::from_secs(config.stats_interval_secs),
            services_stop.clone(),
        ))
    });
    // Not through a transaction pooler (pooler.rs): checked once the database answers; until then
    // retried like every connection, /healthz saying why.
    let mut backoff = Backoff::database();
    loop {
        match pooler::check_not_pooled(&pg, &tls).await {
            Ok(()) => break,
            Err(e @ Error::Pooled(_)) => {
                services_stop.cancel();
                return Err(e);
            }
            Err(e) => {
                metrics.db_errors.inc();
                health.failed(&e);
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the database yet");
                tokio::select! {
                    _ = stop.cancelled() => {
                        services_stop.cancel();
                        return Ok(());
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let webhook_metrics = (config.webhook_metrics_interval_secs > 0).then(|| {
        tokio::spawn(stats::webhook_metrics(
            store.clone(),
            metrics.clone(),
            Duration::from_secs(config.webhook_metrics_interval_secs),
            services_stop.clone(),
        ))
    });
    let listener = tokio::spawn(
        Listener::new(pg, tls, wake.clone(), health.clone(), metrics.clone()).run(stop.clone()),
    );
    let (results_tx, results_rx) = mpsc::channel(config.concurrency.max(128) as usize * 2);
    let (written_tx, written_rx) = watch::channel(0u64);
    let completer = tokio::spawn(
        // Retry results for as long as a lease can last: SQL makes it at least the request
        // timeout plus the lease margin (hooks_core::contract).
        Completer::new(
            store.clone(),
            metrics.clone(),
            config.lease().max(Duration::from_millis(
                hooks_core::contract::MAX_TIMEOUT_LEASE_MS as u64,
            )),
            written_tx,
        )
        .run(results_rx),
    );

    let settings = WorkerSettings {
        concurrency: config.concurrency,
        batch_size: config.batch_size(),
        max_inflight_bytes: config.max_inflight_bytes,
        lease: config.lease(),
        poll_interval: config.poll_interval(),
        linger: config.linger(),
        shutdown_grace: config.shutdown_grace(),
    };
    let worker = Worker::new(
        settings,
        store.clone(),
        executor,
        metrics.clone(),
        wake,
        results_tx,
        written_rx,
    );
    // Returns after a stop signal, once in-flight work has finished or been stopped.
    let unfinished = worker.run(stop.clone(), hard_stop.clone()).await;

    let _ = listener.await;
    // Every result sender is gone now; this returns once everything is written.
    let _ = completer.await;
    release(&store, &unfinished).await;

    services_stop.cancel();
    hard_stop.cancel();
    let _ = admin.await;
    if let Some(stats) = stats {
        let _ = stats.await;
    }
    if let Some(w) = webhook_metrics {
        let _ = w.await;
    }
    let _ = signals.await;
    info!("stopped");
    Ok(())
}

/// Gives back deliveries stopped mid-flight so another sender takes them at once. Runs after
/// the completer has flushed, so nothing that finished is released.
async fn release(store: &Store, keys: &[DeliveryKey]) {
    if keys.is_empty() {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for attempt in 1..=5 {
        match store.release(keys).await {
            Ok(n) => {
                info!(
                    released = n,
                    unfinished = keys.len(),
                    "released unfinished deliveries"
                );
                return;
            }
            Err(e) if attempt < 5 && e.is_transient() => {
                warn!(error = %e, "release failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let ids: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}#{}", k.delivery_id, k.attempt_number))
                    .collect();
                error!(error = %e, deliveries = %ids.join(","),
                    "could not release unfinished deliveries; they are retried when their lease expires");
                return;
            }
        }
    }
}
