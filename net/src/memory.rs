//! An in-memory transport with injectable faults, for tests and the
//! simulator. Same [`Transport`] trait and [`Incoming`] receiver as QUIC.
//!
//! Faults are drawn from one seeded RNG, so a run with the same seed and the
//! same sequence of sends makes the same decisions. Delays need a Tokio
//! runtime (a delayed frame is delivered by a spawned task after
//! `tokio::time::sleep`, which follows a paused test clock); without delays
//! or reordering, delivery is synchronous and needs no runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::PeerId;
use crate::frame::{Frame, TrafficClass};
use crate::transport::{
    incoming_channel, CounterSnapshot, Counters, Deliverers, Delivery, Incoming, SendError,
    Transport,
};

/// Faults applied to every frame sent through a [`MemoryNetwork`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability in [0, 1] that a frame is silently lost.
    pub drop_probability: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate_probability: f64,
    /// Probability that a frame is held back by `reorder_delay` so later
    /// frames overtake it.
    pub reorder_probability: f64,
    /// Extra delay of a reordered frame.
    pub reorder_delay: Duration,
    /// Every frame is delayed by a uniform draw in `[delay_min, delay_max]`.
    pub delay_min: Duration,
    /// Upper end of the delay.
    pub delay_max: Duration,
}

/// Bounds of the in-memory transport.
#[derive(Clone, Copy, Debug)]
pub struct MemoryConfig {
    /// Largest frame body accepted by `send`.
    pub frame_bytes_max: u32,
    /// Frames per class waiting in a receiver's [`Incoming`]; a send into a
    /// full receiver returns [`SendError::Full`].
    pub receive_queue_frames_max: usize,
    /// Bytes per (sender, receiver) held in delayed delivery before `send`
    /// returns [`SendError::Full`].
    pub send_queue_bytes_max: usize,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            frame_bytes_max: 16 * 1024 * 1024,
            receive_queue_frames_max: 1024,
            send_queue_bytes_max: 32 * 1024 * 1024,
        }
    }
}

/// A set of in-memory nodes and the faults between them.
#[derive(Clone, Debug)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
    config: MemoryConfig,
}

#[derive(Debug)]
struct NetworkState {
    nodes: BTreeMap<PeerId, Node>,
    /// Unordered pairs (lower id first) that cannot reach each other.
    partitions: BTreeSet<(PeerId, PeerId)>,
    faults: Faults,
    rng: SmallRng,
}

#[derive(Debug)]
struct Node {
    deliverers: Deliverers,
    counters: Arc<Counters>,
}

impl MemoryNetwork {
    /// An empty network whose fault decisions come from `seed`.
    pub fn new(seed: u64, config: MemoryConfig) -> MemoryNetwork {
        MemoryNetwork {
            state: Arc::new(Mutex::new(NetworkState {
                nodes: BTreeMap::new(),
                partitions: BTreeSet::new(),
                faults: Faults::default(),
                rng: SmallRng::seed_from_u64(seed),
            })),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        // A poisoned lock means a panic while holding it, which is a bug in
        // this module; the state itself (maps and an RNG) stays consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `node` (replacing an earlier one of the same id, as a restart
    /// would) and returns its transport and receiver.
    pub fn join(&self, node: PeerId) -> (MemoryTransport, Incoming) {
        let (deliverers, incoming) = incoming_channel(self.config.receive_queue_frames_max);
        let counters = Arc::new(Counters::default());
        self.lock().nodes.insert(
            node,
            Node {
                deliverers,
                counters: Arc::clone(&counters),
            },
        );
        let transport = MemoryTransport {
            node,
            network: self.clone(),
            counters,
            in_flight: Mutex::new(BTreeMap::new()),
        };
        (transport, incoming)
    }

    /// Removes `node`: frames to it are dropped and its [`Incoming`] ends.
    pub fn leave(&self, node: PeerId) {
        self.lock().nodes.remove(&node);
    }

    /// Replaces the faults applied from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn partition(&self, a: PeerId, b: PeerId) {
        self.lock().partitions.insert(pair(a, b));
    }

    /// Cuts `node` off from every other node that has joined.
    pub fn isolate(&self, node: PeerId) {
        let mut state = self.lock();
        let others: Vec<PeerId> = state.nodes.keys().copied().filter(|&n| n != node).collect();
        for other in others {
            state.partitions.insert(pair(node, other));
        }
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: PeerId, b: PeerId) {
        self.lock().partitions.remove(&pair(a, b));
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.lock().partitions.clear();
    }
}

fn pair(a: PeerId, b: PeerId) -> (PeerId, PeerId) {
    (a.min(b), a.max(b))
}

/// One node's view of a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryTransport {
    node: PeerId,
    network: MemoryNetwork,
    counters: Arc<Counters>,
    /// Bytes in delayed delivery per destination.
    in_flight: Mutex<BTreeMap<PeerId, Arc<AtomicUsize>>>,
}

