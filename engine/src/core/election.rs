//! Elections (§5.2, thesis §3.4, §9.6): timers, pre-vote, votes, leader
//! stickiness, check-quorum and leadership transfer. Every role change
//! except stepping down on a higher term happens here.

use super::action::{RequestError, Role};
use super::message::MessageBody;
use super::raft::{LeaderState, Raft};
use super::types::{LogId, NodeId, Term};

impl Raft {
    /// Advances timers by one tick.
    pub(crate) fn tick(&mut self) {
        self.reads_tick();
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.reset_election_timeout();
            if self.is_promotable() {
                self.campaign(false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        let timeout = self.config.election_timeout_ticks_min;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        leader.check_quorum_elapsed += 1;
        let mut abandon_transfer = false;
        if let Some((_, ticks)) = leader.transfer.as_mut() {
            *ticks += 1;
            abandon_transfer = *ticks >= timeout;
        }
        if abandon_transfer {
            leader.transfer = None;
        }
        let check_due = leader.check_quorum_elapsed >= timeout;
        if check_due {
            leader.check_quorum_elapsed = 0;
        }
        if check_due && self.config.check_quorum {
            let me = self.id;
            let has_quorum = match self.leader_state.as_ref() {
                Some(leader) => self.membership().is_quorum(|id| {
                    id == me || leader.progress.get(&id).is_some_and(|p| p.recent_active)
                }),
                None => true,
            };
            if let Some(leader) = self.leader_state.as_mut() {
                for progress in leader.progress.values_mut() {
                    progress.active_previous = progress.recent_active;
                    progress.recent_active = false;
                }
            }
            if !has_quorum {
                // Thesis §6.2: a leader cut off from a quorum steps down so
                // clients find the real leader and leases stay safe.
                self.become_follower(self.term, None);
            }
        }
    }

    /// Whether this node may campaign: not restoring a snapshot, not
    /// repairing a damaged log (`repair.rs`), and a
    /// voter of its effective configuration or of its committed one.
    ///
    /// The second case is a leader that appended its own removal and lost
    /// leadership before the change committed: the remaining voters may
    /// lack the new configuration and have shorter logs, so only this node
    /// can still win (counting the new configuration's voters, not
    /// itself), commit the change and step down. A node whose removal it
    /// knows to be committed never campaigns.
    pub(crate) fn is_promotable(&self) -> bool {
        self.installing.is_none()
            && !self.repair_blocks_campaign()
            && (self.membership().is_voter(self.id)
                || self.committed_membership().is_voter(self.id))
    }

    /// Starts a pre-vote round, or an election directly when pre-vote is off
    /// or leadership is being transferred to this node.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.votes.insert(self.id, true);
            self.metrics.pre_votes_started += 1;
            let last_log = self.log.last();
            let term = self.term.next();
            for peer in self.voters_except_me() {
                self.send_ungated(peer, term, MessageBody::PreVote { last_log });
            }
            self.tally_votes();
        } else {
            self.start_election(transfer);
        }
    }

    fn start_election(&mut self, transfer: bool) {
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.campaign_transfer = transfer;
        self.withheld.clear();
        self.reset_election_timeout();
        self.persist_hard_state();
        self.metrics.elections_started += 1;
        let last_log = self.log.last();
        let me = self.id;
        for peer in self.voters_except_me() {
            self.send_gated(
                peer,
                MessageBody::Vote { last_log, transfer },
                Some(me),
                None,
            );
        }
        self.tally_votes();
    }

