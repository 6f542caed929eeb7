//! The node: the core, the log and the transport on a few named threads,
//! and the embedding API.
//!
//! # Threads
//!
//! - `barge-raft` owns the core, the state machine and the log handle. Its
//!   loop (see `driver`) wakes on a request, a frame, a log completion or a
//!   tick, drains everything queued, and carries out the core's actions in
//!   batches. Proposals queued while it worked become one batch.
//! - `barge-wal` (and `barge-wal-prep`) belong to the log: group commit
//!   through io_uring, completions back over a channel plus a wake-up.
//! - `barge-net` runs the QUIC endpoint (one Tokio worker): connections,
//!   streams, TLS. Frames reach the Raft thread through bounded queues.
//! - `barge-snapshot` makes snapshots durable off the Raft thread: the Raft
//!   thread asks the state machine for its bytes (`StateMachine::snapshot`)
//!   and gives them to the core, then hands the file write (fsync, rename,
//!   directory fsync) and the log's compaction below it to this thread, one
//!   job at a time; compaction starts only once the file is durable. The
//!   outcome comes back through the log's wake-up. A snapshot the core asks
//!   for while a job runs is taken when it finishes.
//! - One *completer* task on the callers' runtime (not a thread of the
//!   node; see `completion`): the Raft thread hands it the answers of each
//!   loop iteration at once, and it sends them from inside that runtime.
//!   Started by the first proposal from a multi-thread runtime; callers on
//!   any other runtime are answered by the Raft thread directly.
//!
//! Callers talk to `barge-raft` through one bounded request queue
//! ([`NodeConfig::request_queue_max`]): when it is full, `propose` waits;
//! when the core's uncommitted bytes are at their bound, the Raft thread
//! stops taking requests until entries commit, so callers wait again. Memory
//! stays bounded by those two limits and the transport's queues.
//!
//! # Data path
//!
//! The leader encodes each batch once (`crate::core::Batch`): the same
//! `Bytes` are submitted to its log and sent to every follower as the bulk
//! chunks of a frame; a follower's log writes the received bytes as they
//! are.
//!
//! # What one proposal costs
//!
//! Everything the Raft thread, the log and the transport do is per batch,
//! message or fsync, not per entry: one clock read per drained burst, one
//! `handle_propose` per batch, one log submission, one frame per follower,
//! one `StateMachine::apply` per committed range. What remains per entry is
//! the caller's side of [`Node::propose`]: one allocation (the answer's
//! oneshot channel), one permit of the bounded request queue, one look-up of
//! the caller's runtime (to decide how its answer travels), and one wake-up
//! of the calling task when the answer is sent. That wake-up is cheap when
//! it comes from the completer, a worker of the caller's own runtime (a push
//! onto that worker's run queue); the Raft thread itself pays one lock and
//! at most one foreign wake-up per iteration, not per answer. Bursts of fewer
//! than four answers (a lone proposer) skip the completer and are sent by
//! the Raft thread, so they do not pay an extra task hop.
//! [`Node::propose_batch`] pays the per-call costs once per call. Measured
//! with 1024 closed-loop proposers of 64 B (3 nodes in one process, `perf
//! stat`, before the completer): about 0.16 system calls, 0.09 context
//! switches and 1.8 heap allocations per committed entry, all threads and
//! nodes together, of which 1.0 allocation is that oneshot (the completer
//! adds none: its two queues swap and keep their capacity). With the
//! completer, in 12 interleaved pairs of `barge-loadgen run --baseline`
//! on a shared machine (load 6-15), medians of CPU per committed entry:
//! `barge-raft` 0.59 µs against 0.80 µs before, the whole process 2.6 µs
//! against 2.9 µs; throughput median 433k against 391k entries/s (single
//! pairs vary by ±30 %; the completer won 7 of 12, and at load 6-8 the
//! CPU difference was within the noise).
//!
//! # Example
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use barge::node::{Node, NodeConfig, StateMachine};
//! use barge::core::{Entry, NodeId};
//! use bytes::Bytes;
//!
//! struct Counter(u64);
//! impl StateMachine for Counter {
//!     fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>) {
//!         for _ in entries {
//!             self.0 += 1;
//!             responses.push(Bytes::from(self.0.to_le_bytes().to_vec()));
//!         }
//!     }
//!     fn snapshot(&mut self) -> Result<Bytes, String> { Ok(Bytes::from(self.0.to_le_bytes().to_vec())) }
//!     fn restore(&mut self, data: Bytes) -> Result<(), String> {
//!         self.0 = u64::from_le_bytes(data[..].try_into().map_err(|_| "bad snapshot")?);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(identity: barge_net::NodeIdentity) -> Result<(), Box<dyn std::error::Error>> {
//! let config = NodeConfig::new(
//!     NodeId(1), 7, "127.0.0.1:7001".parse()?,
//!     BTreeMap::from([(NodeId(2), "127.0.0.1:7002".parse()?), (NodeId(3), "127.0.0.1:7003".parse()?)]),
//!     "/var/lib/barge/1".into(), identity,
//! );
//! let node = Node::start(config, Counter(0)).await?;
//! let response = node.propose(Bytes::from_static(b"increment")).await?;
//! let read_index = node.read_index().await?; // then read local state
//! println!("{response:?} {read_index:?} {:?}", node.metrics().leader);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

