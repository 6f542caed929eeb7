//! The Raft vocabulary: node ids, terms, log indexes and log ids.
//!
//! Newtypes so that a term is never passed where an index is expected. All
//! are `Copy`, totally ordered and print as plain numbers.

use std::fmt;

/// A node's identity in the cluster. `NodeId(0)` is a valid id; the core
/// never uses a sentinel id (absence is `Option<NodeId>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A Raft term (§5.1). Terms only grow on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty prefix: the first
/// entry ever appended has index 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

/// The identity of a log entry: by the Log Matching Property (§5.3) two logs
/// holding the same `LogId` are identical up to it. Ordered by term first,
/// then index, which is exactly the "more up-to-date" order of §5.4.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position.
    pub index: LogIndex,
}

impl Term {
    /// The next term.
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl LogIndex {
    /// The following index.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }

    /// The preceding index (0 stays 0).
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// `self + count`, saturating.
    #[must_use]
    pub fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0.saturating_add(count))
    }
}

impl LogId {
    /// A log id from its parts.
    #[must_use]
    pub fn new(term: Term, index: LogIndex) -> LogId {
        LogId { term, index }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term.0, self.index.0)
    }
}

/// The state that must survive a crash besides the log (Figure 2,
/// "persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// How many times a node's log went back: lost entries it had
/// acknowledged because the driver cut a damaged suffix (see
/// [`super::Persisted::log_generation`]). A follower sends it with every
/// answer to an append; a leader that sees it grow knows the follower no
/// longer holds what it acknowledged before, and one that sees an older
/// value knows the answer predates such a loss. It only grows, across
/// restarts too: the driver persists the increment before it cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogGeneration(pub u64);

impl LogGeneration {
    /// The generation after one more loss.
    #[must_use]
    pub fn next(self) -> LogGeneration {
        LogGeneration(self.0.saturating_add(1))
    }
}

impl fmt::Display for LogGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// An opaque id the caller gives a read request; the core hands it back when
/// the read may be served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_id_orders_by_term_then_index() {
        let older_longer = LogId::new(Term(1), LogIndex(10));
        let newer_shorter = LogId::new(Term(2), LogIndex(3));
        assert!(newer_shorter > older_longer);
        assert!(LogId::new(Term(2), LogIndex(4)) > newer_shorter);
        assert_eq!(format!("{newer_shorter}"), "2.3");
    }
}
