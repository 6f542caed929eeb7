//! The Raft thread's loop: drain everything queued, hand it to the core in
//! batches, carry out the core's actions.
//!
//! One iteration: wait for any event (a request, a frame, a log completion,
//! a tick), then take everything else already queued without waiting
//! (bounded per source so one flood cannot starve the rest), turn all queued
//! proposals into as few `handle_propose` calls as the batch bounds allow,
//! and dispatch every action the core produced. So under load one wake-up
//! moves many entries: one WAL submission per batch, one frame per append
//! message per follower, one apply call per committed range.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use barge_net::{Delivery, Frame, Incoming, PeerId, QuicTransport, TrafficClass, Transport};
use barge_wal::{Completion, Wal};
use bytes::Bytes;
use crossbeam_channel::Receiver;
use tokio::sync::{mpsc, oneshot, Notify};

use super::completion::{Answer, Completions, Outbox, Route};
use super::error::NodeError;
use super::snapshots::SnapshotWorker;
use super::state_machine::StateMachine;
use super::storage::{self, LogSettings};
use super::{Request, Shared};
use crate::core::{
    Action, Entry, EntryKind, HardState, LogId, LogIndex, Message, MessageBody, NodeId, Raft,
    ReadId, Role, Snapshot, Term,
};
use crate::wire::{self, WireLimits};

/// Most frames, requests or completions taken from one source per iteration.
const DRAIN_PER_SOURCE_MAX: usize = 4096;

/// Ticks before a snapshot that could not be taken (the state machine
/// failed, or the applied entry's term was unknown) is tried again.
const SNAPSHOT_RETRY_TICKS: u64 = 100;

/// How a proposal caller wants its answer, and how it is sent.
struct ProposalResponder {
    route: Route,
    reply: Reply,
}

/// The answer channel of a proposal; `Many` collects its responses.
enum Reply {
    One(oneshot::Sender<Result<Bytes, NodeError>>),
    Many(oneshot::Sender<Result<Vec<Bytes>, NodeError>>, Vec<Bytes>),
}

/// A proposal accepted by the core: entries `first..=last` of `term`.
struct ProposalWaiter {
    term: Term,
    first: LogIndex,
    last: LogIndex,
    started: Instant,
    responder: ProposalResponder,
}

impl ProposalResponder {
    fn failure(self, error: NodeError) -> (Route, Answer) {
        let answer = match self.reply {
            Reply::One(sender) => Answer::One(sender, Err(error)),
            Reply::Many(sender, _) => Answer::Many(sender, Err(error)),
        };
        (self.route, answer)
    }
}

