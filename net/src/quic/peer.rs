//! One peer: its bounded send queues, and the driver task that keeps one
//! connection to it (dialling with backoff, accepting, resolving duplicates)
//! and runs the stream writers and readers on that connection.
//!
//! # Connection state
//!
//! `Connecting` (startup: frames are queued) → `Connected` (frames queued and
//! written) → on failure `Down` (queue drained and counted, `send` refuses
//! with [`SendError::PeerDown`]) → `Connected` again once a dial or an
//! incoming connection completes its handshake.
//!
//! # Duplicates
//!
//! Both nodes may dial each other at once. Each side keeps, of two live
//! connections dialled by different sides, the one dialled by the lower node
//! id; both sides apply the same rule to the same pair of connections, so
//! they converge on one without further messages. Of two connections dialled
//! by the same side the newer wins: a node dials only without a connection,
//! so the dialler has already given the older one up (it restarted, or saw
//! it fail before we did). The replaced connection is closed at once and
//! the frames in flight on it are lost (Raft retries); to make this rare the
//! higher id of a pair dials `reconnect_backoff_min` later than the lower
//! one. An in-progress dial is never abandoned
//! half-way, which would leave the other side holding a connection this side
//! has forgotten.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::PeerId;
use crate::frame::{Frame, FrameKind, TrafficClass};
use crate::handshake::{CloseReason, HandshakeError, Hello, HELLO_BYTES};
use crate::tls::node_name;
use crate::transport::{Counters, SendError};

use super::streams::{self, QueueReceiver, ReadFailure};
use super::Shared;

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const DOWN: u8 = 2;

/// Stream priorities: control above entries above snapshots.
pub(crate) const PRIORITY_CONTROL: i32 = 16;
pub(crate) const PRIORITY_ENTRIES: i32 = 0;
pub(crate) const PRIORITY_SNAPSHOT: i32 = -16;

/// A connection that completed its handshake, with who dialled it.
#[derive(Debug)]
pub(crate) struct Established {
    pub(crate) connection: Connection,
    pub(crate) dialer: PeerId,
}

/// Per-peer state shared between `send` callers and the driver.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(crate) peer: PeerId,
    state: AtomicU8,
    /// Wire bytes (header + body) queued on the control queue.
    control_bytes: AtomicUsize,
    /// Wire bytes queued on the entries and snapshot queues together.
    data_bytes: AtomicUsize,
    control_bytes_max: usize,
    data_bytes_max: usize,
    senders: [mpsc::UnboundedSender<Frame>; 3],
    /// Held by the writer of the current connection; `Mutex` so a new
    /// connection's writer waits for the old one to be torn down.
    receivers: [Mutex<QueueReceiver>; 3],
}

impl PeerLink {
    pub(crate) fn new(peer: PeerId, control_bytes_max: usize, data_bytes_max: usize) -> PeerLink {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (entries_tx, entries_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot_rx) = mpsc::unbounded_channel();
        PeerLink {
            peer,
            state: AtomicU8::new(CONNECTING),
            control_bytes: AtomicUsize::new(0),
            data_bytes: AtomicUsize::new(0),
            control_bytes_max,
            data_bytes_max,
            // Unbounded channels, bounded in bytes by the budgets above:
            // `send` reserves wire bytes before pushing, writers release them after
            // writing.
            senders: [control_tx, entries_tx, snapshot_tx],
            receivers: [
                Mutex::new(control_rx),
                Mutex::new(entries_rx),
                Mutex::new(snapshot_rx),
            ],
        }
    }

    fn budget(&self, class: TrafficClass) -> (&AtomicUsize, usize) {
        match class {
            TrafficClass::Control => (&self.control_bytes, self.control_bytes_max),
            TrafficClass::Entries | TrafficClass::Snapshot => {
                (&self.data_bytes, self.data_bytes_max)
            }
        }
    }

