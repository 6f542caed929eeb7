//! Refused peers: a certificate from another CA, a wrong cluster id, a wrong
//! node id, a wrong protocol version. Each is refused with its reason and no
//! frame of it is delivered.

mod common;

use std::time::Duration;

use barge_net::frame::{encode_contiguous, FrameKind};
use barge_net::{CloseReason, ClusterId, DevCa, Hello, PeerId, Transport, PROTOCOL_VERSION};

use common::CLUSTER;

fn hello(sender: u64, receiver: u64) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster: CLUSTER,
        sender: PeerId(sender),
        receiver: PeerId(receiver),
    }
}

/// Starts node 1 of a three-node cluster (nodes 2 and 3 never start) and
/// returns it with the CA, so raw clients can pose as 2 or 3.
fn lone_node() -> (DevCa, barge_net::QuicTransport, barge_net::Incoming) {
    let ca = DevCa::generate(CLUSTER).expect("CA");
    let (mut sockets, addresses) = common::sockets(3);
    let config = common::configs(&ca, &addresses).remove(0);
    let (transport, incoming) =
        barge_net::QuicTransport::start_with_socket(config, sockets.remove(0)).expect("start");
    (ca, transport, incoming)
}

/// Sends a hello, then (unless refused first) a control frame that must
/// never be delivered. Returns the close code.
async fn refused_with(
    ca_for_client: &DevCa,
    client_node: u64,
    alpn_version: u16,
    hello: Hello,
    node: &barge_net::QuicTransport,
) -> Option<u64> {
    let identity = ca_for_client.issue(PeerId(client_node)).expect("issue");
    let endpoint = common::raw_client(&identity, alpn_version);
    let address = node.local_addr().expect("address");
    let connected = common::raw_connect(&endpoint, address, CLUSTER, PeerId(1), hello).await;
    let (connection, _send, _receive) = match connected {
        Ok(parts) => parts,
        // Refused during TLS: no application close code.
        Err(_) => return None,
    };
    if let Ok(mut stream) = connection.open_uni().await {
        let _ = stream
            .write_all(&encode_contiguous(FrameKind::Control, b"smuggled"))
            .await;
    }
    common::close_code(&connection).await
}

async fn assert_nothing_delivered(incoming: &mut barge_net::Incoming) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        incoming.try_recv().is_none(),
        "a refused peer's frame was delivered"
    );
}

#[test]
fn certificate_from_another_ca_is_refused_in_tls() {
    common::runtime().block_on(async {
        let (_ca, node, mut incoming) = lone_node();
        let other_ca = DevCa::generate(CLUSTER).expect("other CA");
        let code = refused_with(&other_ca, 2, PROTOCOL_VERSION, hello(2, 1), &node).await;
        assert_eq!(code, None, "refused by TLS, before any application close");
        common::eventually("the refusal to be counted", || {
            node.counters().peers_rejected >= 1
        })
        .await;
        assert_nothing_delivered(&mut incoming).await;
        node.shutdown().await;
    });
}

#[test]
fn two_nodes_with_different_cas_never_connect() {
    common::runtime().block_on(async {
        let ca_one = DevCa::generate(CLUSTER).expect("CA one");
        let ca_two = DevCa::generate(CLUSTER).expect("CA two");
        let (mut sockets, addresses) = common::sockets(2);
        let config_one = common::configs(&ca_one, &addresses).remove(0);
        let config_two = common::configs(&ca_two, &addresses).remove(1);
        let (one, _) =
            barge_net::QuicTransport::start_with_socket(config_one, sockets.remove(0)).expect("1");
        let (two, mut incoming_two) =
            barge_net::QuicTransport::start_with_socket(config_two, sockets.remove(0)).expect("2");
        common::eventually("both sides to refuse", || {
            one.counters().peers_rejected >= 1 && two.counters().peers_rejected >= 1
        })
        .await;
        assert!(!one.is_connected(PeerId(2)) && !two.is_connected(PeerId(1)));
        // Frames for a peer that is down are dropped and counted.
        common::eventually("node 1 to mark node 2 down", || {
            matches!(
                one.send(
                    PeerId(2),
                    barge_net::TrafficClass::Control,
                    bytes::Bytes::from_static(b"x").into()
                ),
                Err(barge_net::SendError::PeerDown(PeerId(2)))
            )
        })
        .await;
        assert!(one.counters().frames_dropped >= 1);
        assert_nothing_delivered(&mut incoming_two).await;
        one.shutdown().await;
        two.shutdown().await;
    });
}

#[test]
fn wrong_cluster_id_is_refused_with_its_reason() {
    common::runtime().block_on(async {
        let (ca, node, mut incoming) = lone_node();
        let mut wrong = hello(2, 1);
        wrong.cluster = ClusterId(CLUSTER.0 + 1);
        let code = refused_with(&ca, 2, PROTOCOL_VERSION, wrong, &node).await;
        assert_eq!(code, Some(CloseReason::ClusterMismatch.code().into_inner()));
        assert_nothing_delivered(&mut incoming).await;
        common::eventually("the refusal to be counted", || {
            node.counters().peers_rejected >= 1
        })
        .await;
        node.shutdown().await;
    });
}

