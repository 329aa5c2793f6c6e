//! A fresh database with beema_hooks per test, dropped `WITH (FORCE)` at the end
//! (graphile_worker_rs style), and helpers to register webhooks and publish events.
//!
//! The flavor comes from `BEEMA_FLAVOR`: `native` (the default, `CREATE EXTENSION beema_hooks`
//! as the superuser) or `portable` (`dist/beema_hooks.sql` of `scripts/portable.sh`, run with
//! psql by [`OWNER`], a role that owns the database and may create roles but is not a superuser,
//! as on managed Postgres; the test's connection and the sender then connect as that owner too).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// Admin URL of the cluster: `BEEMA_ADMIN_URL` or the `scripts/pg.sh` default.
pub fn admin_url() -> String {
    std::env::var("BEEMA_ADMIN_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:28815/postgres".to_owned())
}

/// `url` with its database (the path) replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Opens a connection and drives it on a background task.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e} (is the cluster up? scripts/pg.sh start)")
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The owner of portable-flavor test databases: LOGIN CREATEROLE, not a superuser.
pub const OWNER: &str = "beema_owner";

/// Which build of beema_hooks a test database gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The pgrx extension: `CREATE EXTENSION beema_hooks`.
    Native,
    /// The plain-SQL file of `scripts/portable.sh`, PL/pgSQL and pgcrypto only.
    Portable,
}

impl Flavor {
    /// `BEEMA_FLAVOR` (`native` when unset).
    pub fn from_env() -> Flavor {
        match std::env::var("BEEMA_FLAVOR").as_deref() {
            Ok("portable") => Flavor::Portable,
            Ok("native") | Ok("") | Err(_) => Flavor::Native,
            Ok(other) => panic!("BEEMA_FLAVOR={other}: use native or portable"),
        }
    }
}

/// `url` with its user replaced by `user` (no password: the test cluster trusts loopback).
pub fn with_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{}{user}@{host}", &url[..scheme_end])
}

/// The Postgres binaries' directory: `PG_BIN`, or Debian's for Postgres 15.
fn pg_bin() -> std::path::PathBuf {
    std::env::var_os("PG_BIN")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// `dist/beema_hooks.sql` of this checkout, written once per test process by
/// `scripts/portable.sh` into a private directory of its own, then kept beside the test
/// binaries (in the build directory, not in /tmp) under a name that is its content's hash, so
/// that concurrent test processes and checkouts sharing the build directory never see each
/// other's half-written or different file, and reruns add nothing.
pub fn portable_sql() -> std::path::PathBuf {
    use sha2::Digest;
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let root = crate::repo_root();
        let exe = std::env::current_exe().expect("the test binary's path");
        let base = exe.parent().expect("its directory").join("beema-portable");
        std::fs::create_dir_all(&base).expect("create the portable install's directory");
        let work = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&base)
            .expect("a private directory");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/portable.sh"))
            .arg(work.path())
            .output()
            .expect("run scripts/portable.sh");
        assert!(
            out.status.success(),
            "scripts/portable.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = work.path().join("beema_hooks.sql");
        let sql = std::fs::read(&built).expect("read the portable install");
        let path = base.join(format!(
            "beema_hooks-{}.sql",
            hex::encode(&sha2::Sha256::digest(&sql)[..8])
        ));
        std::fs::rename(&built, &path).expect("keep the portable install");
        path
    })
    .clone()
}