mod completion;
mod config;
mod driver;
mod error;
mod http;
mod metrics;
mod snapshots;
mod state_machine;
mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use barge_net::{ClusterId, PeerId, QuicTransport, Transport};
use barge_wal::Wal;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};

pub use config::{ConfigError, LogOptions, NodeConfig, StartMode};
pub use error::{NodeError, StartError};
pub use metrics::{HistogramSnapshot, Metrics};
pub use state_machine::StateMachine;

use crate::core::{LogIndex, MembershipChange, NodeId, Raft};
use crate::wire::WireLimits;
use completion::{Completions, Route};
use metrics::Histogram;

/// A request from the API to the Raft thread.
pub(crate) enum Request {
    Propose {
        payload: Bytes,
        responder: oneshot::Sender<Result<Bytes, NodeError>>,
        route: Route,
    },
    ProposeBatch {
        payloads: Vec<Bytes>,
        responder: oneshot::Sender<Result<Vec<Bytes>, NodeError>>,
        route: Route,
    },
    Read {
        responder: oneshot::Sender<Result<LogIndex, NodeError>>,
    },
    ChangeMembership {
        change: MembershipChange,
        responder: oneshot::Sender<Result<LogIndex, NodeError>>,
    },
    AddLearner {
        learner: NodeId,
        responder: oneshot::Sender<Result<LogIndex, NodeError>>,
    },
    TransferLeadership {
        target: NodeId,
        responder: oneshot::Sender<Result<(), NodeError>>,
    },
}

impl Request {
    fn refuse(self, error: NodeError) {
        match self {
            Request::Propose { responder, .. } => {
                let _ = responder.send(Err(error));
            }
            Request::ProposeBatch { responder, .. } => {
                let _ = responder.send(Err(error));
            }
            Request::Read { responder }
            | Request::ChangeMembership { responder, .. }
            | Request::AddLearner { responder, .. } => {
                let _ = responder.send(Err(error));
            }
            Request::TransferLeadership { responder, .. } => {
                let _ = responder.send(Err(error));
            }
        }
    }
}

/// State shared between the API and the Raft thread.
pub(crate) struct Shared {
    id: NodeId,
    started: Instant,
    published_nanos: AtomicU64,
    metrics: Mutex<Option<Metrics>>,
    failed: Mutex<Option<NodeError>>,
    /// Set once `failed` holds an error: every request checks it, and a
    /// load is cheaper than taking the lock on each proposal.
    has_failed: AtomicBool,
    /// Wakes [`Node::failed`] once `failed` is set.
    failure_notify: Notify,
    commit_latency: Histogram,
    log_durable_latency: Histogram,
    proposals_committed: AtomicU64,
    frames_rejected: AtomicU64,
}

/// Metrics are rebuilt at most this often outside ticks (the rebuild
/// allocates; the hot path must not pay for it on every wake-up).
const PUBLISH_INTERVAL_NANOS: u64 = 5_000_000;

