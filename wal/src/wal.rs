//! The public handle: open, submit, wait, read, truncate, compact, shut down.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use parking_lot::{Condvar, Mutex};

use crate::config::{Backend, SyncMode, WalConfig};
use crate::disk::{context, Disk, OsDisk};
use crate::engine::{BlockingEngine, UringEngine, WriteEngine};
use crate::format::{
    parse_spare_name, spare_name, Kind, RecordHeader, BLOCK_BYTES, COMMIT_MIN_BYTES,
    HARD_STATE_BYTES, RECORD_HEADER_BYTES,
};
use crate::index::{BatchEntry, Index, Location};
use crate::recovery::{recover, Recovery};
use crate::shared::{Body, Limits, Op, Shared, Sleep, State};
use crate::sys::EventFd;
use crate::writer::{prepare_spare, Writer, WriterStart};
use crate::{Completion, Durable, EntryId, HardState, Metrics, StoredBatch, WalError};

/// A segmented write-ahead log with group commit. See the crate docs.
///
/// All methods take `&self` and may be called from any thread; submissions
/// are ordered by the calls' order on the internal lock.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    completions: Receiver<Completion>,
    writer: Option<JoinHandle<()>>,
    preparer: Option<JoinHandle<()>>,
    prepare: Option<crossbeam_channel::Sender<()>>,
    backend_name: &'static str,
}

fn engine_for(
    config: &WalConfig,
    disk: &Arc<dyn Disk>,
) -> (Box<dyn WriteEngine>, Option<EventFd>, &'static str) {
    let sync = config.sync == SyncMode::Fdatasync;
    if !sync {
        tracing::warn!("UNSAFE: the log does not fdatasync group writes (measurement only)");
    }
    if let (Backend::Uring, Some(dir)) = (&config.backend, disk.os_dir()) {
        let probe = dir.join("direct-probe.tmp");
        let attempt = std::fs::File::create(&probe)
            .and_then(|_| crate::sys::open_direct(&probe))
            .and_then(|_| UringEngine::new(dir, config.inflight_writes_max, sync))
            .and_then(|engine| EventFd::new().map(|event| (engine, event)));
        let _ = std::fs::remove_file(&probe);
        match attempt {
            Ok((engine, event)) => return (Box::new(engine), Some(event), "io_uring"),
            Err(error) => tracing::warn!(
                %error,
                "io_uring with O_DIRECT unavailable; using the blocking pwrite backend"
            ),
        }
    }
    let (inflight_max, name) = match config.backend {
        Backend::Fault(_) => (config.inflight_writes_max, "fault"),
        Backend::Uring | Backend::Blocking => (1, "blocking"),
        Backend::FaultyBlocking(_) => (1, "faulty blocking"),
    };
    let engine = BlockingEngine::new(Arc::clone(disk), inflight_max, sync);
    (Box::new(engine), None, name)
}

