//! The UDP fault proxy with plain sockets standing in for nodes: routing
//! both ways, partitions, each fault kind, the bounds, and restarts. The
//! QUIC end-to-end check is in `proxy_quic.rs`.
//!
//! Timing is only ever asserted as a lower bound (a delay adds at least
//! `delay`); waits for datagrams that must arrive have generous deadlines,
//! and checks that a datagram does not arrive wait a fixed short window.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use barge_loadgen::proxy::{FaultProxy, LinkFaults, NodeId, ProxyConfig, ProxyStats};
use parking_lot::Mutex;

/// Long enough for anything that must arrive on a loaded machine.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a datagram that must not arrive is waited for.
const SILENCE_WINDOW: Duration = Duration::from_millis(300);

/// Nodes `1..=count`, each a plain UDP socket, behind one proxy.
struct Cluster {
    proxy: FaultProxy,
    sockets: Vec<UdpSocket>,
}

impl Cluster {
    fn start(count: u64, configure: impl FnOnce(&mut ProxyConfig)) -> Cluster {
        let sockets: Vec<UdpSocket> = (0..count)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a node"))
            .collect();
        let nodes = (1..=count)
            .zip(&sockets)
            .map(|(node, socket)| (node, socket.local_addr().expect("bound address")))
            .collect();
        let mut config = ProxyConfig::new(nodes);
        configure(&mut config);
        let proxy = FaultProxy::start(config).expect("start the proxy");
        Cluster { proxy, sockets }
    }

    fn socket(&self, node: NodeId) -> &UdpSocket {
        &self.sockets[usize::try_from(node - 1).expect("small node id")]
    }

    fn send(&self, from: NodeId, to: NodeId, payload: &[u8]) {
        let front = self.proxy.front(to).expect("configured node");
        self.socket(from)
            .send_to(payload, front)
            .expect("send to a front address");
    }

    /// The next datagram at `node` within `timeout`, with its source.
    fn receive(&self, node: NodeId, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        receive(self.socket(node), timeout)
    }

    fn collect(&self, node: NodeId) -> Collector {
        Collector::start(self.socket(node).try_clone().expect("clone a socket"))
    }

    /// Waits until the proxy's counters satisfy `done`, and returns them;
    /// panics with the counters if they never do. Counters are bumped on
    /// the proxy thread, a send's only after the datagram left, so they may
    /// lag what a node has already received.
    fn await_stats(&self, done: impl Fn(&ProxyStats) -> bool) -> ProxyStats {
        let deadline = Instant::now() + ARRIVAL_DEADLINE;
        let mut stats = self.proxy.stats();
        while !done(&stats) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            stats = self.proxy.stats();
        }
        assert!(done(&stats), "the proxy never got there: {stats:?}");
        stats
    }
}

fn receive(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket
        .set_read_timeout(Some(timeout))
        .expect("set a read timeout");
    let mut buffer = vec![0u8; 70_000];
    match socket.recv_from(&mut buffer) {
        Ok((length, source)) => Some((buffer[..length].to_vec(), source)),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(error) => panic!("receive failed: {error}"),
    }
}

/// A datagram's payload and when it arrived.
type Arrival = (Vec<u8>, Instant);

/// Receives on a node's socket on a thread of its own, so a burst never
/// overflows the kernel's receive buffer while the test is still sending.
struct Collector {
    received: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(socket: UdpSocket) -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((payload, _)) = receive(&socket, Duration::from_millis(20)) {
                        received.lock().push((payload, Instant::now()));
                    }
                }
            })
        };
        Collector {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `count` datagrams have arrived (or the deadline passes)
    /// and returns what arrived, in order.
    fn await_count(&self, count: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + ARRIVAL_DEADLINE;
        while self.received.lock().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.received.lock().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("collector thread");
        }
    }
}

fn numbered(count: u32) -> impl Iterator<Item = [u8; 4]> {
    (0..count).map(u32::to_be_bytes)
}

fn numbers(received: &[Arrival]) -> Vec<u32> {
    received
        .iter()
        .map(|(payload, _)| u32::from_be_bytes(payload[..4].try_into().expect("numbered datagram")))
        .collect()
}

