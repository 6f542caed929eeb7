//! What a seed simulates: cluster size, which faults, and the core's
//! configuration with small bounds (so snapshots, back-pressure, chunked
//! transfers and window limits all happen within a short run). Timers and
//! bounds are drawn from the seed, so seeds explore configurations too.

use barge::core::{Config, InjectedBug};

use super::network::NetworkConfig;
use super::rng::{mix, Rng};

/// Simulated time units per tick at nominal clock speed.
pub const TICK_UNITS: u64 = 10;

#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes that exist (each runs a core from the start).
    pub slots: usize,
    /// The first `initial_voters` slots form the initial configuration.
    pub initial_voters: usize,
    pub config: Config,
    pub network: NetworkConfig,
    /// Largest clock skew, in percent of the nominal tick period.
    pub tick_skew_percent_max: u64,
    pub membership_changes: bool,
    pub crashes: bool,
    pub disk_latency_units_max: u64,
    pub snapshot_filler_bytes: u64,
    /// Ticks between two acts of the nemesis, drawn in this range.
    pub fault_interval_ticks: (u64, u64),
    /// Chance that a crash fault takes the whole cluster down at once.
    pub crash_all_per_million: u32,
    /// Chance that the nemesis's next act is a membership change (on top
    /// of its share of the ordinary draw), when changes are on.
    pub membership_change_per_million: u32,
    /// Chance that a single-node crash also damages the node's durable log
    /// suffix (only in fixed-membership scenarios: see `Fault::Crash`).
    pub damage_per_million: u32,
}

impl Scenario {
    fn base(seed: u64, slots: usize) -> Self {
        let mut rng = Rng::new(mix(seed, 0x5CE7_A210));
        let election_min = rng.range(8, 14);
        let config = Config {
            election_timeout_ticks_min: election_min,
            election_timeout_ticks_max: election_min + rng.range(4, 12),
            heartbeat_interval_ticks: rng.range(1, 3),
            pre_vote: rng.range(0, 9) != 0,
            check_quorum: rng.range(0, 9) != 0,
            lease_read: false,
            clock_drift_ticks: 2,
            inflight_messages_max: rng.range(2, 64) as usize,
            inflight_bytes_max: rng.range(4 << 10, 1 << 20),
            uncommitted_bytes_max: rng.range(8 << 10, 256 << 10),
            append_bytes_max: rng.range(512, 64 << 10),
            batch_entries_max: 64,
            batch_bytes_max: 64 << 10,
            snapshot_log_entries_threshold: rng.range(16, 400),
            snapshot_log_bytes_threshold: rng.range(16 << 10, 256 << 10),
            snapshot_chunk_bytes: rng.range(64, 1024),
            snapshot_bytes_max: 1 << 20,
            snapshot_chunks_inflight_max: rng.range(1, 4),
            reads_pending_max: 64,
            withheld_messages_max: 1024,
            testing_bug: None,
        };
        Self {
            slots,
            initial_voters: slots,
            config,
            network: NetworkConfig::faulty(&mut rng),
            tick_skew_percent_max: 30,
            membership_changes: false,
            crashes: true,
            disk_latency_units_max: rng.range(1, 30),
            snapshot_filler_bytes: rng.range(0, 2048),
            fault_interval_ticks: (5, 40),
            crash_all_per_million: 100_000,
            membership_change_per_million: 0,
            damage_per_million: 200_000,
        }
    }

    pub fn three_nodes(seed: u64) -> Self {
        Self::base(seed, 3)
    }

    pub fn five_nodes(seed: u64) -> Self {
        let mut scenario = Self::base(seed, 5);
        scenario.membership_changes = seed % 2 == 0;
        if scenario.membership_changes {
            scenario.damage_per_million = 0;
        }
        scenario
    }

    /// Five nodes, three voting at first: the nemesis adds, removes and
    /// swaps voters and learners (single-server and joint changes).
    pub fn membership_changes(seed: u64) -> Self {
        let mut scenario = Self::base(seed, 5);
        scenario.initial_voters = 3;
        scenario.membership_changes = true;
        scenario.membership_change_per_million = 300_000;
        scenario.damage_per_million = 0;
        scenario
    }

    /// Lease reads on, with clock skew kept inside the configured drift
    /// bound (the lease's safety assumption, thesis §6.4.1).
    pub fn lease_reads(seed: u64) -> Self {
        let mut scenario = Self::base(seed, if seed % 2 == 0 { 3 } else { 5 });
        scenario.config.lease_read = true;
        scenario.config.check_quorum = true;
        scenario.config.clock_drift_ticks = 2;
        scenario.tick_skew_percent_max = 5;
        scenario
    }

    /// Three nodes under a fast fault schedule (a fault every 1-8 ticks,
    /// mostly crashes and partitions around the leader), slow disks and
    /// small appends, so that elections overlap with half-replicated
    /// entries: the conditions of Figure 8 (§5.4.2) and of lost unsynced
    /// writes. Used to show the checkers catch injected bugs.
    pub fn hostile(seed: u64) -> Self {
        let mut scenario = Self::base(seed, 3);
        scenario.fault_interval_ticks = (1, 8);
        scenario.disk_latency_units_max = 3 * TICK_UNITS;
        scenario.config.append_bytes_max = 256;
        scenario.config.pre_vote = false;
        scenario.crash_all_per_million = 500_000;
        // Damage has its own scenario below; this one keeps its history.
        scenario.damage_per_million = 0;
        scenario
    }

    /// Three nodes that crash often, most crashes damaging the log: used
    /// to show that the repair floor is what keeps damage safe.
    pub fn damage(seed: u64) -> Self {
        let mut scenario = Self::hostile(seed);
        scenario.damage_per_million = 800_000;
        scenario
    }

    /// The same scenario with a known protocol bug injected into the core.
    pub fn with_bug(mut self, bug: InjectedBug) -> Self {
        self.config.testing_bug = Some(bug);
        self
    }
}
