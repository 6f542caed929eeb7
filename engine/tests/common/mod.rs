//! A tiny deterministic harness for scenario tests: cores connected by an
//! in-memory network the test controls (partitions, one-way cuts, manual
//! delivery), each with a disk model that writes either at once or only
//! when the test says so.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use barge::core::{
    Action, Batch, Config, EntryKind, HardState, LogGeneration, LogId, LogIndex, Membership,
    Message, NodeId, Persisted, Raft, ReadId, Role, Snapshot,
};
use bytes::Bytes;

/// A node's disk: what survives a crash.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub batches: Vec<Batch>,
    pub snapshot: Option<Snapshot>,
    /// The repair floor written before a damaged suffix was cut.
    pub lost: Option<LogId>,
    /// How many times damage cut the log back (incremented before the cut).
    pub log_generation: LogGeneration,
}

impl Disk {
    fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map(|b| b.last())
            .or(self.snapshot.as_ref().map(|s| s.meta.last.index))
            .unwrap_or_default()
    }

    fn truncate_after(&mut self, after: LogIndex) {
        while let Some(back) = self.batches.last() {
            if back.first() > after {
                self.batches.pop();
            } else {
                if back.last() > after {
                    let shortened = back.truncated(after);
                    *self.batches.last_mut().expect("just seen") = shortened;
                }
                break;
            }
        }
    }
}

/// A write the core asked for that is not yet durable.
#[derive(Debug, Clone)]
pub enum Write {
    HardState(HardState),
    Truncate(LogIndex),
    Append(Vec<Batch>),
    Install(Snapshot),
}

#[derive(Debug)]
pub struct TestNode {
    pub raft: Option<Raft>,
    pub disk: Disk,
    /// Writes carried out only by `flush` when `manual_disk` is set.
    pub queued: VecDeque<Write>,
    pub manual_disk: bool,
    /// Payloads of applied normal entries with their ids.
    pub applied: Vec<(LogId, Bytes)>,
    pub applied_index: LogIndex,
    pub resolved_reads: Vec<(ReadId, LogIndex)>,
    pub rejected_reads: Vec<ReadId>,
    pub snapshot_requests: u64,
    /// Answer snapshot requests at once.
    pub auto_snapshot: bool,
}

impl TestNode {
    pub fn raft(&self) -> &Raft {
        self.raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self) -> &mut Raft {
        self.raft.as_mut().expect("node is up")
    }
}