    pub(crate) fn queue(&self, class: TrafficClass) -> &Mutex<QueueReceiver> {
        &self.receivers[class.index()]
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.control_bytes.load(Ordering::Acquire) + self.data_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn release(&self, class: TrafficClass, bytes: usize) {
        self.budget(class).0.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Reserves room and queues the frame; never waits.
    pub(crate) fn enqueue(
        &self,
        class: TrafficClass,
        frame: Frame,
        counters: &Counters,
    ) -> Result<(), SendError> {
        if self.state.load(Ordering::Acquire) == DOWN {
            Counters::add(&counters.frames_dropped, 1);
            return Err(SendError::PeerDown(self.peer));
        }
        let (budget, bytes_max) = self.budget(class);
        // Headers count too, so a flood of empty frames is bounded as well.
        let charge = frame.wire_bytes();
        let reserved = budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            (queued + charge <= bytes_max).then_some(queued + charge)
        });
        if let Err(queued_bytes) = reserved {
            Counters::add(&counters.sends_refused_full, 1);
            return Err(SendError::Full {
                peer: self.peer,
                queued_bytes,
                bytes_max,
            });
        }
        if self.senders[class.index()].send(frame).is_err() {
            budget.fetch_sub(charge, Ordering::AcqRel);
            return Err(SendError::Closed);
        }
        Ok(())
    }
}

/// The per-peer driver: owns the connection to `link.peer`.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    mut established: mpsc::Receiver<Established>,
) {
    let config = &shared.config;
    let preferred_dialer = config.node.min(link.peer);
    let mut shutdown = shared.shutdown.subscribe();
    let mut current: Option<(Established, Vec<JoinHandle<()>>)> = None;
    let mut dialing: Option<JoinHandle<Result<Connection, HandshakeError>>> = None;
    let mut backoff = config.reconnect_backoff_min;
    // The higher id of a pair dials a little later, so on a LAN the lower
    // id's dial usually lands first and no duplicate (whose replacement
    // loses the frames in flight on the replaced connection) is made.
    let dial_delay = if config.node > link.peer {
        config.reconnect_backoff_min
    } else {
        Duration::ZERO
    };
    let mut next_dial = Instant::now() + dial_delay;
    // Jitter only has to differ between nodes and restarts, not be secret:
    // seed from the pair and the wall clock.
    let clock_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut rng = SmallRng::seed_from_u64(clock_nanos ^ (config.node.0 << 32) ^ link.peer.0);

    loop {
        let incoming = tokio::select! {
            // Fixed order: a closed connection is noticed before a new one is
            // weighed against it.
            biased;
            _ = shutdown.changed() => break,
            reason = async { current.as_ref().expect("guarded by is_some").0.connection.closed().await }, if current.is_some() => {
                if let Some((_, tasks)) = current.take() {
                    retire(tasks).await;
                }
                Counters::add(&shared.counters.connections_lost, 1);
                tracing::debug!(peer = %link.peer, %reason, "connection lost");
                link.state.store(DOWN, Ordering::Release);
                streams::drain(&link, &shared.counters);
                // A connection that worked redials quickly: the peer probably
                // restarted.
                backoff = config.reconnect_backoff_min;
                next_dial = Instant::now() + dial_delay + jittered(&mut rng, backoff);
                None
            }
            Some(incoming) = established.recv() => Some(incoming),
            result = async { dialing.as_mut().expect("guarded by is_some").await }, if dialing.is_some() => {
                dialing = None;
                match result {
                    Ok(Ok(connection)) => Some(Established { connection, dialer: config.node }),
                    Ok(Err(error)) => {
                        Counters::add(&shared.counters.dial_failures, 1);
                        tracing::debug!(peer = %link.peer, %error, "dial failed");
                        if current.is_none() {
                            link.state.store(DOWN, Ordering::Release);
                            streams::drain(&link, &shared.counters);
                            next_dial = Instant::now() + dial_delay + jittered(&mut rng, backoff);
                            backoff = (backoff * 2).min(config.reconnect_backoff_max);
                        }
                        None
                    }
                    // The dial task panicked or was aborted at shutdown.
                    Err(_) => None,
                }
            }
            _ = tokio::time::sleep_until(next_dial), if current.is_none() && dialing.is_none() => {
                dialing = Some(tokio::spawn(dial(Arc::clone(&shared), link.peer)));
                None
            }
        };
        let Some(new) = incoming else { continue };
        let closed = |(old, _): &mut (Established, Vec<JoinHandle<()>>)| {
            old.connection.close_reason().is_some()
        };
        if let Some((_, tasks)) = current.take_if(closed) {
            // Closed, but its `closed()` branch has not run yet: a peer that
            // restarted is dialling again. Retire it as lost.
            retire(tasks).await;
            Counters::add(&shared.counters.connections_lost, 1);
        }
        let keep_new = match &current {
            None => true,
            // A node dials only when it has no connection, so a second dial
            // from the same side means that side gave the old one up (it
            // restarted, or saw the old one fail first): the newer one wins.
            Some((old, _)) if old.dialer == new.dialer => true,
            Some((old, _)) => new.dialer == preferred_dialer && old.dialer != preferred_dialer,
        };
        if !keep_new {
            new.connection
                .close(CloseReason::Duplicate.code(), CloseReason::Duplicate.text());
            continue;
        }
        if let Some((old, tasks)) = current.take() {
            old.connection
                .close(CloseReason::Duplicate.code(), CloseReason::Duplicate.text());
            retire(tasks).await;
            Counters::add(&shared.counters.connections_lost, 1);
        }
        let tasks = start_connection(&shared, &link, &new.connection).await;
        Counters::add(&shared.counters.connections_established, 1);
        tracing::debug!(peer = %link.peer, dialer = %new.dialer, "connection established");
        link.state.store(CONNECTED, Ordering::Release);
        backoff = config.reconnect_backoff_min;
        current = Some((new, tasks));
    }

    if let Some((old, tasks)) = current.take() {
        old.connection
            .close(CloseReason::Shutdown.code(), CloseReason::Shutdown.text());
        retire(tasks).await;
    }
    if let Some(dial) = dialing {
        dial.abort();
    }
}

