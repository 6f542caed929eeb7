//! The log thread: group commit, segment rolls and completions.
//!
//! Each loop turn it reaps finished writes, takes everything queued, and
//! while fewer than `inflight_max` writes are in flight encodes as many ops
//! as fit into one block-aligned buffer closed by a commit record, and
//! submits it as one write followed by one data sync. Groups complete in
//! submission order, so "durable up to" only moves forward.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::disk::context;
use crate::engine::{Finished, WriteEngine};
use crate::format::{
    commit_record_bytes, encode_hard_state, segment_name, spare_name, Kind, RecordHeader,
    SegmentHeader, BLOCK_BYTES, COMMIT_MIN_BYTES, RECORD_HEADER_BYTES,
};
use crate::index::Location;
use crate::recovery::{encode_commit, Active, SegmentMeta, COMMIT_SEAL};
use crate::shared::{random_incarnation, Body, Op, Shared, Sleep};
use crate::sys::AlignedBuf;
use crate::{Completion, Durable, EntryId, HardState, WalError};

/// A group write in flight.
#[derive(Debug)]
struct Group {
    token: u64,
    done: Option<Finished>,
    segment: u64,
    end: u64,
    sequence_max: Option<u64>,
    last: Option<EntryId>,
    batches: u64,
    queued_bytes: usize,
    /// (first index, sequence, offset) of each batch in the group.
    placements: Vec<(u64, u64, u64)>,
}

