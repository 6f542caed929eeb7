//! `barge-loadgen run` (also what `barge-loadgen` does with no arguments):
//! a local cluster under load, end to end.
//!
//! # What a run does
//!
//! 1. With `--baseline`, measures on the data directory's disk a raw
//!    write+fdatasync loop and a raw sequential write loop, and a raw quinn
//!    round trip on loopback, before any node starts (nothing else runs).
//! 2. Starts `--nodes` nodes in this process (each on its own threads, QUIC
//!    with mutual TLS on loopback, its log in a fresh temporary directory
//!    with fsync on, or off with the unsafe `--no-fsync`) and waits until they agree on a leader. With
//!    `--processes`, each node is a child process instead (`barge-loadgen
//!    node`, see `processes` and `node_process`), and the proposers reach
//!    it over `--connections` loopback TCP connections speaking the binary
//!    pipelined protocol of `protocol`; CPU and peak RSS are then reported
//!    per process.
//! 3. Drives the leader for `--warmup` + `--duration` seconds: closed loop
//!    (`--clients` Tokio tasks, each waiting for its proposal to commit
//!    before sending the next) or open loop (`--rate`: a fixed schedule,
//!    latency from each proposal's intended send time). Proposers follow
//!    `NotLeader` hints and count every error by kind. A progress line goes
//!    to stderr every second.
//! 4. Reads each node's metrics and this process's CPU time at both ends of
//!    the measured window, shuts the nodes down (their logs synced), removes
//!    the data, and prints a table on stdout, or one JSON object with
//!    `--json` and nothing else on stdout.
//!
//! Latency is proposer-side: from `Node::propose` being called (or meant
//! to be, open loop) to its answer, which comes once the entry is committed
//! and applied on the leader. Throughput counts answers inside the window.
//!
//! Every loop is bounded by the duration: no proposal starts after the
//! window, and answers still missing `drive::DRAIN_TIMEOUT` later are
//! abandoned and reported (in the open loop, so are proposals the schedule
//! had due in the window but that could not be sent by then).

mod baseline;
mod cluster;
mod deployment;
mod drive;
mod options;
mod processes;
pub(crate) mod protocol;
mod remote;
mod report;
pub(crate) mod resources;
mod sweep;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge_net::Bytes;

use self::baseline::Baseline;
use self::deployment::Cluster;
use self::drive::Recorder;
use self::options::{Command, Options, SweepParameter};
use self::report::{NodeFigures, RunReport};
use self::resources::{ProcessFigures, Resources};
use crate::system::file_system_type;

pub(crate) use self::cluster::Counter;
pub use self::options::USAGE;

/// How long a new cluster may take to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses the options of `run` and runs it.
///
/// # Errors
/// Bad flags (with the usage), a disk or cluster that cannot be set up, or
/// a node failing during the run.
pub fn run(parser: lexopt::Parser) -> Result<()> {
    match options::parse(parser)? {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Run(options) => execute(&options),
    }
}