/// Stops the tasks of a connection that was already closed. The first task
/// is the stream acceptor: with the connection closed it ends by itself and
/// stops its readers, and waiting for it means no frame of the old
/// connection is delivered after a frame of the next one. Writers are
/// aborted and awaited so their queues are free to drain or hand over.
async fn retire(tasks: Vec<JoinHandle<()>>) {
    let mut tasks = tasks.into_iter();
    if let Some(acceptor) = tasks.next() {
        let handle = acceptor.abort_handle();
        if tokio::time::timeout(RETIRE_WAIT, acceptor).await.is_err() {
            handle.abort();
        }
    }
    for task in tasks {
        task.abort();
        // Resolves as soon as the aborted task is dropped.
        let _ = task.await;
    }
}

/// Longest wait for a closed connection's readers to stop.
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Up to 50 % random jitter on top of `delay`.
fn jittered(rng: &mut SmallRng, delay: Duration) -> Duration {
    let jitter_max = delay.as_micros() as u64 / 2;
    let jitter = rng.random_range(0..=jitter_max);
    delay + Duration::from_micros(jitter)
}

/// Opens our streams (control first, then entries, so their stream ids tell
/// the receiver which is which) and spawns the writers and the reader.
async fn start_connection(
    shared: &Arc<Shared>,
    link: &Arc<PeerLink>,
    connection: &Connection,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(4);
    tasks.push(tokio::spawn(super::accept_streams(
        Arc::clone(shared),
        link.peer,
        connection.clone(),
    )));
    let opened = async {
        let control = connection.open_uni().await?;
        let entries = connection.open_uni().await?;
        Ok::<_, quinn::ConnectionError>((control, entries))
    };
    // A peer granting no stream credit must not stall this driver.
    let opened = tokio::time::timeout(shared.config.handshake_timeout, opened).await;
    let Ok(Ok((control, entries))) = opened else {
        connection.close(CloseReason::Stream.code(), CloseReason::Stream.text());
        // The driver sees the connection closed next.
        return tasks;
    };
    // Only fails on a closed stream; the first write reports that.
    let _ = control.set_priority(PRIORITY_CONTROL);
    let _ = entries.set_priority(PRIORITY_ENTRIES);
    let batch_max = shared.config.write_batch_bytes_max;
    for (class, stream) in [
        (TrafficClass::Control, control),
        (TrafficClass::Entries, entries),
    ] {
        tasks.push(tokio::spawn(streams::write_stream(
            Arc::clone(link),
            class,
            stream,
            connection.clone(),
            Arc::clone(&shared.counters),
            batch_max,
        )));
    }
    tasks.push(tokio::spawn(streams::write_snapshots(
        Arc::clone(link),
        connection.clone(),
        Arc::clone(&shared.counters),
        PRIORITY_SNAPSHOT,
    )));
    tasks
}

