//! The verdict: what was injected, what the clients saw, whether any
//! acknowledged write was lost, whether the history is linearizable and
//! whether the nodes agree; as a table or one JSON object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use super::client::Status;
use super::nemesis::NemesisLog;
use super::workload::Counters;
use crate::check::{Op, Operation, Outcome, Verdict};

/// The value a write leaves behind (`None`: the key is absent), or `None`
/// when the operation does not write (reads, failed CAS).
fn written(operation: &Operation) -> Option<Option<&str>> {
    let indeterminate = operation.outcome == Outcome::Indeterminate;
    match (&operation.op, &operation.outcome) {
        (Op::Put { value, .. }, Outcome::Put) => Some(Some(value)),
        (Op::Cas { new, .. }, Outcome::Cas(true)) => Some(Some(new)),
        (Op::Delete { .. }, Outcome::Delete(_)) => Some(None),
        (Op::Put { value, .. }, _) if indeterminate => Some(Some(value)),
        (Op::Cas { new, .. }, _) if indeterminate => Some(Some(new)),
        (Op::Delete { .. }, _) if indeterminate => Some(None),
        _ => None,
    }
}

/// Keys whose final value (read after everything healed and every client
/// stopped) is neither that of the last acknowledged write nor that of a
/// write concurrent with or later than it (indeterminate writes included):
/// an acknowledged write was lost (or a value appeared from nowhere).
///
/// A write is a candidate for the final value unless some acknowledged
/// write was invoked after it completed. With no acknowledged write the
/// initial absence is a candidate too.
pub fn lost_acked_writes(
    history: &[Operation],
    finals: &BTreeMap<String, Option<String>>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, final_value) in finals {
        let writes: Vec<&Operation> = history
            .iter()
            .filter(|operation| operation.op.key() == key && written(operation).is_some())
            .collect();
        let acked_invocations: Vec<u64> = writes
            .iter()
            .filter(|operation| {
                operation.completed_ns.is_some() && operation.outcome != Outcome::Indeterminate
            })
            .map(|operation| operation.invoked_ns)
            .collect();
        let latest_acked_invocation = acked_invocations.iter().copied().max();
        let mut candidates: BTreeSet<Option<&str>> = BTreeSet::new();
        if latest_acked_invocation.is_none() {
            candidates.insert(None);
        }
        for operation in &writes {
            let superseded = match (
                operation.completed_ns,
                operation.outcome == Outcome::Indeterminate,
            ) {
                (Some(completed), false) => {
                    latest_acked_invocation.is_some_and(|later| later > completed)
                }
                _ => false,
            };
            if !superseded {
                if let Some(value) = written(operation) {
                    candidates.insert(value);
                }
            }
        }
        if !candidates.contains(&final_value.as_deref()) {
            lost.push(key.clone());
        }
    }
    lost
}

/// Milliseconds from each heal to the completion of the first acknowledged
/// write invoked after it (and before the next fault started); the number
/// of heals with no such write.
pub fn recovery_ms(
    history: &[Operation],
    heals_ns: &[u64],
    starts_ns: &[u64],
) -> (Vec<f64>, usize) {
    let mut writes: Vec<(u64, u64)> = history
        .iter()
        .filter(|operation| {
            written(operation).is_some() && operation.outcome != Outcome::Indeterminate
        })
        .filter_map(|operation| Some((operation.invoked_ns, operation.completed_ns?)))
        .collect();
    writes.sort_unstable();
    let mut recoveries = Vec::new();
    let mut unrecovered = 0;
    for (index, &heal) in heals_ns.iter().enumerate() {
        // Faults start in order: the one after this heal is index + 1.
        let next_start = starts_ns.get(index + 1).copied().unwrap_or(u64::MAX);
        let first = writes
            .iter()
            .filter(|(invoked, completed)| *invoked >= heal && *completed < next_start)
            .map(|(_, completed)| *completed)
            .min();
        match first {
            Some(completed) => recoveries.push((completed - heal) as f64 / 1e6),
            None => unrecovered += 1,
        }
    }
    (recoveries, unrecovered)
}

