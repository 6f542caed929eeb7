//! Loopback addresses for local clusters: tests, the load generator and the
//! chaos tool.
//!
//! A local cluster must know its nodes' addresses before the nodes start,
//! and a restarted node binds its address again. An address found by
//! binding port 0 and releasing the socket lies in the kernel's ephemeral
//! range, so between the release and the (re)bind the kernel may hand the
//! same port to any socket that binds port 0 or connects out — seen as
//! "Address already in use" under load. [`loopback_address`] picks ports
//! below that range (`/proc/sys/net/ipv4/ip_local_port_range`) instead,
//! where only explicit binds land, checks that each is free for both UDP
//! and TCP, and never hands out the same port twice in one process.
//!
//! ```
//! let address = barge_net::ports::loopback_address().expect("a free port");
//! assert!(address.ip().is_loopback());
//! std::net::UdpSocket::bind(address).expect("still free");
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out: above the well-known and most registered
/// service ports.
const FIRST_PORT: u16 = 10_000;

/// Below this many candidate ports (the ephemeral range starts low) the
/// kernel's own choice is used instead.
const CANDIDATES_MIN: u32 = 1_024;

/// Where Linux's ephemeral range starts when the range cannot be read.
const EPHEMERAL_FIRST_DEFAULT: u16 = 32_768;

/// How many ports this process has tried so far.
static TRIED: AtomicU32 = AtomicU32::new(0);

/// 127.0.0.1 with a port that is free for UDP and TCP now and outside the
/// kernel's ephemeral range, distinct from every port this process got
/// before. Falls back to a kernel-chosen port when the range below the
/// ephemeral one is too small.
///
/// # Errors
/// Every candidate port is taken, or binding fails for another reason.
pub fn loopback_address() -> io::Result<SocketAddr> {
    let candidates = u32::from(ephemeral_first().saturating_sub(FIRST_PORT));
    if candidates < CANDIDATES_MIN {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        return socket.local_addr();
    }
    // Processes started together begin at different places.
    static START: OnceLock<u32> = OnceLock::new();
    let start = *START.get_or_init(|| std::process::id().wrapping_mul(7_919) % candidates);
    for _ in 0..candidates {
        let tried = TRIED.fetch_add(1, Ordering::Relaxed);
        let offset = start.wrapping_add(tried) % candidates;
        // `offset < candidates <= u16::MAX - FIRST_PORT`: the sum fits.
        let port = FIRST_PORT + offset as u16;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let free = UdpSocket::bind(address).is_ok() && TcpListener::bind(address).is_ok();
        if free {
            return Ok(address);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no free loopback port in {FIRST_PORT}..{}",
            ephemeral_first()
        ),
    ))
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_first() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_FIRST_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_free_and_below_the_ephemeral_range() {
        let addresses: Vec<SocketAddr> = (0..64)
            .map(|_| loopback_address().expect("address"))
            .collect();
        let mut ports: Vec<u16> = addresses.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), addresses.len(), "a port was handed out twice");
        for address in &addresses {
            assert!(address.ip().is_loopback());
            if ephemeral_first() >= FIRST_PORT + CANDIDATES_MIN as u16 {
                assert!(
                    (FIRST_PORT..ephemeral_first()).contains(&address.port()),
                    "{address} is not below the ephemeral range"
                );
            }
            UdpSocket::bind(address).expect("UDP still free");
            TcpListener::bind(address).expect("TCP still free");
        }
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let first = loopback_address().expect("address");
        // Take the next candidate: the one after it must come back instead.
        let next = SocketAddr::from((Ipv4Addr::LOCALHOST, first.port() + 1));
        let _held = UdpSocket::bind(next);
        let second = loopback_address().expect("address");
        assert_ne!(second, first);
        assert_ne!(second, next, "handed out a port that is bound");
    }
}
