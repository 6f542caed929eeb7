//! The cluster driver: owns the nodes, the network, the agenda and the
//! checkers, carries out every action a core emits the way a real node
//! would (the log-writing class through the disk model in order, messages
//! through the network, applies into the state machine at once), and feeds
//! what it sees to the checkers after every input.

use barge::core::{Action, Membership, Message, NodeId, ReadId, Role};
use bytes::Bytes;

use super::checkers::{liveness, Checkers, LogView, Violation};
use super::disk::DiskOp;
use super::events::{Agenda, Event};
use super::log::entry_hash;
use super::nemesis::{Fault, Nemesis};
use super::network::{Fate, Network, NetworkConfig};
use super::node::{PendingProposal, SimNode};
use super::rng::Rng;
use super::scenario::{Scenario, TICK_UNITS};
use super::state_machine::StateMachine;
use super::workload::{ClientOp, Workload};

/// Bound on the liveness phase, in nominal ticks: generous against the
/// worst case of several split votes, far below "never".
pub const LIVENESS_TICKS_MAX: u64 = 2_000;

/// What one or more runs did (the failure, if any, and counters that show
/// the faults and features were really exercised).
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub failure: Option<String>,
    pub seeds: u64,
    pub steps: u64,
    pub elections: u64,
    pub acknowledged: u64,
    pub reads: u64,
    pub crashes: u64,
    /// Crashes after which the node's log suffix was damaged (and cut).
    pub damaged: u64,
    pub partitions: u64,
    pub snapshots_created: u64,
    pub snapshots_installed: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    pub messages: u64,
    pub messages_lost: u64,
    pub liveness_ticks_max: u64,
}

impl Outcome {
    pub fn failed(failure: String) -> Self {
        Self {
            failure: Some(failure),
            ..Self::default()
        }
    }

    pub fn add(&mut self, other: &Outcome) {
        self.seeds += 1;
        self.steps += other.steps;
        self.elections += other.elections;
        self.acknowledged += other.acknowledged;
        self.reads += other.reads;
        self.crashes += other.crashes;
        self.damaged += other.damaged;
        self.partitions += other.partitions;
        self.snapshots_created += other.snapshots_created;
        self.snapshots_installed += other.snapshots_installed;
        self.membership_changes += other.membership_changes;
        self.transfers += other.transfers;
        self.messages += other.messages;
        self.messages_lost += other.messages_lost;
        self.liveness_ticks_max = self.liveness_ticks_max.max(other.liveness_ticks_max);
    }

    pub fn summary(&self) -> String {
        format!(
            "{} steps, {} leaders elected, {} proposals acknowledged, {} reads served, {} crashes \
             ({} with a damaged log), {} partitions, {} snapshots created / {} installed, {} membership changes, \
             {} transfers, {} messages ({} lost), liveness settled within {} ticks at worst",
            self.steps,
            self.elections,
            self.acknowledged,
            self.reads,
            self.crashes,
            self.damaged,
            self.partitions,
            self.snapshots_created,
            self.snapshots_installed,
            self.membership_changes,
            self.transfers,
            self.messages,
            self.messages_lost,
            self.liveness_ticks_max
        )
    }
}

type Step = Result<(), String>;

fn violated(violation: Violation) -> String {
    violation.to_string()
}

#[derive(Debug)]
pub struct Cluster {
    seed: u64,
    scenario: Scenario,
    initial: Membership,
    pub nodes: Vec<SimNode>,
    network: Network,
    agenda: Agenda,
    pub checkers: Checkers,
    disk_rng: Rng,
    rng: Rng,
    workload: Workload,
    nemesis: Nemesis,
    faults_active: bool,
    /// Client command ids below this were issued before faults stopped;
    /// liveness requires those to be resolved.
    proposal_cutoff: u64,
    trace: Option<(u64, u64)>,
    outcome: Outcome,
}

impl Cluster {
    pub fn new(seed: u64, scenario: Scenario, trace: Option<(u64, u64)>) -> Self {
        let mut rng = Rng::new(seed);
        let network = Network::new(scenario.slots, scenario.network.clone(), rng.fork());
        let nodes = (0..scenario.slots)
            .map(|slot| {
                let skew = scenario.tick_skew_percent_max;
                let period = TICK_UNITS * (100 - skew + rng.range(0, 2 * skew)) / 100;
                SimNode::new(
                    NodeId(slot as u64 + 1),
                    scenario.disk_latency_units_max,
                    period.max(1),
                )
            })
            .collect();
        let initial = Membership::new((1..=scenario.initial_voters as u64).map(NodeId));
        Self {
            seed,
            initial,
            nodes,
            network,
            agenda: Agenda::default(),
            checkers: Checkers::default(),
            disk_rng: rng.fork(),
            workload: Workload::new(rng.fork()),
            nemesis: Nemesis::new(rng.fork(), &scenario),
            rng,
            scenario,
            faults_active: true,
            proposal_cutoff: u64::MAX,
            trace,
            outcome: Outcome::default(),
        }
    }

