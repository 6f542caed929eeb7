//! A local cluster of real nodes in this process: each node has its own
//! threads (`barge-raft`, the log's, `barge-net`), its own QUIC endpoint on
//! loopback with mutual TLS from a development CA, and its own data
//! directory with fsync on. The proposers talk to it through [`LocalRouter`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge::core::{Entry, NodeId, Role};
use barge::node::{Metrics, Node, NodeConfig, StartMode, StateMachine};
use barge_net::{Bytes, ClusterId, DevCa, PeerId};

const CLUSTER: u64 = 0x10ad;

/// The cheapest state machine that still does the work every replica must
/// do: count the entries, answer each with an empty response (no
/// allocation), snapshot the count.
#[derive(Debug, Default)]
pub struct Counter {
    applied: u64,
}

impl StateMachine for Counter {
    fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>) {
        self.applied += entries.len() as u64;
        responses.extend(std::iter::repeat_n(Bytes::new(), entries.len()));
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(&self.applied.to_le_bytes()))
    }

    fn restore(&mut self, snapshot: Bytes) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot[..]
            .try_into()
            .map_err(|_| format!("snapshot of {} bytes, expected 8", snapshot.len()))?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// The running nodes; node `NodeId(i + 1)` is at index `i`.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Arc<Vec<Node>>,
    /// Removed on drop, after the nodes have shut down.
    data: tempfile::TempDir,
}

/// Picks free UDP ports by binding and releasing them; the nodes bind them
/// again right after (a race with other programs is possible but rare, and
/// fails the start with a clear bind error).
fn free_addresses(count: u64) -> Result<BTreeMap<NodeId, SocketAddr>> {
    (1..=count)
        .map(|id| {
            let address = barge_net::ports::loopback_address().context("a loopback port")?;
            Ok((NodeId(id), address))
        })
        .collect()
}

impl LocalCluster {
    /// Starts `voters` nodes with data directories under a fresh temporary
    /// directory inside `parent`.
    pub async fn start(voters: u64, parent: &Path, fsync: bool) -> Result<LocalCluster> {
        let data = tempfile::Builder::new()
            .prefix("barge-run-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a data directory in {}", parent.display()))?;
        let ca = DevCa::generate(ClusterId(CLUSTER)).context("generating a development CA")?;
        let addresses = free_addresses(voters)?;
        let mut nodes = Vec::new();
        for (id, address) in &addresses {
            let peers = addresses
                .iter()
                .filter(|(peer, _)| *peer != id)
                .map(|(peer, address)| (*peer, *address))
                .collect();
            let identity = ca
                .issue(PeerId(id.0))
                .with_context(|| format!("issuing the certificate of node {id}"))?;
            let mut config = NodeConfig::new(
                *id,
                CLUSTER,
                *address,
                peers,
                data.path().join(format!("node-{}", id.0)),
                identity,
            );
            config.start = StartMode::New;
            config.log.fsync = fsync;
            let node = Node::start(config, Counter::default())
                .await
                .with_context(|| format!("starting node {id}"))?;
            nodes.push(node);
        }
        Ok(LocalCluster {
            nodes: Arc::new(nodes),
            data,
        })
    }

    /// The leader every node agrees on, if they agree.
    pub fn agreed_leader(&self) -> Option<NodeId> {
        let mut leaders = self.nodes.iter().map(|node| node.metrics().leader);
        let first = leaders.next()??;
        leaders.all(|leader| leader == Some(first)).then_some(first)
    }

    /// Waits until every node names the same leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let seen: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|node| node.metrics().leader)
                    .collect();
                bail!("no agreed leader within {timeout:?}; each node's view: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn metrics(&self) -> Vec<Metrics> {
        self.nodes.iter().map(Node::metrics).collect()
    }

    pub fn router(&self) -> LocalRouter {
        LocalRouter {
            nodes: Arc::clone(&self.nodes),
            leader: AtomicUsize::new(0),
        }
    }

    /// Shuts every node down (syncing its log) and removes the data.
    ///
    /// # Errors
    /// If a router still holds the nodes, or a node's shutdown failed.
    pub async fn shutdown(self) -> Result<()> {
        let nodes = Arc::try_unwrap(self.nodes)
            .map_err(|_| anyhow::anyhow!("proposers still hold the cluster at shutdown"))?;
        let mut failures = Vec::new();
        for node in nodes {
            let id = node.id();
            if let Err(error) = node.shutdown().await {
                failures.push(format!("node {id}: {error}"));
            }
        }
        let path = self.data.path().to_path_buf();
        self.data
            .close()
            .with_context(|| format!("removing {}", path.display()))?;
        if !failures.is_empty() {
            bail!("shutdown failed: {}", failures.join("; "));
        }
        Ok(())
    }
}

/// Where proposers send: the node they believe leads, corrected by
/// `NotLeader` hints.
#[derive(Debug)]
pub struct LocalRouter {
    nodes: Arc<Vec<Node>>,
    leader: AtomicUsize,
}

impl LocalRouter {
    pub fn leader(&self) -> &Node {
        let index = self.leader.load(Ordering::Relaxed);
        // The index is only ever stored below after a bounds check.
        &self.nodes[index.min(self.nodes.len() - 1)]
    }

    /// Follows a hint; without one, asks each node's metrics who is
    /// leader. Returns whether the target changed.
    pub fn redirect(&self, hint: Option<NodeId>) -> bool {
        let target = hint
            .or_else(|| {
                self.nodes
                    .iter()
                    .find(|node| node.metrics().role == Role::Leader)
                    .map(Node::id)
            })
            .and_then(|id| usize::try_from(id.0).ok()?.checked_sub(1))
            .filter(|index| *index < self.nodes.len());
        match target {
            Some(index) => self.leader.swap(index, Ordering::Relaxed) != index,
            None => false,
        }
    }

    /// The id proposers currently send to.
    pub fn target(&self) -> NodeId {
        self.leader().id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_snapshots_round_trip_and_reject_garbage() {
        let mut counter = Counter::default();
        let mut responses = Vec::new();
        counter.apply(&[], &mut responses);
        assert!(responses.is_empty());
        counter.applied = 41;
        let snapshot = counter.snapshot().expect("snapshot");
        let mut restored = Counter::default();
        restored.restore(snapshot).expect("restore");
        assert_eq!(restored.applied, 41);
        let error = restored.restore(Bytes::from_static(b"abc")).unwrap_err();
        assert!(error.contains("3 bytes"), "{error}");
    }
}
