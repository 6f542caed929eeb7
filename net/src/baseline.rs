//! The raw quinn baseline: the same chunks over one bare quinn stream, with
//! the same TLS (cluster CA, mTLS, ring), the same transport parameters and
//! the same socket buffer sizes as [`crate::QuicTransport`], but no framing, queues, handshake frame or
//! delivery. Throughput of the transport is quoted as a fraction of this,
//! measured in the same run.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::config::{ClusterId, Config, PeerId};
use crate::quic::{size_socket_buffers, transport_config, StartError};
use crate::tls::{self, node_name, DevCa, TlsError};

/// Why the baseline could not run.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Setting up TLS or the endpoints failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding a socket failed.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting failed.
    #[error("connection: {0}")]
    Connection(String),
}

/// Time streamed before the measured window starts.
pub const WARMUP: Duration = Duration::from_millis(300);

/// What the baseline measured.
#[derive(Clone, Copy, Debug)]
pub struct BaselineReport {
    /// Bytes the receiver read during the measured window.
    pub bytes_received: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
}

impl BaselineReport {
    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes_received as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Streams `chunk_bytes`-sized chunks for [`WARMUP`] + `duration` from one endpoint to
/// another on loopback, writing up to `write_batch_bytes_max` bytes of chunks
/// per `write_all_chunks` call, exactly as the transport's writer does.
///
/// # Errors
/// [`BaselineError`] if endpoints cannot be set up or connected.
///
/// # Cancel safety
/// Not cancel safe in a useful sense: cancelling abandons the measurement
/// (the endpoints are closed on drop).
pub async fn run(
    chunk_bytes: usize,
    write_batch_bytes_max: usize,
    duration: Duration,
) -> Result<BaselineReport, BaselineError> {
    let cluster = ClusterId(0xba5e);
    let ca = DevCa::generate(cluster)?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let config_of = |node: u64| -> Result<Config, TlsError> {
        Ok(Config::new(
            PeerId(node),
            cluster,
            loopback,
            BTreeMap::new(),
            ca.issue(PeerId(node))?,
        ))
    };
    let server_config = config_of(1)?;
    let client_config = config_of(2)?;
    let transport = Arc::new(transport_config(&server_config)?);

    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls::server_crypto(
            &server_config.identity,
            server_config.protocol_version,
        )?)
        .map_err(TlsError::from)?,
    ));
    server.transport_config(Arc::clone(&transport));
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls::client_crypto(
            &client_config.identity,
            client_config.protocol_version,
        )?)
        .map_err(TlsError::from)?,
    ));
    client.transport_config(transport);

    // Bound here so the sockets get the transport's buffer sizes too.
    let socket = |config: &Config| -> Result<std::net::UdpSocket, BaselineError> {
        let socket = std::net::UdpSocket::bind(loopback)?;
        size_socket_buffers(&socket, config)?;
        Ok(socket)
    };
    let runtime = quinn::default_runtime()
        .ok_or_else(|| StartError::Config("not inside a Tokio runtime".to_owned()))?;
    let server_endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket(&server_config)?,
        Arc::clone(&runtime),
    )?;
    let mut client_endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket(&client_config)?,
        runtime,
    )?;
    client_endpoint.set_default_client_config(client);
    let server_address = server_endpoint.local_addr()?;

    let connection_error =
        |error: &dyn std::fmt::Display| BaselineError::Connection(error.to_string());
    let accept = {
        let endpoint = server_endpoint.clone();
        tokio::spawn(async move {
            let incoming = endpoint.accept().await?;
            incoming.await.ok()
        })
    };
    let connection = client_endpoint
        .connect(server_address, &node_name(cluster, PeerId(1)))
        .map_err(|e| connection_error(&e))?
        .await
        .map_err(|e| connection_error(&e))?;
    let server_connection = accept
        .await
        .map_err(|e| connection_error(&e))?
        .ok_or_else(|| BaselineError::Connection("accept failed".to_owned()))?;

    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let Ok(mut stream) = server_connection.accept_uni().await else {
                return;
            };
            while let Ok(Some(chunk)) = stream.read_chunk(usize::MAX, true).await {
                received.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let connection = connection.clone();
        tokio::spawn(async move {
            let Ok(mut stream) = connection.open_uni().await else {
                return;
            };
            let payload = Bytes::from(vec![0x5a; chunk_bytes]);
            let per_batch = (write_batch_bytes_max / chunk_bytes.max(1)).max(1);
            let mut batch: Vec<Bytes> = Vec::with_capacity(per_batch);
            while !stop.load(Ordering::Relaxed) {
                batch.extend(std::iter::repeat_n(payload.clone(), per_batch));
                if stream.write_all_chunks(&mut batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        })
    };

    // Let slow start and the windows open before measuring, as the
    // transport's measurement does.
    tokio::time::sleep(WARMUP).await;
    let start = Instant::now();
    let before = received.load(Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    let bytes_received = received.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    connection.close(quinn::VarInt::from_u32(0), b"done");
    let _ = writer.await;
    let _ = reader.await;
    server_endpoint.close(quinn::VarInt::from_u32(0), b"done");
    client_endpoint.close(quinn::VarInt::from_u32(0), b"done");
    Ok(BaselineReport {
        bytes_received,
        elapsed,
    })
}
