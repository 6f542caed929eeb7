//! What operators watch: the seed article's list first (leader changes,
//! elections, uncommitted entries), then latencies and transport counters.
//! Exposed as a struct ([`Metrics`]) and as Prometheus text
//! ([`Metrics::to_prometheus`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use barge_net::CounterSnapshot;

use crate::core::{LogIndex, Membership, NodeId, Role, Term};

/// Upper bounds of the latency histogram buckets, in microseconds.
const BUCKET_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// A fixed-bucket latency histogram, updated with relaxed atomics (no lock,
/// no allocation) from the Raft thread and read by anyone.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKET_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records `count` observations of `latency` at once (a batch of
    /// proposals resolved together shares one latency).
    pub(crate) fn record(&self, latency: Duration, count: u64) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKET_BOUNDS_MICROS.len());
        self.buckets[bucket].fetch_add(count, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(micros.saturating_mul(count), Ordering::Relaxed);
        self.count.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bucket_counts: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the bucket upper bounds are
    /// [`HistogramSnapshot::bounds_micros`], then +Inf.
    pub bucket_counts: Vec<u64>,
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// Bucket upper bounds in microseconds.
    #[must_use]
    pub fn bounds_micros() -> &'static [u64] {
        &BUCKET_BOUNDS_MICROS
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1), in
    /// microseconds; `None` without observations or in the +Inf bucket.
    #[must_use]
    pub fn quantile_upper_bound_micros(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.bucket_counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return BUCKET_BOUNDS_MICROS.get(bucket).copied();
            }
        }
        None
    }
}

/// A node's metrics at one moment (refreshed by the Raft thread every tick
/// and after every batch of work).
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Times the known leader changed.
    pub leader_changes: u64,
    /// Elections this node started.
    pub elections_started: u64,
    /// Pre-vote rounds this node started.
    pub pre_votes_started: u64,
    /// Times, as leader, this node saw a follower's log go back (the
    /// follower cut a damaged log and is refetching; see `core::repair`).
    pub followers_went_back: u64,
    /// Entries appended but not committed (leader view).
    pub uncommitted_entries: u64,
    /// Bytes appended but not committed (leader view).
    pub uncommitted_bytes: u64,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Applied index.
    pub applied_index: LogIndex,
    /// Last log index.
    pub last_log_index: LogIndex,
    /// The configuration in effect on this node: the latest in its log,
    /// committed or not (§6).
    pub membership: Membership,
    /// Proposals resolved as committed and applied.
    pub proposals_committed: u64,
    /// Proposals refused with `Overloaded` by the core.
    pub proposals_overloaded: u64,
    /// Time from a proposal reaching the Raft thread to its response.
    pub commit_latency: HistogramSnapshot,
    /// Time from submitting log writes to their durability report (one
    /// group write plus fdatasync, and any queueing before it).
    pub log_durable_latency: HistogramSnapshot,
    /// fdatasync calls by the log.
    pub fsyncs: u64,
    /// Mean fdatasync latency, microseconds.
    pub fsync_micros_mean: f64,
    /// Longest fdatasync, microseconds.
    pub fsync_micros_max: f64,
    /// Log batches written.
    pub log_batches: u64,
    /// Mean batches per group write.
    pub log_batches_per_group_mean: f64,
    /// Bytes in flight to each follower (leader only).
    pub inflight_bytes: Vec<(NodeId, u64)>,
    /// Snapshot transfers started as leader.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// While this node refetches log entries it lost to damage: the index of
    /// its repair floor (it neither campaigns nor votes for candidates
    /// behind it; `u64::MAX` when the damage hid the last index); 0
    /// otherwise. Pending with no leader known on every node
    /// means every copy of some entry was damaged: the cluster has stopped
    /// rather than lose it.
    pub repair_pending: u64,
    /// Messages the core refused as malformed.
    pub messages_rejected: u64,
    /// Frames that failed to decode or named the wrong sender.
    pub frames_rejected: u64,
    /// Transport counters (frames, bytes, drops, rejected peers).
    pub transport: CounterSnapshot,
}

