//! Loopback ports for listeners the tests start as other processes (a sender's admin port, a
//! cluster, PgBouncer), which must be named before that process binds them.
//!
//! A port the kernel hands out for `127.0.0.1:0` lies in its ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), the range every outgoing connection
//! of the run (a Postgres client, an HTTP request) takes its local port from: between the check
//! and the child's bind, one of them can take it, and the child fails with "Address already in
//! use". So ports come from below that range, and one process never hands out the same port
//! twice (its tests run in parallel threads).

/// The ports handed out: below the default ephemeral range, above the project's fixed cluster
/// ports (28815-28821).
const RANGE: std::ops::Range<u16> = 29000..32700;

/// A port on 127.0.0.1 that is free now, outside the ephemeral range, and not handed out before
/// by this process: each call tries the ports after the last one handed out, from a place in
/// the range that differs between processes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(RANGE.end - RANGE.start);
    for _ in 0..span {
        let i = std::process::id().wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = RANGE.start + i as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {RANGE:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_are_free_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        for p in ports {
            assert!(RANGE.contains(&p), "{p} outside {RANGE:?}");
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
        }
    }
}
