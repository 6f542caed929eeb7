//! The in-memory log: every batch after the last snapshot.
//!
//! The core keeps these batches (reference-counted [`Bytes`], shared with the
//! WAL and the wire) so it can replicate without asking the driver for old
//! entries. Memory is bounded by the snapshot thresholds in
//! [`super::Config`]: once the log after the snapshot exceeds them the core
//! asks for a snapshot and compacts below it.
//!
//! [`Bytes`]: bytes::Bytes

use std::collections::VecDeque;

use super::batch::Batch;
use super::types::{LogId, LogIndex, Term};

/// Batches after a compaction point, plus how far they are durable.
///
/// Invariants: batches are contiguous from `prev.index + 1` with
/// non-decreasing terms, each at least `prev.term`;
/// `prev.index <= snapshot.index <= last().index`;
/// `durable <= last().index`.
#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    /// The entry just before the first kept batch.
    prev: LogId,
    /// The last entry covered by the latest snapshot (a kept batch may
    /// straddle it).
    snapshot: LogId,
    batches: VecDeque<Batch>,
    bytes: u64,
    /// Highest index the WAL reported durable and still in this log.
    durable: LogIndex,
}

impl RaftLog {
    pub(crate) fn new(snapshot: LogId) -> RaftLog {
        RaftLog {
            prev: snapshot,
            snapshot,
            batches: VecDeque::new(),
            bytes: 0,
            durable: snapshot.index,
        }
    }

    pub(crate) fn last(&self) -> LogId {
        match self.batches.back() {
            Some(batch) => batch.last_id(),
            None => self.prev,
        }
    }

    pub(crate) fn snapshot(&self) -> LogId {
        self.snapshot
    }

