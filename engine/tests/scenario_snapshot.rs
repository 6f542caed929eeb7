//! Snapshots and log compaction: Raft paper §7 (InstallSnapshot in chunks,
//! retaining a matching suffix), thesis chapter 5 (when to snapshot,
//! §5.1 compaction below the snapshot, §5.3 sending to slow followers).

mod common;

use barge::core::{Config, LogIndex, MessageBody, NodeId};
use common::Cluster;

fn small_snapshots() -> Config {
    Config {
        snapshot_log_entries_threshold: 5,
        snapshot_chunk_bytes: 16,
        ..Config::default()
    }
}

/// Thesis §5.1: past the threshold the core asks for a snapshot once, and
/// compacts its log below the snapshot it is given.
#[test]
fn snapshot_requested_at_threshold_and_log_compacted() {
    let mut cluster = Cluster::new(&[1, 2, 3], small_snapshots());
    for id in [1, 2, 3] {
        cluster.node_mut(id).auto_snapshot = true;
    }
    let leader = cluster.elect();
    for i in 0..12 {
        cluster.propose(leader, &format!("e{i}"));
    }
    cluster.tick_all(2);
    let raft = cluster.raft(leader);
    let meta = raft.snapshot_meta().expect("a snapshot was taken");
    assert!(meta.last.index >= LogIndex(5));
    assert!(cluster.node(leader).snapshot_requests >= 2);
    // Entries below the snapshot are gone from memory, except a batch
    // straddling it.
    assert_eq!(raft.term_at(LogIndex(1)), None);
    assert_eq!(raft.term_at(meta.last.index), Some(meta.last.term));
}

/// §7: a follower behind the compacted log receives the snapshot in
/// acknowledged chunks, installs it and resumes normal replication.
#[test]
fn lagging_follower_gets_snapshot_in_chunks() {
    let mut cluster = Cluster::new(&[1, 2, 3], small_snapshots());
    let leader = cluster.elect();
    cluster.tick_all(2);
    for id in [1, 2, 3] {
        cluster.node_mut(id).auto_snapshot = true;
    }
    let lagging = if leader == 1 { 2 } else { 1 };
    cluster.crash(lagging);
    let mut expected = Vec::new();
    for i in 0..20 {
        let text = format!("entry-{i:02}");
        cluster.propose(leader, &text);
        expected.push(text);
    }
    cluster.tick_all(1);
    assert!(
        cluster.raft(leader).term_at(LogIndex(2)).is_none(),
        "compacted past the laggard"
    );
    cluster.restart(lagging);
    let mut chunks = 0;
    for _ in 0..20 {
        cluster.raft_mut(leader).handle_tick();
        cluster.settle_filtered(|m| {
            if matches!(m.body, MessageBody::InstallSnapshot(_)) && m.to == NodeId(lagging) {
                chunks += 1;
            }
            true
        });
    }
    assert!(chunks > 3, "snapshot sent in several chunks, got {chunks}");
    assert_eq!(cluster.raft(lagging).metrics().snapshots_installed, 1);
    cluster.tick_all(2);
    assert_eq!(cluster.applied_texts(lagging), expected);
    cluster.propose(leader, "after");
    cluster.tick_all(2);
    assert_eq!(
        cluster.applied_texts(lagging).last().map(String::as_str),
        Some("after")
    );
}

/// Lost chunks are re-sent from the last acknowledged offset.
#[test]
fn lost_chunks_are_resent() {
    let mut cluster = Cluster::new(&[1, 2, 3], small_snapshots());
    let leader = cluster.elect();
    cluster.tick_all(2);
    for id in [1, 2, 3] {
        cluster.node_mut(id).auto_snapshot = true;
    }
    let lagging = if leader == 1 { 2 } else { 1 };
    cluster.crash(lagging);
    for i in 0..20 {
        cluster.propose(leader, &format!("entry-{i:02}"));
    }
    cluster.restart(lagging);
    let mut seen = 0;
    for _ in 0..40 {
        cluster.raft_mut(leader).handle_tick();
        cluster.settle_filtered(|m| {
            if matches!(m.body, MessageBody::InstallSnapshot(_)) {
                seen += 1;
                // Drop every third chunk.
                return seen % 3 != 0;
            }
            true
        });
    }
    assert_eq!(cluster.raft(lagging).metrics().snapshots_installed, 1);
    assert_eq!(
        cluster.applied_texts(lagging),
        cluster.applied_texts(leader)
    );
}

