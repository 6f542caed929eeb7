//! `barge-loadgen wal`: the write-ahead log alone under N concurrent
//! appenders, beside a raw baseline measured in the same run, before and
//! after the log (O_DIRECT
//! write + fdatasync through io_uring, one chain at a time, writes of the
//! size the log's group commit would produce: payload × appenders rounded up
//! to 4 KiB, at most the log's `write_bytes_max`).
//!
//! Appenders are logical: `--threads` OS threads (default: 2, or fewer when
//! there are fewer appenders) each keep their share of the appenders with
//! one append outstanding (closed loop). Every append is one batch of one
//! entry; latency is from submission to the thread seeing it durable.
//! A background thread compacts the log every 100 ms so memory and disk stay
//! bounded, as an engine taking snapshots would.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::system::file_system_type;
use anyhow::{bail, Context, Result};
use barge_wal::baseline::{self, BaselineConfig};
use barge_wal::{Backend, Bytes, Wal, WalConfig};
use hdrhistogram::Histogram;
use lexopt::prelude::*;

const USAGE: &str = "usage: barge-loadgen wal [--appenders N] [--payload BYTES] [--duration SECS] [--threads T] [--dir D] [--backend uring|blocking] [--json]

  --appenders N     concurrent logical appenders, one append outstanding each (default 256)
  --payload BYTES   bytes per append (one batch of one entry; default 16384)
  --duration SECS   measured time of the log run (default 5); the baseline runs half as long (at least 2 s),
                    split before and after the log run
  --threads T       OS threads driving the appenders (default min(appenders, 2))
  --dir D           directory on the disk to measure (default: the system temp dir; tmpfs is refused)
  --backend B       uring (default) or blocking
  --inflight N      group writes in flight (log's inflight_writes_max; default 2)
  --segment-mib N   segment size in MiB (default 64)
  --idle-spin-micros N  log thread's poll after a completion before sleeping (default 0)
  --json            one JSON object on stdout instead of the table";

#[derive(Debug)]
struct Options {
    appenders: usize,
    payload: usize,
    duration: Duration,
    threads: Option<usize>,
    dir: Option<PathBuf>,
    backend: Backend,
    inflight: usize,
    segment_mib: u64,
    idle_spin_micros: u64,
    json: bool,
}

pub fn run(mut parser: lexopt::Parser) -> Result<()> {
    let mut options = Options {
        appenders: 256,
        payload: 16 * 1024,
        duration: Duration::from_secs(5),
        threads: None,
        dir: None,
        backend: Backend::Uring,
        inflight: 2,
        segment_mib: 64,
        idle_spin_micros: 0,
        json: false,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("appenders") => options.appenders = parser.value()?.parse()?,
            Long("payload") => options.payload = parser.value()?.parse()?,
            Long("duration") => {
                let seconds: f64 = parser.value()?.parse()?;
                if !(0.5..=3600.0).contains(&seconds) {
                    bail!("--duration must be between 0.5 and 3600 seconds");
                }
                options.duration = Duration::from_secs_f64(seconds);
            }
            Long("threads") => options.threads = Some(parser.value()?.parse()?),
            Long("dir") => options.dir = Some(parser.value()?.into()),
            Long("backend") => {
                options.backend = match parser.value()?.string()?.as_str() {
                    "uring" => Backend::Uring,
                    "blocking" => Backend::Blocking,
                    other => bail!("unknown backend `{other}` (uring or blocking)"),
                }
            }
            Long("inflight") => options.inflight = parser.value()?.parse()?,
            Long("segment-mib") => options.segment_mib = parser.value()?.parse()?,
            Long("idle-spin-micros") => options.idle_spin_micros = parser.value()?.parse()?,
            Long("json") => options.json = true,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    if !(1..=1_000_000).contains(&options.appenders) {
        bail!("--appenders must be between 1 and 1000000");
    }
    if !(1..=4 << 20).contains(&options.payload) {
        bail!("--payload must be between 1 byte and 4 MiB");
    }
    if !(1..=64).contains(&options.inflight) {
        bail!("--inflight must be between 1 and 64");
    }
    if !(1..=4096).contains(&options.segment_mib) {
        bail!("--segment-mib must be between 1 and 4096");
    }
    if options.idle_spin_micros > 10_000 {
        bail!("--idle-spin-micros must be at most 10000");
    }
    let threads = options
        .threads
        .unwrap_or(2)
        .clamp(1, options.appenders.min(64));
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    if file_system_type(&parent).as_deref() == Some("tmpfs") {
        bail!(
            "{} is on tmpfs; pass --dir on a real disk",
            parent.display()
        );
    }
    let scratch = tempfile::tempdir_in(&parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;

    let config = WalConfig {
        backend: options.backend.clone(),
        inflight_writes_max: options.inflight,
        segment_bytes: options.segment_mib << 20,
        idle_spin_micros: options.idle_spin_micros,
        ..WalConfig::default()
    };
    let write_bytes = (options.payload.saturating_mul(options.appenders))
        .div_ceil(4096)
        .saturating_mul(4096)
        .min(config.write_bytes_max);
    let baseline_duration = (options.duration / 2).max(Duration::from_secs(2));
    if !options.json {
        eprintln!(
            "baseline: {write_bytes} B O_DIRECT write + fdatasync loop for {:.1} s ...",
            baseline_duration.as_secs_f64()
        );
    }
    // The disk drifts: measure the baseline before and after the log and
    // quote their mean (both are in the JSON).
    let baseline_config = BaselineConfig {
        dir: scratch.path().to_path_buf(),
        write_bytes,
        file_bytes: 256 << 20,
        duration: baseline_duration / 2,
        writes_max: 10_000_000,
    };
    let before = baseline::run(&baseline_config).context("running the raw baseline")?;
    let measured = measure(&options, threads, config, scratch.path())?;
    if !options.json {
        eprintln!("baseline again ...");
    }
    let after = baseline::run(&baseline_config).context("running the raw baseline")?;
    let baseline = mean_baseline(&before, &after);
    report(
        &options,
        threads,
        write_bytes,
        &baseline,
        [&before, &after],
        &measured,
    )
}

/// The mean of two baseline runs (percentiles averaged: an approximation
/// that keeps both runs' weight equal).
fn mean_baseline(
    before: &baseline::BaselineReport,
    after: &baseline::BaselineReport,
) -> baseline::BaselineReport {
    baseline::BaselineReport {
        writes: before.writes + after.writes,
        bytes: before.bytes + after.bytes,
        elapsed: before.elapsed + after.elapsed,
        mb_per_s: (before.mb_per_s + after.mb_per_s) / 2.0,
        sync_micros_p50: (before.sync_micros_p50 + after.sync_micros_p50) / 2.0,
        sync_micros_p99: (before.sync_micros_p99 + after.sync_micros_p99) / 2.0,
    }
}

struct Measured {
    entries: u64,
    payload_bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    metrics: barge_wal::Metrics,
    backend: &'static str,
    /// CPU seconds the whole process used during the measured window.
    cpu_seconds: f64,
}

fn measure(options: &Options, threads: usize, config: WalConfig, dir: &Path) -> Result<Measured> {
    let (wal, _) = Wal::open(dir.join("wal"), config).context("opening the log")?;
    let wal = Arc::new(wal);
    let next_index = Arc::new(Mutex::new(1u64));
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![0xA5u8; options.payload]);
    let cpu_started = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::new();
    for thread in 0..threads {
        let share = options.appenders / threads + usize::from(thread < options.appenders % threads);
        let (wal, next_index, completed, payload) = (
            Arc::clone(&wal),
            Arc::clone(&next_index),
            Arc::clone(&completed),
            payload.clone(),
        );
        let worker = std::thread::Builder::new()
            .name(format!("appender-{thread}"))
            .spawn(move || -> Result<Histogram<u64>> {
                let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::with_capacity(share);
                loop {
                    let now = Instant::now();
                    if now < deadline && outstanding.len() < share {
                        let mut next = next_index
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
                        while outstanding.len() < share {
                            let sequence = wal.append(*next, *next, 1, payload.clone())?;
                            *next += 1;
                            outstanding.push_back((sequence, now));
                        }
                    }
                    let Some(&(oldest, _)) = outstanding.front() else {
                        break;
                    };
                    let durable = wal.wait_durable(oldest)?;
                    let seen = Instant::now();
                    while let Some(&(sequence, submitted)) = outstanding.front() {
                        if sequence > durable.sequence {
                            break;
                        }
                        outstanding.pop_front();
                        if submitted < deadline {
                            let micros = seen.duration_since(submitted).as_micros() as u64;
                            latency.saturating_record(micros.max(1));
                            if seen <= deadline {
                                completed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Ok(latency)
            })?;
        workers.push(worker);
    }
    let compactor = {
        let (wal, stop) = (Arc::clone(&wal), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Some(last) = wal.durable().last {
                        let _ = wal.compact(last.index.saturating_sub(1));
                    }
                }
            })?
    };
    let progress_every = Duration::from_secs(1);
    let mut last_report = (Instant::now(), 0u64);
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        );
        if !options.json && last_report.0.elapsed() >= progress_every {
            let done = completed.load(Ordering::Relaxed);
            let rate = (done - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            eprintln!(
                "  {:>4.1} s  {:>12.0} entries/s  {:>8.1} MB/s",
                started.elapsed().as_secs_f64(),
                rate,
                rate * options.payload as f64 / 1e6
            );
            last_report = (Instant::now(), done);
        }
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for worker in workers {
        let part = worker
            .join()
            .map_err(|_| anyhow::anyhow!("appender thread panicked"))??;
        latency.add(part)?;
    }
    let elapsed = options.duration;
    let cpu_seconds = process_cpu_seconds() - cpu_started;
    stop.store(true, Ordering::Relaxed);
    compactor
        .join()
        .map_err(|_| anyhow::anyhow!("compactor panicked"))?;
    let metrics = wal.metrics();
    let backend = wal.backend_name();
    let wal = Arc::try_unwrap(wal).map_err(|_| anyhow::anyhow!("log still shared"))?;
    wal.shutdown().context("shutting the log down")?;
    let entries = completed.load(Ordering::Relaxed);
    Ok(Measured {
        entries,
        payload_bytes: entries * options.payload as u64,
        elapsed,
        latency,
        metrics,
        backend,
        cpu_seconds,
    })
}

/// User plus system CPU time of this process, from /proc/self/stat (0 if
/// unreadable). On a shared machine this is steadier than wall time.
fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(crate::run::resources::cpu_seconds)
        .unwrap_or(0.0)
}

fn report(
    options: &Options,
    threads: usize,
    write_bytes: usize,
    baseline: &baseline::BaselineReport,
    runs: [&baseline::BaselineReport; 2],
    measured: &Measured,
) -> Result<()> {
    let seconds = measured.elapsed.as_secs_f64();
    let entries_per_s = measured.entries as f64 / seconds;
    let mb_per_s = measured.payload_bytes as f64 / seconds / 1e6;
    let fsyncs_per_s = measured.metrics.syncs as f64 / seconds;
    let p50 = measured.latency.value_at_quantile(0.5) as f64;
    let p99 = measured.latency.value_at_quantile(0.99) as f64;
    let p999 = measured.latency.value_at_quantile(0.999) as f64;
    if options.json {
        let json = serde_json::json!({
            "backend": measured.backend,
            "appenders": options.appenders,
            "threads": threads,
            "payload_bytes": options.payload,
            "duration_s": seconds,
            "entries_per_s": entries_per_s,
            "mb_per_s": mb_per_s,
            "disk_mb_per_s": measured.metrics.bytes_written as f64 / seconds / 1e6,
            "latency_us": { "p50": p50, "p99": p99, "p999": p999, "max": measured.latency.max() },
            "fsyncs_per_s": fsyncs_per_s,
            "cpu_us_per_entry": measured.cpu_seconds * 1e6 / measured.entries.max(1) as f64,
            "cpu_cores_used": measured.cpu_seconds / seconds,
            "load_average_1m": load_average(),
            "batches_per_fsync": measured.metrics.batches_per_group_mean,
            "fsync_mean_us": measured.metrics.sync_micros_mean,
            "segment_rolls": measured.metrics.segment_rolls,
            "segment_roll_ms_total": measured.metrics.segment_roll_micros_total / 1e3,
            "spares_zero_filled": measured.metrics.spares_zero_filled,
            "baseline": {
                "write_bytes": write_bytes,
                "mb_per_s": baseline.mb_per_s,
                "fsync_p50_us": baseline.sync_micros_p50,
                "fsync_p99_us": baseline.sync_micros_p99,
                "writes_per_s": baseline.writes as f64 / baseline.elapsed.as_secs_f64(),
                "before": { "mb_per_s": runs[0].mb_per_s, "fsync_p50_us": runs[0].sync_micros_p50 },
                "after": { "mb_per_s": runs[1].mb_per_s, "fsync_p50_us": runs[1].sync_micros_p50 },
            },
            "mb_per_s_over_baseline": mb_per_s / baseline.mb_per_s,
            "p50_over_baseline_fsync_p50": p50 / baseline.sync_micros_p50,
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "wal: {} appenders on {threads} threads, {} B payload, {:.1} s, backend {}",
        options.appenders, options.payload, seconds, measured.backend
    );
    println!("  entries/s        {entries_per_s:>14.0}");
    println!(
        "  baseline runs    before {:.1} MB/s p50 {:.0} µs, after {:.1} MB/s p50 {:.0} µs (mean quoted)",
        runs[0].mb_per_s, runs[0].sync_micros_p50, runs[1].mb_per_s, runs[1].sync_micros_p50
    );
    println!(
        "  MB/s (payload)   {mb_per_s:>14.1}   baseline {:.1} MB/s ({write_bytes} B writes)  ratio {:.2}",
        baseline.mb_per_s,
        mb_per_s / baseline.mb_per_s
    );
    println!(
        "  latency µs       p50 {p50:.0}  p99 {p99:.0}  p99.9 {p999:.0}   baseline write+fdatasync p50 {:.0} p99 {:.0}  (p50 ratio {:.2})",
        baseline.sync_micros_p50,
        baseline.sync_micros_p99,
        p50 / baseline.sync_micros_p50
    );
    println!(
        "  fsyncs/s         {fsyncs_per_s:>14.0}   batches per fsync {:.1}, fsync mean {:.0} µs",
        measured.metrics.batches_per_group_mean, measured.metrics.sync_micros_mean
    );
    println!(
        "  cpu              {:.2} µs per entry, {:.2} cores busy (load average {:.1})",
        measured.cpu_seconds * 1e6 / measured.entries.max(1) as f64,
        measured.cpu_seconds / seconds,
        load_average()
    );
    println!(
        "  segments         {} rolls, {:.0} ms rolling, {} spares zero-filled (rest recycled)",
        measured.metrics.segment_rolls,
        measured.metrics.segment_roll_micros_total / 1e3,
        measured.metrics.spares_zero_filled
    );
    Ok(())
}

/// The machine's 1-minute load average (shared machines: context for the
/// figures), or 0 if unreadable.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
