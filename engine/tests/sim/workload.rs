//! Clients: they propose batches of uniquely numbered commands and issue
//! reads, mostly at the node they believe leads (they follow the cluster's
//! current leader as a client following redirects would), sometimes at a
//! random node (stale clients, follower reads).

use barge::core::Role;
use bytes::{BufMut, Bytes, BytesMut};

use super::checkers::liveness::NodeSummary;
use super::rng::Rng;

#[derive(Debug)]
pub enum ClientOp {
    /// Propose these `(client id, payload)` entries at `slot`.
    Propose {
        slot: usize,
        entries: Vec<(u64, Bytes)>,
    },
    Read {
        slot: usize,
        read: u64,
    },
}

#[derive(Debug)]
pub struct Workload {
    rng: Rng,
    next_command: u64,
    next_read: u64,
    pub refused: u64,
}

/// Entries per proposal call, at most.
const PROPOSAL_ENTRIES_MAX: u64 = 16;
/// Payload bytes per entry, at most.
const PAYLOAD_BYTES_MAX: u64 = 96;

impl Workload {
    pub fn new(rng: Rng) -> Self {
        Self {
            rng,
            next_command: 1,
            next_read: 1,
            refused: 0,
        }
    }

    /// The id the next command will get.
    pub fn next_command(&self) -> u64 {
        self.next_command
    }

    /// Simulated time until the next client operation.
    pub fn delay(&mut self) -> u64 {
        self.rng.range(1, 12)
    }

    pub fn next(&mut self, nodes: &[NodeSummary]) -> Option<ClientOp> {
        let up: Vec<usize> = (0..nodes.len()).filter(|&slot| nodes[slot].up).collect();
        if up.is_empty() {
            return None;
        }
        let leader = up
            .iter()
            .copied()
            .filter(|&slot| nodes[slot].role == Some(Role::Leader))
            .max_by_key(|&slot| nodes[slot].term);
        let slot = match leader {
            Some(leader) if self.rng.chance(850_000) => leader,
            _ => *self.rng.pick(&up),
        };
        if self.rng.chance(300_000) {
            let read = self.next_read;
            self.next_read += 1;
            return Some(ClientOp::Read { slot, read });
        }
        let count = if self.rng.chance(500_000) {
            1
        } else {
            self.rng.range(2, PROPOSAL_ENTRIES_MAX)
        };
        let entries = (0..count)
            .map(|_| {
                let command = self.next_command;
                self.next_command += 1;
                let length = self.rng.range(8, PAYLOAD_BYTES_MAX) as usize;
                let mut payload = BytesMut::with_capacity(length);
                payload.put_u64_le(command);
                payload.resize(length, (command % 251) as u8);
                (command, payload.freeze())
            })
            .collect();
        Some(ClientOp::Propose { slot, entries })
    }
}
