//! Counters the log thread updates with relaxed atomics (no lock on the hot
//! path); read them with [`crate::Wal::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub syncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub batches: AtomicU64,
    pub groups: AtomicU64,
    pub sync_nanos_total: AtomicU64,
    pub sync_nanos_last: AtomicU64,
    pub sync_nanos_max: AtomicU64,
    pub rolls: AtomicU64,
    pub roll_nanos_total: AtomicU64,
    pub spares_zero_filled: AtomicU64,
}

impl Counters {
    /// Counts one finished group write; `synced` is false with the unsafe
    /// [`crate::SyncMode::Never`], whose writes are not syncs and so leave
    /// the sync count and latencies alone.
    pub(crate) fn record_group(&self, bytes: u64, batches: u64, sync_nanos: u64, synced: bool) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.batches.fetch_add(batches, Ordering::Relaxed);
        if !synced {
            return;
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos_total
            .fetch_add(sync_nanos, Ordering::Relaxed);
        self.sync_nanos_last.store(sync_nanos, Ordering::Relaxed);
        self.sync_nanos_max.fetch_max(sync_nanos, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let syncs = self.syncs.load(Ordering::Relaxed);
        let groups = self.groups.load(Ordering::Relaxed);
        let batches = self.batches.load(Ordering::Relaxed);
        let total = self.sync_nanos_total.load(Ordering::Relaxed);
        Metrics {
            syncs,
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            batches,
            groups,
            batches_per_group_mean: if groups == 0 {
                0.0
            } else {
                batches as f64 / groups as f64
            },
            sync_micros_mean: if syncs == 0 {
                0.0
            } else {
                total as f64 / syncs as f64 / 1e3
            },
            sync_micros_last: self.sync_nanos_last.load(Ordering::Relaxed) as f64 / 1e3,
            sync_micros_max: self.sync_nanos_max.load(Ordering::Relaxed) as f64 / 1e3,
            segment_rolls: self.rolls.load(Ordering::Relaxed),
            segment_roll_micros_total: self.roll_nanos_total.load(Ordering::Relaxed) as f64 / 1e3,
            spares_zero_filled: self.spares_zero_filled.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of the log's counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Data syncs (one per group write; 0 with the unsafe
    /// [`crate::SyncMode::Never`]).
    pub syncs: u64,
    /// Bytes written by group writes (headers, payloads, padding).
    pub bytes_written: u64,
    /// Batches made durable.
    pub batches: u64,
    /// Group writes made durable.
    pub groups: u64,
    /// Mean batches coalesced into one group write.
    pub batches_per_group_mean: f64,
    /// Mean time from submitting a group write to its sync completing, µs.
    pub sync_micros_mean: f64,
    /// The same for the latest group, µs.
    pub sync_micros_last: f64,
    /// The largest seen, µs.
    pub sync_micros_max: f64,
    /// Segments started.
    pub segment_rolls: u64,
    /// Time the log thread spent rolling segments (sealing, renaming,
    /// directory syncs, and zero-filling when no spare was ready), µs.
    pub segment_roll_micros_total: f64,
    /// Spare segments created by writing zeros (the rest were recycled).
    pub spares_zero_filled: u64,
}
