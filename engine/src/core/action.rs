//! What the core asks its driver to do, and the small types around the
//! driver boundary (errors, tickets, metrics, recovered state).

use std::collections::BTreeSet;

use bytes::Bytes;

use super::batch::{Batch, Entry};
use super::message::{Message, SnapshotMeta};
use super::types::{HardState, LogGeneration, LogId, LogIndex, NodeId, ReadId, Term};

/// One output of the core, drained with [`super::Raft::poll_action`].
///
/// Actions come out in the order they must be carried out *within their
/// class*: the log-writing class (`PersistHardState`, `TruncateSuffix`,
/// `AppendBatches`, `CompactLog`, `InstallSnapshot`) must reach the disk in
/// order, each one after the previous. `Send`, `Apply`, `ResolveReads`,
/// `RejectReads` and `RequestSnapshot` may be carried out as soon as they
/// are polled: the core has already waited for whatever durability they
/// depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the hard state (term and vote). Report completion with
    /// [`super::Raft::handle_hard_state_durable`]; the core withholds every
    /// vote and every message of the new term until then.
    PersistHardState(HardState),
    /// Remove every entry with index greater than `after` (a conflicting
    /// suffix, §5.3). Must reach the log before any later `AppendBatches`.
    /// A batch straddling `after` keeps its bytes but has its valid length
    /// lowered. May leave indexes that were durable non-durable: the core
    /// forgets durability beyond `after` itself.
    TruncateSuffix {
        /// Last index kept.
        after: LogIndex,
    },
    /// Append these batches after the current last entry. Report
    /// durability with [`super::Raft::handle_log_durable`] (the last
    /// `LogId` that is durable, in order).
    AppendBatches(Vec<Batch>),
    /// Entries up to `up_to` are covered by a durable snapshot: the log may
    /// discard them (optional, at the driver's pace).
    CompactLog {
        /// Highest index that may be discarded.
        up_to: LogIndex,
    },
    /// Send a message. May be carried out at once, dropped or reordered:
    /// Raft tolerates loss. Whatever it acknowledges is already durable.
    Send {
        /// The receiver.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Apply committed entries `first..=last` to the state machine, in
    /// order, then report [`super::Raft::handle_applied`]. Carry out at
    /// once: these entries are committed and locally durable. Use
    /// [`Action::entries`] to iterate them; `batches` may extend past the
    /// range on either side.
    Apply {
        /// First index to apply.
        first: LogIndex,
        /// Last index to apply.
        last: LogIndex,
        /// Batches covering the range.
        batches: Vec<Batch>,
    },
    /// These reads are linearizable now: the state machine has applied at
    /// least `index`, which was the commit index when they were confirmed.
    ResolveReads {
        /// The reads.
        reads: Vec<ReadId>,
        /// The read index they waited for.
        index: LogIndex,
    },
    /// These reads could not be confirmed (leadership lost or unknown);
    /// retry elsewhere.
    RejectReads {
        /// The reads.
        reads: Vec<ReadId>,
        /// Who might be leader.
        leader_hint: Option<NodeId>,
    },
    /// The log after the last snapshot exceeds its thresholds: take a
    /// snapshot of the state machine and report it with
    /// [`super::Raft::handle_snapshot_created`] at the index the state
    /// machine has applied *when the snapshot is taken*. (This carries no
    /// index on purpose: `Apply` actions polled after it may have moved the
    /// state machine on, and a snapshot labelled with an earlier index than
    /// its contents would have those entries applied twice after a restore.)
    /// Asked once until answered.
    RequestSnapshot,
    /// A leader's snapshot has arrived in full: restore the state machine
    /// from it (after applying every `Apply` polled before this action) and
    /// make it durable together with the log change it implies: if the log
    /// holds `meta.last` (same index and term) keep the entries after it,
    /// otherwise discard the whole log (§7). Then call
    /// [`super::Raft::handle_snapshot_installed`]. Ordered with the
    /// log-writing class: later `AppendBatches` follow `meta.last`.
    InstallSnapshot {
        /// The snapshot to restore and persist.
        snapshot: Snapshot,
        /// The core kept its log after `meta.last` (the log held that entry
        /// with its term) and may have acknowledged it: the driver keeps the
        /// stored log too. `false`: the whole log is superseded.
        keep_suffix: bool,
    },
}

