//! How a group's bytes reach the disk: a blocking `pwrite`+`fdatasync`
//! engine (also used with [`crate::FaultDisk`]) and an io_uring engine with
//! O_DIRECT and linked write→fdatasync chains, several in flight.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::disk::{context, Disk};
use crate::sys::{open_direct, AlignedBuf, ChainDone, EventFd, Ring};
use crate::WalError;

/// One finished group write.
#[derive(Debug)]
pub(crate) struct Finished {
    pub token: u64,
    pub buf: AlignedBuf,
    pub result: Result<(), WalError>,
    /// Write-and-sync latency (the figure the metrics expose as fsync time).
    pub elapsed: Duration,
}

/// Moves group buffers to stable storage.
pub(crate) trait WriteEngine: Send + std::fmt::Debug {
    /// Starts writing `buf` at `offset` of segment `name`, followed by a data
    /// sync. `Err` means nothing may be assumed about what reached the disk.
    fn submit(
        &mut self,
        token: u64,
        name: &str,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<(), WalError>;
    /// Collects finished writes; with `block`, first waits until at least
    /// one finishes or the event is signalled.
    fn reap(&mut self, block: bool, out: &mut Vec<Finished>) -> Result<(), WalError>;
    /// Writes in flight.
    fn inflight(&self) -> usize;
    /// Most writes that may be in flight at once.
    fn inflight_max(&self) -> usize;
    /// Prepares for a blocking `reap` that a signal of `event` can end.
    /// Returns false if this engine cannot wait on the event (then the
    /// caller must not block in `reap` with nothing in flight).
    fn arm_event(&mut self, event: &EventFd) -> bool;
    /// Closes the engine's handle on a segment (after a roll or removal).
    fn forget(&mut self, name: &str);
    /// Whether each write is followed by a data sync (false only with the
    /// unsafe [`crate::SyncMode::Never`]).
    fn syncs(&self) -> bool;
}

/// Blocking engine: `pwrite` in `submit`, `fdatasync` in `reap`.
///
/// With `inflight_max` 1 every write is synced before the next starts. With
/// more (used with the fault disk), up to `inflight_max` written groups wait
/// unsynced, which reproduces the crash states of the io_uring pipeline
/// (a later group on disk while an earlier one is lost).
#[derive(Debug)]
pub(crate) struct BlockingEngine {
    disk: Arc<dyn Disk>,
    inflight_max: usize,
    pending: VecDeque<Finished>,
    /// Name of the segment each pending write went to.
    names: VecDeque<String>,
    /// False with the unsafe [`crate::SyncMode::Never`]: writes are not synced.
    sync: bool,
}

impl BlockingEngine {
    pub(crate) fn new(disk: Arc<dyn Disk>, inflight_max: usize, sync: bool) -> BlockingEngine {
        BlockingEngine {
            disk,
            inflight_max: inflight_max.max(1),
            pending: VecDeque::new(),
            names: VecDeque::new(),
            sync,
        }
    }

    fn sync_oldest(&mut self, out: &mut Vec<Finished>) {
        let (Some(mut finished), Some(name)) = (self.pending.pop_front(), self.names.pop_front())
        else {
            return;
        };
        if finished.result.is_ok() && self.sync {
            let started = Instant::now();
            let disk = &*self.disk;
            finished.result = context(disk, &name, disk.sync(&name));
            finished.elapsed += started.elapsed();
        }
        out.push(finished);
    }
}

impl WriteEngine for BlockingEngine {
    fn submit(
        &mut self,
        token: u64,
        name: &str,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<(), WalError> {
        let started = Instant::now();
        let disk = &*self.disk;
        let result = context(disk, name, disk.write_at(name, offset, buf.as_slice()));
        if self.inflight_max == 1 {
            let result = if self.sync {
                result.and_then(|()| context(disk, name, disk.sync(name)))
            } else {
                result
            };
            self.pending.push_back(Finished {
                token,
                buf,
                result,
                elapsed: started.elapsed(),
            });
            self.names.push_back(name.to_owned());
            return Ok(());
        }
        self.pending.push_back(Finished {
            token,
            buf,
            result,
            elapsed: started.elapsed(),
        });
        self.names.push_back(name.to_owned());
        Ok(())
    }

    fn reap(&mut self, block: bool, out: &mut Vec<Finished>) -> Result<(), WalError> {
        if self.inflight_max == 1 {
            out.extend(self.pending.drain(..));
            self.names.clear();
            return Ok(());
        }
        if block || self.pending.len() >= self.inflight_max {
            self.sync_oldest(out);
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.pending.len()
    }

    fn inflight_max(&self) -> usize {
        self.inflight_max
    }

    fn arm_event(&mut self, _event: &EventFd) -> bool {
        false
    }

    fn forget(&mut self, _name: &str) {}

    fn syncs(&self) -> bool {
        self.sync
    }
}

/// io_uring engine over a real directory.
#[derive(Debug)]
pub(crate) struct UringEngine {
    dir: std::path::PathBuf,
    ring: Ring,
    files: HashMap<String, File>,
    /// Files forgotten while chains on them were in flight: closed when idle.
    retired: Vec<File>,
    inflight_max: usize,
    done: Vec<ChainDone>,
    /// False with the unsafe [`crate::SyncMode::Never`]: no fdatasync is
    /// linked after the write.
    sync: bool,
}

impl UringEngine {
    pub(crate) fn new(
        dir: &std::path::Path,
        inflight_max: usize,
        sync: bool,
    ) -> std::io::Result<UringEngine> {
        let inflight_max = inflight_max.max(1);
        let entries = u32::try_from(inflight_max * 2 + 2)
            .unwrap_or(64)
            .next_power_of_two();
        Ok(UringEngine {
            dir: dir.to_path_buf(),
            ring: Ring::new(entries)?,
            files: HashMap::new(),
            retired: Vec::new(),
            inflight_max,
            done: Vec::new(),
            sync,
        })
    }
}

impl WriteEngine for UringEngine {
    fn submit(
        &mut self,
        token: u64,
        name: &str,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<(), WalError> {
        let path = self.dir.join(name);
        if !self.files.contains_key(name) {
            let file = open_direct(&path).map_err(|source| WalError::io(&path, source))?;
            self.files.insert(name.to_owned(), file);
        }
        // unwrap: inserted just above if missing.
        let file = self.files.get(name).expect("file opened");
        self.ring
            .submit_chain(file, offset, buf, token, self.sync)
            .map_err(|(source, _buf)| WalError::io(&path, source))
    }

    fn reap(&mut self, block: bool, out: &mut Vec<Finished>) -> Result<(), WalError> {
        self.ring
            .reap(block, &mut self.done)
            .map_err(|source| WalError::io(&self.dir, source))?;
        for done in self.done.drain(..) {
            let result = done
                .result
                .map_err(|source| WalError::io(&self.dir, source));
            out.push(Finished {
                token: done.token,
                buf: done.buf,
                result,
                elapsed: done.elapsed,
            });
        }
        if self.ring.inflight() == 0 {
            self.retired.clear();
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.ring.inflight()
    }

    fn inflight_max(&self) -> usize {
        self.inflight_max
    }

    fn arm_event(&mut self, event: &EventFd) -> bool {
        self.ring.arm_event(event).is_ok()
    }

    fn forget(&mut self, name: &str) {
        if let Some(file) = self.files.remove(name) {
            self.retired.push(file);
        }
    }

    fn syncs(&self) -> bool {
        self.sync
    }
}
