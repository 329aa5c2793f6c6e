//! Loopback ports for listeners the tests start as other processes (a sender's admin port, a
//! cluster, PgBouncer), which must be named before that process binds them.
//!
//! A port the kernel hands out for `127.0.0.1:0` lies in its ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), the range every outgoing connection
//! of the run (a Postgres client, an HTTP request) takes its local port from: between the check
//! and the child's bind, one of them can take it, and the child fails with "Address already in
//! use". So ports come from below that range, and one process never hands out the same port
//! twice (its tests run in parallel threads).

use std::collections::HashSet;
use std::sync::Mutex;

/// The ports handed out: below the default ephemeral range, above the project's fixed cluster
/// ports (28815-28821).
const RANGE: std::ops::Range<u16> = 29000..32700;

/// A port on 127.0.0.1 that is free now, outside the ephemeral range, and not handed out before
/// by this process.
pub fn free_port() -> u16 {
    static HANDED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let span = (RANGE.end - RANGE.start) as u32;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Processes of one run start at different places in the range.
    let seed = std::process::id().wrapping_mul(2654435761) ^ nanos;
    for i in 0..span {
        let port = RANGE.start + (seed.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port in {RANGE:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

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
