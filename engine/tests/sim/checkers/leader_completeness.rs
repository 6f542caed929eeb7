//! Leader Completeness (Raft §5.4, Figure 3): if a log entry is committed in
//! a given term, that entry will be present in the logs of the leaders for
//! all higher-numbered terms. Checked the moment a node is first seen as
//! leader of a term: its log must hold the highest entry committed anywhere
//! so far, with the same prefix (chain hash).

use barge::core::{NodeId, Term};

use super::commit_monotonicity::CommitMonotonicity;
use super::{Checked, LogView, Violation};

#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    pub leaders_checked: u64,
}

impl LeaderCompleteness {
    pub fn on_new_leader(
        &mut self,
        node: NodeId,
        term: Term,
        log: &dyn LogView,
        commits: &CommitMonotonicity,
    ) -> Checked {
        self.leaders_checked += 1;
        let Some((index, chain)) = commits.highest_committed() else {
            return Ok(());
        };
        if log.last_index() < index {
            return Err(Violation::new(
                "leader completeness",
                format!(
                    "{node:?} became leader of {term:?} with last index {:?}, below the \
                     committed index {index:?}",
                    log.last_index()
                ),
            ));
        }
        match log.chain_at(index) {
            Some(own) if own != chain => Err(Violation::new(
                "leader completeness",
                format!(
                    "{node:?} became leader of {term:?} without the committed entry {index:?} \
                     (its entry there has another prefix)"
                ),
            )),
            // Compacted below its snapshot: the snapshot holds only applied,
            // hence committed, entries, checked by state machine safety.
            _ => Ok(()),
        }
    }
}
