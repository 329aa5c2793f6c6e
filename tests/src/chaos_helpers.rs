//! Helpers for the fault-injection and abuse tests (`tests/chaos.rs`, `tests/hostile.rs`,
//! `tests/bad_input.rs`):
//!
//! - [`RawServer`]: hostile receivers written on raw TCP (reset, close, hang, drip, huge body,
//!   garbage), on 127.0.0.1 or ::1 only, counting the connections they accept.
//! - [`Cluster`]: a throwaway Postgres cluster of the test's own (initdb into
//!   `/tmp/beema-chaos-<pid>-<n>`, a free port, trust auth, 127.0.0.1 only), so that a test can
//!   restart Postgres without touching the shared cluster; stopped and removed on drop.
//! - small probes: [`vm_hwm_kb`], [`healthz`], [`metric`], [`sqlstate_of`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ------------------------------------------------------------------------------------------
// Hostile receivers on raw TCP.
// ------------------------------------------------------------------------------------------

/// What a [`RawServer`] does with each connection.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads the request, then closes with SO_LINGER 0: the peer gets a TCP RST.
    Reset,
    /// Reads the request, then closes normally (FIN) without a byte of response.
    CloseWithoutAnswer,
    /// Reads the request and never answers; keeps the connection open until the peer leaves.
    Hang,
    /// Sends the status line and headers one byte every `every`.
    DripHeaders { every: Duration },
    /// Sends `status` with `Content-Length: len` at once, then the body one byte every `every`.
    DripBody {
        status: u16,
        len: usize,
        every: Duration,
    },
    /// Sends `status` with a body of `len` bytes (`Content-Length`), as fast as the peer reads;
    /// the body starts with `BIGBODY:` then repeats `x`.
    BigBody { status: u16, len: usize },
    /// Reads the request, answers with these bytes (not HTTP) and closes.
    Garbage(Vec<u8>),
    /// Reads the request and answers `200 ok`, `Connection: close`.
    Ok,
}

