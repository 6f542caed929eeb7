//! The nemesis: the fault schedule. Every so often it picks one fault from
//! the scenario's repertoire: partitions (symmetric minority/majority
//! splits, isolating the leader, one-way cuts, flapping links), crashes
//! (any node, the leader, or everyone at once; a single node's crash may
//! damage its durable log suffix) with a later restart, clock
//! skew changes, lossier or calmer network, membership changes and
//! leadership transfers (issued while other faults are in force).

use std::collections::BTreeSet;

use barge::core::{MembershipChange, NodeId, Role};

use super::checkers::liveness::NodeSummary;
use super::network::{Network, NetworkConfig};
use super::rng::Rng;
use super::scenario::{Scenario, TICK_UNITS};

#[derive(Debug, Clone)]
pub enum Fault {
    None,
    Heal,
    /// Cut `side` off from the rest, both ways.
    Split {
        side: Vec<usize>,
    },
    /// Cut `side`'s outbound (or inbound) links only.
    SplitOneWay {
        side: Vec<usize>,
        outbound: bool,
    },
    /// Flip one one-way link (flapping, when repeated).
    Link {
        from: usize,
        to: usize,
        up: bool,
    },
    Network(NetworkConfig),
    /// Crash `slot`; with `damage`, its durable log suffix is also found
    /// damaged at restart (cut back, with a repair floor).
    Crash {
        slot: usize,
        restart_after: u64,
        damage: bool,
    },
    /// Whole-cluster power loss: only durable state survives anywhere.
    CrashAll {
        restart_after: u64,
    },
    Skew {
        slot: usize,
        period: u64,
    },
    ChangeMembership {
        leader: usize,
        change: MembershipChange,
    },
    Transfer {
        leader: usize,
        target: NodeId,
    },
}

#[derive(Debug)]
pub struct Nemesis {
    rng: Rng,
    slots: usize,
    skew_percent_max: u64,
    membership_changes: bool,
    crashes: bool,
    interval_ticks: (u64, u64),
    crash_all_per_million: u32,
    membership_change_per_million: u32,
    damage_per_million: u32,
    /// Flapping in progress: the link and how many flips remain.
    flapping: Option<(usize, usize, u32)>,
}

impl Nemesis {
    pub fn new(rng: Rng, scenario: &Scenario) -> Self {
        Self {
            rng,
            slots: scenario.slots,
            skew_percent_max: scenario.tick_skew_percent_max,
            membership_changes: scenario.membership_changes,
            crashes: scenario.crashes,
            interval_ticks: scenario.fault_interval_ticks,
            crash_all_per_million: scenario.crash_all_per_million,
            membership_change_per_million: scenario.membership_change_per_million,
            damage_per_million: scenario.damage_per_million,
            flapping: None,
        }
    }

    pub fn first_delay(&mut self) -> u64 {
        self.rng.range(20, 60) * TICK_UNITS
    }

