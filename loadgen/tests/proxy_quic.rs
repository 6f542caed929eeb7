//! Two real `barge-net` QUIC transports talking through the fault proxy:
//! frames flow, stop while the nodes are partitioned (the connections die
//! of idleness), flow again after healing (the transports redial through
//! the same front addresses), and reach a node restarted at the same real
//! address.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use barge_loadgen::proxy::{FaultProxy, ProxyConfig};
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

#[test]
fn quic_frames_flow_through_the_proxy_stop_when_partitioned_and_resume_when_healed() {
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
    let config = |me: u64, other: u64| {
        let node = PeerId(me);
        // Every node is told the peer lives at the peer's front address.
        let peers = BTreeMap::from([(PeerId(other), proxy.front(other).expect("front"))]);
        let identity = ca.issue(node).expect("certificate");
        let mut config = Config::new(node, ca.cluster(), real[me as usize - 1], peers, identity);
        // Quick failure detection and redial keep the test short.
        config.keep_alive_interval = Duration::from_millis(200);
        config.idle_timeout = Duration::from_secs(1);
        config.reconnect_backoff_min = Duration::from_millis(20);
        config.reconnect_backoff_max = Duration::from_millis(200);
        config
    };
    let [socket_one, socket_two] = sockets;

    runtime.block_on(async {
        let (one, mut incoming_one) =
            QuicTransport::start_with_socket(config(1, 2), socket_one).expect("start node 1");
        let (two, mut incoming_two) =
            QuicTransport::start_with_socket(config(2, 1), socket_two).expect("start node 2");

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
        let socket_one = rebind(real[0]).await;
        let (one, mut incoming_one) =
            QuicTransport::start_with_socket(config(1, 2), socket_one).expect("restart node 1");
        assert!(deliver(&one, PeerId(2), &mut incoming_two, b"restarted one to two").await);
        assert!(deliver(&two, PeerId(1), &mut incoming_one, b"two to restarted one").await);

        one.shutdown().await;
        two.shutdown().await;
    });
    proxy.shutdown();
}
