//! The node's data directory: identity file, snapshot file and the
//! write-ahead log, and recovery from them into the core's [`Persisted`].
//!
//! ```text
//! data_dir/
//!   node.id        "barge-node v1 cluster=<u64> id=<u64>\n", written once
//!   snapshot       the latest snapshot (format below), replaced atomically
//!   log/           barge-wal's segments and hard state
//!   log.next/      a replacement log being prepared after a snapshot install
//!   repair         the repair floor while damaged entries are refetched
//!   log.generation how many times damage cut the log back (absent: 0)
//! ```
//!
//! # Snapshot file (integers little-endian)
//!
//! | offset  | size | field                                        |
//! |---------|------|----------------------------------------------|
//! | 0       | 8    | magic `BARGESNP`                             |
//! | 8       | 8    | term of the last included entry              |
//! | 16      | 8    | index of the last included entry             |
//! | 24      | 4    | `m`, membership length                       |
//! | 28      | `m`  | membership ([`Membership::encode`])          |
//! | 28 + m  | 8    | `n`, data length                             |
//! | 36 + m  | `n`  | the state machine's bytes                    |
//! | 36+m+n  | 4    | CRC32C of everything before                  |
//!
//! Written to `snapshot.tmp`, fsynced, renamed over `snapshot`, then the
//! directory is fsynced: a crash leaves the old or the new file, whole.
//!
//! # Replacing the log after a snapshot install
//!
//! A follower that installs a leader's snapshot must continue its log at the
//! snapshot's last index + 1, which the append-only log cannot do in place.
//! The snapshot file is made durable first; then a fresh log holding only the
//! hard state is built in `log.next/`, `log/` is removed and `log.next/`
//! renamed into place, and the directory fsynced. At open, a `log.next/`
//! beside a `log/` is an unfinished preparation and is removed; a
//! `log.next/` alone is the finished one and is renamed. If a crash left the
//! old log beside the new snapshot, recovery drops the old entries that do
//! not follow the snapshot (their terms disagree at the snapshot's index) and
//! replaces the log then.
//!
//! # Repairing a damaged log
//!
//! A record the WAL cannot read back outside the torn tail (a flipped bit,
//! a lost sector) is damage: the entries in it, and every entry after it,
//! are discarded and fetched again from the leader (protocol-aware
//! recovery, after PAR, FAST 2018). The node may have acknowledged those
//! entries, so until it holds them again it must not vote for a candidate
//! that lacks them nor lead (see the core's `repair` module). At open:
//!
//! 1. The *repair floor* is computed: the last entry id the log held (the
//!    WAL knows it from the record headers after the damage). If damage
//!    reaches the end of the log, so that the last id is unknown, the floor
//!    is `(term, u64::MAX)` with the hard state's term: every entry the log
//!    ever held has a term at most that, so the floor is above all of them
//!    (it costs liveness only: it clears once a leader of a later term has
//!    replicated to the node). Damage wholly inside the snapshot is ignored
//!    (those entries are never read again).
//! 2. The log generation ([`Persisted::log_generation`]) is incremented
//!    durably in `log.generation`, then the floor is written durably to
//!    `repair` (each: temp file, fsync, rename, directory fsync; the higher
//!    of it and a floor already there), both BEFORE the log is touched. The
//!    node sends the generation with every answer to an append, and its
//!    leader learns from the increase that entries it acknowledged are gone.
//! 3. The log is truncated durably from the first damaged index (from the
//!    first index the log holds after the snapshot when the damage's first
//!    index is unknown), and the intact prefix is read.
//! 4. The core starts with [`Persisted::lost`] set to the floor.
//!
//! | crash after | what the next open finds                  | outcome          |
//! |-------------|-------------------------------------------|------------------|
//! | 1           | damage, no `repair`                       | repeats 1-4      |
//! | 2 (generation) | damage, generation + 1, no `repair`    | repeats 1-4 (generation + 2) |
//! | 2           | damage, `repair`                          | repeats 2-4 (max)|
//! | 3           | a shorter intact log, `repair`            | floor from file  |
//! | catching up | a longer log, `repair`                    | floor from file; the core drops it once the log reaches it |
//!
//! The floor only ever moves up while the file exists, and the file outlives
//! the truncation, so no crash lets the node forget what it acknowledged.
//! The file is removed at open when the recovered log already reaches the
//! floor; the driver may remove it earlier with [`clear_repair_floor`] once
//! the core reports the floor cleared (the core clears it only on durable
//! state). A file left behind costs liveness only: at the next open it is
//! dropped, or (if the log has since been cut below it) it holds the node
//! back from campaigning until the leader's log passes it again.
//!
//! | offset | size | field                     |
//! |--------|------|---------------------------|
//! | 0      | 8    | magic `BARGEREP`          |
//! | 8      | 8    | term of the floor         |
//! | 16     | 8    | index of the floor        |
//! | 24     | 4    | CRC32C of bytes 0..24     |
//!
//! The generation only grows and its file is never removed: an increment
//! lost to a crash before step 2 is made again at the next open (the damage
//! is still there), and a skipped value costs the leader one probe. A
//! generation that went backwards would make leaders ignore the node's
//! answers as stale, so a damaged `log.generation` is an error at open.
//!
//! | offset | size | field                     |
//! |--------|------|---------------------------|
//! | 0      | 8    | magic `BARGEGEN`          |
//! | 8      | 8    | the generation            |
//! | 16     | 4    | CRC32C of bytes 0..16     |

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use barge_wal::{Backend, HardState as WalHardState, Notifier, SyncMode, Wal, WalConfig};
use bytes::Bytes;

