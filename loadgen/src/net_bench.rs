//! `barge-loadgen net`: entries-stream throughput between two `barge-net`
//! endpoints on loopback, beside a raw quinn baseline (same chunk sizes, same
//! TLS, same transport parameters) measured in the same run.
//!
//! Messages of `--payload` bytes are packed into frames of about
//! `--batch-bytes` (the leader's encoded batch: one contiguous `Bytes`), so
//! `msgs_per_s` counts messages, not frames.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge_net::{
    baseline, Bytes, ClusterId, Config, DevCa, Frame, PeerId, QuicTransport, SendError,
    TrafficClass, Transport,
};
use lexopt::prelude::*;

const USAGE: &str = "usage: barge-loadgen net [--payload BYTES] [--batch-bytes BYTES] [--duration SECS] [--rounds N] [--json]

  --payload BYTES      message size (default 100)
  --batch-bytes BYTES  frame size messages are packed into (default 65536; at least one message)
  --duration SECS      measured time per run (default 5), after a 0.3 s warm-up
  --rounds N           alternate baseline and barge-net N times, report the means (default 1)
  --json               one JSON object instead of the table";

struct Options {
    payload: usize,
    batch_bytes: usize,
    duration: Duration,
    rounds: u32,
    json: bool,
}

struct Measured {
    bytes: u64,
    frames: u64,
    elapsed: Duration,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

pub fn run(mut parser: lexopt::Parser) -> Result<()> {
    let mut options = Options {
        payload: 100,
        batch_bytes: 64 * 1024,
        duration: Duration::from_secs(5),
        rounds: 1,
        json: false,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("payload") => options.payload = parser.value()?.parse()?,
            Long("batch-bytes") => options.batch_bytes = parser.value()?.parse()?,
            Long("duration") => {
                let seconds: f64 = parser.value()?.parse()?;
                if !(0.1..=3600.0).contains(&seconds) {
                    bail!("--duration must be between 0.1 and 3600 seconds");
                }
                options.duration = Duration::from_secs_f64(seconds);
            }
            Long("rounds") => options.rounds = parser.value()?.parse()?,
            Long("json") => options.json = true,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    if options.payload == 0 || options.payload > 16 * 1024 * 1024 {
        bail!("--payload must be between 1 and 16 MiB");
    }
    if options.rounds == 0 || options.rounds > 100 {
        bail!("--rounds must be between 1 and 100");
    }
    let messages_per_frame = (options.batch_bytes / options.payload).max(1);
    let frame_bytes = messages_per_frame * options.payload;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let (mut barge_runs, mut baseline_runs) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..options.rounds {
            let raw = baseline::run(frame_bytes, 1024 * 1024, options.duration)
                .await
                .context("raw quinn baseline")?;
            baseline_runs.push(raw.mb_per_s());
            barge_runs.push(measure(frame_bytes, options.duration).await?);
        }
        Ok::<(), anyhow::Error>(())
    })?;

    let rounds = f64::from(options.rounds);
    let mb_per_s = barge_runs.iter().map(Measured::mb_per_s).sum::<f64>() / rounds;
    let frames_per_s = barge_runs
        .iter()
        .map(|run| run.frames as f64 / run.elapsed.as_secs_f64())
        .sum::<f64>()
        / rounds;
    let msgs_per_s = frames_per_s * messages_per_frame as f64;
    let baseline_mb_per_s = baseline_runs.iter().sum::<f64>() / rounds;
    let baseline_msgs_per_s = baseline_mb_per_s * 1e6 / options.payload as f64;
    let ratio = mb_per_s / baseline_mb_per_s;
    if options.json {
        let report = serde_json::json!({
            "payload": options.payload,
            "frame_bytes": frame_bytes,
            "messages_per_frame": messages_per_frame,
            "duration_s": options.duration.as_secs_f64(),
            "rounds": options.rounds,
            "mb_per_s": mb_per_s,
            "msgs_per_s": msgs_per_s,
            "frames_per_s": frames_per_s,
            "baseline": { "mb_per_s": baseline_mb_per_s, "msgs_per_s": baseline_msgs_per_s },
            "ratio_to_baseline": ratio,
        });
        println!("{report}");
    } else {
        println!(
            "payload {} B, {} messages per frame ({} B frames), {} round(s) of {:.1} s",
            options.payload,
            messages_per_frame,
            frame_bytes,
            options.rounds,
            options.duration.as_secs_f64()
        );
        println!("{:<22} {:>12} {:>14}", "", "MB/s", "messages/s");
        println!(
            "{:<22} {:>12.1} {:>14.0}",
            "raw quinn baseline", baseline_mb_per_s, baseline_msgs_per_s
        );
        println!(
            "{:<22} {:>12.1} {:>14.0}",
            "barge-net entries", mb_per_s, msgs_per_s
        );
        println!("ratio to baseline: {:.1} %", ratio * 100.0);
    }
    Ok(())
}