impl Action {
    /// For [`Action::Apply`]: the entries in range, in order; empty for
    /// every other action.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let (first, last, batches): (LogIndex, LogIndex, &[Batch]) = match self {
            Action::Apply {
                first,
                last,
                batches,
            } => (*first, *last, batches),
            _ => (LogIndex(1), LogIndex(0), &[]),
        };
        batches
            .iter()
            .flat_map(|b| b.entries())
            .filter(move |e| e.id.index >= first && e.id.index <= last)
    }
}

/// A snapshot: its metadata and the state machine's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state (opaque to the core).
    pub data: Bytes,
}

/// What a node recovered from its disk, handed to [`super::Raft::new`].
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// Last durable hard state.
    pub hard_state: HardState,
    /// Last durable snapshot; `None` for a node that never had one.
    pub snapshot: Option<Snapshot>,
    /// The durable log batches, in order. Batches entirely covered by the
    /// snapshot are ignored; a batch straddling it is kept.
    pub batches: Vec<Batch>,
    /// The configuration to start from when there is neither snapshot nor
    /// membership entry (a brand-new cluster's initial voters).
    pub initial_membership: super::membership::Membership,
    /// The repair floor: set when the driver cut the log back because its
    /// suffix was damaged, to the last entry id the log held before (the
    /// node may have acknowledged everything up to it). Until the node holds
    /// that again, it votes as if it still had the lost entries and never
    /// campaigns; see [`super::Raft::repair_floor`]. `None` for an intact
    /// log. A floor the recovered log already reaches is ignored.
    pub lost: Option<LogId>,
    /// How many times this node's log went back. The driver increments it
    /// durably *before* it cuts a damaged log (whenever it sets or raises
    /// `lost`) and never lowers it, also after the floor clears: the core
    /// sends it with every answer to an append, and a leader trusts an
    /// answer of an older generation no more than a stale one. Starting
    /// with a lower value than a previous run sent makes leaders ignore this
    /// node's answers until a new leader is elected (liveness, not safety).
    /// 0 for a node whose log never went back.
    pub log_generation: LogGeneration,
}

/// The role a node plays now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are followers.
    Follower,
    /// Runs a pre-vote round (no term change yet).
    PreCandidate,
    /// Runs an election.
    Candidate,
    /// Leads its term.
    Leader,
}

/// What a successful proposal was given: entries `first..=last` of `term`.
///
/// The proposal is committed exactly when [`Action::Apply`] delivers
/// `last` with this `term`. If an `Apply` delivers one of these indexes with
/// another term, or a snapshot is installed beyond them, the proposal was
/// lost (a new leader overwrote it) or its fate is unknown; retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalTicket {
    /// The leader's term.
    pub term: Term,
    /// Index of the first proposed entry.
    pub first: LogIndex,
    /// Index of the last proposed entry.
    pub last: LogIndex,
}

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals.
    #[error("not the leader; try {leader_hint:?}")]
    NotLeader {
        /// Who might be.
        leader_hint: Option<NodeId>,
    },
    /// Uncommitted bytes would exceed `uncommitted_bytes_max`; retry later.
    #[error("too many uncommitted bytes; retry later")]
    Overloaded,
    /// More entries or bytes than one batch may hold; split the call.
    #[error("proposal of {entries} entries / {bytes} bytes exceeds one batch")]
    TooLarge {
        /// Entries proposed.
        entries: usize,
        /// Bytes proposed.
        bytes: usize,
    },
    /// No entries.
    #[error("empty proposal")]
    Empty,
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    TransferInProgress,
}

