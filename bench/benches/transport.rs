//! Criterion benchmark of `barge-net` on loopback: entries frames of 16 KiB
//! (one leader batch of large entries) streamed from one endpoint to
//! another, with path MTU discovery capped at 1452 B (the default, quinn's:
//! one Ethernet frame), 9000 B (jumbo frames) and 65527 B (the largest UDP
//! payload). Each QUIC packet is encrypted and
//! handed to the kernel on its own, so the packet size sets the per-byte
//! cost of bulk replication.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barge_net::{
    Bytes, ClusterId, Config, DevCa, Frame, Incoming, PeerId, QuicTransport, SendError,
    TrafficClass, Transport,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const FRAME_BYTES: usize = 16 * 1024;
/// Frames per measured batch: enough for discovery to have settled and for
/// the windows to be full most of the time.
const FRAMES_PER_BATCH: u64 = 2048;
const MTU_BOUNDS: [u16; 3] = [1452, 9000, 65527];

struct Pair {
    sender: Arc<QuicTransport>,
    receiver: Arc<QuicTransport>,
    incoming: Incoming,
}

async fn connect(mtu_upper_bound_bytes: u16) -> Pair {
    let cluster = ClusterId(0xbe7c);
    let ca = DevCa::generate(cluster).expect("dev CA");
    let sockets = [
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
    ];
    let addresses = [
        sockets[0].local_addr().expect("address"),
        sockets[1].local_addr().expect("address"),
    ];
    let mut started = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let node = PeerId(index as u64 + 1);
        let other = 1 - index;
        let peers = BTreeMap::from([(PeerId(other as u64 + 1), addresses[other])]);
        let identity = ca.issue(node).expect("certificate");
        let mut config = Config::new(node, cluster, addresses[index], peers, identity);
        config.mtu_upper_bound_bytes = mtu_upper_bound_bytes;
        started.push(QuicTransport::start_with_socket(config, socket).expect("transport"));
    }
    let (receiver, incoming) = started.pop().expect("two transports");
    let (sender, _) = started.pop().expect("two transports");
    let pair = Pair {
        sender: Arc::new(sender),
        receiver: Arc::new(receiver),
        incoming,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(pair.sender.is_connected(PeerId(2)) && pair.receiver.is_connected(PeerId(1))) {
        assert!(Instant::now() < deadline, "no connection within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pair
}

/// Sends `frames` frames and returns once the receiver has all of them.
async fn stream(pair: &mut Pair, frames: u64, payload: &Bytes) {
    let sender = Arc::clone(&pair.sender);
    let payload = payload.clone();
    let sending = tokio::spawn(async move {
        let mut sent = 0;
        while sent < frames {
            match sender.send(
                PeerId(2),
                TrafficClass::Entries,
                Frame::from(payload.clone()),
            ) {
                Ok(()) => {
                    sent += 1;
                    if sent % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                Err(SendError::Full { .. }) => {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(error) => panic!("send failed: {error}"),
            }
        }
    });
    let mut received = 0;
    while received < frames {
        let delivery = pair.incoming.recv().await.expect("receiver open");
        assert_eq!(delivery.body.len(), FRAME_BYTES);
        received += 1;
    }
    sending.await.expect("sender task");
}

fn entries_stream(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = Bytes::from(vec![0x42u8; FRAME_BYTES]);
    let mut group = criterion.benchmark_group("net/loopback_16k_frames");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64 * FRAMES_PER_BATCH));
    for bound in MTU_BOUNDS {
        let mut pair = runtime.block_on(async {
            let mut pair = connect(bound).await;
            // Let discovery settle before measuring.
            stream(&mut pair, FRAMES_PER_BATCH, &payload).await;
            pair
        });
        group.bench_function(BenchmarkId::new("mtu_upper_bound", bound), |b| {
            b.iter_custom(|batches| {
                runtime.block_on(async {
                    let start = Instant::now();
                    stream(&mut pair, batches * FRAMES_PER_BATCH, &payload).await;
                    start.elapsed()
                })
            });
        });
        runtime.block_on(async {
            pair.sender.shutdown().await;
            pair.receiver.shutdown().await;
        });
    }
    group.finish();
}

criterion_group!(benches, entries_stream);
criterion_main!(benches);
