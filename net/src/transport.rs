//! The API both transports share: the [`Transport`] trait for sending, the
//! [`Incoming`] receiver for frames that arrived, and the counters.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::PeerId;
use crate::frame::{Frame, TrafficClass};

/// Sends frames to peers. Implemented by [`crate::QuicTransport`] and
/// [`crate::MemoryTransport`]; received frames come out of the [`Incoming`]
/// returned when the transport was created.
pub trait Transport: Send + Sync {
    /// This node.
    fn node(&self) -> PeerId;

    /// Queues `frame` for `peer` on the stream of `class` and returns at
    /// once: it never blocks and never waits for the network. Delivery is not
    /// guaranteed (Raft retries): a frame queued here may still be lost if the
    /// connection fails before it is written.
    ///
    /// # Errors
    /// - [`SendError::Full`] when the peer's queue for this class is at its
    ///   byte bound: slow down (the engine's in-flight window stops sending).
    /// - [`SendError::PeerDown`] when the peer is unreachable; the frame is
    ///   dropped and counted.
    /// - [`SendError::TooLong`], [`SendError::UnknownPeer`],
    ///   [`SendError::Closed`] for a frame above `frame_bytes_max`, a node not
    ///   in the configuration, or a transport that was shut down.
    fn send(&self, peer: PeerId, class: TrafficClass, frame: Frame) -> Result<(), SendError>;

    /// A copy of the counters (a handful of relaxed atomic loads).
    fn counters(&self) -> CounterSnapshot;

    /// Bytes queued for `peer` and not yet written to the network (0 for an
    /// unknown peer).
    fn queue_bytes(&self, peer: PeerId) -> usize;
}

/// Why [`Transport::send`] refused a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue is full; nothing was queued.
    #[error("send queue of peer {peer} is full ({queued_bytes} of {bytes_max} bytes queued)")]
    Full {
        /// The peer.
        peer: PeerId,
        /// Bytes queued when the frame was refused.
        queued_bytes: usize,
        /// The bound.
        bytes_max: usize,
    },
    /// The peer is down (its last connection attempt failed); the frame was
    /// dropped and counted.
    #[error("peer {0} is down; frame dropped")]
    PeerDown(PeerId),
    /// The peer is not in this transport's configuration.
    #[error("peer {0} is not a configured peer")]
    UnknownPeer(PeerId),
    /// The frame body exceeds `frame_bytes_max`.
    #[error("frame body of {length} bytes exceeds the maximum of {maximum} bytes")]
    TooLong {
        /// The body length.
        length: usize,
        /// `frame_bytes_max`.
        maximum: usize,
    },
    /// The transport was shut down.
    #[error("transport is shut down")]
    Closed,
}

/// A frame received from a verified peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it (authenticated by certificate and handshake).
    pub peer: PeerId,
    /// Its traffic class.
    pub class: TrafficClass,
    /// The frame body (one allocation per frame at most).
    pub body: Bytes,
}

/// The receiving side of a transport: frames from every peer, by class.
///
/// Each class has its own bounded queue (`receive_queue_frames_max`), so a
/// backlog of entries never delays a heartbeat: [`Incoming::recv`] always
/// prefers control, then entries, then snapshot frames.
#[derive(Debug)]
pub struct Incoming {
    receivers: [mpsc::Receiver<Delivery>; 3],
}

impl Incoming {
    /// Waits for the next frame, control frames first. `None` once the
    /// transport is shut down and every queued frame was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: a frame is removed only when it is returned.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let [control, entries, snapshot] = &mut self.receivers;
        tokio::select! {
            biased;
            Some(delivery) = control.recv() => Some(delivery),
            Some(delivery) = entries.recv() => Some(delivery),
            Some(delivery) = snapshot.recv() => Some(delivery),
            else => None,
        }
    }

    /// Takes the next frame without waiting, control frames first.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.receivers
            .iter_mut()
            .find_map(|receiver| receiver.try_recv().ok())
    }

    /// Frames queued per class (control, entries, snapshot).
    pub fn queued_frames(&self) -> [usize; 3] {
        [
            self.receivers[0].len(),
            self.receivers[1].len(),
            self.receivers[2].len(),
        ]
    }
}

