//! Feeds arbitrary bytes, split at fuzzer-chosen points, to the frame
//! decoder. Properties: no panic; every frame returned respects the bound and
//! the expected kind; the decoder never holds more than one partial frame
//! plus one read; an error ends the stream (as the transport closes it).
#![no_main]

use barge_net::frame::{FrameDecoder, FrameKind, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

const FRAME_BYTES_MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split_seed).max(1);
    let expected = match split_seed % 4 {
        0 => None,
        1 => Some(FrameKind::Control),
        2 => Some(FrameKind::Entries),
        _ => Some(FrameKind::Snapshot),
    };
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX, expected);
    for read in rest.chunks(split) {
        decoder.feed(read);
        loop {
            match decoder.decode() {
                Ok(Some((kind, body))) => {
                    assert!(body.len() <= FRAME_BYTES_MAX as usize);
                    if let Some(expected) = expected {
                        assert_eq!(kind, expected);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.buffered_bytes() <= HEADER_BYTES + FRAME_BYTES_MAX as usize + split);
    }
    let _ = decoder.finish();
});
