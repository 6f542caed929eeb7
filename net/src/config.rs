//! Identities and the configuration of a transport, with every bound.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::NodeIdentity;

/// A node of the cluster as the transport knows it. The engine's `NodeId`
/// converts to and from it; `net` keeps its own type so it depends on nothing
/// of Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A cluster: nodes of different clusters refuse each other even when they
/// share a CA (checked in the handshake and named in every certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

/// The protocol version this build speaks. It is carried in the ALPN
/// (`barge/<version>`) and again in the handshake frame.
pub const PROTOCOL_VERSION: u16 = 1;

/// Configuration of one node's [`crate::QuicTransport`].
///
/// # Bounds and the reasoning behind the defaults
///
/// Windows are sized for the bandwidth-delay product of a LAN: 10 Gbit/s
/// (1.25 GB/s) at a round trip of up to 1 ms (loaded switches, interrupt
/// coalescing, a scheduler hiccup on the receiver) is 1.25 MB in flight. A
/// stream window of 4 MiB (about 3 BDP) keeps the entries stream at line rate
/// when the receiving task is briefly late; the connection window of 8 MiB
/// lets entries and a snapshot transfer both run at full window; the send
/// window matches it so the sender never holds more unacknowledged data than
/// the receiver may accept. Memory per peer is therefore bounded by
/// `send_queue_bytes_max` + `control_queue_bytes_max` (queued by the caller),
/// `send_window_bytes` (in quinn, unacknowledged) and
/// `receive_queue_frames_max` × `frame_bytes_max` × 3 classes +
/// `connection_receive_window_bytes` on the receiving side, plus the
/// kernel's buffer of the one UDP socket all peers share
/// (`socket_receive_buffer_bytes`, `socket_send_buffer_bytes`). (A small frame
/// sliced out of a received chunk keeps that chunk's buffer alive until the
/// caller drops it; quinn's receive buffers are at most one GRO batch,
/// 64 KiB, so the receive bound is `receive_queue_frames_max` × 3 ×
/// max(`frame_bytes_max`, 64 KiB).)
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub node: PeerId,
    /// The cluster this node belongs to.
    pub cluster: ClusterId,
    /// UDP address to bind (port 0 picks a free port; see
    /// [`crate::QuicTransport::local_addr`]).
    pub listen: SocketAddr,
    /// Every other member and its address. Connections from nodes not listed
    /// are refused.
    pub peers: BTreeMap<PeerId, SocketAddr>,
    /// Certificate chain, key and cluster CA.
    pub identity: NodeIdentity,
    /// Protocol version announced in the ALPN and the handshake.
    pub protocol_version: u16,
    /// Largest frame body accepted or sent, in bytes.
    pub frame_bytes_max: u32,
    /// Bytes of entries and snapshot frames queued per peer before `send`
    /// returns [`crate::SendError::Full`].
    pub send_queue_bytes_max: usize,
    /// Bytes of control frames queued per peer; separate from
    /// `send_queue_bytes_max` so a full entries queue never refuses a
    /// heartbeat.
    pub control_queue_bytes_max: usize,
    /// Frames per class received and not yet taken by the caller; when full,
    /// the stream reader stops reading, and QUIC flow control pushes back on
    /// the sender.
    pub receive_queue_frames_max: usize,
    /// Bytes gathered into one `write_all_chunks` call by a stream writer.
    pub write_batch_bytes_max: usize,
    /// Snapshot streams a peer may have open towards us at once.
    pub snapshot_streams_max: u32,
    /// Incoming connections in their handshake at once; more are refused by
    /// quinn, so a flood of dials costs bounded memory.
    pub incoming_handshakes_max: usize,
    /// First reconnect delay; doubles per failure up to the maximum, each
    /// with up to 50 % random jitter so a restarted cluster does not redial
    /// in lockstep.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Time allowed for the QUIC+TLS handshake and the handshake frames.
    pub handshake_timeout: Duration,
    /// QUIC keep-alive: a LAN peer that is quiet this long is pinged.
    pub keep_alive_interval: Duration,
    /// A connection with no traffic (keep-alives included) for this long is
    /// dead. A few keep-alive intervals: quick failure detection on a LAN.
    pub idle_timeout: Duration,
    /// Initial round-trip estimate; quinn's default of 333 ms is for the
    /// internet and would make the first loss recovery on a LAN very slow.
    pub initial_rtt: Duration,
    /// Per-stream receive window in bytes.
    pub stream_receive_window_bytes: u32,
    /// Per-connection receive window in bytes.
    pub connection_receive_window_bytes: u32,
    /// Per-connection send window in bytes.
    pub send_window_bytes: u64,
    /// Largest UDP payload, in bytes, that path MTU discovery probes for.
    /// Connections start at 1200 B, the size every QUIC path must carry;
    /// discovery probes upwards to this bound and settles on what the path
    /// delivers (a later black hole brings it back down), so a bound above
    /// the path's MTU costs only a few lost probes. Raise it on jumbo-frame
    /// LANs (about 9000). Default 1452, quinn's: one Ethernet frame over
    /// IPv4 or IPv6. Larger packets did not pay on loopback: every QUIC
    /// packet is encrypted separately, but quinn already hands the kernel up
    /// to 64 KiB per `sendmsg` through GSO, so the per-byte cost is the
    /// cipher's, and `cargo bench -p barge-bench --bench transport` measured
    /// 65527-byte packets no faster than 1452-byte ones. At most 65527;
    /// below 1200 turns discovery off (packets stay at 1200 B).
    pub mtu_upper_bound_bytes: u16,
    /// Kernel receive buffer of the node's UDP socket (`SO_RCVBUF`), in
    /// bytes; 0 keeps the operating system's default. Every peer's packets
    /// land in this one buffer, and whatever arrives while it is full is
    /// dropped by the kernel: QUIC then retransmits and its congestion
    /// controller halves the sending rate. Linux's default (about 208 KiB,
    /// 3 to 4 GSO bursts of 10 packets) overflowed under 16 KiB batches
    /// whenever the network thread was briefly off the CPU. The default,
    /// 8 MiB, covers a few milliseconds of a gigabyte per second. Linux
    /// caps the request at `net.core.rmem_max` (raise that sysctl to get
    /// the full size; the transport logs the size it got). At most
    /// 1 GiB.
    pub socket_receive_buffer_bytes: usize,
    /// Kernel send buffer of the node's UDP socket (`SO_SNDBUF`), in bytes;
    /// 0, the default, keeps the operating system's. A full send buffer
    /// only makes quinn wait for the socket to become writable (nothing is
    /// lost), and on loopback the kernel hands each packet to the receiver
    /// at once. Capped by `net.core.wmem_max`; at most 1 GiB.
    pub socket_send_buffer_bytes: usize,
}

