//! Measures what the fault proxy costs, against a direct path in the same
//! run: UDP round-trip time and QUIC bulk throughput between two
//! `barge-net` transports. A measurement, not a check, so it is ignored by
//! default (CI's machines are shared and noisy); run it with
//!
//! ```text
//! cargo test -p barge-loadgen --release --test proxy_throughput -- --ignored --nocapture
//! ```
//!
//! It asserts only that every byte arrived. Kernel receive-buffer drops
//! (`RcvbufErrors` in `/proc/net/snmp`) are machine-wide, so other UDP
//! traffic on the machine shows up in them too.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use barge_loadgen::proxy::{FaultProxy, ProxyConfig};
use barge_net::{ClusterId, Config, DevCa, Frame, PeerId, QuicTransport, TrafficClass, Transport};
use bytes::Bytes;

const ROUNDS: usize = 3;
const ROUND_TRIPS: u32 = 20_000;
const BULK_BYTES: usize = 256 * 1024 * 1024;
const BULK_FRAME_BYTES: usize = 64 * 1024;
const BULK_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    Proxied,
}

/// Two bound sockets and, when proxied, the proxy in front of them; the
/// addresses each node must use for the other.
struct Pair {
    sockets: [UdpSocket; 2],
    real: [SocketAddr; 2],
    dial: [SocketAddr; 2],
    proxy: Option<FaultProxy>,
    /// Ports that appeared while the proxy started: its sockets (and, on a
    /// busy machine, perhaps a few others).
    proxy_ports: Vec<u16>,
}

fn pair(path: Path) -> Pair {
    let sockets = [
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
    ];
    let real = [
        sockets[0].local_addr().expect("bound"),
        sockets[1].local_addr().expect("bound"),
    ];
    let ports_before = drops_by_port();
    let (dial, proxy) = match path {
        Path::Direct => (real, None),
        Path::Proxied => {
            let proxy = FaultProxy::start(ProxyConfig::new(vec![(1, real[0]), (2, real[1])]))
                .expect("start the proxy");
            let dial = [
                proxy.front(1).expect("front"),
                proxy.front(2).expect("front"),
            ];
            (dial, Some(proxy))
        }
    };
    let proxy_ports = match path {
        Path::Direct => Vec::new(),
        Path::Proxied => drops_by_port()
            .into_keys()
            .filter(|port| !ports_before.contains_key(port))
            .collect(),
    };
    Pair {
        sockets,
        real,
        dial,
        proxy,
        proxy_ports,
    }
}

fn receive_buffer_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Datagrams the kernel dropped on each open loopback UDP socket, by port
/// (the last column of `/proc/net/udp`).
fn drops_by_port() -> BTreeMap<u16, u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let drops = fields.last()?.parse().ok()?;
            Some((port, drops))
        })
        .collect()
}

/// Mean round-trip time of a 64-byte datagram echoed by node 2.
fn round_trip(path: Path) -> Duration {
    let Pair {
        sockets: [one, two],
        dial,
        proxy,
        ..
    } = pair(path);
    let timeout = Some(Duration::from_secs(5));
    one.set_read_timeout(timeout).expect("timeout");
    two.set_read_timeout(timeout).expect("timeout");
    let echo = std::thread::spawn(move || {
        let mut buffer = [0u8; 64];
        for _ in 0..ROUND_TRIPS {
            let (length, source) = two.recv_from(&mut buffer).expect("echo receives");
            two.send_to(&buffer[..length], source)
                .expect("echo replies");
        }
    });
    let mut buffer = [0u8; 64];
    let started = Instant::now();
    for number in 0..ROUND_TRIPS {
        let mut payload = [0u8; 64];
        payload[..4].copy_from_slice(&number.to_be_bytes());
        one.send_to(&payload, dial[1]).expect("send");
        let (length, _) = one.recv_from(&mut buffer).expect("reply arrives");
        assert_eq!(&buffer[..length], &payload[..]);
    }
    let elapsed = started.elapsed();
    echo.join().expect("echo thread");
    drop(proxy);
    elapsed / ROUND_TRIPS
}

/// Bytes per second of 64 KiB entries frames from node 1 to node 2.
fn bulk(path: Path) -> (f64, u64, Option<barge_loadgen::proxy::ProxyStats>) {
    let Pair {
        sockets: [socket_one, socket_two],
        real,
        dial,
        proxy,
        proxy_ports,
    } = pair(path);
    let ca = DevCa::generate(ClusterId(0xbeef)).expect("dev CA");
    let config = |me: usize, other: usize| {
        let node = PeerId(me as u64 + 1);
        let peers = BTreeMap::from([(PeerId(other as u64 + 1), dial[other])]);
        Config::new(
            node,
            ca.cluster(),
            real[me],
            peers,
            ca.issue(node).expect("certificate"),
        )
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let errors_before = receive_buffer_errors();
    let rate = runtime.block_on(async {
        let (one, _incoming_one) =
            QuicTransport::start_with_socket(config(0, 1), socket_one).expect("start");
        let (two, mut incoming_two) =
            QuicTransport::start_with_socket(config(1, 0), socket_two).expect("start");
        let body = Bytes::from(vec![0x5a; BULK_FRAME_BYTES]);
        let frames = BULK_BYTES / BULK_FRAME_BYTES;
        let receiver = async {
            let mut received = 0usize;
            while received < BULK_BYTES {
                let delivery = incoming_two.recv().await.expect("a frame");
                received += delivery.body.len();
            }
            received
        };
        let sender = async {
            let mut sent = 0;
            while sent < frames {
                match one.send(PeerId(2), TrafficClass::Entries, Frame::from(body.clone())) {
                    Ok(()) => sent += 1,
                    // Full, or down while the first connection comes up.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        };
        let started = Instant::now();
        let (received, ()) =
            tokio::time::timeout(BULK_DEADLINE, async { tokio::join!(receiver, sender) })
                .await
                .expect("the bulk transfer finishes");
        let elapsed = started.elapsed();
        assert_eq!(received, BULK_BYTES);
        let drops = drops_by_port();
        let node_drops: u64 = real
            .iter()
            .filter_map(|address| drops.get(&address.port()))
            .sum();
        let proxy_drops: u64 = proxy_ports.iter().filter_map(|port| drops.get(port)).sum();
        println!("    socket drops: nodes {node_drops}, proxy {proxy_drops}");
        one.shutdown().await;
        two.shutdown().await;
        BULK_BYTES as f64 / elapsed.as_secs_f64()
    });
    let errors = receive_buffer_errors().saturating_sub(errors_before);
    let stats = proxy.as_ref().map(FaultProxy::stats);
    (rate, errors, stats)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_proxy_cost_against_a_direct_path() {
    for round in 1..=ROUNDS {
        for path in [Path::Direct, Path::Proxied] {
            let rtt = round_trip(path);
            println!(
                "round {round} {path:?}: UDP round trip {:.1} µs (mean of {ROUND_TRIPS})",
                rtt.as_secs_f64() * 1e6
            );
        }
        for path in [Path::Direct, Path::Proxied] {
            let (rate, errors, stats) = bulk(path);
            println!(
                "round {round} {path:?}: QUIC bulk {:.0} MiB/s ({} MiB in 64 KiB entries frames), \
                 kernel RcvbufErrors +{errors}, proxy {stats:?}",
                rate / (1024.0 * 1024.0),
                BULK_BYTES / (1024 * 1024)
            );
        }
    }
}