/// Streams entries frames of `frame_bytes` from node 1 to node 2 for the
/// warm-up plus `duration`, counting what node 2 receives in the window.
async fn measure(frame_bytes: usize, duration: Duration) -> Result<Measured> {
    let cluster = ClusterId(0xbe7c);
    let ca = DevCa::generate(cluster)?;
    let sockets = [
        UdpSocket::bind("127.0.0.1:0")?,
        UdpSocket::bind("127.0.0.1:0")?,
    ];
    let addresses = [sockets[0].local_addr()?, sockets[1].local_addr()?];
    let mut transports = Vec::new();
    let mut incomings = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let node = PeerId(index as u64 + 1);
        let other = 1 - index;
        let peers = BTreeMap::from([(PeerId(other as u64 + 1), addresses[other])]);
        let config = Config::new(node, cluster, addresses[index], peers, ca.issue(node)?);
        let (transport, incoming) = QuicTransport::start_with_socket(config, socket)?;
        transports.push(Arc::new(transport));
        incomings.push(incoming);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(transports[0].is_connected(PeerId(2)) && transports[1].is_connected(PeerId(1))) {
        if Instant::now() > deadline {
            bail!("the two endpoints did not connect within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let received_bytes = Arc::new(AtomicU64::new(0));
    let received_frames = Arc::new(AtomicU64::new(0));
    let mut incoming = incomings.pop().context("receiver")?;
    let receiver = {
        let bytes = Arc::clone(&received_bytes);
        let frames = Arc::clone(&received_frames);
        tokio::spawn(async move {
            while let Some(delivery) = incoming.recv().await {
                bytes.fetch_add(delivery.body.len() as u64, Ordering::Relaxed);
                frames.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let transport = Arc::clone(&transports[0]);
        let stop = Arc::clone(&stop);
        let payload = Bytes::from(vec![0x42u8; frame_bytes]);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match transport.send(
                    PeerId(2),
                    TrafficClass::Entries,
                    Frame::from(payload.clone()),
                ) {
                    // Yield now and then, as a node's loop does between
                    // batches, so the writer gets its share of the workers.
                    Ok(()) => {
                        sent += 1;
                        if sent % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    // The engine's in-flight window would stop here; wait a
                    // tick for the writer to drain the queue.
                    Err(SendError::Full { .. }) => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(_) => return,
                }
            }
        })
    };

    tokio::time::sleep(baseline::WARMUP).await;
    let start = Instant::now();
    let (bytes_before, frames_before) = (
        received_bytes.load(Ordering::Relaxed),
        received_frames.load(Ordering::Relaxed),
    );
    tokio::time::sleep(duration).await;
    let measured = Measured {
        bytes: received_bytes.load(Ordering::Relaxed) - bytes_before,
        frames: received_frames.load(Ordering::Relaxed) - frames_before,
        elapsed: start.elapsed(),
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    for transport in &transports {
        transport.shutdown().await;
    }
    drop(transports);
    receiver.abort();
    Ok(measured)
}
