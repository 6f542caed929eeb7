//! Criterion benchmarks for `barge-net` framing: building a frame for the
//! writer (header chunk + the caller's `Bytes`, zero-copy) beside copying
//! the body into one contiguous buffer (the baseline a naive encoder pays),
//! and decoding frames out of a received byte buffer. The rkyv message part
//! is measured in the engine's benches once `engine/src/wire` exists.

use barge_net::frame::{encode_contiguous, header_chunk, FrameDecoder, FrameHeader, FrameKind};
use barge_net::Frame;
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 3] = [100, 4 * 1024, 64 * 1024];

fn encode(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("net/frame_encode");
    for size in SIZES {
        let payload = Bytes::from(vec![0x5au8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("zero_copy_chunks", size),
            &payload,
            |b, payload| {
                let mut arena = BytesMut::new();
                b.iter(|| {
                    let frame = Frame::from(payload.clone());
                    let header = header_chunk(
                        &mut arena,
                        FrameHeader {
                            body_bytes: frame.body_bytes() as u32,
                            kind: FrameKind::Entries,
                        },
                    );
                    black_box((header, frame.into_chunks()))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("contiguous_copy_baseline", size),
            &payload,
            |b, payload| b.iter(|| black_box(encode_contiguous(FrameKind::Entries, payload))),
        );
    }
    group.finish();
}

fn decode(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("net/frame_decode");
    for size in SIZES {
        // About 1 MiB of back-to-back frames, fed in 64 KiB reads as a
        // stream would deliver them.
        let count = (1024 * 1024 / (size + 5)).max(1);
        let mut wire = Vec::with_capacity(count * (size + 5));
        for _ in 0..count {
            wire.extend_from_slice(&encode_contiguous(FrameKind::Entries, &vec![0xa5u8; size]));
        }
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::new("decoder", size), &wire, |b, wire| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new(16 * 1024 * 1024, Some(FrameKind::Entries));
                let mut frames = 0usize;
                for read in wire.chunks(64 * 1024) {
                    decoder.feed(read);
                    while let Ok(Some((_, body))) = decoder.decode() {
                        black_box(&body);
                        frames += 1;
                    }
                }
                assert_eq!(frames, count);
            })
        });
        group.bench_with_input(
            BenchmarkId::new("memcpy_baseline", size),
            &wire,
            |b, wire| b.iter(|| black_box(Bytes::copy_from_slice(wire))),
        );
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
