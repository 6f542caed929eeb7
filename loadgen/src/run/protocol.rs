//! The binary client protocol between `run --processes` and its node
//! processes (`barge-loadgen node`): compact, pipelined, little-endian.
//!
//! | frame    | bytes | field                                             |
//! |----------|-------|---------------------------------------------------|
//! | request  | 4     | body length `n` (u32; counts what follows)        |
//! |          | 8     | request id (u64, chosen by the client)            |
//! |          | 1     | kind: 0 propose, 1 stats                          |
//! |          | n - 9 | propose: the entry's payload; stats: nothing      |
//! | response | 4     | body length `n` (u32; counts what follows)        |
//! |          | 8     | the request's id                                  |
//! |          | 1     | status (below)                                    |
//! |          | n - 9 | details (below)                                   |
//!
//! Statuses: 0 ok (propose: committed and applied, details = the state
//! machine's response; stats: [`STATS_FIELDS`] u64 values); 1 not leader
//! (u64 leader id, 0 if unknown, then the leader's client address as UTF-8,
//! empty if unknown); 2 overloaded (retry later); 3 failure (a UTF-8
//! message; the node cannot serve this, retrying will not help); 4 dropped
//! by a leader change (never committed, or fate unknown; as 1).
//!
//! Many requests may be in flight on one connection; answers come in
//! completion order, matched by id. A frame longer than the receiver's bound
//! is answered with status 3 (id 0) and the connection is closed.

use anyhow::{bail, Result};
use barge::core::{LogIndex, NodeId, Role, Term};
use barge::node::Metrics;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length prefix plus id plus kind or status.
pub const HEADER_BYTES: usize = 4 + 8 + 1;

pub const KIND_PROPOSE: u8 = 0;
pub const KIND_STATS: u8 = 1;

pub const STATUS_OK: u8 = 0;
pub const STATUS_NOT_LEADER: u8 = 1;
pub const STATUS_OVERLOADED: u8 = 2;
pub const STATUS_FAILURE: u8 = 3;
pub const STATUS_DROPPED: u8 = 4;

/// Values in a stats answer, each a u64 (the mean fsync latency as f64 bits).
pub const STATS_FIELDS: usize = 17;

/// One decoded frame: a request (`code` is its kind) or a response (`code`
/// is its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub code: u8,
    pub body: Bytes,
}

/// Appends one frame to `out`.
pub fn encode(out: &mut BytesMut, id: u64, code: u8, body: &[u8]) {
    let length = u32::try_from(8 + 1 + body.len())
        // Bodies are bounded far below 4 GiB by the payload and frame limits.
        .unwrap_or(u32::MAX);
    out.reserve(HEADER_BYTES + body.len());
    out.put_u32_le(length);
    out.put_u64_le(id);
    out.put_u8(code);
    out.put_slice(body);
}

/// Takes one complete frame off the front of `buffer`, if it holds one.
/// The body is split off without copying.
///
/// # Errors
/// A length below the fixed header or above `frame_bytes_max` (the whole
/// frame, prefix included): the stream cannot be trusted after it.
pub fn take_frame(buffer: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Frame>> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if length < 9 {
        bail!("frame body of {length} bytes is shorter than its 9-byte header");
    }
    if 4 + length > frame_bytes_max {
        bail!(
            "frame of {} bytes exceeds the bound of {frame_bytes_max} bytes",
            4 + length
        );
    }
    if buffer.len() < 4 + length {
        // Make room for the rest now, so the next read completes the frame.
        buffer.reserve(4 + length - buffer.len());
        return Ok(None);
    }
    let mut frame = buffer.split_to(4 + length).freeze();
    frame.advance(4);
    let id = frame.get_u64_le();
    let code = frame.get_u8();
    Ok(Some(Frame {
        id,
        code,
        body: frame,
    }))
}

/// The body of a not-leader or dropped answer.
pub fn redirect_body(leader: Option<NodeId>, address: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + address.map_or(0, str::len));
    body.extend_from_slice(&leader.map_or(0, |id| id.0).to_le_bytes());
    body.extend_from_slice(address.unwrap_or("").as_bytes());
    body
}

/// The leader id in a not-leader or dropped answer (the address is for
/// clients that do not know the cluster; the load generator knows it).
///
/// # Errors
/// A body shorter than the id.
pub fn redirect_leader(mut body: &[u8]) -> Result<Option<NodeId>> {
    if body.len() < 8 {
        bail!("redirect answer of {} bytes lacks a leader id", body.len());
    }
    let id = body.get_u64_le();
    Ok((id != 0).then_some(NodeId(id)))
}

