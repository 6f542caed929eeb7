//! No acknowledged proposal is lost: once a client is told its proposal
//! committed at index i, every state machine that reaches index i applies
//! exactly that proposal there (Raft §8: a committed entry is durable and
//! will be executed). The liveness phase then makes every live node reach
//! the highest acknowledged index, so a lost proposal cannot hide behind a
//! node that never applies it.

use std::collections::BTreeMap;

use barge::core::{LogIndex, NodeId};

use super::{Checked, Violation};

#[derive(Debug, Default)]
pub struct NoLostAcknowledgedProposal {
    /// index -> (payload hash, client proposal id).
    acked: BTreeMap<LogIndex, (u64, u64)>,
    /// index -> payload hash first applied there.
    applied: BTreeMap<LogIndex, u64>,
    pub acknowledged: u64,
}

impl NoLostAcknowledgedProposal {
    /// A client was told proposal `proposal` (payload hash `payload`)
    /// committed at `index`.
    pub fn on_ack(
        &mut self,
        node: NodeId,
        proposal: u64,
        index: LogIndex,
        payload: u64,
    ) -> Checked {
        self.acknowledged += 1;
        let property = "no acknowledged proposal lost";
        if let Some(&(_, other)) = self.acked.get(&index) {
            if other != proposal {
                return Err(Violation::new(
                    property,
                    format!(
                        "{node:?} acknowledged proposal {proposal} at {index:?}, where proposal \
                         {other} was already acknowledged"
                    ),
                ));
            }
        }
        if let Some(&applied) = self.applied.get(&index) {
            if applied != payload {
                return Err(Violation::new(
                    property,
                    format!(
                        "{node:?} acknowledged proposal {proposal} at {index:?}, but another \
                         entry was applied there"
                    ),
                ));
            }
        }
        self.acked.insert(index, (payload, proposal));
        Ok(())
    }

    pub fn on_apply(&mut self, node: NodeId, index: LogIndex, payload: u64) -> Checked {
        self.applied.entry(index).or_insert(payload);
        match self.acked.get(&index) {
            Some(&(acked, proposal)) if acked != payload => Err(Violation::new(
                "no acknowledged proposal lost",
                format!(
                    "{node:?} applied another entry at {index:?} than acknowledged proposal \
                     {proposal}"
                ),
            )),
            _ => Ok(()),
        }
    }

    pub fn highest_acked(&self) -> LogIndex {
        self.acked
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_something_else_at_an_acked_index_is_a_violation() {
        let mut checker = NoLostAcknowledgedProposal::default();
        assert!(checker.on_apply(NodeId(1), LogIndex(1), 7).is_ok());
        assert!(checker.on_ack(NodeId(1), 100, LogIndex(1), 7).is_ok());
        assert!(checker.on_ack(NodeId(1), 101, LogIndex(2), 8).is_ok());
        assert!(checker.on_apply(NodeId(2), LogIndex(2), 9).is_err());
        assert!(checker.on_ack(NodeId(2), 102, LogIndex(1), 7).is_err());
        assert_eq!(checker.highest_acked(), LogIndex(2));
    }
}