fn execute(options: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .thread_name("loadgen-client")
        .enable_all()
        .build()
        .context("building the proposers' Tokio runtime")?;
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !parent.is_dir() {
        bail!("--data-dir {}: not a directory", parent.display());
    }
    if file_system_type(&parent).as_deref() == Some("tmpfs") {
        bail!(
            "{} is on tmpfs, where fsync costs nothing; pass --data-dir on a real disk",
            parent.display()
        );
    }
    runtime.block_on(async {
        let baseline = match options.baseline {
            true => Some(measure_baseline(&parent, options.json).await?),
            false => None,
        };
        match &options.sweep {
            None => {
                let report = one_run(options, &parent, baseline).await?;
                if options.json {
                    println!("{}", report.to_json());
                } else {
                    report.print_table();
                }
            }
            Some(sweep) => {
                let mut points = Vec::with_capacity(sweep.values.len());
                for value in &sweep.values {
                    let mut point = options.clone();
                    point.sweep = None;
                    match sweep.parameter {
                        SweepParameter::Clients => point.clients = Some(*value),
                        SweepParameter::Payload => point.payload_bytes = *value,
                    }
                    eprintln!("sweep: {}={value}", sweep.parameter.name());
                    let report = one_run(&point, &parent, baseline.clone()).await?;
                    points.push(sweep::Point {
                        value: *value,
                        report,
                    });
                }
                let plot = options.plot.clone().unwrap_or_else(|| {
                    PathBuf::from(format!("barge-sweep-{}.svg", sweep.parameter.name()))
                });
                let title = format!(
                    "Barge, {} nodes, {} + TLS on: sweep of {}",
                    options.nodes,
                    if options.fsync {
                        "fsync"
                    } else {
                        "UNSAFE: fsync off"
                    },
                    sweep.parameter.name()
                );
                std::fs::write(&plot, sweep::svg(sweep.parameter, &points, &title))
                    .with_context(|| format!("writing the plot {}", plot.display()))?;
                if options.json {
                    let json = sweep::to_json(sweep.parameter, &points, &plot.to_string_lossy());
                    println!("{json}");
                } else {
                    sweep::print_table(sweep.parameter, &points);
                    println!("plot written to {}", plot.display());
                }
            }
        }
        Ok(())
    })
}

async fn measure_baseline(parent: &Path, quiet: bool) -> Result<Baseline> {
    let scratch = tempfile::Builder::new()
        .prefix("barge-baseline-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
    if !quiet {
        eprintln!(
            "baseline: raw write+fdatasync, sequential writes in {}, quinn round trip ...",
            parent.display()
        );
    }
    let measured = baseline::measure(scratch.path()).await?;
    scratch
        .close()
        .context("removing the baseline scratch directory")?;
    Ok(measured)
}

/// Starts a cluster, drives it, and always shuts it down (even when the
/// run failed), so no node threads or data outlive the run.
async fn one_run(
    options: &Options,
    parent: &Path,
    baseline: Option<Baseline>,
) -> Result<RunReport> {
    let cluster = Cluster::start(options.nodes, parent, options.processes, options.fsync).await?;
    let driven = drive_cluster(&cluster, options).await;
    let shutdown = cluster.shutdown().await;
    let mut report = driven?;
    shutdown?;
    report.baseline = baseline;
    Ok(report)
}

async fn drive_cluster(cluster: &Cluster, options: &Options) -> Result<RunReport> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let concurrency = options.concurrency();
    eprintln!(
        "cluster of {} up{}, leader {leader}; {} for {:.1} s + {:.1} s warm-up",
        options.nodes,
        if cluster.processes() {
            " (one process per node)"
        } else {
            ""
        },
        match options.rate_per_s {
            Some(rate) => format!("open loop at {rate} ops/s (≤ {concurrency} in flight)"),
            None => format!("{concurrency} closed-loop clients"),
        },
        options.duration.as_secs_f64(),
        options.warmup.as_secs_f64()
    );
    let router = Arc::new(cluster.router(leader, options.connections_per_node).await?);
    let started = Instant::now();
    let window_start = started + options.warmup;
    let window_end = window_start + options.duration;
    let recorder = Arc::new(Recorder::new(window_start, window_end));
    let payload = Bytes::from(vec![0xa5u8; options.payload_bytes]);
    let load = {
        let (router, recorder) = (Arc::clone(&router), Arc::clone(&recorder));
        match options.rate_per_s {
            None => tokio::spawn(drive::closed_loop(router, recorder, concurrency, payload)),
            Some(rate) => tokio::spawn(drive::open_loop(
                router,
                recorder,
                rate,
                concurrency,
                payload,
                started,
            )),
        }
    };
    let progress = tokio::spawn(drive::progress(
        Arc::clone(&router),
        Arc::clone(&recorder),
        started,
    ));

    tokio::time::sleep_until(window_start.into()).await;
    let (metrics_before, resources_before) = (cluster.metrics().await, cluster.resources());
    tokio::time::sleep_until(window_end.into()).await;
    let (metrics_after, resources_after) = (cluster.metrics().await, cluster.resources());
    let abandoned = load.await.context("the proposers' task failed")??;
    progress.abort();
    let _ = progress.await;
    if let Some(fatal) = recorder.fatal() {
        bail!("the cluster failed during the run: {fatal}");
    }
    let (metrics_before, metrics_after) = (metrics_before?, metrics_after?);
    let resources_end = cluster.resources();
    let seconds = options.duration.as_secs_f64();
    let processes = ProcessFigures::between(&resources_before, &resources_after, &resources_end);
    let per_node = metrics_before
        .iter()
        .zip(&metrics_after)
        .map(|(before, after)| NodeFigures::between(before, after, seconds))
        .collect();
    Ok(RunReport {
        nodes: options.nodes,
        mode: if options.rate_per_s.is_some() {
            "open"
        } else {
            "closed"
        },
        clients: concurrency,
        rate_per_s: options.rate_per_s,
        payload_bytes: options.payload_bytes,
        window: options.duration,
        committed: recorder.committed_in_window(),
        latency: recorder.latency(),
        errors: recorder.errors.snapshot().to_vec(),
        abandoned,
        per_node,
        cpu_seconds: processes.iter().map(|process| process.cpu_seconds).sum(),
        cpu_by_thread: cpu_by_thread(&resources_before, &resources_after, seconds),
        // A bound on the peak of the sum: each process's own peak, added.
        peak_rss_bytes: processes.iter().map(|process| process.peak_rss_bytes).sum(),
        processes,
        one_process: !cluster.processes(),
        fsync: options.fsync,
        leader_at_end: cluster.agreed_leader().await.map(|id| id.0),
        baseline: None,
    })
}