enum Plan {
    Drop,
    Deliver { copies: usize, delay: Duration },
}

impl MemoryTransport {
    fn in_flight(&self, peer: PeerId) -> Arc<AtomicUsize> {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(map.entry(peer).or_default())
    }
}

impl Transport for MemoryTransport {
    fn node(&self) -> PeerId {
        self.node
    }

    fn send(&self, peer: PeerId, class: TrafficClass, frame: Frame) -> Result<(), SendError> {
        let maximum = self.network.config.frame_bytes_max as usize;
        if frame.body_bytes() > maximum {
            return Err(SendError::TooLong {
                length: frame.body_bytes(),
                maximum,
            });
        }
        let mut state = self.network.lock();
        let Some(destination) = state.nodes.get(&peer) else {
            Counters::add(&self.counters.frames_dropped, 1);
            return Err(SendError::PeerDown(peer));
        };
        let deliverers = destination.deliverers.clone();
        let receiver_counters = Arc::clone(&destination.counters);
        let partitioned = state.partitions.contains(&pair(self.node, peer));
        let plan = if partitioned {
            Plan::Drop
        } else {
            let faults = state.faults.clone();
            let rng = &mut state.rng;
            if faults.drop_probability > 0.0 && rng.random_bool(faults.drop_probability.min(1.0)) {
                Plan::Drop
            } else {
                let duplicate = faults.duplicate_probability > 0.0
                    && rng.random_bool(faults.duplicate_probability.min(1.0));
                let mut delay = if faults.delay_max > faults.delay_min {
                    rng.random_range(faults.delay_min..=faults.delay_max)
                } else {
                    faults.delay_min
                };
                if faults.reorder_probability > 0.0
                    && rng.random_bool(faults.reorder_probability.min(1.0))
                {
                    delay += faults.reorder_delay;
                }
                Plan::Deliver {
                    copies: if duplicate { 2 } else { 1 },
                    delay,
                }
            }
        };
        drop(state);

        let (copies, delay) = match plan {
            Plan::Drop => {
                Counters::add(&self.counters.frames_dropped, 1);
                return Ok(());
            }
            Plan::Deliver { copies, delay } => (copies, delay),
        };
        let body = frame.to_contiguous();
        let delivery = Delivery {
            peer: self.node,
            class,
            body,
        };
        let body_bytes = delivery.body.len() as u64;
        if delay.is_zero() {
            for _ in 0..copies {
                match deliverers.try_deliver(delivery.clone()) {
                    Ok(()) => {
                        Counters::add(&receiver_counters.frames_received, 1);
                        Counters::add(&receiver_counters.bytes_received, body_bytes);
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        Counters::add(&self.counters.sends_refused_full, 1);
                        return Err(SendError::Full {
                            peer,
                            queued_bytes: 0,
                            bytes_max: self.network.config.send_queue_bytes_max,
                        });
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                        Counters::add(&self.counters.frames_dropped, 1);
                        return Err(SendError::PeerDown(peer));
                    }
                }
            }
            Counters::add(&self.counters.frames_sent, 1);
            Counters::add(&self.counters.bytes_sent, body_bytes);
            return Ok(());
        }

        let in_flight = self.in_flight(peer);
        let bytes_max = self.network.config.send_queue_bytes_max;
        let charge = delivery.body.len() * copies;
        let reserved = in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            (queued + charge <= bytes_max).then_some(queued + charge)
        });
        if let Err(queued_bytes) = reserved {
            Counters::add(&self.counters.sends_refused_full, 1);
            return Err(SendError::Full {
                peer,
                queued_bytes,
                bytes_max,
            });
        }
        Counters::add(&self.counters.frames_sent, 1);
        Counters::add(&self.counters.bytes_sent, body_bytes);
        let sender_counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for _ in 0..copies {
                if deliverers.try_deliver(delivery.clone()).is_ok() {
                    Counters::add(&receiver_counters.frames_received, 1);
                    Counters::add(&receiver_counters.bytes_received, body_bytes);
                } else {
                    Counters::add(&sender_counters.frames_dropped, 1);
                }
            }
            in_flight.fetch_sub(charge, Ordering::AcqRel);
        });
        Ok(())
    }

    fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    fn queue_bytes(&self, peer: PeerId) -> usize {
        self.in_flight(peer).load(Ordering::Acquire)
    }
}