/// Sends `count` numbered datagrams from 1 to 2, pausing now and then so
/// that the proxy and the collector keep up.
fn send_numbered(cluster: &Cluster, count: u32) {
    for (index, payload) in numbered(count).enumerate() {
        cluster.send(1, 2, &payload);
        if index % 25 == 24 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn datagrams_travel_both_ways_and_replies_come_from_the_dialled_front() {
    let cluster = Cluster::start(2, |_| {});
    let front_two = cluster.proxy.front(2).expect("node 2");
    assert_ne!(front_two, cluster.socket(2).local_addr().expect("bound"));

    cluster.send(1, 2, b"request");
    let (payload, upstream) = cluster
        .receive(2, ARRIVAL_DEADLINE)
        .expect("request arrives");
    assert_eq!(payload, b"request");
    assert_ne!(
        upstream,
        cluster.socket(1).local_addr().expect("bound"),
        "came via the proxy"
    );

    cluster
        .socket(2)
        .send_to(b"reply", upstream)
        .expect("reply");
    let (payload, source) = cluster.receive(1, ARRIVAL_DEADLINE).expect("reply arrives");
    assert_eq!(payload, b"reply");
    assert_eq!(
        source, front_two,
        "node 1 sees the reply from the address it dialled"
    );

    // Node 2 dialling node 1 uses a different upstream socket.
    cluster.send(2, 1, b"other way");
    let (payload, other_upstream) = cluster.receive(1, ARRIVAL_DEADLINE).expect("arrives");
    assert_eq!(payload, b"other way");
    assert_ne!(other_upstream, upstream);
    cluster.await_stats(|stats| stats.forwarded == 3);
    assert_eq!(cluster.proxy.front(3), None);
    cluster.proxy.shutdown();
}

#[test]
fn a_blocked_link_drops_one_direction_only_until_healed() {
    let cluster = Cluster::start(2, |_| {});
    let blocked = LinkFaults {
        blocked: true,
        ..LinkFaults::default()
    };
    cluster.proxy.set_link(1, 2, blocked);
    assert_eq!(cluster.proxy.link(1, 2), blocked);

    cluster.send(1, 2, b"cut");
    assert_eq!(cluster.receive(2, SILENCE_WINDOW), None);
    cluster.send(2, 1, b"open");
    assert_eq!(
        cluster
            .receive(1, ARRIVAL_DEADLINE)
            .map(|(payload, _)| payload),
        Some(b"open".to_vec())
    );
    cluster.await_stats(|stats| stats.dropped_blocked == 1);

    cluster.proxy.heal();
    assert_eq!(cluster.proxy.link(1, 2), LinkFaults::default());
    cluster.send(1, 2, b"healed");
    assert_eq!(
        cluster
            .receive(2, ARRIVAL_DEADLINE)
            .map(|(payload, _)| payload),
        Some(b"healed".to_vec())
    );
}

#[test]
fn a_partition_blocks_links_between_groups_only() {
    let cluster = Cluster::start(3, |_| {});
    cluster.proxy.set_all(LinkFaults {
        delay: Duration::from_millis(1),
        ..LinkFaults::default()
    });
    cluster.proxy.partition(&[vec![1], vec![2, 3]]);
    for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 1)] {
        assert!(
            cluster.proxy.link(from, to).blocked,
            "{from} -> {to} crosses the partition"
        );
    }
    for (from, to) in [(2, 3), (3, 2)] {
        let link = cluster.proxy.link(from, to);
        assert!(!link.blocked, "{from} -> {to} is inside a group");
        assert_eq!(
            link.delay,
            Duration::from_millis(1),
            "other faults are kept"
        );
    }

    cluster.send(1, 2, b"minority");
    cluster.send(1, 3, b"minority");
    assert_eq!(cluster.receive(2, SILENCE_WINDOW), None);
    assert_eq!(cluster.receive(3, SILENCE_WINDOW), None);
    cluster.send(2, 3, b"majority");
    assert!(cluster.receive(3, ARRIVAL_DEADLINE).is_some());

    // A new partition replaces the old one: now 3 is alone.
    cluster.proxy.partition(&[vec![1, 2], vec![3]]);
    assert!(!cluster.proxy.link(1, 2).blocked);
    assert!(cluster.proxy.link(2, 3).blocked);
    cluster.send(1, 2, b"together");
    assert!(cluster.receive(2, ARRIVAL_DEADLINE).is_some());

    cluster.proxy.partition(&[]);
    cluster.send(3, 1, b"whole");
    assert!(cluster.receive(1, ARRIVAL_DEADLINE).is_some());
    cluster.await_stats(|stats| stats.dropped_blocked == 2);
}