    /// Runs `steps` events with faults, then the liveness phase.
    pub fn run(mut self, steps: u64) -> Outcome {
        let result = self.run_phases(steps);
        self.outcome.failure = result.err().map(|failure| {
            format!(
                "{failure} (at simulated time {}, step {}); nodes:{}",
                self.agenda.now,
                self.outcome.steps,
                self.states()
            )
        });
        self.outcome.elections = self.checkers.election_safety.elections_won;
        self.outcome.acknowledged = self.checkers.no_lost_acknowledged_proposal.acknowledged;
        self.outcome.reads = self.checkers.linearizable_reads.reads_served;
        self.outcome.messages = self.network.sent;
        self.outcome.messages_lost = self.network.lost;
        for node in &self.nodes {
            self.outcome.snapshots_created += node.snapshots_created;
            self.outcome.snapshots_installed += node.snapshots_installed;
        }
        self.outcome
    }

    fn run_phases(&mut self, steps: u64) -> Step {
        for slot in 0..self.nodes.len() {
            self.start(slot)?;
        }
        self.agenda.after(1, Event::Client);
        let first_fault = self.nemesis.first_delay();
        self.agenda.after(first_fault, Event::Nemesis);
        while self.outcome.steps < steps {
            let Some(event) = self.agenda.pop() else {
                return Err("the agenda ran dry: no node is ticking".into());
            };
            self.outcome.steps += 1;
            self.handle(event)?;
        }
        self.settle()
    }

    /// Faults stop: heal the network, restart every node, keep clients
    /// going, and wait (bounded) for the cluster to make progress.
    fn settle(&mut self) -> Step {
        self.faults_active = false;
        self.proposal_cutoff = self.workload.next_command();
        self.network.heal();
        self.network.config = NetworkConfig::calm();
        for slot in 0..self.nodes.len() {
            if !self.nodes[slot].is_up() {
                self.start(slot)?;
            }
        }
        let started = self.agenda.now;
        let acked_before = self.checkers.no_lost_acknowledged_proposal.highest_acked();
        let deadline = started + LIVENESS_TICKS_MAX * TICK_UNITS;
        let mut last_reason = String::new();
        while self.agenda.now <= deadline {
            let summaries = self.summaries();
            match liveness::settled(&summaries, acked_before, &self.checkers) {
                Ok(()) => {
                    self.outcome.liveness_ticks_max = (self.agenda.now - started) / TICK_UNITS;
                    return Ok(());
                }
                Err(reason) => last_reason = reason,
            }
            // Liveness is checked every tick, not every event: cheap enough.
            let until = self.agenda.now + TICK_UNITS;
            while self.agenda.now < until {
                let Some(event) = self.agenda.pop() else {
                    return Err("the agenda ran dry during the liveness phase".into());
                };
                self.handle(event)?;
            }
        }
        Err(format!(
            "liveness violated: no progress within {LIVENESS_TICKS_MAX} ticks after faults stopped: \
             {last_reason}"
        ))
    }

    /// Every node's role, term, log pointers and configuration: printed
    /// with any failure, the first thing one needs to read a replay.
    fn states(&self) -> String {
        let mut states = String::new();
        for node in &self.nodes {
            if let Some(raft) = &node.raft {
                let metrics = raft.metrics();
                states.push_str(&format!(
                    "\n    {}: {:?} {} leader {:?} commit {} applied {} last {} durable {} \
                     members {:?} committed members {:?} uncommitted {} B, refused {} proposals, repair floor {:?}",
                    node.id,
                    raft.role(),
                    raft.term(),
                    raft.leader(),
                    raft.commit_index(),
                    node.applied(),
                    raft.last_log_id(),
                    raft.durable_log_id(),
                    raft.membership(),
                    raft.committed_membership(),
                    metrics.uncommitted_bytes,
                    metrics.proposals_overloaded,
                    raft.repair_floor(),
                ));
            }
        }
        states
    }