impl Metrics {
    /// Metrics of a node that has done nothing yet (every counter zero,
    /// follower of no one in term 0).
    #[must_use]
    pub fn empty(id: NodeId) -> Metrics {
        Metrics {
            id,
            role: Role::Follower,
            term: Term(0),
            leader: None,
            leader_changes: 0,
            elections_started: 0,
            pre_votes_started: 0,
            followers_went_back: 0,
            uncommitted_entries: 0,
            uncommitted_bytes: 0,
            commit_index: LogIndex(0),
            applied_index: LogIndex(0),
            last_log_index: LogIndex(0),
            membership: Membership::default(),
            proposals_committed: 0,
            proposals_overloaded: 0,
            commit_latency: HistogramSnapshot::default(),
            log_durable_latency: HistogramSnapshot::default(),
            fsyncs: 0,
            fsync_micros_mean: 0.0,
            fsync_micros_max: 0.0,
            log_batches: 0,
            log_batches_per_group_mean: 0.0,
            inflight_bytes: Vec::new(),
            snapshots_sent: 0,
            snapshots_installed: 0,
            repair_pending: 0,
            messages_rejected: 0,
            frames_rejected: 0,
            transport: CounterSnapshot::default(),
        }
    }

    /// The node's place in the cluster on one line of `name=value` words,
    /// for logs and status commands:
    /// `id=2 leader=1 term=3 commit=40 applied=39 voters=1,2,3 learners=-`
    /// (`leader=0`: none known; `voters`: the newest configuration's, also
    /// while joint; `-`: an empty list).
    ///
    /// ```
    /// use barge::core::NodeId;
    /// use barge::node::Metrics;
    ///
    /// let summary = Metrics::empty(NodeId(4)).summary();
    /// assert_eq!(summary, "id=4 leader=0 term=0 commit=0 applied=0 voters=- learners=-");
    /// ```
    #[must_use]
    pub fn summary(&self) -> String {
        let list = |ids: &std::collections::BTreeSet<NodeId>| {
            let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
            if ids.is_empty() {
                "-".to_owned()
            } else {
                ids.join(",")
            }
        };
        format!(
            "id={} leader={} term={} commit={} applied={} voters={} learners={}",
            self.id.0,
            self.leader.map_or(0, |leader| leader.0),
            self.term.0,
            self.commit_index.0,
            self.applied_index.0,
            list(&self.membership.voters),
            list(&self.membership.learners),
        )
    }

