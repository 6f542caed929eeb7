//! State Machine Safety (Raft §5.4.3, Figure 3): if a server has applied a
//! log entry at a given index to its state machine, no other server will
//! ever apply a different log entry for the same index. The chain hash
//! compares the whole applied prefix, not just the one entry.

use barge::core::{LogIndex, NodeId};

use super::{Checked, Violation};

#[derive(Debug, Default)]
pub struct StateMachineSafety {
    /// `applied[i]`: (chain hash of the prefix through index i + 1, first
    /// applier). Dense because every index is applied by someone in order.
    applied: Vec<Option<(u64, NodeId)>>,
}

impl StateMachineSafety {
    pub fn on_apply(&mut self, node: NodeId, index: LogIndex, chain: u64) -> Checked {
        let Some(slot) = index.0.checked_sub(1) else {
            return Err(Violation::new(
                "state machine safety",
                format!("{node:?} applied index 0, which holds no entry"),
            ));
        };
        let slot = usize::try_from(slot).unwrap_or(usize::MAX);
        if slot >= self.applied.len() {
            // Bounded by the number of entries a run creates; an absurd index
            // from a broken core fails here instead of allocating.
            if slot > 50_000_000 {
                return Err(Violation::new(
                    "state machine safety",
                    format!("{node:?} applied implausible index {index:?}"),
                ));
            }
            self.applied.resize(slot + 1, None);
        }
        match self.applied[slot] {
            Some((seen, _)) if seen == chain => Ok(()),
            Some((_, first)) => Err(Violation::new(
                "state machine safety",
                format!("{node:?} applied a different entry at {index:?} than {first:?} did"),
            )),
            None => {
                self.applied[slot] = Some((chain, node));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_entries_at_one_index_is_a_violation() {
        let mut checker = StateMachineSafety::default();
        assert!(checker.on_apply(NodeId(1), LogIndex(1), 5).is_ok());
        assert!(checker.on_apply(NodeId(2), LogIndex(1), 5).is_ok());
        assert!(checker.on_apply(NodeId(3), LogIndex(1), 6).is_err());
        assert!(checker.on_apply(NodeId(3), LogIndex(0), 6).is_err());
    }
}
