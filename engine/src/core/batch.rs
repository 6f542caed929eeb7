//! Entry batches: the unit of the log, of replication and of the WAL.
//!
//! The leader encodes a batch once; the same [`Bytes`] go to its WAL, onto
//! the wire and into every follower's WAL ("encode once, copy never"). Entry
//! `i` is read in O(1) through an offset table, as a [`Bytes`] slice that
//! shares the batch's buffer.
//!
//! # Encoding (all integers little-endian)
//!
//! | offset        | size    | field                                              |
//! |---------------|---------|----------------------------------------------------|
//! | 0             | 4       | `n`, the number of entries (≥ 1)                   |
//! | 4             | 4 × `n` | end of entry `i`'s payload, relative to `4 + 5n`   |
//! | 4 + 4n        | 1 × `n` | kind of entry `i`: 0 normal, 1 no-op, 2 membership |
//! | 4 + 5n        | ...     | the payloads, back to back                         |
//!
//! Ends are non-decreasing and the last one is exactly the payload area's
//! length, so there is no trailing garbage and no overlap. Bytes that come
//! from a peer or a disk go through [`Batch::decode`], which checks all of
//! this against [`BatchLimits`] before anything is indexed.
//!
//! All entries of a batch carry the batch's term. A batch may be logically
//! shortened (a conflicting suffix truncated inside it) by lowering its
//! valid length with [`Batch::truncated`]; the bytes are not re-encoded.

use bytes::{BufMut, Bytes, BytesMut};

use super::types::{LogId, LogIndex, Term};

/// What an entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command.
    Normal,
    /// The empty entry a new leader appends to commit its term (§5.4.2, §8).
    Noop,
    /// A cluster configuration (§6, thesis chapter 4); payload encoded by
    /// [`super::Membership::encode`].
    Membership,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Membership => 2,
        }
    }

    fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::Membership),
            _ => None,
        }
    }
}

/// One decoded entry; `payload` shares the batch's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's term and index.
    pub id: LogId,
    /// What the entry is for.
    pub kind: EntryKind,
    /// The payload (empty for no-ops).
    pub payload: Bytes,
}

/// Bounds applied when decoding a batch from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most entries one batch may hold.
    pub entries_max: u32,
    /// Most encoded bytes one batch may hold.
    pub bytes_max: u32,
}

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Shorter than its own header or offset table says.
    #[error("batch truncated: {len} bytes, need at least {needed}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header requires.
        needed: usize,
    },
    /// Holds no entries.
    #[error("batch holds no entries")]
    Empty,
    /// More entries than allowed.
    #[error("batch holds {count} entries, limit {limit}")]
    TooManyEntries {
        /// Entries claimed.
        count: u64,
        /// The configured limit.
        limit: u32,
    },
    /// More bytes than allowed.
    #[error("batch is {len} bytes, limit {limit}")]
    TooLarge {
        /// Bytes present.
        len: usize,
        /// The configured limit.
        limit: u32,
    },
    /// An end offset goes backwards or past the payload area.
    #[error("entry {entry} has bad end offset {end}")]
    BadOffset {
        /// Entry position within the batch.
        entry: u32,
        /// The offending offset.
        end: u32,
    },
    /// Bytes left over after the last payload.
    #[error("{extra} bytes after the last entry")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// Unknown entry kind.
    #[error("entry {entry} has unknown kind {code}")]
    BadKind {
        /// Entry position within the batch.
        entry: u32,
        /// The unknown code.
        code: u8,
    },
    /// The valid length exceeds the encoded entries.
    #[error("valid length {len} exceeds the {count} encoded entries")]
    BadLength {
        /// Claimed valid length.
        len: u32,
        /// Entries encoded.
        count: u32,
    },
}

/// A run of consecutive entries of one term, as one encoded buffer.
///
/// Invariant (checked by [`Batch::decode`], guaranteed by [`Batch::encode`]):
/// `bytes` is a well-formed encoding of `count() >= len() >= 1` entries.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    first: LogIndex,
    term: Term,
    len: u32,
    bytes: Bytes,
}

