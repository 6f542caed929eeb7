//! The wire encoding of [`Message`]s: an rkyv-archived header, validated
//! before use, followed by the raw bulk bytes.
//!
//! `barge-net` moves length-prefixed frames and never looks inside them; this
//! module defines what is inside. Entry batches travel as the very
//! [`Batch`] bytes the leader encoded once (the bytes its WAL wrote), so
//! [`encode`] copies no payload: it returns the header as one chunk and
//! each batch's [`Bytes`] as further chunks, for a vectored write.
//!
//! # Frame body layout (integers little-endian)
//!
//! | offset       | size       | field                                             |
//! |--------------|------------|---------------------------------------------------|
//! | 0            | 4          | `h`, the header archive's length                  |
//! | 4            | `h`        | rkyv archive of the header (`unaligned` format)   |
//! | 4 + `h`      | rest       | payload area: the batches' bytes back to back (an append) or the chunk's bytes (a snapshot chunk); empty for every other message |
//!
//! The header names, for each batch, its first index, term, valid length and
//! byte length; the byte lengths must add up to exactly the payload area.
//!
//! # Validation
//!
//! [`decode`] trusts nothing: the header length is bounded by
//! [`WireLimits::header_bytes_max`] before it is used, the archive is checked
//! by bytecheck before any field is read, every batch goes through
//! [`Batch::decode`] (which bounds entries and bytes), memberships through
//! [`Membership::decode`] and [`Membership::validate`], and lengths must
//! account for every byte of the frame. Semantic checks that need Raft state
//! (is this append contiguous with my log?) are the core's, in
//! [`crate::core::Raft::handle_message`].
//!
//! ```
//! use barge::core::{Batch, LogId, LogIndex, Message, MessageBody, NodeId, Term};
//! use barge::wire::{self, WireLimits};
//! use bytes::{Bytes, BytesMut};
//!
//! let batch = Batch::encode_normal(LogIndex(1), Term(2), &[Bytes::from_static(b"x=1")]);
//! let message = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(2),
//!     body: MessageBody::Append { prev: LogId::default(), batches: vec![batch], commit: LogIndex(0) },
//! };
//! let chunks = wire::encode(&message)?;
//! // A transport writes the chunks back to back; the receiver sees one frame.
//! let mut frame = BytesMut::new();
//! for chunk in &chunks {
//!     frame.extend_from_slice(chunk);
//! }
//! let decoded = wire::decode(frame.freeze(), &WireLimits::default())?;
//! assert_eq!(decoded, message);
//! # Ok::<(), wire::WireError>(())
//! ```

mod header;

use bytes::Bytes;
use rkyv::rancor;

use crate::core::{
    AppendResult, Batch, BatchError, BatchLimits, LogGeneration, LogId, LogIndex, Membership,
    MembershipError, Message, MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term,
};
use header::{BatchHeader, BodyHeader, Header};

/// Version of this encoding. The transport's handshake carries the protocol
/// version; bump this when the header layout or rkyv's format features change.
///
/// - 1: the first layout.
/// - 2: append answers carry the follower's log generation. The header
///   archive keeps its size (an archived enum is as large as its largest
///   variant, the snapshot chunk's), so this decoder cannot tell a
///   version-1 append answer from a version-2 one: nodes of both versions
///   must not share a cluster: a node announces this version (with the
///   transport's) in the transport handshake, which refuses a peer that
///   announces another.
pub const WIRE_VERSION: u16 = 2;

const LENGTH_PREFIX_BYTES: usize = 4;

/// Bounds applied to every frame [`decode`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest header archive accepted. Headers are small (tens of bytes plus
    /// 24 bytes per batch); the default leaves room for `batches_max` batches.
    pub header_bytes_max: u32,
    /// Most batches one append may carry.
    pub batches_max: u32,
    /// Bounds on each batch.
    pub batch: BatchLimits,
    /// Largest snapshot chunk accepted.
    pub snapshot_chunk_bytes_max: u32,
}

impl Default for WireLimits {
    fn default() -> WireLimits {
        WireLimits {
            header_bytes_max: 64 * 1024,
            batches_max: 1024,
            batch: BatchLimits {
                entries_max: 1 << 20,
                bytes_max: 64 << 20,
            },
            snapshot_chunk_bytes_max: 16 << 20,
        }
    }
}