/// The stats answer's body: the node metrics the load generator reports.
pub fn encode_stats(metrics: &Metrics) -> Vec<u8> {
    let fields: [u64; STATS_FIELDS] = [
        metrics.id.0,
        metrics.leader.map_or(0, |id| id.0),
        metrics.term.0,
        metrics.leader_changes,
        metrics.elections_started,
        metrics.pre_votes_started,
        metrics.commit_index.0,
        metrics.applied_index.0,
        metrics.last_log_index.0,
        metrics.fsyncs,
        metrics.fsync_micros_mean.to_bits(),
        metrics.log_batches,
        metrics.snapshots_sent,
        metrics.snapshots_installed,
        metrics.transport.bytes_sent,
        metrics.transport.bytes_received,
        metrics.proposals_committed,
    ];
    fields
        .iter()
        .flat_map(|field| field.to_le_bytes())
        .collect()
}

/// Rebuilds the reported part of a node's [`Metrics`] from a stats answer;
/// fields the protocol does not carry are left as in [`Metrics::empty`].
///
/// # Errors
/// A body of the wrong length.
pub fn decode_stats(mut body: &[u8]) -> Result<Metrics> {
    if body.len() != STATS_FIELDS * 8 {
        bail!(
            "stats answer of {} bytes, expected {}",
            body.len(),
            STATS_FIELDS * 8
        );
    }
    let mut next = || body.get_u64_le();
    let id = NodeId(next());
    let leader = Some(next()).filter(|id| *id != 0).map(NodeId);
    let mut metrics = Metrics::empty(id);
    metrics.role = if leader == Some(id) {
        Role::Leader
    } else {
        Role::Follower
    };
    metrics.leader = leader;
    metrics.term = Term(next());
    metrics.leader_changes = next();
    metrics.elections_started = next();
    metrics.pre_votes_started = next();
    metrics.commit_index = LogIndex(next());
    metrics.applied_index = LogIndex(next());
    metrics.last_log_index = LogIndex(next());
    metrics.fsyncs = next();
    metrics.fsync_micros_mean = f64::from_bits(next());
    metrics.log_batches = next();
    metrics.snapshots_sent = next();
    metrics.snapshots_installed = next();
    metrics.transport.bytes_sent = next();
    metrics.transport.bytes_received = next();
    metrics.proposals_committed = next();
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let mut wire = BytesMut::new();
        encode(&mut wire, 7, KIND_PROPOSE, b"hello");
        encode(&mut wire, 8, KIND_STATS, b"");
        let bytes = wire.freeze();
        // Fed one byte at a time, the frames appear exactly when complete.
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for byte in bytes.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = take_frame(&mut buffer, 1024).expect("valid frames") {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame {
                    id: 7,
                    code: KIND_PROPOSE,
                    body: Bytes::from_static(b"hello")
                },
                Frame {
                    id: 8,
                    code: KIND_STATS,
                    body: Bytes::new()
                },
            ]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn bad_lengths_are_errors_not_allocations() {
        let mut huge = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let error = take_frame(&mut huge, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("exceeds the bound"), "{error}");
        let mut short = BytesMut::from(&3u32.to_le_bytes()[..]);
        let error = take_frame(&mut short, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("shorter than"), "{error}");
    }

    #[test]
    fn stats_and_redirects_round_trip() {
        let mut metrics = Metrics::empty(NodeId(2));
        metrics.leader = Some(NodeId(2));
        metrics.leader_changes = 3;
        metrics.fsyncs = 1000;
        metrics.fsync_micros_mean = 812.5;
        metrics.last_log_index = LogIndex(99);
        metrics.transport.bytes_sent = 12345;
        let decoded = decode_stats(&encode_stats(&metrics)).expect("decodes");
        assert_eq!(decoded.role, Role::Leader);
        assert_eq!(decoded.leader, Some(NodeId(2)));
        assert_eq!(decoded.leader_changes, 3);
        assert_eq!(decoded.fsyncs, 1000);
        assert_eq!(decoded.fsync_micros_mean, 812.5);
        assert_eq!(decoded.last_log_index, LogIndex(99));
        assert_eq!(decoded.transport.bytes_sent, 12345);
        assert!(decode_stats(&[0; 8]).is_err());

        let body = redirect_body(Some(NodeId(3)), Some("127.0.0.1:9003"));
        assert_eq!(redirect_leader(&body).expect("id"), Some(NodeId(3)));
        assert_eq!(&body[8..], b"127.0.0.1:9003");
        assert_eq!(
            redirect_leader(&redirect_body(None, None)).expect("id"),
            None
        );
        assert!(redirect_leader(b"abc").is_err());
    }
}
