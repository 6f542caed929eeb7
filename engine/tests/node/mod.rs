//! A local cluster of real nodes on loopback (QUIC, TLS, io_uring log in a
//! temporary directory) for the end-to-end tests.

// Each `node_*.rs` test binary uses a different part of this harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use barge::core::{Entry, NodeId};
use barge::node::{Node, NodeConfig, StartMode, StateMachine};
use barge_net::{ClusterId, DevCa, PeerId};
use bytes::Bytes;
use parking_lot::Mutex;

/// A state machine that records every applied payload; the response is the
/// entry's index as text.
#[derive(Clone, Default)]
pub struct Recorder {
    pub applied: Arc<Mutex<Vec<(u64, Bytes)>>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>) {
        let mut applied = self.applied.lock();
        for entry in entries {
            applied.push((entry.id.index.0, entry.payload.clone()));
            responses.push(Bytes::from(entry.id.index.0.to_string()));
        }
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        let applied = self.applied.lock();
        let mut out = Vec::new();
        for (index, payload) in applied.iter() {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        }
        Ok(Bytes::from(out))
    }

    fn restore(&mut self, snapshot: Bytes) -> Result<(), String> {
        let mut applied = Vec::new();
        let mut rest = &snapshot[..];
        while !rest.is_empty() {
            if rest.len() < 12 {
                return Err("truncated snapshot".into());
            }
            let index = u64::from_le_bytes(rest[..8].try_into().map_err(|_| "index")?);
            let len = u32::from_le_bytes(rest[8..12].try_into().map_err(|_| "len")?) as usize;
            rest = &rest[12..];
            if rest.len() < len {
                return Err("truncated payload".into());
            }
            applied.push((index, Bytes::copy_from_slice(&rest[..len])));
            rest = &rest[len..];
        }
        *self.applied.lock() = applied;
        Ok(())
    }
}

pub struct Cluster {
    pub ca: DevCa,
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<NodeId, Arc<Node>>,
    pub machines: BTreeMap<NodeId, Recorder>,
    /// Applied to every node's configuration (also on restart).
    pub tune: fn(&mut NodeConfig),
    /// The voters the cluster started with.
    pub initial_voters: std::collections::BTreeSet<NodeId>,
}

pub const CLUSTER: u64 = 42;

fn free_addresses(count: u64) -> BTreeMap<NodeId, SocketAddr> {
    // Outside the ephemeral range: nothing else takes the port while a
    // node is down between restarts.
    (1..=count)
        .map(|id| {
            let address = barge_net::ports::loopback_address().expect("free loopback port");
            (NodeId(id), address)
        })
        .collect()
}

impl Cluster {
    pub fn config(&self, id: NodeId, start: StartMode) -> NodeConfig {
        let peers = self
            .addresses
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, address)| (*peer, *address))
            .collect();
        let identity = self.ca.issue(PeerId(id.0)).expect("issue certificate");
        let mut config = NodeConfig::new(
            id,
            CLUSTER,
            self.addresses[&id],
            peers,
            self.dir.path().join(format!("node-{}", id.0)),
            identity,
        );
        config.start = start;
        // The address book may hold spare nodes; the voters a cluster
        // started with stay the same on every start.
        config.initial_voters = self.initial_voters.clone();
        config.log.segment_bytes = 4 << 20;
        config.rng_seed = Some(id.0 * 7919);
        (self.tune)(&mut config);
        config
    }

    /// Starts `voters` nodes (ids 1..=voters); `spare` more addresses are
    /// reserved for nodes added later.
    pub async fn start(voters: u64, spare: u64) -> Cluster {
        Cluster::start_tuned(voters, spare, |_| {}).await
    }

    /// As [`Cluster::start`], with `tune` applied to every configuration.
    pub async fn start_tuned(voters: u64, spare: u64, tune: fn(&mut NodeConfig)) -> Cluster {
        let ca = DevCa::generate(ClusterId(CLUSTER)).expect("dev CA");
        let addresses = free_addresses(voters + spare);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster {
            ca,
            addresses,
            dir,
            nodes: BTreeMap::new(),
            machines: BTreeMap::new(),
            tune,
            initial_voters: (1..=voters).map(NodeId).collect(),
        };
        for id in 1..=voters {
            let config = cluster.config(NodeId(id), StartMode::New);
            cluster.launch(config).await;
        }
        cluster
    }

    pub async fn launch(&mut self, config: NodeConfig) {
        let id = config.id;
        let machine = self.machines.entry(id).or_default().clone();
        let node = Node::start(config, machine).await.expect("node starts");
        self.nodes.insert(id, Arc::new(node));
    }

    /// Waits until the running nodes agree on one leader; returns it.
    pub async fn leader(&self, timeout: Duration) -> NodeId {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|node| node.metrics().leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|seen| *seen == Some(*leader))
                    && self.nodes.contains_key(leader)
                {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Restarts a stopped node on its data directory as an existing member,
    /// with a fresh state machine (it is rebuilt from the snapshot and log).
    pub async fn restart(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "node {id} is running");
        self.machines.insert(id, Recorder::default());
        let config = self.config(id, StartMode::Existing);
        self.launch(config).await;
    }

    /// Starts a node that is not yet a member ([`StartMode::Join`]) on an
    /// empty data directory; the cluster's voters are 1..=`voters`.
    pub async fn join(&mut self, id: NodeId, voters: u64) {
        let mut config = self.config(id, StartMode::Join);
        config.initial_voters = (1..=voters).map(NodeId).collect();
        self.launch(config).await;
    }

    /// Proposes `payload` on whoever leads, following leader changes, until
    /// it is acknowledged or `timeout` passes. Only for payloads whose
    /// duplicate application the test tolerates (a retry after an unknown
    /// outcome may apply twice).
    pub async fn propose(&self, payload: Bytes, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leader = self.leader(deadline - tokio::time::Instant::now()).await;
            match self.nodes[&leader].propose(payload.clone()).await {
                Ok(response) => return index_of(&response),
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "proposal not acknowledged within {timeout:?}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Asserts every running node applied the same entries as `reference`
    /// (waiting for each to reach the reference's last index first).
    pub async fn assert_same_applied(&self, reference: NodeId, timeout: Duration) {
        // The recorder is exact; published metrics may lag a few ms.
        let last = self.machines[&reference]
            .applied
            .lock()
            .last()
            .map_or(0, |(index, _)| *index);
        for id in self.nodes.keys() {
            self.wait_applied(*id, last, timeout).await;
        }
        let expected: Vec<(u64, Bytes)> = self.machines[&reference]
            .applied
            .lock()
            .iter()
            .filter(|(index, _)| *index <= last)
            .cloned()
            .collect();
        for id in self.nodes.keys() {
            let applied: Vec<(u64, Bytes)> = self.machines[id]
                .applied
                .lock()
                .iter()
                .filter(|(index, _)| *index <= last)
                .cloned()
                .collect();
            assert_eq!(
                applied, expected,
                "node {id} applied a different log than {reference}"
            );
        }
    }

    pub async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("node running");
        node.shutdown().await.expect("clean shutdown");
    }

    pub async fn stop_all(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = self.nodes[&id].metrics().applied_index.0;
            if applied >= index {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} applied {applied}, wanted {index} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The index a [`Recorder`] returns as a proposal's response.
pub fn index_of(response: &Bytes) -> u64 {
    std::str::from_utf8(response)
        .expect("utf8 response")
        .parse()
        .expect("index response")
}
