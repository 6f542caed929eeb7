//! The driven type: [`Raft`]'s state, its public inputs and outputs, and the
//! invariants checked after every input. Protocol transitions live in the
//! sibling modules (`election`, `replication`, `read`, `reconfigure`,
//! `snapshot`), each an `impl Raft` block.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::action::{
    Action, Metrics, Persisted, ProposalTicket, ProposeError, RecoveryError, RequestError, Role,
    Snapshot,
};
use super::batch::EntryKind;
use super::config::Config;
use super::log::RaftLog;
use super::membership::{Membership, MembershipChange};
use super::message::{AppendResult, Message, MessageBody, SnapshotMeta};
use super::progress::Progress;
use super::read::ReadState;
use super::snapshot::IncomingSnapshot;
use super::types::{HardState, LogGeneration, LogId, LogIndex, NodeId, ReadId, Term};
use super::MessageError;

/// A message held back until the state it acknowledges is durable.
#[derive(Clone, Debug)]
pub(crate) struct Withheld {
    pub(crate) to: NodeId,
    pub(crate) message: Message,
    /// The vote this message depends on (vote grants).
    pub(crate) vote: Option<NodeId>,
    /// The log index that must be durable (append acknowledgements).
    pub(crate) durable_index: Option<LogIndex>,
}

/// State only a leader has.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaderState {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Index of the no-op that commits this term (§5.4.2, §8).
    pub(crate) noop_index: LogIndex,
    /// Leadership transfer in progress: target and ticks spent.
    pub(crate) transfer: Option<(NodeId, u64)>,
    /// Ticks since the last check-quorum round.
    pub(crate) check_quorum_elapsed: u64,
    /// Own batches not yet committed: (last index, entries, bytes).
    pub(crate) uncommitted: VecDeque<(LogIndex, u64, u64)>,
    pub(crate) uncommitted_bytes: u64,
    pub(crate) uncommitted_entries: u64,
}

/// The Raft protocol for one node, as a deterministic state machine.
///
/// # Driving it
/// Methods come in four classes (as in the sans-IO QUIC state machines' `Connection`):
/// getters (`id`, `role`, `term`, ...), inputs (`handle_*`), and the one
/// output, [`Raft::poll_action`]. After any input, drain `poll_action`
/// until it returns `None` and carry the actions out as each variant's
/// documentation says. Call [`Raft::handle_tick`] at a fixed period.
/// Report disk completions with [`Raft::handle_hard_state_durable`] and
/// [`Raft::handle_log_durable`], and the state machine's progress with
/// [`Raft::handle_applied`].
///
/// # Durability
/// The core itself withholds every vote grant until the vote is durable,
/// every message of a new term until that term is durable, and every append
/// acknowledgement until the entries it acknowledges are durable: a driver
/// may send whatever `Send` actions it polls at once.
///
/// # Panics
/// Only when an invariant stated on a field is violated after an input: a
/// bug in the core (or a driver breaking the ordering contract), reported
/// with the node id and term. The invariants are cheap and checked in every
/// build. Bad input from peers or the driver is an `Err`, never a panic.
///
/// # Memory
/// The core keeps every batch after the latest snapshot in memory
/// (reference-counted, shared with the WAL and the wire) and asks for a
/// snapshot when that log exceeds `snapshot_log_entries_threshold` entries
/// or `snapshot_log_bytes_threshold` bytes. The leader also keeps the
/// latest snapshot's bytes to stream to lagging followers, and may hold
/// back up to `snapshot_log_bytes_threshold` bytes of entries below its
/// snapshot for followers that still need them.
#[derive(Debug)]
pub struct Raft {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) rng: SmallRng,

    // Persistent state (Figure 2). Invariant: durable_hard_state.term <= term.
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) durable_hard_state: HardState,

    pub(crate) log: RaftLog,
    // Invariant: applied <= applying <= commit <= log.last().index;
    // commit never decreases; log.durable() <= log.last().index.
    pub(crate) commit: LogIndex,
    pub(crate) applying: LogIndex,
    pub(crate) applied: LogIndex,

    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// Configurations in the log after the snapshot, by index, with the
    /// snapshot's (or the initial one) first. Invariant: non-empty, sorted.
    pub(crate) memberships: Vec<(LogIndex, Membership)>,

    /// Ticks since this node started (its own clock; never compared with
    /// another node's).
    pub(crate) now_ticks: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) election_timeout: u64,
    pub(crate) heartbeat_elapsed: u64,
    /// Tick at which a leader was last heard from (stickiness).
    pub(crate) leader_contact_tick: Option<u64>,
    /// Granted (true) and refused (false) votes of the running (pre-)election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// The running election was started by a leadership transfer.
    pub(crate) campaign_transfer: bool,

    pub(crate) leader_state: Option<LeaderState>,
    pub(crate) reads: ReadState,

    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) snapshot_requested: bool,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// A snapshot handed to the driver to install, not yet reported done.
    pub(crate) installing: Option<LogId>,

    /// The repair floor (see `repair.rs`). Invariant: while set, the
    /// durable log is short of it and the node is a follower.
    pub(crate) repair_floor: Option<LogId>,
    /// How many times this node's log went back (from
    /// [`Persisted::log_generation`]; constant while the core runs), sent
    /// with every answer to an append.
    pub(crate) log_generation: LogGeneration,

    pub(crate) withheld: VecDeque<Withheld>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) metrics: Metrics,
    /// For the one-leader-per-term check: the leader this node knew in
    /// `term`, if any.
    pub(crate) leader_seen: Option<(Term, NodeId)>,
    previous_commit: LogIndex,
    /// The last leader this node knew (for the `leader_changes` metric).
    last_known_leader: Option<NodeId>,
}

