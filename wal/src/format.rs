//! On-disk format: segment header block and records.
//!
//! All integers are little-endian. CRC32C is the Castagnoli polynomial.
//!
//! # Segment file
//!
//! A segment is named `{sequence:016x}-{first:016x}.wal`: `sequence` orders
//! segments (recovery reads them in that order) and `first` is the index the
//! log expected next when the segment was started (after a later
//! `truncate_suffix` the segment may also hold smaller indices). Spare
//! segments waiting for reuse are named `spare-{n:016x}.wal`; `*.tmp` files
//! are unfinished spares and are deleted at open. Every segment is written
//! in full (zeros, or an older segment's bytes) before it is used, so that
//! `fdatasync` never has to commit file-system metadata.
//!
//! The first [`BLOCK_BYTES`] bytes are the header block:
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! | 0      | 8    | magic `b"BARGEWAL"`                               |
//! | 8      | 4    | format version (1)                                |
//! | 12     | 4    | CRC32C of bytes 0..12 and 16..40                  |
//! | 16     | 8    | incarnation: random per use of the file           |
//! | 24     | 8    | sequence (must equal the file name's)             |
//! | 32     | 8    | first index (must equal the file name's)          |
//! | 40     | 2008 | zero                                              |
//! | 2048   | 40   | a second copy of bytes 0..40 (a flipped bit in one |
//! |        |      | copy must not make recovery think the segment was  |
//! |        |      | never initialised and drop its records)            |
//! | 2088   | 2008 | zero                                              |
//!
//! Records follow from offset [`BLOCK_BYTES`], back to back:
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! | 0      | 4    | CRC32C of header bytes 4..48                      |
//! | 4      | 4    | payload length in bytes                           |
//! | 8      | 1    | kind: 1 batch, 2 hard state, 3 truncate, 4 commit |
//! | 9      | 3    | zero                                              |
//! | 12     | 4    | CRC32C of the payload                             |
//! | 16     | 8    | incarnation (must equal the segment header's)     |
//! | 24     | 8    | first index (batch; truncate: `from`)             |
//! | 32     | 8    | last index (batch)                                |
//! | 40     | 8    | term (batch)                                      |
//! | 48     | len  | payload                                           |
//!
//! Payloads by kind:
//! - **batch**: the engine's opaque bytes, as appended.
//! - **hard state**: term u64, vote-present u64 (0 or 1), vote u64, commit u64.
//! - **truncate**: empty; every entry with index >= `first` written before
//!   it is void, and the next batch starts at `first`. Each segment starts
//!   with a hard-state record and a truncate record naming the next index,
//!   so a segment never depends on an earlier one that compaction removed.
//! - **commit**: closes one group-commit write. Its payload starts with a
//!   u64 `synced_upto`: the offset in this segment below which every byte was
//!   already durable when the group was formed (a fact whether or not this
//!   record itself survives), then u64 flags (bit 0: *seal*, the segment
//!   ends here; written before rolling to the next segment, so recovery
//!   knows where a full segment's data ends). The rest is zero padding up to the next
//!   [`BLOCK_BYTES`] boundary, so the next group starts block-aligned and two
//!   writes in flight never share a block.
//!
//! # What recovery does in each crash case
//!
//! Recovery scans each segment in sequence order. A record is valid when
//! both CRCs match, its incarnation is the segment's and its indices continue
//! the log. After an invalid record the scan resumes at the next block
//! boundary that holds a valid record (groups start block-aligned). For each
//! segment a *known-synced* offset is computed: the file end for every
//! segment but the last (a segment is synced completely before the next one
//! is started), and the largest `synced_upto` of any valid commit record for
//! the last one.
//!
//! - **Crash before a group's write reached the disk**: the group's blocks
//!   hold zeros or stale bytes of an older incarnation, both invalid, both at
//!   or above known-synced: this is the end of the log. Nothing acknowledged
//!   is lost because a waiter is completed only after its sync.
//! - **Torn group (some 512 B sectors written, others not)**: the first bad
//!   record lies at or above known-synced. The log is cut there, and bytes of
//!   the current incarnation after the cut are zeroed (so a later torn write
//!   can never make them look like a continuation). Valid groups after the
//!   cut came from a pipelined write whose predecessor was lost; none of them
//!   was acknowledged (completion is in order), so they are dropped too.
//! - **Crash between renaming a spare to a segment name and writing its
//!   header**: the last segment's header is invalid or names another
//!   sequence; the segment held nothing durable and becomes a spare again.
//! - **Crash during truncate or compaction**: a truncate is a record, durable
//!   like any other; until it is durable recovery yields the longer log,
//!   which is still a log the engine wrote. Compaction removes whole segments
//!   oldest first and syncs the directory after each removal, so any crash
//!   leaves a suffix of segments.
//! - **Bit rot or a lost write below known-synced**: corruption. The damaged
//!   byte range and, where neighbours bound it, the index range are returned
//!   in [`crate::Recovery::damaged`]; reads of those indices fail with
//!   [`crate::WalError::Damaged`]. Corruption in the last group of the last
//!   segment after a crash cannot be told apart from a torn write and is
//!   treated as one; a clean shutdown writes a final commit record, which
//!   makes every earlier record known-synced.

