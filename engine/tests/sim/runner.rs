//! Runs many seeds, each in its own simulated cluster, and turns the first
//! failure into a message with the seed and the command that replays it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::cluster::{Cluster, Outcome};
use super::scenario::Scenario;

/// Which seeds a test runs and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub test: &'static str,
    pub seeds: Vec<u64>,
    pub steps: u64,
    /// Simulated-time window whose events are printed, if any.
    pub trace: Option<(u64, u64)>,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(number) => Some(number),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// `BARGE_SIM_TRACE=1` prints every event; `BARGE_SIM_TRACE=<from>..<until>`
/// only those in that window of simulated time (a failing run's storm of
/// messages can be gigabytes of text).
fn trace_window() -> Option<(u64, u64)> {
    let value = std::env::var("BARGE_SIM_TRACE").ok()?;
    let value = value.trim();
    if let Some((from, until)) = value.split_once("..") {
        let parse = |text: &str| -> u64 {
            text.parse()
                .unwrap_or_else(|_| panic!("BARGE_SIM_TRACE={value:?}: want <from>..<until>"))
        };
        return Some((parse(from), parse(until)));
    }
    (value != "0").then_some((0, u64::MAX))
}

impl Plan {
    /// `BARGE_SIM_SEED` picks one seed, else `BARGE_SIM_SEEDS` (or
    /// `seeds_default`) consecutive seeds from `seed_base`;
    /// `BARGE_SIM_STEPS` (or `steps_default`) steps each.
    pub fn from_env(
        test: &'static str,
        seed_base: u64,
        seeds_default: u64,
        steps_default: u64,
    ) -> Self {
        let seeds = match env_u64("BARGE_SIM_SEED") {
            Some(seed) => vec![seed],
            None => {
                let count = env_u64("BARGE_SIM_SEEDS").unwrap_or(seeds_default);
                (seed_base..seed_base + count).collect()
            }
        };
        Self {
            test,
            seeds,
            steps: env_u64("BARGE_SIM_STEPS").unwrap_or(steps_default),
            trace: trace_window(),
        }
    }

    pub fn replay_command(&self, seed: u64) -> String {
        format!(
            "BARGE_SIM_SEED={seed} BARGE_SIM_STEPS={} cargo test --release -p barge --test sim -- --exact {}",
            self.steps, self.test
        )
    }
}

/// Runs one seed to its end, turning a panic inside the core into a
/// failure that names the seed.
pub fn run_one(plan: &Plan, seed: u64, scenario: &dyn Fn(u64) -> Scenario) -> Outcome {
    let trace = plan.trace;
    let steps = plan.steps;
    match catch_unwind(AssertUnwindSafe(|| {
        Cluster::new(seed, scenario(seed), trace).run(steps)
    })) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_string())
                })
                .unwrap_or_else(|| "non-string panic".to_string());
            Outcome::failed(format!("panic: {message}"))
        }
    }
}

/// Runs every seed of the plan; panics at the first failure with its seed
/// and replay command, and otherwise prints totals.
pub fn run_seeds(plan: &Plan, scenario: &dyn Fn(u64) -> Scenario) {
    let mut totals = Outcome::default();
    for &seed in &plan.seeds {
        let outcome = run_one(plan, seed, scenario);
        if let Some(failure) = &outcome.failure {
            panic!(
                "simulation {} failed for seed {seed}: {failure}\n  replay: {}",
                plan.test,
                plan.replay_command(seed)
            );
        }
        totals.add(&outcome);
    }
    eprintln!(
        "{}: {} seeds x {} steps: {}",
        plan.test,
        plan.seeds.len(),
        plan.steps,
        totals.summary()
    );
}
