//! Criterion benchmarks for `barge-wal`:
//! - `wal/record`: encoding and fully checking one record (both CRC32Cs),
//!   beside a bare `memcpy` of the payload (what any log must pay);
//! - `wal/append`: the submission path on the fault disk (no I/O wait: the
//!   log thread's CPU cost per batch), and a durable append+sync round trip
//!   on a real directory with io_uring beside the raw baseline's single
//!   4 KiB write+fdatasync;
//! - `wal/recovery`: opening a log of 16 MiB of records (scan, CRCs, index).

use std::time::Duration;

use barge_wal::baseline::{self, BaselineConfig};
use barge_wal::format::{decode_record, encode_record, Kind};
use barge_wal::{Backend, Bytes, FaultDisk, Wal, WalConfig};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 3] = [64, 4 * 1024, 64 * 1024];

fn record(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wal/record");
    for size in SIZES {
        let payload = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, payload| {
            let mut out = Vec::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                encode_record(&mut out, Kind::Batch, 7, (1, 1), 1, black_box(payload));
                black_box(out.len())
            })
        });
        let mut encoded = Vec::new();
        encode_record(&mut encoded, Kind::Batch, 7, (1, 1), 1, &payload);
        group.bench_with_input(
            BenchmarkId::new("decode_checked", size),
            &encoded,
            |b, bytes| {
                b.iter(|| {
                    black_box(decode_record(black_box(bytes), 7).map(|(h, p)| (h.first, p.len())))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("memcpy_baseline", size),
            &payload,
            |b, payload| {
                let mut out = vec![0u8; size];
                b.iter(|| {
                    out.copy_from_slice(black_box(payload));
                    black_box(out[0])
                })
            },
        );
    }
    group.finish();
}

fn append(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wal/append");
    // Submission + log-thread work for 1000 one-entry batches, then one
    // sync, on the in-memory fault disk.
    for size in [64usize, 4096] {
        group.throughput(Throughput::Elements(1000));
        let disk = FaultDisk::new();
        let config = WalConfig {
            segment_bytes: 16 << 20,
            backend: Backend::Fault(disk),
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open("bench", config).expect("open");
        let payload = Bytes::from(vec![1u8; size]);
        let mut next = 1u64;
        group.bench_function(BenchmarkId::new("fault_disk_1000_batches", size), |b| {
            b.iter(|| {
                for _ in 0..1000 {
                    wal.append(next, next, 1, payload.clone()).expect("append");
                    next += 1;
                }
                wal.sync().expect("sync");
                if next % 100_000 < 1000 {
                    wal.compact(next - 1).expect("compact");
                }
            });
        });
        wal.shutdown().expect("shutdown");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    group.throughput(Throughput::Elements(1));
    let (wal, _) = Wal::open(dir.path().join("wal"), WalConfig::default()).expect("open");
    let payload = Bytes::from(vec![1u8; 64]);
    let mut next = 1u64;
    group.bench_function("io_uring_append_and_wait_64B", |b| {
        b.iter(|| {
            wal.append_and_wait(next, next, 1, payload.clone())
                .expect("append");
            next += 1;
        });
    });
    group.bench_function("baseline_write_fdatasync_4KiB", |b| {
        b.iter_custom(|iterations| {
            let report = baseline::run(&BaselineConfig {
                dir: dir.path().to_path_buf(),
                write_bytes: 4096,
                file_bytes: 16 << 20,
                duration: Duration::from_secs(60),
                writes_max: iterations,
            })
            .expect("baseline");
            report.elapsed
        });
    });
    group.finish();
}

fn recovery(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wal/recovery");
    let disk = FaultDisk::new();
    let config = || WalConfig {
        segment_bytes: 4 << 20,
        backend: Backend::Fault(disk.clone()),
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open("bench", config()).expect("open");
    let payload = Bytes::from(vec![3u8; 4000]);
    for index in 1..=4000u64 {
        wal.append(index, index, 1, payload.clone())
            .expect("append");
    }
    wal.shutdown().expect("shutdown");
    group.throughput(Throughput::Bytes(4000 * 4000));
    group.sample_size(20);
    group.bench_function("open_16MB_of_4KB_batches", |b| {
        b.iter(|| {
            let (wal, recovery) = Wal::open("bench", config()).expect("open");
            assert_eq!(recovery.last.map(|last| last.index), Some(4000));
            drop(wal);
        })
    });
    group.finish();
}

criterion_group!(benches, record, append, recovery);
criterion_main!(benches);
