//! Child processes of the suite: the receiver, senders, pgbench and wrk. Every child is stopped
//! when its handle is dropped, so an error anywhere leaves nothing running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bail;
use crate::util::{free_port, http, Res};

/// A child that gets SIGTERM (then SIGKILL after 10 s) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code (None when killed).
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// A field of /proc/<pid>/status in kB (`VmHWM`, `VmRSS`).
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with(&format!("{field}:")))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs_of(self.pid())
    }
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
pub fn cpu_secs_of(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state = field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz)
}

/// The fields of /proc/<pid>/stat after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The parent of a process (for a backend: the postmaster).
fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// CPU seconds used so far by a Postgres cluster: the postmaster's own time, the time of its
/// children that have exited (`cutime` + `cstime`: the postmaster waits for every backend it
/// forked), and the time of its live children. A backend that exits between two readings moves
/// from the live sum to the exited one, so differences of two readings count every backend.
fn cluster_cpu_secs(postmaster: u32) -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |f: &[String], from: usize, n: usize| -> f64 {
        f.iter()
            .skip(from)
            .take(n)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    };
    let mut total = match stat_fields(postmaster) {
        Some(f) => ticks(&f, 11, 4),
        None => return f64::NAN,
    };
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
                    total += ticks(&f, 11, 2);
                }
            }
        }
    }
    total / hz
}

/// What the cluster behind a connection has spent so far: CPU (see `cluster_cpu_secs`) and WAL.
/// The cluster must run on this machine (its processes are read from /proc).
pub struct ClusterMeter {
    postmaster: u32,
}

impl ClusterMeter {
    pub async fn new(db: &tokio_postgres::Client) -> Res<Self> {
        let backend: i32 = db.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        match parent_pid(backend as u32) {
            Some(postmaster) if postmaster > 1 => Ok(Self { postmaster }),
            _ => bail!(
                "cannot find the postmaster of backend {backend} (is the cluster on this machine?)"
            ),
        }
    }

    /// (cluster CPU seconds, WAL insert position in bytes) now.
    pub async fn read(&self, db: &tokio_postgres::Client) -> Res<(f64, f64)> {
        let wal: f64 = db
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
                &[],
            )
            .await?
            .get(0);
        Ok((cluster_cpu_secs(self.postmaster), wal))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The fast receiver, as a child process.
pub struct Receiver {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Receiver {
    pub fn start(bin: &Path, threads: usize) -> Res<Self> {
        let mut child = Command::new(bin)
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().unwrap();
        let proc = Proc {
            name: "bench-receiver".into(),
            child: Some(child),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr: SocketAddr = match line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
        {
            Some(a) => a,
            None => bail!("bench-receiver did not start: {line:?}"),
        };
        Ok(Self { proc, addr })
    }

    pub fn url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("http://{}/hook", self.addr)
        } else {
            format!("http://{}/hook?{query}", self.addr)
        }
    }

    pub async fn reset(&self) -> Res<()> {
        let (code, _) = http(self.addr, "POST", "/_reset").await?;
        if code != 200 {
            bail!("receiver reset: HTTP {code}");
        }
        Ok(())
    }

    pub async fn stats(&self) -> Res<serde_json::Value> {
        let (code, body) = http(self.addr, "GET", "/_stats").await?;
        if code != 200 {
            bail!("receiver stats: HTTP {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub async fn count(&self) -> Res<u64> {
        Ok(self.stats().await?["count"].as_u64().unwrap_or(0))
    }
}

/// nginx (Debian's) answering every request with `200 ok`: a fast receiver that is not ours.
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx in the foreground with a config of its own under `dir`, one worker,
    /// keep-alive without a request limit, no access log.
    pub fn start(bin: &Path, dir: &Path) -> Res<Self> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let d = prefix.display();
        let conf = format!(
            "worker_processes 1;\nerror_log {d}/logs/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen {addr}; location / {{ return 200 \"ok\"; }} }}\n}}\n"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut proc = Proc {
            name: "nginx".into(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if !proc.alive() || Instant::now() > deadline {
                bail!("nginx did not start on {addr} (see {d}/logs/error.log)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { proc, addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

/// One beema-hooks-sender.
pub struct Sender {
    pub proc: Proc,
    pub admin: SocketAddr,
}

impl Sender {
    pub fn start(bin: &Path, db_url: &str, id: &str, concurrency: u32, log: &Path) -> Res<Self> {
        let port = free_port()?;
        let admin: SocketAddr = ([127, 0, 0, 1], port).into();
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .args([
                "--database-url",
                db_url,
                "--allow-private-targets",
                "--admin-addr",
                &admin.to_string(),
                "--concurrency",
                &concurrency.to_string(),
                "--sender-id",
                id,
                "--stats-interval-secs",
                "0",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Self {
            proc: Proc {
                name: format!("sender {id}"),
                child: Some(child),
            },
            admin,
        })
    }

    /// Waits until /healthz answers (the sender is connected).
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Res<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http(self.admin, "GET", "/healthz").await {
                return Ok(());
            }
            if !self.proc.alive() {
                bail!("{} exited at start (see its log)", self.proc.name);
            }
            if Instant::now() > deadline {
                bail!("{} not healthy after {timeout:?}", self.proc.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A gauge or counter from /metrics (the first sample of that name).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http(self.admin, "GET", "/metrics").await.ok()?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split([' ', '{']).next() == Some(name))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Res<()> {
        match self.proc.stop(Duration::from_secs(30)) {
            Some(0) => Ok(()),
            other => bail!("{} exited with {other:?} (see its log)", self.proc.name),
        }
    }
}

/// How long a pgbench run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    Secs(u64),
    Transactions(u64),
}

/// Runs pgbench with a custom script; returns tps (without initial connection time).
pub fn pgbench(
    pgbench: &Path,
    db_url: &str,
    script: &Path,
    clients: u32,
    length: Length,
    defines: &[(&str, String)],
) -> Res<f64> {
    let mut cmd = Command::new(pgbench);
    cmd.args([
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients.to_string(),
        "-j",
        &clients.min(2).to_string(),
    ]);
    match length {
        Length::Secs(s) => cmd.args(["-T", &s.to_string()]),
        Length::Transactions(t) => cmd.args(["-t", &t.to_string()]),
    };
    for (k, v) in defines {
        cmd.args(["-D", &format!("{k}={v}")]);
    }
    cmd.arg("-f").arg(script).arg(db_url);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "pgbench {} failed ({}):\n{stdout}\n{stderr}",
            script.display(),
            out.status
        );
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("number of failed transactions:"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if failed > 0 {
        bail!(
            "pgbench {}: {failed} failed transactions:\n{stdout}\n{stderr}",
            script.display()
        );
    }
    match tps {
        Some(t) => Ok(t),
        None => bail!("pgbench printed no tps:\n{stdout}\n{stderr}"),
    }
}

/// Runs wrk; returns requests/s. Fails on socket errors or non-2xx answers.
pub fn wrk(wrk: &Path, url: &str, script: &Path, conns: u32, threads: u32, secs: u64) -> Res<f64> {
    let out = Command::new(wrk)
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
        ])
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if stdout.contains("Non-2xx") || stdout.contains("Socket errors") {
        bail!("wrk saw errors:\n{stdout}");
    }
    match stdout
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(r) => Ok(r),
        None => bail!("wrk printed no Requests/sec:\n{stdout}"),
    }
}

/// `name` on PATH, or None.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
