//! Linearizable reads (thesis §6.4): ReadIndex confirmed by a heartbeat
//! round that serves every read queued before it, opt-in lease reads
//! (§6.4.1) and reads from followers through the leader's read index.
//!
//! A read is answered once the state machine has applied its read index,
//! so the driver can serve it from local state at once.

use std::collections::{BTreeMap, VecDeque};

use super::action::{Action, RequestError, Role};
use super::message::MessageBody;
use super::raft::Raft;
use super::types::{LogIndex, NodeId, ReadId};

/// How many recent heartbeat rounds keep their start tick for the lease.
const ROUNDS_KEPT_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOrigin {
    Local(ReadId),
    Remote { from: NodeId, context: u64 },
}

#[derive(Clone, Copy, Debug)]
struct WaitingRead {
    origin: ReadOrigin,
    /// The first heartbeat round started after the read arrived (and after
    /// this term's first commit); `None` until such a round is assigned.
    round: Option<u64>,
}

/// Read bookkeeping on leader and follower.
///
/// Invariant: `confirmed_round <= round`; every waiting read's round is
/// greater than `confirmed_round`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadState {
    /// Last heartbeat round started (leader).
    round: u64,
    /// Highest round a quorum acknowledged (leader).
    confirmed_round: u64,
    /// Start tick of recent rounds; `None` if the round cannot found a
    /// lease (a leadership transfer was in progress).
    rounds: VecDeque<(u64, Option<u64>)>,
    /// The lease holds while `now_ticks < lease_until_tick` (leader).
    lease_until_tick: u64,
    waiting: VecDeque<WaitingRead>,
    /// Follower reads sent to the leader: context -> (read, tick asked).
    forwarded: BTreeMap<u64, (ReadId, u64)>,
    next_context: u64,
    /// Confirmed reads waiting for the state machine to apply their index.
    ready: BTreeMap<LogIndex, Vec<ReadId>>,
    ready_count: usize,
}

impl ReadState {
    fn pending(&self) -> usize {
        self.waiting.len() + self.forwarded.len() + self.ready_count
    }
}

impl Raft {
    fn term_committed(&self) -> bool {
        self.leader_state
            .as_ref()
            .is_some_and(|l| self.commit >= l.noop_index)
    }

    fn lease_valid(&self) -> bool {
        self.config.lease_read
            && self.role == Role::Leader
            && !self.transfer_in_progress()
            && self.now_ticks < self.reads.lease_until_tick
    }

