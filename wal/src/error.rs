//! The log's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the log.
///
/// At open time, [`WalError::Io`] means the disk or file system refused an
/// operation (retrying may help); [`WalError::Corrupt`] means the bytes on
/// disk cannot be a log this crate wrote (retrying will not help). Damage
/// inside records that recovery can bound is not an error: it is listed in
/// [`crate::Recovery::damaged`].
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system error on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory the operation touched.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: std::io::Error,
    },
    /// The disk is full. The log stays readable.
    #[error("no space left on device writing {path}")]
    NoSpace {
        /// File being written.
        path: PathBuf,
    },
    /// Bytes on disk are not a valid log and recovery cannot bound the damage.
    #[error("corrupt log file {path} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write or sync failed; the log accepts no more writes
    /// (fsyncgate: a failed fsync is never retried).
    #[error("log is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The original error, rendered.
        cause: String,
    },
    /// The log has been shut down.
    #[error("log is shut down")]
    Shutdown,
    /// An append did not continue the log.
    #[error("batch {first}..={last} does not continue the log (next index is {expected})")]
    NotContiguous {
        /// The index the log expected.
        expected: u64,
        /// First index of the rejected batch.
        first: u64,
        /// Last index of the rejected batch.
        last: u64,
    },
    /// A caller-supplied argument is invalid (empty range, term going
    /// backwards, batch larger than a segment, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The requested index is below the first stored index.
    #[error("index {index} is compacted (first stored index is {first})")]
    Compacted {
        /// Requested index.
        index: u64,
        /// First index still stored.
        first: u64,
    },
    /// The requested index is above the last stored index.
    #[error("index {index} is beyond the last stored index {last:?}")]
    Unavailable {
        /// Requested index.
        index: u64,
        /// Last index stored, if any.
        last: Option<u64>,
    },
    /// The requested entries were found damaged at open; fetch them again
    /// from a peer.
    #[error("entries {first}..={last} are damaged on disk")]
    Damaged {
        /// First damaged index.
        first: u64,
        /// Last damaged index (`u64::MAX`: the damage runs to the end of
        /// what recovery found).
        last: u64,
    },
    /// A stored record failed its checksum when read back after open.
    #[error("checksum mismatch reading {path} at offset {offset} (entries from {first})")]
    ChecksumMismatch {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// First index of the batch.
        first: u64,
    },
}

impl WalError {
    /// Builds an [`WalError::Io`], or [`WalError::NoSpace`] for ENOSPC.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            WalError::NoSpace { path }
        } else {
            WalError::Io { path, source }
        }
    }

    /// True for [`WalError::NoSpace`] and for a log poisoned by ENOSPC.
    pub fn is_no_space(&self) -> bool {
        match self {
            WalError::NoSpace { .. } => true,
            WalError::Poisoned { cause } => cause.starts_with("no space left"),
            _ => false,
        }
    }
}
