//! The in-memory index of stored batches and the tail cache.

use std::collections::VecDeque;

use bytes::Bytes;

/// Where a record lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment sequence number.
    pub segment: u64,
    /// Offset of the record header in the segment.
    pub offset: u64,
}

/// One live batch.
#[derive(Clone, Debug)]
pub(crate) struct BatchEntry {
    pub first: u64,
    /// Effective last index (see [`crate::StoredBatch::last`]).
    pub last: u64,
    pub term: u64,
    /// Submission sequence number (0 for batches found at open).
    pub sequence: u64,
    pub payload_len: u32,
    /// Set once the batch is durable on disk.
    pub location: Option<Location>,
    /// Payload kept in memory: always until written, then while the cache
    /// has room.
    pub cached: Option<Bytes>,
}

/// Live batches in index order, plus cache accounting.
///
/// Invariant: `entries[k].last < entries[k + 1].first`, and `cached_bytes`
/// is the sum of cached payloads that have a location (evictable ones).
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub entries: VecDeque<BatchEntry>,
    cached_bytes: usize,
    /// Position in `entries` before which nothing evictable is cached.
    cache_start: usize,
}

impl Index {
    pub(crate) fn push(&mut self, entry: BatchEntry) {
        if entry.location.is_some() {
            if let Some(payload) = &entry.cached {
                self.cached_bytes += payload.len();
            }
        }
        self.entries.push_back(entry);
    }

    /// Position of the batch holding `index`, if any.
    pub(crate) fn find(&self, index: u64) -> Option<usize> {
        let position = self.entries.partition_point(|entry| entry.last < index);
        let entry = self.entries.get(position)?;
        (entry.first <= index).then_some(position)
    }

    /// Removes every entry at or above `from`; a batch straddling it keeps
    /// its payload with an effective last of `from - 1`.
    pub(crate) fn truncate(&mut self, from: u64) {
        while let Some(back) = self.entries.back() {
            if back.first < from {
                break;
            }
            // unwrap: back() just returned Some.
            let entry = self.entries.pop_back().expect("entry present");
            if entry.location.is_some() {
                self.cached_bytes -= entry.cached.as_ref().map_or(0, Bytes::len);
            }
        }
        if let Some(back) = self.entries.back_mut() {
            if back.last >= from {
                back.last = from - 1;
            }
        }
        self.cache_start = self.cache_start.min(self.entries.len());
    }

    /// Removes entries from the front while `remove` says so.
    pub(crate) fn pop_front_while(&mut self, mut remove: impl FnMut(&BatchEntry) -> bool) {
        while let Some(front) = self.entries.front() {
            if !remove(front) {
                break;
            }
            // unwrap: front() just returned Some.
            let entry = self.entries.pop_front().expect("entry present");
            if entry.location.is_some() {
                self.cached_bytes -= entry.cached.as_ref().map_or(0, Bytes::len);
            }
            self.cache_start = self.cache_start.saturating_sub(1);
        }
    }

    /// Records that each batch `(first, sequence)` is durable at its
    /// location. Placements come in log order, so after one binary search
    /// the next entry is usually the next placement's.
    pub(crate) fn place_all(&mut self, placements: &[(u64, u64, Location)]) {
        let mut cursor: Option<usize> = None;
        for &(first, sequence, location) in placements {
            let position = match cursor.map(|position| position + 1) {
                Some(next)
                    if self
                        .entries
                        .get(next)
                        .is_some_and(|entry| entry.first == first) =>
                {
                    Some(next)
                }
                _ => self.find(first),
            };
            let Some(position) = position else { continue };
            cursor = Some(position);
            let entry = &mut self.entries[position];
            if entry.sequence != sequence || entry.location.is_some() {
                continue;
            }
            entry.location = Some(location);
            self.cached_bytes += entry.cached.as_ref().map_or(0, Bytes::len);
        }
    }

    /// Drops the oldest durable cached payloads until at most
    /// `cache_bytes_max` evictable bytes remain.
    pub(crate) fn evict(&mut self, cache_bytes_max: usize) {
        while self.cached_bytes > cache_bytes_max && self.cache_start < self.entries.len() {
            let entry = &mut self.entries[self.cache_start];
            if entry.location.is_none() {
                // Not yet durable, hence everything after it neither.
                break;
            }
            if let Some(payload) = entry.cached.take() {
                self.cached_bytes -= payload.len();
            }
            self.cache_start += 1;
        }
    }
}
