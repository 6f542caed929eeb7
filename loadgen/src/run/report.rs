//! What one run reports: proposer-side throughput and latency, node-side
//! counters as differences over the measured window, process CPU and
//! memory, and ratios to the baselines. Printed as a table or as one JSON
//! object.

use std::time::Duration;

use barge::node::Metrics;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::baseline::Baseline;
use super::resources::ProcessFigures;

/// One node's counters over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFigures {
    pub id: u64,
    pub leader: bool,
    pub fsyncs_per_s: f64,
    /// Entries per log batch (entries appended / batches written).
    pub entries_per_batch: f64,
    /// Log batches per group write (and so per fsync), over the window.
    pub batches_per_fsync: f64,
    pub fsync_micros_mean: f64,
    pub bytes_sent_per_s: f64,
    pub bytes_received_per_s: f64,
    pub leader_changes: u64,
    pub elections_started: u64,
    /// Pre-vote rounds: a follower that heard nothing from the leader for an
    /// election timeout, even if no election followed.
    pub pre_votes_started: u64,
    /// Snapshots installed from the leader (followers; each replaces the
    /// log and so restarts its counters).
    pub snapshots_installed: u64,
    /// Snapshot transfers started (leader).
    pub snapshots_sent: u64,
}

impl NodeFigures {
    pub fn between(before: &Metrics, after: &Metrics, seconds: f64) -> NodeFigures {
        let fsyncs = counted_since(before.fsyncs, after.fsyncs);
        let batches = counted_since(before.log_batches, after.log_batches);
        let entries = after
            .last_log_index
            .0
            .saturating_sub(before.last_log_index.0);
        let ratio = |numerator: u64, denominator: u64| {
            if denominator == 0 {
                0.0
            } else {
                numerator as f64 / denominator as f64
            }
        };
        NodeFigures {
            id: after.id.0,
            leader: after.leader == Some(after.id),
            fsyncs_per_s: fsyncs as f64 / seconds,
            entries_per_batch: ratio(entries, batches),
            batches_per_fsync: ratio(batches, fsyncs),
            fsync_micros_mean: after.fsync_micros_mean,
            bytes_sent_per_s: after
                .transport
                .bytes_sent
                .saturating_sub(before.transport.bytes_sent) as f64
                / seconds,
            bytes_received_per_s: after
                .transport
                .bytes_received
                .saturating_sub(before.transport.bytes_received)
                as f64
                / seconds,
            leader_changes: after.leader_changes.saturating_sub(before.leader_changes),
            elections_started: after
                .elections_started
                .saturating_sub(before.elections_started),
            pre_votes_started: after
                .pre_votes_started
                .saturating_sub(before.pre_votes_started),
            snapshots_installed: after
                .snapshots_installed
                .saturating_sub(before.snapshots_installed),
            snapshots_sent: after.snapshots_sent.saturating_sub(before.snapshots_sent),
        }
    }
}

