//! The in-memory transport: same API, injectable faults, bounded queues.

use std::time::Duration;

use barge_net::{
    Faults, Frame, MemoryConfig, MemoryNetwork, PeerId, SendError, TrafficClass, Transport,
};
use bytes::Bytes;

fn frame(text: &str) -> Frame {
    Frame::from(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn delivers_in_order_without_faults() {
    let network = MemoryNetwork::new(1, MemoryConfig::default());
    let (one, _) = network.join(PeerId(1));
    let (_two, mut incoming) = network.join(PeerId(2));
    for i in 0..10 {
        one.send(PeerId(2), TrafficClass::Entries, frame(&i.to_string()))
            .expect("send");
    }
    one.send(PeerId(2), TrafficClass::Control, frame("hb"))
        .expect("send");
    // Control first, then entries in order.
    let first = incoming.try_recv().expect("control frame");
    assert_eq!(
        (first.class, &first.body[..]),
        (TrafficClass::Control, &b"hb"[..])
    );
    for i in 0..10 {
        let delivery = incoming.try_recv().expect("entries frame");
        assert_eq!(delivery.peer, PeerId(1));
        assert_eq!(delivery.body, Bytes::from(i.to_string()));
    }
    assert!(incoming.try_recv().is_none());
    assert_eq!(one.counters().frames_sent, 11);
}

#[test]
fn partition_drops_and_heal_restores() {
    let network = MemoryNetwork::new(2, MemoryConfig::default());
    let (one, _) = network.join(PeerId(1));
    let (_two, mut incoming) = network.join(PeerId(2));
    network.partition(PeerId(1), PeerId(2));
    one.send(PeerId(2), TrafficClass::Control, frame("lost"))
        .expect("send");
    assert!(incoming.try_recv().is_none());
    assert_eq!(one.counters().frames_dropped, 1);
    network.heal_all();
    one.send(PeerId(2), TrafficClass::Control, frame("kept"))
        .expect("send");
    assert_eq!(&incoming.try_recv().expect("delivered").body[..], b"kept");
}

#[test]
fn isolate_cuts_a_node_off() {
    let network = MemoryNetwork::new(2, MemoryConfig::default());
    let (one, mut incoming_one) = network.join(PeerId(1));
    let (two, _) = network.join(PeerId(2));
    let (three, mut incoming_three) = network.join(PeerId(3));
    network.isolate(PeerId(2));
    two.send(PeerId(1), TrafficClass::Control, frame("x"))
        .expect("send");
    one.send(PeerId(3), TrafficClass::Control, frame("y"))
        .expect("send");
    assert!(incoming_one.try_recv().is_none());
    assert_eq!(
        &incoming_three.try_recv().expect("1 and 3 still talk").body[..],
        b"y"
    );
    drop(three);
}

#[test]
fn drop_and_duplicate_follow_their_probabilities() {
    let network = MemoryNetwork::new(3, MemoryConfig::default());
    let (one, _) = network.join(PeerId(1));
    let (_two, mut incoming) = network.join(PeerId(2));
    network.set_faults(Faults {
        drop_probability: 0.3,
        duplicate_probability: 0.2,
        ..Faults::default()
    });
    let sent = 500;
    for i in 0..sent {
        one.send(PeerId(2), TrafficClass::Entries, frame(&i.to_string()))
            .expect("send");
    }
    let mut received = 0;
    while incoming.try_recv().is_some() {
        received += 1;
    }
    let dropped = one.counters().frames_dropped;
    // Expected: 350 kept, of which 70 twice: 420 deliveries. Wide bounds:
    // the point is that both faults happen, not their exact rate.
    assert!((100..=200).contains(&dropped), "dropped {dropped}");
    assert!(
        received > sent - dropped as usize,
        "some duplicates: {received}"
    );
    assert!(received < 2 * sent, "received {received}");
}

#[test]
fn same_seed_same_decisions() {
    let run = |seed| {
        let network = MemoryNetwork::new(seed, MemoryConfig::default());
        let (one, _) = network.join(PeerId(1));
        let (_two, mut incoming) = network.join(PeerId(2));
        network.set_faults(Faults {
            drop_probability: 0.5,
            ..Faults::default()
        });
        for i in 0..100 {
            one.send(PeerId(2), TrafficClass::Entries, frame(&i.to_string()))
                .expect("send");
        }
        std::iter::from_fn(|| incoming.try_recv().map(|d| d.body)).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn delay_and_reorder_deliver_later_and_out_of_order() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let network = MemoryNetwork::new(4, MemoryConfig::default());
        let (one, _) = network.join(PeerId(1));
        let (_two, mut incoming) = network.join(PeerId(2));
        network.set_faults(Faults {
            reorder_probability: 0.5,
            reorder_delay: Duration::from_millis(50),
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
            ..Faults::default()
        });
        for i in 0..50u32 {
            one.send(PeerId(2), TrafficClass::Entries, frame(&i.to_string()))
                .expect("send");
        }
        assert!(incoming.try_recv().is_none(), "nothing before the delay");
        assert!(one.queue_bytes(PeerId(2)) > 0);
        let mut order = Vec::new();
        for _ in 0..50 {
            let delivery = tokio::time::timeout(Duration::from_secs(1), incoming.recv())
                .await
                .expect("delivered")
                .expect("open");
            order.push(String::from_utf8(delivery.body.to_vec()).expect("utf8"));
        }
        let mut sorted = order.clone();
        sorted.sort_by_key(|text| text.parse::<u32>().expect("number"));
        assert_ne!(order, sorted, "reordering happened");
        assert_eq!(sorted, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(one.queue_bytes(PeerId(2)), 0);
    });
}

#[test]
fn full_receiver_and_oversized_frames_are_refused() {
    let network = MemoryNetwork::new(
        5,
        MemoryConfig {
            frame_bytes_max: 8,
            receive_queue_frames_max: 2,
            send_queue_bytes_max: 64,
        },
    );
    let (one, _) = network.join(PeerId(1));
    let (_two, _incoming) = network.join(PeerId(2));
    assert!(matches!(
        one.send(PeerId(2), TrafficClass::Entries, frame("123456789")),
        Err(SendError::TooLong {
            length: 9,
            maximum: 8
        })
    ));
    one.send(PeerId(2), TrafficClass::Entries, frame("a"))
        .expect("room");
    one.send(PeerId(2), TrafficClass::Entries, frame("b"))
        .expect("room");
    assert!(matches!(
        one.send(PeerId(2), TrafficClass::Entries, frame("c")),
        Err(SendError::Full { .. })
    ));
    // Control has its own queue.
    one.send(PeerId(2), TrafficClass::Control, frame("hb"))
        .expect("control room");
    assert!(matches!(
        one.send(PeerId(9), TrafficClass::Control, frame("?")),
        Err(SendError::PeerDown(PeerId(9)))
    ));
}

#[test]
fn both_transports_work_behind_one_trait_object() {
    common_runtime().block_on(async {
        let network = MemoryNetwork::new(6, MemoryConfig::default());
        let (memory_one, _) = network.join(PeerId(1));
        let (_memory_two, mut memory_incoming) = network.join(PeerId(2));
        let transports: Vec<std::sync::Arc<dyn Transport>> = vec![std::sync::Arc::new(memory_one)];
        for transport in &transports {
            transport
                .send(PeerId(2), TrafficClass::Control, frame("via dyn"))
                .expect("send");
            assert_eq!(transport.node(), PeerId(1));
            assert_eq!(transport.counters().frames_sent, 1);
        }
        assert_eq!(
            &memory_incoming.recv().await.expect("frame").body[..],
            b"via dyn"
        );
        fn is_transport<T: Transport + 'static>() {}
        is_transport::<barge_net::QuicTransport>();
        is_transport::<barge_net::MemoryTransport>();
    });
}

fn common_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