use super::config::{NodeConfig, StartMode};
use super::error::StartError;
use crate::core::{
    Batch, HardState, LogGeneration, LogId, LogIndex, Membership, NodeId, Persisted, Snapshot,
    SnapshotMeta, Term,
};

const IDENTITY_FILE: &str = "node.id";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const LOG_DIR: &str = "log";
const LOG_NEXT_DIR: &str = "log.next";
const SNAPSHOT_MAGIC: &[u8; 8] = b"BARGESNP";
const REPAIR_FILE: &str = "repair";
const REPAIR_MAGIC: &[u8; 8] = b"BARGEREP";
const REPAIR_FILE_BYTES: usize = 28;
const GENERATION_FILE: &str = "log.generation";
const GENERATION_MAGIC: &[u8; 8] = b"BARGEGEN";
const GENERATION_FILE_BYTES: usize = 20;
/// Largest snapshot file read at start (matches the core's default
/// `snapshot_bytes_max`); a larger file is reported corrupt, not allocated.
const SNAPSHOT_FILE_BYTES_MAX: u64 = 4 << 30;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything recovered from the data directory.
pub(super) struct Recovered {
    pub(super) wal: Wal,
    pub(super) persisted: Persisted,
}

/// Options the node passes to every log it opens.
pub(super) struct LogSettings {
    pub(super) segment_bytes: u64,
    pub(super) queued_bytes_max: usize,
    pub(super) write_bytes_max: usize,
    pub(super) backend: Backend,
    pub(super) fsync: bool,
}

impl LogSettings {
    pub(super) fn from_config(config: &NodeConfig) -> LogSettings {
        LogSettings {
            segment_bytes: config.log.segment_bytes,
            queued_bytes_max: config.log.queued_bytes_max,
            // One batch must fit one write; leave room for the record framing.
            write_bytes_max: config.raft.batch_bytes_max as usize + (1 << 20),
            backend: config.log.backend.clone(),
            fsync: config.log.fsync,
        }
    }

    fn wal_config(&self, notifier: Option<Notifier>) -> WalConfig {
        WalConfig {
            segment_bytes: self.segment_bytes,
            queued_bytes_max: self.queued_bytes_max,
            write_bytes_max: self.write_bytes_max,
            backend: self.backend.clone(),
            sync: if self.fsync {
                SyncMode::Fdatasync
            } else {
                SyncMode::Never
            },
            notifier,
            ..WalConfig::default()
        }
    }
}

