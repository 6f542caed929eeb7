//! The `barge-snapshot` thread: makes a snapshot the core already holds
//! durable, then compacts the log below it, while the Raft thread keeps
//! ticking, replicating and answering peers.
//!
//! Writing the snapshot file costs two fsyncs (file and directory) and a
//! rename; compaction waits for the log's next group sync and renames or
//! removes whole segments, each followed by a directory fsync. On the Raft
//! thread, at the default thresholds and a few hundred thousand entries per
//! second, that stalled the loop several times a second, long enough under
//! load to miss heartbeats.
//!
//! Ordering and crash safety are those of the synchronous code it replaces:
//!
//! - The job writes the file (temporary file, fsync, rename, directory
//!   fsync) *before* it compacts, and compacts only if the write succeeded:
//!   the log never loses entries that no durable snapshot covers. A crash
//!   in between leaves the old snapshot and the whole log, or the new
//!   snapshot and the whole log; recovery accepts both.
//! - At most one job is in flight. The driver does not take a newer
//!   snapshot while one is being written: it remembers the core's request
//!   and takes it when the job is done (the core asks once until answered,
//!   so requests coalesce by themselves).
//! - Installing a leader's snapshot writes the same file, so the driver
//!   waits for the job in flight first ([`SnapshotWorker::wait`]); the older
//!   local snapshot can then never overwrite the newer installed one.
//! - The worker holds a reference to the log only while a job runs and
//!   drops it before reporting, so after a report the driver owns the log
//!   alone again (to replace it, or to close it at shutdown).
//!
//! The outcome comes back over a channel, followed by a call to the same
//! wake-up the log's completions use, so the Raft loop picks it up on its
//! next iteration.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use barge_wal::Wal;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::error::NodeError;
use super::storage;
use crate::core::{LogIndex, Snapshot};

/// A snapshot to make durable, and the log to compact below it.
struct Job {
    snapshot: Snapshot,
    wal: Arc<Wal>,
}

/// The Raft thread's handle on the `barge-snapshot` thread.
pub(super) struct SnapshotWorker {
    /// `None` once stopping.
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Result<LogIndex, NodeError>>,
    thread: Option<JoinHandle<()>>,
    /// Last index of the snapshot being written, if any.
    in_flight: Option<LogIndex>,
}

impl SnapshotWorker {
    /// Spawns the `barge-snapshot` thread. `wake` is called after every
    /// outcome is queued.
    ///
    /// # Errors
    /// The operating system refused the thread.
    pub(super) fn start(
        data_dir: PathBuf,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<SnapshotWorker> {
        // One job in flight at most, so one slot each way: sends never wait.
        let (jobs, job_receiver) = crossbeam_channel::bounded::<Job>(1);
        let (outcome_sender, outcomes) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("barge-snapshot".to_owned())
            .spawn(move || {
                for job in job_receiver {
                    let outcome = persist(&data_dir, job);
                    if outcome_sender.send(outcome).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(SnapshotWorker {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            in_flight: None,
        })
    }

    /// Whether a job is in flight (a new one must wait).
    pub(super) fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Hands `snapshot` to the thread: it writes the snapshot file, then
    /// compacts `wal` below the snapshot's last index.
    ///
    /// # Errors
    /// [`NodeError::Storage`] if the thread has stopped.
    ///
    /// # Panics
    /// If a job is already in flight (the driver checks [`Self::is_busy`]).
    pub(super) fn submit(&mut self, snapshot: Snapshot, wal: Arc<Wal>) -> Result<(), NodeError> {
        assert!(
            self.in_flight.is_none(),
            "snapshot job submitted while the one for {:?} is in flight",
            self.in_flight
        );
        let last = snapshot.meta.last.index;
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        // The slot is free: the previous job's outcome was taken, and the
        // thread takes a job before producing its outcome.
        jobs.try_send(Job { snapshot, wal })
            .map_err(|_| stopped())?;
        self.in_flight = Some(last);
        Ok(())
    }

    /// The outcome of the job in flight, if it has finished: the snapshot's
    /// last index once it is durable and the log compacted below it.
    /// Never blocks.
    pub(super) fn try_finish(&mut self) -> Option<Result<LogIndex, NodeError>> {
        self.in_flight?;
        let outcome = match self.outcomes.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(stopped()),
        };
        self.in_flight = None;
        Some(outcome)
    }

    /// Blocks until the job in flight (if any) has finished, and returns
    /// its outcome.
    pub(super) fn wait(&mut self) -> Option<Result<LogIndex, NodeError>> {
        self.in_flight?;
        let outcome = self.outcomes.recv().unwrap_or_else(|_| Err(stopped()));
        self.in_flight = None;
        Some(outcome)
    }
}

impl Drop for SnapshotWorker {
    /// Lets the job in flight finish (its snapshot becomes durable or
    /// fails), then joins the thread.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> NodeError {
    NodeError::Storage("the barge-snapshot thread stopped".to_owned())
}

/// Writes the snapshot durably, then compacts. Consumes the job so the log
/// reference is dropped before the outcome is reported.
fn persist(data_dir: &std::path::Path, job: Job) -> Result<LogIndex, NodeError> {
    let last = job.snapshot.meta.last.index;
    storage::write_snapshot(data_dir, &job.snapshot)
        .map_err(|error| NodeError::Storage(error.to_string()))?;
    // Compaction removes only what the durable snapshot covers. A failure
    // leaves extra segments, harmless, so it is logged rather than fatal.
    if let Err(error) = job.wal.compact(last.0 + 1) {
        tracing::warn!(%error, up_to = last.0, "log compaction failed");
    }
    Ok(last)
}
