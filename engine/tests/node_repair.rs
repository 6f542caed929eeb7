//! Protocol-aware recovery on real nodes (issue 6, "Corruption and repair";
//! PAR, FAST 2018): a bit flipped inside a committed WAL record is found at
//! restart, the node cuts its log back, refetches the entries from the
//! leader and loses nothing acknowledged; the same on two of five nodes in
//! different segments; with every copy of an entry damaged the cluster
//! stops instead of electing a leader that lacks it.
//!
//! Records are found by walking the segment format of `wal/src/format.rs`:
//! a 4096-byte header block, then records back to back, each a 48-byte
//! header (header CRC, payload length, kind, payload CRC, incarnation,
//! first, last, term) and its payload.

mod node;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use barge::core::NodeId;
use barge::node::{NodeConfig, NodeError};
use bytes::Bytes;
use node::Cluster;

const WAIT: Duration = Duration::from_secs(20);
const BLOCK_BYTES: usize = 4096;
const RECORD_HEADER_BYTES: usize = 48;
const KIND_BATCH: u8 = 1;

/// One batch record of a segment file.
#[derive(Clone, Copy, Debug)]
struct BatchRecord {
    offset: usize,
    first: u64,
    last: u64,
    payload_bytes: usize,
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

/// The batch records of one segment, in file order, up to the first
/// record whose header does not check out (the end of the written part).
fn batch_records(segment: &Path) -> Vec<BatchRecord> {
    let data = std::fs::read(segment).expect("read segment");
    let mut records = Vec::new();
    let mut offset = BLOCK_BYTES;
    while offset + RECORD_HEADER_BYTES <= data.len() {
        let header = &data[offset..offset + RECORD_HEADER_BYTES];
        if crc32c::crc32c(&header[4..]) != u32_at(header, 0) || !(1..=4).contains(&header[8]) {
            break;
        }
        let payload_bytes = u32_at(header, 4) as usize;
        if offset + RECORD_HEADER_BYTES + payload_bytes > data.len() {
            break;
        }
        if header[8] == KIND_BATCH {
            records.push(BatchRecord {
                offset,
                first: u64_at(header, 24),
                last: u64_at(header, 32),
                payload_bytes,
            });
        }
        offset += RECORD_HEADER_BYTES + payload_bytes;
    }
    records
}

/// The node's segment files in sequence order.
fn segments(cluster: &Cluster, id: NodeId) -> Vec<PathBuf> {
    let log = cluster
        .dir
        .path()
        .join(format!("node-{}", id.0))
        .join("log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&log)
        .expect("log directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".wal") && !name.starts_with("spare")
        })
        .collect();
    files.sort();
    files
}

/// Flips one bit in the middle of the payload of `record` (the payload
/// CRC no longer matches: the WAL reports the record damaged).
fn flip_payload_bit(segment: &Path, record: BatchRecord) {
    let mut data = std::fs::read(segment).expect("read segment");
    let at = record.offset + RECORD_HEADER_BYTES + record.payload_bytes / 2;
    data[at] ^= 0x04;
    std::fs::write(segment, &data).expect("write segment");
}

/// Flips a bit in the record holding `index` on node `id` (stopped);
/// returns the record.
fn damage_entry(cluster: &Cluster, id: NodeId, index: u64) -> BatchRecord {
    for segment in segments(cluster, id) {
        if let Some(record) = batch_records(&segment)
            .into_iter()
            .find(|record| (record.first..=record.last).contains(&index))
        {
            flip_payload_bit(&segment, record);
            return record;
        }
    }
    panic!("no record of node {id} holds entry {index}");
}

fn repair_file(cluster: &Cluster, id: NodeId) -> PathBuf {
    cluster
        .dir
        .path()
        .join(format!("node-{}", id.0))
        .join("repair")
}

/// Proposes `count` distinct payloads through the leader; returns what was
/// acknowledged at which index.
async fn propose_many(cluster: &Cluster, count: usize, bytes: usize) -> BTreeMap<u64, Bytes> {
    let mut acknowledged = BTreeMap::new();
    for i in 0..count {
        let mut payload = format!("entry-{i}-").into_bytes();
        payload.resize(bytes.max(payload.len()), b'.');
        let payload = Bytes::from(payload);
        let index = cluster.propose(payload.clone(), WAIT).await;
        acknowledged.insert(index, payload);
    }
    acknowledged
}

/// Every acknowledged entry is applied on every running node, at its
/// index, and all nodes applied the same sequence.
async fn assert_all_applied(cluster: &Cluster, acknowledged: &BTreeMap<u64, Bytes>) {
    let leader = cluster.leader(WAIT).await;
    cluster.assert_same_applied(leader, WAIT).await;
    for (id, machine) in &cluster.machines {
        if !cluster.nodes.contains_key(id) {
            continue;
        }
        let applied: BTreeMap<u64, Bytes> = machine.applied.lock().iter().cloned().collect();
        for (index, payload) in acknowledged {
            assert_eq!(
                applied.get(index),
                Some(payload),
                "node {id} applied acknowledged entry {index}"
            );
        }
    }
}

/// Waits until no running node reports a pending repair.
async fn wait_repaired(cluster: &Cluster) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending: Vec<(NodeId, u64)> = cluster
            .nodes
            .iter()
            .map(|(id, node)| (*id, node.metrics().repair_pending))
            .filter(|(_, floor)| *floor > 0)
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "repair still pending after {WAIT:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (a) One follower of three: a flipped bit in a committed record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_follower_refetches_and_loses_nothing() {
    let mut cluster = Cluster::start(3, 0).await;
    let mut acknowledged = propose_many(&cluster, 60, 200).await;
    let leader = cluster.leader(WAIT).await;
    let follower = if leader == NodeId(1) {
        NodeId(2)
    } else {
        NodeId(1)
    };
    let middle = *acknowledged.keys().nth(30).expect("60 acknowledged");
    cluster.wait_applied(follower, middle, WAIT).await;

