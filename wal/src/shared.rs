//! State shared between the callers' threads and the log thread.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::config::Notifier;
use crate::disk::Disk;
use crate::index::Index;
use crate::metrics::Counters;
use crate::recovery::{Damage, SegmentMeta};
use crate::sys::EventFd;
use crate::{Completion, Durable, EntryId, HardState};

/// What a submission asks the log thread to write.
#[derive(Debug)]
pub(crate) enum Body {
    Append {
        first: u64,
        last: u64,
        term: u64,
        payload: Bytes,
    },
    HardState(HardState),
    Truncate {
        from: u64,
    },
}

/// One submission, in sequence order.
#[derive(Debug)]
pub(crate) struct Op {
    pub sequence: u64,
    pub body: Body,
    /// The log's last entry once this op applies (for `Durable::last`).
    pub last_after: Option<EntryId>,
    /// Bytes counted against `queued_bytes_max`.
    pub queued_bytes: usize,
}

impl Op {
    pub(crate) fn payload_len(&self) -> usize {
        match &self.body {
            Body::Append { payload, .. } => payload.len(),
            Body::HardState(_) => crate::format::HARD_STATE_BYTES,
            Body::Truncate { .. } => 0,
        }
    }
}

/// How the log thread is waiting, so a submitter knows how to wake it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    Awake,
    Condvar,
    Ring,
}

/// Bounds derived from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub segment_bytes: u64,
    pub queued_bytes_max: usize,
    pub write_bytes_max: usize,
    pub tail_cache_bytes_max: usize,
    pub spare_segments_max: usize,
    /// Largest batch payload that fits one write and one segment.
    pub payload_bytes_max: usize,
    /// How long the idle log thread polls for a new submission right after
    /// completing a group, before it sleeps.
    pub idle_spin: std::time::Duration,
}

/// Everything behind the one lock.
///
/// Invariants: `durable.sequence <= next_sequence`; `queued_bytes` is the sum
/// of `queued_bytes` of ops submitted and not yet durable (or failed).
#[derive(Debug)]
pub(crate) struct State {
    pub queue: VecDeque<Op>,
    pub queued_bytes: usize,
    /// Last sequence number handed out.
    pub next_sequence: u64,
    pub index: Index,
    /// Index the next append must start at (`None`: any).
    pub next_index: Option<u64>,
    pub last: Option<EntryId>,
    pub durable: Durable,
    pub poisoned: Option<String>,
    pub shutdown: bool,
    /// The log thread has exited.
    pub writer_exited: bool,
    pub writer_sleep: Sleep,
    pub segments: BTreeMap<u64, SegmentMeta>,
    pub active_sequence: Option<u64>,
    pub damaged: Vec<Damage>,
    /// Ready spare files.
    pub spares: Vec<String>,
    /// Spares being prepared or kept (counts toward `spare_segments_max`).
    pub spare_counter: u64,
    pub durable_waiters: usize,
    /// Spares the preparation thread is zero-filling right now.
    pub spares_preparing: usize,
    /// Appenders blocked on `space`.
    pub space_waiters: usize,
    /// Sequence number of the latest truncation submitted.
    pub truncated_sequence: u64,
}

/// The shared half of the log.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The log thread waits here when idle.
    pub writer_wake: Condvar,
    /// Appenders wait here for queue space.
    pub space: Condvar,
    /// `wait_durable` waits here.
    pub durable_changed: Condvar,
    pub event: Option<EventFd>,
    pub counters: Counters,
    pub completions: Sender<Completion>,
    /// Kept so the log thread can drop the oldest completion when full.
    pub completions_drain: Receiver<Completion>,
    pub notifier: Option<Notifier>,
    pub disk: Arc<dyn Disk>,
    pub limits: Limits,
    /// Submissions so far; read without the lock by the idle spin.
    pub submitted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shared")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Shared {
    /// Wakes the log thread if it sleeps (call with the state locked).
    pub(crate) fn wake_writer(&self, state: &mut State) {
        match state.writer_sleep {
            Sleep::Awake => {}
            Sleep::Condvar => {
                self.writer_wake.notify_one();
            }
            Sleep::Ring => {
                if let Some(event) = &self.event {
                    event.signal();
                }
            }
        }
        state.writer_sleep = Sleep::Awake;
    }

    /// Pushes a completion, dropping the oldest if the channel is full, then
    /// runs the notifier.
    pub(crate) fn complete(&self, completion: Completion) {
        let mut completion = completion;
        for _ in 0..2 {
            match self.completions.try_send(completion) {
                Ok(()) => break,
                Err(crossbeam_channel::TrySendError::Full(back)) => {
                    // Completions are cumulative: the newest supersedes.
                    let _ = self.completions_drain.try_recv();
                    completion = back;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => break,
            }
        }
        if let Some(notifier) = &self.notifier {
            notifier();
        }
    }

    /// Poisons the log (fsyncgate): wakes every waiter with the error.
    pub(crate) fn poison(&self, cause: String) {
        if self.state.lock().poisoned.is_some() {
            return;
        }
        tracing::error!(%cause, "write-ahead log poisoned");
        // Completion first, so whoever sees the poisoned state can also find
        // the report on the channel.
        self.complete(Completion::Poisoned(cause.clone()));
        let mut state = self.state.lock();
        state.poisoned = Some(cause);
        self.space.notify_all();
        self.durable_changed.notify_all();
    }
}

/// A random nonzero incarnation.
pub(crate) fn random_incarnation(seed: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u64(seed);
    hasher.finish().max(1)
}