impl Shared {
    fn new(id: NodeId) -> Shared {
        Shared {
            id,
            started: Instant::now(),
            published_nanos: AtomicU64::new(0),
            metrics: Mutex::new(None),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            failure_notify: Notify::new(),
            commit_latency: Histogram::default(),
            log_durable_latency: Histogram::default(),
            proposals_committed: AtomicU64::new(0),
            frames_rejected: AtomicU64::new(0),
        }
    }

    fn frame_rejected(&self) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn proposals_committed(&self, count: u64) {
        self.proposals_committed.fetch_add(count, Ordering::Relaxed);
    }

    fn set_failed(&self, error: NodeError) {
        self.failed.lock().get_or_insert(error);
        // Release: a reader that sees the flag then finds the error.
        self.has_failed.store(true, Ordering::Release);
        self.failure_notify.notify_waiters();
    }

    fn failure(&self) -> Option<NodeError> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        self.failed.lock().clone()
    }

    async fn failed(&self) -> NodeError {
        loop {
            let mut notified = std::pin::pin!(self.failure_notify.notified());
            // Registered before the check: a failure set in between still
            // wakes this waiter.
            notified.as_mut().enable();
            if let Some(error) = self.failure() {
                return error;
            }
            notified.await;
        }
    }

    fn publish(&self, core: &Raft, wal: Option<&Wal>, transport: &QuicTransport, force: bool) {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.published_nanos.load(Ordering::Relaxed);
        if !force && now.saturating_sub(last) < PUBLISH_INTERVAL_NANOS {
            return;
        }
        self.published_nanos.store(now, Ordering::Relaxed);
        let core_metrics = core.metrics();
        let log = wal.map(Wal::metrics);
        let metrics = Metrics {
            id: self.id,
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            leader_changes: core_metrics.leader_changes,
            elections_started: core_metrics.elections_started,
            pre_votes_started: core_metrics.pre_votes_started,
            followers_went_back: core_metrics.followers_went_back,
            uncommitted_entries: core_metrics.uncommitted_entries,
            uncommitted_bytes: core_metrics.uncommitted_bytes,
            commit_index: core.commit_index(),
            applied_index: core.applied_index(),
            last_log_index: core.last_log_id().index,
            membership: core.membership().clone(),
            proposals_committed: self.proposals_committed.load(Ordering::Relaxed),
            proposals_overloaded: core_metrics.proposals_overloaded,
            commit_latency: self.commit_latency.snapshot(),
            log_durable_latency: self.log_durable_latency.snapshot(),
            fsyncs: log.as_ref().map_or(0, |log| log.syncs),
            fsync_micros_mean: log.as_ref().map_or(0.0, |log| log.sync_micros_mean),
            fsync_micros_max: log.as_ref().map_or(0.0, |log| log.sync_micros_max),
            log_batches: log.as_ref().map_or(0, |log| log.batches),
            log_batches_per_group_mean: log.as_ref().map_or(0.0, |log| log.batches_per_group_mean),
            inflight_bytes: core_metrics.inflight_bytes,
            snapshots_sent: core_metrics.snapshots_sent,
            snapshots_installed: core_metrics.snapshots_installed,
            repair_pending: core_metrics.repair_floor.map_or(0, |floor| floor.index.0),
            messages_rejected: core_metrics.messages_rejected,
            frames_rejected: self.frames_rejected.load(Ordering::Relaxed),
            transport: transport.counters(),
        };
        *self.metrics.lock() = Some(metrics);
    }
}

/// What `shutdown` needs to stop the threads.
struct Control {
    shutdown: oneshot::Sender<()>,
    raft_thread: std::thread::JoinHandle<Option<Wal>>,
    transport: Arc<QuicTransport>,
    net_runtime: tokio::runtime::Runtime,
}