/// Opens (or initialises) the data directory and recovers the core's state.
pub(super) fn recover(
    config: &NodeConfig,
    settings: &LogSettings,
    notifier: impl Fn() + Send + Sync + Clone + 'static,
) -> Result<(Recovered, Option<Snapshot>), StartError> {
    let dir = &config.data_dir;
    check_identity(dir, config.cluster, config.id, config.start)?;
    finish_log_replacement(dir)?;
    let snapshot = read_snapshot(dir)?;
    let log_dir = dir.join(LOG_DIR);
    let (wal, recovery) = Wal::open(
        &log_dir,
        settings.wal_config(Some(Box::new(notifier.clone()))),
    )
    .map_err(|error| StartError::Log(format!("{}: {error}", log_dir.display())))?;
    let hard_state = HardState {
        term: Term(recovery.hard_state.term),
        vote: recovery.hard_state.vote.map(NodeId),
    };
    let snapshot_index = snapshot
        .as_ref()
        .map_or(LogIndex(0), |snapshot| snapshot.meta.last.index);
    let mut lost = read_repair_floor(dir)?;
    let mut log_generation = read_log_generation(dir)?;
    let mut log_last = recovery
        .last
        .map(|last| LogId::new(Term(last.term), LogIndex(last.index)));
    if let Some(damage) = assess_damage(&recovery, snapshot_index, hard_state.term) {
        let floor = record_damage(dir, lost, damage.floor, log_generation)?;
        log_generation = log_generation.next();
        lost = Some(floor);
        let cut_from = damage
            .cut_from
            .filter(|cut| log_last.is_some_and(|last| *cut <= last.index));
        if let Some(cut_from) = cut_from {
            let sequence = wal
                .truncate_suffix(cut_from.0)
                .map_err(|error| StartError::Log(format!("{}: {error}", log_dir.display())))?;
            let durable = wal
                .wait_durable(sequence)
                .map_err(|error| StartError::Log(format!("{}: {error}", log_dir.display())))?;
            log_last = durable
                .last
                .map(|last| LogId::new(Term(last.term), LogIndex(last.index)));
        }
        let lost_first = cut_from.map_or_else(|| "?".to_owned(), |cut| cut.0.to_string());
        tracing::warn!(
            node = config.id.0,
            ranges = recovery.damaged.len(),
            first_damage = %damage.described,
            "node {} lost entries {}..={} to damage; refetching from the leader; \
             not voting for candidates behind ({}, {}); not campaigning",
            config.id.0,
            lost_first,
            floor.index.0,
            floor.term.0,
            floor.index.0,
        );
    }
    let limits = config.raft.batch_limits();
    let mut batches = Vec::new();
    // Damage inside the snapshot is never read: start after it then.
    let read_from = |first: barge_wal::EntryId| {
        if recovery.damaged.is_empty() {
            LogIndex(first.index)
        } else {
            LogIndex(first.index).max(snapshot_index.next())
        }
    };
    let first = recovery.first.map(read_from);
    let readable = log_last.filter(|last| first.is_some_and(|first| last.index >= first));
    if let (Some(first), Some(last)) = (first, readable) {
        let stored = wal
            .read(first.0..=last.index.0, usize::MAX)
            .map_err(|error| StartError::Log(format!("reading {}: {error}", log_dir.display())))?;
        for batch in stored {
            let len = batch
                .last
                .checked_sub(batch.first)
                .and_then(|span| u32::try_from(span).ok()?.checked_add(1))
                .ok_or_else(|| {
                    StartError::Log(format!(
                        "batch {}..={} is empty or too long",
                        batch.first, batch.last
                    ))
                })?;
            let decoded = Batch::decode(
                LogIndex(batch.first),
                Term(batch.term),
                len,
                batch.payload,
                limits,
            )
            .map_err(|error| StartError::Corrupt {
                path: log_dir.clone(),
                reason: format!("batch {}..={}: {error}", batch.first, batch.last),
            })?;
            batches.push(decoded);
        }
    }
    let mut wal = wal;
    if let Some(snapshot) = &snapshot {
        let last = snapshot.meta.last;
        // The log continues the snapshot if it is empty, holds the
        // snapshot's last entry with its term, or starts right after it
        // (compaction removed the segment holding it).
        let continues = batches.is_empty()
            || batches
                .iter()
                .any(|batch| batch.contains(last.index) && batch.term() == last.term)
            || batches
                .first()
                .is_some_and(|batch| batch.first() == last.index.next());
        if !continues {
            // A crash between installing a leader's snapshot and replacing
            // the log: the old entries are superseded by the snapshot.
            batches.clear();
            wal = replace_log(dir, wal, settings, hard_state, last.index.next(), notifier)?;
        }
    }
    if let Some(floor) = lost {
        // The core's rule (its `repair` module): the log reaches the floor,
        // or a snapshot (committed state) covers its index.
        let held = batches.last().map(Batch::last_id);
        let reached = held.is_some_and(|held| held >= floor) || snapshot_index >= floor.index;
        if reached {
            // A crash after the repair caught up, before the file went.
            clear_repair_floor(dir)?;
            lost = None;
        }
    }
    let persisted = Persisted {
        hard_state,
        snapshot: snapshot.clone(),
        batches,
        initial_membership: initial_membership(config),
        lost,
        log_generation,
    };
    Ok((Recovered { wal, persisted }, snapshot))
}

