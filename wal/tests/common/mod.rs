//! Shared test helpers: a model of the log and a checker that compares a
//! reopened log with every state the model allows after a crash.
#![allow(dead_code)]

use barge_wal::{Backend, FaultDisk, HardState, StoredBatch, Wal, WalConfig, WalError};
use bytes::Bytes;

/// A batch as the model knows it; the payload is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelBatch {
    pub first: u64,
    /// Effective last index.
    pub last: u64,
    pub term: u64,
    pub id: u64,
    /// Payload length (filler included).
    pub len: usize,
}

/// One submission.
#[derive(Clone, Debug)]
pub enum ModelOp {
    Append(ModelBatch),
    HardState(HardState),
    Truncate(u64),
}

/// The log's logical contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub batches: Vec<ModelBatch>,
    pub hard_state: HardState,
    pub next: Option<u64>,
}

impl Model {
    pub fn apply(&mut self, op: &ModelOp) {
        match op {
            ModelOp::Append(batch) => {
                self.batches.push(*batch);
                self.next = Some(batch.last + 1);
            }
            ModelOp::HardState(state) => self.hard_state = *state,
            ModelOp::Truncate(from) => {
                self.batches.retain(|batch| batch.first < *from);
                if let Some(back) = self.batches.last_mut() {
                    back.last = back.last.min(from - 1);
                }
                self.next = Some(*from);
            }
        }
    }

    pub fn last_term(&self) -> u64 {
        self.batches.last().map_or(0, |batch| batch.term)
    }
}

/// Payload bytes for a batch: a self-describing prefix and filler, so a
/// returned payload proves which append it came from.
pub fn payload(first: u64, last: u64, term: u64, id: u64, len: usize) -> Bytes {
    let mut bytes = format!("{id}:{first}:{last}:{term};").into_bytes();
    let mut filler = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while bytes.len() < len {
        filler ^= filler << 13;
        filler ^= filler >> 7;
        filler ^= filler << 17;
        bytes.push(filler as u8);
    }
    Bytes::from(bytes)
}

/// Checks a stored batch's payload and returns the model batch it encodes
/// (with the stored effective last).
pub fn decode(stored: &StoredBatch) -> Result<ModelBatch, String> {
    let text_end = stored
        .payload
        .iter()
        .position(|&byte| byte == b';')
        .ok_or("no prefix")?;
    let text = std::str::from_utf8(&stored.payload[..text_end]).map_err(|e| e.to_string())?;
    let fields: Vec<u64> = text
        .split(':')
        .map(|field| field.parse().unwrap_or(u64::MAX))
        .collect();
    let [id, first, last, term] = fields[..] else {
        return Err(format!("bad prefix {text}"));
    };
    let expected = payload(first, last, term, id, stored.payload.len());
    if expected != stored.payload {
        return Err(format!("payload of batch {id} is corrupt"));
    }
    if first != stored.first || term != stored.term || stored.last > last {
        return Err(format!(
            "batch {id} stored as {stored:?} but encodes {first}..={last}@{term}"
        ));
    }
    Ok(ModelBatch {
        first,
        last: stored.last,
        term,
        id,
        len: stored.payload.len(),
    })
}

/// Reads the whole log back through `wal.read`, in small steps.
pub fn read_all(wal: &Wal) -> Result<Vec<ModelBatch>, String> {
    let mut out = Vec::new();
    let (Some(mut index), Some(last)) = (wal.first_index(), wal.last()) else {
        return Ok(out);
    };
    while index <= last.index {
        let batches = wal
            .read(index..=last.index, 5000)
            .map_err(|e| format!("read {index}: {e}"))?;
        if batches.is_empty() {
            return Err(format!("read {index} returned nothing"));
        }
        for stored in &batches {
            let batch = decode(stored)?;
            if batch.first > index {
                return Err(format!("gap before {}", batch.first));
            }
            index = batch.last + 1;
            out.push(batch);
        }
    }
    Ok(out)
}

