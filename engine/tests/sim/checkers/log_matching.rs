//! Log Matching (Raft §5.3, Figure 3): if two logs contain an entry with the
//! same index and term, the logs are identical in all entries up through
//! that index. Checked over the whole run, not just the current logs: every
//! entry any node ever writes is recorded by (index, term) with the chain
//! hash of its prefix, and a second write of the same (index, term) with a
//! different prefix is a violation (a leader creates at most one entry per
//! index in its term, so this holds across truncations and restarts too).

use std::collections::HashMap;

use barge::core::{LogIndex, NodeId, Term};

use super::{Checked, Violation};

#[derive(Debug, Default)]
pub struct LogMatching {
    /// Lookups only, never iterated, so the hash map's random order cannot
    /// leak into the run.
    chains: HashMap<(LogIndex, Term), (u64, NodeId)>,
}

impl LogMatching {
    pub fn on_write(&mut self, node: NodeId, index: LogIndex, term: Term, chain: u64) -> Checked {
        match self.chains.get(&(index, term)) {
            Some(&(seen, _)) if seen == chain => Ok(()),
            Some(&(_, first)) => Err(Violation::new(
                "log matching",
                format!(
                    "{node:?} wrote entry {index:?} of {term:?} with a prefix different from \
                     the one {first:?} wrote at the same index and term"
                ),
            )),
            None => {
                self.chains.insert((index, term), (chain, node));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_index_and_term_with_another_prefix_is_a_violation() {
        let mut checker = LogMatching::default();
        assert!(checker
            .on_write(NodeId(1), LogIndex(1), Term(1), 10)
            .is_ok());
        assert!(checker
            .on_write(NodeId(2), LogIndex(1), Term(1), 10)
            .is_ok());
        assert!(checker
            .on_write(NodeId(3), LogIndex(1), Term(2), 11)
            .is_ok());
        assert!(checker
            .on_write(NodeId(3), LogIndex(1), Term(1), 12)
            .is_err());
    }
}
