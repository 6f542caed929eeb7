//! Deterministic simulation of Barge's Raft core (issue 3, "The simulator").
//!
//! Clusters of 3 and 5 cores, each with an in-memory log whose unsynced
//! writes vanish on crash, talk over a simulated network that drops, delays,
//! duplicates and reorders messages and partitions nodes, while a nemesis
//! crashes and restarts nodes (sometimes finding a stretch of the durable
//! log damaged at restart: the node cuts it back and repairs it from the
//! leader under a repair floor), skews their clocks, changes membership,
//! transfers leadership and forces snapshots, and clients propose and read.
//! Checkers named after the Raft properties (see `sim/checkers/`) run after
//! every input; at the end faults stop and liveness is checked.
//!
//! Everything follows from one `u64` seed: no wall clock, threads or I/O.
//! A failure prints its seed and the one-line command that replays it.
//!
//! Environment:
//! - `BARGE_SIM_SEED=<seed>`: run only that seed (in each test the filter selects).
//! - `BARGE_SIM_SEEDS=<count>`: seeds per test (default tuned for CI).
//! - `BARGE_SIM_STEPS=<count>`: events per seed before faults stop.
//! - `BARGE_SIM_TRACE=1`: print every event of the run (use with one seed).

#[path = "sim/mod.rs"]
mod sim;

use barge::core::InjectedBug;
use sim::runner::{run_one, run_seeds, Plan};
use sim::scenario::Scenario;

/// Steps (events: deliveries, ticks, disk completions, client requests,
/// faults) per seed before faults stop, when the environment does not say.
/// With the seed counts below the tests run 20,000 seeds of 20,000 steps,
/// plus each seed's liveness phase (tuned for about 5 minutes on 2 cores).
const STEPS_DEFAULT: u64 = 20_000;

#[test]
fn three_nodes() {
    run_seeds(
        &Plan::from_env("three_nodes", 0, 5_000, STEPS_DEFAULT),
        &Scenario::three_nodes,
    );
}

#[test]
fn five_nodes() {
    run_seeds(
        &Plan::from_env("five_nodes", 1 << 40, 5_000, STEPS_DEFAULT),
        &Scenario::five_nodes,
    );
}

#[test]
fn membership_changes() {
    run_seeds(
        &Plan::from_env("membership_changes", 2 << 40, 4_000, STEPS_DEFAULT),
        &Scenario::membership_changes,
    );
}

#[test]
fn hostile() {
    run_seeds(
        &Plan::from_env("hostile", 5 << 40, 4_000, STEPS_DEFAULT),
        &Scenario::hostile,
    );
}

/// The hostile schedule with most single-node crashes damaging the log:
/// repair under elections that overlap half-replicated entries.
#[test]
fn damaged_logs() {
    run_seeds(
        &Plan::from_env("damaged_logs", 6 << 40, 300, STEPS_DEFAULT),
        &Scenario::damage,
    );
}

#[test]
fn lease_reads() {
    run_seeds(
        &Plan::from_env("lease_reads", 3 << 40, 2_000, STEPS_DEFAULT),
        &Scenario::lease_reads,
    );
}

/// A scenario for a seed.
type ScenarioOf = fn(u64) -> Scenario;

/// Seeds searched for each injected bug before the test gives up.
const BUG_SEARCH_SEEDS_MAX: u64 = 400;

/// The checkers can fail: with a known protocol bug injected into the core
/// (`Config::testing_bug`), the simulator reports a violated property for
/// some seed within a bounded search, and names the seed that shows it.
#[test]
fn checkers_catch_injected_bugs() {
    // Each bug with the scenario whose faults expose it: repair without its
    // vote floor needs crashes that damage logs.
    let bugs: [(InjectedBug, ScenarioOf); 3] = [
        (InjectedBug::AckBeforeDurable, Scenario::hostile),
        (InjectedBug::CommitOlderTermByCounting, Scenario::hostile),
        (InjectedBug::RepairWithoutVoteFloor, Scenario::damage),
    ];
    let mut unnoticed = Vec::new();
    for (bug, base) in bugs {
        // Fixed seeds, whatever BARGE_SIM_SEED(S) say: this test's search
        // must stay the same bounded search.
        let plan = Plan {
            test: "checkers_catch_injected_bugs",
            seeds: (4 << 40..(4 << 40) + BUG_SEARCH_SEEDS_MAX).collect(),
            steps: STEPS_DEFAULT,
            trace: None,
        };
        let scenario = |seed: u64| base(seed).with_bug(bug);
        let caught = plan.seeds.iter().find_map(|&seed| {
            run_one(&plan, seed, &scenario)
                .failure
                .map(|failure| (seed, failure))
        });
        match caught {
            Some((seed, failure)) => {
                // A safety checker must catch it: a panic or a stalled
                // cluster would not show that the checkers can fail.
                assert!(
                    failure.contains(" violated: ") && !failure.starts_with("liveness"),
                    "{bug:?} at seed {seed} was not caught by a safety checker: {failure}"
                );
                eprintln!("{bug:?} caught at seed {seed}: {failure}");
            }
            None => unnoticed.push(bug),
        }
    }
    assert!(
        unnoticed.is_empty(),
        "unnoticed within {BUG_SEARCH_SEEDS_MAX} seeds: {unnoticed:?}"
    );
}
