//! The Raft core: the whole protocol as a deterministic state machine with
//! no I/O, no clock and no global randomness (in the style of sans-IO protocol crates
//! and etcd's `RawNode`).
//!
//! # Contract
//!
//! [`Raft`] is driven by a single owner. Inputs go in through `handle_*`
//! methods; outputs come out of [`Raft::poll_action`] as [`Action`]s, each
//! documenting when it may be carried out. Time enters only as
//! [`Raft::handle_tick`]; randomness only from the seed given to
//! [`Raft::new`].
//!
//! Order of calls:
//! 1. Recover [`Persisted`] state from disk and call [`Raft::new`]. If the
//!    log was damaged, cut it back to its intact prefix, and pass the last
//!    entry id it held as [`Persisted::lost`] (persist that floor first, and
//!    drop your copy once [`Raft::repair_floor`] returns `None`) and a
//!    [`Persisted::log_generation`] one higher than before (persist it
//!    first too, and keep it for good): the node then refetches the lost
//!    entries from the leader, which learns of the loss from the higher
//!    generation, and meanwhile neither campaigns nor votes for a candidate
//!    missing them (protocol-aware recovery, after PAR, FAST 2018).
//! 2. Loop: feed whatever happened (ticks, peer messages, proposals, disk
//!    completions, state-machine progress) through `handle_*`, then drain
//!    [`Raft::poll_action`] until `None` and carry the actions out:
//!    - log-writing actions ([`Action::PersistHardState`],
//!      [`Action::TruncateSuffix`], [`Action::AppendBatches`],
//!      [`Action::InstallSnapshot`], [`Action::CompactLog`]) reach the disk
//!      in the order polled, possibly asynchronously and in groups; report
//!      completion with [`Raft::handle_hard_state_durable`] and
//!      [`Raft::handle_log_durable`] ("durable up to this `LogId`");
//!    - [`Action::Send`] goes to the network at once: the core has already
//!      withheld every vote and append acknowledgement until the state it
//!      acknowledges is durable;
//!    - [`Action::Apply`] goes to the state machine in order, which reports
//!      [`Raft::handle_applied`]; apply earlier `Apply` actions before
//!      restoring a later [`Action::InstallSnapshot`];
//!    - [`Action::ResolveReads`] / [`Action::RejectReads`] answer read
//!      barriers; [`Action::RequestSnapshot`] asks the state machine for a
//!      snapshot, reported with [`Raft::handle_snapshot_created`].
//!
//! A proposal ([`Raft::handle_propose`]) returns a [`ProposalTicket`]; it is
//! committed when an `Apply` delivers its last index with its term.
//!
//! # Limits
//!
//! Every queue and window is bounded by a [`Config`] field; overflow is
//! [`ProposeError::Overloaded`] or [`RequestError::Overloaded`], never
//! growth. The core keeps the log after the last snapshot in memory
//! (reference-counted batches) and requests a snapshot when it exceeds the
//! configured thresholds. The leader keeps the latest snapshot's bytes.
//!
//! # Invariants
//!
//! `applied <= committed <= last index`, the commit index never decreases,
//! `durable <= written`, one leader per term as far as one node sees, and a
//! repair floor only while the durable log is short of it and the node
//! follows: checked after every input; a violation panics naming node and
//! term.
//!
//! # Example
//!
//! A single-node cluster elects itself, commits and applies a proposal:
//!
//! ```
//! use barge::core::{Action, Config, Membership, NodeId, Persisted, Raft, Role};
//! use bytes::Bytes;
//!
//! // Carries out every action at once, as if the disk were synchronous.
//! fn drive(raft: &mut Raft, applied: &mut Vec<Bytes>) {
//!     while let Some(action) = raft.poll_action() {
//!         match &action {
//!             Action::PersistHardState(hard_state) => raft.handle_hard_state_durable(*hard_state),
//!             Action::AppendBatches(batches) => {
//!                 if let Some(last) = batches.last() {
//!                     raft.handle_log_durable(last.last_id());
//!                 }
//!             }
//!             Action::Apply { last, .. } => {
//!                 applied.extend(action.entries().map(|entry| entry.payload));
//!                 raft.handle_applied(*last).expect("handed out by the core");
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let persisted =
//!     Persisted { initial_membership: Membership::new([NodeId(1)]), ..Persisted::default() };
//! let mut raft = Raft::new(NodeId(1), Config::default(), persisted, 42)?;
//! let mut applied = Vec::new();
//! for _ in 0..Config::default().election_timeout_ticks_max {
//!     raft.handle_tick();
//!     drive(&mut raft, &mut applied);
//! }
//! assert_eq!(raft.role(), Role::Leader);
//!
//! let ticket = raft.handle_propose(vec![Bytes::from_static(b"hello")])?;
//! drive(&mut raft, &mut applied);
//! assert!(raft.commit_index() >= ticket.last);
//! assert_eq!(raft.applied_index(), ticket.last);
//! // The no-op of the election applies as an empty payload first.
//! assert_eq!(applied, vec![Bytes::new(), Bytes::from_static(b"hello")]);
//! # Ok(())
//! # }
//! ```

mod action;
mod batch;
mod config;
mod election;
mod log;
mod membership;
mod message;
mod progress;
mod raft;
mod read;
mod reconfigure;
mod repair;
mod replication;
mod snapshot;
mod step;
mod types;

pub use action::{
    Action, MessageError, Metrics, Persisted, ProposalTicket, ProposeError, RecoveryError,
    RequestError, Role, Snapshot,
};
pub use batch::{Batch, BatchError, BatchLimits, Entry, EntryKind};
#[doc(hidden)]
pub use config::InjectedBug;
pub use config::{Config, ConfigError};
pub use membership::{Membership, MembershipChange, MembershipError, MEMBERS_MAX};
pub use message::{AppendResult, Message, MessageBody, SnapshotChunk, SnapshotMeta};
pub use raft::{DriverError, Raft};
pub use types::{HardState, LogGeneration, LogId, LogIndex, NodeId, ReadId, Term};
