//! Heartbeats (control class) keep their latency while the entries stream
//! is saturated. The bound asserted is deliberately generous (shared 2-core
//! machines); the measured figures are printed (`--nocapture`) and reported.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use barge_net::{Frame, PeerId, SendError, TrafficClass, Transport};
use bytes::Bytes;

const HEARTBEATS: usize = 40;
const BOUND: Duration = Duration::from_millis(250);

/// Sends `HEARTBEATS` control frames 5 ms apart, each carrying its send time
/// (nanoseconds since `base`); returns the one-way latencies observed by the
/// receiver task.
async fn heartbeat_latencies(
    class: TrafficClass,
    sender: &barge_net::QuicTransport,
    incoming: &mut barge_net::Incoming,
    base: Instant,
    entries_received: &AtomicU64,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(HEARTBEATS);
    let mut sent = 0;
    let mut next = tokio::time::Instant::now();
    while latencies.len() < HEARTBEATS {
        if sent < HEARTBEATS && tokio::time::Instant::now() >= next {
            let nanos = base.elapsed().as_nanos() as u64;
            let frame = Frame::from(Bytes::copy_from_slice(&nanos.to_le_bytes()));
            match sender.send(PeerId(2), class, frame) {
                Ok(()) => sent += 1,
                // Only the entries-class comparison can find its queue full;
                // retry at the next tick.
                Err(SendError::Full { .. }) if class == TrafficClass::Entries => {}
                Err(other) => panic!("heartbeat refused: {other}"),
            }
            next += Duration::from_millis(5);
        }
        let wait = next.saturating_duration_since(tokio::time::Instant::now());
        let delivery =
            match tokio::time::timeout(wait.max(Duration::from_millis(1)), incoming.recv()).await {
                Ok(Some(delivery)) => delivery,
                Ok(None) => panic!("transport closed"),
                Err(_) => continue,
            };
        // Heartbeats are the 8-byte frames; flood frames are 64 KiB.
        match delivery.body.len() {
            8 => {
                let mut nanos = [0u8; 8];
                nanos.copy_from_slice(&delivery.body[..8]);
                let sent_at = Duration::from_nanos(u64::from_le_bytes(nanos));
                latencies.push(base.elapsed().saturating_sub(sent_at));
            }
            _ => {
                entries_received.fetch_add(delivery.body.len() as u64, Ordering::Relaxed);
            }
        }
    }
    latencies.sort();
    latencies
}

fn summary(latencies: &[Duration]) -> (Duration, Duration, Duration) {
    let median = latencies[latencies.len() / 2];
    let p95 = latencies[latencies.len() * 95 / 100];
    let max = *latencies.last().expect("non-empty");
    (median, p95, max)
}

#[test]
fn heartbeats_keep_low_latency_while_entries_are_saturated() {
    common::runtime().block_on(async {
        let mut nodes = common::start_cluster(2, |_| {});
        let transports: Vec<_> = nodes.iter().map(|(t, _)| t).collect();
        common::wait_connected(&transports, &[PeerId(1), PeerId(2)]).await;
        drop(transports);
        let base = Instant::now();
        let entries_received = Arc::new(AtomicU64::new(0));

        let (first, second) = nodes.split_at_mut(1);
        let sender = &first[0].0;
        let incoming = &mut second[0].1;

        // Idle baseline.
        let idle =
            heartbeat_latencies(TrafficClass::Control, sender, incoming, base, &entries_received)
                .await;

        // Saturate the entries stream: 64 KiB frames as fast as the queue
        // takes them, until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let full_seen = Arc::new(AtomicU64::new(0));
        let flood = {
            let stop = Arc::clone(&stop);
            let full_seen = Arc::clone(&full_seen);
            let payload = Bytes::from(vec![0xabu8; 64 * 1024]);
            // A future joined below (not a spawned task), so it may borrow
            // the sender.
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match sender.send(PeerId(2), TrafficClass::Entries, Frame::from(payload.clone())) {
                        Ok(()) => tokio::task::yield_now().await,
                        Err(SendError::Full { .. }) => {
                            full_seen.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
            }
        };
        let measure = async {
            // Let the queue fill first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = entries_received.load(Ordering::Relaxed);
            let started = Instant::now();
            let loaded =
                heartbeat_latencies(TrafficClass::Control, sender, incoming, base, &entries_received)
                    .await;
            let moved = entries_received.load(Ordering::Relaxed) - before;
            let mb_per_s = moved as f64 / started.elapsed().as_secs_f64() / 1e6;
            // Comparison in the same run: the same heartbeats sent behind the
            // bulk data on the entries stream, as without traffic classes.
            let behind_entries =
                heartbeat_latencies(TrafficClass::Entries, sender, incoming, base, &entries_received)
                    .await;
            stop.store(true, Ordering::Relaxed);
            (loaded, behind_entries, mb_per_s)
        };
        let ((loaded, behind_entries, entries_mb_per_s), ()) = tokio::join!(measure, flood);

        let (idle_median, idle_p95, idle_max) = summary(&idle);
        let (median, p95, max) = summary(&loaded);
        let (entries_median, entries_p95, entries_max) = summary(&behind_entries);
        eprintln!(
            "heartbeats sent on the saturated entries stream instead (comparison): \
             median {entries_median:?} p95 {entries_p95:?} max {entries_max:?}"
        );
        eprintln!(
            "heartbeat one-way latency, idle: median {idle_median:?} p95 {idle_p95:?} max {idle_max:?}; \
             entries saturated ({entries_mb_per_s:.0} MB/s, queue full {} times): \
             median {median:?} p95 {p95:?} max {max:?}",
            full_seen.load(Ordering::Relaxed)
        );
        assert!(full_seen.load(Ordering::Relaxed) > 0, "the entries queue was saturated");
        assert!(entries_mb_per_s > 1.0, "entries kept flowing");
        assert!(p95 < BOUND, "heartbeat p95 {p95:?} under load exceeds {BOUND:?}");
        for (transport, _) in &nodes {
            transport.shutdown().await;
        }
    });
}
