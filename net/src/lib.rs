//! `barge-net`: authenticated, bounded, length-prefixed frames between nodes
//! over QUIC, by traffic class. It never interprets a frame's body: the
//! engine encodes messages (rkyv headers plus raw batch bytes) and hands them
//! over as [`Frame`]s of [`bytes::Bytes`] chunks.
//!
//! # Contract
//!
//! - **One API, two implementations.** [`Transport::send`]`(peer, class,
//!   frame)` queues a frame and returns at once; frames from peers come out of
//!   the [`Incoming`] created with the transport as [`Delivery`]`{ peer,
//!   class, body }`. [`QuicTransport`] runs over quinn; [`MemoryTransport`]
//!   (from a [`MemoryNetwork`]) runs in memory with injectable drop, delay,
//!   duplication, reordering and partitions.
//! - **Traffic classes.** [`TrafficClass::Control`] (votes, heartbeats, acks,
//!   read index) has its own stream at the highest priority and its own send
//!   and receive queues, so a saturated entries stream never delays it;
//!   [`TrafficClass::Entries`] has one ordered stream;
//!   [`TrafficClass::Snapshot`] sends each frame on a fresh stream at the
//!   lowest priority (frames still arrive in order). Order is kept within a
//!   class, never across classes.
//! - **Bounded everywhere.** A frame body is at most `frame_bytes_max`; a peer's
//!   send queue holds at most `send_queue_bytes_max` (plus
//!   `control_queue_bytes_max` for control) and a full queue makes `send`
//!   return [`SendError::Full`] instead of growing; received frames wait in
//!   queues of `receive_queue_frames_max` per class, and a full queue stops
//!   reading the stream so QUIC flow control pushes back on the sender.
//!   Every length read from the network is checked before anything is
//!   allocated ([`frame`] documents the byte layout).
//! - **Zero copy.** Body chunks are written with `write_all_chunks` exactly as
//!   given; a received body is one [`bytes::Bytes`] (one allocation at most).
//! - **Authenticated.** Mutual TLS against a cluster CA, certificates naming
//!   the node ([`tls`]); ALPN names the protocol version; the first frame of
//!   every connection is a handshake checked both ways ([`handshake`]). A
//!   connection that fails any check is closed with a [`CloseReason`] before
//!   any frame is delivered.
//! - **Failures are counted, never fatal.** Frames for a peer that is down
//!   are dropped and counted (Raft retries); reconnects back off
//!   exponentially with jitter; a peer sending a malformed frame is
//!   disconnected, logged with `tracing` and counted in
//!   [`CounterSnapshot::peers_misbehaving`]. Nothing a peer sends can panic
//!   this crate.
//!
//! # Driving it from a node
//!
//! - Build one [`Config`] per node (`Config::new` fills LAN defaults; every
//!   bound is a public field) and call [`QuicTransport::start`] inside a Tokio
//!   runtime; keep the returned [`Incoming`] and drain it from the node's
//!   loop with [`Incoming::recv`] (or [`Incoming::try_recv`] to batch).
//! - Send with [`Transport::send`]; on [`SendError::Full`] stop sending to
//!   that peer until its [`Transport::queue_bytes`] falls (the Raft in-flight
//!   window), on [`SendError::PeerDown`] do nothing (Raft retries after the
//!   reconnect). `send` never blocks, so it is safe on the Raft loop.
//! - Order is kept per (peer, class), also across reconnects: a closed
//!   connection's readers are stopped before the next connection starts.
//!   Frames in flight on a failed (or replaced duplicate) connection may be
//!   lost; Raft retries. The QUIC transport never delivers a frame twice.
//! - The engine's `NodeId` converts to [`PeerId`] (`PeerId(id.0)`); frame
//!   bodies are whatever the engine's wire module encodes.
//! - [`MemoryNetwork`] gives the same API without sockets for the simulator.
//!
//! # Example
//!
//! Two nodes on loopback exchange a control frame:
//!
//! ```
//! use std::collections::BTreeMap;
//! use barge_net::{
//!     ClusterId, Config, DevCa, Frame, PeerId, QuicTransport, TrafficClass, Transport,
//! };
//! use bytes::Bytes;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let cluster = ClusterId(7);
//!     let ca = DevCa::generate(cluster)?;
//!     // Bind both sockets first so each node knows the other's address.
//!     let sockets = [
//!         std::net::UdpSocket::bind("127.0.0.1:0")?,
//!         std::net::UdpSocket::bind("127.0.0.1:0")?,
//!     ];
//!     let addresses = [sockets[0].local_addr()?, sockets[1].local_addr()?];
//!     let [socket_one, socket_two] = sockets;
//!     let config = |me: usize, other: usize| -> Result<Config, barge_net::TlsError> {
//!         let peers = BTreeMap::from([(PeerId(other as u64 + 1), addresses[other])]);
//!         let node = PeerId(me as u64 + 1);
//!         Ok(Config::new(node, cluster, addresses[me], peers, ca.issue(node)?))
//!     };
//!     let (one, _incoming_one) = QuicTransport::start_with_socket(config(0, 1)?, socket_one)?;
//!     let (two, mut incoming_two) = QuicTransport::start_with_socket(config(1, 0)?, socket_two)?;
//!
//!     // Queued while the connection comes up, then written.
//!     one.send(PeerId(2), TrafficClass::Control, Frame::from(Bytes::from_static(b"vote?")))?;
//!     let delivery = incoming_two.recv().await.expect("a frame");
//!     assert_eq!(delivery.peer, PeerId(1));
//!     assert_eq!(delivery.class, TrafficClass::Control);
//!     assert_eq!(&delivery.body[..], b"vote?");
//!
//!     one.shutdown().await;
//!     two.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

pub mod baseline;
pub mod config;
pub mod frame;
pub mod handshake;
pub mod memory;
pub mod ports;
pub mod quic;
pub mod tls;
pub mod transport;

/// Re-exported so callers build frames without naming the `bytes` crate.
pub use bytes::Bytes;
pub use config::{ClusterId, Config, PeerId, PROTOCOL_VERSION, SOCKET_BUFFER_BYTES_MAX};
pub use frame::{Frame, FrameDecoder, FrameError, FrameHeader, FrameKind, TrafficClass};
pub use handshake::{CloseReason, HandshakeError, Hello};
pub use memory::{Faults, MemoryConfig, MemoryNetwork, MemoryTransport};
pub use quic::{size_socket_buffers, QuicTransport, StartError};
pub use tls::{DevCa, NodeIdentity, TlsError};
pub use transport::{CounterSnapshot, Delivery, Incoming, SendError, Transport};
