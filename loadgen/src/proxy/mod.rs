//! A userspace UDP fault proxy placed in front of each node: partitions
//! (symmetric, one-way, flapping), loss, duplication, delay, jitter and
//! reordering for QUIC traffic, without `tc netem` or network namespaces.
//!
//! # Wiring
//!
//! Node `N` binds its QUIC endpoint at its real address `R_N`
//! ([`ProxyConfig::nodes`]); the proxy binds a front address `F_N`
//! ([`FaultProxy::front`]) for it, and every node is told that node `N`
//! lives at `F_N`. A datagram from node `A` to `F_B` arrives with source
//! `R_A` (a QUIC endpoint sends from its one bound socket), which names the
//! directed link `A → B`. The proxy forwards it from an upstream socket
//! `U_AB` (one per ordered pair) to `R_B`; `B`'s replies arrive on `U_AB` and
//! go back to `R_A` from `F_B`'s socket, as link `B → A`, so `A` sees replies
//! from the address it dialled. A node restarted at the same `R_N` works
//! through the proxy again at once: the proxy keeps no per-connection state.
//! Datagrams from any other source are dropped and counted
//! ([`ProxyStats::dropped_unknown`]).
//!
//! # Faults
//!
//! Each directed link has [`LinkFaults`], read for every datagram, so a
//! `set_*` call takes effect from the next datagram on. In order: a blocked
//! link drops; then `loss` drops; then `duplicate` sends a second copy; then
//! each copy waits `delay` plus a uniform extra in `[0, jitter]`, and with
//! probability `reorder` is held back by another `delay` plus jitter. Held
//! datagrams leave in order of their due time (ties in arrival order), so
//! `delay` alone never reorders, while jitter and `reorder` do. At most
//! [`ProxyConfig::delayed_packets_max`] datagrams are held at once; the
//! excess is dropped and counted. Randomness comes from one generator seeded
//! with [`ProxyConfig::seed`], so a run with the same arrival order makes the
//! same choices.
//!
//! # Threads
//!
//! The proxy runs on its own thread with its own current-thread Tokio
//! runtime (never the caller's), one task per socket and one timer task for
//! held datagrams. [`FaultProxy::shutdown`] (or dropping the proxy) stops
//! the runtime, closes every socket and joins the thread; it does not wait
//! for held datagrams.
//!
//! # Example
//!
//! Node 1 sends a datagram to node 2 through the proxy and gets the echo
//! back from node 2's front address; then the link from 1 to 2 is cut.
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use barge_loadgen::proxy::{FaultProxy, LinkFaults, ProxyConfig};
//!
//! # fn main() -> std::io::Result<()> {
//! let one = UdpSocket::bind("127.0.0.1:0")?;
//! let two = UdpSocket::bind("127.0.0.1:0")?;
//! one.set_read_timeout(Some(Duration::from_secs(5)))?;
//! two.set_read_timeout(Some(Duration::from_secs(5)))?;
//! let proxy = FaultProxy::start(ProxyConfig::new(vec![
//!     (1, one.local_addr()?),
//!     (2, two.local_addr()?),
//! ]))?;
//! let front_two = proxy.front(2).expect("node 2 is configured");
//!
//! one.send_to(b"ping", front_two)?;
//! let mut buffer = [0u8; 64];
//! let (length, from) = two.recv_from(&mut buffer)?;
//! assert_eq!(&buffer[..length], b"ping");
//! two.send_to(b"pong", from)?; // back through the proxy
//! let (length, from) = one.recv_from(&mut buffer)?;
//! assert_eq!((&buffer[..length], from), (&b"pong"[..], front_two));
//!
//! proxy.set_link(1, 2, LinkFaults { blocked: true, ..LinkFaults::default() });
//! one.send_to(b"lost", front_two)?;
//! two.set_read_timeout(Some(Duration::from_millis(200)))?;
//! assert!(two.recv_from(&mut buffer).is_err());
//! assert_eq!(proxy.stats().dropped_blocked, 1);
//! proxy.shutdown();
//! # Ok(())
//! # }
//! ```

mod forward;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use forward::{Counters, Shared};

