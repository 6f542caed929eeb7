//! An in-memory disk that injects the failures real disks produce.
//!
//! Pass it as [`crate::Backend::Fault`] and keep a clone to drive faults from
//! a test, a simulator or a chaos tool:
//!
//! - **crash** ([`FaultDisk::crash`]): every write not yet covered by a sync
//!   is kept, dropped, or torn at 512-byte sector granularity (each sector
//!   independently kept or lost); directory changes not yet covered by a
//!   directory sync are kept as a random prefix. Reopen the log afterwards.
//! - **bit flips** ([`FaultDisk::flip_bit`]) in stored bytes;
//! - **errors** ([`FaultDisk::inject`]): EIO on read, write or sync, or
//!   ENOSPC on write, after a countdown of successful operations.
//!
//! The same errors, and only they, can be armed on the real directory with
//! [`Faults`] ([`crate::Backend::FaultyBlocking`]), for fault experiments on
//! real processes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::disk::Disk;

/// Sector size at which writes tear.
pub const SECTOR_BYTES: usize = 512;

/// Operation a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOperation {
    /// `pread`.
    Read,
    /// `pwrite`.
    Write,
    /// `fdatasync` of a file (not of the directory).
    Sync,
}

/// Error a fault produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// `EIO`.
    Io,
    /// `ENOSPC`.
    NoSpace,
}

/// One armed fault: after `countdown` more successful operations of kind
/// `operation`, every further one fails with `error` (until
/// [`FaultDisk::clear_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which operation fails.
    pub operation: FaultOperation,
    /// Successful operations left before failing.
    pub countdown: u64,
    /// The error returned.
    pub error: FaultError,
}

#[derive(Debug, Default)]
struct FileData {
    /// What a crash right now would at least keep.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum DirectoryChange {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, FileData>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    unsynced_changes: Vec<DirectoryChange>,
    next_inode: u64,
    faults: Vec<Fault>,
    operations: u64,
    /// Crashed and not restarted: every operation fails with EIO, so the
    /// crashed log instance cannot change the surviving image.
    dead: bool,
    /// Crash when `operations` reaches this count, with this seed.
    crash_at: Option<(u64, u64)>,
}

/// A shared in-memory disk with fault injection (cloning shares the disk).
#[derive(Clone, Debug, Default)]
pub struct FaultDisk {
    state: Arc<Mutex<State>>,
}

/// Small deterministic generator (splitmix64) so crashes replay from a seed.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn apply(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl FaultDisk {
    /// An empty disk with no faults armed.
    pub fn new() -> FaultDisk {
        FaultDisk::default()
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Number of file operations performed so far (to pick crash points).
    pub fn operations(&self) -> u64 {
        self.state.lock().operations
    }

    /// Number of writes not yet covered by a sync, over all files.
    pub fn unsynced_writes(&self) -> usize {
        self.state
            .lock()
            .files
            .values()
            .map(|file| file.unsynced.len())
            .sum()
    }

    /// Simulates power loss, deciding every unsynced write sector by sector
    /// with `keep(file_name, write_number, sector) -> bool`, and keeping the
    /// first `directory_changes_kept` unsynced directory changes (clamped).
    /// Afterwards every operation fails with EIO until [`FaultDisk::restart`],
    /// so the crashed log cannot touch the surviving image.
    pub fn crash_with(
        &self,
        keep: impl FnMut(&str, usize, usize) -> bool,
        directory_changes_kept: usize,
    ) {
        crash_locked(&mut self.state.lock(), keep, directory_changes_kept);
    }

    /// Ends the crashed state: operations work again (open a new log now).
    pub fn restart(&self) {
        let mut state = self.state.lock();
        state.dead = false;
        state.crash_at = None;
    }

    /// True after a crash until [`FaultDisk::restart`].
    pub fn is_crashed(&self) -> bool {
        self.state.lock().dead
    }

    /// Arms a crash (as [`FaultDisk::crash`] with `seed`) right before the
    /// operation numbered `operation` (see [`FaultDisk::operations`]).
    pub fn crash_at_operation(&self, operation: u64, seed: u64) {
        self.state.lock().crash_at = Some((operation, seed));
    }

    /// Simulates power loss with choices drawn from `seed`: each unsynced
    /// write is kept whole, lost whole, or torn (each sector a coin toss),
    /// and a random prefix of unsynced directory changes survives.
    pub fn crash(&self, seed: u64) {
        crash_seeded(&mut self.state.lock(), seed);
    }

    /// Flips bit `bit` (0..8) of byte `offset` in file `name`, in what reads
    /// see and in what survives a crash. Returns false if out of range.
    pub fn flip_bit(&self, name: &str, offset: u64, bit: u8) -> bool {
        let mut state = self.state.lock();
        let Some(inode) = state.names.get(name).copied() else {
            return false;
        };
        let Some(file) = state.files.get_mut(&inode) else {
            return false;
        };
        let at = offset as usize;
        if at >= file.current.len() {
            return false;
        }
        file.current[at] ^= 1 << (bit % 8);
        if at < file.durable.len() {
            file.durable[at] ^= 1 << (bit % 8);
        }
        true
    }

    /// Names and sizes of all files.
    pub fn files(&self) -> Vec<(String, u64)> {
        let state = self.state.lock();
        state
            .names
            .iter()
            .map(|(name, inode)| {
                (
                    name.clone(),
                    state
                        .files
                        .get(inode)
                        .map_or(0, |file| file.current.len() as u64),
                )
            })
            .collect()
    }

    /// A copy of what reads of `name` see, if it exists.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let inode = state.names.get(name)?;
        state.files.get(inode).map(|file| file.current.clone())
    }

    fn check_fault(state: &mut State, operation: FaultOperation) -> io::Result<()> {
        FaultDisk::check_alive(state)?;
        trip(&mut state.faults, operation)
    }
}