/// Alignment and padding unit of group writes (and of O_DIRECT buffers).
pub const BLOCK_BYTES: usize = 4096;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 48;
/// Smallest commit record: header plus the `synced_upto` and flags fields.
pub const COMMIT_MIN_BYTES: usize = RECORD_HEADER_BYTES + 16;
/// Payload size of a hard-state record.
pub const HARD_STATE_BYTES: usize = 32;

const MAGIC: &[u8; 8] = b"BARGEWAL";
const VERSION: u32 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A batch of entries (opaque payload).
    Batch = 1,
    /// A hard state.
    HardState = 2,
    /// Truncate suffix from `first`.
    Truncate = 3,
    /// End of a group write, with the synced-upto claim and padding.
    Commit = 4,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Batch),
            2 => Some(Kind::HardState),
            3 => Some(Kind::Truncate),
            4 => Some(Kind::Commit),
            _ => None,
        }
    }
}

/// Decoded fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length.
    pub payload_len: u32,
    /// Record kind.
    pub kind: Kind,
    /// CRC32C of the payload.
    pub payload_crc: u32,
    /// Incarnation of the segment that wrote it.
    pub incarnation: u64,
    /// First index (batch), `from` (truncate), else 0.
    pub first: u64,
    /// Last index (batch), else 0.
    pub last: u64,
    /// Term (batch), else 0.
    pub term: u64,
}

/// Why a header did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// Fewer than [`RECORD_HEADER_BYTES`] bytes left.
    Short,
    /// All zero: never written.
    Zero,
    /// Header CRC mismatch.
    Checksum,
    /// CRC matched but a field is impossible (kind, reserved bytes, ranges).
    Field,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