/// The entries of one request: a single proposal needs no vector, so
/// queueing it allocates nothing.
enum Payloads {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Payloads {
    fn as_slice(&self) -> &[Bytes] {
        match self {
            Payloads::One(payload) => std::slice::from_ref(payload),
            Payloads::Many(payloads) => payloads,
        }
    }
}

/// A proposal received but not yet handed to the core.
struct QueuedProposal {
    payloads: Payloads,
    started: Instant,
    responder: ProposalResponder,
}

/// A membership change waiting for its entry to apply.
struct ChangeWaiter {
    index: LogIndex,
    term: Term,
    responder: oneshot::Sender<Result<LogIndex, NodeError>>,
}

struct TransferWaiter {
    target: NodeId,
    deadline_tick: u64,
    responder: oneshot::Sender<Result<(), NodeError>>,
}

/// A log submission not yet reported durable.
struct PendingWrite {
    sequence: u64,
    hard_state: Option<HardState>,
    submitted: Instant,
}

pub(super) struct Driver {
    pub(super) core: Raft,
    /// Shared with the `barge-snapshot` thread only while it compacts.
    pub(super) wal: Option<Arc<Wal>>,
    pub(super) wal_completions: Receiver<Completion>,
    pub(super) wal_wake: Arc<Notify>,
    pub(super) log_settings: LogSettings,
    pub(super) data_dir: PathBuf,
    pub(super) transport: Arc<QuicTransport>,
    pub(super) incoming: Incoming,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) state_machine: Box<dyn StateMachine>,
    pub(super) shared: Arc<Shared>,
    pub(super) wire_limits: WireLimits,
    pub(super) ticks: u64,
    pub(super) election_timeout_ticks: u64,
    queued: VecDeque<QueuedProposal>,
    waiters: VecDeque<ProposalWaiter>,
    changes: Vec<ChangeWaiter>,
    transfer: Option<TransferWaiter>,
    reads: HashMap<u64, oneshot::Sender<Result<LogIndex, NodeError>>>,
    read_next: u64,
    pending_writes: VecDeque<PendingWrite>,
    overloaded: bool,
    snapshots: SnapshotWorker,
    /// The core asked for a snapshot that is not taken yet: a job was
    /// running, or taking it failed. The core asks only once until it is
    /// answered, so the driver must come back to it: from `iterate`, once no
    /// job runs and `ticks` has reached `snapshot_retry_tick`.
    snapshot_wanted: bool,
    snapshot_retry_tick: u64,
    entries_scratch: Vec<Entry>,
    responses_scratch: Vec<Bytes>,
    /// Proposal answers decided this iteration, for the completer.
    outbox: Outbox,
    completions: Arc<Completions>,
    /// The data directory holds a `repair` file (a damaged log is being
    /// refetched); removed once the core clears its repair floor.
    repair_file: bool,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        core: Raft,
        wal: Wal,
        wal_wake: Arc<Notify>,
        snapshots: SnapshotWorker,
        log_settings: LogSettings,
        data_dir: PathBuf,
        transport: Arc<QuicTransport>,
        incoming: Incoming,
        requests: mpsc::Receiver<Request>,
        state_machine: Box<dyn StateMachine>,
        shared: Arc<Shared>,
        wire_limits: WireLimits,
        election_timeout_ticks: u64,
        completions: Arc<Completions>,
    ) -> Driver {
        let wal_completions = wal.completions();
        let repair_file = core.repair_floor().is_some();
        Driver {
            core,
            wal: Some(Arc::new(wal)),
            wal_completions,
            wal_wake,
            log_settings,
            data_dir,
            transport,
            incoming,
            requests,
            state_machine,
            shared,
            wire_limits,
            ticks: 0,
            election_timeout_ticks,
            queued: VecDeque::new(),
            waiters: VecDeque::new(),
            changes: Vec::new(),
            transfer: None,
            reads: HashMap::new(),
            read_next: 1,
            pending_writes: VecDeque::new(),
            overloaded: false,
            snapshots,
            snapshot_wanted: false,
            snapshot_retry_tick: 0,
            entries_scratch: Vec::new(),
            responses_scratch: Vec::new(),
            outbox: Outbox::default(),
            completions,
            repair_file,
        }
    }

    /// Runs until shutdown is asked or the log fails. Returns the log so the
    /// caller can sync and close it.
    pub(super) async fn run(
        mut self,
        tick_interval: std::time::Duration,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Option<Wal> {
        let mut ticker = tokio::time::interval(tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The core may have actions from recovery (none today, but cheap).
        if let Err(error) = self.dispatch() {
            self.fail(error);
            self.completions.end();
            return self.close();
        }
        loop {
            let accepting = !self.overloaded;
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                () = self.wal_wake.notified() => {}
                Some(delivery) = self.incoming.recv() => self.on_delivery(delivery),
                _ = ticker.tick() => self.on_tick(),
                request = self.requests.recv(), if accepting => match request {
                    Some(request) => self.on_request(request, Instant::now()),
                    None => break,
                },
            }
            if let Err(error) = self.iterate() {
                self.fail(error);
                break;
            }
        }
        self.stop_waiters(NodeError::Stopped);
        self.completions.end();
        self.close()
    }

    /// Waits for the snapshot job in flight, then hands back the log.
    fn close(&mut self) -> Option<Wal> {
        if let Some(Err(error)) = self.snapshots.wait() {
            tracing::error!(%error, "snapshot write failed during shutdown");
            self.shared.set_failed(error);
        }
        self.wal.take().and_then(|wal| {
            // The worker dropped its reference before reporting.
            Arc::try_unwrap(wal)
                .map_err(|_| tracing::error!("the log is still shared at shutdown; not closed"))
                .ok()
        })
    }

    /// Takes everything queued, then feeds the core and dispatches.
    fn iterate(&mut self) -> Result<(), NodeError> {
        self.finish_snapshot()?;
        self.drain_completions()?;
        for _ in 0..DRAIN_PER_SOURCE_MAX {
            match self.incoming.try_recv() {
                Some(delivery) => self.on_delivery(delivery),
                None => break,
            }
        }
        if !self.overloaded {
            // One clock read per burst, not per request: requests drained
            // together arrived within this iteration.
            let now = Instant::now();
            for _ in 0..DRAIN_PER_SOURCE_MAX {
                match self.requests.try_recv() {
                    Ok(request) => self.on_request(request, now),
                    Err(_) => break,
                }
            }
        }
        self.propose_queued();
        self.dispatch()?;
        // Dispatch may have made more writes durable already (the log thread
        // runs in parallel); picking them up now saves a wake-up.
        self.drain_completions()?;
        self.dispatch()?;
        self.finish_repair();
        // One hand-over per iteration: the answers of everything this
        // iteration applied or refused.
        self.outbox.flush(&self.completions);
        self.shared.publish(
            &self.core,
            self.wal.as_deref(),
            self.transport.as_ref(),
            false,
        );
        Ok(())
    }

    /// Drops the persisted repair floor once the core has cleared it (the
    /// core clears it only on durable state, so a crash after the removal
    /// cannot bring back a node that forgot its promises). A failed removal
    /// costs nothing but a check at the next start, which clears a floor the
    /// log already reaches, so it is logged, not fatal.
    fn finish_repair(&mut self) {
        if !self.repair_file || self.core.repair_floor().is_some() {
            return;
        }
        self.repair_file = false;
        match storage::clear_repair_floor(&self.data_dir) {
            Ok(()) => tracing::info!("damaged log entries refetched; repair finished"),
            Err(error) => {
                tracing::warn!(%error, "repair finished, but its file stays until the next start")
            }
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.core.handle_tick();
        if let Some(transfer) = self.transfer.take() {
            if self.core.leader() == Some(transfer.target) {
                let _ = transfer.responder.send(Ok(()));
            } else if self.ticks >= transfer.deadline_tick {
                let _ = transfer.responder.send(Err(NodeError::TransferTimedOut {
                    target: transfer.target,
                }));
            } else {
                self.transfer = Some(transfer);
            }
        }
        self.shared.publish(
            &self.core,
            self.wal.as_deref(),
            self.transport.as_ref(),
            true,
        );
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        match wire::decode(delivery.body, &self.wire_limits) {
            Ok(message) if message.from.0 == delivery.peer.0 => {
                if let Err(error) = self.core.handle_message(message) {
                    tracing::debug!(peer = delivery.peer.0, %error, "message refused by the core");
                }
            }
            Ok(message) => {
                self.shared.frame_rejected();
                tracing::warn!(
                    peer = delivery.peer.0,
                    claimed = message.from.0,
                    "frame claims another sender; dropped"
                );
            }
            Err(error) => {
                self.shared.frame_rejected();
                tracing::warn!(peer = delivery.peer.0, %error, "undecodable frame; dropped");
            }
        }
    }

    fn on_request(&mut self, request: Request, now: Instant) {
        match request {
            Request::Propose {
                payload,
                responder,
                route,
            } => self.queued.push_back(QueuedProposal {
                payloads: Payloads::One(payload),
                started: now,
                responder: ProposalResponder {
                    route,
                    reply: Reply::One(responder),
                },
            }),
            Request::ProposeBatch {
                payloads,
                responder,
                route,
            } => {
                let count = payloads.len();
                self.queued.push_back(QueuedProposal {
                    payloads: Payloads::Many(payloads),
                    started: now,
                    responder: ProposalResponder {
                        route,
                        reply: Reply::Many(responder, Vec::with_capacity(count)),
                    },
                });
            }
            Request::Read { responder } => {
                let id = self.read_next;
                self.read_next += 1;
                match self.core.handle_read_index(ReadId(id)) {
                    Ok(()) => {
                        self.reads.insert(id, responder);
                    }
                    Err(error) => {
                        let _ = responder.send(Err(error.into()));
                    }
                }
            }
            Request::ChangeMembership { change, responder } => {
                let result = self.core.handle_change_membership(change);
                self.on_change_submitted(result, responder);
            }
            Request::AddLearner { learner, responder } => {
                let result = self.core.handle_add_learner(learner);
                self.on_change_submitted(result, responder);
            }
            Request::TransferLeadership { target, responder } => {
                if self.transfer.is_some() {
                    let _ = responder.send(Err(NodeError::Overloaded));
                    return;
                }
                match self.core.handle_transfer_leadership(target) {
                    Ok(()) => {
                        self.transfer = Some(TransferWaiter {
                            target,
                            deadline_tick: self.ticks + 2 * self.election_timeout_ticks,
                            responder,
                        });
                    }
                    Err(error) => {
                        let _ = responder.send(Err(error.into()));
                    }
                }
            }
        }
    }

    fn on_change_submitted(
        &mut self,
        result: Result<LogIndex, crate::core::RequestError>,
        responder: oneshot::Sender<Result<LogIndex, NodeError>>,
    ) {
        match result {
            Ok(index) => self.changes.push(ChangeWaiter {
                index,
                term: self.core.term(),
                responder,
            }),
            Err(error) => {
                let _ = responder.send(Err(error.into()));
            }
        }
    }

    /// Hands queued proposals to the core, as few calls as the batch bounds
    /// allow. Stops at the first `Overloaded` and keeps the rest queued; the
    /// loop then stops taking requests until entries commit.
    fn propose_queued(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        if self.core.role() != Role::Leader {
            let leader_hint = self.core.leader();
            for proposal in self.queued.drain(..) {
                let (route, answer) = proposal
                    .responder
                    .failure(NodeError::NotLeader { leader_hint });
                self.outbox.push(route, answer);
            }
            return;
        }
        let config = self.core_limits();
        while !self.queued.is_empty() {
            // Take whole requests while they fit one batch.
            let mut take = 0;
            let mut entries = 0usize;
            let mut bytes = 4usize;
            for proposal in &self.queued {
                let proposal_entries = proposal.payloads.as_slice().len();
                let proposal_bytes: usize = proposal
                    .payloads
                    .as_slice()
                    .iter()
                    .map(|p| p.len() + 5)
                    .sum::<usize>();
                if take > 0
                    && (entries + proposal_entries > config.0 || bytes + proposal_bytes > config.1)
                {
                    break;
                }
                take += 1;
                entries += proposal_entries;
                bytes += proposal_bytes;
            }
            let mut payloads = Vec::with_capacity(entries);
            for proposal in self.queued.iter().take(take) {
                payloads.extend(proposal.payloads.as_slice().iter().cloned());
            }
            match self.core.handle_propose(payloads) {
                Ok(ticket) => {
                    let mut next = ticket.first;
                    for proposal in self.queued.drain(..take) {
                        let count = proposal.payloads.as_slice().len() as u64;
                        let last = next.plus(count.saturating_sub(1));
                        self.waiters.push_back(ProposalWaiter {
                            term: ticket.term,
                            first: next,
                            last,
                            started: proposal.started,
                            responder: proposal.responder,
                        });
                        next = last.next();
                    }
                }
                Err(crate::core::ProposeError::Overloaded) => {
                    self.overloaded = true;
                    return;
                }
                Err(error) => {
                    let error = NodeError::from(error);
                    for proposal in self.queued.drain(..take) {
                        let (route, answer) = proposal.responder.failure(error.clone());
                        self.outbox.push(route, answer);
                    }
                }
            }
        }
    }

    fn core_limits(&self) -> (usize, usize) {
        let limits = self.wire_limits.batch;
        (limits.entries_max as usize, limits.bytes_max as usize)
    }

    fn wal(&self) -> Result<&Wal, NodeError> {
        self.wal
            .as_deref()
            .ok_or_else(|| NodeError::Storage("the log is closed".to_owned()))
    }

    fn drain_completions(&mut self) -> Result<(), NodeError> {
        let mut durable = None;
        for _ in 0..DRAIN_PER_SOURCE_MAX {
            match self.wal_completions.try_recv() {
                Ok(Completion::Durable(report)) => durable = Some(report),
                Ok(Completion::Poisoned(reason)) => return Err(NodeError::Storage(reason)),
                Err(_) => break,
            }
        }
        let Some(durable) = durable else {
            return Ok(());
        };
        let now = Instant::now();
        let mut latest_hard_state = None;
        let mut writes = 0;
        while let Some(write) = self.pending_writes.front() {
            if write.sequence > durable.sequence {
                break;
            }
            if let Some(hard_state) = write.hard_state {
                latest_hard_state = Some(hard_state);
            }
            writes += 1;
            self.shared
                .log_durable_latency
                .record(now.duration_since(write.submitted), 1);
            self.pending_writes.pop_front();
        }
        if let Some(hard_state) = latest_hard_state {
            self.core.handle_hard_state_durable(hard_state);
        }
        if writes > 0 {
            if let Some(last) = durable.last {
                self.core
                    .handle_log_durable(LogId::new(Term(last.term), LogIndex(last.index)));
            }
        }
        Ok(())
    }

    /// Carries out every action the core has, in order.
    fn dispatch(&mut self) -> Result<(), NodeError> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::PersistHardState(hard_state) => {
                    let sequence = self
                        .wal()?
                        .save_hard_state(barge_wal::HardState {
                            term: hard_state.term.0,
                            vote: hard_state.vote.map(|vote| vote.0),
                            commit: self.core.commit_index().0,
                        })
                        .map_err(storage_error)?;
                    self.pending_writes.push_back(PendingWrite {
                        sequence,
                        hard_state: Some(hard_state),
                        submitted: Instant::now(),
                    });
                }
                Action::TruncateSuffix { after } => {
                    let sequence = self
                        .wal()?
                        .truncate_suffix(after.0 + 1)
                        .map_err(storage_error)?;
                    self.pending_writes.push_back(PendingWrite {
                        sequence,
                        hard_state: None,
                        submitted: Instant::now(),
                    });
                }
                Action::AppendBatches(batches) => {
                    let submitted = Instant::now();
                    let mut sequence = 0;
                    for batch in batches {
                        sequence = self
                            .wal()?
                            .append(
                                batch.first().0,
                                batch.last().0,
                                batch.term().0,
                                batch.bytes().clone(),
                            )
                            .map_err(storage_error)?;
                    }
                    self.pending_writes.push_back(PendingWrite {
                        sequence,
                        hard_state: None,
                        submitted,
                    });
                }
                // The core asks for this right after a snapshot is created,
                // and that snapshot's job compacts up to it once its file is
                // durable (compaction is optional, so nothing else is due).
                Action::CompactLog { .. } => {}
                Action::Send { to, message } => self.send(to, message),
                Action::Apply {
                    first,
                    last,
                    batches,
                } => self.apply(first, last, &batches)?,
                Action::ResolveReads { reads, index } => {
                    for read in reads {
                        if let Some(responder) = self.reads.remove(&read.0) {
                            let _ = responder.send(Ok(index));
                        }
                    }
                }
                Action::RejectReads { reads, leader_hint } => {
                    for read in reads {
                        if let Some(responder) = self.reads.remove(&read.0) {
                            let _ = responder.send(Err(NodeError::NotLeader { leader_hint }));
                        }
                    }
                }
                Action::RequestSnapshot => self.take_snapshot()?,
                Action::InstallSnapshot {
                    snapshot,
                    keep_suffix,
                } => self.install_snapshot(snapshot, keep_suffix)?,
            }
        }
        Ok(())
    }

    fn send(&self, to: NodeId, message: Message) {
        let class = match &message.body {
            MessageBody::Append { .. } => TrafficClass::Entries,
            MessageBody::InstallSnapshot(_) => TrafficClass::Snapshot,
            _ => TrafficClass::Control,
        };
        match wire::encode(&message) {
            Ok(chunks) => {
                // Refusals (queue full, peer down) are counted by the
                // transport; Raft retries lost messages.
                let _ = self
                    .transport
                    .send(PeerId(to.0), class, Frame::from(chunks));
            }
            Err(error) => tracing::error!(%error, to = to.0, "cannot encode a message"),
        }
    }

    fn apply(
        &mut self,
        first: LogIndex,
        last: LogIndex,
        batches: &[crate::core::Batch],
    ) -> Result<(), NodeError> {
        self.entries_scratch.clear();
        self.responses_scratch.clear();
        for batch in batches
            .iter()
            .filter(|batch| batch.last() >= first && batch.first() <= last)
        {
            self.entries_scratch.extend(batch.entries().filter(|entry| {
                entry.id.index >= first && entry.id.index <= last && entry.kind == EntryKind::Normal
            }));
        }
        if !self.entries_scratch.is_empty() {
            self.state_machine
                .apply(&self.entries_scratch, &mut self.responses_scratch);
            if self.responses_scratch.len() != self.entries_scratch.len() {
                return Err(NodeError::Storage(format!(
                    "state machine returned {} responses for {} entries",
                    self.responses_scratch.len(),
                    self.entries_scratch.len()
                )));
            }
        }
        self.resolve_applied(last);
        self.core
            .handle_applied(last)
            .map_err(|error| NodeError::Storage(format!("driver bug: {error}")))?;
        self.overloaded = false;
        Ok(())
    }

    /// Answers the proposal and membership waiters that applying up to `last`
    /// decided, in one pass over the application entries just applied.
    ///
    /// Only an application entry of the waiter's term at the waiter's index
    /// completes it. A waiter whose index went to anything else (a new
    /// leader's no-op or membership entry, or an entry of another term) was
    /// overwritten: it fails with `ProposalDropped`.
    fn resolve_applied(&mut self, last: LogIndex) {
        let now = Instant::now();
        let leader_hint = self.core.leader();
        let mut latencies = LatencyRun::default();
        let applied = self
            .entries_scratch
            .drain(..)
            .zip(self.responses_scratch.drain(..));
        for (entry, response) in applied {
            let index = entry.id.index;
            while self
                .waiters
                .front()
                .is_some_and(|waiter| waiter.last < index)
            {
                let waiter = self.waiters.pop_front().expect("front checked above");
                let index = waiter.first;
                let (route, answer) = waiter
                    .responder
                    .failure(NodeError::ProposalDropped { index, leader_hint });
                self.outbox.push(route, answer);
            }
            let Some(waiter) = self.waiters.front_mut() else {
                continue;
            };
            if index < waiter.first {
                continue;
            }
            if entry.id.term != waiter.term {
                let waiter = self.waiters.pop_front().expect("front checked above");
                let (route, answer) = waiter
                    .responder
                    .failure(NodeError::ProposalDropped { index, leader_hint });
                self.outbox.push(route, answer);
                continue;
            }
            let response = match &mut waiter.responder.reply {
                Reply::Many(_, collected) => {
                    collected.push(response);
                    None
                }
                Reply::One(_) => Some(response),
            };
            if index == waiter.last {
                let waiter = self.waiters.pop_front().expect("front checked above");
                let count = waiter.last.0 - waiter.first.0 + 1;
                latencies.add(waiter.started, count, &self.shared, now);
                let answer = match waiter.responder.reply {
                    Reply::One(sender) => Answer::One(sender, Ok(response.unwrap_or_default())),
                    Reply::Many(sender, collected) => Answer::Many(sender, Ok(collected)),
                };
                self.outbox.push(waiter.responder.route, answer);
            }
        }
        latencies.flush(&self.shared, now);
        // A proposal whose last index is now applied without having matched
        // (its entries were overwritten, or skipped by a snapshot) failed.
        while self
            .waiters
            .front()
            .is_some_and(|waiter| waiter.last <= last)
        {
            let waiter = self.waiters.pop_front().expect("front checked above");
            let index = waiter.first;
            let (route, answer) = waiter
                .responder
                .failure(NodeError::ProposalDropped { index, leader_hint });
            self.outbox.push(route, answer);
        }
        let mut position = self.changes.len();
        while position > 0 {
            position -= 1;
            if self.changes[position].index > last {
                continue;
            }
            let change = self.changes.swap_remove(position);
            let result = if self.core.term_at(change.index) == Some(change.term) {
                Ok(change.index)
            } else {
                Err(NodeError::ProposalDropped {
                    index: change.index,
                    leader_hint,
                })
            };
            let _ = change.responder.send(result);
        }
    }

    /// Picks up a finished snapshot job; takes the snapshot the core asked
    /// for meanwhile (or that failed earlier and is due again), if any.
    fn finish_snapshot(&mut self) -> Result<(), NodeError> {
        if let Some(outcome) = self.snapshots.try_finish() {
            outcome?;
        }
        if self.snapshot_wanted
            && !self.snapshots.is_busy()
            && self.ticks >= self.snapshot_retry_tick
        {
            self.snapshot_wanted = false;
            self.take_snapshot()?;
        }
        Ok(())
    }

    /// Asks the state machine for a snapshot of its current state, gives it
    /// to the core, and hands the file write and the compaction after it to
    /// the `barge-snapshot` thread. While a previous job runs, the request
    /// waits for it instead.
    ///
    /// The snapshot is labelled with the core's applied index *now*, which
    /// is exactly what the state machine holds: every `Apply` is followed at
    /// once by `handle_applied`. (It once used the index the core had when it
    /// asked; `Apply` actions polled after the request had moved the state
    /// machine past it, so a restore re-applied those entries — caught by the
    /// chaos tool's log hashes.)
    fn take_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.core.applied_index();
        if self.snapshots.is_busy() {
            self.snapshot_wanted = true;
            return Ok(());
        }
        let data = match self.state_machine.snapshot() {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(%error, "state machine could not snapshot; retrying later");
                self.retry_snapshot_later();
                return Ok(());
            }
        };
        let Some(term) = self.core.term_at(applied) else {
            tracing::warn!(
                applied = applied.0,
                "snapshot point left the log; retrying later"
            );
            self.retry_snapshot_later();
            return Ok(());
        };
        let last = LogId::new(term, applied);
        if let Err(error) = self.core.handle_snapshot_created(last, data.clone()) {
            tracing::warn!(%error, "core refused the snapshot");
            return Ok(());
        }
        // The core now compacts its memory below the snapshot and queues a
        // CompactLog: the job makes the snapshot durable, then compacts.
        let meta =
            self.core
                .snapshot_meta()
                .cloned()
                .unwrap_or_else(|| crate::core::SnapshotMeta {
                    last,
                    membership: self.core.committed_membership().clone(),
                });
        let wal = Arc::clone(
            self.wal
                .as_ref()
                .ok_or_else(|| NodeError::Storage("the log is closed".to_owned()))?,
        );
        self.snapshots.submit(Snapshot { meta, data }, wal)
    }

    fn retry_snapshot_later(&mut self) {
        self.snapshot_wanted = true;
        self.snapshot_retry_tick = self.ticks + SNAPSHOT_RETRY_TICKS;
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, keep_suffix: bool) -> Result<(), NodeError> {
        let last = snapshot.meta.last;
        // A local snapshot still being written would overwrite this newer
        // file, and its worker shares the log this may replace: let it
        // finish first (installs are rare; the wait is one file write). A
        // request deferred behind it stays in `snapshot_wanted`.
        if let Some(outcome) = self.snapshots.wait() {
            outcome?;
        }
        storage::write_snapshot(&self.data_dir, &snapshot)
            .map_err(|error| NodeError::Storage(error.to_string()))?;
        self.state_machine
            .restore(snapshot.data.clone())
            .map_err(|error| NodeError::Storage(format!("state machine restore: {error}")))?;
        // Mirror the core's log change (§7), decided by the core: if its log
        // held the snapshot's last entry with its term it kept the entries
        // after it (and may already have acknowledged them), so the stored
        // log stays as it is. Otherwise the whole log is superseded and
        // replaced by an empty one that continues after the snapshot.
        if !keep_suffix {
            let old = self
                .wal
                .take()
                .ok_or_else(|| NodeError::Storage("the log is closed".to_owned()))?;
            // No snapshot job runs (waited for above), and the worker drops
            // its reference before reporting.
            let old = Arc::try_unwrap(old).map_err(|_| {
                NodeError::Storage(
                    "driver bug: the log is shared during a snapshot install".to_owned(),
                )
            })?;
            let wake = Arc::clone(&self.wal_wake);
            let hard_state = self.core.hard_state();
            let wal = storage::replace_log(
                &self.data_dir,
                old,
                &self.log_settings,
                hard_state,
                last.index.next(),
                move || wake.notify_one(),
            )
            .map_err(|error| NodeError::Storage(error.to_string()))?;
            self.wal_completions = wal.completions();
            self.wal = Some(Arc::new(wal));
            // The replaced log holds the current hard state durably; every
            // write pending in the old log is superseded by the snapshot.
            self.pending_writes.clear();
            self.core.handle_hard_state_durable(hard_state);
        }
        let leader_hint = self.core.leader();
        while self
            .waiters
            .front()
            .is_some_and(|waiter| waiter.first <= last.index)
        {
            let waiter = self.waiters.pop_front().expect("front checked above");
            let index = waiter.first;
            let (route, answer) = waiter
                .responder
                .failure(NodeError::ProposalDropped { index, leader_hint });
            self.outbox.push(route, answer);
        }
        self.core
            .handle_snapshot_installed(last)
            .map_err(|error| NodeError::Storage(format!("driver bug: {error}")))
    }

    fn fail(&mut self, error: NodeError) {
        tracing::error!(%error, "node stopped");
        self.shared.set_failed(error.clone());
        self.stop_waiters(error);
    }

    /// Answers everything pending from this thread (grouped answers
    /// included: the completer may never run again) and refuses what is
    /// still queued.
    fn stop_waiters(&mut self, error: NodeError) {
        self.outbox.send_here();
        for waiter in self.waiters.drain(..) {
            waiter.responder.failure(error.clone()).1.send();
        }
        for proposal in self.queued.drain(..) {
            proposal.responder.failure(error.clone()).1.send();
        }
        for (_, responder) in self.reads.drain() {
            let _ = responder.send(Err(error.clone()));
        }
        for change in self.changes.drain(..) {
            let _ = change.responder.send(Err(error.clone()));
        }
        if let Some(transfer) = self.transfer.take() {
            let _ = transfer.responder.send(Err(error.clone()));
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            request.refuse(error.clone());
        }
    }
}

/// Commit latencies of consecutive proposals with the same start (drained
/// in one burst, which reads the clock once), recorded as one histogram
/// update instead of one per proposal.
#[derive(Default)]
struct LatencyRun {
    started: Option<Instant>,
    count: u64,
}

impl LatencyRun {
    fn add(&mut self, started: Instant, count: u64, shared: &Shared, now: Instant) {
        if self.started != Some(started) {
            self.flush(shared, now);
            self.started = Some(started);
        }
        self.count += count;
    }

    fn flush(&mut self, shared: &Shared, now: Instant) {
        if let Some(started) = self.started.take() {
            shared
                .commit_latency
                .record(now.duration_since(started), self.count);
            shared.proposals_committed(self.count);
            self.count = 0;
        }
    }
}

fn storage_error(error: barge_wal::WalError) -> NodeError {
    NodeError::Storage(error.to_string())
}