/// A node's identity in the proxy's configuration (the engine's `NodeId.0`).
pub type NodeId = u64;

/// The faults applied to one directed link. The default is a perfect link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Partition: every datagram on this directed link is dropped.
    pub blocked: bool,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram is sent twice.
    pub duplicate: f64,
    /// One-way delay added to every datagram. A datagram is held at most
    /// an hour in total, whatever `delay`, `jitter` and `reorder` add up to.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]` per datagram; reorders datagrams.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is held back by another
    /// `delay` plus jitter. Has no effect while `delay` and `jitter` are zero.
    pub reorder: f64,
}

/// What the proxy stands in front of, and its bounds.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Each node and the real address `R_N` its QUIC endpoint binds.
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// Seed of the generator behind every loss, duplication and delay choice.
    pub seed: u64,
    /// Bound on datagrams held for delay at once; the excess is dropped and
    /// counted in [`ProxyStats::dropped_overflow`]. Each held datagram takes
    /// its own length, so held memory stays below `delayed_packets_max *
    /// datagram_bytes_max` (QUIC datagrams are about 1.2 to 1.5 KB).
    pub delayed_packets_max: usize,
    /// Largest datagram forwarded; larger ones are dropped and counted in
    /// [`ProxyStats::dropped_oversized`]. 65535 passes every UDP datagram.
    pub datagram_bytes_max: usize,
}

impl ProxyConfig {
    /// A configuration for `nodes` with seed 0, at most 16,384 held
    /// datagrams and datagrams up to 65,535 bytes.
    pub fn new(nodes: Vec<(NodeId, SocketAddr)>) -> ProxyConfig {
        ProxyConfig {
            nodes,
            seed: 0,
            delayed_packets_max: 16_384,
            datagram_bytes_max: 65_535,
        }
    }
}

/// Counts of what the proxy did with datagrams since it started. Each copy
/// of a duplicated datagram counts once in `forwarded` when it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams sent on to their destination (after any delay).
    pub forwarded: u64,
    /// Dropped because their link was blocked.
    pub dropped_blocked: u64,
    /// Dropped by the link's `loss` probability.
    pub dropped_loss: u64,
    /// Datagrams that were sent twice.
    pub duplicated: u64,
    /// Datagram copies held back for a delay.
    pub delayed: u64,
    /// Dropped because `delayed_packets_max` datagrams were already held.
    pub dropped_overflow: u64,
    /// Dropped because they came from an address that is no configured node.
    pub dropped_unknown: u64,
    /// Dropped because they were larger than `datagram_bytes_max`.
    pub dropped_oversized: u64,
    /// Socket errors on receive or send; the datagram is lost and the
    /// proxy goes on. (A node that is down is no error: without
    /// `IP_RECVERR` Linux does not report "port unreachable" on an
    /// unconnected socket, so datagrams to it just vanish.)
    pub io_errors: u64,
}

