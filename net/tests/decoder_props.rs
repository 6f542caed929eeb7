//! Property-based smoke of the frame decoder (the fuzz targets in
//! `net/fuzz` explore the same function without bounds).

use barge_net::frame::{encode_contiguous, FrameDecoder, FrameKind, HEADER_BYTES};
use proptest::prelude::*;

const FRAME_BYTES_MAX: u32 = 4096;

fn kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Control),
        Just(FrameKind::Entries),
        Just(FrameKind::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any split of valid frames into reads decodes to the same frames.
    #[test]
    fn valid_frames_round_trip_under_any_split(
        bodies in proptest::collection::vec((kind(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
        split in 1usize..64,
    ) {
        let mut wire = Vec::new();
        for (kind, body) in &bodies {
            wire.extend_from_slice(&encode_contiguous(*kind, body));
        }
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX, None);
        let mut decoded = Vec::new();
        for piece in wire.chunks(split) {
            decoder.feed(piece);
            while let Some((kind, body)) = decoder.decode().expect("valid input") {
                decoded.push((kind, body.to_vec()));
            }
            // Never more than one partial frame plus one read is held.
            prop_assert!(decoder.buffered_bytes() < HEADER_BYTES + 300 + split);
        }
        prop_assert_eq!(decoder.finish(), Ok(()));
        prop_assert_eq!(decoded, bodies);
    }

    /// Arbitrary bytes never panic, never yield a frame above the bound,
    /// and an error is sticky-free: the caller closes the stream on it.
    #[test]
    fn garbage_is_an_error_or_bounded_frames(
        garbage in proptest::collection::vec(any::<u8>(), 0..2048),
        split in 1usize..128,
    ) {
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX, Some(FrameKind::Entries));
        'feed: for piece in garbage.chunks(split) {
            decoder.feed(piece);
            loop {
                match decoder.decode() {
                    Ok(Some((kind, body))) => {
                        prop_assert_eq!(kind, FrameKind::Entries);
                        prop_assert!(body.len() <= FRAME_BYTES_MAX as usize);
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Any announced length above the bound is refused from the header
    /// alone, before the body arrives.
    #[test]
    fn oversized_lengths_are_refused_from_the_header(length in (FRAME_BYTES_MAX + 1)..=u32::MAX) {
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX, None);
        let mut header = length.to_le_bytes().to_vec();
        header.push(FrameKind::Entries as u8);
        decoder.feed(&header);
        let refused = matches!(decoder.decode(), Err(barge_net::FrameError::TooLong { .. }));
        prop_assert!(refused);
    }

    /// A truncated valid frame is reported as truncated at the end.
    #[test]
    fn truncation_is_reported(body in proptest::collection::vec(any::<u8>(), 1..500), cut in 1usize..500) {
        let wire = encode_contiguous(FrameKind::Control, &body);
        let cut = cut.min(wire.len() - 1);
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX, None);
        decoder.feed(&wire[..cut]);
        prop_assert_eq!(decoder.decode(), Ok(None));
        let truncated = matches!(decoder.finish(), Err(barge_net::FrameError::Truncated { .. }));
        prop_assert!(truncated);
    }
}