    pub(crate) fn durable(&self) -> LogIndex {
        self.durable
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of the batches that end at or before `index` (the prefix a
    /// leader holds back below its snapshot).
    pub(crate) fn bytes_through(&self, index: LogIndex) -> u64 {
        self.batches
            .iter()
            .take_while(|batch| batch.last() <= index)
            .map(Batch::size_bytes)
            .sum()
    }

    /// Position of the batch holding `index`.
    fn position(&self, index: LogIndex) -> Option<usize> {
        if index <= self.prev.index || index > self.last().index {
            return None;
        }
        // Replication works at the tail: check the last batch before
        // searching.
        let back = self.batches.len() - 1;
        if self.batches[back].first() <= index {
            return Some(back);
        }
        Some(self.batches.partition_point(|b| b.last() < index))
    }

    /// The term of entry `index`, if this log still knows it.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.position(index).map(|p| self.batches[p].term())
    }

    /// Whether this log holds `id`.
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// The batch holding `index`.
    pub(crate) fn batch_at(&self, index: LogIndex) -> Option<&Batch> {
        self.position(index).map(|p| &self.batches[p])
    }

    /// Whole batches starting with the one holding `from`, up to about
    /// `bytes_max` bytes (at least one batch) and `count_max` batches.
    pub(crate) fn batches_from(&self, from: LogIndex, bytes_max: u64) -> Vec<Batch> {
        let Some(start) = self.position(from) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for batch in self.batches.range(start..) {
            if !out.is_empty() && bytes + batch.size_bytes() > bytes_max {
                break;
            }
            bytes += batch.size_bytes();
            out.push(batch.clone());
        }
        out
    }

    /// Batches covering `first..=last`.
    pub(crate) fn batches_covering(&self, first: LogIndex, last: LogIndex) -> Vec<Batch> {
        let Some(start) = self.position(first) else {
            return Vec::new();
        };
        self.batches
            .range(start..)
            .take_while(|b| b.first() <= last)
            .cloned()
            .collect()
    }

    /// Appends a batch right after the last entry.
    ///
    /// # Panics
    /// If the batch does not follow the last entry or its term goes back:
    /// callers check peer input before.
    pub(crate) fn append(&mut self, batch: Batch) {
        let last = self.last();
        assert_eq!(
            batch.first(),
            last.index.next(),
            "append must follow the last entry"
        );
        assert!(batch.term() >= last.term, "log terms never decrease");
        self.bytes += batch.size_bytes();
        self.batches.push_back(batch);
    }

    /// Drops every entry after `after`.
    ///
    /// # Panics
    /// If `after` is below the snapshot (that would drop committed state).
    pub(crate) fn truncate_after(&mut self, after: LogIndex) {
        assert!(
            after >= self.snapshot.index,
            "truncation below the snapshot"
        );
        while let Some(back) = self.batches.back() {
            if back.first() > after {
                self.bytes -= back.size_bytes();
                self.batches.pop_back();
            } else {
                if back.last() > after {
                    let shortened = back.truncated(after);
                    // Still holds after this batch: it was the back.
                    if let Some(slot) = self.batches.back_mut() {
                        *slot = shortened;
                    }
                }
                break;
            }
        }
        self.durable = self.durable.min(after);
    }

    /// Records that the WAL holds everything up to `id`. Stale reports
    /// (for entries since truncated) are ignored.
    pub(crate) fn mark_durable(&mut self, id: LogId) -> bool {
        if id.index > self.durable && self.matches(id) {
            self.durable = id.index;
            return true;
        }
        false
    }

    /// Forgets batches wholly covered by a snapshot at `snapshot`.
    pub(crate) fn compact(&mut self, snapshot: LogId) {
        self.compact_keeping(snapshot, snapshot.index);
    }

    /// Records a snapshot at `snapshot` but forgets only batches ending at
    /// or before `keep_after` (a leader keeps entries that followers it
    /// hears from still need, so they need no snapshot).
    pub(crate) fn compact_keeping(&mut self, snapshot: LogId, keep_after: LogIndex) {
        assert!(
            self.matches(snapshot),
            "compaction point must be in the log"
        );
        let drop_through = keep_after.min(snapshot.index);
        while let Some(front) = self.batches.front() {
            if front.last() <= drop_through {
                self.prev = front.last_id();
                self.bytes -= front.size_bytes();
                self.batches.pop_front();
            } else {
                break;
            }
        }
        self.snapshot = snapshot;
        self.durable = self.durable.max(self.prev.index);
    }

    /// Replaces the log by a snapshot, keeping the suffix after it if the
    /// log holds the snapshot's last entry (§7, "if existing log entry has
    /// same index and term as snapshot's last included entry, retain log
    /// entries following it").
    pub(crate) fn restore(&mut self, snapshot: LogId) {
        if self.matches(snapshot) {
            self.compact(snapshot);
        } else {
            *self = RaftLog::new(snapshot);
        }
    }

    pub(crate) fn set_durable_at_least(&mut self, index: LogIndex) {
        let index = index.min(self.last().index);
        self.durable = self.durable.max(index);
    }

    /// Index of the first entry after `prev` still in memory.
    pub(crate) fn first_index(&self) -> LogIndex {
        self.prev.index.next()
    }

    /// Largest index `<= index` whose term is `<= term` (fast backtracking,
    /// thesis §3.5 and etcd's `findConflictByTerm`).
    pub(crate) fn last_at_or_below(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut index = index.min(self.last().index);
        loop {
            if index < self.prev.index {
                return index;
            }
            if index == self.prev.index {
                // Below `prev` the terms are unknown: answer "before this
                // log" so a leader falls back to a snapshot instead of
                // probing the same index forever.
                return if self.prev.term <= term {
                    index
                } else {
                    index.prev()
                };
            }
            match self.position(index) {
                Some(p) => {
                    let batch = &self.batches[p];
                    if batch.term() <= term {
                        return index;
                    }
                    index = batch.first().prev();
                }
                None => return index,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(first: u64, term: u64, count: usize) -> Batch {
        let payloads: Vec<Bytes> = (0..count).map(|i| Bytes::from(vec![i as u8; 3])).collect();
        Batch::encode_normal(LogIndex(first), Term(term), &payloads)
    }

    #[test]
    fn append_truncate_compact() {
        let mut log = RaftLog::new(LogId::default());
        log.append(batch(1, 1, 3));
        log.append(batch(4, 2, 3));
        assert_eq!(log.last(), LogId::new(Term(2), LogIndex(6)));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(1)));
        assert!(log.mark_durable(LogId::new(Term(2), LogIndex(6))));
        log.truncate_after(LogIndex(5));
        assert_eq!(log.last(), LogId::new(Term(2), LogIndex(5)));
        assert_eq!(log.durable(), LogIndex(5));
        assert!(
            !log.mark_durable(LogId::new(Term(2), LogIndex(6))),
            "stale report"
        );
        log.compact(LogId::new(Term(2), LogIndex(4)));
        // The straddling batch stays; the one before it goes.
        assert_eq!(log.first_index(), LogIndex(4));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(2)), None);
        assert_eq!(log.batches_from(LogIndex(5), 1).len(), 1);
    }

    #[test]
    fn backtracking_skips_whole_terms() {
        let mut log = RaftLog::new(LogId::default());
        log.append(batch(1, 1, 3));
        log.append(batch(4, 3, 3));
        log.append(batch(7, 5, 3));
        assert_eq!(log.last_at_or_below(LogIndex(9), Term(4)), LogIndex(6));
        assert_eq!(log.last_at_or_below(LogIndex(9), Term(2)), LogIndex(3));
        assert_eq!(log.last_at_or_below(LogIndex(9), Term(0)), LogIndex(0));
        log.compact(LogId::new(Term(3), LogIndex(6)));
        // Terms below the compaction point are unknown: step below it.
        assert_eq!(log.last_at_or_below(LogIndex(6), Term(2)), LogIndex(5));
        assert_eq!(log.last_at_or_below(LogIndex(6), Term(3)), LogIndex(6));
    }
}
