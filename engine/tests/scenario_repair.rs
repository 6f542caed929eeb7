//! Protocol-aware recovery of a damaged log (PAR, Alagappan et al., FAST
//! 2018; Raft §5.4.1 for why it is safe): a node that lost acknowledged
//! entries to damage restarts with a repair floor, refetches them from the
//! leader, and meanwhile neither campaigns nor votes for a candidate behind
//! what it lost. When every copy of a committed entry is damaged the
//! cluster stops instead of electing a leader that lacks it.

mod common;

use std::collections::VecDeque;

use barge::core::{
    AppendResult, Config, InjectedBug, LogGeneration, LogId, LogIndex, Message, MessageBody,
    NodeId, ProposeError, Role,
};
use common::{payload, Cluster};

/// What the history both floor tests share left behind.
struct DamagedHistory {
    leader: u64,
    damaged: u64,
    lagging: u64,
    /// The entry committed on the leader and `damaged` only.
    ticket: barge::core::ProposalTicket,
    /// `damaged`'s last log id before the damage.
    floor: LogId,
}

/// "only-on-two" is committed on the leader and one follower while the
/// other is cut off; then the leader crashes and that follower restarts
/// with the entry lost to damage.
fn commit_on_two_then_damage(cluster: &mut Cluster) -> DamagedHistory {
    let leader = cluster.elect();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (damaged, lagging) = (others[0], others[1]);
    cluster.isolate(lagging);
    let ticket = cluster.propose(leader, "only-on-two");
    cluster.tick_all(3);
    assert!(cluster.raft(leader).commit_index() >= ticket.last);
    let floor = cluster.raft(damaged).last_log_id();
    cluster.crash(leader);
    cluster.crash_damaged(damaged, ticket.last);
    cluster.heal();
    cluster.restart(damaged);
    DamagedHistory {
        leader,
        damaged,
        lagging,
        ticket,
        floor,
    }
}

/// Writes `count` entries through the leader and lets everyone catch up.
fn commit_entries(cluster: &mut Cluster, leader: u64, count: usize) -> Vec<String> {
    let texts: Vec<String> = (0..count).map(|i| format!("entry-{i}")).collect();
    for text in &texts {
        cluster.propose(leader, text);
    }
    cluster.tick_all(5);
    texts
}

fn assert_same_state(cluster: &Cluster, ids: &[u64], expected: &[String]) {
    for &id in ids {
        assert_eq!(
            cluster.applied_texts(id),
            expected,
            "n{id} applied every acknowledged entry, in order"
        );
        assert_eq!(cluster.raft(id).repair_floor(), None, "n{id} repaired");
        cluster.check_written(id);
    }
}

/// A follower loses the suffix of its log to damage: it comes back with a
/// floor, the leader (which had seen it acknowledge everything) probes back
/// down to what it still holds, resends, and the floor clears.
#[test]
fn damaged_follower_refetches_from_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let texts = commit_entries(&mut cluster, leader, 20);
    let follower = if leader == 1 { 2 } else { 1 };
    let last = cluster.raft(follower).last_log_id();
    assert_eq!(last, cluster.raft(leader).last_log_id());

    cluster.crash_damaged(follower, LogIndex(4));
    cluster.restart(follower);
    // Restarting settles the network, so the repair may already be done;
    // the floor the core started from is the log's old last entry.
    assert_eq!(cluster.node(follower).disk.lost, Some(last));
    cluster.tick_all(20);

    assert_eq!(cluster.raft(follower).last_log_id(), last);
    assert_same_state(&cluster, &[1, 2, 3], &texts);
    assert_eq!(cluster.raft(follower).metrics().repair_floor, None);
    assert_eq!(
        cluster.raft(leader).metrics().followers_went_back,
        1,
        "the leader saw the follower's newer log generation once"
    );
}

