//! Reading and writing frames on quinn streams.
//!
//! Writers gather queued frames into one `write_all_chunks` call: headers
//! (and bodies up to [`COPY_BODY_BYTES_MAX`]) in an arena, larger bodies as
//! the callers' chunks, never copied. Readers validate the header before allocating, slice frames out
//! of received chunks, and assemble a frame that spans chunks in one
//! allocation.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc;

use crate::config::PeerId;
use crate::frame::{Frame, FrameError, FrameHeader, FrameKind, TrafficClass, HEADER_BYTES};
use crate::handshake::CloseReason;
use crate::transport::{Counters, Deliverers, Delivery};

use super::peer::PeerLink;

/// Why reading a frame stopped.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The stream ended cleanly between frames.
    End,
    /// The peer sent a malformed frame.
    Frame(FrameError),
    /// The connection or stream failed (not attributable to the peer).
    Lost(String),
}

/// Reads frames from one stream. Whole quinn chunks are taken at once and
/// frames that lie inside a chunk are sliced out of it (no copy, no
/// allocation); a frame spanning chunks is assembled in one allocation of
/// its announced, already bounded, size.
pub(crate) struct FrameReader {
    stream: RecvStream,
    buffered: Bytes,
}

impl FrameReader {
    pub(crate) fn new(stream: RecvStream) -> FrameReader {
        FrameReader {
            stream,
            buffered: Bytes::new(),
        }
    }

    async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadFailure> {
        match self.stream.read_chunk(max, true).await {
            Ok(chunk) => Ok(chunk.map(|chunk| chunk.bytes)),
            Err(error) => Err(ReadFailure::Lost(error.to_string())),
        }
    }