/// The state machine's snapshot encoding: applied payloads, length-prefixed.
fn encode_state(applied: &[(LogId, Bytes)]) -> Bytes {
    let mut out = Vec::new();
    for (id, payload) in applied {
        out.extend_from_slice(&id.term.0.to_le_bytes());
        out.extend_from_slice(&id.index.0.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    Bytes::from(out)
}

fn decode_state(mut data: &[u8]) -> Vec<(LogId, Bytes)> {
    let mut out = Vec::new();
    while data.len() >= 20 {
        let term = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
        let index = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")) as usize;
        let payload = Bytes::copy_from_slice(&data[20..20 + len]);
        out.push((
            LogId::new(barge::core::Term(term), LogIndex(index)),
            payload,
        ));
        data = &data[20 + len..];
    }
    out
}

pub struct Cluster {
    pub config: Config,
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub network: VecDeque<Message>,
    /// Links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// When false, messages queue in `network` until `deliver_all`.
    pub auto_deliver: bool,
    pub initial: Membership,
    pub delivered: u64,
}

pub fn ids(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().map(|i| NodeId(*i)).collect()
}

pub fn payload(text: &str) -> Vec<Bytes> {
    vec![Bytes::copy_from_slice(text.as_bytes())]
}

impl Cluster {
    pub fn new(voters: &[u64], config: Config) -> Cluster {
        let initial = Membership::new(ids(voters));
        let mut cluster = Cluster {
            config,
            nodes: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            auto_deliver: true,
            initial,
            delivered: 0,
        };
        for id in voters {
            cluster.add_node(*id);
        }
        cluster
    }

    /// Starts a fresh node (empty disk) that knows the initial voters.
    pub fn add_node(&mut self, id: u64) {
        let node = TestNode {
            raft: None,
            disk: Disk::default(),
            queued: VecDeque::new(),
            manual_disk: false,
            applied: Vec::new(),
            applied_index: LogIndex(0),
            resolved_reads: Vec::new(),
            rejected_reads: Vec::new(),
            snapshot_requests: 0,
            auto_snapshot: false,
        };
        self.nodes.insert(NodeId(id), node);
        self.restart(id);
    }

    /// Builds a new core from the node's disk (a crash loses the queue).
    pub fn restart(&mut self, id: u64) {
        let initial = self.initial.clone();
        let config = self.config.clone();
        let node = self.nodes.get_mut(&NodeId(id)).expect("known node");
        node.queued.clear();
        let persisted = Persisted {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            batches: node.disk.batches.clone(),
            initial_membership: initial,
            lost: node.disk.lost,
            log_generation: node.disk.log_generation,
        };
        node.applied = node
            .disk
            .snapshot
            .as_ref()
            .map(|s| decode_state(&s.data))
            .unwrap_or_default();
        node.applied_index = node
            .disk
            .snapshot
            .as_ref()
            .map(|s| s.meta.last.index)
            .unwrap_or_default();
        node.raft = Some(Raft::new(NodeId(id), config, persisted, id * 7919).expect("recovers"));
        self.settle();
    }

    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&NodeId(id)).expect("known node");
        if node
            .raft
            .as_ref()
            .is_some_and(|raft| raft.repair_floor().is_none())
        {
            // The core holds durably what the floor stood for: a driver
            // drops its persisted floor.
            node.disk.lost = None;
        }
        node.raft = None;
        node.queued.clear();
        self.network
            .retain(|m| m.to != NodeId(id) && m.from != NodeId(id));
    }

    /// Crashes `id` and damages its durable log from `from` on, as a
    /// driver repairs it: the log generation is incremented and the repair
    /// floor (the last entry id the log held) written first, then the log
    /// is cut back to the intact prefix.
    /// The node stays down until [`Cluster::restart`].
    pub fn crash_damaged(&mut self, id: u64, from: LogIndex) {
        self.crash(id);
        let disk = &mut self.node_mut(id).disk;
        let last = disk
            .batches
            .last()
            .map(Batch::last_id)
            .expect("a log to damage");
        disk.log_generation = disk.log_generation.next();
        disk.lost = Some(disk.lost.map_or(last, |lost| lost.max(last)));
        disk.truncate_after(from.prev());
    }

    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[&NodeId(id)]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes.get_mut(&NodeId(id)).expect("known node")
    }

    pub fn raft(&self, id: u64) -> &Raft {
        self.node(id).raft()
    }

    pub fn raft_mut(&mut self, id: u64) -> &mut Raft {
        self.node_mut(id).raft_mut()
    }

    /// Cuts both directions between `a` and every node of `others`.
    pub fn isolate(&mut self, a: u64) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in all {
            if other != NodeId(a) {
                self.cut.insert((NodeId(a), other));
                self.cut.insert((other, NodeId(a)));
            }
        }
    }

    pub fn partition(&mut self, side: &[u64]) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for a in &all {
            for b in &all {
                if side.contains(&a.0) != side.contains(&b.0) {
                    self.cut.insert((*a, *b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Carries out one node's actions; returns whether any happened.
    fn drain(&mut self, id: NodeId) -> bool {
        let mut any = false;
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let Some(raft) = node.raft.as_mut() else {
                return any;
            };
            let Some(action) = raft.poll_action() else {
                break;
            };
            any = true;
            match action {
                Action::Send { message, .. } => self.network.push_back(message),
                Action::PersistHardState(hard_state) => {
                    node.queued.push_back(Write::HardState(hard_state))
                }
                Action::TruncateSuffix { after } => node.queued.push_back(Write::Truncate(after)),
                Action::AppendBatches(batches) => node.queued.push_back(Write::Append(batches)),
                Action::InstallSnapshot { snapshot, .. } => {
                    node.applied = decode_state(&snapshot.data);
                    node.applied_index = snapshot.meta.last.index;
                    node.queued.push_back(Write::Install(snapshot));
                }
                Action::CompactLog { .. } => {}
                ref apply @ Action::Apply { last, .. } => {
                    assert_eq!(
                        apply.entries().next().map(|e| e.id.index),
                        Some(node.applied_index.next()),
                        "apply in order"
                    );
                    for entry in apply.entries() {
                        if entry.kind == EntryKind::Normal {
                            node.applied.push((entry.id, entry.payload));
                        }
                    }
                    node.applied_index = last;
                    raft.handle_applied(last)
                        .expect("applied what was handed out");
                }
                Action::ResolveReads { reads, index } => {
                    assert!(node.applied_index >= index, "read resolved before applied");
                    node.resolved_reads
                        .extend(reads.into_iter().map(|r| (r, index)));
                }
                Action::RejectReads { reads, .. } => node.rejected_reads.extend(reads),
                Action::RequestSnapshot => {
                    node.snapshot_requests += 1;
                    if node.auto_snapshot {
                        let index = node.applied_index;
                        let term = raft_term_at(raft, index);
                        let data = encode_state(&node.applied);
                        raft.handle_snapshot_created(LogId::new(term, index), data.clone())
                            .expect("snapshot at the applied index");
                        // The driver persists its own snapshots (here at once).
                        let meta = raft.snapshot_meta().expect("just created").clone();
                        node.disk.snapshot = Some(Snapshot { meta, data });
                    }
                }
            }
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        if !node.manual_disk && !node.queued.is_empty() {
            self.flush(id.0, usize::MAX);
        }
        any
    }

    /// Makes up to `count` queued writes of node `id` durable, in order.
    pub fn flush(&mut self, id: u64, count: usize) {
        let node = self.nodes.get_mut(&NodeId(id)).expect("known node");
        for _ in 0..count {
            let Some(write) = node.queued.pop_front() else {
                break;
            };
            let raft = node.raft.as_mut().expect("up");
            match write {
                Write::HardState(hard_state) => {
                    node.disk.hard_state = hard_state;
                    raft.handle_hard_state_durable(hard_state);
                }
                Write::Truncate(after) => node.disk.truncate_after(after),
                Write::Append(batches) => {
                    let last = batches.last().map(Batch::last_id);
                    node.disk.batches.extend(batches);
                    if let Some(last) = last {
                        raft.handle_log_durable(last);
                    }
                }
                Write::Install(snapshot) => {
                    let last = snapshot.meta.last;
                    node.disk
                        .batches
                        .retain(|b| b.last() > last.index && b.first() > last.index);
                    if !node.disk.batches.is_empty()
                        && node.disk.batches[0].first() != last.index.next()
                    {
                        node.disk.batches.clear();
                    }
                    node.disk.snapshot = Some(snapshot);
                    raft.handle_snapshot_installed(last).expect("installing");
                }
            }
        }
        let _ = node.disk.last_index();
    }

    /// Delivers one message if any; returns false when the network is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(message) = self.network.pop_front() else {
            return false;
        };
        if self.cut.contains(&(message.from, message.to)) {
            return true;
        }
        let to = message.to;
        if let Some(node) = self.nodes.get_mut(&to) {
            if let Some(raft) = node.raft.as_mut() {
                self.delivered += 1;
                raft.handle_message(message).expect("well-formed message");
            }
        }
        true
    }

    /// Runs every node's actions and delivers messages until quiet (bounded).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut any = false;
            for id in ids {
                any |= self.drain(id);
            }
            if self.auto_deliver && self.deliver_one() {
                any = true;
            }
            if !any {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// Runs until quiet, delivering only messages `keep` accepts and
    /// dropping the rest (bounded).
    pub fn settle_filtered(&mut self, mut keep: impl FnMut(&mut Message) -> bool) {
        let auto = self.auto_deliver;
        self.auto_deliver = false;
        for _ in 0..100_000 {
            self.settle();
            let Some(mut message) = self.network.pop_front() else {
                self.auto_deliver = auto;
                return;
            };
            if keep(&mut message) {
                self.network.push_front(message);
                self.deliver_one();
            }
        }
        panic!("cluster did not settle");
    }

    /// Lets `ids` forget a leader they heard recently (leader stickiness):
    /// ticks them an election timeout while dropping what they send.
    pub fn age(&mut self, ids: &[u64]) {
        for _ in 0..self.config.election_timeout_ticks_min {
            for id in ids {
                if let Some(raft) = self.node_mut(*id).raft.as_mut() {
                    raft.handle_tick();
                }
            }
            let ids: Vec<NodeId> = ids.iter().map(|i| NodeId(*i)).collect();
            self.settle_filtered(|m| !ids.contains(&m.from));
        }
    }

    pub fn tick(&mut self, id: u64) {
        if let Some(raft) = self.node_mut(id).raft.as_mut() {
            raft.handle_tick();
        }
        self.settle();
    }

    pub fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let ids: Vec<u64> = self.nodes.keys().map(|id| id.0).collect();
            for id in ids {
                if let Some(raft) = self.node_mut(id).raft.as_mut() {
                    raft.handle_tick();
                }
            }
            self.settle();
        }
    }

    /// The leader, if exactly one up node claims leadership in the highest
    /// term among them.
    pub fn leader(&self) -> Option<u64> {
        let leaders: Vec<&TestNode> = self
            .nodes
            .values()
            .filter(|n| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .collect();
        let top = leaders.iter().map(|n| n.raft().term()).max()?;
        let top: Vec<u64> = leaders
            .iter()
            .filter(|n| n.raft().term() == top)
            .map(|n| n.raft().id().0)
            .collect();
        assert_eq!(top.len(), 1, "two leaders in one term");
        Some(top[0])
    }

    /// Ticks until some node leads (bounded).
    pub fn elect(&mut self) -> u64 {
        for _ in 0..500 {
            if let Some(leader) = self.leader() {
                if self.nodes.values().filter(|n| n.raft.is_some()).all(|n| {
                    n.raft().role() != Role::Candidate && n.raft().role() != Role::PreCandidate
                }) {
                    return leader;
                }
            }
            self.tick_all(1);
        }
        panic!("no leader elected within 500 ticks");
    }

    /// Makes `id` campaign now by ticking only it until it leads.
    pub fn campaign(&mut self, id: u64) {
        for _ in 0..200 {
            if self.raft(id).role() == Role::Leader {
                return;
            }
            self.tick(id);
        }
        panic!("n{id} did not become leader");
    }

    /// Ticks node `id` alone `ticks` times.
    pub fn campaign_ticks(&mut self, id: u64, ticks: u64) {
        for _ in 0..ticks {
            self.tick(id);
            if self.raft(id).role() != Role::Follower {
                return;
            }
        }
    }

    pub fn propose(&mut self, id: u64, text: &str) -> barge::core::ProposalTicket {
        let ticket = self
            .raft_mut(id)
            .handle_propose(payload(text))
            .expect("leader accepts");
        self.settle();
        ticket
    }

    /// Payloads applied on node `id`, as strings.
    pub fn applied_texts(&self, id: u64) -> Vec<String> {
        self.node(id)
            .applied
            .iter()
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Checks that the core's log matches what its actions wrote (the disk
    /// model plus queued writes), so each scenario also checks the
    /// persistence contract.
    pub fn check_written(&self, id: u64) {
        let node = self.node(id);
        let mut disk = node.disk.clone();
        for write in &node.queued {
            match write {
                Write::Truncate(after) => disk.truncate_after(*after),
                Write::Append(batches) => disk.batches.extend(batches.iter().cloned()),
                Write::Install(snapshot) => {
                    disk.batches.clear();
                    disk.snapshot = Some(snapshot.clone());
                }
                Write::HardState(_) => {}
            }
        }
        assert_eq!(
            disk.last_index(),
            node.raft().last_log_id().index,
            "n{id} wrote what the core holds"
        );
    }
}

fn raft_term_at(raft: &Raft, index: LogIndex) -> barge::core::Term {
    // The snapshot point is applied, hence in the log or at the snapshot.
    if raft.last_log_id().index == index {
        return raft.last_log_id().term;
    }
    raft_term_lookup(raft, index)
}

fn raft_term_lookup(raft: &Raft, index: LogIndex) -> barge::core::Term {
    raft.term_at(index).expect("applied index is in the log")
}
