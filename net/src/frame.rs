//! Framing: the byte layout of a frame, its header codec and an incremental
//! decoder for byte buffers.
//!
//! # Byte layout
//!
//! Every frame on every stream is a 5-byte header followed by the body:
//!
//! | offset | size | field  | meaning                                              |
//! |-------:|-----:|--------|------------------------------------------------------|
//! | 0      | 4    | length | body length in bytes, `u32` little endian            |
//! | 4      | 1    | kind   | [`FrameKind`]: 0 handshake, 1 control, 2 entries, 3 snapshot |
//! | 5      | len  | body   | opaque bytes, never interpreted by this crate        |
//!
//! The length counts the body only, so an empty body is legal (`length = 0`).
//! A decoder rejects a length above its configured `frame_bytes_max` from the
//! header alone, before allocating anything, and rejects any other kind byte.
//! Each stream carries one kind (see [`crate::quic`]), so a frame whose kind
//! does not belong to its stream is also an error.

use bytes::{Buf, Bytes, BytesMut};

/// Size of the frame header in bytes: `u32` length + kind byte.
pub const HEADER_BYTES: usize = 5;

/// The traffic class of a frame, which chooses its stream and priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrafficClass {
    /// Votes, heartbeats, acks, read-index: one long-lived stream at the
    /// highest priority, so bulk data never delays an election.
    Control,
    /// Log entries: one long-lived ordered stream at normal priority.
    Entries,
    /// Snapshot chunks: one stream per frame ("transfer") at the lowest
    /// priority, delivered in the order they were sent.
    Snapshot,
}

impl TrafficClass {
    /// Every class, in priority order (highest first).
    pub const ALL: [TrafficClass; 3] = [
        TrafficClass::Control,
        TrafficClass::Entries,
        TrafficClass::Snapshot,
    ];

    /// The frame kind carried by frames of this class.
    pub fn kind(self) -> FrameKind {
        match self {
            TrafficClass::Control => FrameKind::Control,
            TrafficClass::Entries => FrameKind::Entries,
            TrafficClass::Snapshot => FrameKind::Snapshot,
        }
    }

    /// Dense index (0, 1, 2) for per-class arrays.
    pub fn index(self) -> usize {
        match self {
            TrafficClass::Control => 0,
            TrafficClass::Entries => 1,
            TrafficClass::Snapshot => 2,
        }
    }
}

/// The kind byte of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// The connection handshake (see [`crate::handshake`]); only on the
    /// handshake stream.
    Handshake = 0,
    /// A [`TrafficClass::Control`] frame.
    Control = 1,
    /// A [`TrafficClass::Entries`] frame.
    Entries = 2,
    /// A [`TrafficClass::Snapshot`] frame.
    Snapshot = 3,
}

impl FrameKind {
    /// Parses a kind byte.
    ///
    /// # Errors
    /// [`FrameError::UnknownKind`] for any byte other than 0..=3.
    pub fn from_byte(byte: u8) -> Result<FrameKind, FrameError> {
        match byte {
            0 => Ok(FrameKind::Handshake),
            1 => Ok(FrameKind::Control),
            2 => Ok(FrameKind::Entries),
            3 => Ok(FrameKind::Snapshot),
            other => Err(FrameError::UnknownKind(other)),
        }
    }

    /// The traffic class of a data frame, `None` for the handshake.
    pub fn class(self) -> Option<TrafficClass> {
        match self {
            FrameKind::Handshake => None,
            FrameKind::Control => Some(TrafficClass::Control),
            FrameKind::Entries => Some(TrafficClass::Entries),
            FrameKind::Snapshot => Some(TrafficClass::Snapshot),
        }
    }
}

