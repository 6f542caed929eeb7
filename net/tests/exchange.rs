//! Two and three nodes on loopback exchange frames of every class.

mod common;

use std::time::Duration;

use barge_net::{Delivery, Frame, PeerId, TrafficClass, Transport};
use bytes::Bytes;

fn body(from: u64, to: u64, class: TrafficClass, sequence: u32) -> Bytes {
    Bytes::from(format!("{from}->{to} {class:?} #{sequence}").into_bytes())
}

async fn receive(incoming: &mut barge_net::Incoming) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .expect("a frame within 10 s")
        .expect("transport still running")
}

fn exchange_all_classes(count: usize) {
    common::runtime().block_on(async {
        let mut nodes = common::start_cluster(count, |_| {});
        let ids: Vec<PeerId> = (1..=count as u64).map(PeerId).collect();
        let per_class = 20u32;
        // Exactly-once delivery is only promised on a stable connection (a
        // replaced duplicate loses what it had in flight), so wait for it.
        let transports: Vec<_> = nodes.iter().map(|(t, _)| t).collect();
        common::wait_connected(&transports, &ids).await;
        drop(transports);
        for (transport, _) in &nodes {
            for &peer in &ids {
                if peer == transport.node() {
                    continue;
                }
                for class in TrafficClass::ALL {
                    for sequence in 0..per_class {
                        // Two chunks per frame: header-like prefix and payload,
                        // as the engine will send them.
                        let frame = Frame::from(vec![
                            Bytes::from_static(b"hdr:"),
                            body(transport.node().0, peer.0, class, sequence),
                        ]);
                        transport.send(peer, class, frame).expect("send");
                    }
                }
            }
        }
        let expected = (count - 1) * TrafficClass::ALL.len() * per_class as usize;
        for (transport, incoming) in &mut nodes {
            let me = transport.node();
            let mut next = std::collections::BTreeMap::new();
            for _ in 0..expected {
                let delivery = receive(incoming).await;
                let sequence = next.entry((delivery.peer, delivery.class)).or_insert(0u32);
                let mut wanted = b"hdr:".to_vec();
                wanted.extend_from_slice(&body(delivery.peer.0, me.0, delivery.class, *sequence));
                // Order is kept within each class from each peer.
                assert_eq!(delivery.body, Bytes::from(wanted), "at node {me}");
                *sequence += 1;
            }
            assert_eq!(next.len(), (count - 1) * 3);
            assert!(next.values().all(|&received| received == per_class));
            let counters = transport.counters();
            assert_eq!(counters.frames_received, expected as u64);
            assert_eq!(counters.peers_misbehaving, 0);
            assert_eq!(counters.peers_rejected, 0);
        }
        for (transport, _) in &nodes {
            assert_eq!(transport.counters().frames_sent, expected as u64);
            transport.shutdown().await;
        }
    });
}

#[test]
fn two_nodes_exchange_every_class() {
    exchange_all_classes(2);
}

#[test]
fn three_nodes_exchange_every_class() {
    exchange_all_classes(3);
}

#[test]
fn simultaneous_dials_settle_on_one_connection_per_pair() {
    common::runtime().block_on(async {
        let nodes = common::start_cluster(3, |_| {});
        let transports: Vec<_> = nodes.iter().map(|(t, _)| t).collect();
        let ids = [PeerId(1), PeerId(2), PeerId(3)];
        common::wait_connected(&transports, &ids).await;
        // Let any duplicate still in its handshake land and be resolved.
        tokio::time::sleep(Duration::from_millis(300)).await;
        common::wait_connected(&transports, &ids).await;
        for transport in &transports {
            let counters = transport.counters();
            // Every connection kept beyond one per peer was a duplicate that
            // replaced another, so it is matched by a lost one.
            assert_eq!(
                counters.connections_established - counters.connections_lost,
                2,
                "node {} keeps exactly one connection per peer: {counters:?}",
                transport.node()
            );
        }
        for transport in transports {
            transport.shutdown().await;
        }
    });
}

#[test]
fn large_frames_arrive_whole() {
    common::runtime().block_on(async {
        let mut nodes = common::start_cluster(2, |_| {});
        let payload: Bytes = (0..3_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        nodes[0]
            .0
            .send(
                PeerId(2),
                TrafficClass::Snapshot,
                Frame::from(payload.clone()),
            )
            .expect("send snapshot");
        nodes[0]
            .0
            .send(
                PeerId(2),
                TrafficClass::Entries,
                Frame::from(payload.slice(..1_000_000)),
            )
            .expect("send entries");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let delivery = receive(&mut nodes[1].1).await;
            match delivery.class {
                TrafficClass::Snapshot => assert_eq!(delivery.body, payload),
                TrafficClass::Entries => assert_eq!(delivery.body, payload.slice(..1_000_000)),
                TrafficClass::Control => panic!("no control frame was sent"),
            }
            seen.push(delivery.class);
        }
        seen.sort();
        assert_eq!(seen, vec![TrafficClass::Entries, TrafficClass::Snapshot]);
        for (transport, _) in &nodes {
            transport.shutdown().await;
        }
    });
}

#[test]
fn frames_of_mixed_sizes_survive_chunk_boundaries() {
    common::runtime().block_on(async {
        let mut nodes = common::start_cluster(2, |_| {});
        let transports: Vec<_> = nodes.iter().map(|(t, _)| t).collect();
        common::wait_connected(&transports, &[PeerId(1), PeerId(2)]).await;
        drop(transports);
        // Sizes straddle QUIC packet and chunk sizes: empty, tiny, ~MTU,
        // tens and hundreds of KiB.
        let sizes: Vec<usize> = (0..300u32)
            .map(|i| match i % 6 {
                0 => 0,
                1 => 1 + (i as usize % 7),
                2 => 1100 + i as usize,
                3 => 1452 * 3 + 17,
                4 => 40_000 + i as usize * 13,
                _ => 200_000 + i as usize,
            })
            .collect();
        let frames: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                (0..size)
                    .map(|byte| (byte * 31 + index) as u8)
                    .collect::<Vec<u8>>()
                    .into()
            })
            .collect();
        let sender = &nodes[0].0;
        for frame in &frames {
            loop {
                match sender.send(PeerId(2), TrafficClass::Entries, Frame::from(frame.clone())) {
                    Ok(()) => break,
                    Err(barge_net::SendError::Full { .. }) => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        }
        let incoming = &mut nodes[1].1;
        for (index, expected) in frames.iter().enumerate() {
            let delivery = receive(incoming).await;
            assert_eq!(delivery.class, TrafficClass::Entries);
            assert_eq!(delivery.body.len(), expected.len(), "frame {index}");
            assert!(delivery.body == *expected, "frame {index} content");
        }
        for (transport, _) in &nodes {
            transport.shutdown().await;
        }
    });
}
