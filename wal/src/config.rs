//! Configuration of the log.

use crate::{FaultDisk, Faults};

/// How group writes reach the disk.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// io_uring, O_DIRECT, linked write→fdatasync, several writes in flight.
    /// Falls back to [`Backend::Blocking`] with a logged warning if the ring
    /// cannot be set up (for example under Docker's default seccomp) or the
    /// file system refuses O_DIRECT.
    #[default]
    Uring,
    /// Buffered `pwrite` then `fdatasync` on the log thread, one group at a
    /// time (group commit still coalesces everything queued meanwhile).
    Blocking,
    /// [`Backend::Blocking`] on the real directory, with the armed
    /// [`Faults`] failing reads, writes or syncs (fault experiments on real
    /// processes; io_uring is not used).
    FaultyBlocking(Faults),
    /// The in-memory fault-injecting disk; the directory argument of
    /// [`crate::Wal::open`] only names it in messages.
    Fault(FaultDisk),
}

/// Whether group writes are followed by a data sync.
///
/// [`SyncMode::Never`] is UNSAFE and exists for measurement only: see its
/// documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Every group write is followed by `fdatasync` (linked to the write on
    /// io_uring) before its batches complete as durable.
    #[default]
    Fdatasync,
    /// UNSAFE, for measurement only: group writes are not followed by a data
    /// sync, and their batches complete as [`crate::Completion::Durable`] (in
    /// order) as soon as the write finished. A process crash loses nothing
    /// written (the bytes are in the page cache, or on the device with
    /// O_DIRECT), but a power failure or kernel crash may lose entries that
    /// were acknowledged as durable, which breaks the guarantees a
    /// replicated log builds on. [`crate::Metrics::syncs`] stays 0. Syncs of
    /// the directory when segments are created or renamed, and of freshly
    /// zero-filled spare segments, still happen.
    Never,
}

/// Called by the log thread after it pushes a completion, so an async
/// runtime can be woken without polling. Must be quick and must not call
/// back into the log.
pub type Notifier = Box<dyn Fn() + Send + Sync>;

/// Every bound of the log, with its unit last.
pub struct WalConfig {
    /// Size of each segment file. Rounded up to 4 KiB; at least 64 KiB.
    pub segment_bytes: u64,
    /// Bytes of submitted-but-unwritten payload beyond which `append` blocks
    /// (backpressure).
    pub queued_bytes_max: usize,
    /// Largest single coalesced write (the size of each aligned buffer). A
    /// batch must fit in one write with its headers.
    pub write_bytes_max: usize,
    /// Durable payload bytes kept in memory for reads of the recent tail
    /// (payloads not yet durable are always kept, bounded by
    /// `queued_bytes_max` and the writes in flight).
    pub tail_cache_bytes_max: usize,
    /// Group writes in flight at once (io_uring only; the blocking backend
    /// has one). 2 keeps one fdatasync running while the next write starts.
    pub inflight_writes_max: usize,
    /// Capacity of the completion channel. Completions are cumulative, so
    /// when it is full the oldest is dropped.
    pub completion_queue_max: usize,
    /// Retired segments kept as spares for reuse instead of being deleted.
    pub spare_segments_max: usize,
    /// Microseconds the idle log thread keeps polling for a submission right
    /// after completing a group, before sleeping (saves the next appender a
    /// thread wake-up; 0, the default, disables it; at most 10 000). A/B
    /// runs on the shared 2-core machine did not show a gain above noise.
    pub idle_spin_micros: u64,
    /// Write backend.
    pub backend: Backend,
    /// Data sync after each group write: [`SyncMode::Fdatasync`] (the
    /// default). [`SyncMode::Never`] is UNSAFE (measurement only).
    pub sync: SyncMode,
    /// Optional wake-up hook run after each completion is pushed.
    pub notifier: Option<Notifier>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            queued_bytes_max: 64 << 20,
            write_bytes_max: 8 << 20,
            tail_cache_bytes_max: 64 << 20,
            inflight_writes_max: 2,
            completion_queue_max: 1024,
            spare_segments_max: 4,
            idle_spin_micros: 0,
            backend: Backend::Uring,
            sync: SyncMode::Fdatasync,
            notifier: None,
        }
    }
}

impl std::fmt::Debug for WalConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WalConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("queued_bytes_max", &self.queued_bytes_max)
            .field("write_bytes_max", &self.write_bytes_max)
            .field("tail_cache_bytes_max", &self.tail_cache_bytes_max)
            .field("inflight_writes_max", &self.inflight_writes_max)
            .field("completion_queue_max", &self.completion_queue_max)
            .field("spare_segments_max", &self.spare_segments_max)
            .field("idle_spin_micros", &self.idle_spin_micros)
            .field("backend", &self.backend)
            .field("sync", &self.sync)
            .field("notifier", &self.notifier.is_some())
            .finish()
    }
}