/// What the log thread starts from.
#[derive(Debug)]
pub(crate) struct WriterStart {
    pub active: Option<Active>,
    pub next_index: Option<u64>,
    pub last: Option<EntryId>,
    pub hard_state: HardState,
    pub sequence_max: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    engine: Box<dyn WriteEngine>,
    active: Option<Active>,
    /// When the last group completed (drives the idle spin).
    last_completion: Instant,
    /// The segment to continue in once the active one is drained.
    next_segment: Option<Active>,
    /// End of the last in-order durable group in the active segment.
    synced_upto: u64,
    /// Groups written since the last commit whose claim covers them all.
    unsealed_groups: bool,
    free_buffers: Vec<AlignedBuf>,
    inflight: VecDeque<Group>,
    next_token: u64,
    carry: VecDeque<Op>,
    next_index: Option<u64>,
    last: Option<EntryId>,
    hard_state: HardState,
    sequence_max: u64,
    prepare: crossbeam_channel::Sender<()>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("active", &self.active)
            .finish()
    }
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        engine: Box<dyn WriteEngine>,
        start: WriterStart,
        prepare: crossbeam_channel::Sender<()>,
    ) -> Writer {
        let synced_upto = start.active.as_ref().map_or(0, |active| active.position);
        Writer {
            shared,
            engine,
            active: start.active,
            next_segment: None,
            last_completion: Instant::now(),
            synced_upto,
            unsealed_groups: false,
            free_buffers: Vec::new(),
            inflight: VecDeque::new(),
            next_token: 1,
            carry: VecDeque::new(),
            next_index: start.next_index,
            last: start.last,
            hard_state: start.hard_state,
            sequence_max: start.sequence_max,
            prepare,
        }
    }

    /// Runs until shutdown (after draining) or the first failure.
    pub(crate) fn run(mut self) {
        let result = self.run_loop();
        if let Err(error) = result {
            self.shared.poison(error.to_string());
        }
        let mut state = self.shared.state.lock();
        state.writer_exited = true;
        self.shared.durable_changed.notify_all();
        self.shared.space.notify_all();
    }

    fn run_loop(&mut self) -> Result<(), WalError> {
        let mut finished = Vec::new();
        loop {
            let mut progressed = false;
            self.engine.reap(false, &mut finished)?;
            if !finished.is_empty() {
                progressed = true;
                self.complete(&mut finished)?;
            }
            let shutdown = {
                let mut state = self.shared.state.lock();
                state.writer_sleep = Sleep::Awake;
                if !state.queue.is_empty() {
                    progressed = true;
                    self.carry.extend(state.queue.drain(..));
                }
                state.shutdown
            };
            while !self.carry.is_empty() && self.engine.inflight() < self.engine.inflight_max() {
                if !self.submit_group()? {
                    break;
                }
                progressed = true;
            }
            if shutdown && self.carry.is_empty() && self.inflight.is_empty() {
                return self.close_on_shutdown();
            }
            if progressed {
                continue;
            }
            let mut state = self.shared.state.lock();
            if !state.queue.is_empty() || (state.shutdown && !shutdown) {
                continue;
            }
            if self.engine.inflight() > 0 {
                let event_armed = match &self.shared.event {
                    Some(event) => self.engine.arm_event(event),
                    None => false,
                };
                if event_armed {
                    state.writer_sleep = Sleep::Ring;
                }
                drop(state);
                self.engine.reap(true, &mut finished)?;
                if !finished.is_empty() {
                    self.complete(&mut finished)?;
                }
            } else {
                let spin = self.shared.limits.idle_spin;
                if !spin.is_zero() && self.last_completion.elapsed() < spin {
                    // Just completed a group: an appender woken by it
                    // usually submits again within microseconds. Polling
                    // briefly saves it a wake-up of this thread (bounded by
                    // `idle_spin_micros`).
                    drop(state);
                    let seen = self.shared.submitted.load(Ordering::Acquire);
                    let started = Instant::now();
                    while self.shared.submitted.load(Ordering::Acquire) == seen
                        && started.elapsed() < spin
                    {
                        std::hint::spin_loop();
                    }
                    self.last_completion = Instant::now() - spin;
                    continue;
                }
                state.writer_sleep = Sleep::Condvar;
                self.shared.writer_wake.wait(&mut state);
                state.writer_sleep = Sleep::Awake;
            }
        }
    }

    fn buffer(&mut self) -> AlignedBuf {
        let mut buf = self
            .free_buffers
            .pop()
            .unwrap_or_else(|| AlignedBuf::new(self.shared.limits.write_bytes_max));
        buf.clear();
        buf
    }

    /// Encodes one op at the end of `buf` and tracks what it changes.
    fn encode(&mut self, buf: &mut AlignedBuf, op: &Op, incarnation: u64) {
        match &op.body {
            Body::Append {
                first,
                last,
                term,
                payload,
            } => {
                write_record(buf, Kind::Batch, incarnation, *first, *last, *term, payload);
                self.next_index = Some(last + 1);
            }
            Body::HardState(state) => {
                let payload = encode_hard_state(state);
                write_record(buf, Kind::HardState, incarnation, 0, 0, 0, &payload);
                self.hard_state = *state;
            }
            Body::Truncate { from } => {
                write_record(buf, Kind::Truncate, incarnation, *from, 0, 0, &[]);
                self.next_index = Some(*from);
            }
        }
        self.last = op.last_after;
        self.sequence_max = self.sequence_max.max(op.sequence);
    }

    /// Forms and submits one group. Returns false if it must wait for the
    /// writes in flight first (segment roll).
    fn submit_group(&mut self) -> Result<bool, WalError> {
        let needs_roll = self.active.as_ref().is_none_or(|active| active.sealed);
        if needs_roll {
            if !self.inflight.is_empty() {
                return Ok(false);
            }
            self.roll()?;
        }
        // unwrap: roll() leaves an active segment.
        let active = self.active.clone().expect("active segment");
        let data_end = active.len - BLOCK_BYTES as u64;
        let mut buf = self.buffer();
        let start = active.position;
        if start == 0 {
            let header = SegmentHeader {
                incarnation: active.incarnation,
                sequence: active.sequence,
                first: self.next_index.unwrap_or(0),
            };
            header.encode_block(buf.extend_zeroed(BLOCK_BYTES));
            let hard_state = encode_hard_state(&self.hard_state);
            write_record(
                &mut buf,
                Kind::HardState,
                active.incarnation,
                0,
                0,
                0,
                &hard_state,
            );
            // An unknown next index means an empty log: the marker voids
            // nothing but states where the log starts, so recovery can bound
            // damage to the first batch.
            let first_append = self.carry.iter().find_map(|op| match op.body {
                Body::Append { first, .. } => Some(first),
                _ => None,
            });
            if let Some(from) = self.next_index.or(first_append) {
                write_record(
                    &mut buf,
                    Kind::Truncate,
                    active.incarnation,
                    from,
                    0,
                    0,
                    &[],
                );
            }
        }
        let mut group = Group {
            token: self.next_token,
            done: None,
            segment: active.sequence,
            end: 0,
            sequence_max: None,
            last: self.last,
            batches: 0,
            queued_bytes: 0,
            placements: Vec::new(),
        };
        self.next_token += 1;
        let mut segment_full = false;
        while let Some(op) = self.carry.front() {
            let record = RECORD_HEADER_BYTES + op.payload_len();
            let after = buf.len() + record + COMMIT_MIN_BYTES;
            if start + after as u64 > data_end {
                segment_full = true;
                break;
            }
            if after > buf.capacity() {
                break;
            }
            // unwrap: front() just returned Some.
            let op = self.carry.pop_front().expect("op present");
            let offset = start + buf.len() as u64;
            self.encode(&mut buf, &op, active.incarnation);
            if let Body::Append { first, .. } = op.body {
                group.placements.push((first, op.sequence, offset));
                group.batches += 1;
            }
            group.sequence_max = Some(op.sequence);
            group.last = op.last_after;
            group.queued_bytes += op.queued_bytes;
        }
        if group.sequence_max.is_none() && start != 0 {
            self.free_buffers.push(buf);
            if segment_full {
                if !self.inflight.is_empty() {
                    return Ok(false);
                }
                self.seal()?;
                return Ok(true);
            }
            return Ok(false);
        }
        let end = start + buf.len() as u64;
        let commit = commit_record_bytes(end) as usize;
        let record = buf.extend_zeroed(commit);
        // A full segment is sealed by its last group's own commit record,
        // saving a separate write and sync at the roll.
        let flags = if segment_full { COMMIT_SEAL } else { 0 };
        encode_commit(record, active.incarnation, commit, self.synced_upto, flags);
        group.end = start + buf.len() as u64;
        if let Some(active) = self.active.as_mut() {
            active.position = group.end;
            active.sealed = segment_full;
        }
        self.engine.submit(group.token, &active.name, start, buf)?;
        self.unsealed_groups = true;
        self.inflight.push_back(group);
        if segment_full {
            // Rename the next segment into place while the sealing write is
            // in flight; its first write still waits for the drain.
            self.prepare_next_segment()?;
        }
        Ok(true)
    }

    /// Handles finished writes; completes groups in submission order.
    fn complete(&mut self, finished: &mut Vec<Finished>) -> Result<(), WalError> {
        for done in finished.drain(..) {
            if let Some(group) = self
                .inflight
                .iter_mut()
                .find(|group| group.token == done.token)
            {
                group.done = Some(done);
            }
        }
        let mut durable: Option<Durable> = None;
        let mut placements = Vec::new();
        let mut released = 0usize;
        while self
            .inflight
            .front()
            .is_some_and(|group| group.done.is_some())
        {
            // unwrap: front() is Some and done.
            let mut group = self.inflight.pop_front().expect("group present");
            let done = group.done.take().expect("group done");
            done.result?;
            let bytes = done.buf.len() as u64;
            self.free_buffers.push(done.buf);
            let nanos = u64::try_from(done.elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .counters
                .record_group(bytes, group.batches, nanos, self.engine.syncs());
            if self
                .active
                .as_ref()
                .is_some_and(|active| active.sequence == group.segment)
            {
                self.synced_upto = group.end;
            }
            for (first, sequence, offset) in group.placements.drain(..) {
                placements.push((
                    first,
                    sequence,
                    Location {
                        segment: group.segment,
                        offset,
                    },
                ));
            }
            released += group.queued_bytes;
            if let Some(sequence) = group.sequence_max {
                durable = Some(Durable {
                    sequence,
                    last: group.last,
                });
            }
        }
        {
            let mut state = self.shared.state.lock();
            state.index.place_all(&placements);
            let cache_bytes_max = self.shared.limits.tail_cache_bytes_max;
            state.index.evict(cache_bytes_max);
            if released > 0 {
                state.queued_bytes -= released;
                if state.space_waiters > 0 {
                    self.shared.space.notify_all();
                }
            }
            if let Some(durable) = durable {
                state.durable = durable;
                if state.durable_waiters > 0 {
                    self.shared.durable_changed.notify_all();
                }
            }
        }
        if let Some(durable) = durable {
            self.shared.complete(Completion::Durable(durable));
            self.last_completion = Instant::now();
        }
        Ok(())
    }

    /// Writes one group and waits for it (seal and shutdown commit).
    fn write_alone(&mut self, flags: u64) -> Result<(), WalError> {
        let Some(active) = self.active.clone() else {
            return Ok(());
        };
        let mut buf = self.buffer();
        let size = commit_record_bytes(active.position) as usize;
        let record = buf.extend_zeroed(size);
        encode_commit(record, active.incarnation, size, active.position, flags);
        let started = Instant::now();
        let token = self.next_token;
        self.next_token += 1;
        self.engine
            .submit(token, &active.name, active.position, buf)?;
        let mut finished = Vec::new();
        while finished.is_empty() {
            if started.elapsed().as_secs() > 600 {
                return Err(WalError::Io {
                    path: self.shared.disk.path(&active.name),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "sync timed out"),
                });
            }
            self.engine.reap(true, &mut finished)?;
        }
        for done in finished {
            done.result?;
            self.free_buffers.push(done.buf);
        }
        if let Some(active) = self.active.as_mut() {
            active.position += size as u64;
            self.synced_upto = active.position;
        }
        self.unsealed_groups = false;
        Ok(())
    }

    /// Closes the full active segment with a seal record.
    fn seal(&mut self) -> Result<(), WalError> {
        self.write_alone(COMMIT_SEAL)?;
        if let Some(active) = self.active.as_mut() {
            active.sealed = true;
        }
        Ok(())
    }

    fn close_on_shutdown(&mut self) -> Result<(), WalError> {
        let room = self.active.as_ref().is_some_and(|active| {
            !active.sealed && active.position + BLOCK_BYTES as u64 <= active.len
        });
        if self.unsealed_groups && room {
            self.write_alone(0)?;
        }
        Ok(())
    }

    /// Starts the next segment from a spare (prepared off the hot path when
    /// possible).
    fn roll(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        let result = self.roll_inner();
        let counters = &self.shared.counters;
        counters.rolls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counters
            .roll_nanos_total
            .fetch_add(nanos, Ordering::Relaxed);
        result
    }

    fn roll_inner(&mut self) -> Result<(), WalError> {
        if let Some((sealed, name)) = self
            .active
            .as_ref()
            .map(|active| (active.sealed, active.name.clone()))
        {
            if !sealed {
                self.seal()?;
            }
            self.engine.forget(&name);
        }
        if self.next_segment.is_none() {
            self.prepare_next_segment()?;
        }
        let next = self.next_segment.take();
        if let Some(next) = &next {
            self.shared.state.lock().active_sequence = Some(next.sequence);
        }
        self.active = next;
        self.synced_upto = 0;
        Ok(())
    }

    /// Renames a spare (prepared off the hot path when possible) to the
    /// next segment's name and syncs the directory.
    fn prepare_next_segment(&mut self) -> Result<(), WalError> {
        let disk = Arc::clone(&self.shared.disk);
        let mut ready = self.shared.state.lock().spares.pop();
        if let Some(spare) = &ready {
            // Spares found at open may have another size than configured.
            if context(&*disk, spare, disk.len(spare))? != self.shared.limits.segment_bytes {
                context(&*disk, spare, disk.remove(spare))?;
                ready = None;
            }
        }
        let spare = match ready {
            Some(spare) => spare,
            None => {
                let number = {
                    let mut state = self.shared.state.lock();
                    state.spare_counter += 1;
                    state.spare_counter
                };
                let counter = &self.shared.counters.spares_zero_filled;
                counter.fetch_add(1, Ordering::Relaxed);
                prepare_spare(&*disk, self.shared.limits.segment_bytes, number)?
            }
        };
        let _ = self.prepare.try_send(());
        let last_sequence = self
            .shared
            .state
            .lock()
            .segments
            .keys()
            .next_back()
            .copied();
        let sequence = last_sequence
            .unwrap_or(0)
            .max(self.active.as_ref().map_or(0, |active| active.sequence))
            + 1;
        let name = segment_name(sequence, self.next_index.unwrap_or(0));
        context(&*disk, &spare, disk.rename(&spare, &name))?;
        context(&*disk, "", disk.sync_dir())?;
        self.shared
            .state
            .lock()
            .segments
            .insert(sequence, SegmentMeta { name: name.clone() });
        self.next_segment = Some(Active {
            sequence,
            name,
            incarnation: random_incarnation(sequence ^ self.sequence_max),
            position: 0,
            sealed: false,
            len: self.shared.limits.segment_bytes,
        });
        Ok(())
    }
}

