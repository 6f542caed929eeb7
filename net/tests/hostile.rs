//! Hostile bytes from an authenticated peer: truncated frames, oversized
//! lengths, random garbage, a valid length with a foreign kind. Each closes
//! the connection with `CloseReason::Frame` (or `Stream`), is counted, and
//! never panics or allocates the announced length.

mod common;

use std::time::Duration;

use barge_net::frame::{encode_contiguous, FrameHeader, FrameKind};
use barge_net::{CloseReason, DevCa, Hello, PeerId, Transport, PROTOCOL_VERSION};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use common::CLUSTER;

struct Target {
    ca: DevCa,
    node: barge_net::QuicTransport,
    incoming: barge_net::Incoming,
}

fn target() -> Target {
    let ca = DevCa::generate(CLUSTER).expect("CA");
    let (mut sockets, addresses) = common::sockets(3);
    let config = common::configs(&ca, &addresses).remove(0);
    let (node, incoming) =
        barge_net::QuicTransport::start_with_socket(config, sockets.remove(0)).expect("start");
    Target { ca, node, incoming }
}

/// Handshakes as node 2 and returns the connection, ready for data streams.
async fn authenticated(target: &Target) -> quinn::Connection {
    let identity = target.ca.issue(PeerId(2)).expect("issue");
    let endpoint = common::raw_client(&identity, PROTOCOL_VERSION);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster: CLUSTER,
        sender: PeerId(2),
        receiver: PeerId(1),
    };
    let address = target.node.local_addr().expect("address");
    let (connection, _send, mut receive) =
        common::raw_connect(&endpoint, address, CLUSTER, PeerId(1), hello)
            .await
            .expect("handshake accepted");
    // Wait for the reply so the node has installed the connection.
    let mut reply = [0u8; 5 + barge_net::handshake::HELLO_BYTES];
    receive.read_exact(&mut reply).await.expect("hello reply");
    // Keep the endpoint alive as long as the connection.
    std::mem::forget(endpoint);
    connection
}

/// Writes `bytes` on the first unidirectional stream (control), optionally
/// finishes it, and returns the close code.
async fn send_on_control(target: &Target, bytes: &[u8], finish: bool) -> Option<u64> {
    let connection = authenticated(target).await;
    let mut stream = connection.open_uni().await.expect("open");
    let _ = stream.write_all(bytes).await;
    if finish {
        let _ = stream.finish();
    }
    let code = common::close_code(&connection).await;
    drop(stream);
    code
}

fn frame_code() -> Option<u64> {
    Some(CloseReason::Frame.code().into_inner())
}

fn header(length: u32, kind: u8) -> Vec<u8> {
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.push(kind);
    bytes
}

#[test]
fn truncated_frames_close_the_connection() {
    common::runtime().block_on(async {
        let target = target();
        let mut truncated = header(100, FrameKind::Control as u8);
        truncated.extend_from_slice(&[7u8; 10]);
        assert_eq!(
            send_on_control(&target, &truncated, true).await,
            frame_code()
        );
        // Truncated inside the header itself.
        assert_eq!(
            send_on_control(&target, &[1, 0, 0], true).await,
            frame_code()
        );
        common::eventually("misbehaviour counted", || {
            target.node.counters().peers_misbehaving >= 2
        })
        .await;
        target.node.shutdown().await;
    });
}

#[test]
fn oversized_length_closes_before_the_body_is_sent() {
    common::runtime().block_on(async {
        let target = target();
        // No body follows and the stream stays open: the node must refuse
        // from the header alone rather than wait for (or allocate) 4 GiB.
        let huge = header(u32::MAX, FrameKind::Control as u8);
        assert_eq!(send_on_control(&target, &huge, false).await, frame_code());
        let just_above = 16 * 1024 * 1024 + 1;
        let above = header(just_above, FrameKind::Control as u8);
        assert_eq!(send_on_control(&target, &above, false).await, frame_code());
        target.node.shutdown().await;
    });
}