/// Counts one `operation` against every armed fault of that kind: the error
/// of the first whose countdown has run out, else one step down each.
fn trip(faults: &mut [Fault], operation: FaultOperation) -> io::Result<()> {
    for fault in faults
        .iter_mut()
        .filter(|fault| fault.operation == operation)
    {
        if fault.countdown == 0 {
            let code = match fault.error {
                FaultError::Io => libc::EIO,
                FaultError::NoSpace => libc::ENOSPC,
            };
            return Err(io::Error::from_raw_os_error(code));
        }
        fault.countdown -= 1;
    }
    Ok(())
}

/// Faults armed on the real blocking disk ([`crate::Backend::FaultyBlocking`]):
/// the log reads and writes its directory with `pread`/`pwrite`/`fdatasync`
/// as [`crate::Backend::Blocking`] does, and each armed [`Fault`] fails its
/// operation once its countdown has run out, as on [`FaultDisk`]. Nothing is
/// simulated beyond the error: what was written before it is on disk, so a
/// log reopened without faults recovers everything that was synced.
///
/// Cloning shares the armed list, so a test or tool can arm faults later.
///
/// ```
/// use barge_wal::{Fault, FaultError, FaultOperation, Faults};
///
/// let faults: Faults = "fsync-eio-after=3,enospc-after=10".parse()?;
/// assert_eq!(faults.armed()[0], Fault {
///     operation: FaultOperation::Sync,
///     countdown: 3,
///     error: FaultError::Io,
/// });
/// assert!("fsync-eio-after=soon".parse::<Faults>().is_err());
/// # Ok::<(), barge_wal::FaultSpecError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Faults {
    armed: Arc<Mutex<Vec<Fault>>>,
}

impl Faults {
    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.armed.lock().push(fault);
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.armed.lock().clear();
    }

    /// The armed faults, with their countdowns as they stand now.
    pub fn armed(&self) -> Vec<Fault> {
        self.armed.lock().clone()
    }

    /// Counts one operation of the real disk (see [`trip`]).
    pub(crate) fn check(&self, operation: FaultOperation) -> io::Result<()> {
        trip(&mut self.armed.lock(), operation)
    }
}

/// The grammar of [`Faults`]' `FromStr`: comma-separated `NAME=N`, each
/// arming one fault that fires after `N` successful operations of its kind.
pub const FAULT_SPEC_GRAMMAR: &str =
    "comma-separated fsync-eio-after=N (fdatasync fails with EIO), \
     write-eio-after=N (pwrite fails with EIO), enospc-after=N (pwrite fails with ENOSPC), \
     read-eio-after=N (pread fails with EIO); each fires after N successful operations \
     of its kind and on every one after";

