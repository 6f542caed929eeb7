//! Two real `barge-net` QUIC transports talking through the fault proxy:
//! frames flow, stop while the nodes are partitioned (the connections die
//! of idleness), flow again after healing (the transports redial through
//! the same front addresses), and reach a node restarted at the same real
//! address.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use barge_loadgen::proxy::{FaultProxy, LinkFaults, ProxyConfig};
use barge_net::{
    ClusterId, Config, DevCa, Frame, Incoming, PeerId, QuicTransport, TrafficClass, Transport,
};
use bytes::Bytes;
use tokio::time::{timeout, Instant};

/// Long enough for a QUIC handshake and a redial on a loaded machine.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);

/// Sends `body` from `sender` to `peer` every 50 ms until it comes out of
/// `incoming` (frames sent while the link is down may be lost: Raft
/// retries, and so does this). Other bodies are skipped.
async fn deliver(
    sender: &QuicTransport,
    peer: PeerId,
    incoming: &mut Incoming,
    body: &'static [u8],
) -> bool {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while Instant::now() < deadline {
        // Full or PeerDown while connecting: try again on the next round.
        let _ = sender.send(
            peer,
            TrafficClass::Control,
            Frame::from(Bytes::from_static(body)),
        );
        let round = Instant::now() + Duration::from_millis(50);
        while let Ok(Some(delivery)) = timeout(round - Instant::now(), incoming.recv()).await {
            if &delivery.body[..] == body {
                return true;
            }
        }
    }
    false
}

