//! Errors of the embedding API: concrete enums, never strings to parse.

use std::path::PathBuf;

use crate::core::{self, LogIndex, NodeId};

/// Why a request to a running node failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Only the leader serves this; `leader_hint` is who might be.
    #[error("not the leader; leader hint {leader_hint:?}")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// Too much uncommitted data or too many pending requests; retry later.
    #[error("overloaded; retry later")]
    Overloaded,
    /// A proposal accepted at `index` was overwritten by a new leader's log
    /// (it never committed) or its fate is unknown (a snapshot covered it).
    /// It is safe to retry if the command is idempotent.
    #[error(
        "proposal at index {index} was dropped by a leader change; leader hint {leader_hint:?}"
    )]
    ProposalDropped {
        /// Index the proposal had been given.
        index: LogIndex,
        /// Who might be leader now.
        leader_hint: Option<NodeId>,
    },
    /// The request itself is invalid (empty or oversized proposal, bad
    /// membership, bad transfer target).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A membership change is already in progress.
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// A leadership transfer did not complete within two election timeouts.
    #[error("leadership transfer to {target} timed out")]
    TransferTimedOut {
        /// The intended leader.
        target: NodeId,
    },
    /// The log failed (a write or fsync error, or corruption): the node has
    /// stopped accepting writes and must be restarted after the disk is
    /// looked at. Nothing unsynced was reported durable.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The node is shutting down or has stopped.
    #[error("node stopped")]
    Stopped,
}

impl NodeError {
    /// Whether the request may have taken effect although it failed, which
    /// is what a client must know before it retries a write that is not
    /// idempotent.
    ///
    /// `false`: the node refused the request before appending anything
    /// ([`NodeError::NotLeader`], [`NodeError::Overloaded`],
    /// [`NodeError::Invalid`], [`NodeError::ChangeInProgress`]); retrying
    /// (at [`NodeError::leader_hint`]) cannot apply it twice. `true`: it
    /// failed after it may have been appended or at a point the caller cannot
    /// know ([`NodeError::ProposalDropped`], [`NodeError::Storage`],
    /// [`NodeError::Stopped`], and [`NodeError::TransferTimedOut`], whose
    /// transfer may still complete): find out before retrying.
    ///
    /// ```
    /// use barge::core::NodeId;
    /// use barge::node::NodeError;
    ///
    /// let refused = NodeError::NotLeader { leader_hint: Some(NodeId(2)) };
    /// assert!(!refused.may_have_applied());
    /// assert_eq!(refused.leader_hint(), Some(NodeId(2)));
    /// assert!(NodeError::Stopped.may_have_applied());
    /// ```
    #[must_use]
    pub fn may_have_applied(&self) -> bool {
        match self {
            NodeError::NotLeader { .. }
            | NodeError::Overloaded
            | NodeError::Invalid(_)
            | NodeError::ChangeInProgress => false,
            NodeError::ProposalDropped { .. }
            | NodeError::TransferTimedOut { .. }
            | NodeError::Storage(_)
            | NodeError::Stopped => true,
        }
    }

    /// The node that may be leader now, when the error names one
    /// ([`NodeError::NotLeader`] and [`NodeError::ProposalDropped`]).
    #[must_use]
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            NodeError::NotLeader { leader_hint }
            | NodeError::ProposalDropped { leader_hint, .. } => *leader_hint,
            _ => None,
        }
    }
}

impl From<core::ProposeError> for NodeError {
    fn from(error: core::ProposeError) -> NodeError {
        match error {
            core::ProposeError::NotLeader { leader_hint } => NodeError::NotLeader { leader_hint },
            core::ProposeError::Overloaded | core::ProposeError::TransferInProgress => {
                NodeError::Overloaded
            }
            other @ (core::ProposeError::TooLarge { .. } | core::ProposeError::Empty) => {
                NodeError::Invalid(other.to_string())
            }
        }
    }
}

impl From<core::RequestError> for NodeError {
    fn from(error: core::RequestError) -> NodeError {
        match error {
            core::RequestError::NotLeader { leader_hint } => NodeError::NotLeader { leader_hint },
            core::RequestError::Overloaded | core::RequestError::ProposalOverloaded => {
                NodeError::Overloaded
            }
            core::RequestError::ChangeInProgress => NodeError::ChangeInProgress,
            other @ (core::RequestError::Membership(_)
            | core::RequestError::BadTransferTarget(_)) => NodeError::Invalid(other.to_string()),
        }
    }
}

/// Why [`super::Node::start`] failed. Each variant names what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] super::ConfigError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The data directory is empty but the node was started as an existing
    /// member: it may have lost state it acknowledged, so it must not vote.
    #[error(
        "data directory {0} holds no node state but the node was started as an existing member; \
         if its disk was lost, remove the node from the cluster and add it back with StartMode::Join"
    )]
    FreshDataDirectory(PathBuf),
    /// The data directory belongs to another node or cluster.
    #[error("data directory {path} belongs to {found}, not {expected}")]
    WrongDataDirectory {
        /// The directory.
        path: PathBuf,
        /// What its identity file says.
        found: String,
        /// What the configuration says.
        expected: String,
    },
    /// A file of the data directory is corrupt (checksum or format).
    #[error("{path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The write-ahead log could not be opened, or reported damaged records.
    #[error("write-ahead log: {0}")]
    Log(String),
    /// The recovered state is inconsistent.
    #[error("recovered state rejected by the raft core: {0}")]
    Recovery(#[from] core::RecoveryError),
    /// The state machine refused to restore its snapshot.
    #[error("state machine restore failed: {0}")]
    Restore(String),
    /// The transport could not start (bind, TLS).
    #[error("transport: {0}")]
    Transport(String),
    /// A thread or runtime could not be created.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_of_the_core_is_definitely_not_applied() {
        let hint = Some(NodeId(3));
        let proposals = [
            core::ProposeError::NotLeader { leader_hint: hint },
            core::ProposeError::Overloaded,
            core::ProposeError::TooLarge {
                entries: 1,
                bytes: 1 << 30,
            },
            core::ProposeError::Empty,
            core::ProposeError::TransferInProgress,
        ];
        let requests = [
            core::RequestError::NotLeader { leader_hint: hint },
            core::RequestError::Overloaded,
            core::RequestError::ChangeInProgress,
            core::RequestError::BadTransferTarget(NodeId(9)),
            core::RequestError::ProposalOverloaded,
        ];
        let refusals = proposals.into_iter().map(NodeError::from);
        for error in refusals.chain(requests.into_iter().map(NodeError::from)) {
            assert!(!error.may_have_applied(), "{error}");
        }
        let not_leader = NodeError::from(core::RequestError::NotLeader { leader_hint: hint });
        assert_eq!(not_leader.leader_hint(), hint);
    }

    #[test]
    fn failures_after_submission_may_have_applied() {
        let dropped = NodeError::ProposalDropped {
            index: LogIndex(7),
            leader_hint: Some(NodeId(2)),
        };
        assert!(dropped.may_have_applied());
        assert_eq!(dropped.leader_hint(), Some(NodeId(2)));
        for error in [
            NodeError::Storage("fsync: EIO".to_owned()),
            NodeError::Stopped,
            NodeError::TransferTimedOut { target: NodeId(2) },
        ] {
            assert!(error.may_have_applied(), "{error}");
            assert_eq!(error.leader_hint(), None);
        }
    }
}
