//! Failure semantics and API contracts: fsyncgate poisoning on EIO, ENOSPC
//! as a clear error with the log still readable, read errors, backpressure,
//! the completion channel and notifier, truncation inside a batch, spare
//! recycling, and argument errors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barge_wal::{
    Backend, Bytes, Completion, Fault, FaultDisk, FaultError, FaultOperation, Wal, WalConfig,
    WalError,
};
use common::{fault_config, open, payload};

fn poisons_on(operation: FaultOperation, error: FaultError) -> WalError {
    let disk = FaultDisk::new();
    let (wal, _) = open(&disk, 0);
    let completions = wal.completions();
    wal.append_and_wait(1, 1, 1, payload(1, 1, 1, 1, 100))
        .expect("first append");
    disk.inject(Fault {
        operation,
        countdown: 0,
        error,
    });
    let pending = wal
        .append(2, 2, 1, payload(2, 2, 1, 2, 100))
        .expect("submitted");
    let failure = wal.wait_durable(pending).expect_err("never durable");
    assert!(matches!(failure, WalError::Poisoned { .. }), "{failure}");
    assert_eq!(
        wal.durable().sequence,
        pending - 1,
        "the failed batch was reported durable"
    );
    let later = wal
        .append(3, 3, 1, payload(3, 3, 1, 3, 10))
        .expect_err("poisoned");
    let saw_poison = completions
        .try_iter()
        .any(|c| matches!(c, Completion::Poisoned(_)));
    assert!(saw_poison, "no Poisoned completion");
    // Still readable (from memory and disk).
    disk.clear_faults();
    let read = wal.read(1..=1, 1).expect("durable entry still readable");
    assert_eq!(read[0].payload, payload(1, 1, 1, 1, 100));
    later
}

#[test]
fn failed_write_poisons_the_log() {
    let error = poisons_on(FaultOperation::Write, FaultError::Io);
    assert!(error.to_string().contains("Input/output error"), "{error}");
    assert!(!error.is_no_space());
}

#[test]
fn failed_sync_poisons_the_log_and_is_never_retried() {
    let error = poisons_on(FaultOperation::Sync, FaultError::Io);
    assert!(error.to_string().contains("Input/output error"), "{error}");
}

#[test]
fn enospc_is_a_clear_error() {
    let error = poisons_on(FaultOperation::Write, FaultError::NoSpace);
    assert!(error.is_no_space(), "{error}");
    assert!(error.to_string().contains("no space left"), "{error}");
}

#[test]
fn read_errors_are_reported() {
    let disk = FaultDisk::new();
    let config = WalConfig {
        tail_cache_bytes_max: 0,
        ..fault_config(&disk)
    };
    let (wal, _) = Wal::open("wal", config).expect("open");
    wal.append_and_wait(1, 1, 1, payload(1, 1, 1, 1, 100))
        .expect("append");
    disk.inject(Fault {
        operation: FaultOperation::Read,
        countdown: 0,
        error: FaultError::Io,
    });
    assert!(matches!(wal.read(1..=1, 1), Err(WalError::Io { .. })));
    disk.clear_faults();
    assert_eq!(
        wal.read(1..=1, 1).expect("read")[0].payload,
        payload(1, 1, 1, 1, 100)
    );
    // A read error at open is an I/O error, not corruption.
    wal.shutdown().expect("shutdown");
    disk.inject(Fault {
        operation: FaultOperation::Read,
        countdown: 0,
        error: FaultError::Io,
    });
    assert!(matches!(
        Wal::open("wal", fault_config(&disk)),
        Err(WalError::Io { .. })
    ));
}

