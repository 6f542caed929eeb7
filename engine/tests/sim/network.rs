//! The simulated network: it decides, for each message sent, whether it is
//! lost, when it arrives, and whether a copy arrives twice. Reordering comes
//! from independent delays. Partitions are a matrix of one-way links, so a
//! symmetric split, an asymmetric (one-way) cut, isolating a leader and
//! flapping are all just different edits of the matrix. A link is checked at
//! delivery time too, so a partition also cuts messages already in flight.

use super::rng::Rng;

/// Fault rates and delays, in parts per million and simulated time units.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub drop_per_million: u32,
    pub duplicate_per_million: u32,
    pub delay_units_min: u64,
    pub delay_units_max: u64,
    /// A small fraction of messages take much longer (stragglers): the
    /// reordering that breaks naive "latest response wins" logic.
    pub straggler_per_million: u32,
    pub straggler_delay_units_max: u64,
    /// Messages in flight on the whole network; beyond it a send is lost,
    /// as a full socket buffer would lose it. Keeps a run's memory bounded.
    pub in_flight_messages_max: usize,
}

impl NetworkConfig {
    /// A network with no faults and short delays, for liveness phases.
    pub fn calm() -> Self {
        Self {
            drop_per_million: 0,
            duplicate_per_million: 0,
            delay_units_min: 1,
            delay_units_max: 4,
            straggler_per_million: 0,
            straggler_delay_units_max: 4,
            in_flight_messages_max: 100_000,
        }
    }

    /// A lossy, reordering network whose rates are drawn from the seed.
    pub fn faulty(rng: &mut Rng) -> Self {
        Self {
            drop_per_million: rng.range(0, 150_000) as u32,
            duplicate_per_million: rng.range(0, 50_000) as u32,
            delay_units_min: 1,
            delay_units_max: rng.range(2, 30),
            straggler_per_million: rng.range(0, 30_000) as u32,
            straggler_delay_units_max: rng.range(30, 300),
            in_flight_messages_max: 20_000,
        }
    }
}

/// What the network does with one sent message: at most two arrival delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Lost,
    Arrives(u64),
    ArrivesTwice(u64, u64),
}

#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
    nodes: usize,
    /// `blocked[from * nodes + to]`: the one-way link from `from` to `to` is cut.
    blocked: Vec<bool>,
    in_flight: usize,
    rng: Rng,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Network {
    /// `nodes` slots, addressed by slot number 0..nodes (the cluster maps
    /// node ids to slots).
    pub fn new(nodes: usize, config: NetworkConfig, rng: Rng) -> Self {
        Self {
            config,
            nodes,
            blocked: vec![false; nodes * nodes],
            in_flight: 0,
            rng,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    pub fn connected(&self, from: usize, to: usize) -> bool {
        !self.blocked[from * self.nodes + to]
    }

    pub fn set_link(&mut self, from: usize, to: usize, up: bool) {
        if from != to {
            self.blocked[from * self.nodes + to] = !up;
        }
    }

    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|cut| *cut = false);
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn split(&mut self, side: &[usize]) {
        for a in 0..self.nodes {
            for b in 0..self.nodes {
                if side.contains(&a) != side.contains(&b) {
                    self.set_link(a, b, false);
                }
            }
        }
    }

    /// Cuts only the links from `side` to the rest: `side` still hears
    /// everyone, nobody hears `side` (or the reverse, with `outbound` false).
    pub fn split_one_way(&mut self, side: &[usize], outbound: bool) {
        for a in 0..self.nodes {
            for b in 0..self.nodes {
                if side.contains(&a) && !side.contains(&b) {
                    if outbound {
                        self.set_link(a, b, false);
                    } else {
                        self.set_link(b, a, false);
                    }
                }
            }
        }
    }

    /// Decides the fate of a message sent now from `from` to `to`.
    pub fn send(&mut self, from: usize, to: usize) -> Fate {
        self.sent += 1;
        if !self.connected(from, to)
            || self.in_flight >= self.config.in_flight_messages_max
            || self.rng.chance(self.config.drop_per_million)
        {
            self.lost += 1;
            return Fate::Lost;
        }
        let first = self.delay();
        if self.rng.chance(self.config.duplicate_per_million)
            && self.in_flight + 1 < self.config.in_flight_messages_max
        {
            self.duplicated += 1;
            self.in_flight += 2;
            return Fate::ArrivesTwice(first, self.delay());
        }
        self.in_flight += 1;
        Fate::Arrives(first)
    }

    /// Called when a scheduled delivery comes due; false means the link was
    /// cut while the message was in flight and it is lost.
    pub fn deliver(&mut self, from: usize, to: usize) -> bool {
        self.in_flight -= 1;
        let up = self.connected(from, to);
        if !up {
            self.lost += 1;
        }
        up
    }

    fn delay(&mut self) -> u64 {
        let config = &self.config;
        if self.rng.chance(config.straggler_per_million) {
            let (low, high) = (config.delay_units_max, config.straggler_delay_units_max);
            self.rng.range(low, high.max(low))
        } else {
            self.rng
                .range(config.delay_units_min, config.delay_units_max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_links_as_described() {
        let mut network = Network::new(5, NetworkConfig::calm(), Rng::new(1));
        network.split(&[0, 1]);
        assert!(network.connected(0, 1));
        assert!(!network.connected(0, 2) && !network.connected(3, 1));
        assert!(network.connected(2, 4));
        network.heal();
        network.split_one_way(&[4], true);
        assert!(!network.connected(4, 0));
        assert!(network.connected(0, 4));
        assert_eq!(network.send(4, 0), Fate::Lost);
        assert!(matches!(network.send(0, 4), Fate::Arrives(_)));
    }
}
