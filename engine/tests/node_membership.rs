//! End-to-end membership changes on loopback, under a steady proposal load:
//! two nodes join as learners (thesis §4.2.1), become voters through joint
//! consensus (§6), and are removed again, without losing an acknowledged
//! proposal.

mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use barge::core::NodeId;
use barge::node::{Node, NodeError, StartMode};
use bytes::Bytes;
use node::{index_of, Cluster};
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(20);

fn ids(range: std::ops::RangeInclusive<u64>) -> BTreeSet<NodeId> {
    range.map(NodeId).collect()
}

/// Proposes on whichever of `nodes` leads until `stop`; records every
/// acknowledged (index, payload).
async fn load(
    nodes: Vec<Arc<Node>>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(u64, Bytes)>>>,
) {
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let leader = nodes
            .iter()
            .find(|node| node.metrics().leader == Some(node.id()));
        let Some(leader) = leader else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let payloads: Vec<Bytes> = (0..8)
            .map(|i| Bytes::from(format!("load-{next}-{i}")))
            .collect();
        next += 1;
        match leader.propose_batch(payloads.clone()).await {
            Ok(responses) => acknowledged
                .lock()
                .extend(responses.iter().map(index_of).zip(payloads)),
            Err(NodeError::Stopped) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Waits until `node`'s change call succeeds, retrying while an earlier
/// change (the leader leaving a joint configuration) is still in progress.
async fn change(node: &Node, voters: BTreeSet<NodeId>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node
            .change_membership(voters.clone(), BTreeSet::new())
            .await
        {
            Ok(_) => return,
            Err(NodeError::ChangeInProgress) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("change to {voters:?} failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_five_and_back_under_load() {
    let mut cluster = Cluster::start(3, 2).await;
    let leader = cluster.leader(WAIT).await;
    // Every node's address book lists all five from the start.
    for id in 1..=3u64 {
        assert_eq!(
            cluster.config(NodeId(id), StartMode::Existing).peers.len(),
            4
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let original: Vec<Arc<Node>> = (1..=3)
        .map(|id| Arc::clone(&cluster.nodes[&NodeId(id)]))
        .collect();
    let load = tokio::spawn(load(original, Arc::clone(&stop), Arc::clone(&acknowledged)));
    let acknowledged_at = |count: usize| {
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while acknowledged.lock().len() < count {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "load stalled below {count}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    acknowledged_at(100).await;

    // Nodes 4 and 5 start empty (4 told the initial voters, 5 with the
    // defaults, which list every node itself included) and stay quiet: a
    // joining node never campaigns before it is a voter.
    cluster.join(NodeId(4), 3).await;
    let mut config = cluster.config(NodeId(5), StartMode::Join);
    config.initial_voters = cluster.addresses.keys().copied().collect();
    cluster.launch(config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [NodeId(4), NodeId(5)] {
        let metrics = cluster.nodes[&id].metrics();
        assert_eq!(
            (metrics.elections_started, metrics.pre_votes_started),
            (0, 0),
            "{id}"
        );
    }
    // Then they join as learners and become voters.
    for id in [NodeId(4), NodeId(5)] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match cluster.nodes[&leader].add_learner(id).await {
                Ok(_) => break,
                Err(NodeError::ChangeInProgress) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("adding learner {id}: {error}"),
            }
        }
    }
    let commit = cluster.nodes[&leader].metrics().commit_index.0;
    for id in [NodeId(4), NodeId(5)] {
        cluster.wait_applied(id, commit, WAIT).await;
        assert_ne!(cluster.nodes[&id].metrics().role, barge::core::Role::Leader);
    }
    change(&cluster.nodes[&leader], ids(1..=5)).await;
    let seen = acknowledged.lock().len();
    acknowledged_at(seen + 100).await;

    // Five voters: with two of the original three down, 4 and 5 complete
    // the quorum.
    let down: Vec<NodeId> = ids(1..=3).into_iter().filter(|id| *id != leader).collect();
    for id in &down {
        cluster.stop(*id).await;
    }
    let index = cluster
        .propose(Bytes::from_static(b"five-voters"), WAIT)
        .await;
    for id in [NodeId(4), NodeId(5)] {
        cluster.wait_applied(id, index, WAIT).await;
    }
    for id in &down {
        cluster.restart(*id).await;
    }
    let leader = cluster.leader(WAIT).await;

    // Back to three: 4 and 5 leave; the original three carry on alone.
    let leader = if leader.0 > 3 {
        cluster.nodes[&leader]
            .transfer_leadership(NodeId(1))
            .await
            .expect("transfer");
        cluster.leader(WAIT).await
    } else {
        leader
    };
    change(&cluster.nodes[&leader], ids(1..=3)).await;
    let seen = acknowledged.lock().len();
    acknowledged_at(seen + 100).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    // Wait for the leader to leave the joint configuration before the old
    // members go: a no-op change request fails while it is in progress.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let result = cluster.nodes[&leader]
            .change_membership(ids(1..=3), BTreeSet::new())
            .await;
        match result {
            Err(NodeError::ChangeInProgress) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break,
        }
    }
    cluster.stop(NodeId(4)).await;
    cluster.stop(NodeId(5)).await;
    // Three voters again: one of them down, two still make a quorum (two of
    // five would not).
    let resting = *ids(1..=3)
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.stop(resting).await;
    cluster
        .propose(Bytes::from_static(b"two-of-three"), WAIT)
        .await;
    cluster.restart(resting).await;
    let index = cluster
        .propose(Bytes::from_static(b"three-voters"), WAIT)
        .await;

    // No acknowledged proposal lost, on any of the final members.
    cluster.assert_same_applied(leader, WAIT).await;
    let acknowledged = acknowledged.lock().clone();
    assert!(acknowledged.len() >= 300);
    for id in cluster.nodes.keys() {
        let applied: BTreeMap<u64, Bytes> = cluster.machines[id]
            .applied
            .lock()
            .iter()
            .cloned()
            .collect();
        for (at, payload) in &acknowledged {
            assert_eq!(applied.get(at), Some(payload), "node {id} lost entry {at}");
        }
        assert_eq!(
            applied.get(&index).map(|p| &p[..]),
            Some(&b"three-voters"[..])
        );
    }
    cluster.stop_all().await;
}
