//! End-to-end snapshots on loopback: a follower that was down while the
//! leader compacted its log past the follower's last entry catches up by
//! receiving the leader's snapshot (Raft §7), then the entries after it.

mod node;

use std::time::Duration;

use barge::core::NodeId;
use bytes::Bytes;
use node::Cluster;

const WAIT: Duration = Duration::from_secs(20);
const THRESHOLD: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_installs_a_snapshot() {
    let mut cluster = Cluster::start_tuned(3, 0, |config| {
        config.raft.snapshot_log_entries_threshold = THRESHOLD;
        // Small chunks: the snapshot streams as several messages.
        config.raft.snapshot_chunk_bytes = 4096;
    })
    .await;
    let leader = cluster.leader(WAIT).await;
    for i in 0..20 {
        cluster
            .propose(Bytes::from(format!("early-{i}")), WAIT)
            .await;
    }
    let lagging = NodeId(leader.0 % 3 + 1);
    cluster.stop(lagging).await;

    // Far more than the threshold: the leader snapshots and compacts past
    // everything the stopped follower holds. Batches keep it quick.
    let leader = cluster.leader(WAIT).await;
    let mut last = 0;
    for round in 0..(4 * THRESHOLD / 50) {
        let payloads = (0..50)
            .map(|i| Bytes::from(format!("while-down-{round}-{i}")))
            .collect();
        let responses = cluster.nodes[&leader]
            .propose_batch(payloads)
            .await
            .expect("batch commits");
        last = node::index_of(responses.last().expect("a response"));
    }
    let snapshot_file = cluster
        .dir
        .path()
        .join(format!("node-{}", leader.0))
        .join("snapshot");
    assert!(snapshot_file.exists(), "the leader wrote its snapshot file");

    cluster.restart(lagging).await;
    cluster.wait_applied(lagging, last, WAIT).await;
    let metrics = cluster.nodes[&lagging].metrics();
    assert!(
        metrics.snapshots_installed >= 1,
        "caught up without a snapshot: {metrics:?}"
    );
    assert!(cluster.nodes[&leader].metrics().snapshots_sent >= 1);
    // The snapshot carried the state: every entry, early ones included.
    cluster.assert_same_applied(leader, WAIT).await;
    assert_eq!(
        cluster.machines[&lagging].applied.lock().len(),
        20 + 4 * THRESHOLD as usize
    );

    // And it restarts from its own snapshot file plus log.
    cluster.stop(lagging).await;
    cluster.propose(Bytes::from_static(b"after"), WAIT).await;
    cluster.restart(lagging).await;
    cluster.assert_same_applied(leader, WAIT).await;
    cluster.stop_all().await;
}