/// A TCP server on a loopback address that treats every connection with one [`Behaviour`].
/// Stops accepting (and drops held connections) when dropped.
pub struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl RawServer {
    /// Serves on `127.0.0.1:0`.
    pub async fn start(behaviour: Behaviour) -> RawServer {
        Self::start_on("127.0.0.1:0", behaviour).await
    }

    /// Serves on `bind` (must be a loopback address, e.g. `[::1]:0`).
    pub async fn start_on(bind: &str, behaviour: Behaviour) -> RawServer {
        let listener = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        assert!(
            addr.ip().is_loopback(),
            "raw servers listen on loopback only"
        );
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (acc, req, arr) = (accepted.clone(), requests.clone(), arrivals.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (b, req, arr) = (behaviour.clone(), req.clone(), arr.clone());
                // Held in the JoinSet: dropping the server aborts every connection task.
                conns.spawn(async move {
                    let _ = serve(stream, b, req, arr).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        RawServer {
            addr,
            accepted,
            requests,
            arrivals,
            task,
        }
    }

    /// `http://<addr><path>` (IPv6 addresses in brackets).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Complete request heads read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// When each request head arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and `Content-Length` body) within 10 s; false if the peer left.
async fn read_request(s: &mut TcpStream) -> bool {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let work = async {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or(false)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// SO_LINGER {on, 0}: closing the socket sends a RST instead of a FIN.
fn set_zero_linger(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

async fn serve(
    mut s: TcpStream,
    b: Behaviour,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
) -> std::io::Result<()> {
    if let Behaviour::DripHeaders { every } = &b {
        // Answer while the request is still being read: the client waits for the head anyway.
        let _ = read_request(&mut s).await;
        requests.fetch_add(1, Ordering::SeqCst);
        arrivals.lock().unwrap().push(Instant::now());
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: yes\r\n\r\nok";
        for byte in head {
            s.write_all(&[*byte]).await?;
            tokio::time::sleep(*every).await;
        }
        return Ok(());
    }
    if !read_request(&mut s).await {
        return Ok(());
    }
    requests.fetch_add(1, Ordering::SeqCst);
    arrivals.lock().unwrap().push(Instant::now());
    match b {
        Behaviour::Reset => {
            set_zero_linger(&s);
            drop(s);
        }
        Behaviour::CloseWithoutAnswer => {
            s.shutdown().await?;
            drop(s);
        }
        Behaviour::Hang => {
            // Wait for the peer to give up (EOF or error); never write.
            let mut sink = [0u8; 1024];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
        Behaviour::DripHeaders { .. } => unreachable!(),
        Behaviour::DripBody { status, len, every } => {
            s.write_all(
                format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n",
                    reason(status)
                )
                .as_bytes(),
            )
            .await?;
            for _ in 0..len {
                s.write_all(b"d").await?;
                tokio::time::sleep(every).await;
            }
        }
        Behaviour::BigBody { status, len } => {
            s.write_all(
                format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n",
                    reason(status)
                )
                .as_bytes(),
            )
            .await?;
            static CHUNK: [u8; 65536] = [b'x'; 65536];
            let mut left = len;
            let prefix = b"BIGBODY:";
            s.write_all(&prefix[..prefix.len().min(left)]).await?;
            left -= prefix.len().min(left);
            while left > 0 {
                let n = left.min(CHUNK.len());
                // A reader that stops reading makes this block: give up after a while.
                match tokio::time::timeout(Duration::from_secs(20), s.write_all(&CHUNK[..n])).await
                {
                    Ok(Ok(())) => left -= n,
                    _ => break,
                }
            }
        }
        Behaviour::Garbage(bytes) => {
            s.write_all(&bytes).await?;
            s.shutdown().await?;
        }
        Behaviour::Ok => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await?;
            s.shutdown().await?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// A throwaway Postgres cluster.
// ------------------------------------------------------------------------------------------

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The Postgres binaries' directory: `PG_BIN`, or Debian's for Postgres 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("PG_BIN")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PG_BIN))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid/gid of the `postgres` OS user.
fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no `postgres` OS user to run the throwaway cluster as"
    );
    // SAFETY: non-null pointer returned by getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A command run as the `postgres` OS user when we are root (Postgres refuses root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// A Postgres cluster of the test's own: initdb'd into a new private directory
/// (`/tmp/beema-chaos-` and a random suffix, made as mktemp makes them: created only if new,
/// mode 0700), trust auth, listening on 127.0.0.1 and a socket in that directory only. Stopped
/// (immediate) and removed when dropped, also when the test fails. Each cluster is noted in this
/// user's registry of clusters ([`cluster_registry`]); the next [`Cluster::start`] stops and
/// removes those of test processes that are gone, and no other directory.
pub struct Cluster {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    /// its note in the registry
    note: PathBuf,
}

impl Cluster {
    /// initdb + start. Takes a few seconds.
    pub fn start() -> Cluster {
        sweep_clusters();
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("beema-chaos-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a private cluster directory")
            .keep();
        let note = cluster_registry().join(format!("{}-{n}", std::process::id()));
        std::fs::write(
            &note,
            std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()),
        )
        .expect("note the cluster");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let data = dir.join("data");
        let port = crate::ports::free_port();
        let cluster = Cluster {
            dir,
            data,
            port,
            note,
        };
        let mut initdb = as_pg(&pg_bin().join("initdb"));
        initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        let out = run(initdb, "initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             max_connections = 50\nshared_buffers = 32MB\nfsync = off\nlog_min_messages = warning\n\
             max_prepared_transactions = 5\n",
            cluster.port,
            cluster.dir.display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
        cluster.pg_ctl_start();
        cluster
    }

    /// Admin URL (database `postgres`).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// URL of database `db` of this cluster.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let mut c = as_pg(&pg_bin().join("pg_ctl"));
        c.arg("-D").arg(&self.data).args(args);
        run(c, "pg_ctl")
    }

    fn check(&self, out: std::process::Output, what: &str) {
        assert!(
            out.status.success(),
            "pg_ctl {what} failed: {}{}\n----- server log -----\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The end of the server log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = s.len().saturating_sub(8000);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_owned()
    }

    /// `pg_ctl start -w`.
    pub fn pg_ctl_start(&self) {
        let log = self.log_path();
        let out = self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        self.check(out, "start");
    }

    /// `pg_ctl stop -m <mode> -w` (`fast` or `immediate`).
    pub fn pg_ctl_stop(&self, mode: &str) {
        let out = self.pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"]);
        self.check(out, &format!("stop -m {mode}"));
    }

    /// `pg_ctl restart -m <mode> -w`.
    pub fn pg_ctl_restart(&self, mode: &str) {
        let log = self.log_path();
        let out = self.pg_ctl(&[
            "-m",
            mode,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "restart",
        ]);
        self.check(out, &format!("restart -m {mode}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- throwaway cluster log ({}) -----\n{}\n----- end -----",
                self.log_path().display(),
                self.log_tail()
            );
        }
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.note);
    }
}

/// This user's registry of throwaway clusters: one file per cluster, `<pid>-<n>`, holding its
/// directory; in the user's cache (`$HOME/.cache/beema-hooks/clusters`, mode 0700), which no
/// other user can write.
fn cluster_registry() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home.join(".cache/beema-hooks/clusters");
    std::fs::create_dir_all(&dir).expect("create the cluster registry");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod the cluster registry");
    dir
}

/// Stops and removes the clusters of the registry whose test process is gone (killed before
/// its clusters were dropped): only directories a test run noted there, never one found by
/// its name.
fn sweep_clusters() {
    let registry = cluster_registry();
    let Ok(entries) = std::fs::read_dir(&registry) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Ok(noted) = std::fs::read(e.path()) else {
            continue;
        };
        let dir =
            PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&noted));
        let is_real_dir = std::fs::symlink_metadata(&dir)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_real_dir {
            let data = dir.join("data");
            if data.join("postmaster.pid").exists() {
                let mut c = as_pg(&pg_bin().join("pg_ctl"));
                c.arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
                let _ = c.output();
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_file(e.path());
    }
}

// ------------------------------------------------------------------------------------------
// Probes.
// ------------------------------------------------------------------------------------------

/// A `Vm*` line of `/proc/<pid>/status`, in kB (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn proc_status_kb(pid: i32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size of a process, in kB.
pub fn vm_hwm_kb(pid: i32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM")
}

/// The status code `GET /healthz` answers on the sender's admin port (0 when unreachable).
pub async fn healthz(sender: &crate::Sender) -> u16 {
    match sender.admin_get("/healthz").await {
        Ok((status_line, _)) => status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// The value of an unlabelled Prometheus sample (`name value`) in `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Runs `sql`; on error returns (SQLSTATE, message, detail).
pub async fn sqlstate_of(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(), (String, String, String)> {
    match client.batch_execute(sql).await {
        Ok(()) => Ok(()),
        Err(e) => match e.as_db_error() {
            Some(db) => Err((
                db.code().code().to_owned(),
                db.message().to_owned(),
                db.detail().unwrap_or("").to_owned(),
            )),
            None => Err(("(no sqlstate)".to_owned(), e.to_string(), String::new())),
        },
    }
}

/// Like [`sqlstate_of`] for a statement with one text parameter.
pub async fn sqlstate_of_with(
    client: &tokio_postgres::Client,
    sql: &str,
    param: &str,
) -> Result<(), (String, String, String)> {
    match client.execute(sql, &[&param]).await {
        Ok(_) => Ok(()),
        Err(e) => match e.as_db_error() {
            Some(db) => Err((
                db.code().code().to_owned(),
                db.message().to_owned(),
                db.detail().unwrap_or("").to_owned(),
            )),
            None => Err(("(no sqlstate)".to_owned(), e.to_string(), String::new())),
        },
    }
}

// ------------------------------------------------------------------------------------------
// A sender with a chosen log filter and environment.
// ------------------------------------------------------------------------------------------

/// A sender process started with a `RUST_LOG` of the test's choosing (the harness's [`Sender`]
/// takes it from the process environment), logging to its own file; killed when dropped, its
/// log printed when a test fails.
///
/// [`Sender`]: crate::Sender
pub struct LoggedSender {
    child: tokio::process::Child,
    pub sender_id: String,
    pub admin_addr: String,
    pub log_path: PathBuf,
}

impl LoggedSender {
    /// Starts the sender binary against `database_url` with `RUST_LOG=rust_log`, a 200 ms poll,
    /// `--allow-private-targets` and `extra_args`.
    pub fn start(database_url: &str, rust_log: &str, extra_args: &[&str]) -> LoggedSender {
        let bin = crate::sender::sender_bin();
        let sender_id = crate::unique_name("chaos-sender");
        let port = crate::ports::free_port();
        let admin_addr = format!("127.0.0.1:{port}");
        // (beside the test binaries, in the build directory: no name in /tmp to be planted)
        let dir = std::env::current_exe()
            .expect("the test binary's path")
            .parent()
            .expect("its directory")
            .join("beema-e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log_path = dir.join(format!("{sender_id}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let log2 = log.try_clone().expect("log handle");
        let mut cmd = tokio::process::Command::new(&bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HOOKS_") || k == "DATABASE_URL" {
                cmd.env_remove(k);
            }
        }
        cmd.env("DATABASE_URL", database_url)
            .env("RUST_LOG", rust_log)
            .args(["--admin-addr", &admin_addr, "--sender-id", &sender_id])
            .args(["--poll-interval-ms", "200", "--allow-private-targets"])
            .args(extra_args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(log))
            .stderr(std::process::Stdio::from(log2))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        LoggedSender {
            child,
            sender_id,
            admin_addr,
            log_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// GET `path` on the admin port: (status code, body).
    pub async fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        admin_get(&self.admin_addr, path).await
    }

    /// Waits up to `timeout` for the sender to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}

impl Drop for LoggedSender {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(16 * 1024)..];
            eprintln!(
                "----- log of sender {} ({}) -----\n{tail}\n----- end -----",
                self.sender_id,
                self.log_path.display()
            );
        }
        let _ = self.child.start_kill();
    }
}

/// GET `path` from an HTTP server at `addr` (`host:port`): (status code, body).
pub async fn admin_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "admin read timeout"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

// ------------------------------------------------------------------------------------------
// PgBouncer.
// ------------------------------------------------------------------------------------------

/// A PgBouncer (Debian's `pgbouncer`) of the test's own in front of the Postgres at `upstream`
/// (`host`, `port`), in `pool_mode` (`transaction`, `session`), on 127.0.0.1 and a free port,
/// trusting the roles `users`. Config, log and pid file in a new private directory; run as the
/// `postgres` OS user when we are root (PgBouncer refuses root); killed when dropped.
pub struct PgBouncer {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl PgBouncer {
    pub fn start(upstream: (&str, u16), pool_mode: &str, users: &[&str]) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("beema-pgbouncer-")
            .tempdir()
            .expect("a private directory");
        let port = crate::ports::free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users_file = dir.path().join("userlist.txt");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = {pool_mode}\nmax_client_conn = 200\ndefault_pool_size = 5\n\
                 ignore_startup_parameters = extra_float_digits,options\nlogfile = {}\npidfile = {}\n",
                upstream.0,
                upstream.1,
                users_file.display(),
                dir.path().join("pgbouncer.log").display(),
                dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let list: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(&users_file, list).expect("write userlist.txt");
        if is_root() {
            let (uid, gid) = postgres_ids();
            for p in [dir.path(), ini.as_path(), users_file.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown for pgbouncer");
            }
        }
        let mut cmd = as_pg(Path::new("/usr/sbin/pgbouncer"));
        cmd.arg(&ini)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd
            .spawn()
            .expect("start pgbouncer (apt-get install pgbouncer)");
        let bouncer = PgBouncer { child, dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not listen on {port}: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    /// `postgres://user@127.0.0.1:<port>/db`.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- pgbouncer log -----\n{}\n----- end -----", self.log());
        }
        // (runuser's child: kill the group runuser leads, or pgbouncer itself through its pid)
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on the pgbouncer this harness started (its own pid file).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
