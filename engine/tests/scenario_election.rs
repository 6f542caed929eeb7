//! Elections: Raft paper §5.2 and §5.4.1, thesis §3.4, §4.2.3 (disruptive
//! servers), §6.2 (check-quorum), §9.6 (pre-vote), §3.10 (leadership
//! transfer: see scenario_transfer.rs).

mod common;

use barge::core::{Config, LogIndex, Role, Term};
use common::Cluster;

/// §5.2: a cluster elects exactly one leader, in one term, and everybody
/// follows it.
#[test]
fn three_nodes_elect_one_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    for id in [1, 2, 3] {
        assert_eq!(cluster.raft(id).term(), term, "n{id} in the leader's term");
        assert_eq!(cluster.raft(id).leader().map(|l| l.0), Some(leader));
    }
    // The new leader's no-op commits everywhere (§5.4.2, §8).
    cluster.tick_all(3);
    for id in [1, 2, 3] {
        assert_eq!(cluster.raft(id).commit_index(), LogIndex(1), "n{id}");
    }
    let metrics = cluster.raft(leader).metrics();
    assert!(metrics.elections_started >= 1);
    assert!(metrics.leader_changes >= 1);
}

/// §5.4.1: a candidate whose log is behind cannot win.
#[test]
fn stale_log_cannot_win() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let lagging = if leader == 1 { 2 } else { 1 };
    cluster.isolate(lagging);
    cluster.propose(leader, "x");
    cluster.heal();
    // Make the lagging node campaign repeatedly: it must never lead while
    // its log lacks the committed entry.
    for _ in 0..100 {
        cluster.tick(lagging);
        assert_ne!(cluster.raft(lagging).role(), Role::Leader);
    }
}

/// Thesis §9.6 and §4.2.3: a partitioned node neither inflates its term
/// (pre-vote) nor disrupts the leader when it comes back.
#[test]
fn partitioned_node_does_not_disrupt() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    let other = if leader == 3 { 2 } else { 3 };
    cluster.isolate(other);
    for _ in 0..200 {
        cluster.tick(other);
    }
    assert_eq!(cluster.raft(other).term(), term, "pre-vote keeps the term");
    assert!(cluster.raft(other).metrics().pre_votes_started > 0);
    cluster.heal();
    cluster.tick_all(30);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.raft(leader).term(), term);
}

/// Without pre-vote, a node that timed out raises its term; leader
/// stickiness (§4.2.3) makes the others ignore its requests while the
/// leader is alive.
#[test]
fn stickiness_without_pre_vote() {
    let config = Config {
        pre_vote: false,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    let other = if leader == 3 { 2 } else { 3 };
    cluster
        .cut
        .insert((barge::core::NodeId(leader), barge::core::NodeId(other)));
    for _ in 0..25 {
        cluster.tick(other);
    }
    assert!(
        cluster.raft(other).term() > term,
        "without pre-vote the term inflates"
    );
    // The third node has heard from the leader: it ignores the vote.
    cluster.tick_all(1);
    assert_eq!(cluster.leader(), Some(leader));
}

/// Thesis §6.2: a leader that cannot reach a quorum steps down within an
/// election timeout.
#[test]
fn check_quorum_steps_down() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.isolate(leader);
    for _ in 0..2 * Config::default().election_timeout_ticks_min {
        cluster.tick(leader);
    }
    assert_eq!(cluster.raft(leader).role(), Role::Follower);
    assert_eq!(cluster.raft(leader).leader(), None);
}

/// §5.2: the candidate's own vote counts only once its vote is durable
/// (Figure 2: persist before responding) and grants wait for durability.
#[test]
fn votes_wait_for_durable_hard_state() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    for id in [1, 2, 3] {
        cluster.node_mut(id).manual_disk = true;
    }
    cluster.campaign_ticks(1, 40);
    // n1 asked for its vote to be persisted; nothing else can happen yet.
    assert_eq!(cluster.raft(1).role(), Role::Candidate);
    assert!(
        cluster.network.is_empty(),
        "vote requests wait for the vote to be durable"
    );
    cluster.flush(1, usize::MAX);
    cluster.settle();
    // Voters persisted nothing yet: no grant may have left.
    assert_eq!(cluster.raft(1).role(), Role::Candidate);
    for id in [2, 3] {
        cluster.flush(id, usize::MAX);
    }
    cluster.settle();
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(cluster.raft(1).term(), Term(1));
}

/// A removed or learner node never campaigns.
#[test]
fn learners_do_not_campaign() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.add_node(4);
    cluster
        .raft_mut(leader)
        .handle_add_learner(barge::core::NodeId(4))
        .expect("leader");
    cluster.settle();
    cluster.tick_all(3);
    cluster.isolate(4);
    for _ in 0..100 {
        cluster.tick(4);
    }
    assert_eq!(cluster.raft(4).role(), Role::Follower);
    assert_eq!(cluster.raft(4).metrics().pre_votes_started, 0);
}

/// §5.2: only a leader's message or a granted vote resets the election
/// timer, so a node with a stale log that keeps campaigning (pre-vote off)
/// cannot starve the up-to-date node of its own timeout.
#[test]
fn stale_candidate_does_not_starve_elections() {
    let config = Config {
        pre_vote: false,
        check_quorum: false,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    cluster.campaign(1);
    cluster.tick_all(2);
    cluster.isolate(3);
    cluster.propose(1, "x");
    cluster.crash(1);
    cluster.heal();
    for _ in 0..200 {
        if cluster.leader().is_some() {
            break;
        }
        cluster.tick(3);
        cluster.tick(2);
    }
    assert_eq!(cluster.leader(), Some(2), "the up-to-date node wins");
}