/// A malformed frame. Every variant is the peer's fault (or corruption); the
/// transport closes the connection with [`crate::CloseReason::Frame`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces a body longer than `frame_bytes_max`.
    #[error("frame body of {length} bytes exceeds the maximum of {maximum} bytes")]
    TooLong {
        /// Announced body length.
        length: u64,
        /// Configured `frame_bytes_max`.
        maximum: u64,
    },
    /// The kind byte is not a known [`FrameKind`].
    #[error("unknown frame kind byte {0:#04x}")]
    UnknownKind(u8),
    /// A frame of one kind arrived on a stream reserved for another.
    #[error("frame kind {found:?} on a stream that carries {expected:?}")]
    WrongKind {
        /// The kind the stream carries.
        expected: FrameKind,
        /// The kind found in the header.
        found: FrameKind,
    },
    /// The stream ended inside a frame.
    #[error("stream ended {missing} bytes before the end of a frame")]
    Truncated {
        /// Bytes still expected when the stream ended.
        missing: u64,
    },
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Body length in bytes (already checked against `frame_bytes_max`).
    pub body_bytes: u32,
    /// The kind byte.
    pub kind: FrameKind,
}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(self) -> [u8; HEADER_BYTES] {
        let length = self.body_bytes.to_le_bytes();
        [length[0], length[1], length[2], length[3], self.kind as u8]
    }

    /// Decodes and validates a header. Nothing is allocated: the caller
    /// allocates `body_bytes` only after this returned `Ok`.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] if the length exceeds `frame_bytes_max`,
    /// [`FrameError::UnknownKind`] for a bad kind byte.
    pub fn decode(
        bytes: [u8; HEADER_BYTES],
        frame_bytes_max: u32,
    ) -> Result<FrameHeader, FrameError> {
        let body_bytes = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        // The kind is checked first so garbage is reported as garbage even
        // when its first four bytes also make an absurd length.
        let kind = FrameKind::from_byte(bytes[4])?;
        if body_bytes > frame_bytes_max {
            return Err(FrameError::TooLong {
                length: u64::from(body_bytes),
                maximum: u64::from(frame_bytes_max),
            });
        }
        Ok(FrameHeader { body_bytes, kind })
    }
}

/// A frame to send: its body as a list of [`Bytes`] chunks, written to the
/// stream as they are (never copied into one buffer).
///
/// The body is opaque; typically an encoded message header followed by the raw
/// batch bytes the leader encoded once.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    chunks: Vec<Bytes>,
    body_bytes: usize,
}

impl Frame {
    /// An empty frame with room for `chunks` body chunks.
    pub fn with_capacity(chunks: usize) -> Frame {
        Frame {
            chunks: Vec::with_capacity(chunks),
            body_bytes: 0,
        }
    }

    /// Appends a body chunk (zero-copy: the `Bytes` handle is moved).
    pub fn push(&mut self, chunk: Bytes) {
        self.body_bytes += chunk.len();
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
    }

    /// Body length in bytes (excluding the header).
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Length on the wire in bytes, header included.
    pub fn wire_bytes(&self) -> usize {
        self.body_bytes + HEADER_BYTES
    }

    /// The body chunks.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Consumes the frame, returning its body chunks.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The body as one contiguous [`Bytes`]: free for a one-chunk body, a
    /// copy otherwise (used by the in-memory transport and tests).
    pub fn to_contiguous(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [only] => only.clone(),
            many => {
                let mut body = BytesMut::with_capacity(self.body_bytes);
                for chunk in many {
                    body.extend_from_slice(chunk);
                }
                body.freeze()
            }
        }
    }
}

impl From<Bytes> for Frame {
    fn from(body: Bytes) -> Frame {
        let mut frame = Frame::with_capacity(1);
        frame.push(body);
        frame
    }
}

impl From<Vec<Bytes>> for Frame {
    fn from(chunks: Vec<Bytes>) -> Frame {
        let body_bytes = chunks.iter().map(Bytes::len).sum();
        Frame { chunks, body_bytes }
    }
}

/// Writes a frame header into `arena` and splits it off as [`Bytes`]. The
/// arena amortises header allocations: one allocation serves many headers.
pub fn header_chunk(arena: &mut BytesMut, header: FrameHeader) -> Bytes {
    if arena.capacity() < HEADER_BYTES {
        arena.reserve(HEADER_BYTES * 1024);
    }
    arena.extend_from_slice(&header.encode());
    arena.split_to(HEADER_BYTES).freeze()
}

/// Encodes a whole frame into one contiguous buffer (tests, benchmarks and
/// the fuzzers; the transport itself writes header and body chunks
/// separately).
///
/// # Panics
/// If the body is longer than `u32::MAX` bytes, which no caller can build
/// through the transport since `frame_bytes_max` is a `u32`.
pub fn encode_contiguous(kind: FrameKind, body: &[u8]) -> Bytes {
    let body_bytes = u32::try_from(body.len()).expect("frame body longer than u32::MAX bytes");
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&FrameHeader { body_bytes, kind }.encode());
    out.extend_from_slice(body);
    out.freeze()
}