/// A running Raft node. Cheap to share behind an `Arc`; every method takes
/// `&self`.
pub struct Node {
    id: NodeId,
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    /// Groups proposal answers per caller runtime (see `completion`).
    completions: Arc<Completions>,
    control: Mutex<Option<Control>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Validates `config`, recovers the data directory, restores the state
    /// machine from the latest snapshot, starts the transport and the Raft
    /// thread. Returns once the node is running (it may not know a leader
    /// yet).
    ///
    /// # Errors
    /// [`StartError`] naming the file, setting or address at fault.
    ///
    /// # Panics
    /// If awaited outside a Tokio runtime (a refused start cleans up on
    /// `spawn_blocking`; so does [`Node::shutdown`]).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future mid-start may leave threads that
    /// stop only when the process exits.
    pub async fn start(
        config: NodeConfig,
        state_machine: impl StateMachine,
    ) -> Result<Node, StartError> {
        Node::start_boxed(config, Box::new(state_machine)).await
    }

    async fn start_boxed(
        config: NodeConfig,
        mut state_machine: Box<dyn StateMachine>,
    ) -> Result<Node, StartError> {
        config.validate()?;
        let id = config.id;
        let shared = Arc::new(Shared::new(id));
        let net_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("barge-net")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        // Every failure from here on goes through `abandon`: dropping the
        // runtime in place panics when `start` runs on an async worker.
        let metrics_listener = match config
            .metrics_listen
            .map(|address| bind_metrics(address, &net_runtime))
            .transpose()
        {
            Ok(listener) => listener,
            Err(error) => return Err(abandon(net_runtime, None, error).await),
        };
        let transport_config = transport_config(&config);
        let started = {
            let _context = net_runtime.enter();
            QuicTransport::start(transport_config)
        };
        let (transport, incoming) = match started {
            Ok(started) => started,
            Err(error) => {
                let error = StartError::Transport(error.to_string());
                return Err(abandon(net_runtime, None, error).await);
            }
        };
        let transport = Arc::new(transport);
        if let Some(listener) = metrics_listener {
            net_runtime.spawn(http::serve(listener, Arc::clone(&shared)));
        }

        let (requests_sender, requests) = mpsc::channel(config.request_queue_max);
        let (ready_sender, ready) = oneshot::channel();
        let (shutdown_sender, shutdown) = oneshot::channel();
        let wal_wake = Arc::new(Notify::new());
        let thread_shared = Arc::clone(&shared);
        let thread_transport = Arc::clone(&transport);
        let completions = Completions::new();
        let thread_completions = Arc::clone(&completions);
        let raft_thread = std::thread::Builder::new()
            .name("barge-raft".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_sender.send(Err(StartError::Runtime(error)));
                        return None;
                    }
                };
                let settings = storage::LogSettings::from_config(&config);
                let wake = Arc::clone(&wal_wake);
                let recovered = storage::recover(&config, &settings, move || wake.notify_one());
                let (recovered, snapshot) = match recovered {
                    Ok(recovered) => recovered,
                    Err(error) => {
                        let _ = ready_sender.send(Err(error));
                        return None;
                    }
                };
                if let Some(snapshot) = snapshot {
                    if let Err(error) = state_machine.restore(snapshot.data) {
                        let _ = ready_sender.send(Err(StartError::Restore(error)));
                        return recovered.wal.shutdown().ok().map(|()| None).unwrap_or(None);
                    }
                }
                let seed = config.rng_seed.unwrap_or_else(|| {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
                    nanos ^ id.0.rotate_left(32)
                });
                let core = match Raft::new(id, config.raft.clone(), recovered.persisted, seed) {
                    Ok(core) => core,
                    Err(error) => {
                        let _ = ready_sender.send(Err(StartError::Recovery(error)));
                        let _ = recovered.wal.shutdown();
                        return None;
                    }
                };
                let wake = Arc::clone(&wal_wake);
                let snapshots =
                    match snapshots::SnapshotWorker::start(config.data_dir.clone(), move || {
                        wake.notify_one()
                    }) {
                        Ok(snapshots) => snapshots,
                        Err(error) => {
                            let _ = ready_sender.send(Err(StartError::Runtime(error)));
                            let _ = recovered.wal.shutdown();
                            return None;
                        }
                    };
                let wire_limits = wire_limits(&config);
                let election_timeout_ticks = config.raft.election_timeout_ticks_max;
                let driver = driver::Driver::new(
                    core,
                    recovered.wal,
                    wal_wake,
                    snapshots,
                    settings,
                    config.data_dir.clone(),
                    thread_transport,
                    incoming,
                    requests,
                    state_machine,
                    thread_shared,
                    wire_limits,
                    election_timeout_ticks,
                    thread_completions,
                );
                let _ = ready_sender.send(Ok(()));
                runtime.block_on(driver.run(config.tick_interval, shutdown))
            });
        let raft_thread = match raft_thread {
            Ok(thread) => thread,
            Err(error) => {
                let error = StartError::Runtime(error);
                return Err(abandon(net_runtime, Some(transport), error).await);
            }
        };
        let started = ready.await.unwrap_or_else(|_| {
            Err(StartError::Runtime(std::io::Error::other(
                "the barge-raft thread exited during start",
            )))
        });
        if let Err(error) = started {
            // The thread reported its failure and is returning.
            let _ = raft_thread.join();
            return Err(abandon(net_runtime, Some(transport), error).await);
        }
        Ok(Node {
            id,
            requests: requests_sender,
            shared,
            completions,
            control: Mutex::new(Some(Control {
                shutdown: shutdown_sender,
                raft_thread,
                transport,
                net_runtime,
            })),
        })
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Request,
    ) -> Result<T, NodeError> {
        if let Some(error) = self.shared.failure() {
            return Err(error);
        }
        let (sender, receiver) = oneshot::channel();
        self.requests
            .send(make(sender))
            .await
            .map_err(|_| self.shared.failure().unwrap_or(NodeError::Stopped))?;
        receiver
            .await
            .unwrap_or_else(|_| Err(self.shared.failure().unwrap_or(NodeError::Stopped)))
    }

    /// Proposes one entry; resolves with the state machine's response once
    /// the entry is committed and applied on this node (the leader).
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] (with a hint), [`NodeError::Overloaded`],
    /// [`NodeError::ProposalDropped`] if a leader change overwrote it,
    /// [`NodeError::Storage`], [`NodeError::Stopped`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer, not the proposal: it may
    /// still commit.
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, NodeError> {
        let route = self.completions.route();
        self.request(|responder| Request::Propose {
            payload,
            responder,
            route,
        })
        .await
    }

    /// Proposes several entries as one unit of admission; resolves with one
    /// response per entry, in order, once all are applied. They commit
    /// together only if they fit one batch (`batch_entries_max`,
    /// `batch_bytes_max`); larger calls are refused as invalid.
    ///
    /// # Errors
    /// As [`Node::propose`].
    ///
    /// # Cancel safety
    /// As [`Node::propose`].
    pub async fn propose_batch(&self, payloads: Vec<Bytes>) -> Result<Vec<Bytes>, NodeError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let route = self.completions.route();
        self.request(|responder| Request::ProposeBatch {
            payloads,
            responder,
            route,
        })
        .await
    }

    /// A linearizable read barrier (ReadIndex, thesis §6.4): resolves with
    /// an index once this node's state machine has applied everything that
    /// was committed when the read began. Read local state after it returns.
    /// Works on followers too (they ask the leader).
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] if no leader could confirm the read,
    /// [`NodeError::Overloaded`], [`NodeError::Stopped`].
    ///
    /// # Cancel safety
    /// Cancel safe: nothing changes if the future is dropped.
    pub async fn read_index(&self) -> Result<LogIndex, NodeError> {
        self.request(|responder| Request::Read { responder }).await
    }

    /// Changes the voters and learners (joint consensus when more than one
    /// voter changes; the leader leaves the joint configuration by itself).
    /// Resolves when the first configuration entry is applied. Every new
    /// member must be in the address book ([`NodeConfig::peers`]).
    ///
    /// # Errors
    /// [`NodeError::NotLeader`], [`NodeError::ChangeInProgress`],
    /// [`NodeError::Invalid`], [`NodeError::ProposalDropped`].
    ///
    /// # Cancel safety
    /// The change may still happen if the future is dropped.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
    ) -> Result<LogIndex, NodeError> {
        let change = MembershipChange { voters, learners };
        self.request(|responder| Request::ChangeMembership { change, responder })
            .await
    }

    /// Adds a learner: it receives the log but does not vote.
    ///
    /// # Errors
    /// As [`Node::change_membership`].
    ///
    /// # Cancel safety
    /// As [`Node::change_membership`].
    pub async fn add_learner(&self, learner: NodeId) -> Result<LogIndex, NodeError> {
        self.request(|responder| Request::AddLearner { learner, responder })
            .await
    }

    /// Hands leadership to `target` (thesis §3.10); resolves once this node
    /// sees `target` lead.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`], [`NodeError::Invalid`] for a bad target,
    /// [`NodeError::TransferTimedOut`] after two election timeouts.
    ///
    /// # Cancel safety
    /// The transfer may still happen if the future is dropped.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), NodeError> {
        self.request(|responder| Request::TransferLeadership { target, responder })
            .await
    }

    /// The latest metrics (refreshed every tick and after work, at most every
    /// 5 ms). Before the first refresh, a default with this node's id.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.shared
            .metrics
            .lock()
            .clone()
            .unwrap_or_else(|| Metrics::empty(self.id))
    }

    /// The failure that stopped the node, if any.
    #[must_use]
    pub fn failure(&self) -> Option<NodeError> {
        self.shared.failure()
    }

    /// Resolves with the failure that stops the node (as [`Node::failure`]
    /// returns it) once there is one: a program can wait for it beside its
    /// other work instead of polling. Never resolves for a node that runs
    /// and stops without failing ([`Node::shutdown`] is not a failure).
    ///
    /// # Cancel safety
    /// Cancel safe: it only observes.
    pub async fn failed(&self) -> NodeError {
        self.shared.failed().await
    }

    /// Stops the node: pending requests fail with [`NodeError::Stopped`],
    /// the log is synced and closed, connections are closed, threads joined.
    /// Takes `&self` so a node shared behind an `Arc` can be stopped while
    /// other tasks still hold it: their calls then fail with
    /// [`NodeError::Stopped`]. A second call returns `Ok(())` at once.
    ///
    /// Dropping a `Node` without calling this stops it too, less gracefully
    /// (see its `Drop` impl).
    ///
    /// # Errors
    /// [`NodeError::Storage`] if the final sync failed (or the log had
    /// failed earlier).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped future leaves the shutdown half done.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let Some(control) = self.control.lock().take() else {
            return Ok(());
        };
        let _ = control.shutdown.send(());
        let raft_thread = control.raft_thread;
        let wal = tokio::task::spawn_blocking(move || raft_thread.join())
            .await
            .map_err(|_| NodeError::Stopped)?
            .map_err(|_| NodeError::Storage("the barge-raft thread panicked".to_owned()))?;
        let mut result = match self.shared.failure() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        if let Some(wal) = wal {
            let closed = tokio::task::spawn_blocking(move || wal.shutdown())
                .await
                .map_err(|_| NodeError::Stopped)?;
            if let Err(error) = closed {
                result = result.and(Err(NodeError::Storage(error.to_string())));
            }
        }
        let transport = control.transport;
        let _ = control
            .net_runtime
            .spawn(async move { transport.shutdown().await })
            .await;
        stop_runtime(control.net_runtime).await;
        result
    }
}

