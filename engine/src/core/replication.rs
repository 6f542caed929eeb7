//! Log replication (§5.3, thesis §3.5, §10.2): proposals, appends with
//! pipelining inside the in-flight window, fast backtracking, commitment by
//! counting only the current term's entries (§5.4.2), heartbeats, and
//! handing committed, durable entries to the state machine.

use bytes::Bytes;

use super::action::{Action, ProposalTicket, ProposeError, Role};
use super::batch::{Batch, EntryKind};
use super::membership::Membership;
use super::message::{AppendResult, MessageBody};
use super::progress::ProgressState;
use super::raft::Raft;
use super::types::{LogId, LogIndex, NodeId};
use super::{InjectedBug, MessageError};

/// Encoded size of a batch of these payloads (see the batch format).
fn encoded_bytes(payloads: &[Bytes]) -> usize {
    4 + 5 * payloads.len() + payloads.iter().map(Bytes::len).sum::<usize>()
}

impl Raft {
    pub(crate) fn propose(&mut self, payloads: &[Bytes]) -> Result<ProposalTicket, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_in_progress() {
            return Err(ProposeError::TransferInProgress);
        }
        if payloads.is_empty() {
            return Err(ProposeError::Empty);
        }
        let bytes = encoded_bytes(payloads);
        if payloads.len() > self.config.batch_entries_max as usize
            || bytes > self.config.batch_bytes_max as usize
        {
            return Err(ProposeError::TooLarge {
                entries: payloads.len(),
                bytes,
            });
        }
        let uncommitted = self
            .leader_state
            .as_ref()
            .map_or(0, |l| l.uncommitted_bytes);
        if uncommitted + bytes as u64 > self.config.uncommitted_bytes_max {
            self.metrics.proposals_overloaded += 1;
            return Err(ProposeError::Overloaded);
        }
        let first = self.log.last().index.next();
        let batch = Batch::encode_normal(first, self.term, payloads);
        let last = batch.last();
        self.append_local(batch);
        self.broadcast_append();
        self.advance_commit();
        Ok(ProposalTicket {
            term: self.term,
            first,
            last,
        })
    }

    /// Appends a batch of this leader's to its own log and asks the WAL to
    /// write it; replication proceeds in parallel (thesis §10.2.1).
    pub(crate) fn append_local(&mut self, batch: Batch) {
        if let Some(leader) = self.leader_state.as_mut() {
            leader.uncommitted.push_back((
                batch.last(),
                u64::from(batch.len()),
                batch.size_bytes(),
            ));
            leader.uncommitted_bytes += batch.size_bytes();
            leader.uncommitted_entries += u64::from(batch.len());
        }
        self.log.append(batch.clone());
        self.actions.push_back(Action::AppendBatches(vec![batch]));
    }

    pub(crate) fn append_noop(&mut self) -> LogIndex {
        let index = self.log.last().index.next();
        self.append_local(Batch::encode(
            index,
            self.term,
            [(EntryKind::Noop, &b""[..])],
        ));
        index
    }

    pub(crate) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .leader_state
            .as_ref()
            .map(|l| l.progress.keys().copied().collect())
            .unwrap_or_default();
        for peer in peers {
            self.send_append(peer);
        }
    }

    /// Sends `peer` whatever its progress state and window allow.
    pub(crate) fn send_append(&mut self, peer: NodeId) {
        loop {
            let Some(progress) = self.progress(peer) else {
                return;
            };
            if matches!(progress.state, ProgressState::Snapshot { .. }) {
                self.send_snapshot_chunks(peer);
                return;
            }
            if !progress.can_send(
                self.config.inflight_messages_max,
                self.config.inflight_bytes_max,
            ) {
                return;
            }
            let probing = matches!(progress.state, ProgressState::Probe { .. });
            let next = progress.next_index;
            if next < self.log.first_index() {
                self.start_snapshot_transfer(peer);
                return;
            }
            let batches = self.log.batches_from(next, self.config.append_bytes_max);
            let (prev_index, last, bytes) = match (batches.first(), batches.last()) {
                (Some(first), Some(last)) => (
                    first.first().prev(),
                    last.last(),
                    batches.iter().map(Batch::size_bytes).sum::<u64>(),
                ),
                _ if probing => (next.prev(), next.prev(), 0),
                _ => return,
            };
            let Some(prev_term) = self.log.term_at(prev_index) else {
                self.start_snapshot_transfer(peer);
                return;
            };
            let commit = self.commit;
            if let Some(progress) = self.progress_mut(peer) {
                progress.sent(prev_index.next(), last, bytes);
            }
            let prev = LogId::new(prev_term, prev_index);
            self.send(
                peer,
                MessageBody::Append {
                    prev,
                    batches,
                    commit,
                },
            );
            if probing || last >= self.log.last().index {
                return;
            }
        }
    }

    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev: LogId,
        batches: Vec<Batch>,
        leader_commit: LogIndex,
    ) -> Result<(), MessageError> {
        // Check the peer's batches before touching anything.
        let malformed = |reason| MessageError::MalformedAppend { from, reason };
        let mut expected = prev.index.next();
        let mut term = prev.term;
        let mut memberships = Vec::new();
        for batch in &batches {
            if batch.first() != expected {
                return Err(malformed("batches not contiguous after prev"));
            }
            if batch.term() < term || batch.term() > self.term {
                return Err(malformed("batch term out of order"));
            }
            expected = batch.last().next();
            term = batch.term();
            if batch.has_kind(EntryKind::Membership) {
                for entry in batch.entries().filter(|e| e.kind == EntryKind::Membership) {
                    let membership = Membership::decode(&entry.payload).map_err(|source| {
                        MessageError::BadMembership {
                            index: entry.id.index,
                            source,
                        }
                    })?;
                    memberships.push((entry.id.index, membership));
                }
            }
        }
        let last_new = expected.prev();

        // Entries up to our commit index are committed, hence identical to
        // the leader's (Leader Completeness): start comparing after it.
        let mut prev = prev;
        if prev.index < self.commit {
            let Some(term) = self.log.term_at(self.commit) else {
                return Err(malformed("commit point unknown"));
            };
            prev = LogId::new(term, self.commit);
        } else if !self.log.matches(prev) {
            let hint_index = prev.index.min(self.log.last().index);
            let index = self.log.last_at_or_below(hint_index, prev.term);
            let hint = LogId::new(self.log.term_at(index).unwrap_or_default(), index);
            self.send(
                from,
                MessageBody::AppendResponse(AppendResult::Reject {
                    rejected: prev.index,
                    hint,
                    generation: self.log_generation,
                }),
            );
            return Ok(());
        }

        let mut appended = Vec::new();
        for batch in batches {
            if batch.last() <= prev.index {
                continue;
            }
            let mut index = batch.first().max(prev.index.next());
            let mut conflict = false;
            while index <= batch.last() {
                match self.log.batch_at(index) {
                    None => break,
                    Some(ours) if ours.term() == batch.term() => index = ours.last().next(),
                    Some(_) => {
                        conflict = true;
                        break;
                    }
                }
            }
            if index > batch.last() {
                continue;
            }
            if conflict {
                if index <= self.commit {
                    return Err(malformed("conflict with a committed entry"));
                }
                let after = index.prev();
                self.log.truncate_after(after);
                self.memberships.retain(|(at, _)| *at <= after);
                if !appended.is_empty() {
                    self.actions
                        .push_back(Action::AppendBatches(std::mem::take(&mut appended)));
                }
                self.actions.push_back(Action::TruncateSuffix { after });
            }
            let piece = batch.tail_from(index);
            self.log.append(piece.clone());
            appended.push(piece);
        }
        if !appended.is_empty() {
            let first_new = appended[0].first();
            for (index, membership) in memberships {
                if index >= first_new {
                    self.memberships.push((index, membership));
                }
            }
            self.actions.push_back(Action::AppendBatches(appended));
        }

        let commit = leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
            self.on_commit_advanced();
        }
        self.send_gated(
            from,
            MessageBody::AppendResponse(AppendResult::Success {
                match_index: last_new,
                generation: self.log_generation,
            }),
            None,
            Some(last_new),
        );
        Ok(())
    }

    pub(crate) fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last().index;
        let ignore_generation = self.config.testing_bug == Some(InjectedBug::IgnoreLogGeneration);
        match result {
            AppendResult::Success {
                match_index,
                generation,
            } => {
                if match_index > last {
                    return;
                }
                let Some(progress) = self.progress_mut(from) else {
                    return;
                };
                let generation = if ignore_generation {
                    progress.generation
                } else {
                    generation
                };
                let before = progress.match_index;
                if matches!(progress.state, ProgressState::Snapshot { .. }) {
                    // The stream goes on; only a loss of entries matters.
                    progress.generation_seen(generation, match_index);
                    let after = progress.match_index;
                    self.count_went_back(before, after);
                    return;
                }
                let news = progress.acknowledged(match_index, generation);
                let after = progress.match_index;
                self.count_went_back(before, after);
                if news {
                    self.advance_commit();
                }
                self.maybe_finish_transfer(from);
                self.send_append(from);
            }
            AppendResult::Reject {
                rejected,
                hint,
                generation,
            } => {
                let next = self.log.last_at_or_below(hint.index, hint.term).next();
                let Some(progress) = self.progress_mut(from) else {
                    return;
                };
                let generation = if ignore_generation {
                    progress.generation
                } else {
                    generation
                };
                let before = progress.match_index;
                let retry = progress.rejected(rejected, next, generation);
                let after = progress.match_index;
                self.count_went_back(before, after);
                if retry {
                    self.send_append(from);
                }
            }
        }
    }

    /// A match point only falls when a follower's log went back
    /// (`Progress::generation_seen`).
    fn count_went_back(&mut self, before: LogIndex, after: LogIndex) {
        if after < before {
            self.metrics.followers_went_back += 1;
        }
    }

    /// Commits the highest index stored durably on a quorum, if it belongs
    /// to this term (§5.4.2: never commit an older term's entry by
    /// counting). The leader counts itself only up to its durable index
    /// (thesis §10.2.1).
    pub(crate) fn advance_commit(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        let me = self.id;
        let durable = self.log.durable();
        let candidate = self.membership().committed_index(|id| {
            if id == me {
                durable
            } else {
                leader
                    .progress
                    .get(&id)
                    .map_or(LogIndex(0), |p| p.match_index)
            }
        });
        if candidate <= self.commit {
            return;
        }
        let candidate = candidate.min(self.log.last().index);
        let current_term = self.log.term_at(candidate) == Some(self.term);
        if current_term || self.config.testing_bug == Some(InjectedBug::CommitOlderTermByCounting) {
            self.commit = candidate;
            self.on_commit_advanced();
        }
    }

    pub(crate) fn on_commit_advanced(&mut self) {
        if let Some(leader) = self.leader_state.as_mut() {
            while let Some((last, entries, bytes)) = leader.uncommitted.front().copied() {
                if last > self.commit {
                    break;
                }
                leader.uncommitted.pop_front();
                leader.uncommitted_bytes -= bytes;
                leader.uncommitted_entries -= entries;
            }
            self.reads_commit_advanced();
            self.membership_commit_advanced();
        }
        self.maybe_apply();
    }

    pub(crate) fn on_log_durable(&mut self) {
        if self.role == Role::Leader {
            self.advance_commit();
        }
        self.maybe_apply();
    }

    /// Hands committed entries that are also durable here to the state
    /// machine (durable, so a crash never forgets what was applied).
    pub(crate) fn maybe_apply(&mut self) {
        if self.installing.is_some() {
            return;
        }
        let up_to = self.commit.min(self.log.durable());
        if up_to <= self.applying {
            return;
        }
        let first = self.applying.next();
        let batches = self.log.batches_covering(first, up_to);
        self.applying = up_to;
        self.actions.push_back(Action::Apply {
            first,
            last: up_to,
            batches,
        });
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let context = self.reads_heartbeat_context();
        let commit = self.commit;
        let peers: Vec<(NodeId, LogIndex)> = match self.leader_state.as_mut() {
            Some(leader) => leader
                .progress
                .iter_mut()
                .map(|(id, p)| {
                    p.heartbeat();
                    (*id, p.match_index)
                })
                .collect(),
            None => return,
        };
        for (peer, match_index) in peers {
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit: commit.min(match_index),
                    context,
                },
            );
            self.send_append(peer);
        }
        self.reads_round_acknowledged();
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, context: u64) {
        let last = self.log.last();
        if commit > last.index || self.repair_floor.is_some() {
            // The leader believes this log holds `commit` (it sends at most
            // what was acknowledged), or this node is refetching entries it
            // lost: the log was cut back after damage. Say so with the log
            // generation, or the leader, seeing nothing to send, would wait
            // for the next proposal to find out (see `Progress::rejected`;
            // once it knows, the same answer is stale to it and ignored).
            self.send(
                from,
                MessageBody::AppendResponse(AppendResult::Reject {
                    rejected: commit,
                    hint: last,
                    generation: self.log_generation,
                }),
            );
        }
        let commit = commit.min(last.index);
        if commit > self.commit {
            self.commit = commit;
            self.on_commit_advanced();
        }
        self.send(from, MessageBody::HeartbeatResponse { context });
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, context: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last().index;
        let Some(progress) = self.progress_mut(from) else {
            return;
        };
        progress.recent_active = true;
        progress.read_round = progress.read_round.max(context);
        let behind = progress.match_index < last;
        self.reads_round_acknowledged();
        if behind {
            self.send_append(from);
        }
    }
}
