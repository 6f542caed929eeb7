//! Bit rot on purpose: flip one bit inside a durable batch record of a
//! stopped node's write-ahead log (format: `barge_wal::format`).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use barge_wal::format::{
    align_up, decode_record, parse_segment_name, Kind, RecordHeader, SegmentHeader, BLOCK_BYTES,
    RECORD_HEADER_BYTES,
};
use rand::Rng;

/// A batch record found in a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    /// Byte offset of its payload in the file.
    pub payload_offset: u64,
    pub payload_bytes: u64,
    pub first: u64,
    pub last: u64,
}

/// Where a bit was flipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    pub path: PathBuf,
    pub offset: u64,
    pub bit: u8,
    /// Index range of the damaged record.
    pub first: u64,
    pub last: u64,
}

/// The valid batch records of one segment image that lie below its
/// known-durable offset (for the newest segment: the largest `synced_upto`
/// of its commit records; older segments are durable in full).
pub fn durable_batches(segment: &[u8], newest: bool) -> Vec<BatchRecord> {
    let Some(header) = SegmentHeader::decode_block(segment, |_| true) else {
        return Vec::new();
    };
    let mut batches = Vec::new();
    let mut synced_upto = 0u64;
    let mut offset = BLOCK_BYTES;
    while offset + RECORD_HEADER_BYTES <= segment.len() {
        let Some((record, payload)) = decode_record(&segment[offset..], header.incarnation) else {
            match RecordHeader::decode(&segment[offset..]) {
                // A damaged payload under a sound header: skip the record.
                Ok(record) if record.incarnation == header.incarnation => {
                    offset += record.record_bytes();
                }
                // Groups start block-aligned: resume at the next block.
                _ => offset = usize::try_from(align_up(offset as u64 + 1)).unwrap_or(usize::MAX),
            }
            continue;
        };
        match record.kind {
            Kind::Batch if !payload.is_empty() => batches.push(BatchRecord {
                payload_offset: (offset + RECORD_HEADER_BYTES) as u64,
                payload_bytes: payload.len() as u64,
                first: record.first,
                last: record.last,
            }),
            Kind::Commit if payload.len() >= 8 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&payload[..8]);
                synced_upto = synced_upto.max(u64::from_le_bytes(raw));
            }
            _ => {}
        }
        offset += record.record_bytes();
    }
    if newest {
        batches.retain(|batch| batch.payload_offset + batch.payload_bytes <= synced_upto);
    }
    batches
}

/// Flips one random bit inside the payload of a durable batch record, in
/// `data_dir/log/*.wal`, whose entries are all at or below `committed`
/// (so the other nodes hold them too). The node must be stopped.
///
/// # Errors
/// No such record, or the file could not be read or written.
pub fn flip_bit(data_dir: &Path, committed: u64, rng: &mut impl Rng) -> Result<Flip> {
    let log_dir = data_dir.join("log");
    let mut segments = Vec::new();
    for entry in
        std::fs::read_dir(&log_dir).with_context(|| format!("reading {}", log_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((sequence, _)) = parse_segment_name(&name) {
            segments.push((sequence, entry.path()));
        }
    }
    segments.sort();
    let newest = segments.last().map(|(sequence, _)| *sequence);
    let mut candidates = Vec::new();
    for (sequence, path) in &segments {
        let image = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for batch in durable_batches(&image, Some(*sequence) == newest) {
            if batch.last <= committed {
                candidates.push((path.clone(), batch));
            }
        }
    }
    if candidates.is_empty() {
        bail!(
            "no durable batch record at or below index {committed} in {}",
            log_dir.display()
        );
    }
    let (path, batch) = &candidates[rng.random_range(0..candidates.len())];
    let offset = batch.payload_offset + rng.random_range(0..batch.payload_bytes);
    let bit = rng.random_range(0..8u8);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset)?;
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset)?;
    file.sync_all()?;
    Ok(Flip {
        path: path.clone(),
        offset,
        bit,
        first: batch.first,
        last: batch.last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use barge_wal::format::encode_record;
    use rand::SeedableRng;

    fn segment(synced_upto: u64) -> Vec<u8> {
        let mut image = vec![0u8; BLOCK_BYTES];
        let header = SegmentHeader {
            incarnation: 77,
            sequence: 1,
            first: 1,
        };
        header.encode_block(&mut image);
        encode_record(&mut image, Kind::Batch, 77, (1, 3), 1, b"first batch");
        encode_record(&mut image, Kind::Batch, 77, (4, 4), 1, b"second");
        let mut commit = synced_upto.to_le_bytes().to_vec();
        commit.extend_from_slice(&[0u8; 8]);
        encode_record(&mut image, Kind::Commit, 77, (0, 0), 0, &commit);
        image.resize(align_up(image.len() as u64) as usize, 0);
        // A record of another incarnation (stale bytes of an older use).
        encode_record(&mut image, Kind::Batch, 76, (5, 5), 1, b"stale");
        image.resize(align_up(image.len() as u64) as usize + BLOCK_BYTES, 0);
        image
    }

    #[test]
    fn finds_valid_batches_only() {
        let image = segment(0);
        let batches = durable_batches(&image, false);
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!((batches[0].first, batches[0].last), (1, 3));
        assert_eq!(batches[0].payload_bytes, 11);
        let at = batches[0].payload_offset as usize;
        assert_eq!(&image[at..at + 11], b"first batch");
        assert_eq!((batches[1].first, batches[1].last), (4, 4));
        // In the newest segment only what a commit record says is synced.
        assert!(durable_batches(&image, true).is_empty());
        let synced = batches[0].payload_offset + 11;
        let image = segment(synced);
        assert_eq!(durable_batches(&image, true).len(), 1);
        assert!(durable_batches(&[0u8; 100], false).is_empty());
    }

    #[test]
    fn flips_exactly_one_bit_in_a_committed_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log).unwrap();
        let image = segment(0);
        let path = log.join(barge_wal::format::segment_name(1, 1));
        std::fs::write(&path, &image).unwrap();
        // A newer (empty) segment makes segment 1 durable in full.
        std::fs::write(log.join(barge_wal::format::segment_name(2, 5)), segment(0)).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let flip = flip_bit(dir.path(), 3, &mut rng).unwrap();
        assert_eq!((flip.first, flip.last), (1, 3), "index 4 is not committed");
        let after = std::fs::read(&path).unwrap();
        let differing: Vec<usize> = (0..image.len()).filter(|&i| image[i] != after[i]).collect();
        assert_eq!(differing, vec![flip.offset as usize]);
        assert_eq!((image[differing[0]] ^ after[differing[0]]).count_ones(), 1);
        assert_eq!(
            durable_batches(&after, false).len(),
            1,
            "the damage is detectable"
        );
        let error = flip_bit(dir.path(), 0, &mut rng).unwrap_err();
        assert!(
            format!("{error:#}").contains("no durable batch"),
            "{error:#}"
        );
    }
}