/// Module docs, step 2: before the log is cut, makes the next log
/// generation durable, then the repair floor (the higher of `found` and a
/// floor `pending` from an earlier start). Returns the floor written.
fn record_damage(
    dir: &Path,
    pending: Option<LogId>,
    found: LogId,
    generation: LogGeneration,
) -> Result<LogId, StartError> {
    let floor = pending.map_or(found, |pending| pending.max(found));
    write_durably(
        dir,
        GENERATION_FILE,
        &encode_log_generation(generation.next()),
    )?;
    write_durably(dir, REPAIR_FILE, &encode_repair_floor(floor))?;
    Ok(floor)
}

/// What to do about the damage the WAL reported at open.
struct DamagePlan {
    /// First index to discard (everything from here on is refetched);
    /// `None` when no entry the log still holds is hidden.
    cut_from: Option<LogIndex>,
    /// The repair floor: the last entry id the log held before.
    floor: LogId,
    /// The first damaged range, for the log line.
    described: String,
}

/// Decides what to cut and which floor to keep (module docs, step 1), or
/// `None` when all damage lies inside the snapshot.
fn assess_damage(
    recovery: &barge_wal::Recovery,
    snapshot_index: LogIndex,
    term: Term,
) -> Option<DamagePlan> {
    let log_first = recovery
        .first
        .map_or(snapshot_index.next(), |first| LogIndex(first.index))
        .max(snapshot_index.next());
    let mut cut_from: Option<LogIndex> = None;
    let mut last_known = true;
    let mut relevant = false;
    let mut described = String::new();
    for damage in &recovery.damaged {
        if damage.last.is_some_and(|last| last <= snapshot_index.0) {
            continue;
        }
        relevant = true;
        if described.is_empty() {
            described = format!(
                "{} at offset {} ({} bytes, indexes {:?}..={:?})",
                damage.path.display(),
                damage.offset,
                damage.bytes,
                damage.first,
                damage.last
            );
        }
        let from = match (damage.first, damage.last) {
            // Entries from `first` on are lost.
            (Some(first), _) => LogIndex(first),
            // Lost entries up to `last`, their start unknown: everything
            // the log holds after the snapshot may be among them.
            (None, Some(_)) => log_first,
            // Either no entry the log still holds is hidden (a damaged
            // commit record, entries a later truncation voided) or nothing
            // bounds the damage: nothing to cut, but the log's true last
            // entry may be unknown.
            (None, None) => {
                last_known = false;
                continue;
            }
        };
        if damage.last.is_none() {
            last_known = false;
        }
        let from = from.max(snapshot_index.next());
        if cut_from.is_none_or(|cut| from < cut) {
            cut_from = Some(from);
        }
    }
    if !relevant {
        return None;
    }
    let recorded = recovery
        .last
        .map(|last| LogId::new(Term(last.term), LogIndex(last.index)));
    let floor = match recorded {
        Some(last) if last_known => last,
        // The damage may hide the last entries: above anything the log
        // held (no entry's term exceeds the hard state's).
        _ => LogId::new(
            term.max(recorded.map_or(Term(0), |last| last.term)),
            LogIndex(u64::MAX),
        ),
    };
    Some(DamagePlan {
        cut_from,
        floor,
        described,
    })
}