#[test]
fn set_all_applies_to_every_directed_link() {
    let cluster = Cluster::start(3, |_| {});
    let blocked = LinkFaults {
        blocked: true,
        ..LinkFaults::default()
    };
    cluster.proxy.set_all(blocked);
    for from in 1..=3 {
        for to in (1..=3).filter(|to| *to != from) {
            assert_eq!(cluster.proxy.link(from, to), blocked, "{from} -> {to}");
        }
    }
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        cluster.send(from, to, b"dropped");
    }
    cluster.await_stats(|stats| stats.dropped_blocked == 3);
    assert_eq!(cluster.receive(1, SILENCE_WINDOW), None);
    assert_eq!(cluster.receive(2, Duration::from_millis(1)), None);
    assert_eq!(cluster.receive(3, Duration::from_millis(1)), None);

    cluster.proxy.set_all(LinkFaults::default());
    cluster.send(3, 1, b"open");
    assert!(cluster.receive(1, ARRIVAL_DEADLINE).is_some());
}

#[test]
fn dropping_the_proxy_stops_it_and_frees_its_sockets() {
    let cluster = Cluster::start(2, |_| {});
    let front = cluster.proxy.front(2).expect("node 2");
    drop(cluster.proxy);
    // The front port is free again at once: dropping joined the thread,
    // which closed every socket.
    UdpSocket::bind(front).expect("the front port is released");
}

#[test]
fn loss_drops_about_its_probability() {
    let cluster = Cluster::start(2, |config| config.seed = 11);
    cluster.proxy.set_link(
        1,
        2,
        LinkFaults {
            loss: 0.5,
            ..LinkFaults::default()
        },
    );
    let collector = cluster.collect(2);
    send_numbered(&cluster, 1000);
    let stats = cluster.await_stats(|stats| stats.forwarded + stats.dropped_loss == 1000);
    assert!((350..=650).contains(&stats.dropped_loss), "{stats:?}");
    assert_eq!(stats.forwarded + stats.dropped_loss, 1000);
    let forwarded = usize::try_from(stats.forwarded).expect("small");
    assert_eq!(collector.await_count(forwarded).len(), forwarded);
}

#[test]
fn duplicate_sends_every_datagram_twice_at_probability_one() {
    let cluster = Cluster::start(2, |_| {});
    cluster.proxy.set_link(
        1,
        2,
        LinkFaults {
            duplicate: 1.0,
            ..LinkFaults::default()
        },
    );
    let collector = cluster.collect(2);
    send_numbered(&cluster, 100);
    let received = numbers(&collector.await_count(200));
    assert_eq!(received.len(), 200);
    for number in 0..100 {
        assert_eq!(
            received.iter().filter(|n| **n == number).count(),
            2,
            "datagram {number}"
        );
    }
    // The count of a send is bumped after the datagram left: it may lag.
    cluster.await_stats(|stats| (stats.duplicated, stats.forwarded) == (100, 200));
}

#[test]
fn delay_holds_each_datagram_at_least_that_long_and_keeps_order() {
    let delay = Duration::from_millis(150);
    let cluster = Cluster::start(2, |_| {});
    cluster.proxy.set_link(
        1,
        2,
        LinkFaults {
            delay,
            ..LinkFaults::default()
        },
    );
    let collector = cluster.collect(2);
    let sent = Instant::now();
    send_numbered(&cluster, 50);
    let received = collector.await_count(50);
    assert_eq!(
        numbers(&received),
        (0..50).collect::<Vec<_>>(),
        "delay alone never reorders"
    );
    assert!(received
        .iter()
        .all(|(_, at)| at.duration_since(sent) >= delay));
    assert_eq!(cluster.proxy.stats().delayed, 50);

    // The other direction is not delayed, and the fault goes when healed.
    cluster.proxy.heal();
    assert_eq!(cluster.proxy.link(1, 2), LinkFaults::default());
}

#[test]
fn jitter_reorders_a_numbered_burst_without_losing_any() {
    let cluster = Cluster::start(2, |config| config.seed = 3);
    cluster.proxy.set_link(
        1,
        2,
        LinkFaults {
            jitter: Duration::from_millis(30),
            ..LinkFaults::default()
        },
    );
    let collector = cluster.collect(2);
    send_numbered(&cluster, 200);
    let mut received = numbers(&collector.await_count(200));
    assert!(
        received.windows(2).any(|pair| pair[0] > pair[1]),
        "some datagrams overtook others"
    );
    received.sort_unstable();
    assert_eq!(received, (0..200).collect::<Vec<_>>());
}

