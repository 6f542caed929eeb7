//! Round trips of every message kind, and the size and sharing properties
//! the data path relies on. Hostile inputs are in `engine/tests/wire_hostile.rs`.

use bytes::{Bytes, BytesMut};

use super::{decode, encode, WireError, WireLimits};
use crate::core::{
    AppendResult, Batch, EntryKind, LogGeneration, LogId, LogIndex, Membership, Message,
    MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term,
};

fn id(term: u64, index: u64) -> LogId {
    LogId {
        term: Term(term),
        index: LogIndex(index),
    }
}

fn join(chunks: &[Bytes]) -> Bytes {
    let mut frame = BytesMut::new();
    for chunk in chunks {
        frame.extend_from_slice(chunk);
    }
    frame.freeze()
}

fn every_body() -> Vec<MessageBody> {
    let first = Batch::encode_normal(
        LogIndex(10),
        Term(3),
        &[Bytes::from_static(b"a"), Bytes::from_static(b"")],
    );
    let second = Batch::encode(
        LogIndex(12),
        Term(3),
        [
            (EntryKind::Noop, &b""[..]),
            (EntryKind::Normal, &b"payload"[..]),
        ],
    )
    .truncated(LogIndex(12));
    vec![
        MessageBody::PreVote { last_log: id(2, 9) },
        MessageBody::PreVoteResponse { granted: true },
        MessageBody::Vote {
            last_log: id(2, 9),
            transfer: true,
        },
        MessageBody::VoteResponse { granted: false },
        MessageBody::Append {
            prev: id(2, 9),
            batches: vec![first, second],
            commit: LogIndex(8),
        },
        MessageBody::Append {
            prev: id(2, 9),
            batches: Vec::new(),
            commit: LogIndex(8),
        },
        MessageBody::AppendResponse(AppendResult::Success {
            match_index: LogIndex(12),
            generation: LogGeneration(0),
        }),
        MessageBody::AppendResponse(AppendResult::Success {
            match_index: LogIndex(12),
            generation: LogGeneration(u64::MAX),
        }),
        MessageBody::AppendResponse(AppendResult::Reject {
            rejected: LogIndex(9),
            hint: id(1, 4),
            generation: LogGeneration(3),
        }),
        MessageBody::AppendResponse(AppendResult::Reject {
            rejected: LogIndex(u64::MAX),
            hint: id(u64::MAX, u64::MAX),
            generation: LogGeneration(u64::MAX - 1),
        }),
        MessageBody::Heartbeat {
            commit: LogIndex(8),
            context: 77,
        },
        MessageBody::HeartbeatResponse { context: 77 },
        MessageBody::ReadIndex { context: 5 },
        MessageBody::ReadIndexResponse {
            context: 5,
            index: Some(LogIndex(8)),
        },
        MessageBody::ReadIndexResponse {
            context: 6,
            index: None,
        },
        MessageBody::TimeoutNow,
        MessageBody::InstallSnapshot(SnapshotChunk {
            meta: SnapshotMeta {
                last: id(3, 100),
                membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            },
            total_bytes: 1000,
            offset: 500,
            data: Bytes::from(vec![7u8; 500]),
        }),
        MessageBody::InstallSnapshotResponse {
            last: id(3, 100),
            received_bytes: 1000,
            installed: true,
            rejected: false,
        },
    ]
}

#[test]
fn every_message_kind_round_trips() {
    for body in every_body() {
        let message = Message {
            from: NodeId(1),
            to: NodeId(u64::MAX),
            term: Term(3),
            body,
        };
        let chunks = encode(&message).expect("encodes");
        let decoded = decode(join(&chunks), &WireLimits::default()).expect("decodes");
        assert_eq!(decoded, message);
    }
}

#[test]
fn batch_bytes_are_shared_not_copied() {
    let batch = Batch::encode_normal(LogIndex(1), Term(1), &[Bytes::from(vec![1u8; 4096])]);
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::Append {
            prev: LogId::default(),
            batches: vec![batch.clone()],
            commit: LogIndex(0),
        },
    };
    let chunks = encode(&message).expect("encodes");
    assert_eq!(chunks.len(), 2, "header, then the batch");
    assert_eq!(chunks[1].as_ptr(), batch.bytes().as_ptr(), "same buffer");

    // On receipt the batch is a slice of the frame, not a copy.
    let frame = join(&chunks);
    let decoded = decode(frame.clone(), &WireLimits::default()).expect("decodes");
    let MessageBody::Append { batches, .. } = decoded.body else {
        panic!("decoded an append as something else");
    };
    let start = frame.len() - batch.bytes().len();
    assert_eq!(batches[0].bytes().as_ptr(), frame[start..].as_ptr());
}

#[test]
fn header_is_small() {
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::Heartbeat {
            commit: LogIndex(5),
            context: 0,
        },
    };
    let chunks = encode(&message).expect("encodes");
    // An archived enum is as large as its largest variant (the snapshot
    // chunk's header, about 45 bytes) plus the 24 bytes of from/to/term and
    // the 4-byte length prefix: about 73 bytes for every small message.
    assert!(
        chunks[0].len() <= 96,
        "heartbeat header is {} bytes",
        chunks[0].len()
    );
}

#[test]
fn trailing_bytes_after_a_bodiless_message_are_refused() {
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::TimeoutNow,
    };
    let mut frame = BytesMut::from(&join(&encode(&message).expect("encodes"))[..]);
    frame.extend_from_slice(b"extra");
    let error = decode(frame.freeze(), &WireLimits::default()).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::PayloadMismatch {
                actual: 5,
                declared: 0
            }
        ),
        "{error}"
    );
}

#[test]
fn limits_are_enforced() {
    let batches: Vec<Batch> = (0..3)
        .map(|i| Batch::encode_normal(LogIndex(1 + i), Term(1), &[Bytes::from_static(b"e")]))
        .collect();
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::Append {
            prev: LogId::default(),
            batches,
            commit: LogIndex(0),
        },
    };
    let frame = join(&encode(&message).expect("encodes"));
    let limits = WireLimits {
        batches_max: 2,
        ..WireLimits::default()
    };
    let error = decode(frame.clone(), &limits).unwrap_err();
    assert!(
        matches!(error, WireError::TooManyBatches { count: 3, limit: 2 }),
        "{error}"
    );

    let limits = WireLimits {
        header_bytes_max: 8,
        ..WireLimits::default()
    };
    let error = decode(frame, &limits).unwrap_err();
    assert!(
        matches!(error, WireError::HeaderTooLarge { limit: 8, .. }),
        "{error}"
    );
}