/// Dials `peer` and runs the dialer's half of the handshake.
async fn dial(shared: Arc<Shared>, peer: PeerId) -> Result<Connection, HandshakeError> {
    let config = &shared.config;
    // Drivers exist only for configured peers, so the lookup cannot fail.
    let address = config.peers[&peer];
    let attempt = async {
        let connecting = shared
            .endpoint
            .connect(address, &node_name(config.cluster, peer))
            .map_err(|error| HandshakeError::Connection(error.to_string()))?;
        let connection = connecting
            .await
            .map_err(|error| HandshakeError::Connection(error.to_string()))?;
        let result = dialer_handshake(&shared, &connection, peer).await;
        if let Err(error) = &result {
            if !matches!(error, HandshakeError::Connection(_)) {
                Counters::add(&shared.counters.peers_rejected, 1);
                tracing::warn!(%peer, %error, "peer refused: bad handshake reply");
                let reason = error.close_reason();
                connection.close(reason.code(), reason.text());
            }
        }
        result.map(|()| connection)
    };
    match tokio::time::timeout(config.handshake_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

async fn dialer_handshake(
    shared: &Shared,
    connection: &Connection,
    peer: PeerId,
) -> Result<(), HandshakeError> {
    let config = &shared.config;
    let lost = |error: &dyn std::fmt::Display| HandshakeError::Connection(error.to_string());
    let (mut send, receive) = connection.open_bi().await.map_err(|e| lost(&e))?;
    let hello = Hello {
        protocol_version: config.protocol_version,
        cluster: config.cluster,
        sender: config.node,
        receiver: peer,
    };
    streams::write_frame(
        &mut send,
        FrameKind::Handshake,
        Bytes::copy_from_slice(&hello.encode()),
    )
    .await
    .map_err(|e| lost(&e))?;
    let reply = read_hello(receive).await?;
    reply.check(config.protocol_version, config.cluster, config.node, peer)?;
    // Only fails if already finished.
    let _ = send.finish();
    Ok(())
}

/// Reads a handshake frame and decodes its hello.
pub(crate) async fn read_hello(stream: quinn::RecvStream) -> Result<Hello, HandshakeError> {
    let mut reader = streams::FrameReader::new(stream);
    match reader.next(HELLO_BYTES as u32, FrameKind::Handshake).await {
        Ok(body) => Hello::decode(&body),
        Err(ReadFailure::End) => Err(HandshakeError::Malformed("stream ended".to_owned())),
        Err(ReadFailure::Frame(error)) => Err(HandshakeError::Malformed(error.to_string())),
        Err(ReadFailure::Lost(error)) => Err(HandshakeError::Connection(error)),
    }
}
