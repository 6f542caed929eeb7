//! The unsafe `SyncMode::Never` on a real directory, through io_uring (when
//! the machine allows it) and the blocking backend: appends complete in
//! order as durable, read back, survive a reopen, and no data sync is
//! counted.

mod common;

use barge_wal::{Backend, Completion, HardState, SyncMode, Wal, WalConfig};
use common::{payload, read_all, ModelBatch};

fn config(backend: Backend) -> WalConfig {
    WalConfig {
        // Small segments so the run crosses several rolls.
        segment_bytes: 256 << 10,
        write_bytes_max: 64 << 10,
        queued_bytes_max: 256 << 10,
        backend,
        sync: SyncMode::Never,
        ..WalConfig::default()
    }
}

fn exercise(backend: Backend) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (wal, _) = Wal::open(dir.path(), config(backend.clone())).expect("open");
    let completions = wal.completions();
    let mut expected = Vec::new();
    let mut sequences = Vec::new();
    for id in 0..600u64 {
        let first = id * 2 + 1;
        let len = 200 + (id as usize * 7919) % 3000;
        let body = payload(first, first + 1, 1, id, len);
        expected.push(ModelBatch {
            first,
            last: first + 1,
            term: 1,
            id,
            len: body.len(),
        });
        sequences.push(wal.append(first, first + 1, 1, body).expect("append"));
    }
    let last_sequence = *sequences.last().expect("appended");
    let durable = wal.wait_durable(last_sequence).expect("durable");
    assert!(durable.sequence >= last_sequence, "{durable:?}");
    let state = HardState {
        term: 1,
        vote: Some(2),
        commit: 1000,
    };
    let sequence = wal.save_hard_state(state).expect("hard state");
    wal.wait_durable(sequence).expect("hard state durable");

    // Completions arrive as Durable and never go backwards.
    let mut previous = 0;
    let mut seen = 0;
    while let Ok(completion) = completions.try_recv() {
        match completion {
            Completion::Durable(durable) => {
                assert!(durable.sequence >= previous, "{durable:?} after {previous}");
                previous = durable.sequence;
                seen += 1;
            }
            Completion::Poisoned(reason) => panic!("poisoned: {reason}"),
        }
    }
    assert!(seen > 0, "no completion reported");

    let metrics = wal.metrics();
    assert_eq!(metrics.syncs, 0, "{metrics:?}");
    assert!(metrics.groups > 0 && metrics.batches >= 600, "{metrics:?}");
    assert!(metrics.segment_rolls >= 2, "{metrics:?}");
    assert_eq!(read_all(&wal).expect("read"), expected);
    wal.shutdown().expect("shutdown");

    let (wal, recovery) = Wal::open(dir.path(), config(backend)).expect("reopen");
    assert!(
        recovery.damaged.is_empty() && recovery.torn_tail.is_none(),
        "{recovery:?}"
    );
    assert_eq!(recovery.hard_state, state);
    assert_eq!(recovery.next_index, Some(1201));
    assert_eq!(read_all(&wal).expect("read after reopen"), expected);
    assert_eq!(wal.metrics().syncs, 0);
    wal.shutdown().expect("shutdown");
}

#[test]
fn io_uring_without_sync_round_trip() {
    exercise(Backend::Uring);
}

#[test]
fn blocking_without_sync_round_trip() {
    exercise(Backend::Blocking);
}
