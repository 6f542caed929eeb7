//! The proxy thread: one receive task per socket, a fault decision per
//! datagram, and one timer task that sends held datagrams when due.

use std::cmp::Ordering as Order;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::{LinkFaults, NodeId, ProxyConfig};

/// The largest UDP payload there is; no receive buffer needs more.
const UDP_PAYLOAD_BYTES_MAX: usize = 65_535;

/// Longest a datagram is held, whatever the faults say (see
/// [`LinkFaults::delay`]).
const HOLD_MAX: Duration = Duration::from_secs(3600);

/// A socket error that persists (unlike an ICMP report, consumed by one read)
/// would otherwise make a receive loop spin; this pause bounds the spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(1);

/// State shared between the caller's handle and the proxy thread.
pub(super) struct Shared {
    /// Faults per directed link; a missing entry is a perfect link.
    pub(super) links: RwLock<HashMap<(NodeId, NodeId), LinkFaults>>,
    pub(super) counters: Counters,
    nodes: Vec<(NodeId, SocketAddr)>,
    index_by_address: HashMap<SocketAddr, usize>,
    random: Mutex<SmallRng>,
    delayed_packets_max: usize,
    datagram_bytes_max: usize,
}

impl Shared {
    pub(super) fn new(config: &ProxyConfig) -> Shared {
        Shared {
            links: RwLock::new(HashMap::new()),
            counters: Counters::default(),
            nodes: config.nodes.clone(),
            index_by_address: config
                .nodes
                .iter()
                .enumerate()
                .map(|(index, (_, address))| (*address, index))
                .collect(),
            random: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            delayed_packets_max: config.delayed_packets_max,
            datagram_bytes_max: config.datagram_bytes_max,
        }
    }

    /// The delay of each copy of one datagram on `link`, or `None` when it
    /// is dropped. Counts the drop or duplication.
    fn decide(&self, link: (NodeId, NodeId)) -> Option<Copies> {
        let faults = self.links.read().get(&link).copied().unwrap_or_default();
        if faults.blocked {
            bump(&self.counters.dropped_blocked);
            return None;
        }
        let mut random = self.random.lock();
        if chance(&mut random, faults.loss) {
            bump(&self.counters.dropped_loss);
            return None;
        }
        let first = hold_time(&mut random, &faults);
        let second = if chance(&mut random, faults.duplicate) {
            bump(&self.counters.duplicated);
            Some(hold_time(&mut random, &faults))
        } else {
            None
        };
        Some(Copies { first, second })
    }
}

/// The counters behind [`super::ProxyStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) forwarded: AtomicU64,
    pub(super) dropped_blocked: AtomicU64,
    pub(super) dropped_loss: AtomicU64,
    pub(super) duplicated: AtomicU64,
    pub(super) delayed: AtomicU64,
    pub(super) dropped_overflow: AtomicU64,
    pub(super) dropped_unknown: AtomicU64,
    pub(super) dropped_oversized: AtomicU64,
    pub(super) io_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The hold time of each copy of a datagram that is not dropped.
struct Copies {
    first: Duration,
    second: Option<Duration>,
}

fn chance(random: &mut SmallRng, probability: f64) -> bool {
    // Skipping the draw keeps perfect links cheap; NaN never fires.
    probability > 0.0 && random.random::<f64>() < probability
}

fn hold_time(random: &mut SmallRng, faults: &LinkFaults) -> Duration {
    // Saturating: a caller's absurd delay must not panic the proxy thread.
    let mut hold = faults.delay.saturating_add(jitter(random, faults.jitter));
    if chance(random, faults.reorder) {
        hold = hold.saturating_add(faults.delay.saturating_add(jitter(random, faults.jitter)));
    }
    hold.min(HOLD_MAX)
}

fn jitter(random: &mut SmallRng, jitter: Duration) -> Duration {
    let nanos_max = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    if nanos_max == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random.random_range(0..=nanos_max))
}

/// Every socket of the proxy, registered with its runtime.
pub(super) struct Sockets {
    /// `F_N` by node index.
    fronts: Vec<Arc<UdpSocket>>,
    /// `U_AB` by `upstream_index(A, B)`: `A`'s socket towards `B`.
    upstreams: Vec<Arc<UdpSocket>>,
}