/// Why a driver input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// `handle_applied` reported an index that was never handed out.
    #[error("applied {applied} beyond the last Apply action ({applying})")]
    AppliedBeyondApply {
        /// Reported.
        applied: LogIndex,
        /// Highest handed out.
        applying: LogIndex,
    },
    /// `handle_snapshot_created` for a point that is not applied or not in
    /// the log.
    #[error("snapshot at {last} is not an applied entry of this log")]
    BadSnapshotPoint {
        /// The snapshot's last entry.
        last: LogId,
    },
    /// `handle_snapshot_installed` for a snapshot that is not being
    /// installed.
    #[error("no snapshot at {last} is being installed")]
    NotInstalling {
        /// Reported.
        last: LogId,
    },
}

impl Raft {
    /// Restores a node from what its disk holds.
    ///
    /// `rng_seed` seeds the election timeouts; give each node its own.
    ///
    /// # Errors
    /// [`RecoveryError`] if the configuration is invalid or the recovered
    /// log is inconsistent (gaps, terms going back, corrupt membership).
    pub fn new(
        id: NodeId,
        config: Config,
        persisted: Persisted,
        rng_seed: u64,
    ) -> Result<Raft, RecoveryError> {
        config.validate()?;
        let (snapshot_id, base_membership) = match &persisted.snapshot {
            Some(snapshot) => (snapshot.meta.last, snapshot.meta.membership.clone()),
            None => (LogId::default(), persisted.initial_membership.clone()),
        };
        base_membership
            .validate()
            .map_err(|source| RecoveryError::Membership {
                index: snapshot_id.index,
                source,
            })?;
        let mut log = RaftLog::new(snapshot_id);
        let mut memberships = vec![(snapshot_id.index, base_membership)];
        for batch in persisted.batches {
            if batch.last() <= snapshot_id.index {
                continue;
            }
            let expected = log.last().index.next();
            if batch.first() > expected || (batch.first() < expected && log.last() != snapshot_id) {
                return Err(RecoveryError::Gap {
                    expected,
                    found: batch.first(),
                });
            }
            if batch.first() < expected {
                // A batch straddling the snapshot: keep it only if it
                // agrees with the snapshot's last entry.
                if batch.term() != snapshot_id.term {
                    return Err(RecoveryError::Gap {
                        expected,
                        found: batch.first(),
                    });
                }
                // Only its entries after the snapshot are kept (a copy, once,
                // at start-up): the terms before them are not known here.
                log.append(batch.tail_from(snapshot_id.index.next()));
            } else {
                if batch.term() < log.last().term {
                    return Err(RecoveryError::TermRegression {
                        index: batch.first(),
                    });
                }
                log.append(batch.clone());
            }
            for entry in batch.entries().filter(|e| e.id.index > snapshot_id.index) {
                if entry.kind == EntryKind::Membership {
                    let membership = Membership::decode(&entry.payload).map_err(|source| {
                        RecoveryError::Membership {
                            index: entry.id.index,
                            source,
                        }
                    })?;
                    memberships.push((entry.id.index, membership));
                }
            }
        }
        log.set_durable_at_least(log.last().index);
        let hard_state = persisted.hard_state;
        if hard_state.term < log.last().term {
            return Err(RecoveryError::TermBehindLog {
                hard_state: hard_state.term,
                log: log.last().term,
            });
        }
        let mut raft = Raft {
            id,
            rng: SmallRng::seed_from_u64(rng_seed),
            term: hard_state.term,
            vote: hard_state.vote,
            durable_hard_state: hard_state,
            commit: snapshot_id.index,
            applying: snapshot_id.index,
            applied: snapshot_id.index,
            log,
            role: Role::Follower,
            leader: None,
            memberships,
            now_ticks: 0,
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            leader_contact_tick: None,
            votes: BTreeMap::new(),
            campaign_transfer: false,
            leader_state: None,
            reads: ReadState::default(),
            snapshot: persisted.snapshot,
            snapshot_requested: false,
            incoming_snapshot: None,
            installing: None,
            repair_floor: persisted.lost,
            log_generation: persisted.log_generation,
            withheld: VecDeque::new(),
            actions: VecDeque::new(),
            metrics: Metrics::default(),
            leader_seen: None,
            previous_commit: snapshot_id.index,
            last_known_leader: None,
            config,
        };
        raft.reset_election_timeout();
        raft.update_repair_floor();
        raft.check_invariants();
        Ok(raft)
    }