    /// Reads one frame of kind `expected` whose body is at most
    /// `frame_bytes_max` bytes.
    pub(crate) async fn next(
        &mut self,
        frame_bytes_max: u32,
        expected: FrameKind,
    ) -> Result<Bytes, ReadFailure> {
        let mut header_bytes = [0u8; HEADER_BYTES];
        let mut have = 0;
        while have < HEADER_BYTES {
            if self.buffered.is_empty() {
                match self.chunk(usize::MAX).await? {
                    Some(chunk) => self.buffered = chunk,
                    None if have == 0 => return Err(ReadFailure::End),
                    None => {
                        return Err(ReadFailure::Frame(FrameError::Truncated {
                            missing: (HEADER_BYTES - have) as u64,
                        }))
                    }
                }
                continue;
            }
            let take = (HEADER_BYTES - have).min(self.buffered.len());
            header_bytes[have..have + take].copy_from_slice(&self.buffered[..take]);
            self.buffered.advance(take);
            have += take;
        }
        let header =
            FrameHeader::decode(header_bytes, frame_bytes_max).map_err(ReadFailure::Frame)?;
        if header.kind != expected {
            return Err(ReadFailure::Frame(FrameError::WrongKind {
                expected,
                found: header.kind,
            }));
        }
        // Lossless: the length was bounded by a u32 maximum above.
        let body_bytes = header.body_bytes as usize;
        if self.buffered.len() >= body_bytes {
            return Ok(self.buffered.split_to(body_bytes));
        }
        let truncated = |read: usize| {
            ReadFailure::Frame(FrameError::Truncated {
                missing: (body_bytes - read) as u64,
            })
        };
        if self.buffered.is_empty() {
            // The common case for large frames: one chunk is the whole body.
            let first = self.chunk(body_bytes).await?.ok_or_else(|| truncated(0))?;
            if first.len() == body_bytes {
                return Ok(first);
            }
            self.buffered = first;
        }
        let mut body = BytesMut::with_capacity(body_bytes);
        body.extend_from_slice(&self.buffered);
        self.buffered = Bytes::new();
        while body.len() < body_bytes {
            let chunk = self
                .chunk(body_bytes - body.len())
                .await?
                .ok_or_else(|| truncated(body.len()))?;
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Whether the stream ends here (no byte after the frames read so far).
    pub(crate) async fn at_end(&mut self) -> Result<bool, ReadFailure> {
        if !self.buffered.is_empty() {
            return Ok(false);
        }
        Ok(self.chunk(1).await?.is_none())
    }
}

/// Writes one frame (used for the handshake).
pub(crate) async fn write_frame(
    stream: &mut SendStream,
    kind: FrameKind,
    body: Bytes,
) -> Result<(), quinn::WriteError> {
    let mut batch = WriteBatch::default();
    batch.push(kind, Frame::from(body));
    stream.write_all_chunks(batch.chunks()).await
}

/// Reads frames of `class` from one stream until it ends, delivering each.
/// On a malformed frame the connection is closed and the peer counted as
/// misbehaving.
pub(crate) async fn read_stream(
    stream: RecvStream,
    connection: Connection,
    peer: PeerId,
    class: TrafficClass,
    frame_bytes_max: u32,
    deliverers: Deliverers,
    counters: Arc<Counters>,
    frames_max: Option<usize>,
) {
    let mut reader = FrameReader::new(stream);
    let mut frames = 0usize;
    loop {
        if frames_max.is_some_and(|maximum| frames >= maximum) {
            // A snapshot stream carries exactly one frame; anything after it
            // breaks the protocol.
            if let Ok(false) = reader.at_end().await {
                misbehaving(
                    &connection,
                    &counters,
                    peer,
                    CloseReason::Stream,
                    "data after the frame of a snapshot stream",
                );
            }
            return;
        }
        match reader.next(frame_bytes_max, class.kind()).await {
            Ok(body) => {
                frames += 1;
                Counters::add(&counters.frames_received, 1);
                Counters::add(&counters.bytes_received, body.len() as u64);
                let delivery = Delivery { peer, class, body };
                if !deliverers.deliver(delivery).await {
                    return;
                }
            }
            Err(ReadFailure::End) => {
                if frames_max.is_some() && frames == 0 {
                    misbehaving(
                        &connection,
                        &counters,
                        peer,
                        CloseReason::Stream,
                        "empty snapshot stream",
                    );
                }
                return;
            }
            Err(ReadFailure::Frame(error)) => {
                misbehaving(
                    &connection,
                    &counters,
                    peer,
                    CloseReason::Frame,
                    &error.to_string(),
                );
                return;
            }
            Err(ReadFailure::Lost(_)) => return,
        }
    }
}

/// Closes a connection whose peer broke the protocol, counts and logs it.
pub(crate) fn misbehaving(
    connection: &Connection,
    counters: &Counters,
    peer: PeerId,
    reason: CloseReason,
    detail: &str,
) {
    tracing::warn!(%peer, ?reason, detail, "closing connection to misbehaving peer");
    Counters::add(&counters.peers_misbehaving, 1);
    connection.close(reason.code(), reason.text());
}

/// Moves frames of `class` from the peer's queue onto `stream` (control and
/// entries: one long-lived stream) until the connection fails.
pub(crate) async fn write_stream(
    link: Arc<PeerLink>,
    class: TrafficClass,
    mut stream: SendStream,
    connection: Connection,
    counters: Arc<Counters>,
    write_batch_bytes_max: usize,
) {
    let mut queue = link.queue(class).lock().await;
    let mut batch = WriteBatch::default();
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut frames = 1u64;
        let mut body_bytes = first.body_bytes();
        let mut wire_bytes = first.wire_bytes();
        batch.push(class.kind(), first);
        while wire_bytes < write_batch_bytes_max {
            let Ok(next) = queue.try_recv() else { break };
            frames += 1;
            body_bytes += next.body_bytes();
            wire_bytes += next.wire_bytes();
            batch.push(class.kind(), next);
        }
        let result = stream.write_all_chunks(batch.chunks()).await;
        batch.clear();
        link.release(class, wire_bytes);
        if let Err(error) = result {
            Counters::add(&counters.frames_dropped, frames);
            tracing::debug!(peer = %link.peer, ?class, %error, "stream write failed");
            // A stopped stream on a live connection breaks the protocol;
            // closing makes the driver reconnect.
            connection.close(CloseReason::Stream.code(), CloseReason::Stream.text());
            return;
        }
        Counters::add(&counters.frames_sent, frames);
        Counters::add(&counters.bytes_sent, body_bytes as u64);
    }
}

/// Sends each queued snapshot frame on a stream of its own, at the lowest
/// priority, finishing the stream after the frame.
pub(crate) async fn write_snapshots(
    link: Arc<PeerLink>,
    connection: Connection,
    counters: Arc<Counters>,
    priority: i32,
) {
    let mut queue = link.queue(TrafficClass::Snapshot).lock().await;
    let mut batch = WriteBatch::default();
    loop {
        let Some(frame) = queue.recv().await else {
            return;
        };
        let body_bytes = frame.body_bytes();
        let wire_bytes = frame.wire_bytes();
        batch.push(FrameKind::Snapshot, frame);
        let result = async {
            let mut stream = connection.open_uni().await?;
            // Only fails on a closed stream, which the write reports next.
            let _ = stream.set_priority(priority);
            stream.write_all_chunks(batch.chunks()).await?;
            stream
                .finish()
                .map_err(|_| quinn::WriteError::ClosedStream)?;
            Ok::<(), quinn::WriteError>(())
        }
        .await;
        batch.clear();
        link.release(TrafficClass::Snapshot, wire_bytes);
        if let Err(error) = result {
            Counters::add(&counters.frames_dropped, 1);
            tracing::debug!(peer = %link.peer, %error, "snapshot stream failed");
            connection.close(CloseReason::Stream.code(), CloseReason::Stream.text());
            return;
        }
        Counters::add(&counters.frames_sent, 1);
        Counters::add(&counters.bytes_sent, body_bytes as u64);
    }
}

/// Bodies up to this size are copied into the write batch next to their
/// header instead of being passed as chunks of their own. quinn keeps one
/// segment per chunk in its send buffer and pays per segment when it builds
/// packets, so for small frames (votes, heartbeats, acks) one short copy is
/// much cheaper than two tiny chunks; batch payloads above this size are
/// never copied.
pub(crate) const COPY_BODY_BYTES_MAX: usize = 1024;

/// Gathers frames into the chunk list of one `write_all_chunks` call: headers
/// and small bodies go into a shared arena (split off as one chunk per run),
/// large bodies are passed through as the caller's `Bytes`.
#[derive(Debug, Default)]
pub(crate) struct WriteBatch {
    arena: BytesMut,
    chunks: Vec<Bytes>,
}

impl WriteBatch {
    pub(crate) fn push(&mut self, kind: FrameKind, frame: Frame) {
        let header = FrameHeader {
            // `send` refused bodies above frame_bytes_max, a u32.
            body_bytes: frame.body_bytes() as u32,
            kind,
        };
        let small = frame.body_bytes() <= COPY_BODY_BYTES_MAX;
        let inline_bytes = HEADER_BYTES + if small { frame.body_bytes() } else { 0 };
        if self.arena.capacity() - self.arena.len() < inline_bytes {
            self.flush_arena();
            self.arena.reserve(inline_bytes.max(64 * 1024));
        }
        self.arena.extend_from_slice(&header.encode());
        if small {
            for chunk in frame.chunks() {
                self.arena.extend_from_slice(chunk);
            }
        } else {
            self.flush_arena();
            self.chunks.extend(frame.into_chunks());
        }
    }

    fn flush_arena(&mut self) {
        if !self.arena.is_empty() {
            self.chunks.push(self.arena.split().freeze());
        }
    }

    /// The chunks to write, in order.
    pub(crate) fn chunks(&mut self) -> &mut [Bytes] {
        self.flush_arena();
        &mut self.chunks
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
    }
}

/// Discards every frame queued for `link` (peer down), counting each.
pub(crate) fn drain(link: &PeerLink, counters: &Counters) {
    for class in TrafficClass::ALL {
        // If a writer still holds the queue, it is being torn down with its
        // connection and the next drain (or the next connection) handles it.
        if let Ok(mut queue) = link.queue(class).try_lock() {
            let mut dropped = 0u64;
            while let Ok(frame) = queue.try_recv() {
                dropped += 1;
                link.release(class, frame.wire_bytes());
            }
            Counters::add(&counters.frames_dropped, dropped);
        }
    }
}

/// Type of a per-class queue receiver.
pub(crate) type QueueReceiver = mpsc::UnboundedReceiver<Frame>;
