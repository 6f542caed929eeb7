//! Open-time scan: rebuilds the index, the hard state and the write
//! position, cuts a torn tail, and bounds any corruption.
//! The crash-case analysis is in [`crate::format`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::disk::{context, Disk};
use crate::format::{
    align_up, commit_record_bytes, decode_hard_state, parse_segment_name, parse_spare_name, Kind,
    RecordHeader, SegmentHeader, BLOCK_BYTES, COMMIT_MIN_BYTES, RECORD_HEADER_BYTES,
};
use crate::index::{BatchEntry, Location};
use crate::{EntryId, HardState, WalError};

/// Largest segment file recovery will read (guards the allocation against a
/// hostile or damaged directory).
pub(crate) const SEGMENT_BYTES_LIMIT: u64 = 4 << 30;

/// A damaged stretch of the log found at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Segment file.
    pub path: PathBuf,
    /// Offset of the first bad byte.
    pub offset: u64,
    /// Length of the bad region in bytes.
    pub bytes: u64,
    /// First index lost. `None` when the damage hides no entry the log
    /// still holds (for example a damaged commit record, or entries a later
    /// truncation voided) or when nothing before it bounds it.
    pub first: Option<u64>,
    /// Last index lost; `None` when unknown or no entry is lost.
    pub last: Option<u64>,
}

/// What [`crate::Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The last durable hard state (default if none was ever saved).
    pub hard_state: HardState,
    /// First stored entry.
    pub first: Option<EntryId>,
    /// Last stored entry.
    pub last: Option<EntryId>,
    /// The index the next append must start at, if known (after a truncate
    /// with no later append, `last + 1` may not be it).
    pub next_index: Option<u64>,
    /// Corruption outside the torn tail. Entries in these ranges cannot be
    /// read; the engine should fetch them again from a peer (for a follower,
    /// `truncate_suffix(first)` and let the leader resend).
    pub damaged: Vec<Damage>,
    /// Where a torn tail was cut, when the torn bytes were recognisably a
    /// record of this log (a group whose first sector never reached the
    /// disk looks like unwritten space and is simply the end of the log).
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Segment bookkeeping shared with the writer and compaction.
#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    pub name: String,
}

/// The segment the writer continues in.
#[derive(Clone, Debug)]
pub(crate) struct Active {
    pub sequence: u64,
    pub name: String,
    pub incarnation: u64,
    /// Next write offset (block-aligned).
    pub position: u64,
    /// No more groups fit (a seal was written): roll before writing.
    pub sealed: bool,
    /// File size (a reopen may configure another segment size).
    pub len: u64,
}

/// Everything recovery hands to the live log.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub report: Recovery,
    pub batches: Vec<BatchEntry>,
    pub segments: BTreeMap<u64, SegmentMeta>,
    pub active: Option<Active>,
    pub spares: Vec<String>,
    pub sequence_max: u64,
    pub incarnation_max: u64,
}

#[derive(Debug)]
enum Item {
    Record { offset: u64, header: RecordHeader },
    Bad { start: u64, end: u64 },
}

/// Commit payload flag: this commit closes the segment.
pub(crate) const COMMIT_SEAL: u64 = 1;

fn valid_record(data: &[u8], offset: u64, incarnation: u64) -> Option<RecordHeader> {
    let start = usize::try_from(offset).ok()?;
    crate::format::decode_record(data.get(start..)?, incarnation).map(|(header, _)| header)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Pass 1: split a segment into valid records and bad regions.
fn scan(data: &[u8], incarnation: u64) -> Vec<Item> {
    let len = data.len() as u64;
    let mut items = Vec::new();
    let mut offset = BLOCK_BYTES as u64;
    while offset < len {
        if let Some(header) = valid_record(data, offset, incarnation) {
            items.push(Item::Record { offset, header });
            let payload_at = offset as usize + RECORD_HEADER_BYTES;
            if header.kind == Kind::Commit && u64_at(data, payload_at + 8) & COMMIT_SEAL != 0 {
                break;
            }
            offset += header.record_bytes() as u64;
            continue;
        }
        let start = offset;
        let mut resume = align_up(offset + 1);
        while resume < len && valid_record(data, resume, incarnation).is_none() {
            resume += BLOCK_BYTES as u64;
        }
        let end = resume.min(len);
        items.push(Item::Bad { start, end });
        offset = end;
    }
    items
}

/// Replays records into the recovered state.
struct Replay<'a> {
    out: &'a mut Recovered,
    next: Option<u64>,
    /// Index of the damage entry whose `last` the next batch bounds.
    open_damage: Option<usize>,
}

