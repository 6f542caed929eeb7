//! The client side of the binary protocol (`protocol`): pipelined
//! connections to node processes, and the router the proposers use when
//! the nodes run as separate processes.
//!
//! A [`Connection`] is shared by many proposers. Each request registers a
//! one-shot answer slot under a fresh id and queues its frame; one writer
//! task gathers every queued frame into one socket write (so a burst of
//! proposals reaches the node as one read, and becomes one batch there),
//! and one reader task hands each answer to its slot. When the connection
//! fails, every waiting request fails with [`NodeError::Stopped`], and so
//! does every later one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use barge::core::NodeId;
use barge::node::NodeError;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::protocol::{self, Frame};

/// Frames queued for the writer before requests wait.
const OUTGOING_MAX: usize = 65_536;
/// Bytes gathered per socket write.
const WRITE_BYTES_TARGET: usize = 256 << 10;
/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 << 10;
/// The longest answer accepted: a proposal's response is empty (counting
/// state machine), a stats answer is 136 bytes, messages are short.
const ANSWER_BYTES_MAX: usize = 64 << 10;

type Slots = HashMap<u64, oneshot::Sender<Frame>, BuildHasherDefault<IdHasher>>;

/// Hashes request ids, which this process numbers 1, 2, 3, ... itself (no
/// peer chooses them, so no flooding defence is needed): one multiplication
/// instead of SipHash, which showed in profiles at one insert and one
/// removal per proposal. The odd multiplier makes the low bits (the bucket)
/// of consecutive ids distinct and mixes the high bits (hashbrown's tags).
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; fold anything else in.
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Answer slots, and whether the connection has failed (then no new slot
/// may be registered, or it would never be answered).
#[derive(Debug, Default)]
struct Pending {
    slots: Slots,
    closed: bool,
}

/// One pipelined connection to a node process.
#[derive(Debug)]
pub struct Connection {
    node: NodeId,
    outgoing: mpsc::Sender<(u64, u8, Bytes)>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    tasks: [AbortHandle; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects to node `node` at `address`.
    ///
    /// # Errors
    /// The TCP connection could not be made.
    pub async fn open(node: NodeId, address: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to node {node} at {address}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (reader, writer) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (outgoing, queue) = mpsc::channel(OUTGOING_MAX);
        let written = tokio::spawn(write_requests(writer, queue, Arc::clone(&pending)));
        let read = tokio::spawn(read_answers(reader, Arc::clone(&pending)));
        Ok(Connection {
            node,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            tasks: [written.abort_handle(), read.abort_handle()],
        })
    }

    /// Sends one request and waits for its answer.
    ///
    /// # Errors
    /// [`NodeError::Stopped`] if the connection failed before the answer.
    pub async fn request(&self, kind: u8, body: Bytes) -> Result<Frame, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (slot, answer) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if pending.closed {
                return Err(NodeError::Stopped);
            }
            pending.slots.insert(id, slot);
        }
        if self.outgoing.send((id, kind, body)).await.is_err() {
            self.pending.lock().slots.remove(&id);
            return Err(NodeError::Stopped);
        }
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// Proposes one entry; the node's refusals become the [`NodeError`]s an
    /// in-process node would return, so the proposers treat both alike.
    ///
    /// # Errors
    /// As [`barge::node::Node::propose`]; a failure answer becomes
    /// [`NodeError::Invalid`] with the node's message.
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, NodeError> {
        let frame = self.request(protocol::KIND_PROPOSE, payload).await?;
        let hint = || protocol::redirect_leader(&frame.body).ok().flatten();
        match frame.code {
            protocol::STATUS_OK => Ok(frame.body.clone()),
            protocol::STATUS_NOT_LEADER => Err(NodeError::NotLeader {
                leader_hint: hint(),
            }),
            protocol::STATUS_OVERLOADED => Err(NodeError::Overloaded),
            protocol::STATUS_DROPPED => Err(NodeError::ProposalDropped {
                index: barge::core::LogIndex(0),
                leader_hint: hint(),
            }),
            protocol::STATUS_FAILURE => Err(NodeError::Invalid(format!(
                "node {}: {}",
                self.node,
                String::from_utf8_lossy(&frame.body)
            ))),
            other => Err(NodeError::Invalid(format!(
                "node {}: unknown answer status {other}",
                self.node
            ))),
        }
    }

    /// The node's metrics (the part the report uses).
    ///
    /// # Errors
    /// A failed connection, a refusal, or a malformed answer.
    pub async fn stats(&self) -> Result<barge::node::Metrics> {
        let frame = self
            .request(protocol::KIND_STATS, Bytes::new())
            .await
            .with_context(|| format!("asking node {} for its stats", self.node))?;
        if frame.code != protocol::STATUS_OK {
            anyhow::bail!(
                "node {} refused stats: status {} {}",
                self.node,
                frame.code,
                String::from_utf8_lossy(&frame.body)
            );
        }
        protocol::decode_stats(&frame.body)
    }
}

/// Fails every waiting request and refuses later ones.
fn close(pending: &Mutex<Pending>) {
    let mut pending = pending.lock();
    pending.closed = true;
    // Dropping the senders wakes their receivers with an error.
    pending.slots.clear();
}

async fn write_requests(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<(u64, u8, Bytes)>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut out = BytesMut::with_capacity(WRITE_BYTES_TARGET);
    while let Some((id, kind, body)) = queue.recv().await {
        protocol::encode(&mut out, id, kind, &body);
        // The first request's sender woke this task, and tokio runs a task
        // woken that way right after the waker (its "LIFO slot"): writing
        // now would send that one request alone, then the next, one system
        // call each. Yielding lets every proposer already runnable (all
        // those one read of answers woke) queue its request first, so they
        // leave in one write and reach the node as one batch.
        tokio::task::yield_now().await;
        while out.len() < WRITE_BYTES_TARGET {
            let Ok((id, kind, body)) = queue.try_recv() else {
                break;
            };
            protocol::encode(&mut out, id, kind, &body);
        }
        if writer.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
    }
    close(&pending);
}

async fn read_answers(mut reader: OwnedReadHalf, pending: Arc<Mutex<Pending>>) {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    'reading: loop {
        buffer.reserve(READ_BYTES);
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut pending = pending.lock();
        loop {
            match protocol::take_frame(&mut buffer, ANSWER_BYTES_MAX) {
                Ok(Some(frame)) => {
                    // Id 0 is the node closing the connection with a reason.
                    if frame.id == 0 && frame.code == protocol::STATUS_FAILURE {
                        eprintln!(
                            "node closed a client connection: {}",
                            String::from_utf8_lossy(&frame.body)
                        );
                        break 'reading;
                    }
                    if let Some(slot) = pending.slots.remove(&frame.id) {
                        let _ = slot.send(frame);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    eprintln!("bad answer from a node: {error:#}");
                    break 'reading;
                }
            }
        }
    }
    close(&pending);
}

/// Where proposers send when the nodes are processes: one or more connections
/// per node, used in turn, and the node believed to lead.
#[derive(Debug)]
pub struct RemoteRouter {
    /// Node `NodeId(i + 1)`'s connections at index `i`.
    nodes: Vec<Vec<Connection>>,
    leader: AtomicUsize,
    turn: AtomicUsize,
}

impl RemoteRouter {
    /// Opens `per_node` connections to each node's client address
    /// (`addresses[i]` is node `i + 1`'s).
    ///
    /// # Errors
    /// A connection that could not be made.
    pub async fn connect(addresses: &[SocketAddr], per_node: usize) -> Result<RemoteRouter> {
        anyhow::ensure!(!addresses.is_empty(), "no node to connect to");
        let mut nodes = Vec::with_capacity(addresses.len());
        for (index, address) in addresses.iter().enumerate() {
            let id = NodeId(index as u64 + 1);
            let mut connections = Vec::with_capacity(per_node);
            for _ in 0..per_node.max(1) {
                connections.push(Connection::open(id, *address).await?);
            }
            nodes.push(connections);
        }
        Ok(RemoteRouter {
            nodes,
            leader: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
        })
    }

    /// Proposes on the next connection to the node believed to lead.
    ///
    /// # Errors
    /// As [`Connection::propose`].
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, NodeError> {
        let leader = self
            .leader
            .load(Ordering::Relaxed)
            .min(self.nodes.len() - 1);
        let connections = &self.nodes[leader];
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        connections[turn % connections.len()].propose(payload).await
    }

    /// Follows a hint; without one, tries the next node. Returns whether the
    /// target changed.
    pub fn redirect(&self, hint: Option<NodeId>) -> bool {
        let count = self.nodes.len();
        let target = match hint.and_then(|id| usize::try_from(id.0).ok()?.checked_sub(1)) {
            Some(index) if index < count => index,
            Some(_) => return false,
            None => (self.leader.load(Ordering::Relaxed) + 1) % count,
        };
        self.leader.swap(target, Ordering::Relaxed) != target
    }

    pub fn target(&self) -> NodeId {
        NodeId(self.leader.load(Ordering::Relaxed) as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn consecutive_ids_hash_to_distinct_buckets_and_spread_tags() {
        let hasher = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=1024u64).map(|id| hasher.hash_one(id)).collect();
        let mut buckets: Vec<u64> = hashes.iter().map(|hash| hash & 1023).collect();
        buckets.sort_unstable();
        buckets.dedup();
        assert_eq!(
            buckets.len(),
            1024,
            "a table of 1024 buckets has no collision"
        );
        // hashbrown's 7-bit tags come from the top bits: all 128 appear.
        let mut tags: Vec<u64> = hashes.iter().map(|hash| hash >> 57).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 128);
    }
}
