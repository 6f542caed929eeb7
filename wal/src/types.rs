//! Plain data types the log stores and reports.

use bytes::Bytes;

/// Index and term of one entry.
///
/// The log has no Raft vocabulary of its own: the engine converts its
/// `LogId` newtype to and from this pair at the boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Term the entry was created in.
    pub term: u64,
    /// Position of the entry in the log (1-based in Raft, but the log accepts
    /// any starting index).
    pub index: u64,
}

/// The small record Raft must make durable before it votes or acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<u64>,
    /// Commit index known when the state was saved; a hint only (Raft can
    /// always relearn it), so the engine may save it lazily.
    pub commit: u64,
}

/// One stored batch as returned by [`crate::Wal::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// Index of the first entry in the payload.
    pub first: u64,
    /// Effective last index: the last entry of the payload that is still part
    /// of the log. After `truncate_suffix(i)` fell inside this batch this is
    /// `i - 1`, smaller than the last index the payload encodes; the reader
    /// must skip the payload's entries above it.
    pub last: u64,
    /// Term of every entry in the batch.
    pub term: u64,
    /// The opaque bytes exactly as appended.
    pub payload: Bytes,
}

/// "Every submission with a sequence number up to `sequence` is durable."
///
/// Sequence numbers are handed out by [`crate::Wal::append`],
/// [`crate::Wal::save_hard_state`] and [`crate::Wal::truncate_suffix`] in
/// call order, so one number covers entries, hard state and truncations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Durable {
    /// Highest durable submission sequence number (0: nothing yet).
    pub sequence: u64,
    /// Last entry of the log as of that submission (`None`: log empty).
    /// Monotone in `sequence`; the index can move backwards only across a
    /// `truncate_suffix`, and then the term never does.
    pub last: Option<EntryId>,
}

/// What the log thread reports on the completion channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Durability advanced.
    Durable(Durable),
    /// A write or sync failed: nothing submitted after the last `Durable`
    /// will ever be reported durable. The string names the original error.
    Poisoned(String),
}
