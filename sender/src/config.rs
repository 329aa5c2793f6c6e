//! Flags with environment fallbacks, named defaults, and a `validate()` that runs before
//! anything connects.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

use crate::error::{Error, Result};

/// Default `--admin-addr`: loopback only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9187";
/// Default `--concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 64;
/// Largest accepted `--concurrency`.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Largest accepted `--worker-threads`.
pub const MAX_WORKER_THREADS: usize = 256;
/// Default `--poll-interval-ms`.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;
/// Default `--linger-ms`.
pub const DEFAULT_LINGER_MS: u64 = 20;
/// Largest accepted `--linger-ms`.
pub const MAX_LINGER_MS: u64 = 10_000;
/// Default `--lease-secs`.
pub const DEFAULT_LEASE_SECS: u64 = 60;
/// Upper bound of the default `--batch-size` (the default is `min(concurrency, this)`).
pub const DEFAULT_MAX_BATCH: u32 = 100;
/// Largest accepted `--batch-size`.
pub const MAX_BATCH: u32 = 10_000;
/// Default `--shutdown-grace-secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default `--max-response-bytes` (the database keeps 1,000 characters of it).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 65_536;
/// Largest accepted `--max-response-bytes`.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Default `--stats-interval-secs`.
pub const DEFAULT_STATS_INTERVAL_SECS: u64 = 60;
/// Default `--webhook-metrics-interval-secs`.
pub const DEFAULT_WEBHOOK_METRICS_INTERVAL_SECS: u64 = 15;
/// Default `--max-inflight-bytes`: 64 MiB, what 64 requests of the default 1 MiB payload limit
/// hold.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 64 * 1024 * 1024;
/// Bounds of `--max-inflight-bytes`.
pub const MIN_INFLIGHT_BYTES: u64 = 64 * 1024;
pub const MAX_INFLIGHT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The sender's configuration: every flag has an environment fallback.
#[derive(Clone, Parser)]
#[command(
    name = "beema-hooks-sender",
    version,
    about = "Delivers beema_hooks webhooks: LISTENs, claims due deliveries through SQL, POSTs them, writes results back."
)]
pub struct Config {
    /// Postgres connection string (URL or key=value) of the database with the beema_hooks extension.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// PEM file of the CA certificate(s) that sign the Postgres server's certificate, trusted
    /// instead of the system's roots. With sslmode=require (which here verifies the
    /// certificate and the host name, like libpq's verify-full) or sslmode=prefer.
    #[arg(long, env = "HOOKS_PG_CA_FILE")]
    pub pg_ca_file: Option<PathBuf>,

    /// Allow webhook targets on loopback, private, link-local and other non-public addresses.
    #[arg(
        long,
        env = "HOOKS_ALLOW_PRIVATE_TARGETS",
        value_parser = BoolishValueParser::new(),
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
    )]
    pub allow_private_targets: bool,

    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(long, env = "HOOKS_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,

    /// Maximum number of HTTP requests in flight.
    #[arg(long, env = "HOOKS_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,

    /// Threads that run the sender's tasks (HTTP requests, claims, results) [default: one per
    /// core]. 1 spends less CPU per delivery and adds latency (BENCHMARKS.md, "One worker thread").
    #[arg(long, env = "HOOKS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// This sender's id, recorded with every lease and attempt.
    #[arg(long, env = "HOOKS_SENDER_ID", default_value_t = default_sender_id())]
    pub sender_id: String,

    /// Poll the queue at least this often (ms), whatever notifications say.
    #[arg(long, env = "HOOKS_POLL_INTERVAL_MS", default_value_t = DEFAULT_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,

    /// After claiming rows, stay awake this long (ms), looking for new rows every millisecond
    /// (after a look that found nothing with 16 or more requests in flight: once results have
    /// been written, at most 12 ms later), so that publishers skip NOTIFY while events keep
    /// coming; 0: go idle as soon as the queue is empty.
    #[arg(long, env = "HOOKS_LINGER_MS", default_value_t = DEFAULT_LINGER_MS)]
    pub linger_ms: u64,

    /// Lease asked for on each claim (s); the database extends it to the request timeout + 10 s.
    #[arg(long, env = "HOOKS_LEASE_SECS", default_value_t = DEFAULT_LEASE_SECS)]
    pub lease_secs: u64,

    /// Maximum rows per claim [default: min(concurrency, 100)].
    #[arg(long, env = "HOOKS_BATCH_SIZE")]
    pub batch_size: Option<u32>,

    /// On SIGTERM/SIGINT, wait this long (s) for in-flight requests before releasing them.
    #[arg(long, env = "HOOKS_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Request bodies held at most (bytes): claims ask for no more than what is left of it, and
    /// none while it is used up; a delivery larger than all of it is still claimed, alone
    /// (README, "Memory").
    #[arg(long, env = "HOOKS_MAX_INFLIGHT_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: u64,

    /// Read at most this many bytes of a response body.
    #[arg(long, env = "HOOKS_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,

    /// Log a stats line this often (s); 0 turns it off.
    #[arg(long, env = "HOOKS_STATS_INTERVAL_SECS", default_value_t = DEFAULT_STATS_INTERVAL_SECS)]
    pub stats_interval_secs: u64,

    /// Read the per-webhook figures of /metrics (hooks.sender_metrics) this often (s); 0 turns
    /// them off.
    #[arg(long, env = "HOOKS_WEBHOOK_METRICS_INTERVAL_SECS", default_value_t = DEFAULT_WEBHOOK_METRICS_INTERVAL_SECS)]
    pub webhook_metrics_interval_secs: u64,

    /// Log format.
    #[arg(long, env = "HOOKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Whether every host of `pg` is a Unix-domain socket directory.
fn only_unix_sockets(pg: &tokio_postgres::Config) -> bool {
    #[cfg(unix)]
    {
        pg.get_hosts()
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)))
    }
    #[cfg(not(unix))]
    {
        let _ = pg;
        false
    }
}

