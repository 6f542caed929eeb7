//! Linearizable reads (Raft §6.4 / thesis §6.4): a read sees every write
//! acknowledged before the read began. The state machine applies entries
//! in index order, so "sees the write at index i" is "served from a state
//! that applied index i or later": the check compares the state a read was
//! served from with the highest index acknowledged to any client before
//! the read was issued.

use std::collections::BTreeMap;

use barge::core::{LogIndex, NodeId};

use super::{Checked, Violation};

#[derive(Debug, Default)]
pub struct LinearizableReads {
    /// read id -> highest acknowledged index when the read began.
    pending: BTreeMap<u64, LogIndex>,
    pub reads_served: u64,
}

impl LinearizableReads {
    pub fn on_read_start(&mut self, read: u64, highest_acked: LogIndex) {
        self.pending.insert(read, highest_acked);
    }

    /// The read failed or was abandoned (no answer, so nothing to check).
    pub fn on_read_abandoned(&mut self, read: u64) {
        self.pending.remove(&read);
    }

    /// `node` answered read `read` from a state machine that had applied
    /// everything through `served`.
    pub fn on_read_served(&mut self, node: NodeId, read: u64, served: LogIndex) -> Checked {
        let Some(required) = self.pending.remove(&read) else {
            return Err(Violation::new(
                "linearizable reads",
                format!("{node:?} answered read {read}, which was not pending"),
            ));
        };
        self.reads_served += 1;
        if served < required {
            return Err(Violation::new(
                "linearizable reads",
                format!(
                    "{node:?} answered read {read} from applied index {served:?}, but index \
                     {required:?} was acknowledged before the read began (stale read)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_below_an_earlier_ack_is_a_violation() {
        let mut checker = LinearizableReads::default();
        checker.on_read_start(1, LogIndex(5));
        checker.on_read_start(2, LogIndex(5));
        assert!(checker.on_read_served(NodeId(1), 1, LogIndex(5)).is_ok());
        assert!(checker.on_read_served(NodeId(1), 2, LogIndex(4)).is_err());
        assert!(checker.on_read_served(NodeId(1), 3, LogIndex(9)).is_err());
    }
}
