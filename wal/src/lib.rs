//! `barge-wal`: a segmented write-ahead log on io_uring with group fsync.
//!
//! The log stores opaque batch bytes under `(first index, last index, term)`
//! and a small hard-state record. It knows nothing of Raft: the engine
//! converts its `LogId` to [`EntryId`] at the boundary.
//!
//! # Contract
//!
//! - [`Wal::open`] recovers the directory and returns a [`Recovery`]: the
//!   hard state, first and last entry, and any damaged ranges.
//! - [`Wal::append`], [`Wal::save_hard_state`] and [`Wal::truncate_suffix`]
//!   submit and return a sequence number at once (they block only for
//!   backpressure). The log thread (`barge-wal`) coalesces everything queued
//!   into one block-aligned write and one `fdatasync`, and then reports
//!   [`Completion::Durable`] with the highest sequence number covered, on the
//!   channel from [`Wal::completions`], calling the configured notifier
//!   after each push. [`Wal::wait_durable`] blocks for the same fact.
//! - Any failed write or sync poisons the log (fsyncgate): nothing submitted
//!   after the last durable report is ever reported durable, and every later
//!   call returns [`WalError::Poisoned`]. Reads keep working.
//! - [`Wal::read`] returns batches with their effective range (see
//!   [`StoredBatch::last`]); [`Wal::compact`] drops whole segments below an
//!   index.
//!
//! The on-disk format and what recovery does after each kind of crash are in
//! [`mod@format`]. Faults for tests and simulation come from [`FaultDisk`].
//!
//! # Threads, ordering and bounds
//!
//! - `barge-wal` owns the write engine: io_uring (O_DIRECT, linked
//!   write→fdatasync, up to `inflight_writes_max` groups in flight, so one
//!   sync runs while the next write is submitted) or, if the ring or
//!   O_DIRECT is unavailable, a blocking `pwrite`+`fdatasync` engine (a
//!   warning is logged; [`Wal::backend_name`] says which is in use).
//!   `barge-wal-prep` zero-fills one spare segment ahead, unless compaction
//!   already recycled one.
//! - Submissions are ordered by the internal lock; groups complete in
//!   submission order, so [`Durable::sequence`] only grows.
//! - Bounds ([`WalConfig`]): `queued_bytes_max` (appends block beyond it),
//!   `write_bytes_max` (one coalesced write, and the largest batch),
//!   `tail_cache_bytes_max`, `completion_queue_max` (oldest cumulative
//!   completion dropped when full), `spare_segments_max`. The in-memory
//!   index holds one small entry (about 100 bytes) per stored batch, so it is
//!   bounded by what compaction leaves on disk.
//! - A directory must be opened by one [`Wal`] at a time (nothing checks
//!   this yet).
//!
//! # Example
//!
//! ```
//! use barge_wal::{Backend, HardState, Wal, WalConfig};
//! use bytes::Bytes;
//!
//! let dir = tempfile::tempdir()?;
//! let config = WalConfig { segment_bytes: 1 << 20, backend: Backend::Blocking, ..WalConfig::default() };
//! let (wal, recovery) = Wal::open(dir.path(), config)?;
//! assert_eq!(recovery.last, None);
//! wal.append(1, 3, 1, Bytes::from_static(b"three entries"))?;
//! let hard_state = wal.save_hard_state(HardState { term: 1, vote: Some(2), commit: 0 })?;
//! let durable = wal.wait_durable(hard_state)?;
//! assert_eq!(durable.last.map(|last| last.index), Some(3));
//! wal.shutdown()?;
//!
//! let (wal, recovery) = Wal::open(dir.path(), WalConfig { backend: Backend::Blocking, ..WalConfig::default() })?;
//! assert_eq!(recovery.hard_state.vote, Some(2));
//! assert_eq!(wal.read(1..=3, usize::MAX)?[0].payload, Bytes::from_static(b"three entries"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod baseline;
mod config;
mod disk;
mod engine;
mod error;
mod fault;
pub mod format;
mod index;
mod metrics;
mod recovery;
mod shared;
mod sys;
mod types;
mod wal;
mod writer;

pub use bytes::Bytes;
pub use config::{Backend, Notifier, SyncMode, WalConfig};
pub use error::WalError;
pub use fault::{
    Fault, FaultDisk, FaultError, FaultOperation, FaultSpecError, Faults, FAULT_SPEC_GRAMMAR,
    SECTOR_BYTES,
};
pub use metrics::Metrics;
pub use recovery::{Damage, Recovery};
pub use types::{Completion, Durable, EntryId, HardState, StoredBatch};
pub use wal::Wal;