#[test]
fn wrong_receiver_id_is_refused_with_its_reason() {
    common::runtime().block_on(async {
        let (ca, node, mut incoming) = lone_node();
        let code = refused_with(&ca, 2, PROTOCOL_VERSION, hello(2, 5), &node).await;
        assert_eq!(code, Some(CloseReason::NodeMismatch.code().into_inner()));
        assert_nothing_delivered(&mut incoming).await;
        node.shutdown().await;
    });
}

#[test]
fn sender_id_not_named_by_the_certificate_is_refused() {
    common::runtime().block_on(async {
        let (ca, node, mut incoming) = lone_node();
        // Node 2's certificate, claiming to be node 3 (a configured peer).
        let code = refused_with(&ca, 2, PROTOCOL_VERSION, hello(3, 1), &node).await;
        assert_eq!(code, Some(CloseReason::NodeMismatch.code().into_inner()));
        // A node that is not a member at all.
        let code = refused_with(&ca, 9, PROTOCOL_VERSION, hello(9, 1), &node).await;
        assert_eq!(code, Some(CloseReason::NodeMismatch.code().into_inner()));
        assert_nothing_delivered(&mut incoming).await;
        common::eventually("both refusals to be counted", || {
            node.counters().peers_rejected >= 2
        })
        .await;
        node.shutdown().await;
    });
}

#[test]
fn wrong_protocol_version_is_refused_by_alpn_and_by_handshake() {
    common::runtime().block_on(async {
        let (ca, node, mut incoming) = lone_node();
        // ALPN barge/2 against barge/1: TLS fails.
        let code = refused_with(&ca, 2, PROTOCOL_VERSION + 1, hello(2, 1), &node).await;
        assert_eq!(code, None);
        // Right ALPN, wrong version in the hello.
        let mut wrong = hello(2, 1);
        wrong.protocol_version = PROTOCOL_VERSION + 1;
        let code = refused_with(&ca, 2, PROTOCOL_VERSION, wrong, &node).await;
        assert_eq!(code, Some(CloseReason::VersionMismatch.code().into_inner()));
        assert_nothing_delivered(&mut incoming).await;
        common::eventually("both refusals to be counted", || {
            node.counters().peers_rejected >= 2
        })
        .await;
        node.shutdown().await;
    });
}

#[test]
fn malformed_hello_is_refused() {
    common::runtime().block_on(async {
        let (ca, node, mut incoming) = lone_node();
        let identity = ca.issue(PeerId(2)).expect("issue");
        let endpoint = common::raw_client(&identity, PROTOCOL_VERSION);
        let connection = endpoint
            .connect(
                node.local_addr().expect("address"),
                &barge_net::tls::node_name(CLUSTER, PeerId(1)),
            )
            .expect("connect")
            .await
            .expect("TLS succeeds");
        let (mut send, _receive) = connection.open_bi().await.expect("bi stream");
        // A control frame where the hello belongs.
        send.write_all(&encode_contiguous(
            FrameKind::Control,
            &hello(2, 1).encode(),
        ))
        .await
        .expect("write");
        let code = common::close_code(&connection).await;
        assert_eq!(
            code,
            Some(CloseReason::HandshakeMalformed.code().into_inner())
        );
        assert_nothing_delivered(&mut incoming).await;
        node.shutdown().await;
    });
}

#[test]
fn a_server_whose_certificate_names_another_node_is_refused_by_the_dialer() {
    common::runtime().block_on(async {
        let ca = DevCa::generate(CLUSTER).expect("CA");
        let (mut sockets, addresses) = common::sockets(3);
        let mut configs = common::configs(&ca, &addresses);
        // Node 1 believes node 2 lives at node 3's address.
        configs[0].peers.insert(PeerId(2), addresses[2]);
        let socket_three = sockets.remove(2);
        let socket_one = sockets.remove(0);
        let (one, mut incoming_one) =
            barge_net::QuicTransport::start_with_socket(configs[0].clone(), socket_one).expect("1");
        let (three, _) =
            barge_net::QuicTransport::start_with_socket(configs[2].clone(), socket_three)
                .expect("3");
        // The genuine pair connects; the impostor never does.
        common::wait_connected(&[&one, &three], &[PeerId(1), PeerId(3)]).await;
        common::eventually("node 1's dials to 'node 2' to fail", || {
            one.counters().dial_failures >= 2
        })
        .await;
        assert!(!one.is_connected(PeerId(2)));
        assert_nothing_delivered(&mut incoming_one).await;
        one.shutdown().await;
        three.shutdown().await;
    });
}
