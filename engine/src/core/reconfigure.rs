//! Membership changes on the leader (§6, thesis chapter 4): appending a
//! configuration (effective at once), leaving a joint configuration
//! automatically once it commits, and stepping down when a committed
//! configuration no longer lists the leader as a voter.

use super::action::{RequestError, Role};
use super::batch::{Batch, EntryKind};
use super::membership::{Membership, MembershipChange};
use super::message::MessageBody;
use super::progress::Progress;
use super::raft::Raft;
use super::types::LogIndex;

impl Raft {
    pub(crate) fn change_membership(
        &mut self,
        change: &MembershipChange,
    ) -> Result<LogIndex, RequestError> {
        if self.role != Role::Leader {
            return Err(RequestError::NotLeader {
                leader_hint: self.leader,
            });
        }
        // One change at a time: the previous one must be committed and not
        // joint (thesis §4.1), and this term must have committed an entry
        // (the fix of the single-server bug, raft-dev 2015).
        let (latest_index, latest) = self.memberships[self.memberships.len() - 1].clone();
        let term_committed = self
            .leader_state
            .as_ref()
            .is_some_and(|l| self.commit >= l.noop_index);
        if latest_index > self.commit || latest.is_joint() || !term_committed {
            return Err(RequestError::ChangeInProgress);
        }
        let next = latest.plan_change(change)?;
        Ok(self.append_membership(next))
    }

    /// Appends a configuration entry; it takes effect now (thesis §4.1).
    fn append_membership(&mut self, membership: Membership) -> LogIndex {
        let index = self.log.last().index.next();
        let payload = membership.encode();
        let batch = Batch::encode(
            index,
            self.term,
            [(EntryKind::Membership, payload.as_ref())],
        );
        self.memberships.push((index, membership.clone()));
        self.append_local(batch);
        self.sync_progress(&membership);
        self.broadcast_append();
        self.advance_commit();
        index
    }

    /// Tracks exactly the members of `membership` (other than this node).
    fn sync_progress(&mut self, membership: &Membership) {
        let me = self.id;
        let next = self.log.last().index.next();
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        leader.progress.retain(|id, _| membership.contains(*id));
        for id in membership.members().filter(|id| *id != me) {
            leader
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
    }

    /// After the commit index moved on a leader.
    pub(crate) fn membership_commit_advanced(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let (index, latest) = self.memberships[self.memberships.len() - 1].clone();
        if index > self.commit {
            return;
        }
        if latest.is_joint() {
            self.append_membership(latest.leave_joint());
        } else if !latest.is_voter(self.id) {
            // Thesis §4.2.2: a leader removed from the configuration steps
            // down once the change is committed. It first tells the others
            // the commit index and hands leadership to the most up-to-date
            // voter, so the cluster need not wait for an election timeout.
            self.broadcast_heartbeat();
            let successor = self.leader_state.as_ref().and_then(|leader| {
                leader
                    .progress
                    .iter()
                    .filter(|(id, _)| latest.is_voter(**id))
                    .max_by_key(|(_, p)| p.match_index)
                    .map(|(id, p)| (*id, p.match_index))
            });
            if let Some((successor, match_index)) = successor {
                if match_index >= self.log.last().index {
                    self.send(successor, MessageBody::TimeoutNow);
                }
            }
            self.become_follower(self.term, None);
        }
    }
}