#[test]
fn random_garbage_closes_the_connection() {
    common::runtime().block_on(async {
        let target = target();
        for seed in 0..8u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let length = rng.random_range(1..4096);
            let garbage: Vec<u8> = (0..length).map(|_| rng.random()).collect();
            let code = send_on_control(&target, &garbage, true).await;
            assert_eq!(code, frame_code(), "seed {seed}");
        }
        assert!(target.node.counters().peers_misbehaving >= 8);
        target.node.shutdown().await;
    });
}

#[test]
fn valid_length_with_foreign_or_unknown_kind_closes_the_connection() {
    common::runtime().block_on(async {
        let target = target();
        let entries_on_control = encode_contiguous(FrameKind::Entries, b"payload");
        assert_eq!(
            send_on_control(&target, &entries_on_control, false).await,
            frame_code()
        );
        let handshake_on_control = encode_contiguous(FrameKind::Handshake, b"hello again");
        assert_eq!(
            send_on_control(&target, &handshake_on_control, false).await,
            frame_code()
        );
        let mut unknown = header(3, 0x7f);
        unknown.extend_from_slice(b"abc");
        assert_eq!(
            send_on_control(&target, &unknown, false).await,
            frame_code()
        );
        target.node.shutdown().await;
    });
}

#[test]
fn frames_before_the_bad_one_are_delivered_and_none_after() {
    common::runtime().block_on(async {
        let mut target = target();
        let mut bytes = encode_contiguous(FrameKind::Control, b"good").to_vec();
        bytes.extend_from_slice(&header(5, 0xee));
        bytes.extend_from_slice(b"worse");
        bytes.extend_from_slice(&encode_contiguous(FrameKind::Control, b"after"));
        assert_eq!(send_on_control(&target, &bytes, true).await, frame_code());
        let delivery = tokio::time::timeout(Duration::from_secs(5), target.incoming.recv())
            .await
            .expect("the good frame")
            .expect("open");
        assert_eq!(&delivery.body[..], b"good");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(target.incoming.try_recv().is_none());
        target.node.shutdown().await;
    });
}

#[test]
fn a_snapshot_stream_with_two_frames_breaks_the_protocol() {
    common::runtime().block_on(async {
        let target = target();
        let connection = authenticated(&target).await;
        // Control and entries streams exist (opened, idle); the third is a
        // snapshot stream, which carries exactly one frame.
        let _control = connection.open_uni().await.expect("control");
        let _entries = connection.open_uni().await.expect("entries");
        let mut snapshot = connection.open_uni().await.expect("snapshot");
        let mut bytes = encode_contiguous(FrameKind::Snapshot, b"one").to_vec();
        bytes.extend_from_slice(&encode_contiguous(FrameKind::Snapshot, b"two"));
        snapshot.write_all(&bytes).await.expect("write");
        let _ = snapshot.finish();
        let code = common::close_code(&connection).await;
        assert_eq!(code, Some(CloseReason::Stream.code().into_inner()));
        target.node.shutdown().await;
    });
}

#[test]
fn too_many_streams_are_refused_by_quic_limits() {
    common::runtime().block_on(async {
        let target = target();
        let connection = authenticated(&target).await;
        // 2 + snapshot_streams_max (4) may be open at once; the seventh
        // waits for credit rather than growing the node's state.
        let mut streams = Vec::new();
        for _ in 0..6 {
            streams.push(connection.open_uni().await.expect("within the limit"));
        }
        let seventh = tokio::time::timeout(Duration::from_millis(300), connection.open_uni()).await;
        assert!(seventh.is_err(), "a seventh concurrent stream was granted");
        connection.close(0u32.into(), b"done");
        target.node.shutdown().await;
    });
}

#[test]
fn frame_header_encoding_used_above_matches_the_crate() {
    let ours = header(9, FrameKind::Entries as u8);
    let theirs = FrameHeader {
        body_bytes: 9,
        kind: FrameKind::Entries,
    }
    .encode();
    assert_eq!(ours, theirs.to_vec());
}