    /// The next fault and the simulated time until the nemesis acts again.
    pub fn next(&mut self, nodes: &[NodeSummary], network: &Network) -> (Fault, u64) {
        if let Some((from, to, flips)) = self.flapping {
            self.flapping = (flips > 1).then_some((from, to, flips - 1));
            let up = !network.connected(from, to);
            return (
                Fault::Link { from, to, up },
                self.rng.range(1, 8) * TICK_UNITS,
            );
        }
        let (low, high) = self.interval_ticks;
        let delay = self.rng.range(low, high) * TICK_UNITS;
        let leader = (0..nodes.len())
            .filter(|&slot| nodes[slot].up && nodes[slot].role == Some(Role::Leader))
            .max_by_key(|&slot| nodes[slot].term);
        let all: Vec<usize> = (0..self.slots).collect();
        if self.membership_changes && self.rng.chance(self.membership_change_per_million) {
            if let Some(leader) = leader {
                return (self.membership_change(leader, nodes), delay);
            }
        }
        let fault = match self.rng.range(0, 15) {
            0..=2 => Fault::Heal,
            3 => {
                let size = self.rng.range(1, (self.slots as u64 - 1) / 2 + 1) as usize;
                Fault::Split {
                    side: self.sample(&all, size),
                }
            }
            4 => match leader {
                Some(leader) => Fault::Split { side: vec![leader] },
                None => Fault::None,
            },
            5 => {
                let slot = leader.unwrap_or_else(|| self.rng.index(self.slots));
                let outbound = self.rng.chance(500_000);
                Fault::SplitOneWay {
                    side: vec![slot],
                    outbound,
                }
            }
            6 => {
                let from = self.rng.index(self.slots);
                let to = (from + 1 + self.rng.index(self.slots - 1)) % self.slots;
                self.flapping = Some((from, to, self.rng.range(2, 12) as u32));
                Fault::Link {
                    from,
                    to,
                    up: false,
                }
            }
            7 | 13 if self.crashes => {
                let restart_after = self.rng.range(1, 60) * TICK_UNITS;
                if self.rng.chance(self.crash_all_per_million) {
                    Fault::CrashAll { restart_after }
                } else {
                    let slot = match leader {
                        Some(leader) if self.rng.chance(500_000) => leader,
                        _ => self.rng.index(self.slots),
                    };
                    let damage =
                        self.damage_per_million > 0 && self.rng.chance(self.damage_per_million);
                    Fault::Crash {
                        slot,
                        restart_after,
                        damage,
                    }
                }
            }
            8 => {
                let slot = self.rng.index(self.slots);
                let skew = self.skew_percent_max;
                let period = TICK_UNITS * (100 - skew + self.rng.range(0, 2 * skew)) / 100;
                Fault::Skew {
                    slot,
                    period: period.max(1),
                }
            }
            9 => {
                if self.rng.chance(500_000) {
                    Fault::Network(NetworkConfig::calm())
                } else {
                    Fault::Network(NetworkConfig::faulty(&mut self.rng))
                }
            }
            10..=11 if self.membership_changes => match leader {
                Some(leader) => self.membership_change(leader, nodes),
                None => Fault::None,
            },
            12 => match leader {
                Some(leader) => {
                    let voters: Vec<NodeId> = nodes[leader]
                        .membership
                        .as_ref()
                        .map(|membership| membership.voters.iter().copied().collect())
                        .unwrap_or_default();
                    if voters.is_empty() {
                        Fault::None
                    } else {
                        Fault::Transfer {
                            leader,
                            target: *self.rng.pick(&voters),
                        }
                    }
                }
                None => Fault::None,
            },
            _ => Fault::None,
        };
        (fault, delay)
    }

    fn sample(&mut self, from: &[usize], size: usize) -> Vec<usize> {
        let mut pool = from.to_vec();
        let mut chosen = Vec::with_capacity(size);
        while chosen.len() < size && !pool.is_empty() {
            let index = self.rng.index(pool.len());
            chosen.push(pool.swap_remove(index));
        }
        chosen
    }

    /// A new configuration: mostly single-server steps (add or remove one
    /// voter, promote or demote a learner), sometimes an arbitrary target
    /// that needs joint consensus. Keeps at least one voter.
    fn membership_change(&mut self, leader: usize, nodes: &[NodeSummary]) -> Fault {
        let Some(current) = nodes[leader].membership.clone() else {
            return Fault::None;
        };
        if current.is_joint() {
            return Fault::None;
        }
        let all: Vec<NodeId> = (1..=self.slots as u64).map(NodeId).collect();
        let mut voters = current.voters.clone();
        let mut learners = current.learners.clone();
        let node = *self.rng.pick(&all);
        match self.rng.range(0, 4) {
            0 => {
                // Toggle one node's voting membership.
                if voters.contains(&node) {
                    if voters.len() > 1 {
                        voters.remove(&node);
                    }
                } else {
                    learners.remove(&node);
                    voters.insert(node);
                }
            }
            1 => {
                // Add or drop a learner.
                if learners.contains(&node) {
                    learners.remove(&node);
                } else if !voters.contains(&node) {
                    learners.insert(node);
                }
            }
            _ => {
                // An arbitrary target of 1-5 voters (joint consensus when
                // more than one voter changes), rest possibly learners.
                let size = self.rng.range(1, self.slots as u64) as usize;
                let indexes: Vec<usize> = (0..self.slots).collect();
                voters = self
                    .sample(&indexes, size)
                    .into_iter()
                    .map(|slot| NodeId(slot as u64 + 1))
                    .collect();
                learners = all
                    .iter()
                    .copied()
                    .filter(|id| !voters.contains(id) && self.rng.chance(500_000))
                    .collect::<BTreeSet<_>>();
            }
        }
        Fault::ChangeMembership {
            leader,
            change: MembershipChange { voters, learners },
        }
    }
}
