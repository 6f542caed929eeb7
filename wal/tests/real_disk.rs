//! The log on a real directory, through io_uring (when the machine allows
//! it) and through the blocking backend: concurrent appenders, truncation,
//! compaction across many segments, hard state, reopen.

mod common;

use std::sync::Mutex;

use barge_wal::{Backend, HardState, Wal, WalConfig};
use common::{payload, read_all, Model, ModelBatch, ModelOp};

fn config(backend: Backend) -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        write_bytes_max: 256 << 10,
        queued_bytes_max: 512 << 10,
        tail_cache_bytes_max: 64 << 10,
        // Exercise the idle poll (off by default).
        idle_spin_micros: 50,
        backend,
        ..WalConfig::default()
    }
}

fn exercise(backend: Backend, expected_name: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (wal, recovery) = Wal::open(dir.path(), config(backend.clone())).expect("open");
    if wal.backend_name() != expected_name {
        eprintln!(
            "note: wanted {expected_name}, running on {}",
            wal.backend_name()
        );
    }
    assert_eq!(recovery.last, None);
    let model = Mutex::new((Model::default(), 1u64, 1u64));
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let (wal, model) = (&wal, &model);
            scope.spawn(move || {
                let mut sequences = Vec::new();
                for round in 0..300u64 {
                    let mut guard = model.lock().expect("model lock");
                    let (model, next, id) = &mut *guard;
                    let len = ((round * 7919 + thread * 104_729) % 20_000) as usize;
                    let body = payload(*next, *next + 1, 1, *id, len);
                    let batch = ModelBatch {
                        first: *next,
                        last: *next + 1,
                        term: 1,
                        id: *id,
                        len: body.len(),
                    };
                    sequences.push(wal.append(*next, *next + 1, 1, body).expect("append"));
                    model.apply(&ModelOp::Append(batch));
                    *next += 2;
                    *id += 1;
                }
                for sequence in sequences {
                    wal.wait_durable(sequence).expect("durable");
                }
            });
        }
    });
    let (mut model, next, _) = model.into_inner().expect("model");
    assert!(
        wal.metrics().batches_per_group_mean > 1.0,
        "no coalescing: {:?}",
        wal.metrics()
    );
    // Truncate inside a stored batch, then continue in a new term.
    let from = next - 3;
    wal.truncate_suffix(from).expect("truncate");
    model.apply(&ModelOp::Truncate(from));
    let body = payload(from, from + 4, 2, 9999, 100);
    wal.append_and_wait(from, from + 4, 2, body.clone())
        .expect("append after truncate");
    model.apply(&ModelOp::Append(ModelBatch {
        first: from,
        last: from + 4,
        term: 2,
        id: 9999,
        len: body.len(),
    }));
    let state = HardState {
        term: 2,
        vote: Some(3),
        commit: from,
    };
    let sequence = wal.save_hard_state(state).expect("hard state");
    wal.wait_durable(sequence).expect("hard state durable");
    model.apply(&ModelOp::HardState(state));
    let removed = wal.compact(next / 2).expect("compact");
    assert!(removed >= 2, "compaction removed {removed} segments");
    let live = read_all(&wal).expect("live read");
    let dropped = model.batches.len() - live.len();
    assert_eq!(live, model.batches[dropped..]);
    wal.shutdown().expect("shutdown");

    let (wal, recovery) = Wal::open(dir.path(), config(backend)).expect("reopen");
    assert!(
        recovery.damaged.is_empty() && recovery.torn_tail.is_none(),
        "{recovery:?}"
    );
    assert_eq!(recovery.hard_state, state);
    assert_eq!(recovery.next_index, Some(from + 5));
    assert_eq!(read_all(&wal).expect("read after reopen"), live);
    wal.shutdown().expect("shutdown");
}

#[test]
fn io_uring_backend_round_trip() {
    exercise(Backend::Uring, "io_uring");
}

#[test]
fn blocking_backend_round_trip() {
    exercise(Backend::Blocking, "blocking");
}