    // ----- getters -----

    /// The leader's progress record of `peer`: `None` unless this node
    /// leads and `peer` is a member it replicates to.
    pub(crate) fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.leader_state.as_ref()?.progress.get(&peer)
    }

    /// Mutable [`Raft::progress`].
    pub(crate) fn progress_mut(&mut self, peer: NodeId) -> Option<&mut Progress> {
        self.leader_state.as_mut()?.progress.get_mut(&peer)
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The role it plays now.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its current term.
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader it follows (itself when leader), if known.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Highest index known committed.
    #[must_use]
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// Highest index the state machine reported applied.
    #[must_use]
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// The last entry of the log.
    #[must_use]
    pub fn last_log_id(&self) -> LogId {
        self.log.last()
    }

    /// The term of entry `index`, if the in-memory log still holds it (or it
    /// is the snapshot's last entry).
    #[must_use]
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The last entry the WAL reported durable.
    #[must_use]
    pub fn durable_log_id(&self) -> LogId {
        let index = self.log.durable();
        LogId::new(self.log.term_at(index).unwrap_or_default(), index)
    }

    /// The hard state (term and vote) the core currently holds.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// The effective configuration (the latest appended, §6).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        // Non-empty by invariant.
        &self.memberships[self.memberships.len() - 1].1
    }

    /// The latest committed configuration.
    #[must_use]
    pub fn committed_membership(&self) -> &Membership {
        self.memberships
            .iter()
            .rev()
            .find(|(index, _)| *index <= self.commit)
            .map_or(&self.memberships[0].1, |(_, m)| m)
    }

    /// The repair floor: `Some` while this node refetches log entries it
    /// lost to damage (it was started with [`Persisted::lost`]). Meanwhile
    /// it neither campaigns nor votes for a candidate whose log is behind
    /// the floor. Becomes `None` once the durable log holds again what the
    /// floor stands for; a driver that persisted the floor may then drop
    /// it.
    #[must_use]
    pub fn repair_floor(&self) -> Option<LogId> {
        self.repair_floor
    }

    /// How many times this node's log went back (from
    /// [`Persisted::log_generation`]), as it tells leaders.
    #[must_use]
    pub fn log_generation(&self) -> LogGeneration {
        self.log_generation
    }

    /// The last snapshot's metadata, if any.
    #[must_use]
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref().map(|s| &s.meta)
    }

    /// Counters and gauges.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let mut metrics = self.metrics.clone();
        if let Some(leader) = &self.leader_state {
            metrics.uncommitted_bytes = leader.uncommitted_bytes;
            metrics.uncommitted_entries = leader.uncommitted_entries;
            metrics.inflight_bytes = leader
                .progress
                .iter()
                .map(|(id, p)| (*id, p.inflight_bytes()))
                .collect();
        }
        metrics.last_log = self.log.last();
        metrics.members = self.membership().members().collect();
        metrics.repair_floor = self.repair_floor;
        metrics
    }

    /// Whether any action is waiting to be polled.
    #[must_use]
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    // ----- output -----

    /// The next action to carry out, in order; `None` when there is none.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- inputs -----

    /// One tick of the driver's clock.
    pub fn handle_tick(&mut self) {
        self.now_ticks += 1;
        self.tick();
        self.after_input();
    }

    /// A message from a peer.
    ///
    /// # Errors
    /// [`MessageError`] if the message is malformed or misaddressed; the
    /// core's state is then unchanged.
    pub fn handle_message(&mut self, message: Message) -> Result<(), MessageError> {
        if message.to != self.id {
            self.metrics.messages_rejected += 1;
            return Err(MessageError::WrongReceiver {
                to: message.to,
                me: self.id,
            });
        }
        let result = self.step(message);
        if result.is_err() {
            self.metrics.messages_rejected += 1;
        }
        self.after_input();
        result
    }

    /// Proposes entries as one batch. Returns where they were appended.
    ///
    /// # Errors
    /// [`ProposeError`]: not the leader, overloaded (uncommitted bytes would
    /// exceed `uncommitted_bytes_max`), too large for one batch, empty, or a
    /// leadership transfer in progress. Nothing is appended on error.
    ///
    /// Takes any slice owner (`Vec<Bytes>`, `[Bytes; 1]`, `&[Bytes]`): the
    /// payloads are copied once, into the batch's encoding.
    pub fn handle_propose(
        &mut self,
        payloads: impl AsRef<[Bytes]>,
    ) -> Result<ProposalTicket, ProposeError> {
        let result = self.propose(payloads.as_ref());
        self.after_input();
        result
    }

    /// The hard state `hard_state` (from an earlier
    /// [`Action::PersistHardState`]) is durable. Older reports are ignored.
    pub fn handle_hard_state_durable(&mut self, hard_state: HardState) {
        let durable = self.durable_hard_state;
        if hard_state.term > durable.term
            || (hard_state.term == durable.term && hard_state.vote.is_some())
        {
            self.durable_hard_state = hard_state;
        }
        self.on_hard_state_durable();
        self.after_input();
    }

    /// The log is durable up to `durable` (from earlier
    /// [`Action::AppendBatches`]). Reports for entries since truncated are
    /// ignored.
    pub fn handle_log_durable(&mut self, durable: LogId) {
        if self.log.mark_durable(durable) {
            self.on_log_durable();
        }
        self.after_input();
    }

    /// The state machine applied everything up to `applied`.
    ///
    /// # Errors
    /// [`DriverError::AppliedBeyondApply`] if `applied` was never handed out.
    pub fn handle_applied(&mut self, applied: LogIndex) -> Result<(), DriverError> {
        if applied > self.applying {
            return Err(DriverError::AppliedBeyondApply {
                applied,
                applying: self.applying,
            });
        }
        if applied > self.applied {
            self.applied = applied;
            self.on_applied();
        }
        self.after_input();
        Ok(())
    }

    /// Asks for a linearizable read barrier (thesis §6.4). The read comes
    /// back in [`Action::ResolveReads`] once the state machine has applied
    /// the read index, or in [`Action::RejectReads`].
    ///
    /// # Errors
    /// [`RequestError::NotLeader`] when no leader is known,
    /// [`RequestError::Overloaded`] when `reads_pending_max` reads wait.
    pub fn handle_read_index(&mut self, read: ReadId) -> Result<(), RequestError> {
        let result = self.read_index(read);
        self.after_input();
        result
    }

    /// Changes the voters and learners: a single-server change is appended
    /// directly, anything else goes through a joint configuration that the
    /// leader leaves automatically once committed (§6, thesis §4).
    ///
    /// # Errors
    /// [`RequestError`]: not the leader, a change still in progress, an
    /// invalid target.
    pub fn handle_change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, RequestError> {
        let result = self.change_membership(&change);
        self.after_input();
        result
    }

    /// Adds a learner (a non-voting member that receives the log).
    ///
    /// # Errors
    /// As [`Raft::handle_change_membership`].
    pub fn handle_add_learner(&mut self, learner: NodeId) -> Result<LogIndex, RequestError> {
        let current = self.membership().clone();
        let mut learners = current.learners.clone();
        learners.insert(learner);
        let change = MembershipChange {
            voters: current.voters,
            learners,
        };
        self.handle_change_membership(change)
    }

    /// Hands leadership to `target` (thesis §3.10): proposals are refused
    /// while the target catches up, then it is told to campaign at once.
    /// Abandoned after an election timeout.
    ///
    /// # Errors
    /// [`RequestError::NotLeader`], or [`RequestError::BadTransferTarget`]
    /// if the target is not another voter.
    pub fn handle_transfer_leadership(&mut self, target: NodeId) -> Result<(), RequestError> {
        let result = self.transfer_leadership(target);
        self.after_input();
        result
    }

    /// The state machine produced a snapshot covering everything up to
    /// `last` (an applied entry): the core keeps `data` to send to lagging
    /// followers and compacts its log below it.
    ///
    /// # Errors
    /// [`DriverError::BadSnapshotPoint`] if `last` is not applied or not in
    /// this log (an older snapshot than the current one is ignored).
    pub fn handle_snapshot_created(&mut self, last: LogId, data: Bytes) -> Result<(), DriverError> {
        let result = self.snapshot_created(last, data);
        self.after_input();
        result
    }

    /// The snapshot of an earlier [`Action::InstallSnapshot`] is restored
    /// and durable.
    ///
    /// # Errors
    /// [`DriverError::NotInstalling`] if no such install was requested.
    pub fn handle_snapshot_installed(&mut self, last: LogId) -> Result<(), DriverError> {
        let result = self.snapshot_installed(last);
        self.after_input();
        result
    }

    // ----- shared transitions -----

    pub(crate) fn reset_election_timeout(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.random_range(
            self.config.election_timeout_ticks_min..self.config.election_timeout_ticks_max,
        );
    }

    /// Moves to `term` (if newer) as a follower of `leader` (if known).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_hard_state();
            // Messages held for an older term are moot now.
            self.withheld.retain(|w| w.message.term >= term);
        }
        if self.role == Role::Leader {
            self.step_down_leader(leader);
        }
        let was_leader = self.role == Role::Leader;
        self.role = Role::Follower;
        self.votes.clear();
        self.campaign_transfer = false;
        self.set_leader(leader);
        // Only news from a leader (or granting a vote) resets the timer
        // (§5.2): were a mere higher term enough, a node with a stale log
        // that keeps campaigning would keep up-to-date nodes from ever
        // timing out and winning.
        if leader.is_some() || was_leader {
            self.reset_election_timeout();
        }
    }

    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if leader != self.leader {
            // Count a different leader, not the same one found again after
            // a pre-vote forgot it.
            if leader.is_some() && leader != self.last_known_leader {
                self.metrics.leader_changes += 1;
                self.last_known_leader = leader;
            }
            self.leader = leader;
            self.reads_leader_changed();
        }
        if let Some(leader) = leader {
            self.leader_contact_tick = Some(self.now_ticks);
            if let Some((term, seen)) = self.leader_seen {
                assert!(
                    term != self.term || seen == leader,
                    "node {} saw two leaders in term {}: {} and {}",
                    self.id,
                    self.term,
                    seen,
                    leader
                );
            }
            self.leader_seen = Some((self.term, leader));
        }
    }

    pub(crate) fn persist_hard_state(&mut self) {
        self.actions.push_back(Action::PersistHardState(HardState {
            term: self.term,
            vote: self.vote,
        }));
    }

    /// Sends a message of the current term, withholding it until the term
    /// (and `vote`, and the log up to `durable_index`) are durable.
    pub(crate) fn send_gated(
        &mut self,
        to: NodeId,
        body: MessageBody,
        vote: Option<NodeId>,
        durable_index: Option<LogIndex>,
    ) {
        let message = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        let withheld = Withheld {
            to,
            message,
            vote,
            durable_index,
        };
        if self.withheld.is_empty() && self.is_released(&withheld) {
            self.actions.push_back(Action::Send {
                to,
                message: withheld.message,
            });
            return;
        }
        if let MessageBody::AppendResponse(AppendResult::Success { match_index, .. }) =
            withheld.message.body
        {
            // A later acknowledgement to the same leader covers an earlier
            // one still waiting: send only the newest (fewer messages, and
            // the queue stays short under a slow disk).
            self.withheld.retain(|w| {
                !(w.to == to
                    && w.message.term == withheld.message.term
                    && matches!(
                        w.message.body,
                        MessageBody::AppendResponse(AppendResult::Success { match_index: earlier, .. })
                            if earlier <= match_index
                    ))
            });
        }
        if self.withheld.len() >= self.config.withheld_messages_max {
            // Raft tolerates loss; the peer retries.
            self.withheld.pop_front();
        }
        self.withheld.push_back(withheld);
        self.release_withheld();
    }

    /// Sends a message of the current term that depends on no durability.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_gated(to, body, None, None);
    }

    /// Sends with an explicit term and no gate (pre-votes, which change no
    /// state, and replies to stale terms).
    pub(crate) fn send_ungated(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        self.actions.push_back(Action::Send { to, message });
    }

    fn is_released(&self, withheld: &Withheld) -> bool {
        let durable = self.durable_hard_state;
        let term = withheld.message.term;
        let hard_state_ok = durable.term > term
            || (durable.term == term && (withheld.vote.is_none() || durable.vote == withheld.vote));
        let log_ok = match withheld.durable_index {
            None => true,
            Some(_) if self.config.testing_bug == Some(super::InjectedBug::AckBeforeDurable) => {
                true
            }
            Some(index) => self.installing.is_none() && self.log.durable() >= index,
        };
        hard_state_ok && log_ok
    }

    pub(crate) fn release_withheld(&mut self) {
        if !self.withheld.iter().any(|w| self.is_released(w)) {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.withheld.len());
        while let Some(withheld) = self.withheld.pop_front() {
            if self.is_released(&withheld) {
                self.actions.push_back(Action::Send {
                    to: withheld.to,
                    message: withheld.message,
                });
            } else {
                kept.push_back(withheld);
            }
        }
        self.withheld = kept;
    }

    fn after_input(&mut self) {
        self.release_withheld();
        self.update_repair_floor();
        self.check_invariants();
    }

    /// The invariants stated on the fields; a violation is a bug in the
    /// core and panics naming the node and term.
    pub(crate) fn check_invariants(&mut self) {
        let last = self.log.last().index;
        let context = || format!("node {} term {}", self.id, self.term);
        assert!(
            self.applied <= self.applying && self.applying <= self.commit,
            "{}: applied {} <= applying {} <= commit {} violated",
            context(),
            self.applied,
            self.applying,
            self.commit
        );
        assert!(
            self.commit <= last,
            "{}: commit {} beyond last {}",
            context(),
            self.commit,
            last
        );
        assert!(
            self.commit >= self.previous_commit,
            "{}: commit went back from {} to {}",
            context(),
            self.previous_commit,
            self.commit
        );
        self.previous_commit = self.commit;
        assert!(
            self.log.durable() <= last,
            "{}: durable {} beyond written {}",
            context(),
            self.log.durable(),
            last
        );
        assert!(
            self.durable_hard_state.term <= self.term,
            "{}: durable term {} ahead",
            context(),
            self.durable_hard_state.term
        );
        assert!(
            self.role != Role::Leader || self.leader == Some(self.id),
            "{}: leader that does not know it",
            context()
        );
        assert!(
            self.log.last().term <= self.term,
            "{}: log term {} ahead of the node's",
            context(),
            self.log.last().term
        );
        self.check_repair_invariants();
    }
}