/// Binds the metrics listener (before anything else starts, so a taken
/// address costs nothing to undo).
fn bind_metrics(
    address: std::net::SocketAddr,
    runtime: &tokio::runtime::Runtime,
) -> Result<tokio::net::TcpListener, StartError> {
    let _context = runtime.enter();
    let io = |source| StartError::Io {
        path: format!("metrics listener {address}").into(),
        source,
    };
    let socket = std::net::TcpListener::bind(address).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    tokio::net::TcpListener::from_std(socket).map_err(io)
}

/// Undoes a partial start and returns its error. Runs on the caller's async
/// context, where blocking on or dropping the network runtime would panic:
/// the transport is closed from inside that runtime, which is then stopped
/// from a blocking thread.
async fn abandon(
    net_runtime: tokio::runtime::Runtime,
    transport: Option<Arc<QuicTransport>>,
    error: StartError,
) -> StartError {
    if let Some(transport) = transport {
        let _ = net_runtime
            .spawn(async move { transport.shutdown().await })
            .await;
    }
    stop_runtime(net_runtime).await;
    error
}

/// How long stopping the network runtime waits for its tasks to drop.
const RUNTIME_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Stops the network runtime and waits (bounded) until its tasks, and the
/// UDP socket they hold, are dropped, so the node's address can be bound
/// again as soon as `shutdown` (or a refused `start`) returns. Waits on a
/// blocking thread: blocking on or dropping a runtime from an async worker
/// panics.
async fn stop_runtime(runtime: tokio::runtime::Runtime) {
    let stopped =
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT)).await;
    if stopped.is_err() {
        tracing::warn!("the network runtime did not stop cleanly");
    }
}