    fn summaries(&self) -> Vec<liveness::NodeSummary> {
        self.nodes
            .iter()
            .map(|node| {
                let raft = node.raft.as_ref();
                liveness::NodeSummary {
                    id: node.id,
                    up: raft.is_some(),
                    role: raft.map(|raft| raft.role()),
                    term: raft.map(|raft| raft.term()),
                    leader: raft.and_then(|raft| raft.leader()),
                    applied: node.applied(),
                    proposals_pending: node
                        .proposals
                        .iter()
                        .filter(|proposal| {
                            proposal
                                .entries
                                .first()
                                .is_some_and(|(command, _)| *command < self.proposal_cutoff)
                        })
                        .count(),
                    membership: raft.map(|raft| raft.membership().clone()),
                }
            })
            .collect()
    }

    fn handle(&mut self, event: Event) -> Step {
        if self.tracing() {
            eprintln!("[{:>8}] {}", self.agenda.now, event.describe());
        }
        match event {
            Event::Deliver { from, to, message } => {
                if !self.network.deliver(from, to) || !self.nodes[to].is_up() {
                    return Ok(());
                }
                let raft = self.nodes[to].raft.as_mut().expect("checked up just above");
                if let Err(error) = raft.handle_message(message) {
                    return Err(format!(
                        "n{} refused a message from correct peer n{}: {error}",
                        to + 1,
                        from + 1
                    ));
                }
                self.drain(to)
            }
            Event::Tick { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || !self.nodes[node].is_up() {
                    return Ok(());
                }
                self.nodes[node]
                    .raft
                    .as_mut()
                    .expect("checked up just above")
                    .handle_tick();
                let period = self.nodes[node].tick_period_units;
                self.agenda.after(period, Event::Tick { node, incarnation });
                self.drain(node)
            }
            Event::Disk { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || !self.nodes[node].is_up() {
                    return Ok(());
                }
                self.complete_disk(node)
            }
            Event::Client => {
                let delay = self.workload.delay();
                self.agenda.after(delay, Event::Client);
                self.client()
            }
            Event::Nemesis => {
                if !self.faults_active {
                    return Ok(());
                }
                let (fault, delay) = self.nemesis.next(&self.summaries(), &self.network);
                self.agenda.after(delay, Event::Nemesis);
                self.inject(fault)
            }
            Event::Restart { node } => {
                if self.nodes[node].is_up() {
                    return Ok(());
                }
                self.start(node)
            }
        }
    }

    fn tracing(&self) -> bool {
        self.trace
            .is_some_and(|(from, until)| (from..=until).contains(&self.agenda.now))
    }

    fn start(&mut self, slot: usize) -> Step {
        let config = self.scenario.config.clone();
        let seed = self.seed;
        self.nodes[slot].start(&config, &self.initial, seed)?;
        let node = &self.nodes[slot];
        let phase = self.rng.range(1, node.tick_period_units);
        let incarnation = node.incarnation;
        self.agenda.after(
            phase,
            Event::Tick {
                node: slot,
                incarnation,
            },
        );
        self.drain(slot)
    }

    fn crash(&mut self, slot: usize) -> Step {
        if !self.nodes[slot].is_up() {
            return Ok(());
        }
        self.outcome.crashes += 1;
        for read in self.nodes[slot].reads.values() {
            self.checkers.linearizable_reads.on_read_abandoned(*read);
        }
        self.nodes[slot].crash(&mut self.disk_rng)
    }

    /// Drains every action of a node, then checks the properties.
    fn drain(&mut self, slot: usize) -> Step {
        loop {
            let Some(raft) = self.nodes[slot].raft.as_mut() else {
                return Ok(());
            };
            let Some(action) = raft.poll_action() else {
                break;
            };
            self.carry_out(slot, action)?;
        }
        self.observe(slot)
    }

    fn observe(&mut self, slot: usize) -> Step {
        let node = &mut self.nodes[slot];
        if node.disk.repair_floor.is_some()
            && node
                .raft
                .as_ref()
                .is_some_and(|raft| raft.repair_floor().is_none())
        {
            // The core holds again what the floor stood for, durably: the
            // driver drops its persisted floor.
            node.disk.repair_floor = None;
        }
        let node = &self.nodes[slot];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        // The driver's model of the log must be the core's log: this pairs
        // the core's view with what it told the driver to write.
        if raft.last_log_id() != node.written.last_id() {
            return Err(format!(
                "persistence contract: n{} core's last log id {} but its actions wrote up to {}",
                slot + 1,
                raft.last_log_id(),
                node.written.last_id()
            ));
        }
        if raft.durable_log_id().index > node.written.last_index() {
            return Err(format!(
                "persistence contract: n{} durable {} beyond written {}",
                slot + 1,
                raft.durable_log_id(),
                node.written.last_id()
            ));
        }
        self.checkers
            .on_state(
                node.id,
                node.incarnation,
                raft.role() == Role::Leader,
                raft.term(),
                raft.commit_index(),
                node.applied(),
                &node.written,
            )
            .map_err(violated)
    }

