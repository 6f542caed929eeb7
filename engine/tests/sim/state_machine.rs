//! The replicated state machine: a running hash of every applied entry (the
//! same chain hash the log model computes, so state machine safety compares
//! whole applied prefixes), plus a counter of applied commands. Snapshots
//! encode that state with filler bytes (so they span several chunks) and a
//! checksum, so a transfer that loses, reorders or duplicates a chunk fails
//! loudly on install.

use barge::core::{EntryKind, LogId, LogIndex, Term};
use bytes::{BufMut, Bytes, BytesMut};

use super::log::{chain_next, entry_hash, GENESIS};
use super::rng::hash_bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMachine {
    pub applied: LogId,
    pub chain: u64,
    pub commands_applied: u64,
}

/// What applying one entry produced, for the checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub index: LogIndex,
    pub chain: u64,
    pub entry: u64,
}

const SNAPSHOT_HEADER_BYTES: usize = 8 * 4 + 4;
/// Filler per snapshot, so a snapshot spans several chunks of the
/// simulation's small chunk size; the bound keeps memory per run small.
pub const SNAPSHOT_FILLER_BYTES_MAX: u64 = 2048;

impl Default for StateMachine {
    fn default() -> Self {
        Self {
            applied: LogId::default(),
            chain: GENESIS,
            commands_applied: 0,
        }
    }
}

impl StateMachine {
    /// Applies the next entry; `None` if it is not the next index (the
    /// caller reports that as a violation of in-order application).
    pub fn apply(&mut self, id: LogId, kind: EntryKind, payload: &[u8]) -> Option<Applied> {
        if id.index != self.applied.index.next() {
            return None;
        }
        let entry = entry_hash(kind, payload);
        self.chain = chain_next(self.chain, id.term, entry);
        self.applied = id;
        if kind == EntryKind::Normal {
            self.commands_applied += 1;
        }
        Some(Applied {
            index: id.index,
            chain: self.chain,
            entry,
        })
    }

    /// Encodes the state; `filler_bytes` pads it so transfers take chunks.
    pub fn snapshot(&self, filler_bytes: u64) -> Bytes {
        let filler_bytes = filler_bytes.min(SNAPSHOT_FILLER_BYTES_MAX) as usize;
        let mut buffer = BytesMut::with_capacity(SNAPSHOT_HEADER_BYTES + filler_bytes + 8);
        buffer.put_u64_le(self.applied.term.0);
        buffer.put_u64_le(self.applied.index.0);
        buffer.put_u64_le(self.chain);
        buffer.put_u64_le(self.commands_applied);
        buffer.put_u32_le(filler_bytes as u32);
        for position in 0..filler_bytes {
            buffer.put_u8((self.chain as usize).wrapping_add(position) as u8);
        }
        let checksum = hash_bytes(&buffer);
        buffer.put_u64_le(checksum);
        buffer.freeze()
    }

    /// Decodes a snapshot, checking its length and checksum.
    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let read = |at: usize| -> Result<u64, String> {
            let slice = bytes
                .get(at..at + 8)
                .ok_or_else(|| format!("snapshot of {} bytes truncated at {at}", bytes.len()))?;
            Ok(u64::from_le_bytes(
                slice.try_into().map_err(|_| "eight bytes".to_string())?,
            ))
        };
        let filler = bytes
            .get(32..36)
            .map(|slice| u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]) as usize)
            .ok_or_else(|| format!("snapshot of {} bytes has no header", bytes.len()))?;
        if filler as u64 > SNAPSHOT_FILLER_BYTES_MAX {
            return Err(format!("snapshot filler of {filler} bytes over the bound"));
        }
        let body = SNAPSHOT_HEADER_BYTES + filler;
        if bytes.len() != body + 8 {
            return Err(format!(
                "snapshot is {} bytes, header says {}",
                bytes.len(),
                body + 8
            ));
        }
        if hash_bytes(&bytes[..body]) != read(body)? {
            return Err("snapshot checksum mismatch: chunks lost, reordered or mixed".into());
        }
        Ok(Self {
            applied: LogId::new(Term(read(0)?), LogIndex(read(8)?)),
            chain: read(16)?,
            commands_applied: read(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let mut machine = StateMachine::default();
        assert!(machine
            .apply(LogId::new(Term(1), LogIndex(2)), EntryKind::Normal, b"x")
            .is_none());
        machine
            .apply(LogId::new(Term(1), LogIndex(1)), EntryKind::Noop, b"")
            .expect("next");
        machine
            .apply(LogId::new(Term(1), LogIndex(2)), EntryKind::Normal, b"x")
            .expect("next");
        let snapshot = machine.snapshot(100);
        assert_eq!(StateMachine::restore(&snapshot), Ok(machine.clone()));
        let mut damaged = snapshot.to_vec();
        damaged[40] ^= 1;
        assert!(StateMachine::restore(&damaged).is_err());
        assert!(StateMachine::restore(&snapshot[..20]).is_err());
    }
}
