//! Message dispatch: the term rules common to every message (Figure 2,
//! "Rules for Servers": a higher term makes a node follower; a lower term
//! is answered so a stale sender learns) and routing to each protocol
//! module.

use super::action::Role;
use super::message::{AppendResult, Message, MessageBody};
use super::raft::Raft;
use super::MessageError;

impl Raft {
    pub(crate) fn step(&mut self, message: Message) -> Result<(), MessageError> {
        let Message {
            from, term, body, ..
        } = message;
        match &body {
            MessageBody::PreVote { last_log } => {
                if self.ignores_vote_request(term, false) {
                    return Ok(());
                }
                self.handle_pre_vote(from, term, *last_log);
                return Ok(());
            }
            MessageBody::PreVoteResponse { granted } => {
                if !granted && term > self.term {
                    self.become_follower(term, None);
                } else {
                    self.handle_vote_response(from, term, *granted, true);
                }
                return Ok(());
            }
            MessageBody::Vote { transfer, .. } if self.ignores_vote_request(term, *transfer) => {
                return Ok(());
            }
            _ => {}
        }

        if term > self.term {
            let from_leader = matches!(
                body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot(_)
                    | MessageBody::TimeoutNow
            );
            self.become_follower(term, from_leader.then_some(from));
        } else if term < self.term {
            // Tell a stale leader or candidate about the newer term; they
            // step down on it. Everything else from the past is ignored.
            match body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(
                        from,
                        MessageBody::AppendResponse(AppendResult::Reject {
                            rejected: super::types::LogIndex(0),
                            hint: self.log.last(),
                            generation: self.log_generation,
                        }),
                    );
                }
                MessageBody::Vote { .. } => {
                    self.send(from, MessageBody::VoteResponse { granted: false });
                }
                _ => {}
            }
            return Ok(());
        }

        match body {
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => Ok(()),
            MessageBody::Vote { last_log, .. } => {
                self.handle_vote(from, last_log);
                Ok(())
            }
            MessageBody::VoteResponse { granted } => {
                self.handle_vote_response(from, term, granted, false);
                Ok(())
            }
            MessageBody::Append {
                prev,
                batches,
                commit,
            } => {
                self.accept_leader(from)?;
                self.handle_append(from, prev, batches, commit)
            }
            MessageBody::AppendResponse(result) => {
                self.handle_append_response(from, result);
                Ok(())
            }
            MessageBody::Heartbeat { commit, context } => {
                self.accept_leader(from)?;
                self.handle_heartbeat(from, commit, context);
                Ok(())
            }
            MessageBody::HeartbeatResponse { context } => {
                self.handle_heartbeat_response(from, context);
                Ok(())
            }
            MessageBody::ReadIndex { context } => {
                self.handle_remote_read_index(from, context);
                Ok(())
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.handle_read_index_response(context, index);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                self.accept_leader(from)?;
                self.handle_timeout_now();
                Ok(())
            }
            MessageBody::InstallSnapshot(chunk) => {
                self.accept_leader(from)?;
                self.handle_snapshot_chunk(from, chunk)
            }
            MessageBody::InstallSnapshotResponse {
                last,
                received_bytes,
                installed,
                rejected,
            } => {
                self.handle_snapshot_response(from, last, received_bytes, installed, rejected);
                Ok(())
            }
        }
    }

    /// A message that only a leader of the current term sends arrived:
    /// follow its sender.
    fn accept_leader(&mut self, from: super::types::NodeId) -> Result<(), MessageError> {
        if self.role == Role::Leader {
            // Two leaders in one term would break election safety: a peer
            // claiming it is faulty or hostile.
            return Err(MessageError::MalformedAppend {
                from,
                reason: "leader message in this node's own term",
            });
        }
        if let Some((term, seen)) = self.leader_seen {
            if term == self.term && seen != from {
                return Err(MessageError::MalformedAppend {
                    from,
                    reason: "a second leader in one term",
                });
            }
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        } else {
            self.leader_contact_tick = Some(self.now_ticks);
            self.election_elapsed = 0;
        }
        Ok(())
    }
}
