//! The raw baseline the log's figures are quoted against: a plain loop of
//! O_DIRECT writes, each linked to an `fdatasync` through io_uring, into a
//! preallocated (fully written) file, one write in flight at a time.
//!
//! It lives here so that the load generator needs no io_uring dependency,
//! and so that it uses exactly the log's own ring code.
//!
//! ```no_run
//! use barge_wal::baseline::{run, BaselineConfig};
//! let report = run(&BaselineConfig {
//!     dir: std::env::temp_dir(),
//!     write_bytes: 4096,
//!     file_bytes: 64 << 20,
//!     duration: std::time::Duration::from_secs(2),
//!     writes_max: 100_000,
//! })?;
//! println!("{:.0} MB/s, fsync p50 {:.0} µs", report.mb_per_s, report.sync_micros_p50);
//! # Ok::<(), barge_wal::WalError>(())
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sys::{open_direct, AlignedBuf, Ring, ALIGN_BYTES};
use crate::WalError;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BaselineConfig {
    /// Directory for the scratch file (removed afterwards).
    pub dir: PathBuf,
    /// Bytes per write, rounded up to 4 KiB.
    pub write_bytes: usize,
    /// Size of the preallocated file; writes wrap around inside it.
    pub file_bytes: u64,
    /// How long to run.
    pub duration: Duration,
    /// Upper bound on writes (bounds the latency sample memory).
    pub writes_max: u64,
}

/// What was measured.
#[derive(Clone, Debug, Default)]
pub struct BaselineReport {
    /// Write+sync chains completed.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time of the loop.
    pub elapsed: Duration,
    /// Bytes per second / 1e6.
    pub mb_per_s: f64,
    /// Median latency of one write+fdatasync chain, µs.
    pub sync_micros_p50: f64,
    /// 99th percentile of the same, µs.
    pub sync_micros_p99: f64,
}

/// Runs the baseline loop.
///
/// # Errors
/// [`WalError::Io`] if the file cannot be created, preallocated, opened
/// with O_DIRECT, or written, or if io_uring is unavailable.
pub fn run(config: &BaselineConfig) -> Result<BaselineReport, WalError> {
    let write_bytes = config.write_bytes.max(1).div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
    let file_bytes =
        (config.file_bytes.max(write_bytes as u64) / write_bytes as u64) * write_bytes as u64;
    let path = config
        .dir
        .join(format!("baseline-{}.tmp", std::process::id()));
    let io = |source| WalError::io(&path, source);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).map_err(io)?;
        let zeros = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while written < file_bytes {
            let chunk = zeros.len().min((file_bytes - written) as usize);
            file.write_all(&zeros[..chunk]).map_err(io)?;
            written += chunk as u64;
        }
        file.sync_all().map_err(io)?;
    }
    let result = measure(config, &path, write_bytes, file_bytes);
    let _ = std::fs::remove_file(&path);
    result
}

fn measure(
    config: &BaselineConfig,
    path: &std::path::Path,
    write_bytes: usize,
    file_bytes: u64,
) -> Result<BaselineReport, WalError> {
    let io = |source| WalError::io(path, source);
    let file = open_direct(path).map_err(io)?;
    let mut ring = Ring::new(8).map_err(io)?;
    let mut buf = AlignedBuf::new(write_bytes);
    for (position, byte) in buf.extend_zeroed(write_bytes).iter_mut().enumerate() {
        *byte = position as u8;
    }
    let mut latencies = Vec::new();
    let mut offset = 0u64;
    let mut done = Vec::new();
    let started = Instant::now();
    while started.elapsed() < config.duration && (latencies.len() as u64) < config.writes_max {
        ring.submit_chain(&file, offset, buf, 0, true)
            .map_err(|(source, _)| io(source))?;
        done.clear();
        while done.is_empty() {
            ring.reap(true, &mut done).map_err(io)?;
        }
        let chain = done
            .pop()
            .ok_or_else(|| io(std::io::Error::other("no completion")))?;
        chain.result.map_err(io)?;
        latencies.push(chain.elapsed.as_secs_f64() * 1e6);
        buf = chain.buf;
        offset = (offset + write_bytes as u64) % file_bytes;
    }
    let elapsed = started.elapsed();
    let writes = latencies.len() as u64;
    let bytes = writes * write_bytes as u64;
    latencies.sort_by(f64::total_cmp);
    let percentile = |fraction: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() - 1) as f64 * fraction).round() as usize]
    };
    Ok(BaselineReport {
        writes,
        bytes,
        elapsed,
        mb_per_s: bytes as f64 / elapsed.as_secs_f64() / 1e6,
        sync_micros_p50: percentile(0.5),
        sync_micros_p99: percentile(0.99),
    })
}
