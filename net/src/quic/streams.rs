//! Reading and writing frames on quinn streams.
//!
//! Writers gather queued frames into one `write_all_chunks` call: header
//! chunks (from an arena) interleaved with the callers' body chunks, never
//! copied. Readers validate the header before allocating, then assemble the
//! body in one allocation (or none, when quinn hands over the whole body as
//! one chunk).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc;

use crate::config::PeerId;
use crate::frame::{header_chunk, Frame, FrameError, FrameHeader, FrameKind, TrafficClass};
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

/// Reads one frame of kind `expected` whose body is at most
/// `frame_bytes_max` bytes.
pub(crate) async fn read_frame(
    stream: &mut RecvStream,
    frame_bytes_max: u32,
    expected: FrameKind,
) -> Result<Bytes, ReadFailure> {
    let mut header_bytes = [0u8; crate::frame::HEADER_BYTES];
    match stream.read_exact(&mut header_bytes).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(ReadFailure::End),
        Err(quinn::ReadExactError::FinishedEarly(read)) => {
            return Err(ReadFailure::Frame(FrameError::Truncated {
                missing: (crate::frame::HEADER_BYTES - read) as u64,
            }))
        }
        Err(quinn::ReadExactError::ReadError(error)) => {
            return Err(ReadFailure::Lost(error.to_string()))
        }
    }
    let header = FrameHeader::decode(header_bytes, frame_bytes_max).map_err(ReadFailure::Frame)?;
    if header.kind != expected {
        return Err(ReadFailure::Frame(FrameError::WrongKind {
            expected,
            found: header.kind,
        }));
    }
    // Lossless: the length was bounded by a u32 maximum above.
    let body_bytes = header.body_bytes as usize;
    let mut body: Option<BytesMut> = None;
    let mut first: Option<Bytes> = None;
    let mut read = 0usize;
    while read < body_bytes {
        let chunk = match stream.read_chunk(body_bytes - read, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                return Err(ReadFailure::Frame(FrameError::Truncated {
                    missing: (body_bytes - read) as u64,
                }))
            }
            Err(error) => return Err(ReadFailure::Lost(error.to_string())),
        };
        read += chunk.len();
        // Zero copies when the whole body comes as one chunk; otherwise one
        // allocation of exactly the announced (bounded) size.
        match (&mut body, first.take()) {
            (Some(buffer), _) => buffer.extend_from_slice(&chunk),
            (None, None) if read == body_bytes => first = Some(chunk),
            (None, previous) => {
                let mut buffer = BytesMut::with_capacity(body_bytes);
                if let Some(previous) = previous {
                    buffer.extend_from_slice(&previous);
                }
                buffer.extend_from_slice(&chunk);
                body = Some(buffer);
            }
        }
    }
    Ok(match (body, first) {
        (Some(buffer), _) => buffer.freeze(),
        (None, Some(chunk)) => chunk,
        (None, None) => Bytes::new(),
    })
}

/// Writes one frame (used for the handshake).
pub(crate) async fn write_frame(
    stream: &mut SendStream,
    kind: FrameKind,
    body: Bytes,
) -> Result<(), quinn::WriteError> {
    let mut arena = BytesMut::new();
    let header = FrameHeader {
        // Handshake bodies are a few dozen bytes.
        body_bytes: body.len() as u32,
        kind,
    };
    let mut chunks = [header_chunk(&mut arena, header), body];
    stream.write_all_chunks(&mut chunks).await
}

/// Reads frames of `class` from one stream until it ends, delivering each.
/// On a malformed frame the connection is closed and the peer counted as
/// misbehaving.
pub(crate) async fn read_stream(
    mut stream: RecvStream,
    connection: Connection,
    peer: PeerId,
    class: TrafficClass,
    frame_bytes_max: u32,
    deliverers: Deliverers,
    counters: Arc<Counters>,
    frames_max: Option<usize>,
) {
    let mut frames = 0usize;
    loop {
        if frames_max.is_some_and(|maximum| frames >= maximum) {
            // A snapshot stream carries exactly one frame; anything after it
            // breaks the protocol.
            match stream.read_chunk(1, true).await {
                Ok(None) => return,
                Ok(Some(_)) => {
                    misbehaving(
                        &connection,
                        &counters,
                        peer,
                        CloseReason::Stream,
                        "data after the frame of a snapshot stream",
                    );
                    return;
                }
                Err(_) => return,
            }
        }
        match read_frame(&mut stream, frame_bytes_max, class.kind()).await {
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
    let mut arena = BytesMut::new();
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut frames = 1u64;
        let mut body_bytes = first.body_bytes();
        let mut wire_bytes = first.wire_bytes();
        push_frame(&mut batch, &mut arena, class, first);
        while wire_bytes < write_batch_bytes_max {
            let Ok(next) = queue.try_recv() else { break };
            frames += 1;
            body_bytes += next.body_bytes();
            wire_bytes += next.wire_bytes();
            push_frame(&mut batch, &mut arena, class, next);
        }
        let result = stream.write_all_chunks(&mut batch).await;
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
    let mut arena = BytesMut::new();
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let Some(frame) = queue.recv().await else {
            return;
        };
        let body_bytes = frame.body_bytes();
        let wire_bytes = frame.wire_bytes();
        push_frame(&mut batch, &mut arena, TrafficClass::Snapshot, frame);
        let result = async {
            let mut stream = connection.open_uni().await?;
            // Only fails on a closed stream, which the write reports next.
            let _ = stream.set_priority(priority);
            stream.write_all_chunks(&mut batch).await?;
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

fn push_frame(batch: &mut Vec<Bytes>, arena: &mut BytesMut, class: TrafficClass, frame: Frame) {
    let header = FrameHeader {
        // `send` refused bodies above frame_bytes_max, a u32.
        body_bytes: frame.body_bytes() as u32,
        kind: class.kind(),
    };
    batch.push(header_chunk(arena, header));
    batch.extend(frame.into_chunks());
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