/// Why a frame could not be decoded (or, rarely, encoded). Every variant
/// comes from bytes a peer sent: the receiver drops the frame and the
/// connection, and Raft retries.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the structure they claim.
    #[error("frame truncated: {len} bytes, {needed} needed")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the frame claims.
        needed: usize,
    },
    /// The header is larger than [`WireLimits::header_bytes_max`].
    #[error("header of {len} bytes exceeds the limit of {limit}")]
    HeaderTooLarge {
        /// Claimed header length.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// The header archive failed validation.
    #[error("invalid header archive: {0}")]
    Header(String),
    /// Serializing a header failed (never expected; reported, not panicked).
    #[error("cannot encode header: {0}")]
    Encode(String),
    /// An append carried more batches than allowed.
    #[error("{count} batches exceed the limit of {limit}")]
    TooManyBatches {
        /// Batches claimed.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// The lengths in the header do not account for the payload area.
    #[error("payload area is {actual} bytes but the header accounts for {declared}")]
    PayloadMismatch {
        /// Bytes after the header.
        actual: usize,
        /// Bytes the header declares.
        declared: u64,
    },
    /// A snapshot chunk larger than [`WireLimits::snapshot_chunk_bytes_max`].
    #[error("snapshot chunk of {len} bytes exceeds the limit of {limit}")]
    ChunkTooLarge {
        /// Chunk length.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// A batch inside an append is malformed.
    #[error("batch {position} (first index {first}): {source}")]
    Batch {
        /// Position of the batch in the message.
        position: usize,
        /// The batch's claimed first index.
        first: u64,
        /// What is wrong with it.
        source: BatchError,
    },
    /// A snapshot's membership is malformed or invalid.
    #[error("snapshot membership: {0}")]
    Membership(#[from] MembershipError),
}

/// Encodes `message` as the chunks of one frame body: the length-prefixed
/// header first, then the bulk bytes, shared (not copied) with `message`.
///
/// # Errors
/// [`WireError::Encode`] if rkyv cannot serialize the header; this does not
/// happen with the types used here, but it is reported rather than asserted.
pub fn encode(message: &Message) -> Result<Vec<Bytes>, WireError> {
    let (body, bulk) = body_header(&message.body);
    let header = Header {
        from: message.from.0,
        to: message.to.0,
        term: message.term.0,
        body,
    };
    // The length prefix is written in place: rkyv's relative pointers do not
    // care where the archive starts, and the unaligned format needs no padding.
    let buffer =
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(&header, vec![0u8; LENGTH_PREFIX_BYTES])
            .map_err(|error| WireError::Encode(error.to_string()))?;
    let header_len = u32::try_from(buffer.len() - LENGTH_PREFIX_BYTES)
        .map_err(|_| WireError::Encode("header longer than 4 GiB".to_owned()))?;
    let mut buffer = buffer;
    buffer[..LENGTH_PREFIX_BYTES].copy_from_slice(&header_len.to_le_bytes());
    let mut chunks = Vec::with_capacity(1 + bulk.len());
    chunks.push(Bytes::from(buffer));
    chunks.extend(bulk);
    Ok(chunks)
}

/// Total bytes of the frame body [`encode`] would produce for these chunks.
#[must_use]
pub fn encoded_len(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

/// Decodes one frame body. Batch and chunk payloads are slices of `frame`.
///
/// # Errors
/// A [`WireError`] naming the first problem found; see the module docs for
/// what is checked.
pub fn decode(frame: Bytes, limits: &WireLimits) -> Result<Message, WireError> {
    let prefix: [u8; LENGTH_PREFIX_BYTES] = frame
        .get(..LENGTH_PREFIX_BYTES)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(WireError::Truncated {
            len: frame.len(),
            needed: LENGTH_PREFIX_BYTES,
        })?;
    let header_len = u32::from_le_bytes(prefix);
    if header_len > limits.header_bytes_max {
        return Err(WireError::HeaderTooLarge {
            len: header_len,
            limit: limits.header_bytes_max,
        });
    }
    let payload_start = LENGTH_PREFIX_BYTES + header_len as usize;
    if frame.len() < payload_start {
        return Err(WireError::Truncated {
            len: frame.len(),
            needed: payload_start,
        });
    }
    let header =
        rkyv::from_bytes::<Header, rancor::Error>(&frame[LENGTH_PREFIX_BYTES..payload_start])
            .map_err(|error| WireError::Header(error.to_string()))?;
    let payload = frame.slice(payload_start..);
    let body = message_body(header.body, payload, limits)?;
    Ok(Message {
        from: NodeId(header.from),
        to: NodeId(header.to),
        term: Term(header.term),
        body,
    })
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// The header of `body` and the bulk chunks that follow it.
fn body_header(body: &MessageBody) -> (BodyHeader, Vec<Bytes>) {
    let header = match body {
        MessageBody::PreVote { last_log } => BodyHeader::PreVote {
            last_term: last_log.term.0,
            last_index: last_log.index.0,
        },
        MessageBody::PreVoteResponse { granted } => {
            BodyHeader::PreVoteResponse { granted: *granted }
        }
        MessageBody::Vote { last_log, transfer } => BodyHeader::Vote {
            last_term: last_log.term.0,
            last_index: last_log.index.0,
            transfer: *transfer,
        },
        MessageBody::VoteResponse { granted } => BodyHeader::VoteResponse { granted: *granted },
        MessageBody::Append {
            prev,
            batches,
            commit,
        } => {
            let headers = batches
                .iter()
                .map(|batch| BatchHeader {
                    first: batch.first().0,
                    term: batch.term().0,
                    len: batch.len(),
                    // Batch::encode bounds a batch's bytes to u32.
                    bytes_len: batch.bytes().len() as u32,
                })
                .collect();
            let bulk = batches.iter().map(|batch| batch.bytes().clone()).collect();
            return (
                BodyHeader::Append {
                    prev_term: prev.term.0,
                    prev_index: prev.index.0,
                    commit: commit.0,
                    batches: headers,
                },
                bulk,
            );
        }
        MessageBody::AppendResponse(AppendResult::Success {
            match_index,
            generation,
        }) => BodyHeader::AppendSuccess {
            match_index: match_index.0,
            generation: generation.0,
        },
        MessageBody::AppendResponse(AppendResult::Reject {
            rejected,
            hint,
            generation,
        }) => BodyHeader::AppendReject {
            rejected: rejected.0,
            hint_term: hint.term.0,
            hint_index: hint.index.0,
            generation: generation.0,
        },
        MessageBody::Heartbeat { commit, context } => BodyHeader::Heartbeat {
            commit: commit.0,
            context: *context,
        },
        MessageBody::HeartbeatResponse { context } => {
            BodyHeader::HeartbeatResponse { context: *context }
        }
        MessageBody::ReadIndex { context } => BodyHeader::ReadIndex { context: *context },
        MessageBody::ReadIndexResponse { context, index } => BodyHeader::ReadIndexResponse {
            context: *context,
            index: index.map(|index| index.0),
        },
        MessageBody::TimeoutNow => BodyHeader::TimeoutNow,
        MessageBody::InstallSnapshot(chunk) => {
            return (
                BodyHeader::InstallSnapshot {
                    last_term: chunk.meta.last.term.0,
                    last_index: chunk.meta.last.index.0,
                    membership: chunk.meta.membership.encode().to_vec(),
                    total_bytes: chunk.total_bytes,
                    offset: chunk.offset,
                    // Chunks are cut by the sender at a configured size far below 4 GiB.
                    data_len: chunk.data.len() as u32,
                },
                vec![chunk.data.clone()],
            );
        }
        MessageBody::InstallSnapshotResponse {
            last,
            received_bytes,
            installed,
            rejected,
        } => BodyHeader::InstallSnapshotResponse {
            last_term: last.term.0,
            last_index: last.index.0,
            received_bytes: *received_bytes,
            installed: *installed,
            rejected: *rejected,
        },
    };
    (header, Vec::new())
}

fn expect_empty(payload: &Bytes) -> Result<(), WireError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(WireError::PayloadMismatch {
            actual: payload.len(),
            declared: 0,
        })
    }
}

fn message_body(
    header: BodyHeader,
    payload: Bytes,
    limits: &WireLimits,
) -> Result<MessageBody, WireError> {
    let body = match header {
        BodyHeader::Append {
            prev_term,
            prev_index,
            commit,
            batches,
        } => {
            return Ok(MessageBody::Append {
                prev: log_id(prev_term, prev_index),
                batches: decode_batches(&batches, payload, limits)?,
                commit: LogIndex(commit),
            })
        }
        BodyHeader::InstallSnapshot {
            last_term,
            last_index,
            membership,
            total_bytes,
            offset,
            data_len,
        } => {
            if data_len > limits.snapshot_chunk_bytes_max {
                return Err(WireError::ChunkTooLarge {
                    len: data_len,
                    limit: limits.snapshot_chunk_bytes_max,
                });
            }
            if payload.len() != data_len as usize {
                return Err(WireError::PayloadMismatch {
                    actual: payload.len(),
                    declared: u64::from(data_len),
                });
            }
            let membership = Membership::decode(&membership)?;
            membership.validate()?;
            return Ok(MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    last: log_id(last_term, last_index),
                    membership,
                },
                total_bytes,
                offset,
                data: payload,
            }));
        }
        BodyHeader::PreVote {
            last_term,
            last_index,
        } => MessageBody::PreVote {
            last_log: log_id(last_term, last_index),
        },
        BodyHeader::PreVoteResponse { granted } => MessageBody::PreVoteResponse { granted },
        BodyHeader::Vote {
            last_term,
            last_index,
            transfer,
        } => MessageBody::Vote {
            last_log: log_id(last_term, last_index),
            transfer,
        },
        BodyHeader::VoteResponse { granted } => MessageBody::VoteResponse { granted },
        // Every u64 is a generation a follower could have (it only counts
        // its losses); a peer that inflates its own only makes the leader
        // ignore its own later answers.
        BodyHeader::AppendSuccess {
            match_index,
            generation,
        } => MessageBody::AppendResponse(AppendResult::Success {
            match_index: LogIndex(match_index),
            generation: LogGeneration(generation),
        }),
        BodyHeader::AppendReject {
            rejected,
            hint_term,
            hint_index,
            generation,
        } => MessageBody::AppendResponse(AppendResult::Reject {
            rejected: LogIndex(rejected),
            hint: log_id(hint_term, hint_index),
            generation: LogGeneration(generation),
        }),
        BodyHeader::Heartbeat { commit, context } => MessageBody::Heartbeat {
            commit: LogIndex(commit),
            context,
        },
        BodyHeader::HeartbeatResponse { context } => MessageBody::HeartbeatResponse { context },
        BodyHeader::ReadIndex { context } => MessageBody::ReadIndex { context },
        BodyHeader::ReadIndexResponse { context, index } => MessageBody::ReadIndexResponse {
            context,
            index: index.map(LogIndex),
        },
        BodyHeader::TimeoutNow => MessageBody::TimeoutNow,
        BodyHeader::InstallSnapshotResponse {
            last_term,
            last_index,
            received_bytes,
            installed,
            rejected,
        } => MessageBody::InstallSnapshotResponse {
            last: log_id(last_term, last_index),
            received_bytes,
            installed,
            rejected,
        },
    };
    expect_empty(&payload)?;
    Ok(body)
}

fn decode_batches(
    headers: &[BatchHeader],
    payload: Bytes,
    limits: &WireLimits,
) -> Result<Vec<Batch>, WireError> {
    if headers.len() > limits.batches_max as usize {
        return Err(WireError::TooManyBatches {
            count: headers.len(),
            limit: limits.batches_max,
        });
    }
    let declared: u64 = headers.iter().map(|batch| u64::from(batch.bytes_len)).sum();
    if declared != payload.len() as u64 {
        return Err(WireError::PayloadMismatch {
            actual: payload.len(),
            declared,
        });
    }
    let mut batches = Vec::with_capacity(headers.len());
    let mut offset = 0usize;
    for (position, batch) in headers.iter().enumerate() {
        let end = offset + batch.bytes_len as usize;
        let bytes = payload.slice(offset..end);
        offset = end;
        let decoded = Batch::decode(
            LogIndex(batch.first),
            Term(batch.term),
            batch.len,
            bytes,
            limits.batch,
        )
        .map_err(|source| WireError::Batch {
            position,
            first: batch.first,
            source,
        })?;
        batches.push(decoded);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests;
