//! Crash states: a fixed workload is crashed before every one of its disk
//! operations, with several seeds choosing which unsynced writes survive
//! and how they tear at 512 B. After each crash, recovery must open, lose
//! no acknowledged submission and return no corrupt entry: the reopened log
//! equals some prefix of the submissions at least as long as the
//! acknowledged one. Some crashes also hit the recovery that follows.

mod common;

use barge_wal::{Fault, FaultDisk, FaultError, FaultOperation, HardState, Wal, WalError};
use common::{check_recovered, fault_config, open, payload, Model, ModelBatch, ModelOp};

/// Submits the workload until the log fails; returns the accepted ops.
fn workload(wal: &Wal) -> Vec<ModelOp> {
    let mut ops = Vec::new();
    let mut next = 1u64;
    let mut term = 1u64;
    for round in 0..60u64 {
        let count = 1 + round % 3;
        let len = [10usize, 700, 2500, 5000][(round % 4) as usize];
        let body = payload(next, next + count - 1, term, round + 1, len);
        let batch = ModelBatch {
            first: next,
            last: next + count - 1,
            term,
            id: round + 1,
            len: body.len(),
        };
        if wal.append(next, batch.last, term, body).is_err() {
            return ops;
        }
        ops.push(ModelOp::Append(batch));
        next += count;
        if round % 9 == 4 {
            term += 1;
            let state = HardState {
                term,
                vote: Some(round % 3),
                commit: next / 2,
            };
            if wal.save_hard_state(state).is_err() {
                return ops;
            }
            ops.push(ModelOp::HardState(state));
        }
        if round % 17 == 16 {
            let from = next - 2;
            if wal.truncate_suffix(from).is_err() {
                return ops;
            }
            ops.push(ModelOp::Truncate(from));
            next = from;
        }
        if round % 3 != 2 && wal.sync().is_err() {
            return ops;
        }
        if round == 40 && wal.compact(5).is_err() {
            return ops;
        }
    }
    let _ = wal.sync();
    ops
}

#[test]
fn every_crash_point_keeps_acknowledged_entries() {
    let reference = FaultDisk::new();
    let (wal, _) = open(&reference, 0);
    let full = workload(&wal);
    wal.shutdown().expect("reference run shuts down");
    let total = reference.operations();
    assert!(full.len() > 60, "workload too small: {} ops", full.len());
    let mut lost_unacked = 0;
    let mut kept_unacked = 0;
    let mut torn_tails = 0;
    for point in 0..total {
        for seed in 0..4u64 {
            let seed = point * 10 + seed;
            let disk = FaultDisk::new();
            disk.crash_at_operation(point, seed);
            let (wal, _) = match Wal::open("wal", fault_config(&disk)) {
                Ok(opened) => opened,
                Err(_) => {
                    // Crashed during the very first open: nothing acked.
                    assert!(
                        disk.is_crashed(),
                        "seed {seed}: open failed without a crash"
                    );
                    disk.restart();
                    let _ = open(&disk, seed);
                    continue;
                }
            };
            let ops = workload(&wal);
            if !disk.is_crashed() {
                // The crash point lies beyond this (timing-dependent) run.
                disk.crash(seed);
            }
            let acked = wal.durable().sequence as usize;
            drop(wal);
            disk.restart();
            if seed % 4 == 0 {
                // Crash again during recovery's own writes.
                disk.crash_at_operation(disk.operations() + 3 + seed % 5, seed + 1);
                if Wal::open("wal", fault_config(&disk)).is_err() {
                    assert!(
                        disk.is_crashed(),
                        "seed {seed}: reopen failed without a crash"
                    );
                }
                disk.crash(seed + 2);
                disk.restart();
            }
            let (wal, recovery) = open(&disk, seed);
            let (_, kept) =
                check_recovered(seed, &Model::default(), &ops, acked, &wal, &recovery, 5);
            lost_unacked += usize::from(kept < ops.len());
            kept_unacked += usize::from(kept > acked);
            torn_tails += usize::from(recovery.torn_tail.is_some());
        }
    }
    eprintln!("{total} crash points: lost {lost_unacked}, kept {kept_unacked} unacked, {torn_tails} torn tails");
    assert!(lost_unacked > 10 && kept_unacked > 10, "coverage too thin");
}

#[test]
fn torn_group_is_cut_and_earlier_groups_survive() {
    for lost_sector in 0..4usize {
        let disk = FaultDisk::new();
        let (wal, _) = open(&disk, 0);
        let a = wal
            .append_and_wait(1, 2, 1, payload(1, 2, 1, 1, 300))
            .expect("append a");
        assert_eq!(a.last.map(|last| last.index), Some(2));
        wal.append_and_wait(3, 3, 1, payload(3, 3, 1, 2, 300))
            .expect("append b");
        // The next sync fails, so the write of c stays unsynced (and the
        // log is poisoned: c is never acknowledged).
        disk.inject(Fault {
            operation: FaultOperation::Sync,
            countdown: 0,
            error: FaultError::Io,
        });
        let sequence = wal
            .append(4, 6, 1, payload(4, 6, 1, 3, 1800))
            .expect("append c");
        assert!(matches!(
            wal.wait_durable(sequence),
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.append(7, 7, 1, payload(7, 7, 1, 4, 10)),
            Err(WalError::Poisoned { .. })
        ));
        disk.crash_with(|_, _, sector| sector != lost_sector, 0);
        drop(wal);
        disk.restart();
        let (wal, recovery) = open(&disk, 0);
        assert!(recovery.damaged.is_empty(), "{recovery:?}");
        // With the first sector lost the group's start is all zeros, the
        // same as never written; later losses leave a recognisable record.
        assert_eq!(
            recovery.torn_tail.is_some(),
            lost_sector > 0,
            "sector {lost_sector}: {recovery:?}"
        );
        assert_eq!(
            recovery.last.map(|last| last.index),
            Some(3),
            "sector {lost_sector}"
        );
        let batches = common::read_all(&wal).expect("read back");
        assert_eq!(
            batches.iter().map(|batch| batch.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // The cut tail is rewritten cleanly: the log continues and reopens.
        wal.append_and_wait(4, 4, 2, payload(4, 4, 2, 9, 100))
            .expect("append after cut");
        wal.shutdown().expect("shutdown");
        let (wal, recovery) = open(&disk, 0);
        assert!(
            recovery.damaged.is_empty() && recovery.torn_tail.is_none(),
            "{recovery:?}"
        );
        assert_eq!(common::read_all(&wal).expect("read").len(), 3);
    }
}
