//! `barge-wal`: a segmented write-ahead log on io_uring with group fsync.
//!
//! The log stores opaque batch bytes under `(first index, last index, term)`
//! and a small hard-state record. It knows nothing of Raft.