    pub(crate) fn read_index(&mut self, read: ReadId) -> Result<(), RequestError> {
        if self.reads.pending() >= self.config.reads_pending_max {
            return Err(RequestError::Overloaded);
        }
        match self.role {
            Role::Leader => {
                self.leader_read(ReadOrigin::Local(read));
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.reads.next_context += 1;
                    let context = self.reads.next_context;
                    self.reads.forwarded.insert(context, (read, self.now_ticks));
                    self.send(leader, MessageBody::ReadIndex { context });
                    Ok(())
                }
                None => Err(RequestError::NotLeader { leader_hint: None }),
            },
        }
    }

    fn leader_read(&mut self, origin: ReadOrigin) {
        if self.term_committed() && self.lease_valid() {
            self.read_confirmed(origin, self.commit);
            return;
        }
        self.reads.waiting.push_back(WaitingRead {
            origin,
            round: None,
        });
        self.reads_schedule();
    }

    /// Assigns waiting reads to the next round and starts it at once if no
    /// round is in flight; otherwise they ride the next one (batching).
    fn reads_schedule(&mut self) {
        if !self.term_committed() {
            return;
        }
        let next_round = self.reads.round + 1;
        let mut assigned = false;
        for read in self.reads.waiting.iter_mut().filter(|r| r.round.is_none()) {
            read.round = Some(next_round);
            assigned = true;
        }
        let in_flight = self.reads.confirmed_round < self.reads.round
            && self
                .reads
                .waiting
                .iter()
                .any(|r| r.round.is_some_and(|n| n <= self.reads.round));
        if assigned && !in_flight {
            self.broadcast_heartbeat();
        }
    }

    /// Starts a heartbeat round and returns its context.
    pub(crate) fn reads_heartbeat_context(&mut self) -> u64 {
        self.reads.round += 1;
        let lease_tick = (!self.transfer_in_progress()).then_some(self.now_ticks);
        self.reads.rounds.push_back((self.reads.round, lease_tick));
        if self.reads.rounds.len() > ROUNDS_KEPT_MAX {
            self.reads.rounds.pop_front();
        }
        self.reads.round
    }

    /// A peer acknowledged a round: confirm every read a quorum now covers.
    pub(crate) fn reads_round_acknowledged(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        let me = self.id;
        let own = self.reads.round;
        let quorum_round = self
            .membership()
            .committed_index(|id| {
                LogIndex(if id == me {
                    own
                } else {
                    leader.progress.get(&id).map_or(0, |p| p.read_round)
                })
            })
            .0
            .min(own);
        if quorum_round <= self.reads.confirmed_round {
            return;
        }
        self.reads.confirmed_round = quorum_round;
        while let Some((round, tick)) = self.reads.rounds.front().copied() {
            if round > quorum_round {
                break;
            }
            self.reads.rounds.pop_front();
            if round == quorum_round {
                if let Some(tick) = tick {
                    let length =
                        self.config.election_timeout_ticks_min - self.config.clock_drift_ticks;
                    self.reads.lease_until_tick = self.reads.lease_until_tick.max(tick + length);
                }
            }
        }
        let commit = self.commit;
        let mut still = VecDeque::with_capacity(self.reads.waiting.len());
        let mut confirmed = Vec::new();
        while let Some(read) = self.reads.waiting.pop_front() {
            match read.round {
                Some(round) if round <= quorum_round => confirmed.push(read.origin),
                _ => still.push_back(read),
            }
        }
        self.reads.waiting = still;
        for origin in confirmed {
            self.read_confirmed(origin, commit);
        }
        // Reads that queued behind the confirmed round start the next one.
        if self.reads.waiting.iter().any(|r| r.round.is_some())
            && self.reads.confirmed_round == self.reads.round
        {
            for read in self.reads.waiting.iter_mut() {
                read.round = None;
            }
            self.reads_schedule();
        }
    }

    fn read_confirmed(&mut self, origin: ReadOrigin, index: LogIndex) {
        match origin {
            ReadOrigin::Local(read) => self.read_ready(read, index),
            ReadOrigin::Remote { from, context } => {
                self.send(
                    from,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: Some(index),
                    },
                );
            }
        }
    }

    fn read_ready(&mut self, read: ReadId, index: LogIndex) {
        self.reads.ready.entry(index).or_default().push(read);
        self.reads.ready_count += 1;
        self.reads_resolve();
    }

    /// Answers every ready read whose index the state machine has applied.
    pub(crate) fn reads_resolve(&mut self) {
        while let Some(entry) = self.reads.ready.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            let index = *entry.key();
            let reads = entry.remove();
            self.reads.ready_count -= reads.len();
            self.actions
                .push_back(Action::ResolveReads { reads, index });
        }
    }

    pub(crate) fn handle_remote_read_index(&mut self, from: NodeId, context: u64) {
        if self.role != Role::Leader || self.reads.pending() >= self.config.reads_pending_max {
            self.send(
                from,
                MessageBody::ReadIndexResponse {
                    context,
                    index: None,
                },
            );
            return;
        }
        self.leader_read(ReadOrigin::Remote { from, context });
    }

    pub(crate) fn handle_read_index_response(&mut self, context: u64, index: Option<LogIndex>) {
        let Some((read, _)) = self.reads.forwarded.remove(&context) else {
            return;
        };
        match index {
            Some(index) => self.read_ready(read, index),
            None => {
                self.actions.push_back(Action::RejectReads {
                    reads: vec![read],
                    leader_hint: None,
                });
            }
        }
    }

    pub(crate) fn reads_commit_advanced(&mut self) {
        if self.reads.waiting.iter().any(|r| r.round.is_none()) {
            self.reads_schedule();
        }
    }

    pub(crate) fn on_applied(&mut self) {
        self.reads_resolve();
        self.maybe_request_snapshot();
    }

    /// Forwarded reads whose answer is overdue are refused (the request or
    /// the answer may be lost); the caller retries.
    pub(crate) fn reads_tick(&mut self) {
        let deadline = self.config.election_timeout_ticks_max;
        let now = self.now_ticks;
        let expired: Vec<u64> = self
            .reads
            .forwarded
            .iter()
            .filter(|(_, (_, tick))| now.saturating_sub(*tick) >= deadline)
            .map(|(context, _)| *context)
            .collect();
        let mut reads = Vec::new();
        for context in expired {
            if let Some((read, _)) = self.reads.forwarded.remove(&context) {
                reads.push(read);
            }
        }
        if !reads.is_empty() {
            self.actions.push_back(Action::RejectReads {
                reads,
                leader_hint: self.leader,
            });
        }
    }

    /// The leader changed: forwarded reads may never be answered.
    pub(crate) fn reads_leader_changed(&mut self) {
        if self.reads.forwarded.is_empty() {
            return;
        }
        let reads: Vec<ReadId> = std::mem::take(&mut self.reads.forwarded)
            .into_values()
            .map(|(r, _)| r)
            .collect();
        self.actions.push_back(Action::RejectReads {
            reads,
            leader_hint: self.leader,
        });
    }

    /// No longer leader: nothing waiting can be confirmed any more.
    pub(crate) fn reads_stepped_down(&mut self, leader_hint: Option<NodeId>) {
        let waiting = std::mem::take(&mut self.reads.waiting);
        let mut local = Vec::new();
        for read in waiting {
            match read.origin {
                ReadOrigin::Local(read) => local.push(read),
                ReadOrigin::Remote { from, context } => {
                    self.send(
                        from,
                        MessageBody::ReadIndexResponse {
                            context,
                            index: None,
                        },
                    );
                }
            }
        }
        if !local.is_empty() {
            self.actions.push_back(Action::RejectReads {
                reads: local,
                leader_hint,
            });
        }
        self.reads.round = 0;
        self.reads.confirmed_round = 0;
        self.reads.rounds.clear();
        self.reads.lease_until_tick = 0;
    }
}
