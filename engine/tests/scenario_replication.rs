//! Log replication: Raft paper §5.3 (log matching, conflict repair), §5.4.2
//! and Figure 8 (commit only the current term's entries by counting),
//! thesis §3.5 (fast backtracking, pipelining), §10.2.1 (leader writes its
//! disk in parallel), and the persistence rule of Figure 2.

mod common;

use barge::core::{
    Config, InjectedBug, LogIndex, Message, MessageBody, NodeId, ProposeError, Role, Term,
};
use bytes::Bytes;
use common::{payload, Cluster};

/// §5.3: proposals reach every log in order and apply everywhere.
#[test]
fn proposals_commit_and_apply_everywhere() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    for text in ["a", "b", "c"] {
        cluster.propose(leader, text);
    }
    let batch = vec![Bytes::from_static(b"d"), Bytes::from_static(b"e")];
    let ticket = cluster
        .raft_mut(leader)
        .handle_propose(batch)
        .expect("leader");
    assert_eq!(ticket.last.0 - ticket.first.0, 1, "one batch, two entries");
    cluster.settle();
    cluster.tick_all(3);
    for id in [1, 2, 3] {
        assert_eq!(
            cluster.applied_texts(id),
            vec!["a", "b", "c", "d", "e"],
            "n{id}"
        );
        cluster.check_written(id);
    }
}

/// Followers refuse proposals and name the leader.
#[test]
fn followers_redirect_proposals() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let follower = if leader == 1 { 2 } else { 1 };
    let refused = cluster.raft_mut(follower).handle_propose(payload("x"));
    assert_eq!(
        refused,
        Err(ProposeError::NotLeader {
            leader_hint: Some(NodeId(leader))
        })
    );
}

/// Uncommitted bytes are bounded: beyond the bound a proposal is refused
/// with `Overloaded`, and accepted again once entries commit.
#[test]
fn uncommitted_bytes_bound_gives_overloaded() {
    let config = Config {
        uncommitted_bytes_max: 200,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let leader = cluster.elect();
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    for id in &followers {
        cluster.isolate(*id);
    }
    let big = vec![Bytes::from(vec![7u8; 90])];
    cluster
        .raft_mut(leader)
        .handle_propose(big.clone())
        .expect("fits");
    cluster
        .raft_mut(leader)
        .handle_propose(big.clone())
        .expect("fits");
    assert_eq!(
        cluster.raft_mut(leader).handle_propose(big.clone()),
        Err(ProposeError::Overloaded)
    );
    assert!(cluster.raft(leader).metrics().uncommitted_bytes > 180);
    assert_eq!(cluster.raft(leader).metrics().proposals_overloaded, 1);
    cluster.heal();
    cluster.tick_all(8);
    assert_eq!(cluster.raft(leader).metrics().uncommitted_bytes, 0);
    cluster
        .raft_mut(leader)
        .handle_propose(big)
        .expect("room again");
}

/// Figure 2 persistence rule: a follower acknowledges an append only once
/// the entries are durable on its disk.
#[test]
fn acknowledgements_wait_for_durability() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        cluster.node_mut(id).manual_disk = true;
    }
    let ticket = cluster.propose(leader, "x");
    assert!(
        cluster.raft(leader).commit_index() < ticket.last,
        "no follower ack yet"
    );
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.flush(follower, usize::MAX);
    cluster.settle();
    assert_eq!(
        cluster.raft(leader).commit_index(),
        ticket.last,
        "one durable follower + leader"
    );
}

/// Thesis §10.2.1: the leader replicates before its own write is durable and
/// counts itself only once durable; it applies only what it holds durably.
#[test]
fn leader_counts_itself_only_when_durable() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.node_mut(leader).manual_disk = true;
    let third = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.isolate(third);
    let ticket = cluster.propose(leader, "x");
    // Only one follower reached: without the leader's own durability there
    // is no quorum.
    assert!(cluster.raft(leader).commit_index() < ticket.last);
    cluster.flush(leader, usize::MAX);
    cluster.settle();
    assert_eq!(cluster.raft(leader).commit_index(), ticket.last);
    assert_eq!(cluster.applied_texts(leader), vec!["x"]);

    // Two followers durable commit without the leader's disk, but the
    // leader does not apply what it has not made durable.
    cluster.heal();
    cluster.tick_all(8);
    let ticket = cluster.propose(leader, "y");
    assert_eq!(
        cluster.raft(leader).commit_index(),
        ticket.last,
        "followers form a quorum"
    );
    assert_eq!(
        cluster.applied_texts(leader),
        vec!["x"],
        "not durable here yet"
    );
    cluster.flush(leader, usize::MAX);
    cluster.settle();
    assert_eq!(cluster.applied_texts(leader), vec!["x", "y"]);
}