    fn submit(&mut self, slot: usize, op: DiskOp) {
        let now = self.agenda.now;
        let node = &mut self.nodes[slot];
        let due = node.disk.submit(op, now, &mut self.disk_rng);
        let incarnation = node.incarnation;
        self.agenda.at(
            due,
            Event::Disk {
                node: slot,
                incarnation,
            },
        );
    }

    fn carry_out(&mut self, slot: usize, action: Action) -> Step {
        let id = self.nodes[slot].id;
        match action {
            Action::PersistHardState(hard_state) => {
                self.submit(slot, DiskOp::HardState(hard_state))
            }
            Action::TruncateSuffix { after } => {
                self.nodes[slot]
                    .written
                    .truncate_from(after.next())
                    .map_err(|error| format!("persistence contract: {id}: {}", error.0))?;
                self.submit(slot, DiskOp::Truncate { after });
            }
            Action::AppendBatches(batches) => {
                for batch in &batches {
                    let written = self.nodes[slot]
                        .written
                        .append(batch)
                        .map_err(|error| format!("persistence contract: {id}: {}", error.0))?;
                    for (index, term, chain) in written {
                        self.checkers
                            .on_write(id, index, term, chain)
                            .map_err(violated)?;
                    }
                }
                self.submit(slot, DiskOp::Append(batches));
            }
            Action::CompactLog { up_to } => {
                let node = &mut self.nodes[slot];
                if let Some((snapshot, chain)) = &node.disk.snapshot {
                    if snapshot.meta.last.index == up_to {
                        node.written.install_snapshot(snapshot.meta.clone(), *chain);
                    }
                }
                self.submit(slot, DiskOp::Compact { up_to });
            }
            Action::Send { to, message } => self.send(slot, to, message)?,
            Action::Apply { .. } => self.apply(slot, &action)?,
            Action::ResolveReads { reads, index } => {
                let node = &mut self.nodes[slot];
                let served = node.applied();
                if served < index {
                    return Err(format!(
                        "{id} resolved reads at read index {index} with only {served} applied"
                    ));
                }
                for read in reads {
                    let Some(client_read) = node.reads.remove(&read) else {
                        return Err(format!("{id} resolved read {read:?} it was never given"));
                    };
                    self.checkers
                        .linearizable_reads
                        .on_read_served(id, client_read, served)
                        .map_err(violated)?;
                }
            }
            Action::RejectReads { reads, .. } => {
                for read in reads {
                    if let Some(client_read) = self.nodes[slot].reads.remove(&read) {
                        self.checkers
                            .linearizable_reads
                            .on_read_abandoned(client_read);
                    }
                }
            }
            Action::RequestSnapshot => self.create_snapshot(slot)?,
            Action::InstallSnapshot { snapshot, .. } => {
                let state = StateMachine::restore(&snapshot.data)
                    .map_err(|error| format!("{id} received a damaged snapshot: {error}"))?;
                if state.applied != snapshot.meta.last {
                    return Err(format!(
                        "{id} received snapshot labelled {} holding state at {}",
                        snapshot.meta.last, state.applied
                    ));
                }
                self.nodes[slot]
                    .written
                    .install_snapshot(snapshot.meta.clone(), state.chain);
                self.submit(slot, DiskOp::InstallSnapshot(snapshot, state.chain));
            }
        }
        Ok(())
    }

    fn create_snapshot(&mut self, slot: usize) -> Step {
        let filler = self.scenario.snapshot_filler_bytes;
        let node = &mut self.nodes[slot];
        let id = node.id;
        if node.applied().0 == 0 {
            return Ok(());
        }
        let last = node.machine.applied;
        let data = node.machine.snapshot(filler);
        let chain = node.machine.chain;
        let raft = node.raft.as_mut().expect("only an up node emits actions");
        raft.handle_snapshot_created(last, data.clone())
            .map_err(|error| format!("{id} refused its own snapshot at {last}: {error}"))?;
        let Some(meta) = raft.snapshot_meta().cloned() else {
            return Err(format!("{id} accepted a snapshot at {last} but holds none"));
        };
        if meta.last == last {
            node.disk
                .store_snapshot(barge::core::Snapshot { meta, data }, chain);
            node.snapshots_created += 1;
        }
        Ok(())
    }