/// While the floor is set the node does not campaign, however long it
/// waits, and refuses a candidate whose log is behind the floor even though
/// it is ahead of the cut log.
#[test]
fn repairing_node_never_campaigns_and_refuses_stale_candidates() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let DamagedHistory {
        leader,
        damaged,
        lagging,
        floor,
        ..
    } = commit_on_two_then_damage(&mut cluster);
    assert_eq!(cluster.raft(damaged).repair_floor(), Some(floor));
    for _ in 0..300 {
        cluster.tick_all(1);
        for id in [damaged, lagging] {
            assert_ne!(
                cluster.raft(id).role(),
                Role::Leader,
                "n{id} must not lead without the committed entry"
            );
        }
        assert_eq!(cluster.raft(damaged).role(), Role::Follower);
    }
    assert_eq!(cluster.raft(damaged).metrics().elections_started, 0);
    assert_eq!(cluster.raft(damaged).metrics().pre_votes_started, 0);
    assert_eq!(cluster.raft(damaged).repair_floor(), Some(floor));

    // The node that holds the entry comes back, wins, and repairs both.
    cluster.restart(leader);
    let new_leader = cluster.elect();
    assert_eq!(
        new_leader, leader,
        "only the intact node can satisfy the floor"
    );
    cluster.tick_all(10);
    let texts = vec!["only-on-two".to_string()];
    assert_same_state(&cluster, &[1, 2, 3], &texts);
}

/// The same history without the vote floor: the lagging node wins with the
/// damaged node's vote and the committed entry is gone. This is what the
/// floor prevents (the simulator checks the same at scale).
#[test]
fn without_the_floor_a_committed_entry_is_lost() {
    let config = Config {
        testing_bug: Some(InjectedBug::RepairWithoutVoteFloor),
        ..Config::default()
    };
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let DamagedHistory { leader, ticket, .. } = commit_on_two_then_damage(&mut cluster);
    let new_leader = cluster.elect();
    assert_ne!(new_leader, leader);
    let committed_there = cluster.raft(new_leader).term_at(ticket.last);
    assert_ne!(
        committed_there,
        Some(ticket.term),
        "a leader without the committed entry was elected"
    );
}

/// Two of three nodes damaged at the same entry, the third intact: the
/// intact node's log satisfies both floors, it wins, and all three end with
/// every entry.
#[test]
fn two_damaged_one_intact_recovers() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let texts = commit_entries(&mut cluster, leader, 10);
    let intact = if leader == 3 { 2 } else { 3 };
    let damaged: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != intact).collect();
    for &id in &damaged {
        cluster.crash_damaged(id, LogIndex(5));
    }
    for &id in &damaged {
        cluster.restart(id);
    }
    let new_leader = cluster.elect();
    assert_eq!(new_leader, intact, "only the intact node may lead");
    cluster.tick_all(10);
    assert_same_state(&cluster, &[1, 2, 3], &texts);
}

/// Every copy of a committed entry damaged: nobody campaigns, nobody would
/// vote for a log without it, so no leader is ever elected; every node says
/// it is repairing, and proposals are refused rather than served from a
/// log missing acknowledged entries.
#[test]
fn all_copies_damaged_stops_safely() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    commit_entries(&mut cluster, leader, 10);
    let floors: Vec<LogId> = [1, 2, 3]
        .into_iter()
        .map(|id| cluster.raft(id).last_log_id())
        .collect();
    for id in [1, 2, 3] {
        cluster.crash_damaged(id, LogIndex(6));
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.tick_all(1_000);
    assert_eq!(cluster.leader(), None, "no leader without the entry");
    for (id, floor) in [1u64, 2, 3].into_iter().zip(floors) {
        let raft = cluster.raft(id);
        assert_eq!(raft.repair_floor(), Some(floor), "n{id} reports the repair");
        assert_eq!(raft.leader(), None);
        assert_eq!(raft.last_log_id().index, LogIndex(5));
        assert!(raft.commit_index() < LogIndex(6));
        assert!(cluster.applied_texts(id).len() < 10);
        let refused = cluster.raft_mut(id).handle_propose(payload("x"));
        assert_eq!(refused, Err(ProposeError::NotLeader { leader_hint: None }));
    }
}

/// A floor the recovered log already reaches (a crash after the repair
/// caught up, before the driver dropped its copy) clears at start.
#[test]
fn floor_already_reached_clears_at_start() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    commit_entries(&mut cluster, leader, 3);
    let follower = if leader == 1 { 2 } else { 1 };
    let last = cluster.raft(follower).last_log_id();
    cluster.crash(follower);
    cluster.node_mut(follower).disk.lost = Some(last);
    cluster.restart(follower);
    assert_eq!(cluster.raft(follower).repair_floor(), None);
}