/// A disk-fault specification that does not follow [`FAULT_SPEC_GRAMMAR`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("disk fault {item:?}: {reason}; expected {FAULT_SPEC_GRAMMAR}")]
pub struct FaultSpecError {
    /// The offending comma-separated item.
    pub item: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::str::FromStr for Faults {
    type Err = FaultSpecError;

    /// Parses [`FAULT_SPEC_GRAMMAR`], for example
    /// `fsync-eio-after=100,enospc-after=5000`.
    fn from_str(spec: &str) -> Result<Faults, FaultSpecError> {
        let faults = Faults::default();
        for item in spec.split(',') {
            let error = |reason| FaultSpecError {
                item: item.to_owned(),
                reason,
            };
            let (name, count) = item.split_once('=').ok_or_else(|| error("no '='"))?;
            let countdown = count
                .parse()
                .map_err(|_| error("the count is not a whole number"))?;
            let (operation, error_kind) = match name {
                "fsync-eio-after" => (FaultOperation::Sync, FaultError::Io),
                "write-eio-after" => (FaultOperation::Write, FaultError::Io),
                "enospc-after" => (FaultOperation::Write, FaultError::NoSpace),
                "read-eio-after" => (FaultOperation::Read, FaultError::Io),
                _ => return Err(error("unknown fault name")),
            };
            faults.inject(Fault {
                operation,
                countdown,
                error: error_kind,
            });
        }
        Ok(faults)
    }
}

impl FaultDisk {
    /// Counts an operation, crashing first if one is armed for it.
    fn check_alive(state: &mut State) -> io::Result<()> {
        if let Some((at, seed)) = state.crash_at {
            if state.operations >= at {
                state.crash_at = None;
                crash_seeded(state, seed);
            }
        }
        if state.dead {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.operations += 1;
        Ok(())
    }
}

fn crash_seeded(state: &mut State, seed: u64) {
    let mut random = SplitMix(seed);
    let changes = state.unsynced_changes.len();
    let directory_changes_kept = (random.next() % (changes as u64 + 1)) as usize;
    let mut current: Option<(String, usize, u64)> = None;
    crash_locked(
        state,
        |name, number, _sector| {
            let fresh = match &current {
                Some((current_name, current_number, _)) => {
                    current_name != name || *current_number != number
                }
                None => true,
            };
            if fresh {
                current = Some((name.to_owned(), number, random.next() % 3));
            }
            match current.as_ref().map(|(_, _, mode)| *mode) {
                Some(0) => true,
                Some(1) => false,
                _ => random.next() % 2 == 0,
            }
        },
        directory_changes_kept,
    );
}

fn crash_locked(
    state: &mut State,
    mut keep: impl FnMut(&str, usize, usize) -> bool,
    directory_changes_kept: usize,
) {
    let names_by_inode: HashMap<u64, String> = state
        .names
        .iter()
        .map(|(name, inode)| (*inode, name.clone()))
        .collect();
    let mut inodes: Vec<u64> = state.files.keys().copied().collect();
    // Deterministic order, so a seed replays the same crash.
    inodes.sort_unstable();
    for inode in inodes {
        let name = names_by_inode.get(&inode).cloned().unwrap_or_default();
        let Some(file) = state.files.get_mut(&inode) else {
            continue;
        };
        for (number, (offset, data)) in std::mem::take(&mut file.unsynced).into_iter().enumerate() {
            for (sector, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
                if keep(&name, number, sector) {
                    apply(
                        &mut file.durable,
                        offset + (sector * SECTOR_BYTES) as u64,
                        chunk,
                    );
                }
            }
        }
        file.current = file.durable.clone();
    }
    let kept = directory_changes_kept.min(state.unsynced_changes.len());
    let changes: Vec<DirectoryChange> = state.unsynced_changes.drain(..).collect();
    for change in changes.into_iter().take(kept) {
        match change {
            DirectoryChange::Create(name, inode) => {
                state.durable_names.insert(name, inode);
            }
            DirectoryChange::Rename(from, to) => {
                if let Some(inode) = state.durable_names.remove(&from) {
                    state.durable_names.insert(to, inode);
                }
            }
            DirectoryChange::Remove(name) => {
                state.durable_names.remove(&name);
            }
        }
    }
    state.names = state.durable_names.clone();
    let live: std::collections::HashSet<u64> = state.names.values().copied().collect();
    state.files.retain(|inode, _| live.contains(inode));
    state.faults.clear();
    state.dead = true;
}

impl Disk for FaultDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut state = self.state.lock();
        FaultDisk::check_alive(&mut state)?;
        Ok(state.names.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_alive(&mut state)?;
        let inode = state.next_inode;
        state.next_inode += 1;
        state.files.insert(inode, FileData::default());
        state.names.insert(name.to_owned(), inode);
        state
            .unsynced_changes
            .push(DirectoryChange::Create(name.to_owned(), inode));
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let state = self.state.lock();
        let inode = state.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(state
            .files
            .get(inode)
            .map_or(0, |file| file.current.len() as u64))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_fault(&mut state, FaultOperation::Read)?;
        let inode = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let file = state.files.get(&inode).ok_or_else(|| not_found(name))?;
        let start = offset as usize;
        let Some(bytes) = file.current.get(start..start + buf.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        };
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_fault(&mut state, FaultOperation::Write)?;
        let inode = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let file = state.files.get_mut(&inode).ok_or_else(|| not_found(name))?;
        apply(&mut file.current, offset, data);
        file.unsynced.push((offset, data.to_vec()));
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_fault(&mut state, FaultOperation::Sync)?;
        let inode = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let file = state.files.get_mut(&inode).ok_or_else(|| not_found(name))?;
        // Apply the pending writes rather than copying the whole file, so a
        // sync costs what was written, like on a real disk.
        for (offset, data) in std::mem::take(&mut file.unsynced) {
            apply(&mut file.durable, offset, &data);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_alive(&mut state)?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_owned(), inode);
        state
            .unsynced_changes
            .push(DirectoryChange::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_alive(&mut state)?;
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        state
            .unsynced_changes
            .push(DirectoryChange::Remove(name.to_owned()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        FaultDisk::check_alive(&mut state)?;
        state.durable_names = state.names.clone();
        state.unsynced_changes.clear();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        Path::new("fault-disk").join(name)
    }

    fn os_dir(&self) -> Option<&Path> {
        None
    }
}
