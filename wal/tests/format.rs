//! Property tests of the on-disk format: every record and hard state round
//! trips, and any single flipped bit in a record is rejected.

use barge_wal::format::{
    decode_hard_state, decode_record, encode_hard_state, encode_record, parse_segment_name,
    segment_name, Kind, SegmentHeader,
};
use barge_wal::{Backend, Bytes, FaultDisk, HardState, Wal, WalConfig};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Batch),
        Just(Kind::Truncate),
        Just(Kind::HardState),
        Just(Kind::Commit)
    ]
}

proptest! {
    #[test]
    fn record_round_trips(
        kind in kind(),
        incarnation in 1u64..,
        first in 0u64..u64::MAX / 2,
        span in 0u64..1000,
        term in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        flip in any::<prop::sample::Index>(),
    ) {
        let payload = match kind {
            Kind::Truncate => Vec::new(),
            Kind::HardState => encode_hard_state(&HardState { term, vote: Some(first), commit: span }).to_vec(),
            Kind::Commit => { let mut padded = payload.clone(); padded.resize(payload.len().max(16), 0); padded }
            Kind::Batch => payload,
        };
        let mut bytes = Vec::new();
        encode_record(&mut bytes, kind, incarnation, (first, first + span), term, &payload);
        let (header, decoded) = decode_record(&bytes, incarnation).expect("decodes");
        prop_assert_eq!(header.kind, kind);
        prop_assert_eq!((header.first, header.last, header.term), (first, first + span, term));
        prop_assert_eq!(decoded, &payload[..]);
        prop_assert!(decode_record(&bytes, incarnation ^ 1).is_none(), "other incarnation accepted");
        let bit = flip.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_record(&bytes, incarnation).is_none(), "flipped bit {} accepted", bit);
    }

    #[test]
    fn hard_state_round_trips(term in any::<u64>(), vote in any::<Option<u64>>(), commit in any::<u64>()) {
        let state = HardState { term, vote, commit };
        prop_assert_eq!(decode_hard_state(&encode_hard_state(&state)), Some(state));
    }

    #[test]
    fn segment_header_and_name_round_trip(incarnation in any::<u64>(), sequence in any::<u64>(), first in any::<u64>()) {
        let header = SegmentHeader { incarnation, sequence, first };
        let mut block = vec![0u8; 4096];
        header.encode_block(&mut block);
        prop_assert_eq!(SegmentHeader::decode_block(&block, |_| true), Some(header));
        prop_assert_eq!(parse_segment_name(&segment_name(sequence, first)), Some((sequence, first)));
    }

    /// Arbitrary batches through a whole log (fault disk), read back from
    /// memory, then after reopen from the segments.
    #[test]
    fn batches_round_trip_through_the_log(
        batches in proptest::collection::vec((1u64..5, proptest::collection::vec(any::<u8>(), 0..5000)), 1..40),
    ) {
        let disk = FaultDisk::new();
        let config = || WalConfig {
            segment_bytes: 64 << 10,
            write_bytes_max: 16 << 10,
            tail_cache_bytes_max: 0,
            backend: Backend::Fault(disk.clone()),
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open("wal", config()).expect("open");
        let mut next = 1;
        let mut stored = Vec::new();
        for (count, payload) in &batches {
            wal.append(next, next + count - 1, 1, Bytes::from(payload.clone())).expect("append");
            stored.push((next, next + count - 1, payload.clone()));
            next += count;
        }
        wal.shutdown().expect("shutdown");
        let (wal, recovery) = Wal::open("wal", config()).expect("reopen");
        prop_assert_eq!(recovery.last.map(|last| last.index), Some(next - 1));
        for (first, last, payload) in stored {
            let read = wal.read(first..=last, 1).expect("read");
            prop_assert_eq!((read[0].first, read[0].last), (first, last));
            prop_assert_eq!(&read[0].payload[..], &payload[..]);
        }
    }
}
