//! Messages between cores. Plain data: the wire module encodes them; the
//! core validates what it receives (see [`super::Raft::handle_message`]).

use bytes::Bytes;

use super::batch::Batch;
use super::membership::Membership;
use super::types::{LogGeneration, LogId, LogIndex, NodeId, Term};

/// One message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for pre-votes: the term it would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message (Figure 2, thesis chapters 3, 4, 6, 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me at `term`?" without changing anyone's term
    /// (thesis §9.6).
    PreVote {
        /// The candidate's last log id.
        last_log: LogId,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// RequestVote (§5.2).
    Vote {
        /// The candidate's last log id.
        last_log: LogId,
        /// Set by a leadership-transfer target: voters skip the leader
        /// stickiness check (thesis §3.10, §4.2.3).
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries carrying batches (§5.3). Batches are contiguous and
    /// start right after `prev`.
    Append {
        /// The entry just before the first batch.
        prev: LogId,
        /// The entries, possibly none (a probe).
        batches: Vec<Batch>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse(AppendResult),
    /// Leader heartbeat, also confirming leadership for ReadIndex (thesis §6.4).
    Heartbeat {
        /// The leader's commit index, capped at what the follower matches.
        commit: LogIndex,
        /// Read round this heartbeat belongs to (0 when none).
        context: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The heartbeat's context, echoed.
        context: u64,
    },
    /// A follower asks the leader for a read index on behalf of its reads
    /// (thesis §6.4, "reads from followers").
    ReadIndex {
        /// Opaque to the leader, echoed.
        context: u64,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The follower's context.
        context: u64,
        /// The read index, or `None` if the leader could not confirm.
        index: Option<LogIndex>,
    },
    /// Leadership transfer: start an election now (thesis §3.10).
    TimeoutNow,
    /// One chunk of a snapshot (§7).
    InstallSnapshot(SnapshotChunk),
    /// Answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The snapshot this answers for.
        last: LogId,
        /// Bytes received so far, contiguous from 0 (the next offset wanted).
        received_bytes: u64,
        /// Set once the follower has installed the snapshot durably.
        installed: bool,
        /// Set when the follower refuses (e.g. a chunk out of order).
        rejected: bool,
    },
}

/// How an append went on the follower.
///
/// Both answers carry the follower's [`LogGeneration`]: a leader compares
/// it with the highest it has seen from that follower. Higher means the
/// follower's log went back (it lost entries to damage) since the leader
/// last heard, so what it acknowledged before no longer counts; lower means
/// the answer was sent before such a loss and is stale, however the network
/// reordered it; equal means nothing was lost in between, so a rejection at
/// or below the match point is merely reordered behind a later
/// acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`, durably.
    Success {
        /// The highest index known to match.
        match_index: LogIndex,
        /// The follower's log generation when it answered.
        generation: LogGeneration,
    },
    /// The follower's log did not contain `prev` (or, in answer to a
    /// heartbeat, `rejected` is the heartbeat's commit index and the
    /// follower lacks it or is still refetching lost entries).
    Reject {
        /// The `prev.index` that was refused.
        rejected: LogIndex,
        /// Where the leader should retry: the follower's last log id if it
        /// is shorter, else the first index of the conflicting term and that
        /// term (fast backtracking, §5.3 end, thesis §3.5).
        hint: LogId,
        /// The follower's log generation when it answered.
        generation: LogGeneration,
    },
}

/// Metadata of a snapshot: what it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last entry the snapshot includes.
    pub last: LogId,
    /// The configuration as of `last`.
    pub membership: Membership,
}

/// A piece of a snapshot in transit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// The snapshot's total size.
    pub total_bytes: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Bytes,
}