/// Runs `file` with psql as `user` against the database of `url` (ON_ERROR_STOP): what a user
/// of the portable flavor does.
pub fn psql_file(url: &str, file: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new(pg_bin().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
        .arg(file)
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A database of its own with the extension installed.
pub struct TestDb {
    name: String,
    url: String,
    client: Client,
    dropped: bool,
}

impl TestDb {
    /// Creates `beema_e2e_<unique>` with the flavor of `BEEMA_FLAVOR` (see the module doc).
    pub async fn new() -> TestDb {
        Self::of(Flavor::from_env()).await
    }

    /// Creates `beema_e2e_<unique>` with beema_hooks of the given flavor.
    pub async fn of(flavor: Flavor) -> TestDb {
        match flavor {
            Flavor::Native => Self::create("CREATE EXTENSION beema_hooks").await,
            Flavor::Portable => Self::portable().await,
        }
    }

    /// The portable flavor, installed by [`OWNER`] from the plain-SQL file.
    async fn portable() -> TestDb {
        let admin_url = admin_url();
        let name = crate::unique_name("beema_e2e");
        let admin = connect(&admin_url).await;
        sweep_leftovers(&admin).await;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {OWNER} LOGIN CREATEROLE;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ))
            .await
            .unwrap_or_else(|e| panic!("CREATE ROLE {OWNER}: {e:?}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
        let url = with_user(&with_database(&admin_url, &name), OWNER);
        let sql = portable_sql();
        let file_url = url.clone();
        tokio::task::spawn_blocking(move || psql_file(&file_url, &sql))
            .await
            .expect("psql task")
            .unwrap_or_else(|e| panic!("installing the portable flavor: {e}"));
        let client = connect(&url).await;
        TestDb {
            name,
            url,
            client,
            dropped: false,
        }
    }

    /// Like [`TestDb::new`], with the extension created at an older `version` (its frozen
    /// install script, run with the installed library).
    pub async fn with_version(version: &str) -> TestDb {
        Self::create(&format!("CREATE EXTENSION beema_hooks VERSION '{version}'")).await
    }

    async fn create(create_extension: &str) -> TestDb {
        let admin_url = admin_url();
        let name = crate::unique_name("beema_e2e");
        let admin = connect(&admin_url).await;
        sweep_leftovers(&admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = with_database(&admin_url, &name);
        let client = connect(&url).await;
        let db = TestDb {
            name,
            url,
            client,
            dropped: false,
        };
        db.client
            .batch_execute(create_extension)
            .await
            .unwrap_or_else(|e| panic!("{create_extension}: {e:?}"));
        db
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection URL of this database (what the sender gets as DATABASE_URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test's own connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Another connection to this database.
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }

    /// A connection that has run `LISTEN channel`, and the notifications it receives.
    pub async fn listen(&self, channel: &str) -> (Client, mpsc::UnboundedReceiver<Notification>) {
        let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap_or_else(|e| panic!("LISTEN {channel}: {e}"));
        (client, rx)
    }

    /// One value of a one-row, one-column query.
    pub async fn one<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        row.get(0)
    }

    /// `ALTER DATABASE <this> SET <name> = <value>`: the setting for every later session,
    /// the sender's included. Run as the cluster's superuser: on Postgres 15 only a superuser
    /// may set a setting the server does not know (the portable flavor's, without the library)
    /// at database level; managed-Postgres users pass them in the sender's connection string
    /// instead (README, "Settings").
    pub async fn set_default(&self, name: &str, value: impl std::fmt::Display) {
        connect(&admin_url())
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} SET {name} = {value}",
                self.name
            ))
            .await
            .unwrap_or_else(|e| panic!("ALTER DATABASE ... SET {name}: {e}"));
    }

    /// Every row of every table of schema hooks as text, sorted: what a rerun of the install
    /// or a move between flavors must keep.
    pub async fn snapshot_rows(&self) -> Vec<String> {
        snapshot_rows(&self.client).await
    }

    /// `count(*)` of a query's rows.
    pub async fn count(&self, sql_from_where: &str) -> i64 {
        self.one::<i64>(&format!("SELECT count(*) FROM {sql_from_where}"))
            .await
    }

    /// Inserts a webhook through plain DML (what a user would do) and returns its id and secret
    /// (generated by the extension when not given).
    pub async fn register(&self, w: &Webhook) -> (i64, String) {
        let row = self
            .client
            .query_one(
                "INSERT INTO hooks.webhooks
                     (webhook_name, tenant_id, event_type, url, secret, enabled, headers, retry_config, timeout_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9)
                 RETURNING webhook_id, secret",
                &[
                    &w.name,
                    &w.tenant,
                    &w.event_type,
                    &w.url,
                    &w.secret,
                    &w.enabled,
                    &w.headers.to_string(),
                    &w.retry_config.to_string(),
                    &w.timeout_ms,
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("register webhook {}: {e:?}", w.name));
        (row.get(0), row.get(1))
    }

    /// `SELECT hooks.publish($1::jsonb)` on the test's connection; returns the event id.
    pub async fn publish(&self, event: &Value) -> i64 {
        publish_on(&self.client, event).await
    }

    /// Publishes `n` events of `event_type` for `tenant` in one statement (`data.n` = 1..n).
    pub async fn publish_series(&self, tenant: &str, event_type: &str, n: i64) {
        let published: i64 = self
            .client
            .query_one(
                "SELECT count(hooks.publish(jsonb_build_object(
                     'event', $1::text, 'data', jsonb_build_object('tenantId', $2::text, 'n', g))))
                   FROM generate_series(1, $3::bigint) g",
                &[&event_type, &tenant, &n],
            )
            .await
            .unwrap_or_else(|e| panic!("publishing {n} x {event_type}: {e}"))
            .get(0);
        assert_eq!(published, n);
    }

    /// Drops the database now (also done on drop).
    pub async fn cleanup(mut self) {
        self.dropped = true;
        let admin = connect(&admin_url()).await;
        drop_database(&admin, &self.name).await;
    }
}