/// What to write instead of the libpq TLS settings tokio-postgres does not parse.
fn libpq_tls_hint(url: &str) -> &'static str {
    if url.contains("verify-full") || url.contains("verify-ca") {
        " (sslmode takes disable, prefer or require here; require already verifies the \
         certificate and the host name, as libpq's verify-full)"
    } else if url.contains("sslrootcert") {
        " (give the CA bundle with --pg-ca-file (HOOKS_PG_CA_FILE) instead of sslrootcert)"
    } else {
        ""
    }
}

/// `<hostname>-<pid>`.
pub fn default_sender_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "beema-hooks-sender".to_owned());
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// Checks every value and reports all problems at once. Runs before anything connects.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = self.pg_config() {
            problems.push(e);
        }
        if let Some(path) = &self.pg_ca_file {
            if let Err(e) = crate::tls::load_ca_file(path) {
                problems.push(e);
            }
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push(format!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.concurrency
            ));
        }
        if let Some(n) = self.worker_threads {
            if !(1..=MAX_WORKER_THREADS).contains(&n) {
                problems.push(format!(
                    "--worker-threads must be between 1 and {MAX_WORKER_THREADS}, got {n}"
                ));
            }
        }
        let id = self.sender_id.trim();
        if id.is_empty() {
            problems.push("--sender-id must not be empty".to_owned());
        } else if id.len() > 200 || id.chars().any(char::is_control) {
            problems.push("--sender-id must be at most 200 printable characters".to_owned());
        }
        if !(10..=3_600_000).contains(&self.poll_interval_ms) {
            problems.push(format!(
                "--poll-interval-ms must be between 10 and 3600000, got {}",
                self.poll_interval_ms
            ));
        }
        if self.linger_ms > MAX_LINGER_MS {
            problems.push(format!(
                "--linger-ms must be between 0 and {MAX_LINGER_MS}, got {}",
                self.linger_ms
            ));
        }
        if !(1..=86_400).contains(&self.lease_secs) {
            problems.push(format!(
                "--lease-secs must be between 1 and 86400, got {}",
                self.lease_secs
            ));
        }
        if let Some(b) = self.batch_size {
            if !(1..=MAX_BATCH).contains(&b) {
                problems.push(format!(
                    "--batch-size must be between 1 and {MAX_BATCH}, got {b}"
                ));
            }
        }
        if self.shutdown_grace_secs > 3600 {
            problems.push(format!(
                "--shutdown-grace-secs must be at most 3600, got {}",
                self.shutdown_grace_secs
            ));
        }
        if !(MIN_INFLIGHT_BYTES..=MAX_INFLIGHT_BYTES).contains(&self.max_inflight_bytes) {
            problems.push(format!(
                "--max-inflight-bytes must be between {MIN_INFLIGHT_BYTES} and {MAX_INFLIGHT_BYTES}, got {}",
                self.max_inflight_bytes
            ));
        }
        if self.max_response_bytes > MAX_RESPONSE_BYTES {
            problems.push(format!(
                "--max-response-bytes must be at most {MAX_RESPONSE_BYTES}, got {}",
                self.max_response_bytes
            ));
        }
        if self.webhook_metrics_interval_secs > 86_400 {
            problems.push(format!(
                "--webhook-metrics-interval-secs must be at most 86400, got {}",
                self.webhook_metrics_interval_secs
            ));
        }
        if self.stats_interval_secs > 86_400 {
            problems.push(format!(
                "--stats-interval-secs must be at most 86400, got {}",
                self.stats_interval_secs
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }

    /// The parsed connection settings, with the sender's defaults filled in: an
    /// `application_name`, a 10 s connect timeout and 30 s TCP keepalives unless the URL sets them.
    pub fn pg_config(&self) -> std::result::Result<tokio_postgres::Config, String> {
        if self.database_url.trim().is_empty() {
            return Err("--database-url (DATABASE_URL) must not be empty".to_owned());
        }
        // The parser's message never echoes the password.
        let url = self.database_url.trim();
        let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| {
            format!(
                "--database-url (DATABASE_URL) is not a valid connection string: {e}{}",
                libpq_tls_hint(url)
            )
        })?;
        if pg.get_hosts().is_empty() {
            return Err("--database-url (DATABASE_URL) names no host".to_owned());
        }
        if only_unix_sockets(&pg) {
            // As libpq: TLS is never used over a Unix-domain socket, whatever sslmode says
            // (Postgres refuses it there, so `require` could never connect).
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("beema-hooks-sender");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        pg.keepalives(true);
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(Duration::from_secs(30));
        }
        Ok(pg)
    }

    /// Rows asked for per claim, at most.
    pub fn batch_size(&self) -> u32 {
        self.batch_size
            .unwrap_or_else(|| self.concurrency.min(DEFAULT_MAX_BATCH))
            .max(1)
    }

    /// `--linger-ms` as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    /// `--poll-interval-ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// `--lease-secs` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// `--shutdown-grace-secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Where the database is, for logs: hosts, port and database name, never credentials.
    pub fn database_label(&self) -> String {
        match self.pg_config() {
            Ok(pg) => {
                let hosts: Vec<String> = pg
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(h) => h.clone(),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                let port = pg.get_ports().first().copied().unwrap_or(5432);
                format!(
                    "{}:{}/{}",
                    hosts.join(","),
                    port,
                    pg.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "<invalid>".to_owned(),
        }
    }
}

/// Never prints the database url: it may hold a password.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database_label())
            .field("pg_ca_file", &self.pg_ca_file)
            .field("allow_private_targets", &self.allow_private_targets)
            .field("admin_addr", &self.admin_addr)
            .field("concurrency", &self.concurrency)
            .field("sender_id", &self.sender_id)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("linger_ms", &self.linger_ms)
            .field("lease_secs", &self.lease_secs)
            .field("batch_size", &self.batch_size())
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("stats_interval_secs", &self.stats_interval_secs)
            .field(
                "webhook_metrics_interval_secs",
                &self.webhook_metrics_interval_secs,
            )
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://app:s3cret@127.0.0.1:5432/app";

    fn parse(extra: &[&str]) -> Config {
        let mut args = vec!["beema-hooks-sender", "--database-url", URL];
        args.extend_from_slice(extra);
        match Config::try_parse_from(args) {
            Ok(c) => c,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn problems(c: &Config) -> String {
        match c.validate() {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&["--concurrency", "64", "--admin-addr", "127.0.0.1:9187"]);
        assert_eq!(problems(&c), "");
        assert_eq!(c.batch_size(), 64);
        assert_eq!(c.poll_interval(), Duration::from_millis(1000));
        assert_eq!(c.linger(), Duration::from_millis(20));
        assert_eq!(c.lease(), Duration::from_secs(60));
        assert!(c.sender_id.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn batch_size_defaults_to_min_of_concurrency_and_100() {
        assert_eq!(parse(&["--concurrency", "8"]).batch_size(), 8);
        assert_eq!(parse(&["--concurrency", "500"]).batch_size(), 100);
        assert_eq!(
            parse(&["--concurrency", "500", "--batch-size", "250"]).batch_size(),
            250
        );
    }

    #[test]
    fn allow_private_targets_flag_forms() {
        assert!(parse(&["--allow-private-targets"]).allow_private_targets);
        assert!(parse(&["--allow-private-targets=1"]).allow_private_targets);
        assert!(parse(&["--allow-private-targets=true"]).allow_private_targets);
        assert!(!parse(&["--allow-private-targets=0"]).allow_private_targets);
        assert!(!parse(&["--allow-private-targets=false"]).allow_private_targets);
        assert!(Config::try_parse_from([
            "x",
            "--database-url",
            URL,
            "--allow-private-targets=maybe"
        ])
        .is_err());
    }

    #[test]
    fn concurrency_bounds() {
        assert!(problems(&parse(&["--concurrency", "0"]))
            .contains("--concurrency must be between 1 and 4096"));
        assert!(problems(&parse(&["--concurrency", "4097"])).contains("--concurrency"));
        assert_eq!(problems(&parse(&["--concurrency", "4096"])), "");
        assert_eq!(problems(&parse(&["--concurrency", "1"])), "");
    }

    #[test]
    fn worker_threads_default_to_one_per_core_and_are_bounded() {
        assert_eq!(parse(&[]).worker_threads, None);
        assert_eq!(parse(&["--worker-threads", "1"]).worker_threads, Some(1));
        assert!(problems(&parse(&["--worker-threads", "0"]))
            .contains("--worker-threads must be between 1 and 256"));
        assert!(problems(&parse(&["--worker-threads", "257"])).contains("--worker-threads"));
        assert_eq!(problems(&parse(&["--worker-threads", "4"])), "");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let c = parse(&[
            "--concurrency",
            "0",
            "--poll-interval-ms",
            "0",
            "--lease-secs",
            "0",
            "--batch-size",
            "0",
            "--sender-id",
            "  ",
            "--max-response-bytes",
            "999999999",
            "--linger-ms",
            "10001",
        ]);
        let p = problems(&c);
        for flag in [
            "--concurrency",
            "--poll-interval-ms",
            "--lease-secs",
            "--batch-size",
            "--sender-id",
            "--max-response-bytes",
            "--linger-ms",
        ] {
            assert!(p.contains(flag), "{flag} missing from {p}");
        }
    }

    #[test]
    fn database_url_is_checked_without_echoing_it() {
        let mut c = parse(&[]);
        c.database_url = "postgres://app:s3cret@host:notaport/db".to_owned();
        let p = problems(&c);
        assert!(p.contains("--database-url"), "{p}");
        assert!(!p.contains("s3cret"), "{p}");
        c.database_url = "   ".to_owned();
        assert!(problems(&c).contains("must not be empty"));
        c.database_url = "host=/var/run/postgresql dbname=app".to_owned();
        assert_eq!(problems(&c), "");
    }

    #[test]
    fn pg_config_gets_sender_defaults() {
        let c = parse(&[]);
        let pg = match c.pg_config() {
            Ok(pg) => pg,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(pg.get_application_name(), Some("beema-hooks-sender"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(30));
    }

    #[test]
    fn debug_and_label_hide_the_password() {
        let c = parse(&[]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(c.database_label(), "127.0.0.1:5432/app");
    }

    #[test]
    fn sslmodes_tokio_postgres_knows_are_accepted() {
        for mode in ["disable", "prefer", "require"] {
            let mut c = parse(&[]);
            c.database_url = format!("{URL}?sslmode={mode}");
            assert_eq!(problems(&c), "", "{mode}");
            c.database_url = format!("host=db.example user=app sslmode={mode}");
            assert_eq!(problems(&c), "", "{mode}");
        }
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        use tokio_postgres::config::SslMode;
        let mode = |url: &str| {
            let mut c = parse(&[]);
            c.database_url = url.to_owned();
            match c.pg_config() {
                Ok(pg) => pg.get_ssl_mode(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            mode("host=/var/run/postgresql dbname=app sslmode=require"),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://app@%2Fvar%2Frun%2Fpostgresql/app?sslmode=require"),
            SslMode::Disable
        );
        assert_eq!(mode("host=db dbname=app sslmode=require"), SslMode::Require);
        assert_eq!(mode("host=db dbname=app"), SslMode::Prefer);
        assert_eq!(
            mode("host=/var/run/postgresql,db dbname=app sslmode=require"),
            SslMode::Require
        );
    }

    #[test]
    fn libpq_only_tls_settings_get_a_hint() {
        let mut c = parse(&[]);
        c.database_url = format!("{URL}?sslmode=verify-full");
        let p = problems(&c);
        assert!(
            p.contains("require already verifies the certificate and the host name"),
            "{p}"
        );
        assert!(!p.contains("s3cret"), "{p}");
        c.database_url = "host=db user=app sslmode=verify-ca".to_owned();
        assert!(problems(&c).contains("require already verifies"));
        c.database_url = format!("{URL}?sslmode=require&sslrootcert=/etc/ca.pem");
        assert!(problems(&c).contains("--pg-ca-file"));
    }

    #[test]
    fn pg_ca_file_is_checked_before_connecting() {
        let c = parse(&["--pg-ca-file", "/nonexistent/ca.pem"]);
        let p = problems(&c);
        assert!(
            p.contains("--pg-ca-file /nonexistent/ca.pem: cannot read"),
            "{p}"
        );
        assert!(parse(&[]).pg_ca_file.is_none());
    }

    #[test]
    fn admin_addr_must_be_a_socket_address() {
        assert!(
            Config::try_parse_from(["x", "--database-url", URL, "--admin-addr", "nope"]).is_err()
        );
        assert_eq!(
            parse(&["--admin-addr", "[::1]:9999"]).admin_addr,
            "[::1]:9999"
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }
}
