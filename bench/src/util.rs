//! Small helpers: errors, statistics, Postgres connections, a tiny HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, Error>;

/// `Err(format!(...).into())`
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*).into()) };
}

/// The checkout whose scripts the suite runs: `$BEEMA_ROOT` (exported by `scripts/env.sh`,
/// which `scripts/bench.sh` sources), else the checkout the suite was compiled in. Checkouts
/// share one build directory, and cargo may reuse a binary built in another checkout when its
/// sources are not newer: that checkout may be gone.
pub fn repo_root() -> std::path::PathBuf {
    match std::env::var_os("BEEMA_ROOT") {
        Some(root) if !root.is_empty() => std::path::PathBuf::from(root),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// Median (the mean of the two middle values for an even count); NaN for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The URL of database `db` on the server of `admin_url` (a `postgres://` URL).
pub fn db_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| i + after_scheme)
        .unwrap_or(base.len());
    let mut url = format!("{}/{}", &base[..host_end], db);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// A connection whose driver runs on the current runtime.
pub async fn connect(url: &str) -> Res<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One request on a fresh connection (`Connection: close`): (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> Res<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok::<_, Error>((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(r) => r,
        Err(_) => bail!("http {method} {addr}{path}: timed out"),
    }
}

/// A loopback port for a listener started as another process (nginx, a sender's admin port),
/// free a moment ago. Not one the kernel hands out for `127.0.0.1:0`: those lie in the ephemeral
/// range (32768-60999 by default) that the run's outgoing connections take local ports from, and
/// one of them can take the port before the child binds it. So: 27000-28799 (below the project's
/// clusters at 28815-28821 and the e2e tests' 29000-32699), each port handed out once per run.
pub fn free_port() -> Res<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 27000;
    const SPAN: u32 = 1800;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..SPAN {
        let i = std::process::id().wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = (FIRST + i) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// Formats a number with thousands separators and `decimals` digits.
pub fn num(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (s.clone(), None),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn urls() {
        assert_eq!(
            db_url("postgres://postgres@127.0.0.1:28815/postgres", "bench_p1"),
            "postgres://postgres@127.0.0.1:28815/bench_p1"
        );
        assert_eq!(db_url("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(
            db_url("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234567.891, 1), "1,234,567.9");
        assert_eq!(num(12.0, 0), "12");
        assert_eq!(num(-1234.0, 0), "-1,234");
    }
}