#[test]
fn reorder_holds_some_datagrams_back() {
    let cluster = Cluster::start(2, |config| config.seed = 5);
    let faults = LinkFaults {
        delay: Duration::from_millis(20),
        reorder: 0.3,
        ..LinkFaults::default()
    };
    cluster.proxy.set_link(1, 2, faults);
    let collector = cluster.collect(2);
    send_numbered(&cluster, 200);
    let mut received = numbers(&collector.await_count(200));
    assert!(
        received.windows(2).any(|pair| pair[0] > pair[1]),
        "held-back datagrams arrive late"
    );
    received.sort_unstable();
    assert_eq!(received, (0..200).collect::<Vec<_>>());
}

#[test]
fn held_datagrams_beyond_the_bound_are_dropped_and_counted() {
    let cluster = Cluster::start(2, |config| config.delayed_packets_max = 10);
    // Long enough that nothing is released while the burst arrives.
    cluster.proxy.set_link(
        1,
        2,
        LinkFaults {
            delay: Duration::from_secs(60),
            ..LinkFaults::default()
        },
    );
    send_numbered(&cluster, 50);
    let stats = cluster.await_stats(|stats| stats.delayed + stats.dropped_overflow == 50);
    assert_eq!(
        (stats.delayed, stats.dropped_overflow, stats.forwarded),
        (10, 40, 0)
    );
    // Shutdown does not wait for held datagrams.
    cluster.proxy.shutdown();
}

#[test]
fn unknown_sources_are_dropped_on_front_and_upstream_sockets() {
    let cluster = Cluster::start(2, |_| {});
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    stranger
        .send_to(b"who?", cluster.proxy.front(2).expect("node 2"))
        .expect("send");
    assert_eq!(cluster.receive(2, SILENCE_WINDOW), None);

    cluster.send(1, 2, b"hello");
    let (_, upstream) = cluster.receive(2, ARRIVAL_DEADLINE).expect("arrives");
    stranger.send_to(b"spoof", upstream).expect("send");
    assert_eq!(cluster.receive(1, SILENCE_WINDOW), None);
    // A node sending to its own front address is no link either.
    cluster.send(1, 1, b"self");
    assert_eq!(cluster.receive(1, SILENCE_WINDOW), None);
    cluster.await_stats(|stats| stats.dropped_unknown == 3);
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    let cluster = Cluster::start(2, |config| config.datagram_bytes_max = 100);
    cluster.send(1, 2, &[7u8; 101]);
    cluster.send(1, 2, &[8u8; 100]);
    let (payload, _) = cluster
        .receive(2, ARRIVAL_DEADLINE)
        .expect("the fitting one arrives");
    assert_eq!(payload, vec![8u8; 100]);
    cluster.await_stats(|stats| (stats.dropped_oversized, stats.forwarded) == (1, 1));
}

#[test]
fn a_node_restarted_at_the_same_address_is_reached_again() {
    let mut cluster = Cluster::start(2, |_| {});
    let address = cluster.socket(2).local_addr().expect("bound");
    cluster.send(1, 2, b"before");
    assert!(cluster.receive(2, ARRIVAL_DEADLINE).is_some());

    // Node 2 goes down: datagrams to it are lost.
    let down = UdpSocket::bind("127.0.0.1:0").expect("placeholder");
    drop(std::mem::replace(&mut cluster.sockets[1], down));
    for _ in 0..5 {
        cluster.send(1, 2, b"while down");
    }
    cluster.await_stats(|stats| stats.forwarded == 6);

    cluster.sockets[1] = UdpSocket::bind(address).expect("rebind the same address");
    cluster.send(1, 2, b"after");
    let (payload, upstream) = cluster
        .receive(2, ARRIVAL_DEADLINE)
        .expect("arrives after restart");
    assert_eq!(payload, b"after");
    cluster
        .socket(2)
        .send_to(b"reply", upstream)
        .expect("reply");
    assert_eq!(
        cluster
            .receive(1, ARRIVAL_DEADLINE)
            .map(|(payload, _)| payload),
        Some(b"reply".to_vec())
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let address: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let other: SocketAddr = "127.0.0.1:10".parse().expect("address");
    let cases = [
        ProxyConfig::new(vec![(1, address), (1, other)]),
        ProxyConfig::new(vec![(1, address), (2, address)]),
        ProxyConfig {
            datagram_bytes_max: 0,
            ..ProxyConfig::new(vec![(1, address)])
        },
    ];
    for config in cases {
        let error = FaultProxy::start(config.clone()).expect_err("refused");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::InvalidInput,
            "{config:?}: {error}"
        );
    }
}