    /// Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let id = self.id.0;
        let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP barge_{name} {help}");
            let _ = writeln!(out, "# TYPE barge_{name} {kind}");
            let _ = writeln!(out, "barge_{name}{{node=\"{id}\"}} {value}");
        };
        gauge(
            "leader_changes_total",
            "Times the known leader changed.",
            "counter",
            self.leader_changes as f64,
        );
        gauge(
            "elections_started_total",
            "Elections this node started.",
            "counter",
            self.elections_started as f64,
        );
        gauge(
            "pre_votes_started_total",
            "Pre-vote rounds this node started.",
            "counter",
            self.pre_votes_started as f64,
        );
        gauge(
            "uncommitted_entries",
            "Entries appended but not committed (leader).",
            "gauge",
            self.uncommitted_entries as f64,
        );
        gauge(
            "uncommitted_bytes",
            "Bytes appended but not committed (leader).",
            "gauge",
            self.uncommitted_bytes as f64,
        );
        gauge("term", "Current term.", "gauge", self.term.0 as f64);
        gauge(
            "is_leader",
            "1 if this node leads.",
            "gauge",
            f64::from(u8::from(self.role == Role::Leader)),
        );
        gauge(
            "commit_index",
            "Commit index.",
            "gauge",
            self.commit_index.0 as f64,
        );
        gauge(
            "applied_index",
            "Applied index.",
            "gauge",
            self.applied_index.0 as f64,
        );
        gauge(
            "last_log_index",
            "Last log index.",
            "gauge",
            self.last_log_index.0 as f64,
        );
        gauge(
            "followers_went_back_total",
            "Times, as leader, this node saw a follower's log go back.",
            "counter",
            self.followers_went_back as f64,
        );
        gauge(
            "proposals_committed_total",
            "Proposals committed and applied.",
            "counter",
            self.proposals_committed as f64,
        );
        gauge(
            "proposals_overloaded_total",
            "Proposals refused as overloaded.",
            "counter",
            self.proposals_overloaded as f64,
        );
        gauge(
            "fsyncs_total",
            "fdatasync calls by the log.",
            "counter",
            self.fsyncs as f64,
        );
        gauge(
            "fsync_micros_mean",
            "Mean fdatasync latency.",
            "gauge",
            self.fsync_micros_mean,
        );
        gauge(
            "fsync_micros_max",
            "Longest fdatasync.",
            "gauge",
            self.fsync_micros_max,
        );
        gauge(
            "snapshots_sent_total",
            "Snapshot transfers started.",
            "counter",
            self.snapshots_sent as f64,
        );
        gauge(
            "snapshots_installed_total",
            "Snapshots installed from a leader.",
            "counter",
            self.snapshots_installed as f64,
        );
        gauge(
            "repair_pending",
            "Repair floor index while refetching entries lost to damage (0: none).",
            "gauge",
            self.repair_pending as f64,
        );
        gauge(
            "messages_rejected_total",
            "Malformed messages refused.",
            "counter",
            self.messages_rejected as f64,
        );
        gauge(
            "frames_rejected_total",
            "Undecodable or misattributed frames.",
            "counter",
            self.frames_rejected as f64,
        );
        gauge(
            "peers_rejected_total",
            "Connections refused or peers disconnected for misbehaviour.",
            "counter",
            (self.transport.peers_misbehaving + self.transport.peers_rejected) as f64,
        );
        gauge(
            "frames_dropped_total",
            "Frames dropped (peer down or queue full).",
            "counter",
            (self.transport.frames_dropped + self.transport.sends_refused_full) as f64,
        );
        for (peer, bytes) in &self.inflight_bytes {
            let _ = writeln!(
                out,
                "barge_inflight_bytes{{node=\"{id}\",peer=\"{}\"}} {bytes}",
                peer.0
            );
        }
        histogram(
            &mut out,
            id,
            "commit_latency_seconds",
            "Proposal to response.",
            &self.commit_latency,
        );
        histogram(
            &mut out,
            id,
            "log_durable_latency_seconds",
            "Log submit to durable.",
            &self.log_durable_latency,
        );
        out
    }
}

fn histogram(out: &mut String, id: u64, name: &str, help: &str, snapshot: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP barge_{name} {help}");
    let _ = writeln!(out, "# TYPE barge_{name} histogram");
    let mut cumulative = 0;
    for (bucket, count) in snapshot.bucket_counts.iter().enumerate() {
        cumulative += count;
        let bound = BUCKET_BOUNDS_MICROS.get(bucket).map_or_else(
            || "+Inf".to_owned(),
            |micros| format!("{}", *micros as f64 / 1e6),
        );
        let _ = writeln!(
            out,
            "barge_{name}_bucket{{node=\"{id}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "barge_{name}_sum{{node=\"{id}\"}} {}",
        snapshot.sum_micros as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "barge_{name}_count{{node=\"{id}\"}} {}",
        snapshot.count
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_leader_and_the_members() {
        let mut metrics = Metrics::empty(NodeId(2));
        metrics.leader = Some(NodeId(1));
        (metrics.term, metrics.commit_index) = (Term(3), LogIndex(40));
        metrics.applied_index = LogIndex(39);
        metrics.membership.voters = [1, 2, 3].map(NodeId).into();
        metrics.membership.learners = [5].map(NodeId).into();
        assert_eq!(
            metrics.summary(),
            "id=2 leader=1 term=3 commit=40 applied=39 voters=1,2,3 learners=5"
        );
    }

    #[test]
    fn histogram_quantiles_use_bucket_bounds() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(80), 90);
        histogram.record(Duration::from_millis(3), 10);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 100);
        assert_eq!(snapshot.quantile_upper_bound_micros(0.5), Some(100));
        assert_eq!(snapshot.quantile_upper_bound_micros(0.95), Some(5_000));
        histogram.record(Duration::from_secs(5), 1);
        assert_eq!(histogram.snapshot().quantile_upper_bound_micros(1.0), None);
    }
}
