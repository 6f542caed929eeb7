//! The QUIC transport: one quinn endpoint per node, one connection per peer.
//!
//! # Streams on a connection
//!
//! | stream                         | opened by | carries                          | priority |
//! |--------------------------------|-----------|----------------------------------|---------:|
//! | bidirectional #0               | dialer    | the two handshake frames         | —        |
//! | unidirectional, 1st per side   | each side | control frames, long-lived       | 16       |
//! | unidirectional, 2nd per side   | each side | entries frames, long-lived       | 0        |
//! | unidirectional, 3rd and later  | each side | one snapshot frame, then finish  | −16      |
//!
//! A receiver knows a stream's class from its position (QUIC hands streams
//! to the application in id order) and checks every frame's kind byte
//! against it. Snapshot streams are read one after another in id order, so
//! snapshot frames arrive in the order they were sent.
//!
//! # Duplicates
//!
//! Of two live connections dialled by different sides, both sides keep the
//! one dialled by the lower node id; of two dialled by the same side, the
//! newer (the dialler gave the older up: it restarted or saw it fail). The
//! other is closed with [`CloseReason::Duplicate`].
//!
//! # Tasks
//!
//! One acceptor task for the endpoint; per peer one driver task (module
//! `peer`) and, per live connection, three writer tasks (control, entries,
//! snapshots) and a stream-acceptor task with a reader per stream.

pub(crate) mod peer;
pub(crate) mod streams;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::Connection;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, PeerId, SOCKET_BUFFER_BYTES_MAX};
use crate::frame::{Frame, FrameKind, TrafficClass};
use crate::handshake::{CloseReason, HandshakeError, Hello};
use crate::tls::{self, verify_peer_certificate, TlsError};
use crate::transport::{
    incoming_channel, CounterSnapshot, Counters, Deliverers, Incoming, SendError, Transport,
};

use peer::{Established, PeerLink};

/// Why a [`QuicTransport`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates or TLS configuration unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// The address from the configuration.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A socket option from the configuration could not be set.
    #[error("cannot set {option} on {address}: {source}")]
    Socket {
        /// The socket's address.
        address: SocketAddr,
        /// The option, for example `SO_RCVBUF`.
        option: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// State shared by every task of one transport.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) counters: Arc<Counters>,
    pub(crate) deliverers: Deliverers,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) established: BTreeMap<PeerId, mpsc::Sender<Established>>,
}

/// The QUIC [`Transport`]. Created by [`QuicTransport::start`]; shut down by
/// [`QuicTransport::shutdown`] or on drop.
#[derive(Debug)]
pub struct QuicTransport {
    shared: Arc<Shared>,
    links: BTreeMap<PeerId, Arc<PeerLink>>,
}

/// The quinn transport parameters for a LAN (see [`Config`] for the
/// reasoning behind the numbers).
///
/// # Errors
/// [`StartError::Config`] if the idle timeout does not fit QUIC's encoding.
pub fn transport_config(config: &Config) -> Result<quinn::TransportConfig, StartError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| StartError::Config("idle_timeout too large".to_owned()))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .initial_rtt(config.initial_rtt)
        .stream_receive_window(quinn::VarInt::from_u32(config.stream_receive_window_bytes))
        .receive_window(quinn::VarInt::from_u32(
            config.connection_receive_window_bytes,
        ))
        .send_window(config.send_window_bytes)
        // Handshake only: one bidirectional stream per connection.
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1))
        // Control, entries, and the snapshot transfers in flight.
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(2 + config.snapshot_streams_max))
        .datagram_receive_buffer_size(None);
    if config.mtu_upper_bound_bytes < 1200 {
        transport.mtu_discovery_config(None);
    } else {
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(config.mtu_upper_bound_bytes);
        transport.mtu_discovery_config(Some(discovery));
    }
    Ok(transport)
}

