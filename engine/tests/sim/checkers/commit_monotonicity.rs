//! Commit monotonicity: within one incarnation of a node (between restarts,
//! since the commit index is volatile state, Raft Figure 2) the commit and
//! applied indices never decrease and `applied <= commit <= last index`;
//! across the whole cluster and the whole run, an entry once committed
//! stays committed with the same content: the committed prefix only grows.

use std::collections::BTreeMap;

use barge::core::{LogIndex, NodeId};

use super::{Checked, LogView, Violation};

#[derive(Debug, Default)]
pub struct CommitMonotonicity {
    /// Per node: (incarnation, commit, applied) last seen.
    last: BTreeMap<NodeId, (u64, LogIndex, LogIndex)>,
    /// Commit points seen anywhere: index -> (prefix chain, who committed).
    committed: BTreeMap<LogIndex, (u64, NodeId)>,
}

impl CommitMonotonicity {
    pub fn on_pointers(
        &mut self,
        node: NodeId,
        incarnation: u64,
        commit: LogIndex,
        applied: LogIndex,
        log: &dyn LogView,
    ) -> Checked {
        let property = "commit monotonicity";
        if let Some(&(seen_incarnation, seen_commit, seen_applied)) = self.last.get(&node) {
            if seen_incarnation == incarnation && (commit < seen_commit || applied < seen_applied) {
                return Err(Violation::new(
                    property,
                    format!(
                        "{node:?} went back from commit {seen_commit:?} applied {seen_applied:?} \
                         to commit {commit:?} applied {applied:?} without restarting"
                    ),
                ));
            }
        }
        if applied > commit || commit > log.last_index() {
            return Err(Violation::new(
                property,
                format!(
                    "{node:?} breaks applied <= commit <= last index: applied {applied:?}, \
                     commit {commit:?}, last {:?}",
                    log.last_index()
                ),
            ));
        }
        let first_sight = self.last.get(&node).map(|&(_, seen, _)| seen) != Some(commit);
        self.last.insert(node, (incarnation, commit, applied));
        if !first_sight || commit == LogIndex(0) {
            return Ok(());
        }
        // The node's log must agree with the latest commit point at or below
        // its own (the chain hash covers the whole prefix below it).
        if let Some((&point, &(chain, by))) = self.committed.range(..=commit).next_back() {
            if let Some(own) = log.chain_at(point) {
                if own != chain {
                    return Err(Violation::new(
                        property,
                        format!(
                            "{node:?} committed up to {commit:?} but its entry {point:?} differs \
                             from the one {by:?} had committed there"
                        ),
                    ));
                }
            }
        }
        if let Some(chain) = log.chain_at(commit) {
            self.committed.entry(commit).or_insert((chain, node));
        }
        Ok(())
    }

    /// The highest commit point seen anywhere so far, with its chain hash.
    pub fn highest_committed(&self) -> Option<(LogIndex, u64)> {
        self.committed
            .iter()
            .next_back()
            .map(|(&index, &(chain, _))| (index, chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::checkers::tests_support::VecLog;

    #[test]
    fn going_back_or_rewriting_a_commit_is_a_violation() {
        let mut checker = CommitMonotonicity::default();
        let log = VecLog::new(&[1, 2, 3]);
        assert!(checker
            .on_pointers(NodeId(1), 0, LogIndex(2), LogIndex(1), &log)
            .is_ok());
        assert!(checker
            .on_pointers(NodeId(1), 0, LogIndex(1), LogIndex(1), &log)
            .is_err());
        // After a restart the volatile commit index may start lower.
        assert!(checker
            .on_pointers(NodeId(1), 1, LogIndex(1), LogIndex(0), &log)
            .is_ok());
        assert!(checker
            .on_pointers(NodeId(1), 1, LogIndex(3), LogIndex(4), &log)
            .is_err());
        let other = VecLog::new(&[1, 9, 9]);
        assert!(checker
            .on_pointers(NodeId(2), 0, LogIndex(3), LogIndex(0), &other)
            .is_err());
    }
}
