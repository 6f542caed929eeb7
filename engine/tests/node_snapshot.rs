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

/// The last index recorded in a node's snapshot file (bytes 16..24, see
/// the file format in the node's storage docs); 0 if there is none yet.
fn snapshot_index(cluster: &Cluster, id: NodeId) -> u64 {
    let path = cluster
        .dir
        .path()
        .join(format!("node-{}", id.0))
        .join("snapshot");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 24 && &bytes[..8] == b"BARGESNP" => {
            u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"))
        }
        Ok(bytes) => panic!(
            "{} is not a snapshot file ({} bytes)",
            path.display(),
            bytes.len()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => panic!("reading {}: {error}", path.display()),
    }
}

/// The first index of the oldest segment in a node's log (1 until
/// compaction removes a segment).
fn log_first_index(cluster: &Cluster, id: NodeId) -> u64 {
    let dir = cluster
        .dir
        .path()
        .join(format!("node-{}", id.0))
        .join("log");
    std::fs::read_dir(&dir)
        .expect("log directory")
        .filter_map(|entry| {
            let name = entry.expect("directory entry").file_name();
            let stem = name.to_str()?.strip_suffix(".wal")?.to_owned();
            let (sequence, first) = stem.split_once('-')?;
            (sequence.len() == 16).then(|| u64::from_str_radix(first, 16).ok())?
        })
        .min()
        .expect("at least one segment")
}

/// Snapshots are taken many times while proposals stream in (their file
/// writes and the compaction after them run beside the Raft thread), a
/// follower restarts in the middle, and afterwards every node restarts from
/// its own snapshot file plus the compacted log with every entry intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_snapshots_under_load_then_restart_from_them() {
    const SMALL_THRESHOLD: u64 = 64;
    const PROPOSERS: usize = 16;
    const EACH: usize = 150;
    // 2,400 entries of 2 KiB: about five 1 MiB segments, so compaction has
    // whole segments to remove, and about 37 snapshot thresholds.
    const PAYLOAD_BYTES: usize = 2048;
    let mut cluster = Cluster::start_tuned(3, 0, |config| {
        config.raft.snapshot_log_entries_threshold = SMALL_THRESHOLD;
        config.log.segment_bytes = 1 << 20;
    })
    .await;
    let leader = cluster.leader(WAIT).await;
    let total = (PROPOSERS * EACH) as u64;
    let proposers: Vec<_> = (0..PROPOSERS)
        .map(|proposer| {
            let node = std::sync::Arc::clone(&cluster.nodes[&leader]);
            tokio::spawn(async move {
                for i in 0..EACH {
                    let mut payload = format!("p{proposer}-{i}-").into_bytes();
                    payload.resize(PAYLOAD_BYTES, b'.');
                    let payload = Bytes::from(payload);
                    let deadline = tokio::time::Instant::now() + WAIT;
                    loop {
                        match node.propose(payload.clone()).await {
                            Ok(_) => break,
                            Err(barge::node::NodeError::Overloaded)
                                if tokio::time::Instant::now() < deadline =>
                            {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(error) => panic!("proposal {proposer}/{i} failed: {error}"),
                        }
                    }
                }
            })
        })
        .collect();

    // A follower restarts while the load runs: it comes back from its own
    // snapshot and log, then catches up.
    cluster.wait_applied(leader, total / 3, WAIT).await;
    let follower = NodeId(leader.0 % 3 + 1);
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    for proposer in proposers {
        proposer.await.expect("proposer task");
    }
    assert_eq!(cluster.leader(WAIT).await, leader, "leadership moved");

    // Each node's last snapshot follows its applied index to within one
    // threshold (a request made while a write ran is taken right after).
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.wait_applied(id, total, WAIT).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while snapshot_index(&cluster, id) + SMALL_THRESHOLD < total {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id}: snapshot at {} of {total} applied",
                snapshot_index(&cluster, id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Compaction removed whole segments below the snapshots (a node
        // that installed a leader's snapshot has a replaced log instead).
        if cluster.nodes[&id].metrics().snapshots_installed == 0 {
            let first = log_first_index(&cluster, id);
            assert!(first > 1, "node {id}: log still starts at {first}");
            assert!(first <= snapshot_index(&cluster, id) + 1);
        }
    }

    // Every node restarts from its own snapshot plus the log after it.
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.restart(NodeId(id)).await;
    }
    let leader = cluster.leader(WAIT).await;
    cluster.propose(Bytes::from_static(b"after"), WAIT).await;
    cluster.assert_same_applied(leader, WAIT).await;
    let applied = cluster.machines[&leader].applied.lock().clone();
    let mut payloads: Vec<&[u8]> = applied
        .iter()
        .map(|(_, payload)| &payload[..])
        .filter(|payload| *payload != b"after")
        .collect();
    payloads.sort_unstable();
    payloads.dedup();
    assert_eq!(payloads.len(), applied.len() - 1, "an entry applied twice");
    assert_eq!(payloads.len() as u64, total, "entries lost across restarts");
    // On every node (the follower restarted under load above caught up
    // through several snapshots), each index was applied once, in order: a
    // snapshot labelled below what its state held would replay entries.
    for (id, machine) in &cluster.machines {
        let applied = machine.applied.lock();
        let twice = applied.windows(2).find(|pair| pair[0].0 >= pair[1].0);
        assert!(
            twice.is_none(),
            "node {id}: applied out of order or twice: {twice:?}"
        );
    }
    cluster.stop_all().await;
}

/// Counts entries; its first `failures` snapshots fail.
struct FlakySnapshots {
    applied: u64,
    snapshot_calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: u64,
}

impl barge::node::StateMachine for FlakySnapshots {
    fn apply(&mut self, entries: &[barge::core::Entry], responses: &mut Vec<Bytes>) {
        self.applied += entries.len() as u64;
        responses.extend(entries.iter().map(|_| Bytes::new()));
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        let calls = self
            .snapshot_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if calls < self.failures {
            return Err(format!("snapshot {calls} fails on purpose"));
        }
        Ok(Bytes::copy_from_slice(&self.applied.to_le_bytes()))
    }

    fn restore(&mut self, data: Bytes) -> Result<(), String> {
        let bytes: [u8; 8] = data[..].try_into().map_err(|_| "bad snapshot")?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// The core asks for a snapshot once until answered: when the state
/// machine fails to produce one, the node asks again later by itself
/// instead of never snapshotting (and never compacting) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_machine_snapshot_is_retried() {
    use barge::node::{Node, NodeConfig};
    use barge_net::{ClusterId, DevCa, PeerId};

    let ca = DevCa::generate(ClusterId(node::CLUSTER)).expect("dev CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = barge_net::ports::loopback_address().expect("free address");
    let mut config = NodeConfig::new(
        NodeId(1),
        node::CLUSTER,
        listen,
        std::collections::BTreeMap::new(),
        dir.path().join("node-1"),
        ca.issue(PeerId(1)).expect("certificate"),
    );
    config.raft.snapshot_log_entries_threshold = 20;
    config.log.segment_bytes = 1 << 20;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let machine = FlakySnapshots {
        applied: 0,
        snapshot_calls: std::sync::Arc::clone(&calls),
        failures: 2,
    };
    let node = Node::start(config, machine).await.expect("node starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.metrics().leader != Some(NodeId(1)) {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..60u32 {
        node.propose(Bytes::from(i.to_le_bytes().to_vec()))
            .await
            .expect("proposal commits");
    }
    let snapshot_file = dir.path().join("node-1").join("snapshot");
    while !snapshot_file.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot after {} state machine calls",
            calls.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    node.shutdown().await.expect("clean shutdown");
}