/// §5.3 and thesis §3.5: a follower with a long conflicting suffix from a
/// deposed leader is repaired, using the hint to skip whole terms.
#[test]
fn conflicting_suffix_is_truncated() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let first = cluster.elect();
    cluster.tick_all(2);
    cluster.isolate(first);
    for i in 0..20 {
        cluster
            .raft_mut(first)
            .handle_propose(payload(&format!("lost{i}")))
            .expect("still leader");
    }
    cluster.settle();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != first).collect();
    for _ in 0..300 {
        if cluster.leader().is_some_and(|l| l != first) {
            break;
        }
        for id in &others {
            cluster.tick(*id);
        }
    }
    let second = cluster.leader().expect("a new leader");
    assert_ne!(second, first);
    cluster.propose(second, "kept");
    let delivered_before = cluster.delivered;
    cluster.heal();
    cluster.tick_all(12);
    for id in [1, 2, 3] {
        assert_eq!(cluster.applied_texts(id), vec!["kept"], "n{id}");
        cluster.check_written(id);
    }
    assert_eq!(cluster.raft(first).role(), Role::Follower);
    // Fast backtracking: the repair takes a handful of messages, not one
    // round trip per conflicting entry.
    assert!(cluster.delivered - delivered_before < 200);
}

/// The in-flight window bounds appends sent to a silent follower.
#[test]
fn inflight_window_bounds_pipelining() {
    let config = Config {
        inflight_messages_max: 3,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let leader = cluster.elect();
    cluster.tick_all(2);
    let follower = if leader == 1 { 2 } else { 1 };
    let mut appends_to_follower = 0;
    // Keep the follower from answering: its messages are dropped.
    cluster.cut.insert((NodeId(follower), NodeId(leader)));
    for i in 0..10 {
        cluster
            .raft_mut(leader)
            .handle_propose(payload(&format!("{i}")))
            .expect("leader");
        cluster.settle_filtered(|m: &mut Message| {
            if m.to == NodeId(follower) && matches!(m.body, MessageBody::Append { .. }) {
                appends_to_follower += 1;
            }
            true
        });
    }
    assert_eq!(
        appends_to_follower, 3,
        "pipelined up to the window, then waits"
    );
}

/// §5.4.2, Figure 8: a leader must not commit an entry of an older term by
/// counting replicas, or a later leader may overwrite a committed entry.
/// Also shows that the test-only injected bug does exactly that.
fn figure_8(bug: Option<InjectedBug>) -> LogIndex {
    let config = Config {
        append_bytes_max: 1,
        testing_bug: bug,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5], config);
    cluster.campaign(1);
    cluster.tick_all(2);
    assert_eq!(cluster.raft(1).commit_index(), LogIndex(1));
    // (a) n1 (term 1) replicates index 2 to n2 only.
    cluster.partition(&[1, 2]);
    cluster.propose(1, "x");
    assert_eq!(cluster.raft(2).last_log_id().index, LogIndex(2));
    cluster.crash(1);
    // (b) n5 wins term 2 with n3, n4; its no-op at index 2 reaches no one.
    cluster.heal();
    cluster.partition(&[3, 4, 5]);
    cluster.age(&[2, 3, 4]);
    cluster.auto_deliver = false;
    for _ in 0..200 {
        if cluster.raft(5).role() == Role::Leader {
            break;
        }
        cluster.raft_mut(5).handle_tick();
        cluster.settle_filtered(|m: &mut Message| {
            !(m.from == NodeId(5) && matches!(m.body, MessageBody::Append { .. }))
        });
    }
    assert_eq!(cluster.raft(5).role(), Role::Leader);
    cluster.network.retain(|m| m.from != NodeId(5));
    assert_eq!(cluster.raft(5).last_log_id().term, Term(2));
    cluster.crash(5);
    // (c) n1 restarts and wins term 3 with n2, n3; it replicates index 2
    // (term 1) to n3 but its own term-3 entry reaches nobody.
    cluster.heal();
    cluster.auto_deliver = true;
    cluster.restart(1);
    cluster.isolate(4);
    cluster.isolate(5);
    // Appends from n1 lose every batch beyond index 2 on the way.
    let only_old = |m: &mut Message| {
        if let MessageBody::Append { batches, .. } = &mut m.body {
            if m.from == NodeId(1) {
                batches.retain(|b| b.last() <= LogIndex(2));
            }
        }
        true
    };
    for _ in 0..200 {
        if cluster.raft(1).role() == Role::Leader {
            break;
        }
        cluster.raft_mut(1).handle_tick();
        cluster.settle_filtered(only_old);
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(cluster.raft(1).term(), Term(3));
    for _ in 0..10 {
        cluster.raft_mut(1).handle_tick();
        cluster.settle_filtered(only_old);
    }
    assert_eq!(
        cluster.raft(3).last_log_id().index,
        LogIndex(2),
        "n3 holds index 2 of term 1"
    );
    cluster.raft(1).commit_index()
}

#[test]
fn figure_8_older_term_not_committed_by_counting() {
    // The commit index is volatile: n1 restarted with 0 and may not move it
    // to index 2 by counting.
    assert!(
        figure_8(None) < LogIndex(2),
        "index 2 (term 1) is on a majority but not committed"
    );
}

#[test]
fn figure_8_injected_bug_commits_by_counting() {
    assert_eq!(
        figure_8(Some(InjectedBug::CommitOlderTermByCounting)),
        LogIndex(2)
    );
}

/// A crashed follower restarts from its disk alone and catches up.
#[test]
fn follower_restarts_from_disk_and_catches_up() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.crash(follower);
    cluster.propose(leader, "b");
    cluster.restart(follower);
    assert_eq!(cluster.raft(follower).last_log_id().index, LogIndex(2));
    cluster.tick_all(10);
    assert_eq!(cluster.raft(follower).last_log_id().index, LogIndex(3));
    assert_eq!(cluster.applied_texts(follower), vec!["a", "b"]);
}

