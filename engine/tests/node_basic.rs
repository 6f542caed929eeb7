//! End-to-end: a 3-node cluster on loopback commits and applies proposals,
//! replicates them to every node, and serves linearizable reads.

mod node;

use std::time::Duration;

use barge::node::NodeError;
use bytes::Bytes;
use node::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_commit_and_replicate() {
    let cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let node = &cluster.nodes[&leader];
    let mut last = 0;
    for i in 0..50u32 {
        let response = node
            .propose(Bytes::from(format!("entry-{i}")))
            .await
            .expect("proposal commits");
        last = std::str::from_utf8(&response)
            .expect("utf8")
            .parse::<u64>()
            .expect("index");
    }
    let responses = node
        .propose_batch((0..10).map(|i| Bytes::from(format!("batch-{i}"))).collect())
        .await
        .expect("batch commits");
    assert_eq!(responses.len(), 10);
    last = last.max(
        std::str::from_utf8(&responses[9])
            .expect("utf8")
            .parse()
            .expect("index"),
    );

    for id in cluster.nodes.keys() {
        cluster
            .wait_applied(*id, last, Duration::from_secs(10))
            .await;
    }
    let reference: Vec<_> = cluster.machines[&leader].applied.lock().clone();
    assert_eq!(reference.len(), 60);
    for (id, machine) in &cluster.machines {
        assert_eq!(
            *machine.applied.lock(),
            reference,
            "node {id} applied a different log"
        );
    }

    // A follower refuses proposals and names the leader.
    let follower = cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .copied()
        .expect("a follower");
    let error = cluster.nodes[&follower]
        .propose(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        NodeError::NotLeader {
            leader_hint: Some(leader)
        }
    );

    // Reads on the leader and on a follower see every acknowledged write.
    let index = node.read_index().await.expect("leader read");
    assert!(index.0 >= last);
    let index = cluster.nodes[&follower]
        .read_index()
        .await
        .expect("follower read");
    assert!(index.0 >= last);
    assert!(cluster.machines[&follower].applied.lock().len() >= 60);

    let metrics = node.metrics();
    assert!(metrics.proposals_committed >= 60);
    assert!(metrics.fsyncs > 0);
    assert!(metrics
        .to_prometheus()
        .contains("barge_leader_changes_total"));
    cluster.stop_all().await;
}