    cluster.stop(follower).await;
    let record = damage_entry(&cluster, follower, middle);
    cluster.restart(follower).await;
    // Detected at start: the floor is written before the log is cut.
    assert!(
        repair_file(&cluster, follower).exists(),
        "damage at entries {}..={} detected and the repair floor persisted",
        record.first,
        record.last
    );

    wait_repaired(&cluster).await;
    acknowledged.extend(propose_many(&cluster, 5, 200).await);
    assert_all_applied(&cluster, &acknowledged).await;
    // The driver drops the persisted floor once the core cleared it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while repair_file(&cluster, follower).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repair file outlived the repair by {WAIT:?}: {:?}",
            cluster
                .nodes
                .values()
                .map(|node| {
                    let m = node.metrics();
                    (
                        m.id,
                        m.role,
                        m.term,
                        m.leader,
                        m.commit_index,
                        m.last_log_index,
                        m.repair_pending,
                    )
                })
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop_all().await;
}

fn small_segments(config: &mut NodeConfig) {
    config.log.segment_bytes = 1 << 20;
    // Keep every entry in the log: the damage must hit live segments.
    config.raft.snapshot_log_entries_threshold = 1 << 20;
    config.raft.snapshot_log_bytes_threshold = 1 << 30;
}

/// (b) Two of five nodes, damaged in different segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_damaged_in_different_segments() {
    let mut cluster = Cluster::start_tuned(5, 0, small_segments).await;
    // About 3.5 MiB of entries: several 1 MiB segments on every node.
    let mut acknowledged = propose_many(&cluster, 450, 8 << 10).await;
    let last = *acknowledged.keys().last().expect("acknowledged");
    let leader = cluster.leader(WAIT).await;
    let damaged: Vec<NodeId> = (1..=5)
        .map(NodeId)
        .filter(|id| *id != leader)
        .take(2)
        .collect();
    for id in &damaged {
        cluster.wait_applied(*id, last, WAIT).await;
    }
    for id in &damaged {
        cluster.stop(*id).await;
    }
    // A record in the middle of the first segment of one node, of the
    // second segment of the other.
    let mut hit = Vec::new();
    for (id, segment_number) in damaged.iter().zip([0usize, 1]) {
        let files = segments(&cluster, *id);
        assert!(files.len() >= 3, "node {id} has {} segments", files.len());
        let segment = &files[segment_number];
        let records = batch_records(segment);
        let record = records[records.len() / 2];
        flip_payload_bit(segment, record);
        hit.push((segment.file_name().map(|n| n.to_owned()), record.first));
    }
    assert_ne!(hit[0].0, hit[1].0, "different segments");
    assert_ne!(hit[0].1, hit[1].1, "different entries");
    for id in &damaged {
        cluster.restart(*id).await;
        assert!(
            repair_file(&cluster, *id).exists(),
            "node {id} detected damage"
        );
    }
    wait_repaired(&cluster).await;
    acknowledged.extend(propose_many(&cluster, 5, 64).await);
    assert_all_applied(&cluster, &acknowledged).await;
    cluster.stop_all().await;
}

/// (c) The same committed entry damaged on all three nodes: nobody may
/// lead, every node says it is repairing, proposals are refused, and no
/// node applies anything other than what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_copies_damaged_stops_safely() {
    let mut cluster = Cluster::start(3, 0).await;
    let acknowledged = propose_many(&cluster, 40, 100).await;
    let last = *acknowledged.keys().last().expect("acknowledged");
    let target = *acknowledged.keys().nth(20).expect("40 acknowledged");
    for id in (1..=3).map(NodeId) {
        cluster.wait_applied(id, last, WAIT).await;
    }
    for id in (1..=3).map(NodeId) {
        cluster.stop(id).await;
    }
    for id in (1..=3).map(NodeId) {
        damage_entry(&cluster, id, target);
    }
    for id in (1..=3).map(NodeId) {
        cluster.restart(id).await;
    }
    // Metrics are published shortly after start.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster
        .nodes
        .values()
        .any(|node| node.metrics().repair_pending < last)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every node reports its repair"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Many election timeouts (10-20 ticks of 10 ms each).
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < watch_until {
        for (id, node) in &cluster.nodes {
            let metrics = node.metrics();
            assert_eq!(metrics.leader, None, "node {id} found a leader");
            assert!(
                metrics.repair_pending >= last,
                "node {id} reports the repair"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, node) in &cluster.nodes {
        let refused = node.propose(Bytes::from_static(b"x")).await;
        assert!(
            matches!(refused, Err(NodeError::NotLeader { .. })),
            "node {id}: {refused:?}"
        );
        for (index, payload) in node_applied(&cluster, *id) {
            assert_eq!(
                acknowledged.get(&index),
                Some(&payload),
                "node {id} at {index}"
            );
        }
    }
    cluster.stop_all().await;
}

fn node_applied(cluster: &Cluster, id: NodeId) -> Vec<(u64, Bytes)> {
    cluster.machines[&id]
        .applied
        .lock()
        .iter()
        .filter(|(_, payload)| !payload.is_empty())
        .cloned()
        .collect()
}
