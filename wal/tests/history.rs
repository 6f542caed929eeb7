//! Random histories of append, hard state, truncate, compact, sync, crash
//! and clean reopen on the fault disk, checked against a model after every
//! reopen and by live reads. A failure prints the seed that replays it.

mod common;

use barge_wal::{FaultDisk, HardState};
use common::{check_recovered, open, payload, read_all, Model, ModelBatch, ModelOp};
use rand::{rngs::SmallRng, Rng, SeedableRng};

#[derive(Debug, Default)]
struct Coverage {
    crashes: usize,
    crashes_losing_unacked: usize,
    crashes_keeping_unacked: usize,
    segments_removed: usize,
    segments_max: usize,
}

fn run_history(seed: u64, steps: usize, coverage: &mut Coverage) {
    let disk = FaultDisk::new();
    let mut random = SmallRng::seed_from_u64(seed);
    let (mut wal, _) = open(&disk, seed);
    let mut base = Model::default();
    let mut ops: Vec<ModelOp> = Vec::new();
    let mut live = Model::default();
    let mut next_id = 1u64;
    let mut term = 1u64;
    let mut compacted_below = 0u64;
    let mut crashes = 0;
    for step in 0..steps {
        let segments = disk
            .files()
            .iter()
            .filter(|(name, _)| !name.starts_with("spare"))
            .count();
        coverage.segments_max = coverage.segments_max.max(segments);
        let choice = random.random_range(0..100);
        if choice < 55 {
            let first = live.next.unwrap_or(1);
            let count = random.random_range(1..=4u64);
            if random.random_range(0..10) == 0 {
                term += 1;
            }
            let len = random.random_range(0..3000usize);
            let body = payload(first, first + count - 1, term, next_id, len);
            let batch = ModelBatch {
                first,
                last: first + count - 1,
                term,
                id: next_id,
                len: body.len(),
            };
            next_id += 1;
            wal.append(first, batch.last, term, body)
                .unwrap_or_else(|error| panic!("seed {seed} step {step}: append: {error}"));
            ops.push(ModelOp::Append(batch));
            live.apply(ops.last().unwrap_or_else(|| unreachable!()));
        } else if choice < 63 {
            let state = HardState {
                term,
                vote: random.random_bool(0.5).then(|| random.random_range(1..5)),
                commit: random.random_range(0..100),
            };
            wal.save_hard_state(state)
                .unwrap_or_else(|error| panic!("seed {seed}: hs: {error}"));
            ops.push(ModelOp::HardState(state));
            live.apply(ops.last().unwrap_or_else(|| unreachable!()));
        } else if choice < 70 {
            let (Some(first), Some(next)) = (wal.first_index(), live.next) else {
                continue;
            };
            let from = random.random_range(first..=next);
            wal.truncate_suffix(from)
                .unwrap_or_else(|error| panic!("seed {seed}: trunc: {error}"));
            ops.push(ModelOp::Truncate(from));
            live.apply(ops.last().unwrap_or_else(|| unreachable!()));
        } else if choice < 75 {
            let (Some(first), Some(last)) = (wal.first_index(), wal.last()) else {
                continue;
            };
            let below = random.random_range(first..=last.index);
            coverage.segments_removed += wal
                .compact(below)
                .unwrap_or_else(|error| panic!("seed {seed}: compact: {error}"));
            compacted_below = compacted_below.max(below);
        } else if choice < 82 {
            wal.sync()
                .unwrap_or_else(|error| panic!("seed {seed}: sync: {error}"));
        } else if choice < 88 {
            let observed =
                read_all(&wal).unwrap_or_else(|error| panic!("seed {seed}: read: {error}"));
            let dropped = live.batches.len() - observed.len();
            assert_eq!(
                observed,
                live.batches[dropped..],
                "seed {seed} step {step}: live read"
            );
        } else if choice < 96 {
            let acked = wal.durable().sequence as usize;
            disk.crash(random.random());
            drop(wal);
            disk.restart();
            let (reopened, recovery) = open(&disk, seed);
            wal = reopened;
            let (recovered, kept) =
                check_recovered(seed, &base, &ops, acked, &wal, &recovery, compacted_below);
            base = recovered;
            coverage.crashes += 1;
            if kept < ops.len() {
                coverage.crashes_losing_unacked += 1;
            }
            if kept > acked {
                coverage.crashes_keeping_unacked += 1;
            }
            live = base.clone();
            term = term.max(live.last_term());
            ops.clear();
            crashes += 1;
        } else {
            wal.shutdown()
                .unwrap_or_else(|error| panic!("seed {seed}: shutdown: {error}"));
            let (reopened, recovery) = open(&disk, seed);
            wal = reopened;
            base = check_recovered(
                seed,
                &base,
                &ops,
                ops.len(),
                &wal,
                &recovery,
                compacted_below,
            )
            .0;
            live = base.clone();
            ops.clear();
        }
    }
    assert!(
        crashes > 0 || steps < 50,
        "seed {seed}: history never crashed"
    );
    wal.shutdown()
        .unwrap_or_else(|error| panic!("seed {seed}: final shutdown: {error}"));
}

#[test]
fn random_histories_match_the_model() {
    let mut coverage = Coverage::default();
    let only: Option<u64> = std::env::var("SEED")
        .ok()
        .and_then(|seed| seed.parse().ok());
    for seed in only.map_or(0..60, |seed| seed..seed + 1) {
        run_history(seed, 250, &mut coverage);
    }
    eprintln!("{coverage:?}");
    // The histories must reach the cases they exist to check.
    assert!(coverage.crashes > 100, "{coverage:?}");
    assert!(coverage.crashes_losing_unacked > 10, "{coverage:?}");
    assert!(coverage.segments_removed > 10, "{coverage:?}");
    assert!(coverage.segments_max >= 4, "{coverage:?}");
}