impl Replay<'_> {
    fn damage(&mut self, path: PathBuf, start: u64, end: u64) {
        self.out.report.damaged.push(Damage {
            path,
            offset: start,
            bytes: end - start,
            first: self.next,
            last: None,
        });
        self.open_damage = Some(self.out.report.damaged.len() - 1);
        self.next = None;
    }

    /// Applies one valid record; false if it does not continue the log.
    fn apply(&mut self, data: &[u8], segment: u64, offset: u64, header: &RecordHeader) -> bool {
        let payload_at = offset as usize + RECORD_HEADER_BYTES;
        let payload = &data[payload_at..payload_at + header.payload_len as usize];
        match header.kind {
            Kind::Batch => {
                if self.next.is_some_and(|next| next != header.first) {
                    return false;
                }
                if let Some(position) = self.open_damage.take() {
                    let damage = &mut self.out.report.damaged[position];
                    damage.last = header.first.checked_sub(1);
                    if damage.first.is_some_and(|first| first > header.first) {
                        damage.first = None;
                    }
                }
                if let Some(back) = self.out.batches.last() {
                    if back.last >= header.first {
                        // Only possible after damage hid a truncate record.
                        self.truncate(header.first);
                    }
                }
                self.out.batches.push(BatchEntry {
                    first: header.first,
                    last: header.last,
                    term: header.term,
                    sequence: 0,
                    payload_len: header.payload_len,
                    location: Some(Location { segment, offset }),
                    cached: None,
                });
                self.next = Some(header.last + 1);
            }
            Kind::HardState => match decode_hard_state(payload) {
                Some(state) => self.out.report.hard_state = state,
                None => return false,
            },
            Kind::Truncate => {
                self.truncate(header.first);
                self.open_damage = None;
                self.next = Some(header.first);
            }
            Kind::Commit => {}
        }
        true
    }

    fn truncate(&mut self, from: u64) {
        self.out.batches.retain(|batch| batch.first < from);
        if let Some(back) = self.out.batches.last_mut() {
            back.last = back.last.min(from.saturating_sub(1));
        }
        clamp_damage(&mut self.out.report.damaged, from);
    }
}

/// A truncation from `from` voids entries at and above it: damage there no
/// longer hides any entry (it stays listed, as a sign of a failing disk).
pub(crate) fn clamp_damage(damaged: &mut [Damage], from: u64) {
    for damage in damaged {
        if damage.first.is_some_and(|first| first >= from) {
            damage.first = None;
            damage.last = None;
        } else if damage.first.is_some() && damage.last.is_none_or(|last| last >= from) {
            damage.last = from.checked_sub(1);
        }
    }
}