/// Every row of every table of schema hooks as text, sorted, read on `client`.
pub async fn snapshot_rows(client: &Client) -> Vec<String> {
    let tables: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = 'hooks'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .expect("tables of schema hooks")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 9, "schema hooks has only {tables:?}");
    let mut rows = Vec::new();
    for t in tables {
        let q = format!("SELECT '{t}: ' || r::text FROM {t} r ORDER BY r::text");
        for row in client.query(q.as_str(), &[]).await.expect("rows") {
            rows.push(row.get(0));
        }
    }
    rows
}

/// `SELECT hooks.publish($1::jsonb)` on any connection (e.g. inside a transaction).
pub async fn publish_on<C: tokio_postgres::GenericClient>(client: &C, event: &Value) -> i64 {
    let row = client
        .query_one(
            "SELECT hooks.publish($1::text::jsonb)",
            &[&event.to_string()],
        )
        .await
        .unwrap_or_else(|e| panic!("hooks.publish({event}): {e:?}"));
    row.get(0)
}

/// Once per process: drops `beema_e2e_<pid>_...` databases left by test processes that no
/// longer run (killed before their cleanup could run).
async fn sweep_leftovers(admin: &Client) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'beema\\_e2e\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                drop_database(admin, &name).await;
            }
        }
    }
}

async fn drop_database(admin: &Client, name: &str) {
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("warning: DROP DATABASE {name}: {e}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Async cleanup cannot run inside Drop on the test's runtime: use a thread with its own.
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let fut = async {
                        if let Ok((admin, conn)) =
                            tokio_postgres::connect(&admin_url(), NoTls).await
                        {
                            let driver = tokio::spawn(conn);
                            drop_database(&admin, &name).await;
                            drop(admin);
                            let _ = driver.await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(30), fut).await;
                });
            }
        });
        let _ = handle.join();
    }
}

/// A webhook to register; `Webhook::new(name, tenant, pattern, url)` plus builder methods.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub name: String,
    pub tenant: String,
    pub event_type: String,
    pub url: String,
    /// `None`: the extension generates a `whsec_` secret.
    pub secret: Option<String>,
    pub enabled: bool,
    pub headers: Value,
    pub retry_config: Value,
    pub timeout_ms: i32,
}

impl Webhook {
    pub fn new(name: &str, tenant: &str, event_type: &str, url: &str) -> Webhook {
        Webhook {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            event_type: event_type.to_owned(),
            url: url.to_owned(),
            secret: Some(format!("secret-of-{name}")),
            enabled: true,
            headers: serde_json::json!({}),
            retry_config: serde_json::json!({"maxAttempts": 3, "backoffMs": 100}),
            timeout_ms: 5000,
        }
    }
    pub fn secret(mut self, s: Option<&str>) -> Self {
        self.secret = s.map(str::to_owned);
        self
    }
    pub fn enabled(mut self, e: bool) -> Self {
        self.enabled = e;
        self
    }
    pub fn headers(mut self, h: Value) -> Self {
        self.headers = h;
        self
    }
    pub fn retry(mut self, max_attempts: i64, backoff_ms: i64) -> Self {
        self.retry_config =
            serde_json::json!({"maxAttempts": max_attempts, "backoffMs": backoff_ms});
        self
    }
    /// The whole `retry_config` (a backoff strategy, jitter off, ...).
    pub fn retry_config(mut self, config: Value) -> Self {
        self.retry_config = config;
        self
    }
    pub fn timeout_ms(mut self, ms: i32) -> Self {
        self.timeout_ms = ms;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(
            with_database("postgres://u@h:1/p?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
