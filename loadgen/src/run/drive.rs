//! The proposers: closed loop (N tasks, one proposal outstanding each) or
//! open loop (a fixed schedule, latency from each proposal's intended send
//! time so that a stall shows up as latency instead of fewer samples), and
//! the once-a-second progress line.
//!
//! Every loop stops by itself: no proposal starts after the measured
//! window ends, and proposals still unanswered [`DRAIN_TIMEOUT`] later are
//! abandoned and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use barge::node::NodeError;
use barge_net::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::deployment::Router;

/// How long after the window the run waits for answers before abandoning.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Latency histograms are sharded so proposers on different threads rarely
/// meet on one lock; each shard is about 140 KiB (1 µs to 60 s, 3 digits).
const SHARDS: usize = 16;
/// Highest latency recorded exactly (60 s, in µs); larger ones saturate.
const LATENCY_MICROS_MAX: u64 = 60_000_000;
/// Back-off after an error that gave no better target.
const RETRY_PAUSE: Duration = Duration::from_millis(2);

pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1,
    // high >= 2 * low, 3 significant figures).
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("valid histogram bounds")
}

/// Error counts by kind; every failed attempt counts once.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    pub not_leader: AtomicU64,
    pub overloaded: AtomicU64,
    pub dropped: AtomicU64,
    pub other: AtomicU64,
}

impl ErrorCounts {
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("not_leader", self.not_leader.load(Ordering::Relaxed)),
            ("overloaded", self.overloaded.load(Ordering::Relaxed)),
            ("proposal_dropped", self.dropped.load(Ordering::Relaxed)),
            ("other", self.other.load(Ordering::Relaxed)),
        ]
    }
}

/// What the proposers observed; shared by all of them.
#[derive(Debug)]
pub struct Recorder {
    /// Start of the measured window (end of the warm-up).
    pub window_start: Instant,
    /// End of the measured window; no proposal starts after it.
    pub window_end: Instant,
    shards: Vec<Mutex<Histogram<u64>>>,
    /// Proposals answered inside the window.
    committed_in_window: AtomicU64,
    /// Proposals answered since the start (warm-up included), for progress.
    committed_total: AtomicU64,
    pub errors: ErrorCounts,
    /// Set by the first error that no retry can cure.
    fatal: Mutex<Option<NodeError>>,
    stop: AtomicBool,
}

