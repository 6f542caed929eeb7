//! The disk model: the log-writing actions (hard state, truncation, append,
//! compaction, snapshot install) queue up in order and complete one after
//! another after a simulated latency. Completion moves them into the durable
//! image and tells the core. A crash keeps the durable image plus a random
//! prefix of what was still queued (writes may reach the platter without
//! their sync being acknowledged), cut at a batch boundary, as a WAL's torn
//! tail is cut on recovery; everything after is lost.

use std::collections::VecDeque;

use barge::core::{Batch, HardState, LogGeneration, LogId, LogIndex, Snapshot};

use super::checkers::LogView;
use super::log::{LogError, LogImage};
use super::rng::Rng;

#[derive(Debug, Clone)]
pub enum DiskOp {
    HardState(HardState),
    Truncate {
        after: LogIndex,
    },
    Append(Vec<Batch>),
    Compact {
        up_to: LogIndex,
    },
    /// A snapshot from the leader, with the chain hash its state carries.
    InstallSnapshot(Snapshot, u64),
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub log: LogImage,
    /// The latest snapshot written (created locally or installed), with
    /// the chain hash of the state it holds.
    pub snapshot: Option<(Snapshot, u64)>,
    /// Queued operations with the time each completes.
    pending: VecDeque<(DiskOp, u64)>,
    /// The repair floor written before a damaged suffix was cut (the
    /// driver's `repair` file): dropped once the core reports none.
    pub repair_floor: Option<LogId>,
    /// How many times damage cut the log back (the driver's
    /// `log.generation` file): incremented before the cut, never lowered.
    pub log_generation: LogGeneration,
    last_due: u64,
    pub latency_units_max: u64,
}

impl Disk {
    pub fn new(log: LogImage, latency_units_max: u64) -> Self {
        Self {
            hard_state: HardState::default(),
            log,
            snapshot: None,
            pending: VecDeque::new(),
            repair_floor: None,
            log_generation: LogGeneration(0),
            last_due: 0,
            latency_units_max,
        }
    }

    /// Queues `op`; returns when it will complete. Completion times never
    /// go backwards: the device is serial.
    pub fn submit(&mut self, op: DiskOp, now: u64, rng: &mut Rng) -> u64 {
        let due = self.last_due.max(now) + rng.range(1, self.latency_units_max.max(1));
        self.last_due = due;
        self.pending.push_back((op, due));
        due
    }

    /// The next operation due at or before `now`, moved into the durable
    /// image, and returned so the driver can tell the core.
    pub fn complete_next(&mut self, now: u64) -> Option<Result<DiskOp, LogError>> {
        if self.pending.front().is_none_or(|&(_, due)| due > now) {
            return None;
        }
        let (op, _) = self.pending.pop_front()?;
        Some(self.persist(&op).map(|()| op))
    }

    fn persist(&mut self, op: &DiskOp) -> Result<(), LogError> {
        match op {
            DiskOp::HardState(hard_state) => self.hard_state = *hard_state,
            DiskOp::Truncate { after } => self.log.truncate_from(after.next())?,
            DiskOp::Append(batches) => {
                for batch in batches {
                    self.log.append(batch)?;
                }
            }
            DiskOp::Compact { up_to } => self.compact(*up_to),
            DiskOp::InstallSnapshot(snapshot, chain) => {
                self.log.install_snapshot(snapshot.meta.clone(), *chain);
                self.snapshot = Some((snapshot.clone(), *chain));
            }
        }
        Ok(())
    }

    /// Drops log entries covered by the durable snapshot. Compaction is
    /// optional for the driver, so a request that does not match the
    /// snapshot held is skipped.
    fn compact(&mut self, up_to: LogIndex) {
        if let Some((snapshot, chain)) = &self.snapshot {
            if snapshot.meta.last.index == up_to {
                self.log.install_snapshot(snapshot.meta.clone(), *chain);
            }
        }
    }

    /// A snapshot the local state machine created: written at once (the
    /// application writes it before reporting it to the core).
    pub fn store_snapshot(&mut self, snapshot: Snapshot, chain: u64) {
        let newer = self
            .snapshot
            .as_ref()
            .is_none_or(|(held, _)| held.meta.last.index < snapshot.meta.last.index);
        if newer {
            self.snapshot = Some((snapshot, chain));
        }
    }

    /// Damage found at restart: the durable log from a random index after
    /// the snapshot (damage below it is never read) is unreadable. As a
    /// driver does, first increment the log generation and write the repair
    /// floor (the last entry id the log held; the higher one if a floor is
    /// still pending), then cut the log
    /// back to the intact prefix. Returns the lost range, or `None` when
    /// the log holds nothing after the snapshot.
    pub fn damage(&mut self, rng: &mut Rng) -> Result<Option<(LogIndex, LogId)>, LogError> {
        let snapshot = self
            .snapshot
            .as_ref()
            .map_or(LogIndex(0), |(snapshot, _)| snapshot.meta.last.index)
            .max(self.log.first_index().prev());
        let last = self.log.last_id();
        if last.index <= snapshot {
            return Ok(None);
        }
        let from = LogIndex(rng.range(snapshot.0 + 1, last.index.0 + 1));
        self.log_generation = self.log_generation.next();
        self.repair_floor = Some(self.repair_floor.map_or(last, |floor| floor.max(last)));
        self.log.truncate_from(from)?;
        Ok(Some((from, last)))
    }

    /// A crash: a random prefix of the queue reaches the disk, possibly
    /// ending inside a multi-batch append; the rest is lost.
    pub fn crash(&mut self, rng: &mut Rng) -> Result<(), LogError> {
        let survivors = rng.range(0, self.pending.len() as u64) as usize;
        let mut queue = std::mem::take(&mut self.pending);
        self.last_due = 0;
        for (position, (op, _)) in queue.drain(..).enumerate() {
            if position > survivors {
                break;
            }
            if position == survivors {
                // The op in progress: a prefix of its batches may be there.
                if let DiskOp::Append(batches) = op {
                    let kept = rng.range(0, batches.len() as u64) as usize;
                    self.persist(&DiskOp::Append(batches[..kept].to_vec()))?;
                }
                break;
            }
            self.persist(&op)?;
        }
        Ok(())
    }
}