impl Drop for Node {
    /// Stops a node that was not shut down: the Raft thread is told to stop
    /// and joined (it closes the log on its way out; an error closing it is
    /// lost, so prefer [`Node::shutdown`]), and the network runtime shuts
    /// down in the background, without a graceful close of connections,
    /// because dropping it in place panics when the drop happens on an async
    /// worker. Joining blocks for at most one loop iteration of the Raft
    /// thread plus the log's final sync.
    fn drop(&mut self) {
        if let Some(control) = self.control.get_mut().take() {
            let _ = control.shutdown.send(());
            let _ = control.raft_thread.join();
            control.net_runtime.shutdown_background();
        }
    }
}

/// The version a node announces in the transport's ALPN and handshake: the
/// transport's own protocol version in the high byte and the engine's wire
/// version in the low one. The handshake refuses a peer announcing another
/// version, so a change of either keeps nodes of two builds apart (wire
/// version 2 changed append answers in a way a version-1 decoder cannot
/// tell, see [`crate::wire::WIRE_VERSION`]).
const ANNOUNCED_VERSION: u16 = (barge_net::PROTOCOL_VERSION << 8) | crate::wire::WIRE_VERSION;
const _: () = assert!(barge_net::PROTOCOL_VERSION < 256 && crate::wire::WIRE_VERSION < 256);