impl Recorder {
    pub fn new(window_start: Instant, window_end: Instant) -> Recorder {
        Recorder {
            window_start,
            window_end,
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            committed_in_window: AtomicU64::new(0),
            committed_total: AtomicU64::new(0),
            errors: ErrorCounts::default(),
            fatal: Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }

    /// Records one answered proposal sent (or meant to be sent) at `sent`.
    /// Latency counts for proposals sent inside the window; throughput for
    /// answers inside it.
    pub fn committed(&self, shard: usize, sent: Instant, answered: Instant) {
        self.committed_total.fetch_add(1, Ordering::Relaxed);
        if answered >= self.window_start && answered <= self.window_end {
            self.committed_in_window.fetch_add(1, Ordering::Relaxed);
        }
        if sent >= self.window_start && sent < self.window_end {
            let micros = u64::try_from(answered.duration_since(sent).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            if let Ok(mut histogram) = self.shards[shard % SHARDS].lock() {
                histogram.saturating_record(micros);
            }
        }
    }

    pub fn committed_in_window(&self) -> u64 {
        self.committed_in_window.load(Ordering::Relaxed)
    }

    pub fn committed_total(&self) -> u64 {
        self.committed_total.load(Ordering::Relaxed)
    }

    /// All shards merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut merged = histogram();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                // Same bounds on both sides: adding cannot fail.
                let _ = merged.add(&*shard);
            }
        }
        merged
    }

    pub fn fatal(&self) -> Option<NodeError> {
        self.fatal.lock().ok().and_then(|fatal| fatal.clone())
    }

    fn fail(&self, error: NodeError) {
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(error);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Proposes `payload` until it commits, following leader hints and backing
/// off on overload. Gives up (returns `false`) if the run has stopped or
/// `give_up_at` passed; an error no retry can cure stops the whole run.
async fn propose_until_committed(
    router: &Router,
    recorder: &Recorder,
    payload: &Bytes,
    give_up_at: Instant,
) -> bool {
    loop {
        match router.propose(payload.clone()).await {
            Ok(_) => return true,
            Err(NodeError::NotLeader { leader_hint }) => {
                recorder.errors.not_leader.fetch_add(1, Ordering::Relaxed);
                if !router.redirect(leader_hint) {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(NodeError::Overloaded) => {
                recorder.errors.overloaded.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(NodeError::ProposalDropped { leader_hint, .. }) => {
                recorder.errors.dropped.fetch_add(1, Ordering::Relaxed);
                router.redirect(leader_hint);
            }
            Err(error @ (NodeError::Stopped | NodeError::Storage(_) | NodeError::Invalid(_))) => {
                recorder.errors.other.fetch_add(1, Ordering::Relaxed);
                recorder.fail(error);
                return false;
            }
            Err(_) => {
                recorder.errors.other.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        if recorder.stopped() || Instant::now() >= give_up_at {
            return false;
        }
    }
}

/// Runs `clients` closed-loop proposers until the window ends.
pub async fn closed_loop(
    router: Arc<Router>,
    recorder: Arc<Recorder>,
    clients: usize,
    payload: Bytes,
) -> Result<u64> {
    let give_up_at = recorder.window_end + DRAIN_TIMEOUT;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (router, recorder, payload) =
            (Arc::clone(&router), Arc::clone(&recorder), payload.clone());
        tasks.spawn(async move {
            // The answer's timestamp is the next proposal's send time: one
            // clock read per proposal instead of two (they show in profiles).
            let mut sent = Instant::now();
            loop {
                if sent >= recorder.window_end || recorder.stopped() {
                    return;
                }
                if !propose_until_committed(&router, &recorder, &payload, give_up_at).await {
                    return;
                }
                let answered = Instant::now();
                recorder.committed(client, sent, answered);
                sent = answered;
            }
        });
    }
    drain(tasks, give_up_at).await
}

/// Sends `rate_per_s` proposals per second on a fixed schedule, at most
/// `inflight_max` unanswered; a proposal waiting for a slot is late, and
/// its lateness counts in its latency.
pub async fn open_loop(
    router: Arc<Router>,
    recorder: Arc<Recorder>,
    rate_per_s: u64,
    inflight_max: usize,
    payload: Bytes,
    started: Instant,
) -> Result<u64> {
    let give_up_at = recorder.window_end + DRAIN_TIMEOUT;
    let slots = Arc::new(Semaphore::new(inflight_max));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sequence: u64 = 0;
    loop {
        let intended = started + send_offset(sequence, rate_per_s);
        if intended >= recorder.window_end || recorder.stopped() {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        // A cluster slower than the schedule leaves the sender behind it;
        // it catches up until `give_up_at`, then the proposals never sent
        // are counted as abandoned rather than stretching the run.
        let acquired =
            tokio::time::timeout_at(give_up_at.into(), Arc::clone(&slots).acquire_owned()).await;
        let Ok(acquired) = acquired else {
            break;
        };
        let Ok(slot) = acquired else {
            bail!("the in-flight semaphore closed");
        };
        let (router, recorder, payload) =
            (Arc::clone(&router), Arc::clone(&recorder), payload.clone());
        tasks.spawn(async move {
            let _slot = slot;
            if propose_until_committed(&router, &recorder, &payload, give_up_at).await {
                recorder.committed(sequence as usize, intended, Instant::now());
            }
        });
        // Reap finished tasks as we go so the set stays at most
        // `inflight_max` long.
        while tasks.try_join_next().is_some() {}
        sequence += 1;
    }
    let scheduled = scheduled_before(recorder.window_end - started, rate_per_s);
    let unsent = if recorder.stopped() {
        0
    } else {
        scheduled.saturating_sub(sequence)
    };
    Ok(drain(tasks, give_up_at).await? + unsent)
}

/// When proposal `sequence` is due, counted from the start in whole
/// nanoseconds (integer arithmetic, so no rounding accumulates).
fn send_offset(sequence: u64, rate_per_s: u64) -> Duration {
    let nanos = u128::from(sequence) * 1_000_000_000 / u128::from(rate_per_s.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many proposals the schedule sends within `span`: sequence numbers
/// `k` with `k * 1e9 / rate < span` in nanoseconds.
fn scheduled_before(span: Duration, rate_per_s: u64) -> u64 {
    let count = (span.as_nanos() * u128::from(rate_per_s)).div_ceil(1_000_000_000);
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// Waits for the proposers until `give_up_at`, then abandons the rest;
/// returns how many were abandoned.
async fn drain(mut tasks: tokio::task::JoinSet<()>, give_up_at: Instant) -> Result<u64> {
    let waited = tokio::time::timeout_at(give_up_at.into(), async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                if error.is_panic() {
                    return Err(anyhow::anyhow!("a proposer panicked: {error}"));
                }
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(result) => result.map(|()| 0),
        Err(_) => {
            let abandoned = tasks.len() as u64;
            tasks.shutdown().await;
            Ok(abandoned)
        }
    }
}

/// Prints one progress line per second on stderr until the window ends.
pub async fn progress(router: Arc<Router>, recorder: Arc<Recorder>, started: Instant) {
    let mut previous = (Instant::now(), 0u64);
    let mut ticker = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    while Instant::now() < recorder.window_end && !recorder.stopped() {
        ticker.tick().await;
        let now = Instant::now();
        let total = recorder.committed_total();
        let rate = (total - previous.1) as f64 / now.duration_since(previous.0).as_secs_f64();
        previous = (now, total);
        let phase = if now < recorder.window_start {
            "warm-up".to_owned()
        } else {
            let latency = recorder.latency();
            if latency.is_empty() {
                "p99 so far        - ms".to_owned()
            } else {
                let p99 = latency.value_at_quantile(0.99) as f64 / 1000.0;
                format!("p99 so far {p99:>8.3} ms")
            }
        };
        let errors: u64 = recorder.errors.snapshot().iter().map(|(_, n)| n).sum();
        eprintln!(
            "{:>6.1} s {:>12.0} ops/s  {phase}  leader {}  errors {errors}",
            now.duration_since(started).as_secs_f64(),
            rate,
            router.target(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_counts() {
        let start = Instant::now();
        let window_start = start + Duration::from_secs(1);
        let window_end = start + Duration::from_secs(2);
        let recorder = Recorder::new(window_start, window_end);
        // Sent and answered during the warm-up: neither counted nor timed.
        recorder.committed(0, start, start + Duration::from_millis(10));
        // Sent in the warm-up, answered in the window: counted, not timed.
        recorder.committed(1, start, window_start + Duration::from_millis(5));
        // Inside the window: both.
        let sent = window_start + Duration::from_millis(100);
        recorder.committed(2, sent, sent + Duration::from_micros(1500));
        // Sent in the window, answered after it: timed, not counted.
        let late = window_end - Duration::from_millis(1);
        recorder.committed(3, late, late + Duration::from_millis(20));
        assert_eq!(recorder.committed_total(), 4);
        assert_eq!(recorder.committed_in_window(), 2);
        let latency = recorder.latency();
        assert_eq!(latency.len(), 2);
        assert!((1495..=1505).contains(&latency.min()), "{}", latency.min());
        assert!(latency.max() >= 19_990, "{}", latency.max());
    }

    #[test]
    fn the_schedule_counts_sends_before_the_end() {
        // 1000 per second for 2 s: k = 0..=1999.
        assert_eq!(scheduled_before(Duration::from_secs(2), 1000), 2000);
        assert_eq!(scheduled_before(Duration::ZERO, 1000), 0);
        // 3 per second for 1 s: k = 0, 1, 2 at 0, 333, 666 ms.
        assert_eq!(scheduled_before(Duration::from_secs(1), 3), 3);
        assert_eq!(send_offset(2, 3), Duration::from_nanos(666_666_666));
        assert!(send_offset(3, 3) >= Duration::from_secs(1));
        // The last one scheduled is before the end, the next is not.
        let span = Duration::from_millis(1500);
        let count = scheduled_before(span, 7);
        assert!(send_offset(count - 1, 7) < span);
        assert!(send_offset(count, 7) >= span);
    }

    #[test]
    fn fatal_errors_stop_the_run_once() {
        let now = Instant::now();
        let recorder = Recorder::new(now, now + Duration::from_secs(1));
        assert!(!recorder.stopped());
        recorder.fail(NodeError::Stopped);
        recorder.fail(NodeError::Storage("later".into()));
        assert!(recorder.stopped());
        assert_eq!(recorder.fatal(), Some(NodeError::Stopped));
    }
}
