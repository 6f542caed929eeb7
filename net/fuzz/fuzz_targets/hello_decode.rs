//! Arbitrary bytes as a handshake body: never a panic, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use barge_net::Hello;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(&hello.encode()[..], data);
    }
});