/// A node restarts from its snapshot plus the log after it.
#[test]
fn restart_from_snapshot_and_log() {
    let mut cluster = Cluster::new(&[1, 2, 3], small_snapshots());
    for id in [1, 2, 3] {
        cluster.node_mut(id).auto_snapshot = true;
    }
    let leader = cluster.elect();
    for i in 0..9 {
        cluster.propose(leader, &format!("e{i}"));
    }
    cluster.tick_all(2);
    let before = cluster.applied_texts(leader);
    let last = cluster.raft(leader).last_log_id();
    cluster.crash(leader);
    cluster.restart(leader);
    assert_eq!(cluster.raft(leader).last_log_id(), last);
    assert!(cluster.raft(leader).snapshot_meta().is_some());
    cluster.tick_all(30);
    assert_eq!(cluster.applied_texts(leader), before);
}

/// A snapshot may end inside a batch; on restart the log keeps the entries
/// after the snapshot from that straddling batch (§7: retain the suffix).
#[test]
fn restart_with_snapshot_inside_a_batch() {
    use barge::core::{LogId, Snapshot, SnapshotMeta};
    use bytes::Bytes;
    let mut cluster = Cluster::new(&[1], Config::default());
    cluster.elect();
    let payloads: Vec<Bytes> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| Bytes::from(*t))
        .collect();
    let ticket = cluster
        .raft_mut(1)
        .handle_propose(payloads)
        .expect("leader");
    cluster.settle();
    let term = ticket.term;
    let middle = LogId::new(term, LogIndex(ticket.first.0 + 1));
    cluster
        .raft_mut(1)
        .handle_snapshot_created(middle, Bytes::new())
        .expect("applied");
    let meta: SnapshotMeta = cluster.raft(1).snapshot_meta().expect("taken").clone();
    cluster.node_mut(1).disk.snapshot = Some(Snapshot {
        meta,
        data: Bytes::new(),
    });
    cluster.crash(1);
    cluster.restart(1);
    let raft = cluster.raft(1);
    assert_eq!(raft.last_log_id(), LogId::new(term, ticket.last));
    assert_eq!(raft.term_at(middle.index.next()), Some(term));
    assert_eq!(raft.term_at(ticket.first), None, "before the snapshot");
    cluster.elect();
    cluster.propose(1, "e");
    assert_eq!(
        cluster.applied_texts(1).last().map(String::as_str),
        Some("e")
    );
}

/// §7: installing a snapshot whose last entry the log holds keeps the log
/// after it, and with it the configurations it holds (a configuration is
/// in force once appended, thesis §4.1).
#[test]
fn installed_snapshot_keeps_later_configurations() {
    use barge::core::{LogId, Message, SnapshotChunk, SnapshotMeta};
    use bytes::Bytes;
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    for id in [2, 3] {
        cluster.node_mut(id).manual_disk = true;
    }
    let ticket = cluster.propose(1, "a");
    cluster
        .raft_mut(1)
        .handle_add_learner(NodeId(4))
        .expect("leader");
    cluster.settle();
    assert!(cluster.raft(2).membership().learners.contains(&NodeId(4)));
    assert!(cluster.raft(2).commit_index() < ticket.last);
    let term = cluster.raft(1).term();
    let chunk = SnapshotChunk {
        meta: SnapshotMeta {
            last: LogId::new(term, ticket.last),
            membership: cluster.raft(1).committed_membership().clone(),
        },
        total_bytes: 0,
        offset: 0,
        data: Bytes::new(),
    };
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term,
        body: MessageBody::InstallSnapshot(chunk),
    };
    cluster
        .raft_mut(2)
        .handle_message(message)
        .expect("valid chunk");
    assert_eq!(cluster.raft(2).metrics().snapshots_installed, 1);
    assert!(
        cluster.raft(2).membership().learners.contains(&NodeId(4)),
        "the configuration after the snapshot is still in force"
    );
}