fn transport_config(config: &NodeConfig) -> barge_net::Config {
    let peers: BTreeMap<PeerId, std::net::SocketAddr> = config
        .peers
        .iter()
        .map(|(id, address)| (PeerId(id.0), *address))
        .collect();
    let mut transport = barge_net::Config::new(
        PeerId(config.id.0),
        ClusterId(config.cluster),
        config.listen,
        peers,
        config.identity.clone(),
    );
    transport.protocol_version = ANNOUNCED_VERSION;
    // One append message holds up to append_bytes_max of batches plus one
    // more batch (the bound is soft), and a header.
    let frame = config.raft.append_bytes_max
        + u64::from(config.raft.batch_bytes_max)
        + config.raft.snapshot_chunk_bytes
        + (1 << 20);
    transport.frame_bytes_max = u32::try_from(frame)
        .unwrap_or(u32::MAX)
        .max(transport.frame_bytes_max);
    transport
}

fn wire_limits(config: &NodeConfig) -> WireLimits {
    let batch = config.raft.batch_limits();
    // One header per batch in an append; a batch holds at least one entry,
    // so entries_max per message bounds the batch count.
    let batches_max = u32::try_from(config.raft.append_bytes_max / 8)
        .unwrap_or(u32::MAX)
        .clamp(1024, 1 << 20);
    WireLimits {
        header_bytes_max: batches_max.saturating_mul(32).saturating_add(4096),
        batches_max,
        batch,
        snapshot_chunk_bytes_max: u32::try_from(config.raft.snapshot_chunk_bytes)
            .unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn failed_resolves_with_the_first_failure_set_before_or_while_waiting() {
        let shared = Arc::new(Shared::new(NodeId(1)));
        let waiter = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.failed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no failure yet");
        shared.set_failed(NodeError::Storage("fsync: EIO".to_owned()));
        shared.set_failed(NodeError::Stopped);
        let error = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the failure")
            .expect("the waiter does not panic");
        assert_eq!(error, NodeError::Storage("fsync: EIO".to_owned()));
        // A failure set before the wait resolves it at once.
        let again = tokio::time::timeout(Duration::from_secs(10), shared.failed()).await;
        assert_eq!(again, Ok(NodeError::Storage("fsync: EIO".to_owned())));
    }
}