async fn await_disconnected(one: &QuicTransport, two: &QuicTransport) -> bool {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while Instant::now() < deadline {
        if !one.is_connected(PeerId(2)) && !two.is_connected(PeerId(1)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Binds `address` again once the stopped endpoint has released it.
async fn rebind(address: SocketAddr) -> UdpSocket {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        match UdpSocket::bind(address) {
            Ok(socket) => return socket,
            Err(error) if Instant::now() < deadline => {
                assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{address} is still taken: {error}"),
        }
    }
}

/// Two nodes' sockets behind a proxy, and what their transports need.
struct Setup {
    runtime: tokio::runtime::Runtime,
    real: [SocketAddr; 2],
    proxy: FaultProxy,
    ca: DevCa,
}

impl Setup {
    /// The setup and the two nodes' bound sockets.
    fn new() -> (Setup, [UdpSocket; 2]) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sockets = [
            UdpSocket::bind("127.0.0.1:0").expect("bind node 1"),
            UdpSocket::bind("127.0.0.1:0").expect("bind node 2"),
        ];
        let real = [
            sockets[0].local_addr().expect("bound"),
            sockets[1].local_addr().expect("bound"),
        ];
        let mut proxy_config = ProxyConfig::new(vec![(1, real[0]), (2, real[1])]);
        proxy_config.seed = 42;
        let proxy = FaultProxy::start(proxy_config).expect("start the proxy");
        let ca = DevCa::generate(ClusterId(0x5eed)).expect("dev CA");
        let setup = Setup {
            runtime,
            real,
            proxy,
            ca,
        };
        (setup, sockets)
    }

    /// Node `me`'s configuration: it listens at its real address and is
    /// told the other node lives at that node's front address.
    fn config(&self, me: u64, other: u64) -> Config {
        let node = PeerId(me);
        let peers = BTreeMap::from([(PeerId(other), self.proxy.front(other).expect("front"))]);
        let identity = self.ca.issue(node).expect("certificate");
        let listen = self.real[usize::try_from(me - 1).expect("small id")];
        let mut config = Config::new(node, self.ca.cluster(), listen, peers, identity);
        // Quick failure detection and redial keep the tests short.
        config.keep_alive_interval = Duration::from_millis(200);
        config.idle_timeout = Duration::from_secs(1);
        config.reconnect_backoff_min = Duration::from_millis(20);
        config.reconnect_backoff_max = Duration::from_millis(200);
        config
    }
}

#[test]
fn quic_frames_flow_through_the_proxy_stop_when_partitioned_and_resume_when_healed() {
    let (setup, [socket_one, socket_two]) = Setup::new();
    let proxy = &setup.proxy;
    setup.runtime.block_on(async {
        let (one, mut incoming_one) =
            QuicTransport::start_with_socket(setup.config(1, 2), socket_one).expect("start node 1");
        let (two, mut incoming_two) =
            QuicTransport::start_with_socket(setup.config(2, 1), socket_two).expect("start node 2");

        assert!(deliver(&one, PeerId(2), &mut incoming_two, b"one to two").await);
        assert!(deliver(&two, PeerId(1), &mut incoming_one, b"two to one").await);
        let before = proxy.stats();
        assert!(
            before.forwarded > 0 && before.dropped_unknown == 0,
            "{before:?}"
        );

        proxy.partition(&[vec![1], vec![2]]);
        assert!(
            await_disconnected(&one, &two).await,
            "connections die while partitioned"
        );
        while incoming_two.try_recv().is_some() {}
        for _ in 0..10 {
            // Refused (peer down) or queued for a redial that cannot finish.
            let _ = one.send(
                PeerId(2),
                TrafficClass::Control,
                Frame::from(Bytes::from_static(b"cut")),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let silence = timeout(Duration::from_millis(500), incoming_two.recv()).await;
        assert!(
            silence.is_err(),
            "nothing crosses the partition: {silence:?}"
        );
        assert!(proxy.stats().dropped_blocked > 0);

        proxy.heal();
        assert!(deliver(&one, PeerId(2), &mut incoming_two, b"healed one to two").await);
        assert!(deliver(&two, PeerId(1), &mut incoming_one, b"healed two to one").await);

        // Node 1 restarts on the same real address: it dials through the
        // same front and upstream sockets with new connection ids.
        one.shutdown().await;
        drop((one, incoming_one));
        let socket_one = rebind(setup.real[0]).await;
        let (one, mut incoming_one) =
            QuicTransport::start_with_socket(setup.config(1, 2), socket_one)
                .expect("restart node 1");
        assert!(deliver(&one, PeerId(2), &mut incoming_two, b"restarted one to two").await);
        assert!(deliver(&two, PeerId(1), &mut incoming_one, b"two to restarted one").await);

        one.shutdown().await;
        two.shutdown().await;
    });
    setup.proxy.shutdown();
}

#[test]
fn quic_frames_arrive_whole_and_in_order_through_loss_duplication_delay_and_reordering() {
    let (setup, [socket_one, socket_two]) = Setup::new();
    let faults = LinkFaults {
        // Loss throttles QUIC's congestion window hard (5 % gave 200 KB/s).
        loss: 0.03,
        duplicate: 0.05,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
        reorder: 0.1,
        ..LinkFaults::default()
    };
    setup.proxy.set_all(faults);
    setup.runtime.block_on(async {
        let (one, mut incoming_one) =
            QuicTransport::start_with_socket(setup.config(1, 2), socket_one).expect("start 1");
        let (two, mut incoming_two) =
            QuicTransport::start_with_socket(setup.config(2, 1), socket_two).expect("start 2");
        assert!(deliver(&one, PeerId(2), &mut incoming_two, b"ready").await);
        assert!(deliver(&two, PeerId(1), &mut incoming_one, b"ready").await);

        // Entries frames larger than a datagram, so each spans many packets
        // and every fault kind hits some of them. QUIC repairs loss,
        // duplication and reordering; a frame in flight when a connection
        // is replaced may be lost (the transport's contract: Raft retries),
        // but none arrives twice, damaged or out of order.
        const FRAMES: u32 = 50;
        const FRAME_BYTES: usize = 8_000;
        let frame = |number: u32| {
            let mut body = vec![0u8; FRAME_BYTES];
            body[..4].copy_from_slice(&number.to_be_bytes());
            Frame::from(Bytes::from(body))
        };
        let sender = async {
            let deadline = Instant::now() + DELIVERY_DEADLINE;
            let mut number = 0;
            while number < FRAMES && Instant::now() < deadline {
                // Refused (peer down) while a connection is being replaced:
                // the same frame again after the pause.
                if one
                    .send(PeerId(2), TrafficClass::Entries, frame(number))
                    .is_ok()
                {
                    number += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let receiver = async {
            let mut numbers = Vec::new();
            let deadline = Instant::now() + DELIVERY_DEADLINE;
            while numbers.last() != Some(&(FRAMES - 1)) && Instant::now() < deadline {
                let Ok(Some(delivery)) = timeout(Duration::from_secs(3), incoming_two.recv()).await
                else {
                    break; // the rest was lost: the count below says how much
                };
                if delivery.class == TrafficClass::Control {
                    continue; // a late copy of a "ready" retry
                }
                assert_eq!(delivery.class, TrafficClass::Entries);
                assert_eq!(delivery.body.len(), FRAME_BYTES, "a frame arrives whole");
                let number = u32::from_be_bytes(delivery.body[..4].try_into().expect("4 bytes"));
                assert!(
                    delivery.body[4..].iter().all(|byte| *byte == 0),
                    "frame {number} intact"
                );
                numbers.push(number);
            }
            numbers
        };
        let ((), numbers) = tokio::join!(sender, receiver);
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "no frame twice or out of order: {numbers:?}"
        );
        // Frames queued on a connection that the duplicate-dial resolution
        // replaces are lost (the transport's contract; Raft resends): under
        // 3 % loss and a loaded machine that was once 27 of 50. The claim
        // here is that what arrives is whole, once and in order, through
        // every fault kind; enough must arrive for that to mean something.
        let arrived = numbers.len();
        let counters = one.counters();
        assert!(
            arrived >= 5,
            "frames arrive through the faults: {arrived} of {FRAMES}; {counters:?}"
        );
        one.shutdown().await;
        two.shutdown().await;
    });
    let stats = setup.proxy.stats();
    assert!(
        stats.dropped_loss > 0 && stats.duplicated > 0 && stats.delayed > 0,
        "every fault kind happened: {stats:?}"
    );
    setup.proxy.shutdown();
}