/// Incremental decoder over a byte buffer: feed bytes as they arrive, take
/// whole frames out. Used by the fuzz targets and property tests, and the
/// reference for the stream reader in [`crate::quic`], which shares
/// [`FrameHeader::decode`].
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: u32,
    expected: Option<FrameKind>,
}

impl FrameDecoder {
    /// A decoder that rejects bodies above `frame_bytes_max` and, if
    /// `expected` is set, frames of any other kind.
    pub fn new(frame_bytes_max: u32, expected: Option<FrameKind>) -> FrameDecoder {
        FrameDecoder {
            buffer: BytesMut::new(),
            frame_bytes_max,
            expected,
        }
    }

    /// Appends received bytes.
    ///
    /// The buffer holds at most one partial frame plus what was fed since the
    /// last [`FrameDecoder::decode`]; callers feed bounded reads and decode
    /// after each, so memory stays below `frame_bytes_max` + header + one read.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the next whole frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// Any [`FrameError`] from the header; after an error the stream is
    /// unusable and the caller closes the connection.
    pub fn decode(&mut self) -> Result<Option<(FrameKind, Bytes)>, FrameError> {
        if self.buffer.len() < HEADER_BYTES {
            return Ok(None);
        }
        let mut header_bytes = [0u8; HEADER_BYTES];
        header_bytes.copy_from_slice(&self.buffer[..HEADER_BYTES]);
        let header = FrameHeader::decode(header_bytes, self.frame_bytes_max)?;
        if let Some(expected) = self.expected {
            if header.kind != expected {
                return Err(FrameError::WrongKind {
                    expected,
                    found: header.kind,
                });
            }
        }
        // Lossless: u32 fits in usize on every target this crate supports.
        let body_bytes = header.body_bytes as usize;
        if self.buffer.len() < HEADER_BYTES + body_bytes {
            return Ok(None);
        }
        self.buffer.advance(HEADER_BYTES);
        let body = self.buffer.split_to(body_bytes).freeze();
        Ok(Some((header.kind, body)))
    }

    /// Reports the end of the stream.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if bytes of an unfinished frame remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let missing = if self.buffer.len() < HEADER_BYTES {
            HEADER_BYTES - self.buffer.len()
        } else {
            let announced = u32::from_le_bytes([
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ]) as usize;
            (HEADER_BYTES + announced).saturating_sub(self.buffer.len())
        };
        Err(FrameError::Truncated {
            missing: missing as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = FrameHeader {
            body_bytes: 0x0102_0304,
            kind: FrameKind::Entries,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [0x04, 0x03, 0x02, 0x01, 2]);
        assert_eq!(FrameHeader::decode(bytes, u32::MAX), Ok(header));
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header() {
        let bytes = FrameHeader {
            body_bytes: 1025,
            kind: FrameKind::Control,
        }
        .encode();
        assert_eq!(
            FrameHeader::decode(bytes, 1024),
            Err(FrameError::TooLong {
                length: 1025,
                maximum: 1024
            })
        );
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert_eq!(
            FrameHeader::decode([0, 0, 0, 0, 9], 16),
            Err(FrameError::UnknownKind(9))
        );
    }

    #[test]
    fn decoder_waits_for_whole_frames_and_reports_truncation() {
        let wire = encode_contiguous(FrameKind::Control, b"hello");
        let mut decoder = FrameDecoder::new(64, Some(FrameKind::Control));
        decoder.feed(&wire[..7]);
        assert_eq!(decoder.decode(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { missing: 3 }));
        decoder.feed(&wire[7..]);
        assert_eq!(
            decoder.decode(),
            Ok(Some((FrameKind::Control, Bytes::from_static(b"hello"))))
        );
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn decoder_rejects_a_kind_foreign_to_its_stream() {
        let mut decoder = FrameDecoder::new(64, Some(FrameKind::Entries));
        decoder.feed(&encode_contiguous(FrameKind::Snapshot, b"x"));
        assert_eq!(
            decoder.decode(),
            Err(FrameError::WrongKind {
                expected: FrameKind::Entries,
                found: FrameKind::Snapshot
            })
        );
    }

    #[test]
    fn frame_counts_body_bytes_over_chunks() {
        let frame = Frame::from(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        assert_eq!(frame.body_bytes(), 5);
        assert_eq!(frame.wire_bytes(), 10);
        assert_eq!(frame.to_contiguous(), Bytes::from_static(b"abcde"));
    }
}
