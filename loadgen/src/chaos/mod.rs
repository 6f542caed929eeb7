//! `barge-loadgen chaos`: fault experiments on real processes.
//!
//! The experiment starts the KV example (`engine/examples/kv.rs`) as one OS
//! process per node (this binary re-executed as `barge-loadgen kv ...`),
//! with fsync and TLS on, each node's QUIC traffic passing through the
//! userspace fault proxy ([`crate::proxy`]). Clients run put / get / cas /
//! del on a few keys with unique values and record every operation with its
//! invocation and completion times ([`crate::check::Operation`]); writes
//! whose outcome is unknown (a `MAYBE` answer, a timeout, a lost connection)
//! are recorded as indeterminate, answers that say a request was not applied
//! (`FAIL`, `REDIRECT`) are counted but not recorded. Meanwhile a nemesis
//! injects one fault at a time and heals it: SIGKILL and restart, SIGSTOP /
//! SIGCONT, partitions (leader isolated, majority / minority, one-way,
//! flapping), delay with loss, duplication and reordering, voter removal
//! and re-addition, and disk faults (fail-stop on an fsync error, a bit
//! flipped in a durable WAL record).
//!
//! At the end everything is healed, the clients stop, the nodes converge,
//! and a final `GET` per key is appended to the history. The verdict passes
//! when the history is linearizable ([`crate::check::check`]), no key's
//! final value lost its last acknowledged write, and every node reports the
//! same applied index, state hash and log hash.
//!
//! ```text
//! barge-loadgen chaos --nemesis kill,partition --duration 60 --json
//! ```
//!
//! Exit status: 0 pass, 1 fail (or the experiment could not run), 2 the
//! checker gave up within `--check-time` (unknown).

mod client;
mod cluster;
mod disk;
mod nemesis;
mod options;
mod report;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use options::{Family, Options, USAGE};
use report::Samples;
pub use report::{Outcome3, Report};

use crate::check::{Limits, Op, Operation, Outcome};
use client::Reply;
use cluster::Cluster;
use nemesis::Nemesis;
use workload::{Clock, Counters, WorkloadConfig};

/// Bound of the first election.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of the wait for every node to report the same applied index.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of one final read (it retries inside).
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of joining the client tasks after they were told to stop (an
/// operation in flight ends within its request timeouts).
const CLIENT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the monitor asks every node for `STATUS`.
const MONITOR_PERIOD: Duration = Duration::from_millis(250);
/// Operations recorded at most (memory: a few hundred bytes each; the
/// clients pace themselves to spread them over the run).
const HISTORY_OPERATIONS_MAX: usize = 1_000_000;
/// Client id of the final reads in the history.
const FINAL_READER: u64 = 0;

/// Exit status of a run whose verdict is `outcome`.
pub fn exit_code(outcome: Outcome3) -> i32 {
    match outcome {
        Outcome3::Pass => 0,
        Outcome3::Fail => 1,
        Outcome3::Unknown => 2,
    }
}

/// The `chaos` subcommand: parses options, runs, prints; returns the exit
/// status.
///
/// # Errors
/// Bad options, or the cluster could not be set up.
pub fn main(parser: lexopt::Parser) -> Result<i32> {
    let Some(options) = Options::parse(parser)? else {
        return Ok(0);
    };
    let program = std::env::current_exe().context("finding this program to start nodes")?;
    let (dir, temporary) = match &options.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("barge-chaos-")
                .tempdir()
                .context("creating a temporary run directory")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    // Interrupted, the experiment is dropped: its guard kills every node.
    let mut report = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("registering for SIGTERM")?;
        tokio::select! {
            report = run(&options, &dir, &program) => report,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted (SIGINT); nodes stopped"),
            _ = terminate.recv() => anyhow::bail!("terminated (SIGTERM); nodes stopped"),
        }
    })?;
    let outcome = report.outcome();
    if temporary.is_some() && outcome == Outcome3::Pass {
        report.run_dir.push_str(" (removed: the run passed)");
    }
    if options.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    if outcome != Outcome3::Pass {
        // Keep the logs and data of a failed run.
        if let Some(temporary) = temporary {
            let kept = temporary.keep();
            eprintln!("chaos: run directory kept at {}", kept.display());
        }
    }
    Ok(exit_code(outcome))
}

/// Polls every node's `STATUS` until `stop`; returns the distinct
/// (term, leader) pairs seen.
async fn monitor(
    clients: Arc<BTreeMap<u64, SocketAddr>>,
    stop: Arc<AtomicBool>,
) -> BTreeSet<(u64, u64)> {
    let mut leaders = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        for status in cluster::statuses(&clients).await.values() {
            if status.leader != 0 {
                leaders.insert((status.term, status.leader));
            }
        }
        tokio::time::sleep(MONITOR_PERIOD).await;
    }
    leaders
}