/// Growth of a log counter over the window. A follower that installs a
/// snapshot replaces its log, and the new log counts from zero: then the
/// whole `after` value is what the window saw (a lower bound).
fn counted_since(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub nodes: u64,
    /// "closed" or "open".
    pub mode: &'static str,
    pub clients: usize,
    pub rate_per_s: Option<u64>,
    pub payload_bytes: usize,
    pub window: Duration,
    pub committed: u64,
    pub latency: Histogram<u64>,
    pub errors: Vec<(&'static str, u64)>,
    pub abandoned: u64,
    pub per_node: Vec<NodeFigures>,
    pub cpu_seconds: f64,
    /// CPU over the window by thread group, % of one core, largest first.
    pub cpu_by_thread: Vec<(String, f64)>,
    /// Sum of the processes' peaks.
    pub peak_rss_bytes: u64,
    /// Each process: this one first, then the node processes, if any.
    pub processes: Vec<ProcessFigures>,
    /// Whether the nodes ran inside the load generator's process.
    pub one_process: bool,
    /// False with the unsafe `--no-fsync` (labelled in the table and JSON).
    pub fsync: bool,
    pub leader_at_end: Option<u64>,
    pub baseline: Option<Baseline>,
}

impl RunReport {
    pub fn seconds(&self) -> f64 {
        self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn ops_per_s(&self) -> f64 {
        self.committed as f64 / self.seconds()
    }

    /// Committed payload bytes per second / 1e6.
    pub fn payload_mb_per_s(&self) -> f64 {
        self.ops_per_s() * self.payload_bytes as f64 / 1e6
    }

    pub fn micros(&self, quantile: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(quantile)
        }
    }

    /// Leader changes seen during the window: the largest count any node saw
    /// (every node counts the same change, so a sum would multiply it).
    pub fn leader_changes(&self) -> u64 {
        self.per_node
            .iter()
            .map(|node| node.leader_changes)
            .max()
            .unwrap_or(0)
    }

    pub fn elections(&self) -> u64 {
        self.per_node
            .iter()
            .map(|node| node.elections_started)
            .sum()
    }

    pub fn pre_votes(&self) -> u64 {
        self.per_node
            .iter()
            .map(|node| node.pre_votes_started)
            .sum()
    }

    pub fn fsyncs_per_s(&self) -> f64 {
        self.per_node.iter().map(|node| node.fsyncs_per_s).sum()
    }

    pub fn wire_bytes_per_s(&self) -> f64 {
        self.per_node.iter().map(|node| node.bytes_sent_per_s).sum()
    }

    /// CPU time over the window as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        self.cpu_seconds / self.seconds() * 100.0
    }

    /// Ratios to the baselines: p50 over (fsync p50 + quinn RTT p50), p99 in
    /// ms, payload bandwidth over raw disk bandwidth / nodes (they share the
    /// disk).
    fn ratios(&self, baseline: &Baseline) -> (f64, f64) {
        let floor = baseline.fsync_micros_p50 + baseline.quic_rtt_micros_p50;
        let share = baseline.disk_mb_per_s / self.nodes as f64;
        (
            self.micros(0.5) as f64 / floor.max(f64::MIN_POSITIVE),
            self.payload_mb_per_s() / share.max(f64::MIN_POSITIVE),
        )
    }

    pub fn to_json(&self) -> Value {
        let per_node: Vec<Value> = self
            .per_node
            .iter()
            .map(|node| {
                json!({
                    "id": node.id,
                    "leader": node.leader,
                    "fsyncs_per_s": node.fsyncs_per_s,
                    "entries_per_batch": node.entries_per_batch,
                    "batches_per_fsync": node.batches_per_fsync,
                    "fsync_us_mean": node.fsync_micros_mean,
                    "wire_bytes_sent_per_s": node.bytes_sent_per_s,
                    "wire_bytes_received_per_s": node.bytes_received_per_s,
                    "leader_changes": node.leader_changes,
                    "elections_started": node.elections_started,
                    "pre_votes_started": node.pre_votes_started,
                    "snapshots_installed": node.snapshots_installed,
                    "snapshots_sent": node.snapshots_sent,
                })
            })
            .collect();
        let errors: serde_json::Map<String, Value> = self
            .errors
            .iter()
            .map(|(kind, count)| ((*kind).to_owned(), json!(count)))
            .collect();
        let mut report = json!({
            "nodes": self.nodes,
            "mode": self.mode,
            "clients": self.clients,
            "rate_per_s": self.rate_per_s,
            "payload_bytes": self.payload_bytes,
            "duration_s": self.seconds(),
            "fsync": self.fsync,
            "tls": true,
            "committed": self.committed,
            "ops_per_s": self.ops_per_s(),
            "payload_mb_per_s": self.payload_mb_per_s(),
            "latency_us": {
                "p50": self.micros(0.5),
                "p90": self.micros(0.9),
                "p99": self.micros(0.99),
                "p999": self.micros(0.999),
                "max": self.latency.max(),
                "samples": self.latency.len(),
            },
            "fsyncs_per_s": self.fsyncs_per_s(),
            "wire_bytes_per_s": self.wire_bytes_per_s(),
            "cpu_percent": self.cpu_percent(),
            "cpu_percent_by_thread": self
                .cpu_by_thread
                .iter()
                .map(|(group, percent)| (group.clone(), json!(percent)))
                .collect::<serde_json::Map<String, Value>>(),
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "node_processes": !self.one_process,
            "processes": self
                .processes
                .iter()
                .map(|process| json!({
                    "name": process.name,
                    "cpu_percent": process.cpu_seconds / self.seconds() * 100.0,
                    "peak_rss_bytes": process.peak_rss_bytes,
                }))
                .collect::<Vec<Value>>(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "leader_changes": self.leader_changes(),
            "elections": self.elections(),
            "pre_votes": self.pre_votes(),
            "leader_at_end": self.leader_at_end,
            "errors": errors,
            "abandoned": self.abandoned,
            "per_node": per_node,
        });
        if let (Some(baseline), Some(object)) = (&self.baseline, report.as_object_mut()) {
            let (latency_ratio, bandwidth_ratio) = self.ratios(baseline);
            object.insert(
                "baseline".to_owned(),
                json!({
                    "fsync_us_p50": baseline.fsync_micros_p50,
                    "fsync_us_p99": baseline.fsync_micros_p99,
                    "disk_mb_per_s": baseline.disk_mb_per_s,
                    "quic_rtt_us_p50": baseline.quic_rtt_micros_p50,
                    "quic_rtt_us_p99": baseline.quic_rtt_micros_p99,
                }),
            );
            object.insert(
                "ratios".to_owned(),
                json!({
                    "p50_over_fsync_plus_rtt": latency_ratio,
                    "payload_bandwidth_over_disk_share": bandwidth_ratio,
                }),
            );
        }
        report
    }

    /// The table's first line: what ran, and whether fsync was on.
    pub fn header(&self) -> String {
        let mode = match self.rate_per_s {
            Some(rate) => format!("open loop at {rate} ops/s, ≤ {} in flight", self.clients),
            None => format!("closed loop, {} clients", self.clients),
        };
        format!(
            "barge run: {} nodes ({}), {mode}, {} B payload, {:.1} s measured; {}, TLS on",
            self.nodes,
            if self.one_process {
                "in one process"
            } else {
                "one process each"
            },
            self.payload_bytes,
            self.seconds(),
            if self.fsync {
                "fsync on"
            } else {
                "UNSAFE: fsync off (acknowledged writes may be lost on power failure)"
            }
        )
    }

    pub fn print_table(&self) {
        println!("{}", self.header());
        println!(
            "  committed ops/s      {:>12.0}   ({} committed, payload {:.1} MB/s)",
            self.ops_per_s(),
            self.committed,
            self.payload_mb_per_s()
        );
        println!(
            "  latency µs           p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   ({} samples)",
            self.micros(0.5),
            self.micros(0.9),
            self.micros(0.99),
            self.micros(0.999),
            self.latency.max(),
            self.latency.len()
        );
        println!(
            "  fsyncs/s (all nodes) {:>12.0}   wire bytes sent/s {:.1} MB",
            self.fsyncs_per_s(),
            self.wire_bytes_per_s() / 1e6
        );
        println!(
            "  CPU                  {:>11.0} %   of one core ({} cores)   peak RSS {:.1} MiB",
            self.cpu_percent(),
            std::thread::available_parallelism().map_or(0, usize::from),
            self.peak_rss_bytes as f64 / (1 << 20) as f64
        );
        if !self.one_process {
            let processes: Vec<String> = self
                .processes
                .iter()
                .map(|process| {
                    format!(
                        "{} {:.0} % {:.1} MiB",
                        process.name,
                        process.cpu_seconds / self.seconds() * 100.0,
                        process.peak_rss_bytes as f64 / (1 << 20) as f64
                    )
                })
                .collect();
            println!("  per process          {}", processes.join(", "));
        }
        let threads: Vec<String> = self
            .cpu_by_thread
            .iter()
            // Idle threads (under half a percent) would only bury the rest.
            .filter(|(_, percent)| *percent >= 0.5)
            .map(|(group, percent)| format!("{group} {percent:.0}"))
            .collect();
        println!("  CPU % by thread      {}", threads.join(", "));
        println!(
            "  leader changes {}   elections {}   pre-votes {}   leader at end {}",
            self.leader_changes(),
            self.elections(),
            self.pre_votes(),
            self.leader_at_end
                .map_or_else(|| "none".to_owned(), |id| id.to_string())
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!(
            "  errors               {}{}",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            },
            if self.abandoned > 0 {
                format!(
                    "; {} proposals unanswered or never sent at the end",
                    self.abandoned
                )
            } else {
                String::new()
            }
        );
        println!(
            "  {:>4} {:>6} {:>10} {:>13} {:>13} {:>12} {:>12} {:>12}",
            "node",
            "role",
            "fsyncs/s",
            "entries/batch",
            "batches/fsync",
            "fsync µs",
            "sent MB/s",
            "recv MB/s"
        );
        for node in &self.per_node {
            println!(
                "  {:>4} {:>6} {:>10.0} {:>13.1} {:>13.2} {:>12.0} {:>12.1} {:>12.1} {:>15} {:>17}",
                node.id,
                if node.leader { "leader" } else { "" },
                node.fsyncs_per_s,
                node.entries_per_batch,
                node.batches_per_fsync,
                node.fsync_micros_mean,
                node.bytes_sent_per_s / 1e6,
                node.bytes_received_per_s / 1e6,
                node.leader_changes,
                format!("{}/{}", node.snapshots_installed, node.snapshots_sent)
            );
        }
        if let Some(baseline) = &self.baseline {
            let (latency_ratio, bandwidth_ratio) = self.ratios(baseline);
            println!("  baseline (same run, same disk, loopback):");
            println!(
                "    raw write+fdatasync µs  p50 {:.0}  p99 {:.0}",
                baseline.fsync_micros_p50, baseline.fsync_micros_p99
            );
            println!(
                "    raw quinn round trip µs p50 {:.0}  p99 {:.0}",
                baseline.quic_rtt_micros_p50, baseline.quic_rtt_micros_p99
            );
            println!(
                "    raw sequential write    {:.1} MB/s  (share per node {:.1} MB/s)",
                baseline.disk_mb_per_s,
                baseline.disk_mb_per_s / self.nodes as f64
            );
            println!(
                "    ratios: p50 / (fsync p50 + RTT p50) = {latency_ratio:.2}   payload MB/s / (disk MB/s / {}) = {bandwidth_ratio:.2}",
                self.nodes
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use barge::core::{LogIndex, NodeId};

    fn metrics(id: u64, fsyncs: u64, batches: u64, last: u64, changes: u64) -> Metrics {
        Metrics {
            fsyncs,
            log_batches: batches,
            last_log_index: LogIndex(last),
            leader_changes: changes,
            leader: Some(NodeId(1)),
            ..Metrics::empty(NodeId(id))
        }
    }

    #[test]
    fn node_figures_are_window_differences() {
        let before = metrics(1, 100, 1_000, 10_000, 1);
        let after = metrics(1, 300, 1_400, 50_000, 1);
        let figures = NodeFigures::between(&before, &after, 2.0);
        assert_eq!(figures.fsyncs_per_s, 100.0);
        assert_eq!(figures.batches_per_fsync, 2.0);
        assert_eq!(figures.entries_per_batch, 100.0);
        assert_eq!(figures.leader_changes, 0);
        assert!(figures.leader);
        let idle = NodeFigures::between(&before, &before, 2.0);
        assert_eq!(idle.batches_per_fsync, 0.0, "no division by zero");
        // A snapshot install replaced the log: its counters restarted.
        let replaced = Metrics {
            snapshots_installed: 1,
            ..metrics(1, 40, 50, 60_000, 1)
        };
        let figures = NodeFigures::between(&before, &replaced, 2.0);
        assert_eq!(figures.fsyncs_per_s, 20.0);
        assert_eq!(figures.snapshots_installed, 1);
    }

    #[test]
    fn json_has_the_promised_fields() {
        let mut latency = super::super::drive::histogram();
        for micros in [100, 200, 300, 400, 2000] {
            latency.record(micros).expect("in range");
        }
        let before = metrics(1, 0, 0, 0, 0);
        let after = metrics(1, 10, 20, 2_000, 1);
        let report = RunReport {
            nodes: 3,
            mode: "closed",
            clients: 4,
            rate_per_s: None,
            payload_bytes: 1000,
            window: Duration::from_secs(2),
            committed: 2_000,
            latency,
            errors: vec![("not_leader", 3)],
            abandoned: 0,
            per_node: vec![NodeFigures::between(&before, &after, 2.0)],
            cpu_seconds: 1.0,
            cpu_by_thread: vec![("barge-raft".to_owned(), 30.0)],
            peak_rss_bytes: 1 << 20,
            processes: vec![ProcessFigures {
                name: "loadgen".to_owned(),
                cpu_seconds: 1.0,
                peak_rss_bytes: 1 << 20,
            }],
            one_process: true,
            fsync: true,
            leader_at_end: Some(1),
            baseline: Some(Baseline {
                fsync_micros_p50: 100.0,
                fsync_micros_p99: 200.0,
                disk_mb_per_s: 3.0,
                quic_rtt_micros_p50: 100.0,
                quic_rtt_micros_p99: 150.0,
            }),
        };
        let json = report.to_json();
        assert_eq!(json["ops_per_s"], 1000.0);
        assert_eq!(json["latency_us"]["p50"], 300);
        assert_eq!(json["latency_us"]["max"], 2000);
        assert!(json["latency_us"]["p99"].as_u64().is_some());
        assert!(json["latency_us"]["p999"].as_u64().is_some());
        assert_eq!(json["leader_changes"], 1);
        assert_eq!(json["peak_rss_bytes"], 1 << 20);
        assert_eq!(json["fsyncs_per_s"], 5.0);
        assert_eq!(json["cpu_percent"], 50.0);
        assert_eq!(json["cpu_percent_by_thread"]["barge-raft"], 30.0);
        assert_eq!(json["processes"][0]["cpu_percent"], 50.0);
        assert_eq!(json["node_processes"], false);
        assert_eq!(json["errors"]["not_leader"], 3);
        assert_eq!(json["fsync"], true);
        assert!(report.header().contains("fsync on"), "{}", report.header());
        let unsafe_report = RunReport {
            fsync: false,
            ..report
        };
        assert_eq!(unsafe_report.to_json()["fsync"], false);
        let header = unsafe_report.header();
        assert!(header.contains("UNSAFE: fsync off"), "{header}");
        // 300 µs over (100 + 100); 1 MB/s over 3 MB/s / 3 nodes.
        assert_eq!(json["ratios"]["p50_over_fsync_plus_rtt"], 1.5);
        assert_eq!(json["ratios"]["payload_bandwidth_over_disk_share"], 1.0);
    }
}