/// Short form: ids and sizes, not the payload bytes (traces stay readable).
impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({}..={} t{} len {} bytes {})",
            self.first.0,
            self.last().0,
            self.term.0,
            self.len,
            self.bytes.len()
        )
    }
}

const HEADER_BYTES: usize = 4;

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at + 4)?;
    let array: [u8; 4] = slice.try_into().ok()?;
    Some(u32::from_le_bytes(array))
}

impl Batch {
    /// Encodes entries into one batch starting at `first`, all of `term`.
    ///
    /// # Panics
    /// If `entries` is empty or holds more than `u32::MAX` entries or bytes:
    /// callers bound batches through [`super::Config`] well below that.
    #[must_use]
    pub fn encode<'a, I>(first: LogIndex, term: Term, entries: I) -> Batch
    where
        I: IntoIterator<Item = (EntryKind, &'a [u8])>,
        I::IntoIter: Clone,
    {
        let entries = entries.into_iter();
        let count = entries.clone().count();
        assert!(count >= 1, "a batch holds at least one entry");
        let payload_bytes: usize = entries.clone().map(|(_, p)| p.len()).sum();
        let count_u32 = u32::try_from(count).expect("batch entry count fits u32");
        u32::try_from(payload_bytes).expect("batch payload fits u32");
        let mut buffer = BytesMut::with_capacity(HEADER_BYTES + 5 * count + payload_bytes);
        buffer.put_u32_le(count_u32);
        let mut end: u32 = 0;
        for (_, payload) in entries.clone() {
            // Cannot overflow: the total was checked to fit u32 above.
            end += payload.len() as u32;
            buffer.put_u32_le(end);
        }
        for (kind, _) in entries.clone() {
            buffer.put_u8(kind.code());
        }
        for (_, payload) in entries {
            buffer.put_slice(payload);
        }
        Batch {
            first,
            term,
            len: count_u32,
            bytes: buffer.freeze(),
        }
    }

    /// Encodes normal entries from owned payloads.
    ///
    /// # Panics
    /// As [`Batch::encode`].
    #[must_use]
    pub fn encode_normal(first: LogIndex, term: Term, payloads: &[Bytes]) -> Batch {
        Batch::encode(
            first,
            term,
            payloads.iter().map(|p| (EntryKind::Normal, p.as_ref())),
        )
    }

    /// Checks bytes that came from a peer or a disk and wraps them.
    ///
    /// `len` is the number of valid entries (a WAL may report a batch that
    /// was logically shortened).
    ///
    /// # Errors
    /// A [`BatchError`] naming the first malformation found.
    pub fn decode(
        first: LogIndex,
        term: Term,
        len: u32,
        bytes: Bytes,
        limits: BatchLimits,
    ) -> Result<Batch, BatchError> {
        if bytes.len() > limits.bytes_max as usize {
            return Err(BatchError::TooLarge {
                len: bytes.len(),
                limit: limits.bytes_max,
            });
        }
        let count = read_u32(&bytes, 0).ok_or(BatchError::Truncated {
            len: bytes.len(),
            needed: HEADER_BYTES,
        })?;
        if count == 0 {
            return Err(BatchError::Empty);
        }
        if count > limits.entries_max {
            return Err(BatchError::TooManyEntries {
                count: u64::from(count),
                limit: limits.entries_max,
            });
        }
        let table_end = HEADER_BYTES + 5 * count as usize;
        if bytes.len() < table_end {
            return Err(BatchError::Truncated {
                len: bytes.len(),
                needed: table_end,
            });
        }
        let payload_area = bytes.len() - table_end;
        let mut previous_end = 0u32;
        for entry in 0..count {
            // In bounds: the table length was checked above.
            let end = read_u32(&bytes, HEADER_BYTES + 4 * entry as usize).ok_or(
                BatchError::Truncated {
                    len: bytes.len(),
                    needed: table_end,
                },
            )?;
            if end < previous_end || end as usize > payload_area {
                return Err(BatchError::BadOffset { entry, end });
            }
            previous_end = end;
            let code = bytes[HEADER_BYTES + 4 * count as usize + entry as usize];
            if EntryKind::from_code(code).is_none() {
                return Err(BatchError::BadKind { entry, code });
            }
        }
        if previous_end as usize != payload_area {
            return Err(BatchError::TrailingBytes {
                extra: payload_area - previous_end as usize,
            });
        }
        if len == 0 || len > count {
            return Err(BatchError::BadLength { len, count });
        }
        Ok(Batch {
            first,
            term,
            len,
            bytes,
        })
    }

    /// Index of the first entry.
    #[must_use]
    pub fn first(&self) -> LogIndex {
        self.first
    }

    /// Index of the last valid entry.
    #[must_use]
    pub fn last(&self) -> LogIndex {
        self.first.plus(u64::from(self.len) - 1)
    }

    /// Id of the last valid entry.
    #[must_use]
    pub fn last_id(&self) -> LogId {
        LogId::new(self.term, self.last())
    }

    /// The term of every entry.
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// Number of valid entries (≤ [`Batch::count`]).
    #[must_use]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Always false: a batch holds at least one valid entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of encoded entries, including any logically truncated ones.
    #[must_use]
    pub fn count(&self) -> u32 {
        // Well-formed by the type invariant.
        read_u32(&self.bytes, 0).unwrap_or(0)
    }

    /// The encoded bytes (what goes to the WAL and onto the wire).
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether `index` is one of the valid entries.
    #[must_use]
    pub fn contains(&self, index: LogIndex) -> bool {
        index >= self.first && index <= self.last()
    }

    /// The same batch keeping only entries up to and including `last`.
    ///
    /// # Panics
    /// If `last` is before the batch's first entry or after its last one.
    #[must_use]
    pub fn truncated(&self, last: LogIndex) -> Batch {
        assert!(
            self.contains(last),
            "truncate batch {}..={} at {}",
            self.first,
            self.last(),
            last
        );
        let len = u32::try_from(last.0 - self.first.0 + 1).expect("within a u32-long batch");
        Batch {
            len,
            ..self.clone()
        }
    }

    /// The entries from `from` to the last valid one, re-encoded (a copy:
    /// used only when repairing a log whose batch boundaries differ from
    /// the leader's, which is rare).
    ///
    /// # Panics
    /// If `from` is not a valid entry of this batch.
    #[must_use]
    pub fn tail_from(&self, from: LogIndex) -> Batch {
        assert!(
            self.contains(from),
            "tail of batch {}..={} from {}",
            self.first,
            self.last(),
            from
        );
        if from == self.first && self.len == self.count() {
            return self.clone();
        }
        let entries: Vec<Entry> = (from.0..=self.last().0)
            .filter_map(|i| self.entry(LogIndex(i)))
            .collect();
        Batch::encode(
            from,
            self.term,
            entries.iter().map(|e| (e.kind, e.payload.as_ref())),
        )
    }

    /// Whether any valid entry is of `kind` (scans the kind table only).
    #[must_use]
    pub fn has_kind(&self, kind: EntryKind) -> bool {
        let count = self.count() as usize;
        let kinds = HEADER_BYTES + 4 * count;
        self.bytes
            .get(kinds..kinds + self.len as usize)
            .is_some_and(|codes| codes.contains(&kind.code()))
    }

    /// Entry at `index`, or `None` outside the valid entries.
    #[must_use]
    pub fn entry(&self, index: LogIndex) -> Option<Entry> {
        if !self.contains(index) {
            return None;
        }
        let position = (index.0 - self.first.0) as usize;
        let count = self.count() as usize;
        let payload_base = HEADER_BYTES + 5 * count;
        let end = read_u32(&self.bytes, HEADER_BYTES + 4 * position)? as usize;
        let start = if position == 0 {
            0
        } else {
            read_u32(&self.bytes, HEADER_BYTES + 4 * (position - 1))? as usize
        };
        let kind = EntryKind::from_code(*self.bytes.get(HEADER_BYTES + 4 * count + position)?)?;
        let payload = self.bytes.slice(payload_base + start..payload_base + end);
        Some(Entry {
            id: LogId::new(self.term, index),
            kind,
            payload,
        })
    }

    /// The valid entries in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (self.first.0..=self.last().0).filter_map(|i| self.entry(LogIndex(i)))
    }