/// Runs the experiment in `dir` with nodes started from `program`.
///
/// # Errors
/// The cluster could not be set up or never elected a leader.
///
/// # Cancel safety
/// Not cancel-safe; the processes are killed when it is dropped.
pub async fn run(options: &Options, dir: &Path, program: &Path) -> Result<Report> {
    let mut cluster = Cluster::start(dir, options.nodes, options.seed, program)?;
    cluster
        .wait_for_leader(LEADER_TIMEOUT)
        .await
        .with_context(|| format!("first election (node logs in {})", dir.display()))?;
    let clock = Clock(Instant::now());
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn(monitor(
        Arc::clone(&cluster.clients),
        Arc::clone(&stop_monitor),
    ));
    let mut clients = Vec::new();
    let config = WorkloadConfig::new(
        options.keys,
        options.seed,
        options.clients,
        options.duration,
        HISTORY_OPERATIONS_MAX,
    );
    for id in 1..=options.clients {
        clients.push(tokio::spawn(workload::run_client(
            id,
            config.clone(),
            Arc::clone(&cluster.clients),
            clock,
            Arc::clone(&stop_clients),
        )));
    }

    let deadline = clock.0 + options.duration;
    let mut nemesis = Nemesis::new(&mut cluster, options.seed, clock, options.interval);
    nemesis.run(&options.nemesis, deadline).await;
    if let Err(error) = nemesis.heal().await {
        nemesis.log.errors.push(format!("final heal: {error:#}"));
    }
    // Writes after the last heal show the cluster serving again.
    tokio::time::sleep(options.interval.min(Duration::from_secs(5))).await;
    stop_clients.store(true, Ordering::Relaxed);
    let mut history: Vec<Operation> = Vec::new();
    let mut counters = Counters::default();
    for task in clients {
        let run = tokio::time::timeout(CLIENT_JOIN_TIMEOUT, task)
            .await
            .context("a client did not stop in time")?
            .context("a client task failed")?;
        history.extend(run.history);
        counters.add(&run.counters);
    }
    let mut log = nemesis.log;
    let duration_s = clock.0.elapsed().as_secs_f64();

    let converged = converge(&cluster).await;
    let mut finals = BTreeMap::new();
    let mut final_reads_missing = Vec::new();
    // The node that answered the last read serves the next: one round of
    // `STATUS` finds the leader for all of them, not one per key.
    let mut reader = None;
    for key in (0..options.keys).map(|k| format!("k{k}")) {
        let invoked_ns = clock.now_ns();
        let line = format!("GET {key}");
        match cluster.command_at(&line, FINAL_READ_TIMEOUT, reader).await {
            Ok((reply @ (Reply::Ok(Some(_)) | Reply::Absent), answered_by)) => {
                reader = Some(answered_by);
                let value = match reply {
                    Reply::Ok(value) => value,
                    _ => None,
                };
                history.push(Operation {
                    client: FINAL_READER,
                    op: Op::Get { key: key.clone() },
                    outcome: Outcome::Get(value.clone()),
                    invoked_ns,
                    completed_ns: Some(clock.now_ns()),
                });
                finals.insert(key, value);
            }
            Ok((other, _)) => {
                log.errors
                    .push(format!("final GET {key} answered {other:?}"));
                final_reads_missing.push(key);
            }
            Err(error) => {
                log.errors.push(format!("final GET {key}: {error:#}"));
                final_reads_missing.push(key);
            }
        }
    }
    let statuses = cluster.statuses().await;
    let statuses: BTreeMap<u64, Option<client::Status>> = cluster
        .nodes
        .keys()
        .map(|id| (*id, statuses.get(id).cloned()))
        .collect();
    stop_monitor.store(true, Ordering::Relaxed);
    let leaders = monitor.await.unwrap_or_default();
    let proxy = cluster.proxy.stats();
    // Stop the nodes before the (CPU-heavy) check.
    drop(cluster);

    let lost_acked_writes = report::lost_acked_writes(&history, &finals);
    let (recovery_ms, unrecovered) = report::recovery_ms(&history, &log.heals_ns, &log.starts_ns);
    let unavailable_ms = report::unavailable_ms(&history, &log.starts_ns);
    let write_latency_ms = report::write_latency_ms(&history);
    let limits = Limits {
        time: options.check_time,
        ..Limits::default()
    };
    let started = Instant::now();
    let history_len = history.len();
    let verdict = tokio::task::spawn_blocking(move || crate::check::check(&history, &limits))
        .await
        .context("the linearizability check panicked")?;
    let check_s = started.elapsed().as_secs_f64();
    Ok(Report {
        seed: options.seed,
        nodes: options.nodes,
        duration_s,
        counters,
        history_len,
        lost_acked_writes,
        final_reads_missing,
        verdict,
        check_s,
        leader_changes: u64::try_from(leaders.len().saturating_sub(1)).unwrap_or(u64::MAX),
        recovery_ms: Samples::new(recovery_ms),
        unrecovered,
        unavailable_ms: Samples::new(unavailable_ms),
        write_latency_ms: Samples::new(write_latency_ms),
        catch_up_ms: Samples::new(log.catch_up_ms.clone()),
        proxy,
        statuses,
        converged,
        run_dir: PathBuf::from(dir).display().to_string(),
        nemesis: log,
    })
}

/// Waits (bounded) until every node answers `STATUS` with the same commit
/// and applied index; `false` if they did not within the bound.
async fn converge(cluster: &Cluster) -> bool {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let statuses = cluster.statuses().await;
        let all = statuses.len() == cluster.nodes.len();
        let mut points = statuses.values().map(|s| (s.commit, s.applied));
        let first = points.next();
        if all && first.is_some_and(|first| first.0 == first.1 && points.all(|p| p == first)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
