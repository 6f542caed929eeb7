//! CPU time and memory of this process (or a child), from /proc. Read without
//! `unsafe` (no getrusage): the process's and each thread's `stat` file,
//! and `status` for the peak resident set. The result covers every node,
//! the proposers and the load generator, since they share the process.
//! Per-thread figures are grouped by thread name (`barge-raft`,
//! `barge-net`, `barge-wal`, `loadgen-client`, io_uring's `iou-wrk`, ...),
//! which says where the time goes without a profiler.

use std::collections::BTreeMap;
use std::path::Path;

/// Linux fixes the unit of /proc/<pid>/stat CPU times (USER_HZ) at 100 per
/// second for user space on every architecture it supports for this tool.
const USER_HZ: f64 = 100.0;

/// Threads read per snapshot; a bound so a runaway process cannot make
/// the report slow.
const THREADS_MAX: usize = 4096;

/// CPU time and memory at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Thread id → (thread group, CPU seconds so far).
    threads: BTreeMap<u64, (String, f64)>,
}

impl Resources {
    /// Reads /proc/self; zeros if it cannot (the report then shows 0).
    pub fn now() -> Resources {
        Resources::read(Path::new("/proc/self"))
    }

    /// Reads /proc/<pid> (a node process); zeros if it cannot.
    pub fn of_process(pid: u32) -> Resources {
        Resources::read(&Path::new("/proc").join(pid.to_string()))
    }

    fn read(process: &Path) -> Resources {
        let stat = std::fs::read_to_string(process.join("stat")).unwrap_or_default();
        let status = std::fs::read_to_string(process.join("status")).unwrap_or_default();
        Resources {
            cpu_seconds: cpu_seconds(&stat).unwrap_or(0.0),
            peak_rss_bytes: peak_rss_bytes(&status).unwrap_or(0),
            threads: threads(process),
        }
    }

    /// CPU per thread group between `self` (earlier) and `later`, as a
    /// percentage of one core over `seconds`, largest first. Threads that
    /// started in between count from zero; threads that ended are missed.
    pub fn cpu_by_thread(&self, later: &Resources, seconds: f64) -> Vec<(String, f64)> {
        let mut groups: BTreeMap<&str, f64> = BTreeMap::new();
        for (id, (group, cpu)) in &later.threads {
            let before = self.threads.get(id).map_or(0.0, |(_, cpu)| *cpu);
            *groups.entry(group.as_str()).or_default() += (cpu - before).max(0.0);
        }
        let mut percent: Vec<(String, f64)> = groups
            .into_iter()
            .map(|(group, cpu)| {
                (
                    group.to_owned(),
                    cpu / seconds.max(f64::MIN_POSITIVE) * 100.0,
                )
            })
            .collect();
        percent.sort_by(|a, b| b.1.total_cmp(&a.1));
        percent
    }
}

/// One OS process of the run (the load generator, or a node process).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessFigures {
    /// `loadgen` or `node-<id>`.
    pub name: String,
    /// CPU seconds used over the measured window.
    pub cpu_seconds: f64,
    /// Peak resident set size at the end of the run (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

impl ProcessFigures {
    /// Pairs readings by position: window start, window end, end of run.
    pub fn between(
        before: &[(String, Resources)],
        after: &[(String, Resources)],
        end: &[(String, Resources)],
    ) -> Vec<ProcessFigures> {
        before
            .iter()
            .zip(after)
            .zip(end)
            .map(|(((name, before), (_, after)), (_, end))| ProcessFigures {
                name: name.clone(),
                cpu_seconds: (after.cpu_seconds - before.cpu_seconds).max(0.0),
                peak_rss_bytes: end.peak_rss_bytes.max(after.peak_rss_bytes),
            })
            .collect()
    }
}

fn threads(process: &Path) -> BTreeMap<u64, (String, f64)> {
    let Ok(entries) = std::fs::read_dir(process.join("task")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .take(THREADS_MAX)
        .filter_map(|entry| {
            let id: u64 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((id, (thread_group(name.trim()), cpu_seconds(&stat)?)))
        })
        .collect()
}

/// A thread's name without a trailing numeric suffix (`iou-wrk-4711` →
/// `iou-wrk`), so threads of one role add up.
fn thread_group(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    match trimmed.strip_suffix('-') {
        Some(stem) if trimmed.len() < name.len() => stem.to_owned(),
        _ => name.to_owned(),
    }
}

/// utime + stime from a /proc/<pid>/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last
/// `)`: utime and stime are fields 14 and 15 of the line.
pub(crate) fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / USER_HZ)
}

/// VmHWM from /proc/<pid>/status, in bytes.
fn peak_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (barge (load) gen) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9";
        assert_eq!(cpu_seconds(stat), Some(4.0));
        assert_eq!(cpu_seconds("garbage"), None);
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(peak_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(peak_rss_bytes("Name: x\n"), None);
    }

    #[test]
    fn thread_names_group_by_role() {
        assert_eq!(thread_group("iou-wrk-4711"), "iou-wrk");
        assert_eq!(thread_group("barge-raft"), "barge-raft");
        assert_eq!(thread_group("barge-wal-prep"), "barge-wal-prep");
        assert_eq!(thread_group("worker7"), "worker7");
        assert_eq!(thread_group("1234"), "1234");
    }

    #[test]
    fn this_process_is_visible_and_busy_threads_are_counted() {
        let before = Resources::now();
        assert!(before.peak_rss_bytes > 0, "this process has a resident set");
        assert!(!before.threads.is_empty(), "this thread is listed");
        let by_pid = Resources::of_process(std::process::id());
        assert!(by_pid.peak_rss_bytes > 0 && !by_pid.threads.is_empty());
        let spinner = std::thread::Builder::new()
            .name("spinner-1".to_owned())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut sum = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    sum = sum.wrapping_add(1);
                }
                // Read the result so the loop is not optimised away, and
                // sample while this thread still exists.
                (sum, Resources::now())
            })
            .expect("spawn");
        let (_, during) = spinner.join().expect("spinner ran");
        let by_thread = before.cpu_by_thread(&during, 0.3);
        let spinner = by_thread
            .iter()
            .find(|(group, _)| group == "spinner")
            .map(|(_, percent)| *percent);
        // CPU time is counted in 10 ms ticks and the machine is shared:
        // only ask that the busy thread shows up with some CPU.
        assert!(
            spinner.is_some_and(|percent| percent > 0.0),
            "{by_thread:?}"
        );
    }
}