/// Appends one record (header and payload) to `buf`.
fn write_record(
    buf: &mut AlignedBuf,
    kind: Kind,
    incarnation: u64,
    first: u64,
    last: u64,
    term: u64,
    payload: &[u8],
) {
    let header = RecordHeader {
        payload_len: payload.len() as u32,
        kind,
        payload_crc: crc32c::crc32c(payload),
        incarnation,
        first,
        last,
        term,
    };
    header.encode(buf.extend_zeroed(RECORD_HEADER_BYTES));
    buf.extend_from_slice(payload);
}

/// Creates a zero-filled, synced spare segment and returns its name.
pub(crate) fn prepare_spare(
    disk: &dyn crate::disk::Disk,
    segment_bytes: u64,
    number: u64,
) -> Result<String, WalError> {
    let temporary = format!("spare-{number:016x}.tmp");
    context(disk, &temporary, disk.create(&temporary))?;
    let zeros = vec![0u8; (1 << 20).min(segment_bytes as usize)];
    let mut offset = 0u64;
    while offset < segment_bytes {
        let chunk = zeros.len().min((segment_bytes - offset) as usize);
        context(
            disk,
            &temporary,
            disk.write_at(&temporary, offset, &zeros[..chunk]),
        )?;
        offset += chunk as u64;
    }
    context(disk, &temporary, disk.sync(&temporary))?;
    let name = spare_name(number);
    context(disk, &temporary, disk.rename(&temporary, &name))?;
    context(disk, "", disk.sync_dir())?;
    Ok(name)
}