impl Sockets {
    /// Registers the bound (non-blocking) sockets with the runtime entered by
    /// the caller.
    pub(super) fn register(
        fronts: Vec<std::net::UdpSocket>,
        upstreams: Vec<std::net::UdpSocket>,
    ) -> std::io::Result<Sockets> {
        let register = |socket| UdpSocket::from_std(socket).map(Arc::new);
        Ok(Sockets {
            fronts: fronts.into_iter().map(register).collect::<Result<_, _>>()?,
            upstreams: upstreams
                .into_iter()
                .map(register)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Where `U_AB` sits among the `count * (count - 1)` upstream sockets.
pub(super) fn upstream_index(count: usize, from: usize, to: usize) -> usize {
    debug_assert!(
        from != to && from < count && to < count,
        "link {from} -> {to} of {count}"
    );
    from * (count - 1) + if to < from { to } else { to - 1 }
}

/// Runs the proxy until `stopped` fires (or its sender is dropped), then
/// drops the runtime, which cancels every task and closes every socket.
pub(super) fn run(
    runtime: Runtime,
    sockets: Sockets,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    runtime.block_on(async move {
        let held = Arc::new(HeldQueue::default());
        tokio::spawn(send_when_due(Arc::clone(&shared), Arc::clone(&held)));
        let count = shared.nodes.len();
        for to in 0..count {
            let task = FrontTask {
                shared: Arc::clone(&shared),
                held: Arc::clone(&held),
                to,
                front: Arc::clone(&sockets.fronts[to]),
                upstreams: sockets.upstreams.clone(),
            };
            tokio::spawn(task.run());
            for from in (0..count).filter(|from| *from != to) {
                let task = UpstreamTask {
                    shared: Arc::clone(&shared),
                    held: Arc::clone(&held),
                    client: from,
                    server: to,
                    upstream: Arc::clone(&sockets.upstreams[upstream_index(count, from, to)]),
                    front: Arc::clone(&sockets.fronts[to]),
                };
                tokio::spawn(task.run());
            }
        }
        // An error means the handle is gone without a word: stop as well.
        let _ = stopped.await;
    });
    drop(runtime);
}

/// Receives on `F_to`: datagrams from node `A` (by source address) travel
/// link `A → to` out of `U_A,to`.
struct FrontTask {
    shared: Arc<Shared>,
    held: Arc<HeldQueue>,
    to: usize,
    front: Arc<UdpSocket>,
    upstreams: Vec<Arc<UdpSocket>>,
}

impl FrontTask {
    async fn run(self) {
        let count = self.shared.nodes.len();
        let mut buffer = receive_buffer(&self.shared);
        loop {
            let Some((length, source)) = receive(&self.shared, &self.front, &mut buffer).await
            else {
                continue;
            };
            let from = match self.shared.index_by_address.get(&source) {
                Some(from) if *from != self.to => *from,
                _ => {
                    bump(&self.shared.counters.dropped_unknown);
                    continue;
                }
            };
            let outgoing = Outgoing {
                link: (self.shared.nodes[from].0, self.shared.nodes[self.to].0),
                socket: &self.upstreams[upstream_index(count, from, self.to)],
                destination: self.shared.nodes[self.to].1,
            };
            forward(&self.shared, &self.held, outgoing, &buffer[..length]).await;
        }
    }
}

/// Receives on `U_client,server`: replies from `server` travel link
/// `server → client` out of `F_server`, the address `client` dialled.
struct UpstreamTask {
    shared: Arc<Shared>,
    held: Arc<HeldQueue>,
    client: usize,
    server: usize,
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
}

impl UpstreamTask {
    async fn run(self) {
        let server_address = self.shared.nodes[self.server].1;
        let mut buffer = receive_buffer(&self.shared);
        loop {
            let Some((length, source)) = receive(&self.shared, &self.upstream, &mut buffer).await
            else {
                continue;
            };
            if source != server_address {
                bump(&self.shared.counters.dropped_unknown);
                continue;
            }
            let outgoing = Outgoing {
                link: (
                    self.shared.nodes[self.server].0,
                    self.shared.nodes[self.client].0,
                ),
                socket: &self.front,
                destination: self.shared.nodes[self.client].1,
            };
            forward(&self.shared, &self.held, outgoing, &buffer[..length]).await;
        }
    }
}

/// One byte more than the largest accepted datagram, so that a larger one
/// shows up as a full buffer instead of being silently truncated.
fn receive_buffer(shared: &Shared) -> Vec<u8> {
    vec![0; shared.datagram_bytes_max.min(UDP_PAYLOAD_BYTES_MAX) + 1]
}

/// One datagram within `datagram_bytes_max`, or `None` after counting an
/// error or an oversized datagram.
async fn receive(
    shared: &Shared,
    socket: &UdpSocket,
    buffer: &mut [u8],
) -> Option<(usize, SocketAddr)> {
    match socket.recv_from(buffer).await {
        Ok((length, _)) if length > shared.datagram_bytes_max => {
            bump(&shared.counters.dropped_oversized);
            None
        }
        Ok(received) => Some(received),
        Err(error) => {
            bump(&shared.counters.io_errors);
            // A reported ICMP error (only with IP_RECVERR, which the proxy
            // does not set) is consumed by the read that returns it; any
            // other error may repeat, and must not make this loop spin.
            let reported_once = matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            );
            if !reported_once {
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
            }
            None
        }
    }
}

/// Where a datagram that passed its link's faults goes.
struct Outgoing<'a> {
    link: (NodeId, NodeId),
    socket: &'a Arc<UdpSocket>,
    destination: SocketAddr,
}

async fn forward(shared: &Shared, held: &HeldQueue, outgoing: Outgoing<'_>, payload: &[u8]) {
    let Some(copies) = shared.decide(outgoing.link) else {
        return;
    };
    for hold in std::iter::once(copies.first).chain(copies.second) {
        if hold.is_zero() {
            send(shared, outgoing.socket, payload, outgoing.destination).await;
        } else {
            held.push(shared, hold, outgoing.socket, outgoing.destination, payload);
        }
    }
}

async fn send(shared: &Shared, socket: &UdpSocket, payload: &[u8], destination: SocketAddr) {
    match socket.send_to(payload, destination).await {
        Ok(_) => bump(&shared.counters.forwarded),
        Err(_) => bump(&shared.counters.io_errors),
    }
}

/// Datagrams held for a delay, earliest due first.
#[derive(Default)]
struct HeldQueue {
    state: Mutex<HeldState>,
    /// Wakes the timer task when a datagram due before all others is pushed.
    pushed: Notify,
}

#[derive(Default)]
struct HeldState {
    // Invariant: datagrams.len() <= delayed_packets_max.
    datagrams: BinaryHeap<Held>,
    /// Breaks ties in due time by arrival, so equal delays keep order.
    sequence_next: u64,
}

impl HeldQueue {
    fn push(
        &self,
        shared: &Shared,
        hold: Duration,
        socket: &Arc<UdpSocket>,
        destination: SocketAddr,
        payload: &[u8],
    ) {
        let mut state = self.state.lock();
        if state.datagrams.len() >= shared.delayed_packets_max {
            bump(&shared.counters.dropped_overflow);
            return;
        }
        let sequence = state.sequence_next;
        state.sequence_next += 1;
        let due = Instant::now() + hold;
        // The timer sleeps until the earliest due time; only a datagram due
        // before that needs to wake it (with a fixed delay, none does).
        let earliest = state.datagrams.peek().is_none_or(|head| due < head.due);
        state.datagrams.push(Held {
            due,
            sequence,
            socket: Arc::clone(socket),
            destination,
            payload: payload.to_vec(),
        });
        drop(state);
        bump(&shared.counters.delayed);
        if earliest {
            self.pushed.notify_one();
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.state.lock().datagrams.peek().map(|held| held.due)
    }

    fn pop_due(&self, now: Instant) -> Option<Held> {
        let mut state = self.state.lock();
        if state.datagrams.peek().is_some_and(|held| held.due <= now) {
            state.datagrams.pop()
        } else {
            None
        }
    }
}

/// The timer task: sleeps until the earliest held datagram is due (or a new
/// one arrives), then sends everything due.
async fn send_when_due(shared: Arc<Shared>, held: Arc<HeldQueue>) {
    loop {
        match held.next_due() {
            None => held.pushed.notified().await,
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = held.pushed.notified() => {}
                }
            }
        }
        let now = Instant::now();
        while let Some(datagram) = held.pop_due(now) {
            send(
                &shared,
                &datagram.socket,
                &datagram.payload,
                datagram.destination,
            )
            .await;
        }
    }
}

/// A datagram waiting for its due time.
struct Held {
    due: Instant,
    sequence: u64,
    socket: Arc<UdpSocket>,
    destination: SocketAddr,
    payload: Vec<u8>,
}

impl Held {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.sequence)
    }
}