/// The sending half of [`Incoming`], held by the transport.
#[derive(Clone, Debug)]
pub(crate) struct Deliverers {
    senders: [mpsc::Sender<Delivery>; 3],
}

impl Deliverers {
    /// Waits for room in the class's queue (back-pressure onto the stream).
    /// `false` if the [`Incoming`] was dropped.
    pub(crate) async fn deliver(&self, delivery: Delivery) -> bool {
        self.senders[delivery.class.index()]
            .send(delivery)
            .await
            .is_ok()
    }

    /// Delivers without waiting; gives the frame back if the queue is full
    /// or closed.
    pub(crate) fn try_deliver(
        &self,
        delivery: Delivery,
    ) -> Result<(), mpsc::error::TrySendError<Delivery>> {
        self.senders[delivery.class.index()].try_send(delivery)
    }
}

/// A connected pair of [`Deliverers`] and [`Incoming`].
///
/// # Panics
/// If `frames_max` is 0 (a configuration bug: tokio needs room for a frame).
pub(crate) fn incoming_channel(frames_max: usize) -> (Deliverers, Incoming) {
    assert!(
        frames_max > 0,
        "receive_queue_frames_max must be at least 1"
    );
    let (control_tx, control_rx) = mpsc::channel(frames_max);
    let (entries_tx, entries_rx) = mpsc::channel(frames_max);
    let (snapshot_tx, snapshot_rx) = mpsc::channel(frames_max);
    (
        Deliverers {
            senders: [control_tx, entries_tx, snapshot_tx],
        },
        Incoming {
            receivers: [control_rx, entries_rx, snapshot_rx],
        },
    )
}

/// Live counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) sends_refused_full: AtomicU64,
    pub(crate) peers_rejected: AtomicU64,
    pub(crate) peers_misbehaving: AtomicU64,
    pub(crate) connections_established: AtomicU64,
    pub(crate) connections_lost: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CounterSnapshot {
            frames_sent: load(&self.frames_sent),
            bytes_sent: load(&self.bytes_sent),
            frames_received: load(&self.frames_received),
            bytes_received: load(&self.bytes_received),
            frames_dropped: load(&self.frames_dropped),
            sends_refused_full: load(&self.sends_refused_full),
            peers_rejected: load(&self.peers_rejected),
            peers_misbehaving: load(&self.peers_misbehaving),
            connections_established: load(&self.connections_established),
            connections_lost: load(&self.connections_lost),
            dial_failures: load(&self.dial_failures),
        }
    }
}

/// A copy of a transport's counters. Byte counts are frame body bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Frames written to the network.
    pub frames_sent: u64,
    /// Body bytes of frames written.
    pub bytes_sent: u64,
    /// Frames received and delivered.
    pub frames_received: u64,
    /// Body bytes of frames delivered.
    pub bytes_received: u64,
    /// Frames dropped: peer down, queue drained on disconnect, lost in a
    /// failed write, or (in memory) injected loss and partitions.
    pub frames_dropped: u64,
    /// `send` calls refused with [`SendError::Full`].
    pub sends_refused_full: u64,
    /// Connections refused: failed TLS, bad handshake, unknown peer.
    pub peers_rejected: u64,
    /// Connections closed because the peer sent a malformed frame or broke
    /// the stream protocol.
    pub peers_misbehaving: u64,
    /// Connections that completed the handshake and were kept.
    pub connections_established: u64,
    /// Established connections that later failed or were closed.
    pub connections_lost: u64,
    /// Dial attempts that failed.
    pub dial_failures: u64,
}
