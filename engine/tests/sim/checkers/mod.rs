//! Checkers named after the Raft properties they check (Raft paper §5.2-5.4,
//! Figure 3, and the client-facing guarantees of §8). The cluster driver
//! reports what it sees after every input to a node; each checker keeps only
//! what its property needs and returns a [`Violation`] the moment the
//! property breaks, so the failing step is the step that broke it.

pub mod commit_monotonicity;
pub mod election_safety;
pub mod leader_completeness;
pub mod linearizable_reads;
pub mod liveness;
pub mod log_matching;
pub mod no_lost_acknowledged_proposal;
pub mod state_machine_safety;

use std::fmt;

use barge::core::{LogIndex, NodeId, Term};

/// A broken property: which one, and the facts that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(property: &'static str, detail: String) -> Self {
        Self { property, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} violated: {}", self.property, self.detail)
    }
}

pub type Checked = Result<(), Violation>;

/// A node's log as the checkers see it: the chain hash of the prefix ending
/// at an index (see `rng::mix`), for indices the node still holds. The
/// chain at the snapshot's last index stands for the compacted prefix.
pub trait LogView {
    fn chain_at(&self, index: LogIndex) -> Option<u64>;
    fn first_index(&self) -> LogIndex;
    fn last_index(&self) -> LogIndex;
}

/// Every checker, fed by the cluster driver.
#[derive(Debug, Default)]
pub struct Checkers {
    pub election_safety: election_safety::ElectionSafety,
    pub log_matching: log_matching::LogMatching,
    pub leader_completeness: leader_completeness::LeaderCompleteness,
    pub state_machine_safety: state_machine_safety::StateMachineSafety,
    pub commit_monotonicity: commit_monotonicity::CommitMonotonicity,
    pub no_lost_acknowledged_proposal: no_lost_acknowledged_proposal::NoLostAcknowledgedProposal,
    pub linearizable_reads: linearizable_reads::LinearizableReads,
}

impl Checkers {
    /// A node wrote entry `index` of `term` whose prefix hashes to `chain`.
    pub fn on_write(&mut self, node: NodeId, index: LogIndex, term: Term, chain: u64) -> Checked {
        self.log_matching.on_write(node, index, term, chain)
    }

    /// After each input: a node's role, term and log pointers.
    pub fn on_state(
        &mut self,
        node: NodeId,
        incarnation: u64,
        is_leader: bool,
        term: Term,
        commit: LogIndex,
        applied: LogIndex,
        log: &dyn LogView,
    ) -> Checked {
        if is_leader {
            let newly = self.election_safety.on_leader(node, term)?;
            if newly {
                self.leader_completeness.on_new_leader(
                    node,
                    term,
                    log,
                    &self.commit_monotonicity,
                )?;
            }
        }
        self.commit_monotonicity
            .on_pointers(node, incarnation, commit, applied, log)
    }

    /// A node's state machine applied `index` with prefix chain `chain` and
    /// an entry payload hashing to `payload`.
    pub fn on_apply(&mut self, node: NodeId, index: LogIndex, chain: u64, payload: u64) -> Checked {
        self.state_machine_safety.on_apply(node, index, chain)?;
        self.no_lost_acknowledged_proposal
            .on_apply(node, index, payload)
    }
}

#[cfg(test)]
pub mod tests_support {
    use barge::core::LogIndex;

    use super::LogView;

    /// A log given directly as its chain hashes, index 1 first.
    #[derive(Debug)]
    pub struct VecLog(Vec<u64>);

    impl VecLog {
        pub fn new(chains: &[u64]) -> Self {
            Self(chains.to_vec())
        }
    }

    impl LogView for VecLog {
        fn chain_at(&self, index: LogIndex) -> Option<u64> {
            let slot = usize::try_from(index.0.checked_sub(1)?).ok()?;
            self.0.get(slot).copied()
        }
        fn first_index(&self) -> LogIndex {
            LogIndex(1)
        }
        fn last_index(&self) -> LogIndex {
            LogIndex(self.0.len() as u64)
        }
    }
}
