//! Raw baselines measured in the same run as the cluster, so every figure
//! has something to be divided by: write+fdatasync latency and sequential
//! write bandwidth on the data directory's disk (the log's own io_uring
//! code, `barge_wal::baseline`), and a quinn round trip on loopback with the
//! transport's TLS and transport parameters but none of its framing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use barge_net::tls::{client_crypto, node_name, server_crypto};
use barge_net::{ClusterId, Config, DevCa, PeerId};
use barge_wal::baseline::{self, BaselineConfig};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

/// Bytes per write of the latency loop: one page, the smallest write the
/// log makes.
const LATENCY_WRITE_BYTES: usize = 4096;
/// Bytes per write of the bandwidth loop: large enough that the sync per
/// write costs little next to the transfer.
const BANDWIDTH_WRITE_BYTES: usize = 4 << 20;
/// Each disk loop runs this long (and at most `WRITES_MAX` writes).
const DISK_LOOP: Duration = Duration::from_secs(2);
const WRITES_MAX: u64 = 1_000_000;
/// The round-trip loop runs this long or this many round trips.
const ROUND_TRIP_LOOP: Duration = Duration::from_secs(2);
const ROUND_TRIPS_MAX: usize = 200_000;
/// Bytes each way per round trip: a small proposal.
const PING_BYTES: usize = 64;

/// What the baselines measured.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub fsync_micros_p50: f64,
    pub fsync_micros_p99: f64,
    pub disk_mb_per_s: f64,
    pub quic_rtt_micros_p50: f64,
    pub quic_rtt_micros_p99: f64,
}

/// Runs the three baselines one after the other (nothing else running).
///
/// # Errors
/// If the scratch file or the endpoints cannot be set up.
///
/// # Cancel safety
/// Not cancel safe: a dropped future may leave the scratch file.
pub async fn measure(dir: &Path) -> Result<Baseline> {
    let disk = |write_bytes: usize| {
        let config = BaselineConfig {
            dir: dir.to_path_buf(),
            write_bytes,
            file_bytes: 256 << 20,
            duration: DISK_LOOP,
            writes_max: WRITES_MAX,
        };
        move || baseline::run(&config)
    };
    let latency = tokio::task::spawn_blocking(disk(LATENCY_WRITE_BYTES))
        .await?
        .with_context(|| format!("raw write+fdatasync loop in {}", dir.display()))?;
    let bandwidth = tokio::task::spawn_blocking(disk(BANDWIDTH_WRITE_BYTES))
        .await?
        .with_context(|| format!("raw sequential write loop in {}", dir.display()))?;
    let mut round_trips = quic_round_trips().await.context("raw quinn round trip")?;
    round_trips.sort_by(f64::total_cmp);
    Ok(Baseline {
        fsync_micros_p50: latency.sync_micros_p50,
        fsync_micros_p99: latency.sync_micros_p99,
        disk_mb_per_s: bandwidth.mb_per_s,
        quic_rtt_micros_p50: percentile(&round_trips, 0.5),
        quic_rtt_micros_p99: percentile(&round_trips, 0.99),
    })
}

/// The value at `fraction` of sorted `values` (0 when empty).
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * fraction.clamp(0.0, 1.0)).round() as usize]
}

/// Ping-pong of `PING_BYTES` on one bidirectional quinn stream between two
/// endpoints on loopback; returns each round trip in microseconds.
async fn quic_round_trips() -> Result<Vec<f64>> {
    let cluster = ClusterId(0x7077);
    let ca = DevCa::generate(cluster)?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let config_of = |node: u64| -> Result<Config> {
        Ok(Config::new(
            PeerId(node),
            cluster,
            loopback,
            BTreeMap::new(),
            ca.issue(PeerId(node))?,
        ))
    };
    let (server_config, client_config) = (config_of(1)?, config_of(2)?);
    let transport = Arc::new(barge_net::quic::transport_config(&server_config)?);
    let server_tls = server_crypto(&server_config.identity, server_config.protocol_version)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).map_err(|error| anyhow!("{error}"))?,
    ));
    server.transport_config(Arc::clone(&transport));
    let client_tls = client_crypto(&client_config.identity, client_config.protocol_version)?;
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).map_err(|error| anyhow!("{error}"))?,
    ));
    client.transport_config(transport);

    let server_endpoint = quinn::Endpoint::server(server, loopback)?;
    let mut client_endpoint = quinn::Endpoint::client(loopback)?;
    client_endpoint.set_default_client_config(client);
    let server_address = server_endpoint.local_addr()?;

    let echo = {
        let endpoint = server_endpoint.clone();
        tokio::spawn(async move {
            let connection = endpoint.accept().await?.await.ok()?;
            let (mut send, mut receive) = connection.accept_bi().await.ok()?;
            let mut buffer = [0u8; PING_BYTES];
            while receive.read_exact(&mut buffer).await.is_ok() {
                send.write_all(&buffer).await.ok()?;
            }
            Some(())
        })
    };
    let connection = client_endpoint
        .connect(server_address, &node_name(cluster, PeerId(1)))?
        .await?;
    let (mut send, mut receive) = connection.open_bi().await?;
    let ping = [0x5au8; PING_BYTES];
    let mut pong = [0u8; PING_BYTES];
    let mut round_trips = Vec::with_capacity(ROUND_TRIPS_MAX);
    let started = Instant::now();
    // The first round trips open the stream and warm the path; not counted.
    for _ in 0..100 {
        send.write_all(&ping).await?;
        receive.read_exact(&mut pong).await?;
    }
    while started.elapsed() < ROUND_TRIP_LOOP && round_trips.len() < ROUND_TRIPS_MAX {
        let sent = Instant::now();
        send.write_all(&ping).await?;
        receive.read_exact(&mut pong).await?;
        round_trips.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    connection.close(quinn::VarInt::from_u32(0), b"done");
    let _ = echo.await;
    server_endpoint.close(quinn::VarInt::from_u32(0), b"done");
    client_endpoint.close(quinn::VarInt::from_u32(0), b"done");
    Ok(round_trips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 51.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quinn_round_trips_are_measured() {
        let round_trips = quic_round_trips().await.expect("loopback round trips");
        assert!(!round_trips.is_empty());
        assert!(round_trips.iter().all(|micros| *micros > 0.0));
    }
}
