//! Free loopback ports for the fixed listen addresses of a test deployment.
//!
//! A config names its listen addresses before any process binds them, so a
//! port is chosen, released, and bound later by the process under test.
//! Ports are taken below the kernel's ephemeral range when it leaves room:
//! every socket bound to port 0 (link proxies, control APIs, the client
//! sockets of all the tests running in parallel) gets an ephemeral port, so a
//! port released there can be taken by someone else before our process binds
//! it. Below the range only explicit choices compete; this process never
//! hands out the same port twice, and each process starts its walk through
//! the range at a different place.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Lowest port handed out below the ephemeral range.
const LOW: u16 = 10_000;
/// The ephemeral range must start above this for there to be room below it.
const ROOM: u16 = 12_000;
/// Attempts below the range before falling back to the kernel's choice.
const TRIES_MAX: u32 = 10_000;

struct Handed {
    /// Every port this process handed out.
    ports: BTreeSet<u16>,
    /// Where the walk through the range continues.
    cursor: u64,
}

static HANDED: Mutex<Option<Handed>> = Mutex::new(None);

/// `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut guard = HANDED.lock().expect("ports");
    let handed = guard.get_or_insert_with(|| Handed { ports: BTreeSet::new(), cursor: start() });
    let high = ephemeral_low();
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        let port = if high > ROOM && tries < TRIES_MAX {
            handed.cursor += 1;
            LOW + (handed.cursor % u64::from(high - LOW)) as u16
        } else {
            // No room below the ephemeral range: let the kernel choose.
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        if handed.ports.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed.ports.insert(port);
        out.push(port);
    }
    out
}

/// One free loopback port.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
}

/// Where this process starts its walk: apart from the processes of the other
/// test binaries that run at the same time.
fn start() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    u64::from(std::process::id()).wrapping_mul(7_919) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(20);
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let again = free_ports(5);
        assert!(again.iter().all(|p| !distinct.contains(p)), "handed out twice: {again:?}");
        for p in ports {
            TcpListener::bind(("127.0.0.1", p)).expect("a free port binds");
        }
    }
}