/// Applies the configured kernel buffer sizes to the node's UDP socket
/// before quinn takes it over (see [`Config::socket_receive_buffer_bytes`]).
/// Linux silently caps a request at `net.core.rmem_max` / `wmem_max`; the
/// size obtained is logged, with a hint when it is smaller than asked.
///
/// # Errors
/// [`StartError::Config`] for a size above [`SOCKET_BUFFER_BYTES_MAX`],
/// [`StartError::Socket`] if the OS refuses the option.
pub fn size_socket_buffers(
    socket: &std::net::UdpSocket,
    config: &Config,
) -> Result<(), StartError> {
    let address = socket.local_addr().unwrap_or(config.listen);
    let socket = socket2::SockRef::from(socket);
    let settings = [
        (
            "SO_RCVBUF",
            "net.core.rmem_max",
            config.socket_receive_buffer_bytes,
        ),
        (
            "SO_SNDBUF",
            "net.core.wmem_max",
            config.socket_send_buffer_bytes,
        ),
    ];
    for (option, sysctl, requested) in settings {
        if requested == 0 {
            continue;
        }
        if requested > SOCKET_BUFFER_BYTES_MAX {
            return Err(StartError::Config(format!(
                "{option} of {requested} bytes is above the maximum of {SOCKET_BUFFER_BYTES_MAX}"
            )));
        }
        let failed = |source| StartError::Socket {
            address,
            option,
            source,
        };
        let obtained = if option == "SO_RCVBUF" {
            socket.set_recv_buffer_size(requested).map_err(failed)?;
            socket.recv_buffer_size().map_err(failed)?
        } else {
            socket.set_send_buffer_size(requested).map_err(failed)?;
            socket.send_buffer_size().map_err(failed)?
        };
        // Linux reports twice the usable size (it reserves half for its
        // own bookkeeping), so a granted request reads back at least as
        // large as asked.
        if obtained < requested {
            tracing::info!(
                %address, option, requested, obtained,
                "socket buffer capped by the kernel; raise {sysctl} for the configured size"
            );
        } else {
            tracing::debug!(%address, option, requested, obtained, "socket buffer sized");
        }
    }
    Ok(())
}