impl RecordHeader {
    /// Total record size (header and payload).
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload_len as usize
    }

    /// Writes the header, computing its CRC, into `out[..RECORD_HEADER_BYTES]`.
    ///
    /// # Panics
    /// If `out` is shorter than [`RECORD_HEADER_BYTES`] (a caller bug).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..RECORD_HEADER_BYTES];
        out[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        out[8] = self.kind as u8;
        out[9..12].fill(0);
        out[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_le_bytes());
        out[24..32].copy_from_slice(&self.first.to_le_bytes());
        out[32..40].copy_from_slice(&self.last.to_le_bytes());
        out[40..48].copy_from_slice(&self.term.to_le_bytes());
        let crc = crc32c::crc32c(&out[4..]);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks a header (not the payload).
    ///
    /// # Errors
    /// [`HeaderFault`] says why the bytes are not a header.
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, HeaderFault> {
        let Some(bytes) = bytes.get(..RECORD_HEADER_BYTES) else {
            return Err(HeaderFault::Short);
        };
        if bytes.iter().all(|&byte| byte == 0) {
            return Err(HeaderFault::Zero);
        }
        if u32_at(bytes, 0) != crc32c::crc32c(&bytes[4..]) {
            return Err(HeaderFault::Checksum);
        }
        let kind = Kind::from_byte(bytes[8]).ok_or(HeaderFault::Field)?;
        if bytes[9..12] != [0, 0, 0] {
            return Err(HeaderFault::Field);
        }
        let header = RecordHeader {
            payload_len: u32_at(bytes, 4),
            kind,
            payload_crc: u32_at(bytes, 12),
            incarnation: u64_at(bytes, 16),
            first: u64_at(bytes, 24),
            last: u64_at(bytes, 32),
            term: u64_at(bytes, 40),
        };
        let sane = match kind {
            Kind::Batch => header.first <= header.last,
            Kind::HardState => header.payload_len as usize == HARD_STATE_BYTES,
            Kind::Truncate => header.payload_len == 0,
            Kind::Commit => header.payload_len as usize >= COMMIT_MIN_BYTES - RECORD_HEADER_BYTES,
        };
        if sane {
            Ok(header)
        } else {
            Err(HeaderFault::Field)
        }
    }
}

/// Appends one complete record (header and payload) to `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: Kind,
    incarnation: u64,
    range: (u64, u64),
    term: u64,
    payload: &[u8],
) {
    let header = RecordHeader {
        payload_len: payload.len() as u32,
        kind,
        payload_crc: crc32c::crc32c(payload),
        incarnation,
        first: range.0,
        last: range.1,
        term,
    };
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    header.encode(&mut out[start..]);
    out.extend_from_slice(payload);
}

/// Decodes and fully checks the record at the start of `bytes` (both CRCs
/// and the incarnation); returns its header and payload.
pub fn decode_record(bytes: &[u8], incarnation: u64) -> Option<(RecordHeader, &[u8])> {
    let header = RecordHeader::decode(bytes).ok()?;
    if header.incarnation != incarnation {
        return None;
    }
    let payload = bytes.get(RECORD_HEADER_BYTES..header.record_bytes())?;
    (crc32c::crc32c(payload) == header.payload_crc).then_some((header, payload))
}

/// Encodes a hard-state payload.
pub fn encode_hard_state(state: &crate::HardState) -> [u8; HARD_STATE_BYTES] {
    let mut out = [0u8; HARD_STATE_BYTES];
    out[0..8].copy_from_slice(&state.term.to_le_bytes());
    out[8..16].copy_from_slice(&u64::from(state.vote.is_some()).to_le_bytes());
    out[16..24].copy_from_slice(&state.vote.unwrap_or(0).to_le_bytes());
    out[24..32].copy_from_slice(&state.commit.to_le_bytes());
    out
}

/// Decodes a hard-state payload; `None` if malformed.
pub fn decode_hard_state(bytes: &[u8]) -> Option<crate::HardState> {
    if bytes.len() != HARD_STATE_BYTES {
        return None;
    }
    let vote = match u64_at(bytes, 8) {
        0 => None,
        1 => Some(u64_at(bytes, 16)),
        _ => return None,
    };
    Some(crate::HardState {
        term: u64_at(bytes, 0),
        vote,
        commit: u64_at(bytes, 24),
    })
}

/// Decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per use of the file.
    pub incarnation: u64,
    /// Segment sequence number.
    pub sequence: u64,
    /// Index expected next when the segment was started.
    pub first: u64,
}