    fn send(&mut self, from: usize, to: NodeId, message: Message) -> Step {
        let Some(to_slot) =
            to.0.checked_sub(1)
                .map(|slot| slot as usize)
                .filter(|slot| *slot < self.nodes.len())
        else {
            return Err(format!("n{} sent a message to unknown node {to}", from + 1));
        };
        match self.network.send(from, to_slot) {
            Fate::Lost => {}
            Fate::Arrives(delay) => {
                self.agenda.after(
                    delay,
                    Event::Deliver {
                        from,
                        to: to_slot,
                        message,
                    },
                );
            }
            Fate::ArrivesTwice(first, second) => {
                self.agenda.after(
                    first,
                    Event::Deliver {
                        from,
                        to: to_slot,
                        message: message.clone(),
                    },
                );
                self.agenda.after(
                    second,
                    Event::Deliver {
                        from,
                        to: to_slot,
                        message,
                    },
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, slot: usize, action: &Action) -> Step {
        let Action::Apply { first, last, .. } = action else {
            return Ok(());
        };
        let node = &mut self.nodes[slot];
        let id = node.id;
        if *first != node.applied().next() {
            return Err(format!(
                "{id} asked to apply from {first} with {} applied",
                node.applied()
            ));
        }
        for entry in action.entries() {
            let Some(applied) = node.machine.apply(entry.id, entry.kind, &entry.payload) else {
                return Err(format!("{id} asked to apply {} out of order", entry.id));
            };
            self.checkers
                .on_apply(id, applied.index, applied.chain, applied.entry)
                .map_err(violated)?;
            // A proposal is committed exactly when its last entry is applied
            // with its term; another term there means a new leader replaced it.
            let mut index = 0;
            while index < node.proposals.len() {
                let ticket = node.proposals[index].ticket;
                if ticket.last > entry.id.index {
                    index += 1;
                    continue;
                }
                let proposal = node.proposals.swap_remove(index);
                if ticket.last == entry.id.index && ticket.term == entry.id.term {
                    for (offset, (client_id, payload)) in proposal.entries.iter().enumerate() {
                        let at = ticket.first.plus(offset as u64);
                        self.checkers
                            .no_lost_acknowledged_proposal
                            .on_ack(id, *client_id, at, *payload)
                            .map_err(violated)?;
                    }
                }
            }
        }
        if node.applied() != *last {
            return Err(format!(
                "{id} was asked to apply through {last} but got entries through {}",
                node.applied()
            ));
        }
        let raft = node.raft.as_mut().expect("only an up node emits actions");
        raft.handle_applied(*last)
            .map_err(|error| format!("{id} refused applied {last}: {error}"))
    }

    fn complete_disk(&mut self, slot: usize) -> Step {
        let now = self.agenda.now;
        loop {
            let node = &mut self.nodes[slot];
            let id = node.id;
            let Some(result) = node.disk.complete_next(now) else {
                return Ok(());
            };
            let op =
                result.map_err(|error| format!("persistence contract: {id} disk: {}", error.0))?;
            let raft = node
                .raft
                .as_mut()
                .expect("disk events of a down node are stale");
            match op {
                DiskOp::HardState(hard_state) => raft.handle_hard_state_durable(hard_state),
                DiskOp::Append(batches) => {
                    if let Some(batch) = batches.last() {
                        raft.handle_log_durable(batch.last_id());
                    }
                }
                DiskOp::Truncate { .. } | DiskOp::Compact { .. } => {}
                DiskOp::InstallSnapshot(snapshot, _) => {
                    node.machine = StateMachine::restore(&snapshot.data)
                        .map_err(|error| format!("{id} cannot restore a snapshot: {error}"))?;
                    node.snapshots_installed += 1;
                    let last = snapshot.meta.last;
                    // Proposals inside the snapshot: fate unknown, never acked.
                    node.proposals
                        .retain(|proposal| proposal.ticket.last > last.index);
                    // A report for an install a newer one superseded is
                    // ignored by the core (finding F1, fixed in d0acbff):
                    // any error now is a contract violation.
                    let raft = node.raft.as_mut().expect("checked up above");
                    raft.handle_snapshot_installed(last).map_err(|error| {
                        format!("{id} refused installed snapshot {last}: {error}")
                    })?;
                }
            }
            self.drain(slot)?;
        }
    }

    fn client(&mut self) -> Step {
        let summaries = self.summaries();
        let Some(op) = self.workload.next(&summaries) else {
            return Ok(());
        };
        match op {
            ClientOp::Propose { slot, entries } => {
                let payloads: Vec<Bytes> =
                    entries.iter().map(|(_, payload)| payload.clone()).collect();
                let raft = self.nodes[slot]
                    .raft
                    .as_mut()
                    .expect("workload picks up nodes");
                match raft.handle_propose(payloads) {
                    Ok(ticket) => {
                        if ticket.last.0 + 1 - ticket.first.0 != entries.len() as u64 {
                            return Err(format!(
                                "n{} gave ticket {ticket:?} for {} entries",
                                slot + 1,
                                entries.len()
                            ));
                        }
                        let entries = entries
                            .iter()
                            .map(|(client_id, payload)| {
                                (
                                    *client_id,
                                    entry_hash(barge::core::EntryKind::Normal, payload),
                                )
                            })
                            .collect();
                        self.nodes[slot]
                            .proposals
                            .push(PendingProposal { ticket, entries });
                    }
                    Err(_) => self.workload.refused += 1,
                }
                self.drain(slot)
            }
            ClientOp::Read { slot, read } => {
                let acked = self.checkers.no_lost_acknowledged_proposal.highest_acked();
                self.checkers.linearizable_reads.on_read_start(read, acked);
                let raft = self.nodes[slot]
                    .raft
                    .as_mut()
                    .expect("workload picks up nodes");
                match raft.handle_read_index(ReadId(read)) {
                    Ok(()) => {
                        self.nodes[slot].reads.insert(ReadId(read), read);
                    }
                    Err(_) => self.checkers.linearizable_reads.on_read_abandoned(read),
                }
                self.drain(slot)
            }
        }
    }

    fn inject(&mut self, fault: Fault) -> Step {
        if self.tracing() {
            eprintln!("[{:>8}] fault {fault:?}", self.agenda.now);
        }
        match fault {
            Fault::None => {}
            Fault::Heal => self.network.heal(),
            Fault::Split { side } => {
                self.outcome.partitions += 1;
                self.network.split(&side);
            }
            Fault::SplitOneWay { side, outbound } => {
                self.outcome.partitions += 1;
                self.network.split_one_way(&side, outbound);
            }
            Fault::Link { from, to, up } => self.network.set_link(from, to, up),
            Fault::Network(config) => self.network.config = config,
            Fault::Crash {
                slot,
                restart_after,
                damage,
            } => {
                let was_up = self.nodes[slot].is_up();
                self.crash(slot)?;
                // One damaged log at a time: with the others intact a
                // quorum can always form (fixed-membership scenarios only),
                // so liveness still holds. Every copy damaged is a scenario
                // test of its own.
                let others_intact = (0..self.nodes.len())
                    .all(|other| other == slot || self.nodes[other].disk.repair_floor.is_none());
                if damage && was_up && others_intact {
                    let node = &mut self.nodes[slot];
                    let lost = node
                        .disk
                        .damage(&mut self.disk_rng)
                        .map_err(|error| format!("{:?} damage: {}", node.id, error.0))?;
                    if let Some((from, last)) = lost {
                        self.outcome.damaged += 1;
                        if self.tracing() {
                            eprintln!(
                                "[{:>8}] n{} lost {from}..={last} to damage",
                                self.agenda.now,
                                slot + 1
                            );
                        }
                    }
                }
                self.agenda
                    .after(restart_after, Event::Restart { node: slot });
            }
            Fault::CrashAll { restart_after } => {
                for slot in 0..self.nodes.len() {
                    self.crash(slot)?;
                    self.agenda
                        .after(restart_after, Event::Restart { node: slot });
                }
            }
            Fault::Skew { slot, period } => self.nodes[slot].tick_period_units = period,
            Fault::ChangeMembership { leader, change } => {
                if let Some(raft) = self.nodes[leader].raft.as_mut() {
                    if raft.handle_change_membership(change).is_ok() {
                        self.outcome.membership_changes += 1;
                    }
                    self.drain(leader)?;
                }
            }
            Fault::Transfer { leader, target } => {
                if let Some(raft) = self.nodes[leader].raft.as_mut() {
                    if raft.handle_transfer_leadership(target).is_ok() {
                        self.outcome.transfers += 1;
                    }
                    self.drain(leader)?;
                }
            }
        }
        Ok(())
    }
}
