//! Election Safety (Raft §5.2, Figure 3): at most one leader can be elected
//! in a given term.

use std::collections::BTreeMap;

use barge::core::{NodeId, Term};

use super::{Checked, Violation};

#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
    pub elections_won: u64,
}

impl ElectionSafety {
    /// `node` is leader in `term` now. Returns whether this is the first time
    /// the term's leader was seen (a new leader, for leader completeness).
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<bool, Violation> {
        match self.leaders.get(&term) {
            Some(&leader) if leader == node => Ok(false),
            Some(&leader) => Err(Violation::new(
                "election safety",
                format!("two leaders in term {term:?}: {leader:?} and {node:?}"),
            )),
            None => {
                self.leaders.insert(term, node);
                self.elections_won += 1;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_leader_in_a_term_is_a_violation() {
        let mut checker = ElectionSafety::default();
        assert_eq!(checker.on_leader(NodeId(1), Term(3)), Ok(true));
        assert_eq!(checker.on_leader(NodeId(1), Term(3)), Ok(false));
        assert_eq!(checker.on_leader(NodeId(2), Term(4)), Ok(true));
        let checked: Checked = checker.on_leader(NodeId(2), Term(3)).map(drop);
        assert!(checked.is_err());
    }
}