/// Hostile or corrupt input from a peer is an error, never a panic, and
/// leaves the node working.
#[test]
fn malformed_messages_are_refused() {
    use barge::core::{Batch, LogId, MessageError, SnapshotChunk, SnapshotMeta};
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    let term = cluster.raft(2).term();
    let batch = |first: u64, term: Term| Batch::encode_normal(LogIndex(first), term, &payload("z"));
    let append = |prev: LogId, batches: Vec<Batch>| Message {
        from: NodeId(1),
        to: NodeId(2),
        term,
        body: MessageBody::Append {
            prev,
            batches,
            commit: LogIndex(0),
        },
    };
    let prev = cluster.raft(2).last_log_id();
    let cases = vec![
        append(prev, vec![batch(prev.index.0 + 2, term)]),
        append(prev, vec![batch(prev.index.0 + 1, term.next())]),
        append(
            prev,
            vec![batch(prev.index.0 + 1, term), batch(prev.index.0 + 3, term)],
        ),
        append(prev, vec![batch(prev.index.0 + 1, Term(0))]),
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term,
            body: MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    last: LogId::new(term, LogIndex(50)),
                    membership: Default::default(),
                },
                total_bytes: 10,
                offset: 0,
                data: Bytes::from_static(b"x"),
            }),
        },
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term,
            body: MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    last: LogId::new(term.next(), LogIndex(50)),
                    membership: barge::core::Membership::new([NodeId(1)]),
                },
                total_bytes: 10,
                offset: 5,
                data: Bytes::from_static(b"0123456789"),
            }),
        },
    ];
    for message in cases {
        let result = cluster.raft_mut(2).handle_message(message.clone());
        assert!(result.is_err(), "{message:?} accepted");
    }
    let misaddressed = Message {
        to: NodeId(3),
        ..append(prev, Vec::new())
    };
    assert!(matches!(
        cluster.raft_mut(2).handle_message(misaddressed),
        Err(MessageError::WrongReceiver { .. })
    ));
    assert_eq!(cluster.raft(2).metrics().messages_rejected, 7);
    cluster.settle();
    cluster.propose(1, "still fine");
    cluster.tick_all(2);
    assert_eq!(cluster.applied_texts(2), vec!["still fine"]);
}
