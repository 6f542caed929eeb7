//! Membership changes: Raft paper §6 (joint consensus), thesis chapter 4
//! (§4.1 single-server changes, effective when appended; §4.2.1 learners
//! catching up; §4.2.2 removing the leader; §4.2.3 disruptive servers).

mod common;

use barge::core::{Config, LogIndex, MembershipChange, NodeId, RequestError, Role};
use common::{ids, Cluster};

fn change(voters: &[u64], learners: &[u64]) -> MembershipChange {
    MembershipChange {
        voters: ids(voters),
        learners: ids(learners),
    }
}

/// §4.2.1: a learner receives the log but neither votes nor counts.
#[test]
fn learner_replicates_without_voting() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.add_node(4);
    cluster
        .raft_mut(leader)
        .handle_add_learner(NodeId(4))
        .expect("leader");
    cluster.settle();
    cluster.propose(leader, "a");
    cluster.tick_all(3);
    assert_eq!(cluster.applied_texts(4), vec!["a"]);
    assert!(cluster.raft(4).membership().learners.contains(&NodeId(4)));
    // Two voters down: the learner does not make a quorum.
    let down: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    for id in &down {
        cluster.isolate(*id);
    }
    let ticket = cluster.propose(leader, "b");
    cluster.tick_all(3);
    assert!(cluster.raft(leader).commit_index() < ticket.last);
}

/// §4.1: adding one voter is a single configuration entry, in effect once
/// appended; the new voter counts towards the quorum after that.
#[test]
fn single_server_addition() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.add_node(4);
    let index = cluster
        .raft_mut(leader)
        .handle_change_membership(change(&[1, 2, 3, 4], &[]))
        .expect("leader");
    assert!(
        !cluster.raft(leader).membership().is_joint(),
        "single-server change"
    );
    assert_eq!(
        cluster.raft(leader).membership().voters,
        ids(&[1, 2, 3, 4]),
        "effective when appended"
    );
    cluster.settle();
    cluster.tick_all(3);
    assert!(cluster.raft(leader).commit_index() >= index);
    assert_eq!(cluster.raft(4).membership().voters, ids(&[1, 2, 3, 4]));
    // A second change waits for nothing now, but two at once are refused.
    cluster.add_node(5);
    cluster
        .raft_mut(leader)
        .handle_change_membership(change(&[1, 2, 3, 4, 5], &[]))
        .expect("leader");
    assert_eq!(
        cluster
            .raft_mut(leader)
            .handle_change_membership(change(&[1, 2, 3], &[])),
        Err(RequestError::ChangeInProgress)
    );
}

/// §6: replacing two voters goes through C_old,new, which the leader
/// leaves on its own once committed; removed nodes stop counting.
#[test]
fn joint_consensus_replaces_two_voters() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    cluster.add_node(4);
    cluster.add_node(5);
    cluster.propose(1, "before");
    cluster
        .raft_mut(1)
        .handle_change_membership(change(&[1, 4, 5], &[]))
        .expect("leader");
    assert!(cluster.raft(1).membership().is_joint());
    assert_eq!(
        cluster.raft(1).membership().voters_outgoing,
        ids(&[1, 2, 3])
    );
    cluster.settle();
    cluster.tick_all(4);
    let final_membership = cluster.raft(1).committed_membership().clone();
    assert!(
        !final_membership.is_joint(),
        "left the joint configuration automatically"
    );
    assert_eq!(final_membership.voters, ids(&[1, 4, 5]));
    // The old voters no longer matter: commit with them gone.
    cluster.crash(2);
    cluster.crash(3);
    let ticket = cluster.propose(1, "after");
    cluster.tick_all(2);
    assert!(cluster.raft(1).commit_index() >= ticket.last);
    assert_eq!(cluster.applied_texts(5), vec!["before", "after"]);
}