impl SegmentHeader {
    /// Writes the header block prefix into `out` (at least 40 bytes); the
    /// rest of the block must be zero.
    ///
    /// # Panics
    /// If `out` is shorter than 40 bytes (a caller bug).
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_le_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.first.to_le_bytes());
        let crc = segment_crc(out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header block prefix; `None` if it is not a valid header.
    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let bytes = bytes.get(..40)?;
        if &bytes[0..8] != MAGIC || u32_at(bytes, 8) != VERSION {
            return None;
        }
        if u32_at(bytes, 12) != segment_crc(bytes) {
            return None;
        }
        Some(SegmentHeader {
            incarnation: u64_at(bytes, 16),
            sequence: u64_at(bytes, 24),
            first: u64_at(bytes, 32),
        })
    }
}

/// Offset of the second copy of the segment header in the header block.
pub const SEGMENT_HEADER_COPY_OFFSET: usize = 2048;

impl SegmentHeader {
    /// Writes both copies into a zeroed header block.
    ///
    /// # Panics
    /// If `block` is shorter than [`BLOCK_BYTES`] (a caller bug).
    pub fn encode_block(&self, block: &mut [u8]) {
        self.encode(&mut block[..40]);
        self.encode(&mut block[SEGMENT_HEADER_COPY_OFFSET..SEGMENT_HEADER_COPY_OFFSET + 40]);
    }

    /// The first copy that decodes and satisfies `accept`.
    pub fn decode_block(
        block: &[u8],
        accept: impl Fn(&SegmentHeader) -> bool,
    ) -> Option<SegmentHeader> {
        [0, SEGMENT_HEADER_COPY_OFFSET]
            .into_iter()
            .filter_map(|at| SegmentHeader::decode(block.get(at..)?))
            .find(|header| accept(header))
    }
}

fn segment_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[0..12]);
    crc32c::crc32c_append(crc, &bytes[16..40])
}

/// Segment file name for `sequence` and `first`.
pub fn segment_name(sequence: u64, first: u64) -> String {
    format!("{sequence:016x}-{first:016x}.wal")
}

/// Parses a segment file name into `(sequence, first)`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (sequence, first) = stem.split_once('-')?;
    if sequence.len() != 16 || first.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(sequence, 16).ok()?,
        u64::from_str_radix(first, 16).ok()?,
    ))
}

/// Spare file name for number `n`.
pub fn spare_name(n: u64) -> String {
    format!("spare-{n:016x}.wal")
}

/// Parses a spare file name into its number.
pub fn parse_spare_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("spare-")?.strip_suffix(".wal")?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Rounds `offset` up to a multiple of [`BLOCK_BYTES`].
pub fn align_up(offset: u64) -> u64 {
    offset.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Size of the commit record that closes a group ending at `offset`: at
/// least [`COMMIT_MIN_BYTES`], ending on a block boundary.
pub fn commit_record_bytes(offset: u64) -> u64 {
    align_up(offset + COMMIT_MIN_BYTES as u64) - offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_each_flipped_bit() {
        let header = RecordHeader {
            payload_len: 7,
            kind: Kind::Batch,
            payload_crc: 99,
            incarnation: 5,
            first: 10,
            last: 12,
            term: 3,
        };
        let mut bytes = [0u8; RECORD_HEADER_BYTES];
        header.encode(&mut bytes);
        assert_eq!(RecordHeader::decode(&bytes), Ok(header));
        for bit in 0..RECORD_HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                RecordHeader::decode(&flipped).is_err(),
                "bit {bit} not detected"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(3, 77)), Some((3, 77)));
        assert_eq!(parse_spare_name(&spare_name(9)), Some(9));
        assert_eq!(parse_segment_name("spare-0000000000000001.wal"), None);
    }

    #[test]
    fn commit_record_ends_on_block() {
        for offset in [4096u64, 4100, 8192 - 56, 8192 - 55, 8191] {
            let size = commit_record_bytes(offset);
            assert!(size >= COMMIT_MIN_BYTES as u64);
            assert_eq!((offset + size) % BLOCK_BYTES as u64, 0);
        }
    }
}
