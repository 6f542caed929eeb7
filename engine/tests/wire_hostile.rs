//! Hostile input to the message decoder (`barge::wire::decode`): whatever a
//! peer sends, decoding returns a `Result` — never a panic, never an
//! allocation larger than the frame it was given. Framing (length prefixes
//! on the stream) is `barge-net`'s and is tested there.

use barge::core::{Batch, LogId, LogIndex, Message, MessageBody, NodeId, Term};
use barge::wire::{decode, encode, WireError, WireLimits};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn join(chunks: &[Bytes]) -> Bytes {
    let mut frame = BytesMut::new();
    for chunk in chunks {
        frame.extend_from_slice(chunk);
    }
    frame.freeze()
}

fn append_frame(payloads: &[Vec<u8>]) -> Bytes {
    let payloads: Vec<Bytes> = payloads.iter().cloned().map(Bytes::from).collect();
    let batch = Batch::encode_normal(LogIndex(1), Term(1), &payloads);
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::Append {
            prev: LogId::default(),
            batches: vec![batch],
            commit: LogIndex(0),
        },
    };
    join(&encode(&message).expect("encodes"))
}

#[test]
fn empty_and_short_frames_are_truncated() {
    for len in 0..4 {
        let error = decode(Bytes::from(vec![0u8; len]), &WireLimits::default()).unwrap_err();
        assert!(
            matches!(error, WireError::Truncated { needed: 4, .. }),
            "{error}"
        );
    }
}

#[test]
fn header_length_beyond_the_frame_is_truncated_not_allocated() {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&60_000u32.to_le_bytes());
    frame.extend_from_slice(&[0u8; 16]);
    let error = decode(frame.freeze(), &WireLimits::default()).unwrap_err();
    assert!(
        matches!(error, WireError::Truncated { needed: 60_004, .. }),
        "{error}"
    );
}

#[test]
fn oversized_header_length_is_refused_before_use() {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    let error = decode(frame.freeze(), &WireLimits::default()).unwrap_err();
    assert!(matches!(error, WireError::HeaderTooLarge { .. }), "{error}");
}

#[test]
fn garbage_header_is_refused_by_validation() {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&73u32.to_le_bytes());
    frame.extend_from_slice(&[0xffu8; 73]);
    let error = decode(frame.freeze(), &WireLimits::default()).unwrap_err();
    assert!(matches!(error, WireError::Header(_)), "{error}");
}

#[test]
fn a_payload_shorter_than_declared_is_refused() {
    let frame = append_frame(&[vec![1; 100], vec![2; 100]]);
    let cut = frame.slice(..frame.len() - 1);
    let error = decode(cut, &WireLimits::default()).unwrap_err();
    assert!(
        matches!(error, WireError::PayloadMismatch { .. }),
        "{error}"
    );
}

#[test]
fn a_corrupted_batch_table_is_refused() {
    let frame = append_frame(&[vec![1; 10], vec![2; 10]]);
    let header_len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    let mut bytes = BytesMut::from(&frame[..]);
    // The batch's own entry count, first field of its encoding: claim 1000 entries.
    let batch_start = 4 + header_len;
    bytes[batch_start..batch_start + 4].copy_from_slice(&1000u32.to_le_bytes());
    let error = decode(bytes.freeze(), &WireLimits::default()).unwrap_err();
    assert!(
        matches!(error, WireError::Batch { position: 0, .. }),
        "{error}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(Bytes::from(bytes), &WireLimits::default());
    }

    /// Flipping any byte of a valid frame either still decodes (the byte was
    /// a payload byte, which only the WAL and CRCs protect) or is an error;
    /// it never panics.
    #[test]
    fn mutated_frames_never_panic(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        position in any::<proptest::sample::Index>(),
        value in any::<u8>(),
    ) {
        let frame = append_frame(&payloads);
        let mut bytes = BytesMut::from(&frame[..]);
        let at = position.index(bytes.len());
        bytes[at] = value;
        let _ = decode(bytes.freeze(), &WireLimits::default());
    }

    /// Every prefix of a valid frame is refused (a frame is all or nothing).
    #[test]
    fn truncated_frames_are_refused(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..8),
        cut in any::<proptest::sample::Index>(),
    ) {
        let frame = append_frame(&payloads);
        let len = cut.index(frame.len());
        prop_assert!(decode(frame.slice(..len), &WireLimits::default()).is_err());
    }
}