impl QuicTransport {
    /// Binds the endpoint and starts dialling every peer. Returns the
    /// transport and the receiver of frames from peers.
    ///
    /// Must be called inside a Tokio runtime (tasks are spawned on it).
    ///
    /// # Errors
    /// [`StartError`] for unusable certificates, a socket that cannot be
    /// bound, or a configuration listing this node as its own peer.
    pub fn start(config: Config) -> Result<(QuicTransport, Incoming), StartError> {
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| StartError::Bind {
                address: config.listen,
                source,
            })?;
        QuicTransport::start_with_socket(config, socket)
    }

    /// Like [`QuicTransport::start`] on a socket the caller already bound
    /// (`config.listen` is ignored). Lets tests learn every node's address
    /// before any node starts.
    ///
    /// # Errors
    /// As [`QuicTransport::start`].
    pub fn start_with_socket(
        config: Config,
        socket: std::net::UdpSocket,
    ) -> Result<(QuicTransport, Incoming), StartError> {
        if config.peers.contains_key(&config.node) {
            return Err(StartError::Config(format!(
                "node {} lists itself as a peer",
                config.node
            )));
        }
        if config.identity.node != config.node || config.identity.cluster != config.cluster {
            return Err(StartError::Config(format!(
                "identity is for node {} of cluster {}, configuration for node {} of cluster {}",
                config.identity.node, config.identity.cluster, config.node, config.cluster
            )));
        }
        size_socket_buffers(&socket, &config)?;
        let transport = Arc::new(transport_config(&config)?);
        let server_crypto = tls::server_crypto(&config.identity, config.protocol_version)?;
        let client_crypto = tls::client_crypto(&config.identity, config.protocol_version)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_crypto).map_err(TlsError::from)?,
        ));
        server.transport_config(Arc::clone(&transport));
        server.max_incoming(config.incoming_handshakes_max.max(1));
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_crypto).map_err(TlsError::from)?,
        ));
        client.transport_config(transport);
        let address = socket.local_addr().unwrap_or(config.listen);
        let runtime = quinn::default_runtime()
            .ok_or_else(|| StartError::Config("not inside a Tokio runtime".to_owned()))?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(|source| StartError::Bind { address, source })?;
        endpoint.set_default_client_config(client);

        let (deliverers, incoming) = incoming_channel(config.receive_queue_frames_max);
        let mut links = BTreeMap::new();
        let mut established = BTreeMap::new();
        let mut established_receivers = Vec::new();
        for &peer in config.peers.keys() {
            links.insert(
                peer,
                Arc::new(PeerLink::new(
                    peer,
                    config.control_queue_bytes_max,
                    config.send_queue_bytes_max,
                )),
            );
            // A handful suffices: at most one dial and one accepted
            // connection race at a time.
            let (sender, receiver) = mpsc::channel(4);
            established.insert(peer, sender);
            established_receivers.push((peer, receiver));
        }
        let shared = Arc::new(Shared {
            config,
            endpoint,
            counters: Arc::new(Counters::default()),
            deliverers,
            shutdown: watch::channel(false).0,
            established,
        });
        tokio::spawn(accept_connections(Arc::clone(&shared)));
        for (peer, receiver) in established_receivers {
            let link = Arc::clone(&links[&peer]);
            tokio::spawn(peer::drive(Arc::clone(&shared), link, receiver));
        }
        Ok((QuicTransport { shared, links }, incoming))
    }

    /// The bound UDP address (useful with port 0).
    ///
    /// # Errors
    /// The OS error if the socket has no address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Whether a handshaken connection to `peer` is up right now.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.links
            .get(&peer)
            .is_some_and(|link| link.is_connected())
    }

    /// Closes every connection (reason [`CloseReason::Shutdown`]) and waits
    /// up to a second for the peers to acknowledge.
    ///
    /// # Cancel safety
    /// Cancel safe: the close is issued before the first await.
    pub async fn shutdown(&self) {
        self.close();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.shared.endpoint.wait_idle(),
        )
        .await;
    }

    fn close(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared
            .endpoint
            .close(CloseReason::Shutdown.code(), CloseReason::Shutdown.text());
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport for QuicTransport {
    fn node(&self) -> PeerId {
        self.shared.config.node
    }

    fn send(&self, peer: PeerId, class: TrafficClass, frame: Frame) -> Result<(), SendError> {
        let maximum = self.shared.config.frame_bytes_max as usize;
        if frame.body_bytes() > maximum {
            return Err(SendError::TooLong {
                length: frame.body_bytes(),
                maximum,
            });
        }
        if *self.shared.shutdown.borrow() {
            return Err(SendError::Closed);
        }
        let link = self.links.get(&peer).ok_or(SendError::UnknownPeer(peer))?;
        link.enqueue(class, frame, &self.shared.counters)
    }

    fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    fn queue_bytes(&self, peer: PeerId) -> usize {
        self.links.get(&peer).map_or(0, |link| link.queued_bytes())
    }
}

/// Accepts incoming connections and runs the acceptor's half of each
/// handshake in its own task.
async fn accept_connections(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.changed() => return,
            incoming = shared.endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        tokio::spawn(accept_one(Arc::clone(&shared), incoming));
    }
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let timeout = shared.config.handshake_timeout;
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            // TLS already failed on the first flight (for example no common
            // ALPN, that is another protocol version).
            Counters::add(&shared.counters.peers_rejected, 1);
            tracing::warn!(%error, "refused connection: TLS handshake failed");
            return;
        }
    };
    let connection = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            // Failed TLS: unknown CA, wrong ALPN, no client certificate.
            Counters::add(&shared.counters.peers_rejected, 1);
            tracing::warn!(%error, "refused connection: TLS handshake failed");
            return;
        }
        Err(_) => {
            Counters::add(&shared.counters.peers_rejected, 1);
            tracing::warn!("refused connection: TLS handshake timed out");
            return;
        }
    };
    let result = match tokio::time::timeout(timeout, acceptor_handshake(&shared, &connection)).await
    {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout),
    };
    match result {
        Ok(peer) => {
            let established = Established {
                connection: connection.clone(),
                dialer: peer,
            };
            // The handshake refused peers that are not configured, and every
            // configured peer has a channel, so the lookup cannot fail.
            if shared.established[&peer].send(established).await.is_err() {
                // Shutting down.
                connection.close(CloseReason::Shutdown.code(), CloseReason::Shutdown.text());
            }
        }
        Err(HandshakeError::Connection(error)) => {
            tracing::debug!(%error, "incoming connection lost during handshake");
        }
        Err(error) => {
            Counters::add(&shared.counters.peers_rejected, 1);
            tracing::warn!(remote = %connection.remote_address(), %error, "refused connection: bad handshake");
            let reason = error.close_reason();
            connection.close(reason.code(), reason.text());
        }
    }
}