/// A running fault proxy. See the [module docs](self).
pub struct FaultProxy {
    shared: Arc<Shared>,
    fronts: HashMap<NodeId, SocketAddr>,
    node_ids: Vec<NodeId>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds a front socket for every node and one upstream socket for every
    /// ordered pair of nodes (all on `127.0.0.1`, ephemeral ports), then
    /// starts forwarding on a thread of its own. Every link starts perfect.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when a node id or a real address appears twice or
    /// `datagram_bytes_max` is zero; any error from binding a socket or
    /// starting the runtime or thread.
    pub fn start(config: ProxyConfig) -> std::io::Result<FaultProxy> {
        validate(&config)?;
        let count = config.nodes.len();
        let mut fronts = Vec::with_capacity(count);
        let upstream_count = count * count.saturating_sub(1);
        let mut upstreams = Vec::with_capacity(upstream_count);
        for _ in 0..count {
            fronts.push(bind_loopback()?);
        }
        for _ in 0..upstream_count {
            upstreams.push(bind_loopback()?);
        }
        let front_addresses = fronts
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared::new(&config));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sockets = {
            let _context = runtime.enter();
            forward::Sockets::register(fronts, upstreams)?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("barge-fault-proxy".to_owned())
            .spawn(move || forward::run(runtime, sockets, thread_shared, stopped))?;
        Ok(FaultProxy {
            shared,
            fronts: config
                .nodes
                .iter()
                .map(|(node, _)| *node)
                .zip(front_addresses)
                .collect(),
            node_ids: config.nodes.iter().map(|(node, _)| *node).collect(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The front address `F_N` other nodes must use to reach `node`, or
    /// `None` when `node` is not configured.
    pub fn front(&self, node: NodeId) -> Option<SocketAddr> {
        self.fronts.get(&node).copied()
    }

    /// Sets the faults of the directed link `from → to`, from the next
    /// datagram on. A link naming an unconfigured node carries no datagrams,
    /// so setting it has no effect.
    pub fn set_link(&self, from: NodeId, to: NodeId, faults: LinkFaults) {
        self.shared.links.write().insert((from, to), faults);
    }

    /// Sets the same faults on every directed link (including `blocked`, so
    /// this also replaces any partition).
    pub fn set_all(&self, faults: LinkFaults) {
        let mut links = self.shared.links.write();
        for &from in &self.node_ids {
            for &to in &self.node_ids {
                if from != to {
                    links.insert((from, to), faults);
                }
            }
        }
    }

    /// Replaces the current partition: every link between nodes named in
    /// different groups is blocked (both directions), every other link is
    /// unblocked. A node in no group keeps all its links. Other faults
    /// (loss, delay, ...) stay as they are. `partition(&[])` unblocks all.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let group_of: HashMap<NodeId, usize> = groups
            .iter()
            .enumerate()
            .flat_map(|(index, group)| group.iter().map(move |node| (*node, index)))
            .collect();
        let mut links = self.shared.links.write();
        for &from in &self.node_ids {
            for &to in &self.node_ids {
                if from == to {
                    continue;
                }
                let blocked = match (group_of.get(&from), group_of.get(&to)) {
                    (Some(a), Some(b)) => a != b,
                    _ => false,
                };
                links.entry((from, to)).or_default().blocked = blocked;
            }
        }
    }

    /// Every link back to perfect ([`LinkFaults::default`]). Datagrams
    /// already held for delay are still delivered when due.
    pub fn heal(&self) {
        self.shared.links.write().clear();
    }

    /// The faults currently set on the directed link `from → to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkFaults {
        self.shared
            .links
            .read()
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let counters: &Counters = &self.shared.counters;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            forwarded: load(&counters.forwarded),
            dropped_blocked: load(&counters.dropped_blocked),
            dropped_loss: load(&counters.dropped_loss),
            duplicated: load(&counters.duplicated),
            delayed: load(&counters.delayed),
            dropped_overflow: load(&counters.dropped_overflow),
            dropped_unknown: load(&counters.dropped_unknown),
            dropped_oversized: load(&counters.dropped_oversized),
            io_errors: load(&counters.io_errors),
        }
    }

    /// Stops forwarding, closes every socket and joins the proxy thread.
    /// Held datagrams are discarded.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the proxy thread already ended.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the proxy thread is a bug there; it has already been
            // printed, and the proxy is being dropped either way.
            let _ = thread.join();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FaultProxy")
            .field("fronts", &self.fronts)
            .finish_non_exhaustive()
    }
}

fn validate(config: &ProxyConfig) -> std::io::Result<()> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let mut ids = HashSet::new();
    let mut addresses = HashSet::new();
    for (node, address) in &config.nodes {
        if !ids.insert(*node) {
            return Err(invalid(format!(
                "fault proxy: node {node} is configured twice"
            )));
        }
        if !addresses.insert(*address) {
            return Err(invalid(format!(
                "fault proxy: address {address} is configured twice"
            )));
        }
    }
    if config.datagram_bytes_max == 0 {
        return Err(invalid(
            "fault proxy: datagram_bytes_max must be at least 1".to_owned(),
        ));
    }
    Ok(())
}

/// Kernel buffer size asked for on every proxy socket, each way. The
/// default (about 200 KiB) overflows under a QUIC burst, which would add
/// loss nobody configured; the kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`, and memory is only used while
/// datagrams wait.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

fn bind_loopback() -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let options = socket2::SockRef::from(&socket);
    options.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    options.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok(socket)
}