/// Scans the directory and returns the recovered state; cuts and zeroes a
/// torn tail and turns a never-initialised last segment back into a spare.
pub(crate) fn recover(disk: &dyn Disk) -> Result<Recovered, WalError> {
    let names = context(disk, "", disk.list())?;
    let mut out = Recovered::default();
    let mut segments: Vec<(u64, u64, String)> = Vec::new();
    let mut removed_temporary = false;
    for name in names {
        if let Some((sequence, first)) = parse_segment_name(&name) {
            segments.push((sequence, first, name));
        } else if parse_spare_name(&name).is_some() {
            out.spares.push(name);
        } else if name.ends_with(".tmp") {
            context(disk, &name, disk.remove(&name))?;
            removed_temporary = true;
        }
    }
    if removed_temporary {
        context(disk, "", disk.sync_dir())?;
    }
    segments.sort();
    out.sequence_max = segments.last().map_or(0, |segment| segment.0);
    if let Some((sequence, first, name)) = segments.last().cloned() {
        // A roll renames a spare into place before the previous segment's
        // last write completes and before the new header is written: a last
        // segment whose header is not (yet) valid holds nothing acknowledged
        // and becomes a spare again.
        let len = context(disk, &name, disk.len(&name))?;
        let mut block = vec![0u8; (BLOCK_BYTES as u64).min(len) as usize];
        context(disk, &name, disk.read_at(&name, 0, &mut block))?;
        let valid = SegmentHeader::decode_block(&block, |header| {
            header.sequence == sequence && header.first == first
        });
        if valid.is_none() {
            let spare = crate::format::spare_name(sequence | (1 << 63));
            context(disk, &name, disk.rename(&name, &spare))?;
            context(disk, "", disk.sync_dir())?;
            out.spares.push(spare);
            segments.pop();
        }
    }
    let mut replay_next: Option<u64> = None;
    let mut open_damage: Option<usize> = None;
    let count = segments.len();
    for (position, (sequence, first, name)) in segments.into_iter().enumerate() {
        let is_last = position + 1 == count;
        let path = disk.path(&name);
        let len = context(disk, &name, disk.len(&name))?;
        if len > SEGMENT_BYTES_LIMIT {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: format!("segment is {len} bytes, above the {SEGMENT_BYTES_LIMIT} limit"),
            });
        }
        let mut data = vec![0u8; len as usize];
        context(disk, &name, disk.read_at(&name, 0, &mut data))?;
        let header = SegmentHeader::decode_block(&data, |header| {
            header.sequence == sequence && header.first == first
        });
        let Some(header) = header else {
            let mut replay = Replay {
                out: &mut out,
                next: replay_next,
                open_damage,
            };
            replay.damage(path, 0, len);
            replay_next = replay.next;
            open_damage = replay.open_damage;
            out.segments.insert(sequence, SegmentMeta { name });
            continue;
        };
        out.incarnation_max = out.incarnation_max.max(header.incarnation);
        let items = scan(&data, header.incarnation);
        let mut sealed_at = None;
        let mut claim = 0u64;
        for item in &items {
            if let Item::Record { offset, header } = item {
                if header.kind == Kind::Commit {
                    let payload_at = *offset as usize + RECORD_HEADER_BYTES;
                    claim = claim.max(u64_at(&data, payload_at));
                    if u64_at(&data, payload_at + 8) & COMMIT_SEAL != 0 {
                        sealed_at = Some(*offset);
                    }
                }
            }
        }
        // Every segment but the last was synced in full before the next one
        // was started; in the last, only the commit claims say what is.
        let known_synced = if is_last { claim } else { len };
        let mut replay = Replay {
            out: &mut out,
            next: replay_next,
            open_damage,
        };
        let mut cut: Option<u64> = None;
        let mut end_of_data = BLOCK_BYTES as u64;
        for (number, item) in items.iter().enumerate() {
            let bad = match item {
                Item::Record { offset, header } => {
                    if replay.apply(&data, sequence, *offset, header) {
                        end_of_data = offset + header.record_bytes() as u64;
                        None
                    } else {
                        let end = match items.get(number + 1) {
                            Some(Item::Record { offset, .. }) => *offset,
                            Some(Item::Bad { start, .. }) => *start,
                            None => len,
                        };
                        Some((*offset, end))
                    }
                }
                Item::Bad { start, end } => Some((*start, *end)),
            };
            if let Some((start, end)) = bad {
                if start >= known_synced {
                    cut = Some(start);
                    break;
                }
                replay.damage(path.clone(), start, end);
            }
        }
        replay_next = replay.next;
        open_damage = replay.open_damage;
        out.segments
            .insert(sequence, SegmentMeta { name: name.clone() });
        if !is_last {
            continue;
        }
        let aligned_len = len / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
        let mut position = align_up(end_of_data);
        let mut sealed = sealed_at.is_some();
        if let Some(cut) = cut {
            let dirty_end = items
                .iter()
                .filter_map(|item| match item {
                    Item::Record { offset, header } if *offset >= cut => {
                        Some(offset + header.record_bytes() as u64)
                    }
                    _ => None,
                })
                .max()
                .unwrap_or(cut);
            let at = cut as usize;
            let ours = data
                .get(at + 16..at + 24)
                .is_some_and(|bytes| bytes == header.incarnation.to_le_bytes());
            if dirty_end > cut || cut % BLOCK_BYTES as u64 != 0 || ours {
                let end = align_up(dirty_end.max(cut + COMMIT_MIN_BYTES as u64)).min(len);
                let mut zeros = vec![0u8; (end - cut) as usize];
                let fits = cut + commit_record_bytes(cut) + BLOCK_BYTES as u64 <= len;
                let commit_bytes = if fits {
                    commit_record_bytes(cut)
                } else {
                    COMMIT_MIN_BYTES as u64
                };
                let flags = if fits { 0 } else { COMMIT_SEAL };
                encode_commit(
                    &mut zeros,
                    header.incarnation,
                    commit_bytes as usize,
                    cut,
                    flags,
                );
                context(disk, &name, disk.write_at(&name, cut, &zeros))?;
                context(disk, &name, disk.sync(&name))?;
                out.report.torn_tail = Some((path.clone(), cut));
                position = cut + commit_bytes;
                sealed = !fits;
            } else {
                position = cut;
            }
        }
        out.active = Some(Active {
            sequence,
            name,
            incarnation: header.incarnation,
            position: align_up(position),
            sealed: sealed || align_up(position) + BLOCK_BYTES as u64 > aligned_len,
            len: aligned_len,
        });
    }
    if let Some(last) = out.batches.last() {
        replay_next = Some(last.last + 1).max(replay_next);
    }
    out.report.next_index = replay_next;
    out.report.first = out.batches.first().map(|batch| EntryId {
        term: batch.term,
        index: batch.first,
    });
    out.report.last = out.batches.last().map(|batch| EntryId {
        term: batch.term,
        index: batch.last,
    });
    Ok(out)
}

/// Encodes a commit record of `record_bytes` total bytes into
/// `out[..record_bytes]`: claim `synced_upto`, `flags`, zero padding.
pub(crate) fn encode_commit(
    out: &mut [u8],
    incarnation: u64,
    record_bytes: usize,
    synced_upto: u64,
    flags: u64,
) {
    let payload_len = record_bytes - RECORD_HEADER_BYTES;
    let payload = &mut out[RECORD_HEADER_BYTES..record_bytes];
    payload.fill(0);
    payload[0..8].copy_from_slice(&synced_upto.to_le_bytes());
    payload[8..16].copy_from_slice(&flags.to_le_bytes());
    let header = RecordHeader {
        payload_len: payload_len as u32,
        kind: Kind::Commit,
        payload_crc: crc32c::crc32c(payload),
        incarnation,
        first: 0,
        last: 0,
        term: 0,
    };
    header.encode(out);
}