/// CPU by thread group over the window, % of one core, largest first;
/// with several processes each group is named `<process>/<group>`.
fn cpu_by_thread(
    before: &[(String, Resources)],
    after: &[(String, Resources)],
    seconds: f64,
) -> Vec<(String, f64)> {
    let several = after.len() > 1;
    let mut groups: Vec<(String, f64)> = before
        .iter()
        .zip(after)
        .flat_map(|((name, before), (_, after))| {
            before
                .cpu_by_thread(after, seconds)
                .into_iter()
                .map(move |(group, percent)| match several {
                    true => (format!("{name}/{group}"), percent),
                    false => (group, percent),
                })
        })
        .collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short run of a real 3-node cluster: proposals commit, the JSON
    /// carries the promised fields with plausible values, and the data
    /// directory is gone afterwards.
    #[test]
    fn a_short_run_commits_and_reports() {
        let parent = tempfile::tempdir().expect("parent directory");
        let options = Options {
            clients: Some(8),
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(300),
            data_dir: Some(parent.path().to_path_buf()),
            ..Options::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let report = runtime
            .block_on(one_run(&options, parent.path(), None))
            .expect("the run completes");
        assert!(report.committed > 0, "nothing committed: {report:?}");
        assert!(!report.latency.is_empty());
        assert_eq!(report.per_node.len(), 3);
        assert!(
            report.per_node.iter().any(|node| node.fsyncs_per_s > 0.0),
            "no node synced its log"
        );
        assert_eq!(report.abandoned, 0);
        let json = report.to_json();
        for field in [
            "ops_per_s",
            "leader_changes",
            "peak_rss_bytes",
            "fsyncs_per_s",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        for field in ["p50", "p99", "p999", "max"] {
            assert!(
                json["latency_us"][field].as_u64().is_some(),
                "latency {field}"
            );
        }
        assert!(json["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0);
        let left: Vec<_> = std::fs::read_dir(parent.path())
            .expect("read parent")
            .collect();
        assert!(left.is_empty(), "data left behind: {left:?}");
    }

    #[test]
    fn tmpfs_detection_reads_proc_mounts() {
        // `/` is a mount point, so it always has a type; a missing path has none.
        assert!(file_system_type(Path::new("/")).is_some());
        assert_eq!(file_system_type(Path::new("/no/such/path")), None);
    }
}
