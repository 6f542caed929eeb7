//! End-to-end failover on loopback: a killed leader is replaced without
//! losing an acknowledged proposal (Raft §5.4, leader completeness); a
//! restarted follower catches up from its own log and the leader's
//! (§5.3); leadership moves on request (thesis §3.10).

mod node;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use barge::core::NodeId;
use barge::node::NodeError;
use bytes::Bytes;
use node::{index_of, Cluster};
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_proposal() {
    let mut cluster = Cluster::start(3, 0).await;
    let old_leader = cluster.leader(WAIT).await;
    let leader_node = cluster.nodes.remove(&old_leader).expect("leader runs");

    // Four proposers keep the leader busy; the leader is killed while their
    // proposals are in flight.
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, Bytes)>::new()));
    let mut proposers = tokio::task::JoinSet::new();
    for proposer in 0..4 {
        let (node, acknowledged) = (Arc::clone(&leader_node), Arc::clone(&acknowledged));
        proposers.spawn(async move {
            for i in 0.. {
                let payload = Bytes::from(format!("p{proposer}-{i}"));
                match node.propose(payload.clone()).await {
                    Ok(response) => acknowledged.lock().push((index_of(&response), payload)),
                    // Outcome unknown: the entry may or may not commit.
                    Err(_) => return i,
                }
            }
            unreachable!("the loop ends when the node stops")
        });
    }
    while acknowledged.lock().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    leader_node.shutdown().await.expect("leader stops cleanly");
    while let Some(attempted) = proposers.join_next().await {
        assert!(attempted.expect("proposer task") > 0);
    }
    let acknowledged = acknowledged.lock().clone();
    assert!(acknowledged.len() >= 200);

    // The two survivors elect a new leader, which commits in its own term.
    let new_leader = cluster.leader(WAIT).await;
    assert_ne!(new_leader, old_leader);
    let index = cluster.propose(Bytes::from_static(b"after"), WAIT).await;
    cluster.assert_same_applied(new_leader, WAIT).await;
    for id in cluster.nodes.keys() {
        let applied = cluster.machines[id].applied.lock().clone();
        let applied_set: BTreeSet<(u64, Bytes)> = applied.iter().cloned().collect();
        assert_eq!(
            applied_set.len(),
            applied.len(),
            "node {id} applied an index twice"
        );
        for entry in &acknowledged {
            assert!(
                applied_set.contains(entry),
                "node {id} lost acknowledged entry {entry:?}"
            );
        }
        assert!(applied
            .iter()
            .any(|(at, payload)| *at == index && payload == "after"));
    }
    // The old leader's handle now refuses work.
    assert_eq!(
        leader_node.propose(Bytes::from_static(b"late")).await,
        Err(NodeError::Stopped)
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up() {
    let mut cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(WAIT).await;
    for i in 0..30 {
        cluster
            .propose(Bytes::from(format!("before-{i}")), WAIT)
            .await;
    }
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.stop(follower).await;
    let mut last = 0;
    for i in 0..100 {
        last = cluster
            .propose(Bytes::from(format!("while-down-{i}")), WAIT)
            .await;
    }

    // Restarted on its own directory, with a state machine rebuilt from its
    // log, it applies everything committed while it was away.
    cluster.restart(follower).await;
    cluster.wait_applied(follower, last, WAIT).await;
    let leader = cluster.leader(WAIT).await;
    cluster.assert_same_applied(leader, WAIT).await;
    assert_eq!(cluster.machines[&follower].applied.lock().len(), 130);
    // It rejoined as a voter: with the other follower down, the restarted
    // one is needed for a quorum.
    let other = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader && **id != follower)
        .expect("another follower");
    cluster.stop(other).await;
    cluster
        .propose(Bytes::from_static(b"needs-restarted"), WAIT)
        .await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfer_and_dropped_node() {
    let mut cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(WAIT).await;
    cluster.propose(Bytes::from_static(b"one"), WAIT).await;
    let target = NodeId(leader.0 % 3 + 1);
    cluster.nodes[&leader]
        .transfer_leadership(target)
        .await
        .expect("transfer completes");
    assert_eq!(cluster.leader(WAIT).await, target);
    let index = cluster.propose(Bytes::from_static(b"two"), WAIT).await;
    let applied = cluster.machines[&target].applied.lock().clone();
    assert!(applied
        .iter()
        .any(|(at, payload)| *at == index && payload == "two"));

    // A follower refuses to hand over leadership it does not hold; a
    // transfer to a node outside the configuration is invalid.
    let error = cluster.nodes[&leader]
        .transfer_leadership(target)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        NodeError::NotLeader {
            leader_hint: Some(target)
        }
    );
    let error = cluster.nodes[&target]
        .transfer_leadership(NodeId(99))
        .await
        .unwrap_err();
    assert!(matches!(error, NodeError::Invalid(_)), "{error:?}");

    // Dropping a node (no shutdown) inside the runtime stops it without a
    // panic, and the rest of the cluster carries on.
    let dropped = cluster.nodes.remove(&target).expect("target runs");
    drop(Arc::into_inner(dropped).expect("the only handle"));
    let survivor = cluster.leader(WAIT).await;
    assert_ne!(survivor, target);
    cluster.propose(Bytes::from_static(b"three"), WAIT).await;
    // Its data directory is closed: it restarts and rejoins.
    cluster.restart(target).await;
    cluster.assert_same_applied(survivor, WAIT).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_see_the_writes() {
    // Linearizable reads (thesis §6.4): once a write is acknowledged, a
    // read barrier on any node returns only after that node applied it.
    let cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(WAIT).await;
    for i in 0..40 {
        let payload = Bytes::from(format!("w{i}"));
        let index = cluster.propose(payload.clone(), WAIT).await;
        let reader = NodeId(i % 3 + 1);
        let read = cluster.nodes[&reader]
            .read_index()
            .await
            .expect("read barrier");
        assert!(read.0 >= index, "read index {read:?} below write {index}");
        let applied = cluster.machines[&reader].applied.lock();
        assert!(
            applied
                .iter()
                .any(|(at, seen)| *at == index && *seen == payload),
            "node {reader} (leader {leader}) read before applying write {index}"
        );
    }
    cluster.stop_all().await;
}