#[test]
fn appends_wait_when_the_queue_is_full() {
    let disk = FaultDisk::new();
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let notified = Arc::new(AtomicUsize::new(0));
    let config = WalConfig {
        queued_bytes_max: 10_000,
        notifier: Some({
            let (gate, notified) = (Arc::clone(&gate), Arc::clone(&notified));
            // Runs on the log thread: holding the gate stalls the writer.
            Box::new(move || {
                notified.fetch_add(1, Ordering::SeqCst);
                drop(gate.lock());
            })
        }),
        ..fault_config(&disk)
    };
    let (wal, _) = Wal::open("wal", config).expect("open");
    let wal = Arc::new(wal);
    let submitted = Arc::new(AtomicUsize::new(0));
    let appender = {
        let (wal, submitted) = (Arc::clone(&wal), Arc::clone(&submitted));
        std::thread::spawn(move || {
            for index in 1..=40u64 {
                wal.append(index, index, 1, payload(index, index, 1, index, 2000))
                    .expect("append");
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let stalled_at = submitted.load(Ordering::SeqCst);
    // One group may be in flight and 10 kB queued: far fewer than 40.
    assert!(
        stalled_at < 20,
        "backpressure did not hold: {stalled_at} submitted"
    );
    assert!(notified.load(Ordering::SeqCst) >= 1);
    drop(held);
    appender.join().expect("appender");
    assert_eq!(
        wal.sync().expect("sync").last.map(|last| last.index),
        Some(40)
    );
}

#[test]
fn completions_are_cumulative_and_monotone() {
    let disk = FaultDisk::new();
    let notified = Arc::new(AtomicUsize::new(0));
    let config = WalConfig {
        notifier: Some({
            let notified = Arc::clone(&notified);
            Box::new(move || {
                notified.fetch_add(1, Ordering::SeqCst);
            })
        }),
        ..fault_config(&disk)
    };
    let (wal, _) = Wal::open("wal", config).expect("open");
    let completions = wal.completions();
    let mut last_sequence = 0;
    for index in 1..=200u64 {
        last_sequence = wal
            .append(index, index, 1, payload(index, index, 1, index, 50))
            .expect("append");
    }
    let hard_state = wal.save_hard_state(barge_wal::HardState {
        term: 1,
        vote: None,
        commit: 9,
    });
    let hard_state = hard_state.expect("hard state");
    assert_eq!(hard_state, last_sequence + 1);
    let mut seen = 0;
    while seen < hard_state {
        match completions
            .recv_timeout(Duration::from_secs(10))
            .expect("completion")
        {
            Completion::Durable(durable) => {
                assert!(durable.sequence > seen, "not monotone");
                seen = durable.sequence;
                assert!(durable.last.is_some_and(|last| last.index <= 200));
            }
            Completion::Poisoned(cause) => panic!("poisoned: {cause}"),
        }
    }
    assert_eq!(wal.durable().last.map(|last| last.index), Some(200));
    assert!(notified.load(Ordering::SeqCst) >= 1);
}

#[test]
fn truncation_inside_a_batch_reports_the_effective_range() {
    let disk = FaultDisk::new();
    let (wal, _) = open(&disk, 0);
    let body = payload(1, 10, 1, 1, 300);
    wal.append(1, 10, 1, body.clone()).expect("append");
    wal.truncate_suffix(5).expect("truncate");
    let read = wal.read(1..=10, usize::MAX).expect("read");
    assert_eq!((read.len(), read[0].first, read[0].last), (1, 1, 4));
    assert_eq!(read[0].payload, body, "payload stays whole");
    assert!(matches!(
        wal.read(5..=5, 1),
        Err(WalError::Unavailable { .. })
    ));
    assert!(matches!(
        wal.append(6, 6, 2, Bytes::new()),
        Err(WalError::NotContiguous { expected: 5, .. })
    ));
    wal.append(5, 6, 2, payload(5, 6, 2, 2, 10))
        .expect("append after truncate");
    wal.shutdown().expect("shutdown");
    let (wal, recovery) = open(&disk, 0);
    assert_eq!(
        recovery.last.map(|last| (last.index, last.term)),
        Some((6, 2))
    );
    let read = wal.read(1..=6, usize::MAX).expect("read after reopen");
    assert_eq!(
        read.iter().map(|b| (b.first, b.last)).collect::<Vec<_>>(),
        vec![(1, 4), (5, 6)]
    );
}

#[test]
fn compaction_recycles_segments_as_spares() {
    let disk = FaultDisk::new();
    let (wal, _) = open(&disk, 0);
    for index in 1..=100u64 {
        wal.append(index, index, 1, payload(index, index, 1, index, 3000))
            .expect("append");
    }
    wal.sync().expect("sync");
    let segments = |disk: &FaultDisk| {
        disk.files()
            .iter()
            .filter(|(n, _)| !n.starts_with("spare"))
            .count()
    };
    let before = segments(&disk);
    assert!(before >= 4, "{:?}", disk.files());
    let removed = wal.compact(90).expect("compact");
    assert!(removed >= 3, "removed {removed}");
    assert_eq!(segments(&disk), before - removed);
    let spares = disk
        .files()
        .iter()
        .filter(|(n, _)| n.starts_with("spare"))
        .count();
    // Retired segments become spares up to `spare_segments_max` (4).
    assert!(
        (removed.min(4)..=4).contains(&spares),
        "removed {removed}: {:?}",
        disk.files()
    );
    assert!(matches!(
        wal.read(1..=1, 1),
        Err(WalError::Compacted { .. })
    ));
    let first = wal.first_index().expect("first");
    assert!(first <= 90, "compacted too far: {first}");
    // The log keeps rolling into the recycled spares instead of zero-filling
    // new ones. Every new segment takes one spare, so (counting finished
    // spares only, plus at most one the preparation thread may finish
    // between the two reads) zero-filled = created + left - recycled; had
    // the recycled files been dropped, it would be `recycled` higher.
    let finished_spares = |disk: &FaultDisk| {
        disk.files()
            .iter()
            .filter(|(n, _)| n.starts_with("spare") && n.ends_with(".wal"))
            .count()
    };
    let recycled = finished_spares(&disk);
    let zero_filled_before = wal.metrics().spares_zero_filled;
    let segments_before = segments(&disk);
    for index in 101..=200u64 {
        wal.append(index, index, 1, payload(index, index, 1, index, 3000))
            .expect("append");
    }
    wal.sync().expect("sync");
    let created = segments(&disk) - segments_before;
    let left = finished_spares(&disk);
    let zero_filled = (wal.metrics().spares_zero_filled - zero_filled_before) as usize;
    assert!(
        created > recycled,
        "the second round should outgrow the recycled spares: created {created}, recycled {recycled}"
    );
    assert!(
        zero_filled <= created + left + 1 - recycled,
        "zero-filled {zero_filled} spares for {created} new segments with {recycled} recycled \
         and {left} left: {:?}",
        disk.files()
    );
    assert!(
        left <= 4,
        "more spares than spare_segments_max: {:?}",
        disk.files()
    );
    // The preparation thread may be filling a `.tmp` right now; closing the
    // log joins it, after which none may be left behind.
    drop(wal);
    assert!(
        disk.files().iter().all(|(name, _)| !name.ends_with(".tmp")),
        "{:?}",
        disk.files()
    );
}

#[test]
fn bad_arguments_are_errors() {
    let disk = FaultDisk::new();
    let (wal, _) = open(&disk, 0);
    assert!(matches!(
        wal.append(3, 2, 1, Bytes::new()),
        Err(WalError::Invalid(_))
    ));
    wal.append(1, 2, 5, Bytes::new()).expect("append");
    assert!(matches!(
        wal.append(3, 3, 4, Bytes::new()),
        Err(WalError::Invalid(_))
    ));
    assert!(matches!(
        wal.append(4, 4, 5, Bytes::new()),
        Err(WalError::NotContiguous { .. })
    ));
    let huge = Bytes::from(vec![0u8; 1 << 20]);
    assert!(matches!(
        wal.append(3, 3, 5, huge),
        Err(WalError::Invalid(_))
    ));
    assert!(matches!(wal.truncate_suffix(10), Err(WalError::Invalid(_))));
    let (start, end) = (5, 4);
    assert!(matches!(
        wal.read(start..=end, 1),
        Err(WalError::Invalid(_))
    ));
    assert!(matches!(
        Wal::open(
            "wal",
            WalConfig {
                queued_bytes_max: 0,
                backend: Backend::Fault(disk.clone()),
                ..WalConfig::default()
            }
        ),
        Err(WalError::Invalid(_))
    ));
    wal.shutdown().expect("shutdown");
}
