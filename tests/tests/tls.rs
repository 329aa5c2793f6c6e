//! TLS between the sender and Postgres, on a throwaway cluster of the test's own (the shared
//! cluster is never touched) with `ssl = on`, a certificate for IP 127.0.0.1 signed by a CA the
//! test makes with `openssl`, and a `hostssl`-only pg_hba for 127.0.0.1, so no plain TCP
//! connection gets in:
//!
//! - `sslmode=require` + `--pg-ca-file` delivers, and every backend of the sender is on TLS
//!   (logged in with SCRAM and `channel_binding=require`, so the TLS channel binding works);
//! - `sslmode=prefer` (the default) without a CA file delivers too, encrypted, as libpq would;
//! - what cannot be verified is refused with the certificate error in `/healthz` and the log,
//!   and the sender keeps retrying (its documented behaviour on a bad connection): no CA file
//!   (the system's roots do not know the test CA), the wrong CA (also under `prefer`, where
//!   a CA file turns the check on), and the right CA but the wrong host name (`host=localhost`,
//!   `hostaddr=127.0.0.1`: `require` checks the name, as libpq's `verify-full`);
//! - `sslmode=disable` is turned away by pg_hba; an unreadable CA file exits 2 before connecting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use beema_hooks_e2e::chaos_helpers::{Cluster, LoggedSender};
use beema_hooks_e2e::db::connect;
use beema_hooks_e2e::{wait_until, Receiver, Reply};
use tokio_postgres::{Client, NoTls};

const SECRET: &str = "secret-of-tls";

/// A CA and a server certificate for IP 127.0.0.1 signed by it, plus an unrelated CA; the
/// directory is removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
    fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Makes the files with `openssl`, the server's readable by `owner` (uid, gid) only.
    fn make(owner: (u32, u32)) -> Certs {
        let dir = std::env::temp_dir().join(beema_hooks_e2e::unique_name("beema-tls"));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let certs = Certs { dir };
        let d = &certs.dir;
        for (name, cn) in [("ca", "beema-e2e-test-CA"), ("other-ca", "some-other-CA")] {
            openssl(
                d,
                &format!(
                    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                     -subj /CN={cn} -keyout {name}.key -out {name}.pem \
                     -addext basicConstraints=critical,CA:TRUE \
                     -addext keyUsage=critical,keyCertSign,cRLSign"
                ),
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .expect("server.ext");
        openssl(
            d,
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
             -keyout server.key -out server.csr",
        );
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -out server.pem",
        );
        use std::os::unix::fs::PermissionsExt;
        for f in [certs.server_cert(), certs.server_key()] {
            std::os::unix::fs::chown(&f, Some(owner.0), Some(owner.1)).expect("chown");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        certs
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` with `args` (split on whitespace) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn show(admin: &Client, setting: &str) -> String {
    admin
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
        .get(0)
}

/// A throwaway cluster with the extension and one webhook to `rx`, then switched to TLS only;
/// returns it with the admin session (opened before the switch, over plain TCP, and kept).
async fn tls_only_cluster(rx: &Receiver) -> (Cluster, Client, Certs) {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let admin = connect(&cluster.url()).await;
    admin
        .batch_execute("CREATE EXTENSION beema_hooks")
        .await
        .unwrap_or_else(|e| panic!("CREATE EXTENSION on the throwaway cluster: {e:?}"));
    admin
        .execute(
            "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, retry_config, timeout_ms)
             VALUES ('acme', 'tls', '*', $1, $2, '{\"maxAttempts\": 5, \"backoffMs\": 100}', 2000)",
            &[&rx.url("/tls"), &SECRET],
        )
        .await
        .unwrap();

    // The server's key must belong to the user the server runs as: the data directory's owner.
    let data = show(&admin, "data_directory").await;
    let meta = std::fs::metadata(&data).expect("stat data_directory");
    use std::os::unix::fs::MetadataExt;
    let certs = Certs::make((meta.uid(), meta.gid()));

    for (name, value) in [
        ("ssl_cert_file", certs.server_cert()),
        ("ssl_key_file", certs.server_key()),
    ] {
        admin
            .batch_execute(&format!("ALTER SYSTEM SET {name} = '{}'", value.display()))
            .await
            .unwrap();
    }
    admin
        .batch_execute("ALTER SYSTEM SET ssl = on")
        .await
        .unwrap();
    // A password login (SCRAM) for the channel-binding check.
    admin
        .batch_execute("CREATE ROLE hooks_tls LOGIN SUPERUSER PASSWORD 'tls-pw'")
        .await
        .unwrap();
    let hba = show(&admin, "hba_file").await;
    std::fs::write(
        &hba,
        "local all all trust\n\
         hostssl all hooks_tls 127.0.0.1/32 scram-sha-256\n\
         hostssl all all 127.0.0.1/32 trust\n",
    )
    .expect("write pg_hba.conf");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();

    // Plain TCP is turned away from now on (28000: no pg_hba.conf entry ... no encryption).
    let url = cluster.url();
    wait_until(
        "pg_hba.conf reloaded: hostssl only",
        Duration::from_secs(10),
        || async {
            match tokio_postgres::connect(&url, NoTls).await {
                Ok(_) => false,
                Err(e) => e
                    .as_db_error()
                    .is_some_and(|db| db.code().code() == "28000"),
            }
        },
    )
    .await;
    assert_eq!(show(&admin, "ssl").await, "on");
    (cluster, admin, certs)
}

/// `postgres://postgres@<host>:<port>/postgres?<query>`.
fn url(cluster: &Cluster, host: &str, query: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/postgres?{query}",
        cluster.port()
    )
}

async fn healthz(s: &LoggedSender) -> (u16, String) {
    s.admin_get("/healthz").await.unwrap_or((0, String::new()))
}

/// Backends of senders (their claim and LISTEN connections): (total, on TLS).
async fn sender_backends(admin: &Client) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = 'beema-hooks-sender'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn publish(admin: &Client, n: i32) {
    admin
        .execute(
            "SELECT hooks.publish(jsonb_build_object('event', 'tls/check', 'data',
                 jsonb_build_object('tenantId', 'acme', 'n', $1::int)))",
            &[&n],
        )
        .await
        .unwrap();
}

