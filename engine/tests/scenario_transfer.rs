//! Leadership transfer: thesis §3.10 (catch the target up, then
//! TimeoutNow; the target's vote request bypasses leader stickiness,
//! §4.2.3; abandon after an election timeout).

mod common;

use barge::core::{Config, MessageBody, NodeId, ProposeError, RequestError, Role};
use common::{payload, Cluster};

/// The target is caught up first, then wins at once; proposals are
/// refused meanwhile.
#[test]
fn transfer_to_lagging_target() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let target = if leader == 1 { 2 } else { 1 };
    cluster.isolate(target);
    cluster.propose(leader, "a");
    cluster.propose(leader, "b");
    cluster.heal();
    cluster.auto_deliver = false;
    cluster
        .raft_mut(leader)
        .handle_transfer_leadership(NodeId(target))
        .expect("leader");
    assert!(matches!(
        cluster.raft_mut(leader).handle_propose(payload("c")),
        Err(ProposeError::TransferInProgress)
    ));
    cluster.auto_deliver = true;
    // The lost appends are re-sent once the leader notices the silence
    // (three heartbeats), then the target catches up and campaigns.
    cluster.tick_all(4 * Config::default().heartbeat_interval_ticks);
    assert_eq!(cluster.leader(), Some(target));
    assert_eq!(cluster.raft(leader).role(), Role::Follower);
    cluster.tick_all(3);
    assert_eq!(cluster.applied_texts(target), vec!["a", "b"]);
}

/// An up-to-date target gets TimeoutNow immediately and its election is
/// not blocked by the others' stickiness.
#[test]
fn transfer_to_up_to_date_target_is_immediate() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    let target = if leader == 3 { 2 } else { 3 };
    let term = cluster.raft(leader).term();
    let mut timeout_now = 0;
    cluster
        .raft_mut(leader)
        .handle_transfer_leadership(NodeId(target))
        .expect("leader");
    cluster.settle_filtered(|m| {
        if matches!(m.body, MessageBody::TimeoutNow) {
            timeout_now += 1;
        }
        true
    });
    assert_eq!(timeout_now, 1);
    assert_eq!(
        cluster.leader(),
        Some(target),
        "won without waiting out any lease"
    );
    assert_eq!(cluster.raft(target).term(), term.next());
}

/// A transfer whose target never answers is abandoned after an election
/// timeout, and the leader accepts proposals again.
#[test]
fn unreachable_target_transfer_is_abandoned() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    let target = if leader == 1 { 2 } else { 1 };
    cluster.isolate(target);
    cluster
        .raft_mut(leader)
        .handle_transfer_leadership(NodeId(target))
        .expect("leader");
    for _ in 0..Config::default().election_timeout_ticks_min {
        cluster.tick(leader);
    }
    assert_eq!(cluster.raft(leader).role(), Role::Leader);
    cluster
        .raft_mut(leader)
        .handle_propose(payload("again"))
        .expect("transfer abandoned");
}

/// Only another voter can be a target; only the leader can transfer.
#[test]
fn bad_targets_are_refused() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(
        cluster
            .raft_mut(leader)
            .handle_transfer_leadership(NodeId(leader)),
        Err(RequestError::BadTransferTarget(NodeId(leader)))
    );
    assert_eq!(
        cluster
            .raft_mut(leader)
            .handle_transfer_leadership(NodeId(9)),
        Err(RequestError::BadTransferTarget(NodeId(9)))
    );
    assert_eq!(
        cluster
            .raft_mut(follower)
            .handle_transfer_leadership(NodeId(3)),
        Err(RequestError::NotLeader {
            leader_hint: Some(NodeId(leader))
        })
    );
}