/// For each fault, the longest time in milliseconds between its start and
/// the start of the next fault (or the last write) during which no
/// acknowledged write completed: how long clients could not write.
pub fn unavailable_ms(history: &[Operation], starts_ns: &[u64]) -> Vec<f64> {
    let mut completions: Vec<u64> = history
        .iter()
        .filter(|operation| {
            written(operation).is_some() && operation.outcome != Outcome::Indeterminate
        })
        .filter_map(|operation| operation.completed_ns)
        .collect();
    completions.sort_unstable();
    let Some(&last) = completions.last() else {
        return Vec::new();
    };
    starts_ns
        .iter()
        .enumerate()
        .filter(|(_, start)| **start < last)
        .map(|(index, &start)| {
            let end = starts_ns.get(index + 1).copied().unwrap_or(last).min(last);
            let mut previous = start;
            let mut longest = 0;
            for &completed in completions.iter().filter(|c| **c > start && **c <= end) {
                longest = longest.max(completed - previous);
                previous = completed;
            }
            longest.max(end - previous) as f64 / 1e6
        })
        .collect()
}

/// Milliseconds from invocation to answer of every acknowledged write: the
/// same-run baseline for the recovery figures.
pub fn write_latency_ms(history: &[Operation]) -> Vec<f64> {
    history
        .iter()
        .filter(|operation| {
            written(operation).is_some() && operation.outcome != Outcome::Indeterminate
        })
        .filter_map(|operation| Some((operation.completed_ns? - operation.invoked_ns) as f64 / 1e6))
        .collect()
}

/// Values sorted once, for any number of quantiles of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut values: Vec<f64>) -> Samples {
        values.sort_by(f64::total_cmp);
        Samples(values)
    }

    /// The `quantile` (0..=1) by nearest rank; `None` when empty.
    pub fn quantile(&self, quantile: f64) -> Option<f64> {
        let sorted = &self.0;
        if sorted.is_empty() {
            return None;
        }
        let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything the run found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub nodes: u64,
    pub duration_s: f64,
    pub counters: Counters,
    pub history_len: usize,
    pub lost_acked_writes: Vec<String>,
    /// Keys whose final read got no answer.
    pub final_reads_missing: Vec<String>,
    pub verdict: Verdict,
    pub check_s: f64,
    pub nemesis: NemesisLog,
    pub leader_changes: u64,
    pub recovery_ms: Samples,
    pub unrecovered: usize,
    /// Per fault: the longest stretch without an acknowledged write.
    pub unavailable_ms: Samples,
    /// Latency of acknowledged writes over the whole run.
    pub write_latency_ms: Samples,
    /// The nemesis's catch-up times (`NemesisLog::catch_up_ms`).
    pub catch_up_ms: Samples,
    /// What the fault proxy did with the nodes' datagrams.
    pub proxy: crate::proxy::ProxyStats,
    /// Final `STATUS` of every node (absent: it did not answer).
    pub statuses: BTreeMap<u64, Option<Status>>,
    pub converged: bool,
    pub run_dir: String,
}

/// Pass, fail, or the checker gave up (and nothing else failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome3 {
    Pass,
    Fail,
    Unknown,
}

impl Report {
    /// Every node answered and all report the same applied index, state
    /// hash and log hash.
    pub fn nodes_agree(&self) -> bool {
        let answered: Vec<&Status> = self.statuses.values().flatten().collect();
        answered.len() == self.statuses.len()
            && answered.windows(2).all(|pair| {
                pair[0].applied == pair[1].applied
                    && pair[0].state == pair[1].state
                    && pair[0].log == pair[1].log
            })
    }

    pub fn linearizable(&self) -> Json {
        match self.verdict {
            Verdict::Linearizable => json!(true),
            Verdict::NotLinearizable { .. } => json!(false),
            Verdict::Unknown { .. } => json!("unknown"),
        }
    }

    pub fn outcome(&self) -> Outcome3 {
        let sound = self.lost_acked_writes.is_empty()
            && self.final_reads_missing.is_empty()
            && self.nodes_agree()
            && self.nemesis.unexpected_exit_count == 0;
        match (&self.verdict, sound) {
            (Verdict::Linearizable, true) => Outcome3::Pass,
            (Verdict::Unknown { .. }, true) => Outcome3::Unknown,
            _ => Outcome3::Fail,
        }
    }