fn encode_repair_floor(floor: LogId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(REPAIR_FILE_BYTES);
    bytes.extend_from_slice(REPAIR_MAGIC);
    bytes.extend_from_slice(&floor.term.0.to_le_bytes());
    bytes.extend_from_slice(&floor.index.0.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode_repair_floor(bytes: &[u8]) -> Result<LogId, &'static str> {
    if bytes.len() != REPAIR_FILE_BYTES {
        return Err("wrong length");
    }
    if &bytes[..8] != REPAIR_MAGIC {
        return Err("bad magic");
    }
    let crc = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if crc32c::crc32c(&bytes[..24]) != crc {
        return Err("checksum mismatch");
    }
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    Ok(LogId::new(Term(word(8)), LogIndex(word(16))))
}

/// The repair floor left by an earlier start, if any.
///
/// A damaged `repair` file is an error, not "no floor": forgetting the floor
/// could let the node vote for a candidate missing entries it acknowledged.
fn read_repair_floor(dir: &Path) -> Result<Option<LogId>, StartError> {
    let path = dir.join(REPAIR_FILE);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(file) => {
            // Bounded: a longer file is corrupt anyway.
            file.take(REPAIR_FILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(io_error(&path))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StartError::Io { path, source }),
    }
    decode_repair_floor(&bytes)
        .map(Some)
        .map_err(|reason| StartError::Corrupt {
            path,
            reason: reason.to_owned(),
        })
}

fn encode_log_generation(generation: LogGeneration) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(GENERATION_FILE_BYTES);
    bytes.extend_from_slice(GENERATION_MAGIC);
    bytes.extend_from_slice(&generation.0.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode_log_generation(bytes: &[u8]) -> Result<LogGeneration, &'static str> {
    if bytes.len() != GENERATION_FILE_BYTES {
        return Err("wrong length");
    }
    if &bytes[..8] != GENERATION_MAGIC {
        return Err("bad magic");
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32c::crc32c(&bytes[..16]) != crc {
        return Err("checksum mismatch");
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[8..16]);
    Ok(LogGeneration(u64::from_le_bytes(word)))
}

/// How many times damage cut this node's log back (0 without the file).
///
/// A damaged `log.generation` file is an error, not 0: a generation that
/// went backwards would make leaders take this node's answers for stale.
fn read_log_generation(dir: &Path) -> Result<LogGeneration, StartError> {
    let path = dir.join(GENERATION_FILE);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(file) => {
            // Bounded: a longer file is corrupt anyway.
            file.take(GENERATION_FILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(io_error(&path))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogGeneration(0));
        }
        Err(source) => return Err(StartError::Io { path, source }),
    }
    decode_log_generation(&bytes).map_err(|reason| StartError::Corrupt {
        path,
        reason: reason.to_owned(),
    })
}

/// Drops the persisted repair floor: call once the core reports
/// `repair_floor() == None` (it clears the floor only on durable state, so
/// a crash after this cannot bring back a node that forgot its promises).
///
/// # Errors
/// [`StartError::Io`] if the file cannot be removed or the directory synced.
pub(super) fn clear_repair_floor(dir: &Path) -> Result<(), StartError> {
    let path = dir.join(REPAIR_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StartError::Io { path, source }),
    }
}

/// The configuration a node starts from when neither its log nor a snapshot
/// holds one. A joining node leaves itself out, so it never counts itself
/// a voter (or campaigns) before the leader's log says it is one; the
/// other voters only serve as a placeholder until that log arrives.
fn initial_membership(config: &NodeConfig) -> Membership {
    let joining = config.start == StartMode::Join;
    Membership::new(
        config
            .initial_voters
            .iter()
            .copied()
            .filter(|voter| !joining || *voter != config.id),
    )
}

