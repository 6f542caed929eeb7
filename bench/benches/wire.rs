//! Encode and decode of append messages (`barge::wire`) with 1, 64 and 1024
//! entries of 64 B each, in one batch. Encoding copies no payload (the batch
//! bytes are shared), so its cost should not grow with the entry count;
//! decoding validates the batch's offset table, which is linear in entries.

use barge::core::{Batch, LogId, LogIndex, Message, MessageBody, NodeId, Term};
use barge::wire::{decode, encode, WireLimits};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PAYLOAD_BYTES: usize = 64;

fn append(entries: usize) -> Message {
    let payloads: Vec<Bytes> = (0..entries)
        .map(|_| Bytes::from(vec![7u8; PAYLOAD_BYTES]))
        .collect();
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::Append {
            prev: LogId {
                term: Term(3),
                index: LogIndex(99),
            },
            batches: vec![Batch::encode_normal(LogIndex(100), Term(3), &payloads)],
            commit: LogIndex(98),
        },
    }
}

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire_append");
    for entries in [1usize, 64, 1024] {
        let message = append(entries);
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_with_input(
            BenchmarkId::new("encode", entries),
            &message,
            |b, message| b.iter(|| encode(message).expect("encodes")),
        );
        let mut frame = BytesMut::new();
        for chunk in encode(&message).expect("encodes") {
            frame.extend_from_slice(&chunk);
        }
        let frame = frame.freeze();
        let limits = WireLimits::default();
        group.bench_with_input(BenchmarkId::new("decode", entries), &frame, |b, frame| {
            b.iter(|| decode(frame.clone(), &limits).expect("decodes"))
        });
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