/// Removes from the network the messages `select` picks, in order.
fn take_messages(cluster: &mut Cluster, select: impl Fn(&Message) -> bool) -> Vec<Message> {
    let (taken, kept): (VecDeque<Message>, VecDeque<Message>) =
        cluster.network.drain(..).partition(|m| select(m));
    cluster.network = kept;
    taken.into()
}

/// Hands `message` to its receiver and queues whatever it sends.
fn deliver(cluster: &mut Cluster, message: Message) {
    let to = message.to.0;
    cluster
        .raft_mut(to)
        .handle_message(message)
        .expect("well-formed message");
    cluster.settle();
}

fn is_append_to(message: &Message, to: u64) -> bool {
    message.to == NodeId(to) && matches!(message.body, MessageBody::Append { .. })
}

fn is_answer_from(message: &Message, from: u64) -> bool {
    message.from == NodeId(from) && matches!(message.body, MessageBody::AppendResponse(_))
}

/// Ticks the leader alone until it has sent `follower` a heartbeat
/// (bounded), with delivery off.
fn heartbeat_to(cluster: &mut Cluster, leader: u64, follower: u64) -> Message {
    for _ in 0..100 {
        cluster.tick(leader);
        let heartbeats = take_messages(cluster, |m| {
            m.to == NodeId(follower) && matches!(m.body, MessageBody::Heartbeat { .. })
        });
        if let Some(heartbeat) = heartbeats.into_iter().next() {
            return heartbeat;
        }
    }
    panic!("n{leader} sent n{follower} no heartbeat within 100 ticks");
}

/// A follower's log never goes back within one log generation, so a
/// rejection it sent before a later acknowledgement (the network reordered
/// them) is stale: the leader keeps the match point and sends nothing
/// (§5.3; before log generations it lowered the match point and probed).
#[test]
fn stale_rejection_reordered_behind_an_acknowledgement_keeps_the_match_point() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let mut texts = commit_entries(&mut cluster, leader, 3);
    let follower = if leader == 1 { 2 } else { 1 };

    // Two pipelined appends; the follower gets the second one first and
    // refuses it, then the first, then the second again.
    cluster.auto_deliver = false;
    let first = cluster.propose(leader, "a");
    let second = cluster.propose(leader, "b");
    texts.extend(["a".to_string(), "b".to_string()]);
    let appends = take_messages(&mut cluster, |m| is_append_to(m, follower));
    assert_eq!(appends.len(), 2, "pipelined: {appends:?}");
    deliver(&mut cluster, appends[1].clone());
    let rejections = take_messages(&mut cluster, |m| is_answer_from(m, follower));
    let [rejection] = &rejections[..] else {
        panic!("one answer expected: {rejections:?}");
    };
    assert!(
        matches!(
            rejection.body,
            MessageBody::AppendResponse(AppendResult::Reject { rejected, generation: LogGeneration(0), .. })
                if rejected == first.last
        ),
        "{rejection:?}"
    );
    deliver(&mut cluster, appends[0].clone());
    deliver(&mut cluster, appends[1].clone());
    cluster.auto_deliver = true;
    cluster.settle();
    assert!(cluster.raft(leader).commit_index() >= second.last);

    // The stale rejection arrives last.
    cluster.auto_deliver = false;
    deliver(&mut cluster, rejection.clone());
    let probes = take_messages(&mut cluster, |m| is_append_to(m, follower));
    assert!(probes.is_empty(), "stale rejection probed: {probes:?}");
    assert_eq!(cluster.raft(leader).metrics().followers_went_back, 0);
    cluster.auto_deliver = true;

    // Replication goes on from the match point.
    texts.push("c".to_string());
    cluster.propose(leader, "c");
    cluster.tick_all(5);
    assert_same_state(&cluster, &[1, 2, 3], &texts);
}