/// Replaces the log with an empty one that continues at `next` and holds
/// `hard_state` (see the module docs for the crash analysis).
pub(super) fn replace_log(
    dir: &Path,
    old: Wal,
    settings: &LogSettings,
    hard_state: HardState,
    next: LogIndex,
    notifier: impl Fn() + Send + Sync + 'static,
) -> Result<Wal, StartError> {
    old.shutdown()
        .map_err(|error| StartError::Log(format!("closing the old log: {error}")))?;
    let next_dir = dir.join(LOG_NEXT_DIR);
    if next_dir.exists() {
        fs::remove_dir_all(&next_dir).map_err(io_error(&next_dir))?;
    }
    let (fresh, _) = Wal::open(&next_dir, settings.wal_config(None))
        .map_err(|error| StartError::Log(format!("{}: {error}", next_dir.display())))?;
    let sequence = fresh
        .save_hard_state(WalHardState {
            term: hard_state.term.0,
            vote: hard_state.vote.map(|vote| vote.0),
            commit: next.prev().0,
        })
        .map_err(|error| StartError::Log(error.to_string()))?;
    fresh
        .wait_durable(sequence)
        .map_err(|error| StartError::Log(error.to_string()))?;
    fresh
        .shutdown()
        .map_err(|error| StartError::Log(error.to_string()))?;
    let log_dir = dir.join(LOG_DIR);
    fs::remove_dir_all(&log_dir).map_err(io_error(&log_dir))?;
    fs::rename(&next_dir, &log_dir).map_err(io_error(&log_dir))?;
    sync_dir(dir)?;
    let (wal, recovery) = Wal::open(&log_dir, settings.wal_config(Some(Box::new(notifier))))
        .map_err(|error| StartError::Log(format!("{}: {error}", log_dir.display())))?;
    if recovery.last.is_some() {
        return Err(StartError::Log(format!(
            "{}: replacement log for index {} is not empty",
            log_dir.display(),
            next.0
        )));
    }
    Ok(wal)
}

fn finish_log_replacement(dir: &Path) -> Result<(), StartError> {
    let next_dir = dir.join(LOG_NEXT_DIR);
    if !next_dir.exists() {
        return Ok(());
    }
    let log_dir = dir.join(LOG_DIR);
    if log_dir.exists() {
        // The preparation did not finish: the old log is still the log.
        fs::remove_dir_all(&next_dir).map_err(io_error(&next_dir))?;
    } else {
        fs::rename(&next_dir, &log_dir).map_err(io_error(&log_dir))?;
    }
    sync_dir(dir)
}

fn identity_line(cluster: u64, id: NodeId) -> String {
    format!("barge-node v1 cluster={cluster} id={}\n", id.0)
}

fn check_identity(
    dir: &Path,
    cluster: u64,
    id: NodeId,
    start: StartMode,
) -> Result<(), StartError> {
    let path = dir.join(IDENTITY_FILE);
    let expected = identity_line(cluster, id);
    match fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(StartError::WrongDataDirectory {
            path: dir.to_path_buf(),
            found: found.trim().to_owned(),
            expected: expected.trim().to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if start == StartMode::Existing {
                return Err(StartError::FreshDataDirectory(dir.to_path_buf()));
            }
            if dir.join(LOG_DIR).exists() {
                return Err(StartError::Corrupt {
                    path: path.clone(),
                    reason: "missing, but a log exists beside it".to_owned(),
                });
            }
            fs::create_dir_all(dir).map_err(io_error(dir))?;
            write_durably(dir, IDENTITY_FILE, expected.as_bytes())
        }
        Err(error) => Err(StartError::Io {
            path,
            source: error,
        }),
    }
}

/// Writes `name` in `dir` atomically and durably (temp file, fsync, rename,
/// directory fsync).
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StartError> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    let path = dir.join(name);
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StartError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// Makes `snapshot` the node's durable snapshot.
pub(super) fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<(), StartError> {
    let membership = snapshot.meta.membership.encode();
    let mut bytes = Vec::with_capacity(40 + membership.len() + snapshot.data.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&snapshot.meta.last.term.0.to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta.last.index.0.to_le_bytes());
    // Membership is bounded by MEMBERS_MAX entries, far below 4 GiB.
    bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&membership);
    bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&snapshot.data);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temporary = dir.join(SNAPSHOT_TMP_FILE);
    let _ = fs::remove_file(&temporary);
    write_durably(dir, SNAPSHOT_FILE, &bytes)
}

fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StartError> {
    let path = dir.join(SNAPSHOT_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StartError::Io {
                path,
                source: error,
            })
        }
    };
    let corrupt = |reason: &str| StartError::Corrupt {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let len = file.metadata().map_err(io_error(&path))?.len();
    if len > SNAPSHOT_FILE_BYTES_MAX {
        return Err(corrupt("larger than the 4 GiB snapshot bound"));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(io_error(&path))?;
    parse_snapshot(&bytes).map_err(corrupt)
}

fn parse_snapshot(bytes: &[u8]) -> Result<Option<Snapshot>, &'static str> {
    if bytes.len() < 40 {
        return Err("shorter than a snapshot header");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "checksum")?);
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch");
    }
    let mut rest = body;
    let mut take = |len: usize| -> Result<&[u8], &'static str> {
        if rest.len() < len {
            return Err("truncated");
        }
        let (head, tail) = rest.split_at(len);
        rest = tail;
        Ok(head)
    };
    if take(8)? != SNAPSHOT_MAGIC {
        return Err("bad magic");
    }
    let u64_at = |slice: &[u8]| u64::from_le_bytes(slice.try_into().unwrap_or([0; 8]));
    let term = u64_at(take(8)?);
    let index = u64_at(take(8)?);
    let membership_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "length")?) as usize;
    let membership = Membership::decode(take(membership_len)?).map_err(|_| "bad membership")?;
    let data_len = u64_at(take(8)?) as usize;
    let data = Bytes::copy_from_slice(take(data_len)?);
    if !rest.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Some(Snapshot {
        meta: SnapshotMeta {
            last: LogId::new(Term(term), LogIndex(index)),
            membership,
        },
        data,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use barge_wal::{Damage, EntryId, Recovery};

    use super::*;

    fn damage(first: Option<u64>, last: Option<u64>) -> Damage {
        Damage {
            path: PathBuf::from("seg"),
            offset: 4096,
            bytes: 512,
            first,
            last,
        }
    }

    fn recovery(first: u64, last: u64, damaged: Vec<Damage>) -> Recovery {
        Recovery {
            first: Some(EntryId {
                term: 1,
                index: first,
            }),
            last: Some(EntryId {
                term: 2,
                index: last,
            }),
            damaged,
            ..Recovery::default()
        }
    }

    #[test]
    fn damage_plan_cuts_from_the_first_damaged_index_and_keeps_the_last_id() {
        let found = recovery(
            1,
            100,
            vec![damage(Some(40), Some(49)), damage(Some(70), Some(79))],
        );
        let plan = assess_damage(&found, LogIndex(0), Term(3)).expect("damage");
        assert_eq!(plan.cut_from, Some(LogIndex(40)));
        assert_eq!(plan.floor, LogId::new(Term(2), LogIndex(100)));

        // Inside the snapshot: ignored.
        let inside = recovery(1, 100, vec![damage(Some(10), Some(19))]);
        assert!(assess_damage(&inside, LogIndex(20), Term(3)).is_none());
        // Straddling it: cut after the snapshot.
        let straddling = recovery(1, 100, vec![damage(Some(10), Some(29))]);
        let plan = assess_damage(&straddling, LogIndex(20), Term(3)).expect("damage");
        assert_eq!(plan.cut_from, Some(LogIndex(21)));

        // Start unknown: everything after the snapshot may be lost.
        let unknown_start = recovery(5, 100, vec![damage(None, Some(60))]);
        let plan = assess_damage(&unknown_start, LogIndex(0), Term(3)).expect("damage");
        assert_eq!(plan.cut_from, Some(LogIndex(5)));
        assert_eq!(plan.floor, LogId::new(Term(2), LogIndex(100)));

        // Damage to the end of the log hides the last id: the most
        // conservative floor.
        let to_the_end = recovery(1, 39, vec![damage(Some(40), None)]);
        let plan = assess_damage(&to_the_end, LogIndex(0), Term(3)).expect("damage");
        assert_eq!(plan.cut_from, Some(LogIndex(40)));
        assert_eq!(plan.floor, LogId::new(Term(3), LogIndex(u64::MAX)));
        let unbounded = recovery(1, 39, vec![damage(None, None)]);
        let plan = assess_damage(&unbounded, LogIndex(0), Term(3)).expect("damage");
        assert_eq!(plan.cut_from, None);
        assert_eq!(plan.floor, LogId::new(Term(3), LogIndex(u64::MAX)));
    }

    #[test]
    fn repair_floor_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_repair_floor(dir.path()).expect("absent"), None);
        let floor = LogId::new(Term(7), LogIndex(1234));
        write_durably(dir.path(), REPAIR_FILE, &encode_repair_floor(floor)).expect("write");
        assert_eq!(read_repair_floor(dir.path()).expect("read"), Some(floor));

        let path = dir.path().join(REPAIR_FILE);
        let mut bytes = fs::read(&path).expect("read file");
        bytes[12] ^= 0x10;
        fs::write(&path, &bytes).expect("write back");
        assert!(matches!(
            read_repair_floor(dir.path()),
            Err(StartError::Corrupt { .. })
        ));
        fs::write(&path, vec![0u8; 1 << 16]).expect("oversized");
        assert!(matches!(
            read_repair_floor(dir.path()),
            Err(StartError::Corrupt { .. })
        ));
        clear_repair_floor(dir.path()).expect("remove");
        clear_repair_floor(dir.path()).expect("already gone");
        assert_eq!(read_repair_floor(dir.path()).expect("absent"), None);
    }

    #[test]
    fn damage_raises_the_generation_and_the_floor_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let found = LogId::new(Term(2), LogIndex(40));
        let generation = read_log_generation(dir.path()).expect("absent");
        let floor = record_damage(dir.path(), None, found, generation).expect("record");
        assert_eq!(floor, found);
        assert_eq!(
            read_log_generation(dir.path()).expect("read"),
            LogGeneration(1)
        );
        assert_eq!(read_repair_floor(dir.path()).expect("read"), Some(found));

        // Damage found again at the next start (a crash before the cut, or
        // new damage): the generation grows again, the floor never falls.
        let lower = LogId::new(Term(2), LogIndex(30));
        let floor =
            record_damage(dir.path(), Some(found), lower, LogGeneration(1)).expect("record again");
        assert_eq!(floor, found);
        assert_eq!(
            read_log_generation(dir.path()).expect("read"),
            LogGeneration(2)
        );
        // Clearing the floor keeps the generation.
        clear_repair_floor(dir.path()).expect("clear");
        assert_eq!(read_repair_floor(dir.path()).expect("absent"), None);
        assert_eq!(
            read_log_generation(dir.path()).expect("kept"),
            LogGeneration(2)
        );
    }

    #[test]
    fn log_generation_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_log_generation(dir.path()).expect("absent"),
            LogGeneration(0)
        );
        let generation = LogGeneration(3);
        write_durably(
            dir.path(),
            GENERATION_FILE,
            &encode_log_generation(generation),
        )
        .expect("write");
        assert_eq!(read_log_generation(dir.path()).expect("read"), generation);

        let path = dir.path().join(GENERATION_FILE);
        let mut bytes = fs::read(&path).expect("read file");
        bytes[9] ^= 0x01;
        fs::write(&path, &bytes).expect("write back");
        let error = read_log_generation(dir.path()).unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
        fs::write(&path, &bytes[..12]).expect("truncated");
        let error = read_log_generation(dir.path()).unwrap_err();
        assert!(error.to_string().contains("wrong length"), "{error}");
        fs::write(&path, vec![0u8; 1 << 16]).expect("oversized");
        assert!(matches!(
            read_log_generation(dir.path()),
            Err(StartError::Corrupt { .. })
        ));
    }

    #[test]
    fn snapshot_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last: LogId::new(Term(3), LogIndex(42)),
                membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            },
            data: Bytes::from_static(b"state machine bytes"),
        };
        write_snapshot(dir.path(), &snapshot).expect("write");
        let read = read_snapshot(dir.path()).expect("read").expect("present");
        assert_eq!(read, snapshot);

        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).expect("read file");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        fs::write(&path, &bytes).expect("write file");
        let error = read_snapshot(dir.path()).unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn identity_guards_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("node");
        let error = check_identity(&data, 7, NodeId(1), StartMode::Existing).unwrap_err();
        assert!(
            matches!(error, StartError::FreshDataDirectory(_)),
            "{error}"
        );
        check_identity(&data, 7, NodeId(1), StartMode::New).expect("initialises");
        check_identity(&data, 7, NodeId(1), StartMode::Existing).expect("recognises");
        let error = check_identity(&data, 7, NodeId(2), StartMode::Existing).unwrap_err();
        assert!(
            matches!(error, StartError::WrongDataDirectory { .. }),
            "{error}"
        );
        let error = check_identity(&data, 8, NodeId(1), StartMode::New).unwrap_err();
        assert!(
            matches!(error, StartError::WrongDataDirectory { .. }),
            "{error}"
        );
    }
}