/// Checks the dialer's hello and certificate, replies, and returns who it is.
async fn acceptor_handshake(
    shared: &Shared,
    connection: &Connection,
) -> Result<PeerId, HandshakeError> {
    let config = &shared.config;
    let lost = |error: &dyn std::fmt::Display| HandshakeError::Connection(error.to_string());
    let (mut send, receive) = connection.accept_bi().await.map_err(|e| lost(&e))?;
    let hello = peer::read_hello(receive).await?;
    hello.check(
        config.protocol_version,
        config.cluster,
        config.node,
        hello.sender,
    )?;
    if !config.peers.contains_key(&hello.sender) {
        return Err(HandshakeError::UnknownPeer(hello.sender));
    }
    let chain = connection
        .peer_identity()
        .and_then(|identity| {
            identity
                .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| HandshakeError::Certificate("no client certificate".to_owned()))?;
    verify_peer_certificate(&chain, config.cluster, hello.sender)
        .map_err(|error| HandshakeError::Certificate(error.to_string()))?;
    let reply = Hello {
        protocol_version: config.protocol_version,
        cluster: config.cluster,
        sender: config.node,
        receiver: hello.sender,
    };
    streams::write_frame(
        &mut send,
        FrameKind::Handshake,
        Bytes::copy_from_slice(&reply.encode()),
    )
    .await
    .map_err(|e| lost(&e))?;
    // Only fails if already finished.
    let _ = send.finish();
    Ok(hello.sender)
}

/// Accepts the peer's unidirectional streams on one connection and starts a
/// reader for each: the first is control, the second entries, the rest
/// snapshot transfers, read one at a time in order.
pub(crate) async fn accept_streams(shared: Arc<Shared>, peer: PeerId, connection: Connection) {
    let config = &shared.config;
    let frame_bytes_max = config.frame_bytes_max;
    let (snapshot_streams, mut snapshot_receiver) =
        mpsc::channel::<quinn::RecvStream>(config.snapshot_streams_max.max(1) as usize);
    let mut readers = tokio::task::JoinSet::new();
    {
        let shared = Arc::clone(&shared);
        let connection = connection.clone();
        readers.spawn(async move {
            while let Some(stream) = snapshot_receiver.recv().await {
                streams::read_stream(
                    stream,
                    connection.clone(),
                    peer,
                    TrafficClass::Snapshot,
                    frame_bytes_max,
                    shared.deliverers.clone(),
                    Arc::clone(&shared.counters),
                    Some(1),
                )
                .await;
            }
        });
    }
    let mut index = 0u64;
    while let Ok(stream) = connection.accept_uni().await {
        let class = match index {
            0 => TrafficClass::Control,
            1 => TrafficClass::Entries,
            _ => TrafficClass::Snapshot,
        };
        index += 1;
        if class == TrafficClass::Snapshot {
            if snapshot_streams.send(stream).await.is_err() {
                break;
            }
            continue;
        }
        readers.spawn(streams::read_stream(
            stream,
            connection.clone(),
            peer,
            class,
            frame_bytes_max,
            shared.deliverers.clone(),
            Arc::clone(&shared.counters),
            None,
        ));
    }
    // Dropping the JoinSet aborts the readers: the connection is gone.
    drop(snapshot_streams);
    readers.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterId, DevCa};

    fn config() -> Config {
        let ca = DevCa::generate(ClusterId(3)).expect("generate CA");
        let identity = ca.issue(PeerId(1)).expect("issue");
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Config::new(PeerId(1), ClusterId(3), listen, BTreeMap::new(), identity)
    }

    #[test]
    fn socket_buffers_take_the_configured_sizes() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let reference = socket2::SockRef::from(&socket);
        let default_bytes = reference.recv_buffer_size().expect("SO_RCVBUF");
        // Smaller than any Linux default, so the kernel cannot refuse it and
        // the read-back shows it was applied.
        let requested = 16 * 1024;
        assert!(default_bytes > 2 * requested, "default {default_bytes}");
        let mut config = config();
        config.socket_receive_buffer_bytes = requested;
        config.socket_send_buffer_bytes = requested;
        size_socket_buffers(&socket, &config).expect("sizes applied");
        let receive = reference.recv_buffer_size().expect("SO_RCVBUF");
        let send = reference.send_buffer_size().expect("SO_SNDBUF");
        assert!(
            (requested..default_bytes).contains(&receive),
            "receive buffer {receive}"
        );
        assert!(
            (requested..default_bytes).contains(&send),
            "send buffer {send}"
        );
    }

    #[test]
    fn zero_keeps_the_default_and_oversized_buffers_are_refused() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let reference = socket2::SockRef::from(&socket);
        let default_bytes = reference.recv_buffer_size().expect("SO_RCVBUF");
        let mut config = config();
        config.socket_receive_buffer_bytes = 0;
        config.socket_send_buffer_bytes = 0;
        size_socket_buffers(&socket, &config).expect("nothing to apply");
        assert_eq!(
            reference.recv_buffer_size().expect("SO_RCVBUF"),
            default_bytes
        );
        config.socket_receive_buffer_bytes = SOCKET_BUFFER_BYTES_MAX + 1;
        let error = size_socket_buffers(&socket, &config).expect_err("too large");
        assert!(matches!(error, StartError::Config(_)), "{error}");
    }
}