/// While joint, a decision needs both majorities (§6).
#[test]
fn joint_configuration_needs_both_majorities() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    cluster.add_node(4);
    cluster.add_node(5);
    // New voters cut off: C_new = {1, 4, 5} has only n1.
    cluster.isolate(4);
    cluster.isolate(5);
    let joint_index = cluster
        .raft_mut(1)
        .handle_change_membership(change(&[1, 4, 5], &[]))
        .expect("leader");
    cluster.tick_all(4);
    assert!(
        cluster.raft(1).commit_index() < joint_index,
        "old majority alone is not enough"
    );
    cluster.heal();
    cluster.tick_all(6);
    assert!(cluster.raft(1).commit_index() > joint_index);
}

/// §4.2.2: a leader removed from the configuration manages the change,
/// then steps down once it commits; the rest elect a new leader.
#[test]
fn removed_leader_steps_down() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    let index = cluster
        .raft_mut(1)
        .handle_change_membership(change(&[2, 3], &[]))
        .expect("leader");
    cluster.settle();
    cluster.tick_all(2);
    assert!(cluster.raft(2).commit_index() >= index);
    assert_eq!(cluster.raft(1).role(), Role::Follower);
    cluster.crash(1);
    let leader = cluster.elect();
    assert!(leader == 2 || leader == 3);
    cluster.propose(leader, "x");
    cluster.tick_all(2);
    assert_eq!(cluster.applied_texts(2), vec!["x"]);
}

/// §4.2.3: a removed server that never learned of its removal times out
/// and campaigns, but cannot disrupt the cluster (pre-vote, stickiness).
#[test]
fn removed_server_cannot_disrupt() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    // n4 misses its removal.
    cluster.isolate(4);
    let index = cluster
        .raft_mut(1)
        .handle_change_membership(change(&[1, 2, 3], &[]))
        .expect("leader");
    cluster.tick_all(3);
    assert!(cluster.raft(1).commit_index() >= index);
    let term = cluster.raft(1).term();
    cluster.heal();
    cluster.tick_all(100);
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(cluster.raft(1).term(), term, "no term inflation from n4");
    assert!(
        cluster.raft(4).metrics().pre_votes_started > 0,
        "n4 did try"
    );
}

/// Invalid targets are refused with a reason.
#[test]
fn invalid_changes_are_refused() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    cluster.campaign(1);
    cluster.tick_all(2);
    assert!(matches!(
        cluster
            .raft_mut(1)
            .handle_change_membership(change(&[], &[])),
        Err(RequestError::Membership(_))
    ));
    assert!(matches!(
        cluster
            .raft_mut(1)
            .handle_change_membership(change(&[1, 2, 3], &[3])),
        Err(RequestError::Membership(_))
    ));
    assert!(matches!(
        cluster
            .raft_mut(2)
            .handle_change_membership(change(&[1, 2], &[])),
        Err(RequestError::NotLeader { .. })
    ));
    assert_eq!(cluster.raft(1).commit_index(), LogIndex(1));
}

/// Thesis §4.2.2: a leader that appended its own removal and lost
/// leadership before the change committed is the only node whose log can
/// win; it campaigns (counting only the new voters), commits the change,
/// then steps down, so the cluster does not stall.
#[test]
fn leader_removed_by_uncommitted_change_still_finishes_it() {
    let mut cluster = Cluster::new(&[1, 3], Config::default());
    cluster.campaign(3);
    cluster.tick_all(2);
    cluster.propose(3, "a");
    // n1 misses the change, so n3's log is longer than n1's.
    cluster.cut.insert((NodeId(3), NodeId(1)));
    let index = cluster
        .raft_mut(3)
        .handle_change_membership(change(&[1], &[]))
        .expect("leader");
    for _ in 0..2 * Config::default().election_timeout_ticks_max {
        cluster.tick(3);
    }
    assert_ne!(
        cluster.raft(3).role(),
        Role::Leader,
        "check-quorum stepped it down"
    );
    assert!(cluster.raft(3).commit_index() < index);
    cluster.heal();
    cluster.tick_all(200);
    assert!(
        cluster.raft(1).commit_index() >= index,
        "the change committed"
    );
    assert_eq!(cluster.raft(1).committed_membership().voters, ids(&[1]));
    assert_eq!(cluster.leader(), Some(1));
    cluster.propose(1, "b");
    assert_eq!(cluster.applied_texts(1), vec!["a", "b"]);
}
