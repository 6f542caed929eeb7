//! The rkyv-archived header of a message: every field but the bulk bytes.
//!
//! These types mirror [`crate::core::Message`] with plain integers so the
//! archive layout does not depend on the core's newtypes. Conversions live
//! here and in nowhere else; the format is fixed by the workspace's rkyv
//! features (`unaligned`, `little_endian`, `pointer_width_32`), which must
//! never change without bumping [`super::WIRE_VERSION`].

use rkyv::{Archive, Deserialize, Serialize};

/// The archived root of every frame.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) term: u64,
    pub(super) body: BodyHeader,
}

/// One batch of an append: where its bytes sit in the frame's payload area
/// and which entries of them are valid.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq, Clone, Copy)]
pub(super) struct BatchHeader {
    pub(super) first: u64,
    pub(super) term: u64,
    pub(super) len: u32,
    pub(super) bytes_len: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub(super) enum BodyHeader {
    PreVote {
        last_term: u64,
        last_index: u64,
    },
    PreVoteResponse {
        granted: bool,
    },
    Vote {
        last_term: u64,
        last_index: u64,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    Append {
        prev_term: u64,
        prev_index: u64,
        commit: u64,
        batches: Vec<BatchHeader>,
    },
    AppendSuccess {
        match_index: u64,
        /// The follower's log generation (since [`super::WIRE_VERSION`] 2).
        generation: u64,
    },
    AppendReject {
        rejected: u64,
        hint_term: u64,
        hint_index: u64,
        /// The follower's log generation (since [`super::WIRE_VERSION`] 2).
        generation: u64,
    },
    Heartbeat {
        commit: u64,
        context: u64,
    },
    HeartbeatResponse {
        context: u64,
    },
    ReadIndex {
        context: u64,
    },
    ReadIndexResponse {
        context: u64,
        index: Option<u64>,
    },
    TimeoutNow,
    InstallSnapshot {
        last_term: u64,
        last_index: u64,
        /// [`crate::core::Membership::encode`] bytes: one codec for
        /// memberships, whether in a log entry or in a snapshot header.
        membership: Vec<u8>,
        total_bytes: u64,
        offset: u64,
        data_len: u32,
    },
    InstallSnapshotResponse {
        last_term: u64,
        last_index: u64,
        received_bytes: u64,
        installed: bool,
        rejected: bool,
    },
}
