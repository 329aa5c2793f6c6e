//! The real `beema-hooks-sender` binary as a child process: started with the test database's URL,
//! a short poll interval, an admin port of its own and a unique sender id; stopped with SIGTERM
//! (graceful) or SIGKILL; killed when dropped. Its log goes to a file, printed when a test fails.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The sender binary: `HOOKS_SENDER_BIN`, or `$CARGO_TARGET_DIR/release/beema-hooks-sender`
/// with `CARGO_TARGET_DIR` defaulting to `$HOME/.cache/beema-hooks/target`.
pub fn sender_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOOKS_SENDER_BIN").filter(|s| !s.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/beema-hooks/target")
        });
    target.join("release/beema-hooks-sender")
}

/// How to start a sender.
#[derive(Clone, Debug)]
pub struct SenderOptions {
    pub allow_private_targets: bool,
    pub concurrency: u32,
    pub poll_interval_ms: u64,
    pub lease_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub sender_id: Option<String>,
    pub extra_args: Vec<String>,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            allow_private_targets: true,
            concurrency: 16,
            poll_interval_ms: 200,
            lease_secs: None,
            shutdown_grace_secs: None,
            sender_id: None,
            extra_args: Vec::new(),
        }
    }
}

/// A running sender process.
pub struct Sender {
    child: Child,
    pub sender_id: String,
    pub admin_addr: String,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Sender {
    /// Starts the sender against `database_url` with `opts`.
    pub fn start(database_url: &str, opts: SenderOptions) -> Sender {
        let bin = sender_bin();
        assert!(
            bin.exists(),
            "sender binary {} not found: build it with `CARGO_TARGET_DIR=$HOME/.cache/beema-hooks/target cargo build --release -p beema-hooks-sender` or set HOOKS_SENDER_BIN",
            bin.display()
        );
        let sender_id = opts
            .sender_id
            .clone()
            .unwrap_or_else(|| crate::unique_name("e2e-sender"));
        let admin_addr = format!("127.0.0.1:{}", crate::ports::free_port());
        let log_dir = std::env::temp_dir().join("beema-e2e-logs");
        std::fs::create_dir_all(&log_dir).expect("create log dir");
        let log_path = log_dir.join(format!("{sender_id}.log"));
        let log = std::fs::File::create(&log_path).expect("create sender log");
        let log2 = log.try_clone().expect("clone log handle");

        let mut cmd = Command::new(&bin);
        // Only the flags under test: the environment must not leak settings from the shell.
        for var in [
            "DATABASE_URL",
            "HOOKS_ALLOW_PRIVATE_TARGETS",
            "HOOKS_ADMIN_ADDR",
            "HOOKS_CONCURRENCY",
            "HOOKS_SENDER_ID",
            "HOOKS_POLL_INTERVAL_MS",
            "HOOKS_LEASE_SECS",
            "HOOKS_SHUTDOWN_GRACE_SECS",
            "HOOKS_BATCH_SIZE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DATABASE_URL", database_url)
            .env(
                "RUST_LOG",
                std::env::var("E2E_SENDER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .arg("--admin-addr")
            .arg(&admin_addr)
            .arg("--concurrency")
            .arg(opts.concurrency.to_string())
            .arg("--sender-id")
            .arg(&sender_id)
            .arg("--poll-interval-ms")
            .arg(opts.poll_interval_ms.to_string());
        if opts.allow_private_targets {
            cmd.arg("--allow-private-targets");
        }
        if let Some(s) = opts.lease_secs {
            cmd.arg("--lease-secs").arg(s.to_string());
        }
        if let Some(s) = opts.shutdown_grace_secs {
            cmd.arg("--shutdown-grace-secs").arg(s.to_string());
        }
        cmd.args(&opts.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Sender {
            child,
            sender_id,
            admin_addr,
            log_path,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid();
        assert!(pid > 0, "sender {} already reaped", self.sender_id);
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// SIGTERM: graceful shutdown.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10)).await;
    }

    /// Waits for the process to exit; None after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => {
                self.exited = Some(s);
                Some(s)
            }
            _ => None,
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// The sender's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            // The last 16 KiB is enough to see what went wrong.
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// GET `path` on the admin port; returns (status line, full response).
    pub async fn admin_get(&self, path: &str) -> std::io::Result<(String, String)> {
        let mut s = tokio::net::TcpStream::connect(&self.admin_addr).await?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.admin_addr
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "admin read timeout")
            })??;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.lines().next().unwrap_or("").to_owned();
        Ok((status, text))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of sender {} ({}) -----\n{}\n----- end of sender log -----",
                self.sender_id,
                self.log_path.display(),
                self.log()
            );
        }
        if self.exited.is_none() {
            let _ = self.child.start_kill();
        }
    }
}