impl Wal {
    /// Opens (or creates) the log in `dir` and recovers it.
    ///
    /// Spawns the log thread `barge-wal` and the segment-preparation thread
    /// `barge-wal-prep`.
    ///
    /// # Errors
    /// [`WalError::Io`] / [`WalError::NoSpace`]: the directory or a file
    /// could not be read or written. [`WalError::Corrupt`]: a file is not a
    /// segment this crate can read at all. [`WalError::Invalid`]: the
    /// configuration is unusable. Damage that recovery can bound is not an
    /// error: see [`Recovery::damaged`].
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<(Wal, Recovery), WalError> {
        let dir = dir.as_ref();
        let segment_bytes = config.segment_bytes.max(64 << 10).div_ceil(4096) * 4096;
        let write_bytes_max = config.write_bytes_max.max(4 * BLOCK_BYTES).div_ceil(4096) * 4096;
        // A batch must fit one write after the segment prologue and before
        // the commit record, and leave the seal block free.
        let prologue = BLOCK_BYTES + 2 * RECORD_HEADER_BYTES + HARD_STATE_BYTES;
        let room = write_bytes_max.min(segment_bytes as usize - BLOCK_BYTES);
        let payload_bytes_max = room - prologue - RECORD_HEADER_BYTES - COMMIT_MIN_BYTES;
        if config.queued_bytes_max == 0 || config.completion_queue_max == 0 {
            return Err(WalError::Invalid(
                "queued_bytes_max and completion_queue_max must be > 0".into(),
            ));
        }
        let disk: Arc<dyn Disk> = match &config.backend {
            Backend::Fault(fault) => Arc::new(fault.clone()),
            Backend::Uring | Backend::Blocking => Arc::new(OsDisk::open(dir, None)?),
            Backend::FaultyBlocking(faults) => Arc::new(OsDisk::open(dir, Some(faults.clone()))?),
        };
        let recovered = recover(&*disk)?;
        let (engine, event, backend_name) = engine_for(&config, &disk);
        let spare_counter = recovered
            .spares
            .iter()
            .filter_map(|name| parse_spare_name(name))
            .map(|number| number & !(1 << 63))
            .max()
            .unwrap_or(0);
        let mut index = Index::default();
        for batch in recovered.batches {
            index.push(batch);
        }
        let report = recovered.report.clone();
        let last = report.last;
        let (sender, receiver) = crossbeam_channel::bounded(config.completion_queue_max);
        let state = State {
            queue: Default::default(),
            queued_bytes: 0,
            next_sequence: 0,
            index,
            next_index: report.next_index,
            last,
            durable: Durable { sequence: 0, last },
            poisoned: None,
            shutdown: false,
            writer_exited: false,
            writer_sleep: Sleep::Awake,
            segments: recovered.segments,
            active_sequence: recovered.active.as_ref().map(|active| active.sequence),
            damaged: report.damaged.clone(),
            spares: recovered.spares,
            spare_counter,
            durable_waiters: 0,
            space_waiters: 0,
            spares_preparing: 0,
            truncated_sequence: 0,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            writer_wake: Condvar::new(),
            space: Condvar::new(),
            durable_changed: Condvar::new(),
            event,
            counters: Default::default(),
            completions: sender,
            completions_drain: receiver.clone(),
            notifier: config.notifier,
            disk: Arc::clone(&disk),
            limits: Limits {
                segment_bytes,
                queued_bytes_max: config.queued_bytes_max,
                write_bytes_max,
                tail_cache_bytes_max: config.tail_cache_bytes_max,
                spare_segments_max: config.spare_segments_max,
                payload_bytes_max,
                idle_spin: std::time::Duration::from_micros(config.idle_spin_micros.min(10_000)),
            },
            submitted: std::sync::atomic::AtomicU64::new(0),
        });
        let (prepare, prepare_requests) = crossbeam_channel::bounded::<()>(4);
        let start = WriterStart {
            active: recovered.active,
            next_index: report.next_index,
            last,
            hard_state: report.hard_state,
            sequence_max: recovered.sequence_max,
        };
        let writer = Writer::new(Arc::clone(&shared), engine, start, prepare.clone());
        let writer = std::thread::Builder::new()
            .name("barge-wal".into())
            .spawn(move || writer.run())
            .map_err(|source| WalError::io(dir, source))?;
        let preparer_shared = Arc::clone(&shared);
        let preparer = std::thread::Builder::new()
            .name("barge-wal-prep".into())
            .spawn(move || prepare_loop(&preparer_shared, &prepare_requests))
            .map_err(|source| WalError::io(dir, source))?;
        let _ = prepare.try_send(());
        let wal = Wal {
            shared,
            completions: receiver,
            writer: Some(writer),
            preparer: Some(preparer),
            prepare: Some(prepare),
            backend_name,
        };
        Ok((wal, report))
    }

    /// Locks the state for a submission, applying backpressure for
    /// `bytes`, and fails if the log cannot accept writes.
    fn admit(&self, bytes: usize) -> Result<parking_lot::MutexGuard<'_, State>, WalError> {
        let mut state = self.shared.state.lock();
        loop {
            if let Some(cause) = &state.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if state.shutdown || state.writer_exited {
                return Err(WalError::Shutdown);
            }
            let queued = state.queued_bytes;
            if queued == 0 || queued + bytes <= self.shared.limits.queued_bytes_max {
                return Ok(state);
            }
            state.space_waiters += 1;
            self.shared.space.wait(&mut state);
            state.space_waiters -= 1;
        }
    }

    fn push(&self, state: &mut State, body: Body, queued_bytes: usize) -> u64 {
        state.next_sequence += 1;
        let sequence = state.next_sequence;
        state.queued_bytes += queued_bytes;
        self.shared
            .submitted
            .store(sequence, std::sync::atomic::Ordering::Release);
        state.queue.push_back(Op {
            sequence,
            body,
            last_after: state.last,
            queued_bytes,
        });
        self.shared.wake_writer(state);
        sequence
    }

    /// Submits a batch holding entries `first..=last` of `term`. Returns its
    /// sequence number; durability is reported through [`Wal::completions`]
    /// (and [`Wal::wait_durable`]).
    ///
    /// Blocks only while more than `queued_bytes_max` bytes are queued.
    ///
    /// # Errors
    /// [`WalError::NotContiguous`] if `first` is not the next index;
    /// [`WalError::Invalid`] for `last < first`, a term below the last
    /// entry's, or a payload above the size one write can hold;
    /// [`WalError::Poisoned`] / [`WalError::Shutdown`].
    pub fn append(
        &self,
        first: u64,
        last: u64,
        term: u64,
        payload: Bytes,
    ) -> Result<u64, WalError> {
        if last < first {
            return Err(WalError::Invalid(format!(
                "batch {first}..={last} is empty"
            )));
        }
        if payload.len() > self.shared.limits.payload_bytes_max {
            return Err(WalError::Invalid(format!(
                "batch payload of {} bytes exceeds the {} bytes one write holds",
                payload.len(),
                self.shared.limits.payload_bytes_max
            )));
        }
        let mut state = self.admit(payload.len())?;
        if let Some(expected) = state.next_index {
            if expected != first {
                return Err(WalError::NotContiguous {
                    expected,
                    first,
                    last,
                });
            }
        }
        if let Some(previous) = state.last {
            if term < previous.term {
                return Err(WalError::Invalid(format!(
                    "term {term} is below the last entry's term {}",
                    previous.term
                )));
            }
        }
        let sequence_next = state.next_sequence + 1;
        state.index.push(BatchEntry {
            first,
            last,
            term,
            sequence: sequence_next,
            payload_len: payload.len() as u32,
            location: None,
            cached: Some(payload.clone()),
        });
        state.next_index = Some(last + 1);
        state.last = Some(EntryId { term, index: last });
        let bytes = payload.len();
        Ok(self.push(
            &mut state,
            Body::Append {
                first,
                last,
                term,
                payload,
            },
            bytes,
        ))
    }

    /// Submits a hard state; durable (in order with appends) when a
    /// completion covers the returned sequence number.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] / [`WalError::Shutdown`].
    pub fn save_hard_state(&self, hard_state: HardState) -> Result<u64, WalError> {
        let mut state = self.admit(0)?;
        Ok(self.push(&mut state, Body::HardState(hard_state), 0))
    }

    /// Removes every entry at index `from` and above (Raft conflict
    /// truncation). A batch straddling `from` stays, read back with an
    /// effective last index of `from - 1`. Reads see the truncation at once;
    /// it is durable when a completion covers the returned sequence number.
    /// The next append must start at `from`.
    ///
    /// # Errors
    /// [`WalError::Invalid`] if `from` is beyond the next index;
    /// [`WalError::Poisoned`] / [`WalError::Shutdown`].
    pub fn truncate_suffix(&self, from: u64) -> Result<u64, WalError> {
        let mut state = self.admit(0)?;
        if let Some(next) = state.next_index {
            if from > next {
                return Err(WalError::Invalid(format!(
                    "truncate from {from} is beyond the next index {next}"
                )));
            }
        }
        state.index.truncate(from);
        let last = from.checked_sub(1).and_then(|last| {
            state.index.find(last).map(|position| EntryId {
                term: state.index.entries[position].term,
                index: last,
            })
        });
        state.last = last;
        state.next_index = Some(from);
        crate::recovery::clamp_damage(&mut state.damaged, from);
        let sequence = self.push(&mut state, Body::Truncate { from }, 0);
        state.truncated_sequence = sequence;
        Ok(sequence)
    }

    /// Blocks until every submission up to `sequence` is durable.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if the log failed first (the submission may or
    /// may not be on disk); [`WalError::Shutdown`] if the log thread exited.
    pub fn wait_durable(&self, sequence: u64) -> Result<Durable, WalError> {
        let mut state = self.shared.state.lock();
        state.durable_waiters += 1;
        let result = loop {
            if state.durable.sequence >= sequence {
                break Ok(state.durable);
            }
            if let Some(cause) = &state.poisoned {
                break Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if state.writer_exited {
                break Err(WalError::Shutdown);
            }
            self.shared.durable_changed.wait(&mut state);
        };
        state.durable_waiters -= 1;
        result
    }

    /// [`Wal::append`] then [`Wal::wait_durable`], for tests and tools.
    ///
    /// # Errors
    /// As both.
    pub fn append_and_wait(
        &self,
        first: u64,
        last: u64,
        term: u64,
        payload: Bytes,
    ) -> Result<Durable, WalError> {
        let sequence = self.append(first, last, term, payload)?;
        self.wait_durable(sequence)
    }

    /// Blocks until everything submitted so far is durable.
    ///
    /// # Errors
    /// As [`Wal::wait_durable`].
    pub fn sync(&self) -> Result<Durable, WalError> {
        let sequence = self.shared.state.lock().next_sequence;
        self.wait_durable(sequence)
    }

    /// The completion channel (cumulative "durable up to" reports). Every
    /// clone receives from the same queue.
    pub fn completions(&self) -> Receiver<Completion> {
        self.completions.clone()
    }

    /// The latest durability reached.
    pub fn durable(&self) -> Durable {
        self.shared.state.lock().durable
    }

    /// Last entry of the log, including entries not yet durable.
    pub fn last(&self) -> Option<EntryId> {
        self.shared.state.lock().last
    }

    /// First stored entry index.
    pub fn first_index(&self) -> Option<u64> {
        self.shared
            .state
            .lock()
            .index
            .entries
            .front()
            .map(|entry| entry.first)
    }

    /// The write engine in use: `"io_uring"`, `"blocking"` (also after a
    /// fallback from io_uring) or `"fault"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// Counters; reading them takes no lock.
    pub fn metrics(&self) -> Metrics {
        self.shared.counters.snapshot()
    }

    /// Reads the batches holding indices from `range.start()`, in order,
    /// stopping after `range.end()` or once `bytes_max` payload bytes are
    /// collected (at least one batch is always returned). Recent batches
    /// come from memory, older ones from the segments.
    ///
    /// # Errors
    /// [`WalError::Compacted`] / [`WalError::Unavailable`] if the start is
    /// not stored; [`WalError::Damaged`] if it lies in a range recovery found
    /// damaged; [`WalError::ChecksumMismatch`] if a record read back fails its
    /// CRC; [`WalError::Io`] on a read error.
    pub fn read(
        &self,
        range: RangeInclusive<u64>,
        bytes_max: usize,
    ) -> Result<Vec<StoredBatch>, WalError> {
        let (start, end) = (*range.start(), *range.end());
        if end < start {
            return Err(WalError::Invalid(format!(
                "empty read range {start}..={end}"
            )));
        }
        let mut pending: Vec<(StoredBatch, Option<DiskSource>)> = Vec::new();
        {
            let state = self.shared.state.lock();
            let Some(mut position) = state.index.find(start) else {
                return Err(missing(&state, start));
            };
            let mut bytes = 0usize;
            let mut expected = start;
            while let Some(entry) = state.index.entries.get(position) {
                if entry.first > end || (entry.first > expected && !pending.is_empty()) {
                    break;
                }
                let batch = StoredBatch {
                    first: entry.first,
                    last: entry.last,
                    term: entry.term,
                    payload: entry.cached.clone().unwrap_or_default(),
                };
                let source = match (&entry.cached, entry.location) {
                    (Some(_), _) => None,
                    (None, Some(location)) => {
                        let Some(segment) = state.segments.get(&location.segment) else {
                            return Err(WalError::Compacted {
                                index: entry.first,
                                first: start,
                            });
                        };
                        Some(DiskSource {
                            name: segment.name.clone(),
                            location,
                            payload_len: entry.payload_len,
                        })
                    }
                    (None, None) => None,
                };
                pending.push((batch, source));
                bytes += entry.payload_len as usize;
                expected = entry.last + 1;
                position += 1;
                if bytes >= bytes_max {
                    break;
                }
            }
        }
        let disk = &*self.shared.disk;
        let mut batches = Vec::with_capacity(pending.len());
        for (mut batch, source) in pending {
            if let Some(DiskSource {
                name,
                location,
                payload_len,
            }) = source
            {
                let mut record = vec![0u8; RECORD_HEADER_BYTES + payload_len as usize];
                context(
                    disk,
                    &name,
                    disk.read_at(&name, location.offset, &mut record),
                )?;
                let mismatch = || WalError::ChecksumMismatch {
                    path: disk.path(&name),
                    offset: location.offset,
                    first: batch.first,
                };
                let header = RecordHeader::decode(&record).map_err(|_| mismatch())?;
                let payload = &record[RECORD_HEADER_BYTES..];
                if header.kind != Kind::Batch
                    || header.first != batch.first
                    || header.payload_len != payload_len
                    || crc32c::crc32c(payload) != header.payload_crc
                {
                    return Err(mismatch());
                }
                batch.payload = Bytes::copy_from_slice(payload);
            }
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Removes whole segments whose entries are all below `below` (never
    /// the segment being written), oldest first, syncing the directory after
    /// each. Retired files become spares (up to `spare_segments_max`) or are
    /// deleted. Returns the number of segments removed.
    ///
    /// # Errors
    /// [`WalError::Io`] if a rename, removal or directory sync fails (the
    /// log stays usable; a segment that could not be removed reappears
    /// harmlessly at the next open); [`WalError::Poisoned`] or
    /// [`WalError::Shutdown`] from the sync it starts with.
    ///
    /// First waits until everything submitted is durable, and removes
    /// nothing if a truncation submitted meanwhile is not yet durable.
    pub fn compact(&self, below: u64) -> Result<usize, WalError> {
        // Decide on durable contents only: removing a segment because a
        // truncation made its entries dead is wrong if that truncation is
        // then lost in a crash (the log would come back with a hole).
        self.sync()?;
        let retired: Vec<(u64, String)> = {
            let mut state = self.shared.state.lock();
            if state.truncated_sequence > state.durable.sequence {
                return Ok(0);
            }
            let keep_from = match state.index.entries.iter().find(|entry| entry.last >= below) {
                Some(entry) => entry.location.map(|location| location.segment),
                None => None,
            };
            let active = state.active_sequence.unwrap_or(u64::MAX);
            let limit = keep_from.unwrap_or(active).min(active);
            let retired: Vec<(u64, String)> = state
                .segments
                .range(..limit)
                .map(|(sequence, meta)| (*sequence, meta.name.clone()))
                .collect();
            for (sequence, _) in &retired {
                state.segments.remove(sequence);
            }
            state.index.pop_front_while(|entry| {
                entry
                    .location
                    .is_some_and(|location| location.segment < limit)
            });
            retired
        };
        let disk = &*self.shared.disk;
        for (_, name) in &retired {
            let recycle = {
                let mut state = self.shared.state.lock();
                let kept = state.spares.len() + state.spares_preparing;
                if kept < self.shared.limits.spare_segments_max {
                    state.spare_counter += 1;
                    Some(spare_name(state.spare_counter))
                } else {
                    None
                }
            };
            match &recycle {
                Some(spare) => context(disk, name, disk.rename(name, spare))?,
                None => context(disk, name, disk.remove(name))?,
            }
            context(disk, "", disk.sync_dir())?;
            if let Some(spare) = recycle {
                self.shared.state.lock().spares.push(spare);
            }
        }
        Ok(retired.len())
    }

    /// Drains everything submitted, syncs it, writes a final commit record
    /// (so the next open knows every record is synced) and joins the
    /// threads.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if a write failed before or during shutdown.
    pub fn shutdown(mut self) -> Result<(), WalError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), WalError> {
        {
            let mut state = self.shared.state.lock();
            state.shutdown = true;
            self.shared.wake_writer(&mut state);
            // The writer may be sleeping in a way wake_writer already
            // cleared; a spare notify is harmless.
            self.shared.writer_wake.notify_one();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.prepare = None;
        if let Some(preparer) = self.preparer.take() {
            let _ = preparer.join();
        }
        let state = self.shared.state.lock();
        match &state.poisoned {
            Some(cause) => Err(WalError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.stop();
        }
    }
}

/// Where a read finds a batch that is no longer cached.
#[derive(Debug)]
struct DiskSource {
    name: String,
    location: Location,
    payload_len: u32,
}

fn missing(state: &State, index: u64) -> WalError {
    for damage in &state.damaged {
        if let Some(first) = damage.first {
            // An unbounded damage runs to the end of what recovery found.
            let last = damage.last.unwrap_or(u64::MAX);
            if (first..=last).contains(&index) {
                return WalError::Damaged { first, last };
            }
        }
    }
    match state.index.entries.front() {
        Some(front) if index < front.first => WalError::Compacted {
            index,
            first: front.first,
        },
        _ => WalError::Unavailable {
            index,
            last: state.last.map(|last| last.index),
        },
    }
}

/// The preparation thread: keeps one spare segment ready.
fn prepare_loop(shared: &Shared, requests: &Receiver<()>) {
    while requests.recv().is_ok() {
        let number = {
            let mut state = shared.state.lock();
            if !state.spares.is_empty() || state.spares_preparing > 0 || state.shutdown {
                continue;
            }
            state.spare_counter += 1;
            state.spares_preparing += 1;
            state.spare_counter
        };
        let prepared = prepare_spare(&*shared.disk, shared.limits.segment_bytes, number);
        let mut state = shared.state.lock();
        state.spares_preparing -= 1;
        match prepared {
            Ok(name) => {
                let counter = &shared.counters.spares_zero_filled;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                state.spares.push(name);
            }
            Err(error) => tracing::warn!(%error, "could not prepare a spare segment"),
        }
    }
}