/// `require` with the CA file delivers over verified TLS, with a SCRAM login bound to the TLS
/// channel; so does the default (`prefer`) with no CA file, as libpq's opportunistic
/// encryption. Both senders' backends are all on TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_and_opportunistic_tls_deliver() {
    let rx = Receiver::start().await;
    rx.always("/tls", Reply::ok());
    let (cluster, admin, certs) = tls_only_cluster(&rx).await;
    let ca = certs.ca().display().to_string();

    let mut verified = LoggedSender::start(
        &format!(
            "postgres://hooks_tls:tls-pw@127.0.0.1:{}/postgres?sslmode=require&channel_binding=require",
            cluster.port()
        ),
        "info",
        &["--pg-ca-file", &ca],
    );
    wait_until(
        "the verified sender is healthy",
        Duration::from_secs(20),
        || async { healthz(&verified).await.0 == 200 },
    )
    .await;
    assert!(
        verified
            .log()
            .contains("certificate and host name verified against --pg-ca-file (1 certificate)"),
        "the startup line says how the server is verified:\n{}",
        verified.log()
    );
    publish(&admin, 1).await;
    wait_until(
        "a delivery through the verified sender",
        Duration::from_secs(20),
        || async { rx.count() >= 1 },
    )
    .await;
    let first = &rx.requests_to("/tls")[0];
    first.verify(SECRET).unwrap();
    assert_eq!(first.json()["data"]["n"], 1);
    wait_until(
        "all three sender connections (LISTEN, claims, results) on TLS",
        Duration::from_secs(10),
        || async { sender_backends(&admin).await == (3, 3) },
    )
    .await;
    assert_eq!(
        verified
            .terminate(Duration::from_secs(20))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    wait_until(
        "the verified sender's backends gone",
        Duration::from_secs(10),
        || async { sender_backends(&admin).await.0 == 0 },
    )
    .await;

    // No sslmode at all: libpq's default, prefer.
    let mut opportunistic = LoggedSender::start(
        &url(&cluster, "127.0.0.1", "connect_timeout=5"),
        "info",
        &[],
    );
    wait_until(
        "the prefer sender is healthy",
        Duration::from_secs(20),
        || async { healthz(&opportunistic).await.0 == 200 },
    )
    .await;
    assert!(opportunistic
        .log()
        .contains("certificate not checked (sslmode=prefer without --pg-ca-file)"));
    publish(&admin, 2).await;
    wait_until(
        "a delivery through the prefer sender",
        Duration::from_secs(20),
        || async { rx.count() >= 2 },
    )
    .await;
    assert_eq!(rx.requests_to("/tls")[1].json()["data"]["n"], 2);
    wait_until(
        "all three prefer connections on TLS",
        Duration::from_secs(10),
        || async { sender_backends(&admin).await == (3, 3) },
    )
    .await;
    assert_eq!(
        opportunistic
            .terminate(Duration::from_secs(20))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    drop(cluster);
}

/// What cannot be verified never connects: `/healthz` answers 503 with the certificate error,
/// the log has it, the sender keeps running and retrying, and nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_verified_is_refused() {
    let rx = Receiver::start().await;
    rx.always("/tls", Reply::ok());
    let (cluster, admin, certs) = tls_only_cluster(&rx).await;
    publish(&admin, 1).await;
    let ca = certs.ca().display().to_string();
    let other = certs.other_ca().display().to_string();

    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "require, system roots",
            url(&cluster, "127.0.0.1", "sslmode=require"),
            vec![],
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "require, the wrong CA",
            url(&cluster, "127.0.0.1", "sslmode=require"),
            vec!["--pg-ca-file", &other],
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "prefer, the wrong CA",
            url(&cluster, "127.0.0.1", "sslmode=prefer"),
            vec!["--pg-ca-file", &other],
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "require, the right CA, the wrong name",
            url(&cluster, "localhost", "sslmode=require&hostaddr=127.0.0.1"),
            vec!["--pg-ca-file", &ca],
            "certificate not valid for name \"localhost\"",
        ),
        (
            "disable",
            url(&cluster, "127.0.0.1", "sslmode=disable"),
            vec![],
            "no pg_hba.conf entry",
        ),
    ];
    let mut senders = Vec::new();
    for (what, url, args, _) in &cases {
        senders.push((*what, LoggedSender::start(url, "info", args)));
    }
    for ((what, sender), (_, _, _, want)) in senders.iter().zip(&cases) {
        wait_until(
            &format!("{what}: /healthz 503 with the cause"),
            Duration::from_secs(20),
            || async {
                let (code, body) = healthz(sender).await;
                code == 503 && body.contains(want)
            },
        )
        .await;
        let log = sender.log();
        assert!(
            log.contains(want),
            "{what}: the log names the cause ({want}):\n{log}"
        );
    }
    // Still running and retrying after a few backoffs; nothing delivered, nothing connected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (what, sender) in &mut senders {
        assert_eq!(healthz(sender).await.0, 503, "{what}");
        // (its first connections, the transaction-pooler check, are retried before it claims)
        let log = sender.log();
        assert!(
            log.matches("cannot reach the database yet").count()
                + log.matches("claim failed").count()
                >= 2,
            "{what}: the sender retries:\n{log}"
        );
    }
    assert_eq!(rx.count(), 0, "nothing may be delivered");
    assert_eq!(
        sender_backends(&admin).await.0,
        0,
        "no sender got a session"
    );
    let pending: i64 = admin
        .query_one(
            "SELECT count(*) FROM hooks.deliveries WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);

    // An unreadable CA file is a configuration error: exit 2 before connecting.
    let out = tokio::process::Command::new(beema_hooks_e2e::sender::sender_bin())
        .env_clear()
        .env(
            "DATABASE_URL",
            url(&cluster, "127.0.0.1", "sslmode=require"),
        )
        .args([
            "--pg-ca-file",
            "/nonexistent/ca.pem",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .expect("run the sender");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--pg-ca-file /nonexistent/ca.pem: cannot read"),
        "{stderr}"
    );
    drop(senders);
    drop(cluster);
}