/// What the leader learns from a newer log generation it does not unlearn
/// from an older answer: an acknowledgement the follower sent before its
/// log went back, arriving after the leader noticed the loss, is stale. Had
/// the leader believed it, it would count the lost entries as held again,
/// ignore the follower's rejections in the new generation as stale, and
/// never resend them.
#[test]
fn acknowledgement_from_before_the_loss_is_stale() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::default());
    let leader = cluster.elect();
    let mut texts = commit_entries(&mut cluster, leader, 6);
    let follower = if leader == 1 { 2 } else { 1 };

    // The follower acknowledges "late"; the acknowledgement is delayed.
    cluster.auto_deliver = false;
    cluster.propose(leader, "late");
    texts.push("late".to_string());
    for append in take_messages(&mut cluster, |m| is_append_to(m, follower)) {
        deliver(&mut cluster, append);
    }
    let delayed = take_messages(&mut cluster, |m| is_answer_from(m, follower));
    assert!(
        matches!(
            delayed[..],
            [Message {
                body: MessageBody::AppendResponse(AppendResult::Success {
                    generation: LogGeneration(0),
                    ..
                }),
                ..
            }]
        ),
        "{delayed:?}"
    );
    cluster.auto_deliver = true;
    cluster.settle();
    let last = cluster.raft(follower).last_log_id();

    // Damage cuts the follower back to 3 (generation 1). The leader learns
    // it from the answer to a heartbeat, and probes.
    cluster.crash_damaged(follower, LogIndex(4));
    cluster.auto_deliver = false;
    cluster.restart(follower);
    assert_eq!(cluster.node(follower).disk.log_generation, LogGeneration(1));
    let heartbeat = heartbeat_to(&mut cluster, leader, follower);
    deliver(&mut cluster, heartbeat);
    for answer in take_messages(&mut cluster, |m| is_answer_from(m, follower)) {
        deliver(&mut cluster, answer);
    }
    assert_eq!(cluster.raft(leader).metrics().followers_went_back, 1);
    let probes = take_messages(&mut cluster, |m| is_append_to(m, follower));
    assert!(!probes.is_empty(), "the leader probes the follower");

    // The probes are lost; the old acknowledgement arrives.
    for answer in delayed {
        deliver(&mut cluster, answer);
    }
    cluster.auto_deliver = true;
    cluster.settle();
    cluster.tick_all(20);
    assert_eq!(cluster.raft(follower).last_log_id(), last);
    assert_same_state(&cluster, &[1, 2, 3], &texts);
}

/// Ticks every node `ticks` times, delivering at most `deliveries_max`
/// messages after each tick (a livelocked exchange cannot hang the test).
fn run_bounded(cluster: &mut Cluster, ticks: u64, deliveries_max: usize) {
    cluster.auto_deliver = false;
    for _ in 0..ticks {
        for id in [1, 2, 3] {
            cluster.tick(id);
        }
        for _ in 0..deliveries_max {
            if !cluster.deliver_one() {
                break;
            }
            cluster.settle();
        }
    }
    cluster.auto_deliver = true;
}

/// A leader that ignores log generations (the injected bug) takes the
/// damaged follower's answers for stale, or (probing) retries the same
/// refused append forever: the follower is never repaired while that
/// leader lasts. This is what the generation is for.
/// The follower damaged back to 3 under a steady leader, then 50 ticks of
/// bounded traffic: whether the follower was repaired, and how often the
/// leader saw it go back.
fn damaged_under_steady_leader(config: Config) -> (bool, u64) {
    let mut cluster = Cluster::new(&[1, 2, 3], config);
    let leader = cluster.elect();
    commit_entries(&mut cluster, leader, 10);
    let follower = if leader == 1 { 2 } else { 1 };
    let term = cluster.raft(leader).term();
    let last = cluster.raft(follower).last_log_id();
    cluster.crash_damaged(follower, LogIndex(4));
    cluster.auto_deliver = false;
    cluster.restart(follower);
    cluster
        .raft_mut(leader)
        .handle_propose(payload("after"))
        .expect("leader accepts");
    run_bounded(&mut cluster, 50, 1_000);
    assert_eq!(cluster.raft(leader).term(), term, "the same leader");
    assert_eq!(cluster.raft(leader).role(), Role::Leader);
    let raft = cluster.raft(follower);
    let repaired = raft.repair_floor().is_none() && raft.last_log_id() > last;
    (repaired, cluster.raft(leader).metrics().followers_went_back)
}

/// A leader that ignores log generations (the injected bug) takes the
/// damaged follower's answers for stale, or (probing) retries the same
/// refused append forever: the follower is never repaired while that
/// leader lasts. This is what the generation is for; the same run without
/// the bug repairs it.
#[test]
fn leader_ignoring_log_generations_never_repairs_the_follower() {
    assert_eq!(damaged_under_steady_leader(Config::default()), (true, 1));
    let config = Config {
        testing_bug: Some(InjectedBug::IgnoreLogGeneration),
        ..Config::default()
    };
    assert_eq!(damaged_under_steady_leader(config), (false, 0));
}