    fn smallest_failing(&self) -> Option<String> {
        match &self.verdict {
            Verdict::NotLinearizable {
                key,
                smallest_failing,
                explanation,
            } => Some(format!(
                "key {key}: {explanation}\n{}",
                crate::check::render(smallest_failing)
            )),
            Verdict::Unknown { reason } => Some(format!("unknown: {reason}")),
            Verdict::Linearizable => None,
        }
    }

    pub fn to_json(&self) -> Json {
        let nodes: BTreeMap<String, Json> = self
            .statuses
            .iter()
            .map(|(id, status)| {
                let value = match status {
                    Some(s) => json!({
                        "applied": s.applied, "commit": s.commit, "term": s.term,
                        "leader": s.leader, "state": s.state, "log": s.log,
                        "voters": s.voters,
                    }),
                    None => Json::Null,
                };
                (id.to_string(), value)
            })
            .collect();
        let outcome = match self.outcome() {
            Outcome3::Pass => "pass",
            Outcome3::Fail => "fail",
            Outcome3::Unknown => "unknown",
        };
        json!({
            "verdict": outcome,
            "seed": self.seed,
            "nodes": self.nodes,
            "duration_s": self.duration_s,
            "attempted": self.counters.attempted,
            "acknowledged": self.counters.acknowledged,
            "failed": self.counters.failed,
            "indeterminate": self.counters.indeterminate,
            "redirects": self.counters.redirects,
            "protocol_errors": self.counters.protocol_errors,
            "history_operations": self.history_len,
            "lost_acked_writes": self.lost_acked_writes.len(),
            "lost_keys": self.lost_acked_writes,
            "final_reads_missing": self.final_reads_missing,
            "linearizable": self.linearizable(),
            "smallest_failing": self.smallest_failing(),
            "check_s": self.check_s,
            "faults": self.nemesis.faults,
            "fault_variants": self.nemesis.variants,
            "fail_stops": self.nemesis.fail_stops,
            "nemesis_errors": self.nemesis.errors,
            "unexpected_exits": self.nemesis.unexpected_exits,
            "unexpected_exit_count": self.nemesis.unexpected_exit_count,
            "leader_changes": self.leader_changes,
            "recovery_ms": {
                "p50": self.recovery_ms.quantile(0.5),
                "max": self.recovery_ms.quantile(1.0),
                "count": self.recovery_ms.len(),
                "unrecovered": self.unrecovered,
            },
            "write_latency_ms": {
                "p50": self.write_latency_ms.quantile(0.5),
                "p99": self.write_latency_ms.quantile(0.99),
                "max": self.write_latency_ms.quantile(1.0),
            },
            "catch_up_ms": {
                "p50": self.catch_up_ms.quantile(0.5),
                "max": self.catch_up_ms.quantile(1.0),
                "count": self.catch_up_ms.len(),
                "not_caught_up": self.nemesis.not_caught_up,
            },
            "unavailable_ms": {
                "p50": self.unavailable_ms.quantile(0.5),
                "max": self.unavailable_ms.quantile(1.0),
                "count": self.unavailable_ms.len(),
            },
            "proxy": {
                "forwarded": self.proxy.forwarded,
                "dropped_blocked": self.proxy.dropped_blocked,
                "dropped_loss": self.proxy.dropped_loss,
                "duplicated": self.proxy.duplicated,
                "delayed": self.proxy.delayed,
                "dropped_overflow": self.proxy.dropped_overflow,
                "dropped_unknown": self.proxy.dropped_unknown,
                "io_errors": self.proxy.io_errors,
            },
            "converged": self.converged,
            "nodes_agree": self.nodes_agree(),
            "node_status": nodes,
            "run_dir": self.run_dir,
            "events": self.nemesis.events,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        let faults: Vec<String> = self
            .nemesis
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let c = &self.counters;
        let _ = writeln!(
            out,
            "chaos: {} nodes, {:.0} s, seed {}",
            self.nodes, self.duration_s, self.seed
        );
        let _ = writeln!(
            out,
            "  faults            {}",
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  operations        {} attempted, {} acknowledged, {} failed, {} indeterminate ({} redirects)",
            c.attempted, c.acknowledged, c.failed, c.indeterminate, c.redirects
        );
        let _ = writeln!(out, "  leader changes    {}", self.leader_changes);
        let p = &self.proxy;
        let _ = writeln!(
            out,
            "  proxy datagrams   {} forwarded, {} blocked, {} lost, {} duplicated, {} delayed",
            p.forwarded, p.dropped_blocked, p.dropped_loss, p.duplicated, p.delayed
        );
        let _ = writeln!(
            out,
            "  recovery          p50 {}, max {} over {} heals ({} without a write before the next fault)",
            ms(self.recovery_ms.quantile(0.5)),
            ms(self.recovery_ms.quantile(1.0)),
            self.recovery_ms.len(),
            self.unrecovered
        );
        let _ = writeln!(
            out,
            "  write latency     p50 {:.1} ms, p99 {:.1} ms (acknowledged writes, whole run: the baseline)",
            self.write_latency_ms.quantile(0.5).unwrap_or(0.0),
            self.write_latency_ms.quantile(0.99).unwrap_or(0.0),
        );
        let _ = writeln!(
            out,
            "  catch-up          p50 {}, max {} (all follow one leader, applied its commit at the heal; {} not within bound)",
            ms(self.catch_up_ms.quantile(0.5)),
            ms(self.catch_up_ms.quantile(1.0)),
            self.nemesis.not_caught_up
        );
        let _ = writeln!(
            out,
            "  no-write window   p50 {}, max {} (longest stretch without an acknowledged write, per fault)",
            ms(self.unavailable_ms.quantile(0.5)),
            ms(self.unavailable_ms.quantile(1.0)),
        );
        let _ = writeln!(out, "  lost acked writes {}", self.lost_acked_writes.len());
        let _ = writeln!(
            out,
            "  linearizable      {} (checked in {:.1} s)",
            self.linearizable(),
            self.check_s
        );
        let _ = writeln!(out, "  nodes agree       {}", self.nodes_agree());
        for (id, status) in &self.statuses {
            let line = match status {
                Some(s) => format!("applied {} state {} log {}", s.applied, s.state, s.log),
                None => "no answer".to_owned(),
            };
            let _ = writeln!(out, "    node {id}          {line}");
        }
        for text in self
            .nemesis
            .unexpected_exits
            .iter()
            .chain(&self.nemesis.errors)
        {
            let _ = writeln!(out, "  ! {text}");
        }
        if let Some(text) = self.smallest_failing() {
            let _ = writeln!(out, "  smallest failing sub-history:\n{text}");
        }
        let verdict = match self.outcome() {
            Outcome3::Pass => "PASS",
            Outcome3::Fail => "FAIL",
            Outcome3::Unknown => "UNKNOWN (the checker gave up)",
        };
        let _ = writeln!(
            out,
            "verdict: {verdict}   (run directory: {})",
            self.run_dir
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: Op, outcome: Outcome, invoked_ns: u64, completed_ns: Option<u64>) -> Operation {
        Operation {
            client: 1,
            op,
            outcome,
            invoked_ns,
            completed_ns,
        }
    }

    fn put(value: &str, invoked: u64, completed: u64) -> Operation {
        let op_ = Op::Put {
            key: "k".into(),
            value: value.into(),
        };
        op(op_, Outcome::Put, invoked, Some(completed))
    }

    fn finals(value: Option<&str>) -> BTreeMap<String, Option<String>> {
        BTreeMap::from([("k".to_owned(), value.map(str::to_owned))])
    }

    #[test]
    fn last_acknowledged_write_must_survive() {
        let history = vec![put("a", 0, 10), put("b", 20, 30)];
        assert!(lost_acked_writes(&history, &finals(Some("b"))).is_empty());
        assert_eq!(lost_acked_writes(&history, &finals(Some("a"))), vec!["k"]);
        assert_eq!(lost_acked_writes(&history, &finals(None)), vec!["k"]);
        assert_eq!(lost_acked_writes(&history, &finals(Some("z"))), vec!["k"]);
    }

    #[test]
    fn concurrent_and_indeterminate_writes_may_win() {
        // a and b overlap: either may be last.
        let mut history = vec![put("a", 0, 30), put("b", 10, 20)];
        assert!(lost_acked_writes(&history, &finals(Some("a"))).is_empty());
        assert!(lost_acked_writes(&history, &finals(Some("b"))).is_empty());
        // An indeterminate write invoked before the last acked one may still
        // take effect later; a delete likewise.
        history.push(op(
            Op::Put {
                key: "k".into(),
                value: "c".into(),
            },
            Outcome::Indeterminate,
            5,
            None,
        ));
        history.push(op(
            Op::Delete { key: "k".into() },
            Outcome::Indeterminate,
            6,
            None,
        ));
        assert!(lost_acked_writes(&history, &finals(Some("c"))).is_empty());
        assert!(lost_acked_writes(&history, &finals(None)).is_empty());
        // A failed CAS writes nothing.
        history.push(op(
            Op::Cas {
                key: "k".into(),
                expected: "x".into(),
                new: "d".into(),
            },
            Outcome::Cas(false),
            40,
            Some(50),
        ));
        assert_eq!(lost_acked_writes(&history, &finals(Some("d"))), vec!["k"]);
    }

    #[test]
    fn untouched_key_stays_absent() {
        assert!(lost_acked_writes(&[], &finals(None)).is_empty());
        assert_eq!(lost_acked_writes(&[], &finals(Some("a"))), vec!["k"]);
    }

    #[test]
    fn recovery_after_each_heal() {
        let history = vec![
            put("a", 100, 150),
            put("b", 90, 400),
            put("c", 1_000, 3_000_000),
        ];
        let (recoveries, unrecovered) = recovery_ms(&history, &[100, 500, 900], &[0, 400, 800]);
        // Heal at 100: "a" (invoked 100) completes at 150; heal at 500: the
        // next fault starts at 800, no write in between; heal at 900: "c".
        assert_eq!(unrecovered, 1);
        assert_eq!(recoveries.len(), 2);
        assert!((recoveries[0] - 0.000_05).abs() < 1e-9);
        assert!((recoveries[1] - 2.999_1).abs() < 1e-9);
    }

    #[test]
    fn longest_stretch_without_writes_per_fault() {
        let history = vec![
            put("a", 0, 100),
            put("b", 0, 500),
            put("c", 0, 600),
            put("d", 0, 2_000),
        ];
        // Fault 1 (start 50 .. 1000): 50→100, 100→500 (400), 500→600, 600→1000 (400).
        // Fault 2 (start 1000 .. last write 2000): 1000 ns.
        let windows = unavailable_ms(&history, &[50, 1_000, 5_000]);
        assert_eq!(
            windows.len(),
            2,
            "a fault after the last write is not measured"
        );
        assert!((windows[0] - 0.000_4).abs() < 1e-12, "{windows:?}");
        assert!((windows[1] - 0.001).abs() < 1e-12, "{windows:?}");
        assert!(unavailable_ms(&[], &[1]).is_empty());
    }

    #[test]
    fn write_latencies_of_acknowledged_writes_only() {
        let history = vec![
            put("a", 1_000_000, 3_000_000),
            op(
                Op::Get { key: "k".into() },
                Outcome::Get(None),
                0,
                Some(9_000_000),
            ),
            op(
                Op::Put {
                    key: "k".into(),
                    value: "b".into(),
                },
                Outcome::Indeterminate,
                0,
                None,
            ),
        ];
        assert_eq!(write_latency_ms(&history), vec![2.0]);
    }

    #[test]
    fn quantiles() {
        assert_eq!(Samples::new(Vec::new()).quantile(0.5), None);
        let three = Samples::new(vec![3.0, 1.0, 2.0]);
        assert_eq!(three.quantile(0.5), Some(2.0));
        assert_eq!(three.quantile(1.0), Some(3.0));
        assert_eq!(three.quantile(0.0), Some(1.0));
        assert_eq!(Samples::new(vec![5.0]).quantile(0.0), Some(5.0));
    }
}