    /// Bytes this batch accounts for in windows and bounds.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        entries_max: 1024,
        bytes_max: 1 << 20,
    };

    fn sample() -> Batch {
        Batch::encode(
            LogIndex(5),
            Term(3),
            [
                (EntryKind::Normal, &b"abc"[..]),
                (EntryKind::Noop, &b""[..]),
                (EntryKind::Normal, &b"hello"[..]),
            ],
        )
    }

    #[test]
    fn entries_round_trip_without_copy() {
        let batch = sample();
        assert_eq!(batch.last(), LogIndex(7));
        let third = batch.entry(LogIndex(7)).expect("in range");
        assert_eq!(third.payload, Bytes::from_static(b"hello"));
        assert_eq!(third.id, LogId::new(Term(3), LogIndex(7)));
        assert_eq!(
            batch.entry(LogIndex(6)).map(|e| e.kind),
            Some(EntryKind::Noop)
        );
        assert!(batch.entry(LogIndex(8)).is_none());
        assert!(batch.entry(LogIndex(4)).is_none());
        let decoded =
            Batch::decode(LogIndex(5), Term(3), 3, batch.bytes().clone(), LIMITS).expect("valid");
        assert_eq!(decoded, batch);
        // The payload is a view into the same allocation.
        assert_eq!(third.payload.as_ptr(), payload_pointer(&batch, 3));
    }

    fn payload_pointer(batch: &Batch, payload_offset: usize) -> *const u8 {
        let count = batch.count() as usize;
        batch.bytes()[HEADER_BYTES + 5 * count + payload_offset..].as_ptr()
    }

    #[test]
    fn truncation_lowers_valid_length_only() {
        let batch = sample().truncated(LogIndex(6));
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.count(), 3);
        assert!(batch.entry(LogIndex(7)).is_none());
        assert_eq!(batch.entries().count(), 2);
    }

    #[test]
    fn decode_rejects_malformed_bytes() {
        let good = sample().bytes().clone();
        type Expectation = fn(&BatchError) -> bool;
        let cases: Vec<(Bytes, Expectation)> = vec![
            (Bytes::from_static(&[1, 0]), |e| {
                matches!(e, BatchError::Truncated { .. })
            }),
            (Bytes::from_static(&[0, 0, 0, 0]), |e| {
                matches!(e, BatchError::Empty)
            }),
            (Bytes::from_static(&[255, 255, 255, 255]), |e| {
                matches!(e, BatchError::TooManyEntries { .. })
            }),
            (good.slice(..good.len() - 1), |e| {
                matches!(e, BatchError::BadOffset { .. })
            }),
            (
                {
                    let mut v = good.to_vec();
                    v.push(0);
                    Bytes::from(v)
                },
                |e| matches!(e, BatchError::TrailingBytes { .. }),
            ),
            (
                {
                    let mut v = good.to_vec();
                    v[4 + 12] = 9;
                    Bytes::from(v)
                },
                |e| matches!(e, BatchError::BadKind { .. }),
            ),
            (
                {
                    let mut v = good.to_vec();
                    v[4] = 200;
                    Bytes::from(v)
                },
                |e| matches!(e, BatchError::BadOffset { .. }),
            ),
        ];
        for (bytes, expected) in cases {
            let error = Batch::decode(LogIndex(1), Term(1), 1, bytes.clone(), LIMITS)
                .expect_err("malformed");
            assert!(expected(&error), "{bytes:?} gave {error:?}");
        }
        assert!(matches!(
            Batch::decode(LogIndex(1), Term(1), 4, good.clone(), LIMITS),
            Err(BatchError::BadLength { .. })
        ));
        let small = BatchLimits {
            entries_max: 2,
            bytes_max: 1 << 20,
        };
        assert!(matches!(
            Batch::decode(LogIndex(1), Term(1), 1, good.clone(), small),
            Err(BatchError::TooManyEntries { .. })
        ));
        let tiny = BatchLimits {
            entries_max: 10,
            bytes_max: 8,
        };
        assert!(matches!(
            Batch::decode(LogIndex(1), Term(1), 1, good, tiny),
            Err(BatchError::TooLarge { .. })
        ));
    }
}
