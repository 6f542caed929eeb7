//! Faults armed on the real blocking disk (`Backend::FaultyBlocking`): an
//! injected error poisons the log as it does on the in-memory fault disk,
//! and the same directory reopened without faults recovers every batch that
//! was reported durable.

mod common;

use barge_wal::{Backend, Fault, FaultError, FaultOperation, Faults, Wal, WalConfig, WalError};
use common::payload;

fn config(backend: Backend) -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        write_bytes_max: 256 << 10,
        queued_bytes_max: 512 << 10,
        backend,
        ..WalConfig::default()
    }
}

/// Appends batches one at a time until one is refused or never becomes
/// durable; returns how many were durable and the error that stopped it.
fn append_until_poisoned(wal: &Wal, batches_max: u64) -> (u64, WalError) {
    for index in 1..=batches_max {
        let appended = wal
            .append(index, index, 1, payload(index, index, 1, index, 3000))
            .and_then(|sequence| wal.wait_durable(sequence));
        if let Err(error) = appended {
            return (index - 1, error);
        }
    }
    panic!("{batches_max} batches and no fault fired");
}

/// Reopens `dir` without faults and checks batches `1..=durable` are there.
fn recovers(dir: &std::path::Path, durable: u64) {
    let (wal, recovery) = Wal::open(dir, config(Backend::Blocking)).expect("reopen");
    assert!(
        recovery.last.map_or(0, |last| last.index) >= durable,
        "durable batches lost: {recovery:?}, {durable} were durable"
    );
    for index in 1..=durable {
        let read = wal.read(index..=index, usize::MAX).expect("read");
        assert_eq!(read[0].payload, payload(index, index, 1, index, 3000));
    }
    wal.shutdown().expect("shutdown");
}

#[test]
fn fsync_eio_poisons_and_the_synced_prefix_survives() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let faults = Faults::default();
    let (wal, _) =
        Wal::open(dir.path(), config(Backend::FaultyBlocking(faults.clone()))).expect("open");
    assert_eq!(wal.backend_name(), "faulty blocking");
    // Unarmed, it is the plain blocking disk.
    let durable = 5;
    for index in 1..=durable {
        let sequence = wal
            .append(index, index, 1, payload(index, index, 1, index, 3000))
            .expect("append");
        wal.wait_durable(sequence).expect("durable");
    }
    faults.inject(Fault {
        operation: FaultOperation::Sync,
        countdown: 0,
        error: FaultError::Io,
    });
    let sequence = wal
        .append(6, 6, 1, payload(6, 6, 1, 6, 3000))
        .expect("submitted");
    let error = wal.wait_durable(sequence).expect_err("never durable");
    assert!(matches!(error, WalError::Poisoned { .. }), "{error}");
    assert!(error.to_string().contains("Input/output error"), "{error}");
    let refused = wal.append(7, 7, 1, payload(7, 7, 1, 7, 10));
    assert!(matches!(refused, Err(WalError::Poisoned { .. })));
    // A failed log closes with its error; the files stay as they are.
    let _ = wal.shutdown();
    recovers(dir.path(), durable);
}

#[test]
fn parsed_countdowns_fire_after_that_many_operations() {
    for spec in [
        "fsync-eio-after=12",
        "write-eio-after=12",
        "enospc-after=12",
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let faults: Faults = spec.parse().expect("a valid spec");
        let (wal, _) =
            Wal::open(dir.path(), config(Backend::FaultyBlocking(faults.clone()))).expect("open");
        let (durable, error) = append_until_poisoned(&wal, 100);
        assert!(durable < 12, "{spec}: {durable} durable batches");
        let wanted = if spec.starts_with("enospc") {
            "no space left"
        } else {
            "Input/output error"
        };
        assert!(error.to_string().contains(wanted), "{spec}: {error}");
        assert_eq!(faults.armed()[0].countdown, 0, "{spec}");
        let _ = wal.shutdown();
        recovers(dir.path(), durable);
    }
}

#[test]
fn bad_specs_are_clear_errors() {
    for (spec, reason) in [
        ("fsync-eio-after", "no '='"),
        ("fsync-eio-after=-1", "not a whole number"),
        ("fsync-eio-after=3,bitrot=4", "unknown fault name"),
        ("", "no '='"),
    ] {
        let error = spec.parse::<Faults>().expect_err(spec);
        let text = error.to_string();
        assert!(text.contains(reason), "{spec}: {text}");
        assert!(text.contains("fsync-eio-after=N"), "grammar named: {text}");
    }
    let faults: Faults = "read-eio-after=0,write-eio-after=7".parse().expect("valid");
    assert_eq!(
        faults.armed(),
        [
            Fault {
                operation: FaultOperation::Read,
                countdown: 0,
                error: FaultError::Io
            },
            Fault {
                operation: FaultOperation::Write,
                countdown: 7,
                error: FaultError::Io
            },
        ]
    );
    faults.clear();
    assert!(faults.armed().is_empty());
}
