//! Linearizable reads: thesis §6.4 (ReadIndex, batched; reads from
//! followers) and §6.4.1 (leases bounded by clock drift); Raft paper §8.

mod common;

use barge::core::{Config, LogIndex, MessageBody, NodeId, ReadId, RequestError, Role};
use common::Cluster;

fn heartbeats_sent(cluster: &Cluster) -> usize {
    cluster
        .network
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count()
}

/// §6.4: a read is answered at the commit index once a heartbeat round
/// confirms leadership, after the state machine applied that index.
#[test]
fn read_index_on_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    let ticket = cluster.propose(leader, "a");
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(7))
        .expect("leader");
    cluster.settle();
    assert_eq!(
        cluster.node(leader).resolved_reads,
        vec![(ReadId(7), ticket.last)]
    );
}

/// §6.4: one heartbeat round serves every read queued behind it.
#[test]
fn reads_are_batched_into_rounds() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.auto_deliver = false;
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(1))
        .expect("leader");
    cluster.settle();
    assert_eq!(heartbeats_sent(&cluster), 2, "first read starts a round");
    for read in 2..=100 {
        cluster
            .raft_mut(leader)
            .handle_read_index(ReadId(read))
            .expect("leader");
    }
    cluster.settle();
    assert_eq!(
        heartbeats_sent(&cluster),
        2,
        "later reads wait for the next round"
    );
    cluster.auto_deliver = true;
    cluster.settle();
    let resolved = &cluster.node(leader).resolved_reads;
    assert_eq!(resolved.len(), 100);
    assert!(resolved.iter().all(|(_, index)| *index == LogIndex(1)));
}

/// §6.4 step 1: a new leader serves reads only after committing an entry
/// of its own term (its no-op), since until then it may not know the
/// latest commit index.
#[test]
fn reads_wait_for_the_leaders_first_commit() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    for id in [2, 3] {
        cluster.node_mut(id).manual_disk = true;
    }
    cluster.node_mut(1).manual_disk = true;
    cluster.campaign_ticks(1, 40);
    for _ in 0..10 {
        if cluster.raft(1).role() == Role::Leader {
            break;
        }
        for id in [1, 2, 3] {
            cluster.flush(id, usize::MAX);
        }
        cluster.settle();
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    // The no-op is written but not durable anywhere else yet.
    cluster.flush(1, usize::MAX);
    cluster.settle();
    cluster
        .raft_mut(1)
        .handle_read_index(ReadId(1))
        .expect("leader");
    cluster.settle();
    assert!(
        cluster.node(1).resolved_reads.is_empty(),
        "no-op not committed yet"
    );
    for id in [2, 3] {
        cluster.node_mut(id).manual_disk = false;
        cluster.flush(id, usize::MAX);
    }
    cluster.settle();
    cluster.tick_all(3);
    assert_eq!(
        cluster.node(1).resolved_reads,
        vec![(ReadId(1), LogIndex(1))]
    );
}

/// §6.4: a leader cut off from the majority cannot confirm reads; they are
/// refused when it steps down (check-quorum, §6.2).
#[test]
fn partitioned_leader_rejects_reads() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.isolate(leader);
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(9))
        .expect("still believes it leads");
    for _ in 0..2 * Config::default().election_timeout_ticks_min {
        cluster.tick(leader);
    }
    assert!(cluster.node(leader).resolved_reads.is_empty());
    assert_eq!(cluster.node(leader).rejected_reads, vec![ReadId(9)]);
}

/// §6.4 "reads from followers": the follower asks the leader for a read
/// index and answers once it has applied that far itself.
#[test]
fn follower_read_through_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    let ticket = cluster.propose(leader, "a");
    let follower = if leader == 1 { 2 } else { 1 };
    cluster
        .raft_mut(follower)
        .handle_read_index(ReadId(3))
        .expect("leader known");
    cluster.settle();
    cluster.tick_all(2);
    assert_eq!(
        cluster.node(follower).resolved_reads,
        vec![(ReadId(3), ticket.last)]
    );
    assert!(cluster.node(follower).applied_index >= ticket.last);
}

/// A follower whose question or answer is lost refuses the read after a
/// bounded time instead of holding it forever.
#[test]
fn follower_read_times_out_when_cut_off() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    cluster.tick_all(2);
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.cut.insert((NodeId(follower), NodeId(leader)));
    cluster
        .raft_mut(follower)
        .handle_read_index(ReadId(4))
        .expect("leader known");
    for _ in 0..Config::default().election_timeout_ticks_max {
        cluster.tick(follower);
    }
    assert_eq!(cluster.node(follower).rejected_reads, vec![ReadId(4)]);
}

/// Without a known leader a read is refused at once; pending reads are
/// bounded.
#[test]
fn reads_without_leader_or_beyond_bound_are_refused() {
    let config = Config {
        reads_pending_max: 2,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    assert_eq!(
        cluster.raft_mut(1).handle_read_index(ReadId(1)),
        Err(RequestError::NotLeader { leader_hint: None })
    );
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.isolate(leader);
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(1))
        .expect("room");
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(2))
        .expect("room");
    assert_eq!(
        cluster.raft_mut(leader).handle_read_index(ReadId(3)),
        Err(RequestError::Overloaded)
    );
}

/// §6.4.1: with leases on, a leader that heard from a quorum within the
/// lease serves reads with no message at all; after the lease lapses it
/// needs a round again.
#[test]
fn lease_reads_skip_the_round() {
    let config = Config {
        lease_read: true,
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let leader = cluster.elect();
    cluster.tick_all(2);
    cluster.auto_deliver = false;
    cluster
        .raft_mut(leader)
        .handle_read_index(ReadId(1))
        .expect("leader");
    cluster.settle();
    assert_eq!(
        cluster.node(leader).resolved_reads.len(),
        1,
        "served from the lease"
    );
    assert!(cluster.network.is_empty(), "no heartbeat round needed");
    // Cut off, the lease runs out before the others may elect anyone
    // (election_timeout_ticks_min - clock_drift_ticks).
    cluster.auto_deliver = true;
    cluster.isolate(leader);
    let defaults = Config::default();
    for _ in 0..defaults.election_timeout_ticks_min - defaults.clock_drift_ticks {
        cluster.tick(leader);
    }
    match cluster.raft_mut(leader).handle_read_index(ReadId(2)) {
        Ok(()) => {
            cluster.settle();
            assert_eq!(
                cluster.node(leader).resolved_reads.len(),
                1,
                "lease expired"
            );
        }
        Err(error) => assert!(matches!(error, RequestError::NotLeader { .. })),
    }
}