/// Compares an observed log with a model state: the observed batches must
/// be a suffix of the model's (compaction drops whole segments from the
/// front, only below `compacted_below`).
pub fn matches(
    model: &Model,
    observed: &[ModelBatch],
    hard_state: HardState,
    next: Option<u64>,
    compacted_below: u64,
) -> Result<(), String> {
    if model.hard_state != hard_state {
        return Err(format!(
            "hard state {hard_state:?}, model {:?}",
            model.hard_state
        ));
    }
    if model.next != next && !(model.batches.is_empty() && observed.is_empty() && next.is_none()) {
        return Err(format!("next index {next:?}, model {:?}", model.next));
    }
    let dropped = model
        .batches
        .len()
        .checked_sub(observed.len())
        .ok_or("more batches than the model")?;
    if model.batches[dropped..] != *observed {
        return Err(format!(
            "batches differ: observed {:?}, model {:?}",
            observed
                .iter()
                .map(|b| (b.first, b.last, b.term, b.id))
                .collect::<Vec<_>>(),
            model
                .batches
                .iter()
                .map(|b| (b.first, b.last, b.term, b.id))
                .collect::<Vec<_>>()
        ));
    }
    if let Some(kept) = model.batches[..dropped]
        .iter()
        .find(|batch| batch.last >= compacted_below)
    {
        return Err(format!(
            "batch {kept:?} lost though not compacted (below {compacted_below}); observed {:?}",
            observed
                .iter()
                .map(|b| (b.first, b.last, b.term, b.id))
                .collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// A small-segment configuration on `disk`.
pub fn fault_config(disk: &FaultDisk) -> WalConfig {
    WalConfig {
        segment_bytes: 64 << 10,
        write_bytes_max: 16 << 10,
        queued_bytes_max: 48 << 10,
        tail_cache_bytes_max: 8 << 10,
        backend: Backend::Fault(disk.clone()),
        ..WalConfig::default()
    }
}

/// Opens, or panics with the seed in the message.
pub fn open(disk: &FaultDisk, seed: u64) -> (Wal, barge_wal::Recovery) {
    match Wal::open("wal", fault_config(disk)) {
        Ok(opened) => opened,
        Err(error) => panic!("seed {seed}: open failed: {error}"),
    }
}

/// After a crash: the reopened log must equal base + some prefix of `ops`
/// at least `acked` long.
pub fn check_recovered(
    seed: u64,
    base: &Model,
    ops: &[ModelOp],
    acked: usize,
    wal: &Wal,
    recovery: &barge_wal::Recovery,
    compacted_below: u64,
) -> (Model, usize) {
    assert!(
        recovery.damaged.is_empty(),
        "seed {seed}: crash produced damage {:?}",
        recovery.damaged
    );
    let observed = match read_all(wal) {
        Ok(observed) => observed,
        Err(error) => panic!("seed {seed}: reading back failed: {error}"),
    };
    let mut model = base.clone();
    let mut errors = Vec::new();
    for (count, op) in std::iter::once(None)
        .chain(ops.iter().map(Some))
        .enumerate()
    {
        if let Some(op) = op {
            model.apply(op);
        }
        if count < acked {
            continue;
        }
        match matches(
            &model,
            &observed,
            recovery.hard_state,
            recovery.next_index,
            compacted_below,
        ) {
            Ok(()) => {
                let mut result = model.clone();
                let dropped = result.batches.len() - observed.len();
                result.batches.drain(..dropped);
                return (result, count);
            }
            Err(error) => errors.push(format!("prefix {count}: {error}")),
        }
    }
    panic!(
        "seed {seed}: {recovery:?}: recovered log matches no allowed state (acked {acked} of {} ops):\n{}",
        ops.len(),
        errors.join("\n")
    );
}

/// True if `error` is the poisoned/shutdown kind a crashed instance returns.
pub fn is_crash_error(error: &WalError) -> bool {
    matches!(
        error,
        WalError::Poisoned { .. } | WalError::Shutdown | WalError::Io { .. }
    )
}
