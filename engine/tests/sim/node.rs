//! One simulated node: a core, its disk, the log image the core was told is
//! written, and the state machine. Crashing drops the core and the volatile
//! parts; restarting builds a new core from the durable image alone.

use std::collections::BTreeMap;

use barge::core::{
    Config, LogIndex, Membership, NodeId, Persisted, ProposalTicket, Raft, ReadId, SnapshotMeta,
};

use super::disk::Disk;
use super::log::{LogImage, GENESIS};
use super::rng::{mix, Rng};
use super::state_machine::StateMachine;

/// A proposal this node accepted and a client waits on.
#[derive(Debug, Clone)]
pub struct PendingProposal {
    pub ticket: ProposalTicket,
    /// `(client proposal id, payload hash)` of each entry, in order.
    pub entries: Vec<(u64, u64)>,
}

#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub raft: Option<Raft>,
    /// Bumped at each restart; events addressed to an older incarnation
    /// (ticks, disk completions) are stale and ignored.
    pub incarnation: u64,
    pub disk: Disk,
    pub written: LogImage,
    pub machine: StateMachine,
    /// Simulated time units per tick: differs per node (clock skew).
    pub tick_period_units: u64,
    pub proposals: Vec<PendingProposal>,
    /// Core read id -> simulator read id.
    pub reads: BTreeMap<ReadId, u64>,
    pub snapshots_created: u64,
    pub snapshots_installed: u64,
}

impl SimNode {
    pub fn new(id: NodeId, disk_latency_units_max: u64, tick_period_units: u64) -> Self {
        let empty = LogImage::new(SnapshotMeta::default(), GENESIS);
        Self {
            id,
            raft: None,
            incarnation: 0,
            disk: Disk::new(empty.clone(), disk_latency_units_max),
            written: empty,
            machine: StateMachine::default(),
            tick_period_units,
            proposals: Vec::new(),
            reads: BTreeMap::new(),
            snapshots_created: 0,
            snapshots_installed: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Builds a core from the durable image (first start or restart).
    pub fn start(
        &mut self,
        config: &Config,
        initial: &Membership,
        seed: u64,
    ) -> Result<(), String> {
        self.incarnation += 1;
        let snapshot = self
            .disk
            .snapshot
            .as_ref()
            .map(|(snapshot, _)| snapshot.clone());
        let persisted = Persisted {
            hard_state: self.disk.hard_state,
            snapshot: snapshot.clone(),
            batches: self.disk.log.batches_after_snapshot(),
            initial_membership: initial.clone(),
            lost: self.disk.repair_floor,
            log_generation: self.disk.log_generation,
        };
        self.machine = match &snapshot {
            Some(snapshot) => StateMachine::restore(&snapshot.data).map_err(|error| {
                format!("{:?} cannot restore its own snapshot: {error}", self.id)
            })?,
            None => StateMachine::default(),
        };
        self.written = self.disk.log.clone();
        if let Some((snapshot, chain)) = &self.disk.snapshot {
            self.written.install_snapshot(snapshot.meta.clone(), *chain);
        }
        let core_seed = mix(mix(seed, self.id.0), self.incarnation);
        let raft = Raft::new(self.id, config.clone(), persisted, core_seed)
            .map_err(|error| format!("{:?} cannot restart from its own disk: {error}", self.id))?;
        self.raft = Some(raft);
        Ok(())
    }

    /// Power loss: the core and everything volatile is gone; the disk keeps
    /// its durable image and a random prefix of queued writes.
    pub fn crash(&mut self, rng: &mut Rng) -> Result<(), String> {
        self.raft = None;
        self.proposals.clear();
        self.reads.clear();
        self.disk
            .crash(rng)
            .map_err(|error| format!("{:?} disk cannot replay its queue: {}", self.id, error.0))
    }

    pub fn applied(&self) -> LogIndex {
        self.machine.applied.index
    }
}