// `BinaryHeap` is a max-heap: the order is reversed so the earliest due
// (then the earliest arrival) is on top.
impl Ord for Held {
    fn cmp(&self, other: &Held) -> Order {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_indexes_are_distinct_and_dense() {
        for count in 2..6 {
            let mut seen = std::collections::HashSet::new();
            for from in 0..count {
                for to in (0..count).filter(|to| *to != from) {
                    let index = upstream_index(count, from, to);
                    assert!(index < count * (count - 1));
                    assert!(seen.insert(index), "{from} -> {to} collides at {index}");
                }
            }
            assert_eq!(seen.len(), count * (count - 1));
        }
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut random = SmallRng::seed_from_u64(7);
        let bound = Duration::from_micros(300);
        let draws: Vec<Duration> = (0..1000).map(|_| jitter(&mut random, bound)).collect();
        assert!(draws.iter().all(|draw| *draw <= bound));
        assert!(
            draws.iter().any(|draw| *draw > bound / 2),
            "draws never reach the upper half"
        );
        assert_eq!(jitter(&mut random, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn absurd_delays_are_capped_instead_of_overflowing() {
        let mut random = SmallRng::seed_from_u64(2);
        let faults = LinkFaults {
            delay: Duration::MAX,
            jitter: Duration::MAX,
            reorder: 1.0,
            ..LinkFaults::default()
        };
        assert_eq!(hold_time(&mut random, &faults), HOLD_MAX);
        let small = LinkFaults {
            delay: Duration::from_millis(3),
            reorder: 1.0,
            ..faults
        };
        let small = LinkFaults {
            jitter: Duration::ZERO,
            ..small
        };
        assert_eq!(hold_time(&mut random, &small), Duration::from_millis(6));
    }

    #[test]
    fn chance_respects_zero_one_and_nan() {
        let mut random = SmallRng::seed_from_u64(1);
        assert!((0..100).all(|_| !chance(&mut random, 0.0)));
        assert!((0..100).all(|_| chance(&mut random, 1.0)));
        assert!((0..100).all(|_| !chance(&mut random, f64::NAN)));
    }
}
