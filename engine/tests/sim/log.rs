//! The log model: a node's log as batches after a snapshot, plus a chain
//! hash per entry so the checkers can compare prefixes in O(1)
//! (chain(i) = mix(chain(i - 1), term, entry hash), chain(0) = GENESIS).
//! One `LogImage` is what the core was told is written, another what the
//! simulated disk has made durable (see `disk.rs`).

use barge::core::{Batch, EntryKind, LogId, LogIndex, SnapshotMeta, Term};

use super::checkers::LogView;
use super::rng::{hash_bytes, mix};

/// The chain hash of the empty log.
pub const GENESIS: u64 = 0x5EED_0000_BA26_E000;

/// Hash of one entry's content (kind and payload).
pub fn entry_hash(kind: EntryKind, payload: &[u8]) -> u64 {
    let code = match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::Membership => 2,
    };
    mix(hash_bytes(payload), code)
}

pub fn chain_next(previous: u64, term: Term, entry: u64) -> u64 {
    mix(mix(previous, term.0), entry)
}

/// Why a log operation the core asked for cannot be carried out: a bug in
/// the core (or in the simulator), reported as a violation of the
/// persistence contract rather than a panic, so the seed is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError(pub String);

#[derive(Debug, Clone)]
pub struct LogImage {
    pub snapshot: SnapshotMeta,
    /// Chain hash through `snapshot.last.index`.
    pub snapshot_chain: u64,
    pub batches: Vec<Batch>,
    /// `(term, chain)` of each entry after the snapshot, in order.
    chains: Vec<(Term, u64, u64)>,
}

impl LogImage {
    pub fn new(snapshot: SnapshotMeta, snapshot_chain: u64) -> Self {
        Self {
            snapshot,
            snapshot_chain,
            batches: Vec::new(),
            chains: Vec::new(),
        }
    }

    pub fn last_id(&self) -> LogId {
        match self.chains.last() {
            Some(&(term, _, _)) => LogId::new(term, self.last_index()),
            None => self.snapshot.last,
        }
    }

    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.last.index {
            return Some(self.snapshot.last.term);
        }
        self.slot(index).map(|slot| self.chains[slot].0)
    }

    fn slot(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.snapshot.last.index.0 + 1)?;
        let slot = usize::try_from(offset).ok()?;
        (slot < self.chains.len()).then_some(slot)
    }

    /// Appends `batch`, which must start right after the last entry.
    /// Returns the `(index, term, chain)` of each new entry for the checkers.
    pub fn append(&mut self, batch: &Batch) -> Result<Vec<(LogIndex, Term, u64)>, LogError> {
        let expected = self.last_index().next();
        if batch.first() != expected {
            return Err(LogError(format!(
                "append of batch {}..={} to a log ending at {}",
                batch.first(),
                batch.last(),
                self.last_index()
            )));
        }
        if batch.term() < self.last_id().term {
            return Err(LogError(format!(
                "append of batch of {} after an entry of {}",
                batch.term(),
                self.last_id().term
            )));
        }
        let mut chain = self
            .chain_at(self.last_index())
            .unwrap_or(self.snapshot_chain);
        let mut written = Vec::with_capacity(batch.len() as usize);
        for entry in batch.entries() {
            let hash = entry_hash(entry.kind, &entry.payload);
            chain = chain_next(chain, batch.term(), hash);
            self.chains.push((batch.term(), chain, hash));
            written.push((entry.id.index, batch.term(), chain));
        }
        self.batches.push(batch.clone());
        Ok(written)
    }

    /// Removes every entry at `from` and above (conflict truncation).
    pub fn truncate_from(&mut self, from: LogIndex) -> Result<(), LogError> {
        if from <= self.snapshot.last.index {
            return Err(LogError(format!(
                "truncation from {from} at or below the snapshot at {}",
                self.snapshot.last.index
            )));
        }
        let keep = (from.0 - self.snapshot.last.index.0 - 1) as usize;
        self.chains.truncate(keep);
        while let Some(batch) = self.batches.last() {
            if batch.first() >= from {
                self.batches.pop();
            } else if batch.last() >= from {
                let shortened = batch.truncated(from.prev());
                *self
                    .batches
                    .last_mut()
                    .expect("checked non-empty just above") = shortened;
                break;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Replaces the prefix through `snapshot.last` with the snapshot. If the
    /// log holds that entry with the same term, later entries stay (log
    /// compaction); otherwise the whole log is discarded (install, §7).
    pub fn install_snapshot(&mut self, snapshot: SnapshotMeta, chain: u64) {
        let last = snapshot.last;
        if last.index <= self.snapshot.last.index {
            // The same or an older snapshot than the one held: nothing to do.
            return;
        }
        if self.term_at(last.index) == Some(last.term) {
            let drop = (last.index.0 - self.snapshot.last.index.0) as usize;
            self.chains.drain(..drop);
            // A batch straddling the snapshot stays whole: the core is told
            // where the snapshot ends and skips the entries below it.
            self.batches.retain(|batch| batch.last() > last.index);
        } else {
            self.chains.clear();
            self.batches.clear();
        }
        self.snapshot = snapshot;
        self.snapshot_chain = chain;
    }

    /// Batches holding entries after the snapshot, for restarting a core.
    pub fn batches_after_snapshot(&self) -> Vec<Batch> {
        self.batches.clone()
    }
}

impl LogView for LogImage {
    fn chain_at(&self, index: LogIndex) -> Option<u64> {
        if index == self.snapshot.last.index {
            return Some(self.snapshot_chain);
        }
        self.slot(index).map(|slot| self.chains[slot].1)
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.last.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.last.index.plus(self.chains.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn batch(first: u64, term: u64, count: usize) -> Batch {
        let payloads: Vec<Bytes> = (0..count).map(|i| Bytes::from(vec![i as u8; 3])).collect();
        Batch::encode_normal(LogIndex(first), Term(term), &payloads)
    }

    #[test]
    fn append_truncate_and_compact_keep_chains_consistent() {
        let mut log = LogImage::new(SnapshotMeta::default(), GENESIS);
        log.append(&batch(1, 1, 3)).expect("appends at 1");
        assert!(log.append(&batch(5, 1, 1)).is_err(), "gap refused");
        log.append(&batch(4, 2, 2)).expect("appends at 4");
        let chain_at_3 = log.chain_at(LogIndex(3)).expect("held");
        log.truncate_from(LogIndex(3)).expect("above the snapshot");
        assert_eq!(log.last_id(), LogId::new(Term(1), LogIndex(2)));
        assert_eq!(log.batches.len(), 1);
        assert_eq!(log.batches[0].last(), LogIndex(2));
        let same_entry = Batch::encode_normal(LogIndex(3), Term(1), &[Bytes::from(vec![2u8; 3])]);
        log.append(&same_entry).expect("re-append");
        assert_eq!(
            log.chain_at(LogIndex(3)),
            Some(chain_at_3),
            "same entry, same chain"
        );
        let meta = SnapshotMeta {
            last: LogId::new(Term(1), LogIndex(2)),
            ..Default::default()
        };
        let chain_at_2 = log.chain_at(LogIndex(2)).expect("held");
        log.install_snapshot(meta, chain_at_2);
        assert_eq!(log.chain_at(LogIndex(3)), Some(chain_at_3));
        assert_eq!(log.first_index(), LogIndex(3));
        assert!(log.truncate_from(LogIndex(2)).is_err());
    }
}