/// Why a read, membership change or transfer request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Only the leader can do this (or: no leader known, for reads).
    #[error("not the leader; try {leader_hint:?}")]
    NotLeader {
        /// Who might be.
        leader_hint: Option<NodeId>,
    },
    /// Too many pending; retry later.
    #[error("too many pending requests; retry later")]
    Overloaded,
    /// A membership change is still uncommitted.
    #[error("a membership change is in progress")]
    ChangeInProgress,
    /// The requested configuration is invalid.
    #[error(transparent)]
    Membership(#[from] super::membership::MembershipError),
    /// The transfer target is not a voter or is this node.
    #[error("cannot transfer leadership to {0}")]
    BadTransferTarget(NodeId),
    /// Uncommitted bytes would exceed the bound.
    #[error("too many uncommitted bytes; retry later")]
    ProposalOverloaded,
}

/// Why a message from a peer was refused. The core's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not addressed to this node.
    #[error("message for {to} delivered to {me}")]
    WrongReceiver {
        /// Addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// Batches not contiguous after `prev`, or of impossible terms.
    #[error("malformed append from {from}: {reason}")]
    MalformedAppend {
        /// Sender.
        from: NodeId,
        /// What is wrong.
        reason: &'static str,
    },
    /// A snapshot chunk that is inconsistent or too large.
    #[error("malformed snapshot chunk from {from}: {reason}")]
    MalformedSnapshot {
        /// Sender.
        from: NodeId,
        /// What is wrong.
        reason: &'static str,
    },
    /// A membership entry whose payload does not decode.
    #[error("bad membership entry at {index}: {source}")]
    BadMembership {
        /// Index of the entry.
        index: LogIndex,
        /// Decoding error.
        source: super::membership::MembershipError,
    },
}

/// Why [`super::Raft::new`] refused the recovered state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// Log batches are not contiguous.
    #[error("log batches not contiguous: expected {expected}, found {found}")]
    Gap {
        /// Index expected next.
        expected: LogIndex,
        /// Index found.
        found: LogIndex,
    },
    /// A batch's term is lower than the one before it.
    #[error("log term goes backwards at {index}")]
    TermRegression {
        /// Where.
        index: LogIndex,
    },
    /// The starting membership is invalid or a membership entry is corrupt.
    #[error("bad membership at {index}: {source}")]
    Membership {
        /// Index of the entry (0 for the initial membership).
        index: LogIndex,
        /// Why.
        source: super::membership::MembershipError,
    },
    /// The hard state's term is behind the log's last term.
    #[error("hard state term {hard_state} behind last log term {log}")]
    TermBehindLog {
        /// Hard state term.
        hard_state: Term,
        /// Last log term.
        log: Term,
    },
}

/// Counters operators watch (the seed article's list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Elections (not pre-votes) this node started.
    pub elections_started: u64,
    /// Pre-vote rounds this node started.
    pub pre_votes_started: u64,
    /// Times the known leader changed.
    pub leader_changes: u64,
    /// Entries appended but not committed (leader view).
    pub uncommitted_entries: u64,
    /// Bytes appended but not committed (leader view).
    pub uncommitted_bytes: u64,
    /// Proposals refused with `Overloaded`.
    pub proposals_overloaded: u64,
    /// Snapshot transfers started as leader.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Messages refused as malformed.
    pub messages_rejected: u64,
    /// Bytes in flight to each follower (leader only).
    pub inflight_bytes: Vec<(NodeId, u64)>,
    /// Last log id.
    pub last_log: LogId,
    /// Members of the current configuration.
    pub members: BTreeSet<NodeId>,
    /// The repair floor while this node refetches entries it lost to
    /// damage (it neither campaigns nor votes for candidates behind it).
    pub repair_floor: Option<LogId>,
    /// Times a follower answered this node, as leader, with a newer log
    /// generation while holding less than it had acknowledged: its log went
    /// back (damage), its match point was lowered and it is probed again.
    pub followers_went_back: u64,
}