    fn voters_except_me(&self) -> Vec<NodeId> {
        let membership = self.membership();
        membership
            .voters
            .iter()
            .chain(&membership.voters_outgoing)
            .copied()
            .filter(|id| *id != self.id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// A leader was heard from recently: ignore disruptive (pre-)votes
    /// (thesis §4.2.3). Also true for a live leader itself.
    fn in_leader_lease(&self) -> bool {
        if self.role == Role::Leader {
            // A leader without check-quorum could be cut off forever
            // without knowing it; only with it may it refuse elections.
            return self.config.check_quorum;
        }
        match (self.leader, self.leader_contact_tick) {
            (Some(_), Some(tick)) => {
                self.now_ticks.saturating_sub(tick) < self.config.election_timeout_ticks_min
            }
            _ => false,
        }
    }

    /// §5.4.1, against the repair floor while one is set: a node that
    /// lost acknowledged entries votes as if it still held them.
    fn log_is_up_to_date(&self, candidate_last: LogId) -> bool {
        candidate_last >= self.vote_floor()
    }

    pub(crate) fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_log: LogId) {
        let granted =
            term > self.term && !self.in_leader_lease() && self.log_is_up_to_date(last_log);
        // A granted pre-vote answers in the candidate's future term; a
        // refusal carries ours so a stale candidate learns it.
        let reply_term = if granted { term } else { self.term };
        self.send_ungated(from, reply_term, MessageBody::PreVoteResponse { granted });
    }

    /// Handles a vote request whose term is not below ours (the caller
    /// already moved to its term unless stickiness refused).
    pub(crate) fn handle_vote(&mut self, from: NodeId, last_log: LogId) {
        let can_vote = self.vote.is_none() || self.vote == Some(from);
        let granted = can_vote && self.leader.is_none() && self.log_is_up_to_date(last_log);
        if granted {
            self.vote = Some(from);
            self.persist_hard_state();
            self.reset_election_timeout();
            self.send_gated(
                from,
                MessageBody::VoteResponse { granted },
                Some(from),
                None,
            );
        } else {
            self.send(from, MessageBody::VoteResponse { granted });
        }
    }

    /// Whether a (pre-)vote request at `term` must be ignored because a
    /// leader is alive (stickiness), and not counted as news of a new term.
    pub(crate) fn ignores_vote_request(&self, term: Term, transfer: bool) -> bool {
        term > self.term && !transfer && self.in_leader_lease()
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre: bool,
    ) {
        let expected_role = if pre {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        let expected_term = if pre { self.term.next() } else { self.term };
        if self.role != expected_role || term != expected_term {
            return;
        }
        if !self.membership().is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }

    /// Counts votes; this node's own vote counts only once durable.
    pub(crate) fn tally_votes(&mut self) {
        let me = self.id;
        let own_durable = self.role == Role::PreCandidate
            || (self.durable_hard_state.term == self.term
                && self.durable_hard_state.vote == Some(me));
        let votes = &self.votes;
        let granted = |id: NodeId| {
            if id == me {
                own_durable
            } else {
                votes.get(&id) == Some(&true)
            }
        };
        let refused = |id: NodeId| votes.get(&id) == Some(&false);
        let membership = self.membership();
        if membership.is_quorum(granted) {
            match self.role {
                Role::PreCandidate => self.start_election(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if membership.is_quorum_impossible(refused) {
            self.become_follower(self.term, None);
        }
    }

    pub(crate) fn on_hard_state_durable(&mut self) {
        if self.role == Role::Candidate {
            self.tally_votes();
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.votes.clear();
        self.set_leader(Some(self.id));
        self.heartbeat_elapsed = 0;
        let next = self.log.last().index.next();
        let mut state = LeaderState::default();
        for peer in self.membership().members().filter(|id| *id != self.id) {
            state
                .progress
                .insert(peer, super::progress::Progress::new(next));
        }
        self.leader_state = Some(state);
        // Commit this term's first entry to learn the commit index and to
        // commit earlier terms' entries safely (§5.4.2, §8).
        let noop = self.append_noop();
        if let Some(leader) = self.leader_state.as_mut() {
            leader.noop_index = noop;
        }
        self.broadcast_append();
        self.advance_commit();
    }

    pub(crate) fn step_down_leader(&mut self, leader_hint: Option<NodeId>) {
        self.leader_state = None;
        self.reads_stepped_down(leader_hint);
    }

    pub(crate) fn transfer_leadership(&mut self, target: NodeId) -> Result<(), RequestError> {
        if self.role != Role::Leader {
            return Err(RequestError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.id || !self.membership().is_voter(target) {
            return Err(RequestError::BadTransferTarget(target));
        }
        let last = self.log.last().index;
        let Some(leader) = self.leader_state.as_mut() else {
            return Err(RequestError::NotLeader {
                leader_hint: self.leader,
            });
        };
        leader.transfer = Some((target, 0));
        let caught_up = leader
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index >= last);
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target);
        }
        Ok(())
    }

    /// After an acknowledgement from `peer`: complete a pending transfer
    /// if it is the target and has caught up.
    pub(crate) fn maybe_finish_transfer(&mut self, peer: NodeId) {
        let last = self.log.last().index;
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        if let Some((target, _)) = leader.transfer {
            if target == peer
                && leader
                    .progress
                    .get(&peer)
                    .is_some_and(|p| p.match_index >= last)
            {
                self.send(target, MessageBody::TimeoutNow);
            }
        }
    }

    pub(crate) fn handle_timeout_now(&mut self) {
        if self.role != Role::Leader && self.is_promotable() {
            self.campaign(true);
        }
    }

    pub(crate) fn transfer_in_progress(&self) -> bool {
        self.leader_state
            .as_ref()
            .is_some_and(|l| l.transfer.is_some())
    }
}