/// The largest socket buffer size a [`Config`] may ask for.
pub const SOCKET_BUFFER_BYTES_MAX: usize = 1 << 30;

impl Config {
    /// A configuration with the default bounds for a LAN.
    pub fn new(
        node: PeerId,
        cluster: ClusterId,
        listen: SocketAddr,
        peers: BTreeMap<PeerId, SocketAddr>,
        identity: NodeIdentity,
    ) -> Config {
        Config {
            node,
            cluster,
            listen,
            peers,
            identity,
            protocol_version: PROTOCOL_VERSION,
            frame_bytes_max: 16 * 1024 * 1024,
            send_queue_bytes_max: 32 * 1024 * 1024,
            control_queue_bytes_max: 1024 * 1024,
            receive_queue_frames_max: 256,
            write_batch_bytes_max: 1024 * 1024,
            snapshot_streams_max: 4,
            incoming_handshakes_max: 64,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            initial_rtt: Duration::from_micros(500),
            stream_receive_window_bytes: 4 * 1024 * 1024,
            connection_receive_window_bytes: 8 * 1024 * 1024,
            send_window_bytes: 8 * 1024 * 1024,
            mtu_upper_bound_bytes: 1452,
            socket_receive_buffer_bytes: 8 * 1024 * 1024,
            socket_send_buffer_bytes: 0,
        }
    }
}
