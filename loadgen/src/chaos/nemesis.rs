//! The nemesis: one fault at a time, each held for `interval` and followed
//! by a healed pause of `interval`, families taken round-robin from the
//! command line, the details (victim, shape, amounts) drawn from the seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::client::Reply;
use super::cluster::{leader_of, Cluster, Start};
use super::disk;
use super::options::Family;
use super::workload::Clock;
use crate::proxy::LinkFaults;

/// Restarts of one node after it exited on its own, at most.
const UNEXPECTED_RESTARTS_MAX: u32 = 10;
/// Pause before restarting a node that exited on its own.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Unexpected exits described in the log, at most (all are counted).
const UNEXPECTED_EXITS_LISTED_MAX: usize = 20;
/// Bound of one membership command (it retries inside).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of waiting for a node to catch up (learner, repaired node).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of waiting for the fail-stop of a node started with a disk fault.
const FAIL_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The exit status of the KV example when its node fails.
const FAIL_STOP_EXIT_CODE: i32 = 3;

/// What the nemesis did and saw.
#[derive(Clone, Debug, Default)]
pub struct NemesisLog {
    /// Faults injected, by family.
    pub faults: BTreeMap<String, u64>,
    /// Faults injected, by variant (`partition_one_way`, `disk_bit_flip`, ...).
    pub variants: BTreeMap<String, u64>,
    /// When each fault was healed (history clock, ns).
    pub heals_ns: Vec<u64>,
    /// When each fault started (history clock, ns).
    pub starts_ns: Vec<u64>,
    /// Faults that could not be injected or healed as planned.
    pub errors: Vec<String>,
    /// Node processes that ended although no fault asked them to (the
    /// first few described).
    pub unexpected_exits: Vec<String>,
    pub unexpected_exit_count: u64,
    /// Milliseconds from each heal until all nodes follow one leader and
    /// applied what it had committed at the heal.
    pub catch_up_ms: Vec<f64>,
    /// Heals after which that did not happen within the bound.
    pub not_caught_up: u64,
    /// Nodes that stopped with status 3 on an injected fsync error.
    pub fail_stops: u64,
    /// Human-readable timeline.
    pub events: Vec<String>,
}

/// Runs faults against `cluster`.
#[derive(Debug)]
pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    rng: SmallRng,
    clock: Clock,
    interval: Duration,
    /// Voters removed by a membership fault and not yet re-added.
    removed: Vec<u64>,
    disk_faults: u64,
    restarts: BTreeMap<u64, u32>,
    /// Nodes that exited on their own, and when to restart them.
    crashed: BTreeMap<u64, Instant>,
    pub log: NemesisLog,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        cluster: &'a mut Cluster,
        seed: u64,
        clock: Clock,
        interval: Duration,
    ) -> Nemesis<'a> {
        Nemesis {
            cluster,
            rng: SmallRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321),
            clock,
            interval,
            removed: Vec::new(),
            disk_faults: 0,
            restarts: BTreeMap::new(),
            crashed: BTreeMap::new(),
            log: NemesisLog::default(),
        }
    }

    fn event(&mut self, text: String) {
        let at = self.clock.now_ns() as f64 / 1e9;
        self.log.events.push(format!("{at:8.3}s {text}"));
    }

    /// Injects faults from `families` until `deadline`, then heals all.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a fault may be left in place.
    pub async fn run(&mut self, families: &[Family], deadline: Instant) {
        let mut round = 0usize;
        loop {
            self.idle(
                self.interval
                    .min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
            // A fault needs its hold time and a little to heal before the end.
            if families.is_empty() || Instant::now() + self.interval >= deadline {
                break;
            }
            let family = families[round % families.len()];
            round += 1;
            self.log.starts_ns.push(self.clock.now_ns());
            if let Err(error) = self.inject(family).await {
                let text = format!("{family}: {error:#}");
                self.event(format!("error: {text}"));
                self.log.errors.push(text);
            }
            if let Err(error) = self.heal().await {
                let text = format!("heal after {family}: {error:#}");
                self.event(format!("error: {text}"));
                self.log.errors.push(text);
            }
            self.log.heals_ns.push(self.clock.now_ns());
            *self.log.faults.entry(family.name().to_owned()).or_default() += 1;
            self.measure_catch_up(deadline).await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.idle(remaining).await;
    }

    /// After a heal: how long until every node answers, all name the same
    /// leader in the same term, and each applied what that leader had
    /// committed when the heal was done (bounded; counted as not caught up
    /// past the bound or `deadline`).
    async fn measure_catch_up(&mut self, deadline: Instant) {
        let healed = Instant::now();
        let end = deadline.min(healed + CATCH_UP_TIMEOUT);
        let mut target = None;
        while Instant::now() < end {
            self.supervise();
            let statuses = self.cluster.statuses().await;
            if let (None, Some(leader)) = (target, leader_of(&statuses)) {
                target = Some(statuses[&leader].commit);
            }
            let first = statuses.values().next().map(|s| (s.leader, s.term));
            let agreed = statuses.len() == self.cluster.nodes.len()
                && first.is_some_and(|(leader, _)| leader != 0)
                && statuses.values().all(|s| Some((s.leader, s.term)) == first);
            if let (true, Some(target)) = (agreed, target) {
                if statuses.values().all(|s| s.applied >= target) {
                    self.log
                        .catch_up_ms
                        .push(healed.elapsed().as_secs_f64() * 1e3);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log.not_caught_up += 1;
        self.event(format!(
            "not caught up within {:?} of the heal",
            end - healed
        ));
    }

    /// Waits `duration`, restarting nodes that die meanwhile.
    async fn idle(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        loop {
            self.supervise();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
    }

    /// Notes nodes that exited on their own, and restarts them (bounded
    /// in count, and a second apart so a node that cannot start does not
    /// spin).
    fn supervise(&mut self) {
        let now = Instant::now();
        for (id, status) in self.cluster.reap() {
            let tail = log_tail(&self.cluster.nodes[&id].log_path);
            let text = format!("node {id} exited on its own with {status}: {tail}");
            self.event(text.clone());
            self.log.unexpected_exit_count += 1;
            if self.log.unexpected_exits.len() < UNEXPECTED_EXITS_LISTED_MAX {
                self.log.unexpected_exits.push(text);
            }
            self.crashed.insert(id, now + RESTART_BACKOFF);
        }
        let due: Vec<u64> = self
            .crashed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.crashed.remove(&id);
            let restarts = self.restarts.entry(id).or_default();
            if *restarts >= UNEXPECTED_RESTARTS_MAX || self.cluster.nodes[&id].is_running() {
                continue;
            }
            *restarts += 1;
            if let Err(error) = self.cluster.spawn(id, Start::Existing, None) {
                self.log
                    .errors
                    .push(format!("restarting node {id}: {error:#}"));
            }
        }
    }

    fn variant(&mut self, name: &str) {
        *self.log.variants.entry(name.to_owned()).or_default() += 1;
    }

    /// The leader, or (half the time, or without one) a random running node.
    async fn victim(&mut self, prefer_leader: bool) -> Result<(u64, bool)> {
        let leader = self.cluster.leader().await;
        let running = self.cluster.running();
        if let (true, Some(leader)) = (prefer_leader, leader) {
            return Ok((leader, true));
        }
        let id = *running
            .choose(&mut self.rng)
            .context("no node is running")?;
        Ok((id, Some(id) == leader))
    }

    async fn follower(&mut self) -> Result<u64> {
        let leader = self.cluster.wait_for_leader(COMMAND_TIMEOUT).await?;
        let followers: Vec<u64> = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        followers
            .choose(&mut self.rng)
            .copied()
            .context("no running follower")
    }

    async fn hold(&mut self) {
        let hold = self.interval;
        self.idle(hold).await;
    }

    async fn inject(&mut self, family: Family) -> Result<()> {
        match family {
            Family::Kill => self.kill().await,
            Family::Pause => self.pause().await,
            Family::Partition => self.partition().await,
            Family::Delay => self.delay().await,
            Family::Member => self.member().await,
            Family::Disk => self.disk().await,
        }
    }

    async fn kill(&mut self) -> Result<()> {
        let prefer_leader = self.rng.random_bool(0.5);
        let (id, is_leader) = self.victim(prefer_leader).await?;
        self.cluster.kill(id);
        self.variant(if is_leader {
            "kill_leader"
        } else {
            "kill_follower"
        });
        self.event(format!("SIGKILL node {id} (leader: {is_leader})"));
        self.hold().await;
        self.cluster.spawn(id, Start::Existing, None)?;
        self.event(format!("restarted node {id}"));
        Ok(())
    }

    async fn pause(&mut self) -> Result<()> {
        let prefer_leader = self.rng.random_bool(0.5);
        let (id, is_leader) = self.victim(prefer_leader).await?;
        self.cluster.pause(id)?;
        self.variant(if is_leader {
            "pause_leader"
        } else {
            "pause_follower"
        });
        self.event(format!("SIGSTOP node {id} (leader: {is_leader})"));
        // The election timeout is 10..20 ticks of 10 ms: the hold is longer.
        self.hold().await;
        self.cluster.resume(id)?;
        self.event(format!("SIGCONT node {id}"));
        Ok(())
    }

    fn split(&mut self) -> (Vec<u64>, Vec<u64>) {
        let mut ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        ids.shuffle(&mut self.rng);
        let minority = (ids.len() - 1) / 2;
        let majority = ids.split_off(minority);
        (ids, majority)
    }

    async fn partition(&mut self) -> Result<()> {
        let leader = self.cluster.leader().await;
        let ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        match (self.rng.random_range(0..4u32), leader) {
            (0, Some(leader)) => {
                let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
                self.cluster.proxy.partition(&[vec![leader], rest]);
                self.variant("partition_isolate_leader");
                self.event(format!("partition: leader {leader} isolated"));
                self.hold().await;
            }
            (1, Some(leader)) => {
                let outbound = self.rng.random_bool(0.5);
                let blocked = LinkFaults {
                    blocked: true,
                    ..LinkFaults::default()
                };
                for other in ids.iter().copied().filter(|id| *id != leader) {
                    if outbound {
                        self.cluster.proxy.set_link(leader, other, blocked);
                    } else {
                        self.cluster.proxy.set_link(other, leader, blocked);
                    }
                }
                self.variant("partition_one_way");
                let direction = if outbound { "from" } else { "to" };
                self.event(format!(
                    "partition: one way, nothing {direction} leader {leader}"
                ));
                self.hold().await;
            }
            (2, _) => {
                let cycles = self.rng.random_range(3..=6u32);
                let phase = self.interval / (2 * cycles);
                self.variant("partition_flapping");
                self.event(format!("partition: flapping, {cycles} cycles of {phase:?}"));
                for _ in 0..cycles {
                    let (minority, majority) = self.split();
                    self.cluster.proxy.partition(&[minority, majority]);
                    self.idle(phase).await;
                    self.cluster.proxy.heal();
                    self.idle(phase).await;
                }
            }
            _ => {
                let (minority, majority) = self.split();
                self.event(format!("partition: {minority:?} | {majority:?}"));
                self.cluster.proxy.partition(&[minority, majority]);
                self.variant("partition_majority_minority");
                self.hold().await;
            }
        }
        self.cluster.proxy.heal();
        self.event("partition healed".into());
        Ok(())
    }

    async fn delay(&mut self) -> Result<()> {
        let faults = LinkFaults {
            blocked: false,
            loss: self.rng.random_range(0.01..0.10),
            duplicate: self.rng.random_range(0.01..0.05),
            delay: Duration::from_millis(self.rng.random_range(5..40)),
            jitter: Duration::from_millis(self.rng.random_range(5..30)),
            reorder: self.rng.random_range(0.01..0.10),
        };
        self.cluster.proxy.set_all(faults);
        self.variant("delay_all_links");
        self.event(format!("delay on every link: {faults:?}"));
        self.hold().await;
        self.cluster.proxy.heal();
        self.event("delay healed".into());
        Ok(())
    }

    /// The voters the leader reports.
    async fn voters(&self) -> Result<Vec<u64>> {
        let (statuses, leader) = self.cluster.statuses_with_leader(COMMAND_TIMEOUT).await?;
        Ok(statuses[&leader].voters.clone())
    }

    async fn set_voters(&mut self, voters: &[u64]) -> Result<()> {
        let list: Vec<String> = voters.iter().map(u64::to_string).collect();
        let line = format!("VOTERS {}", list.join(","));
        match self.cluster.command(&line, COMMAND_TIMEOUT).await? {
            Reply::Ok(_) => Ok(()),
            other => bail!("`{line}` answered {other:?}"),
        }
    }

    async fn member(&mut self) -> Result<()> {
        let voters = self.voters().await?;
        let count = if voters.len() >= 5 && self.rng.random_bool(0.5) {
            2
        } else {
            1
        };
        let mut victims = voters.clone();
        victims.shuffle(&mut self.rng);
        victims.truncate(count);
        let remaining: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|id| !victims.contains(id))
            .collect();
        self.removed.extend(&victims);
        self.set_voters(&remaining).await?;
        self.variant(if count == 2 {
            "member_remove_two"
        } else {
            "member_remove_one"
        });
        self.event(format!("voters {remaining:?} (removed {victims:?})"));
        self.hold().await;
        self.restore_membership().await
    }

    /// Adds back every removed voter: learner first, caught up, then voter.
    async fn restore_membership(&mut self) -> Result<()> {
        if self.removed.is_empty() {
            return Ok(());
        }
        for id in self.removed.clone() {
            match self
                .cluster
                .command(&format!("LEARNER {id}"), COMMAND_TIMEOUT)
                .await?
            {
                Reply::Ok(_) => {}
                other => bail!("`LEARNER {id}` answered {other:?}"),
            }
            self.event(format!("node {id} added as learner"));
            self.wait_caught_up(id).await?;
        }
        let all: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        self.set_voters(&all).await?;
        self.removed.clear();
        self.event(format!("voters {all:?} again"));
        Ok(())
    }

    /// Waits (bounded) until node `id` applied what the leader had
    /// committed when the wait began.
    async fn wait_caught_up(&mut self, id: u64) -> Result<()> {
        // Right after a configuration change leadership may be unknown for
        // a moment: wait for a leader rather than fail the fault.
        let (statuses, leader) = self.cluster.statuses_with_leader(COMMAND_TIMEOUT).await?;
        let target = statuses[&leader].commit;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let applied = self.cluster.statuses().await.get(&id).map(|s| s.applied);
            if applied.is_some_and(|applied| applied >= target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {id} did not apply index {target} within {CATCH_UP_TIMEOUT:?} (at {applied:?})");
            }
            self.supervise();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn disk(&mut self) -> Result<()> {
        self.disk_faults += 1;
        if self.disk_faults % 2 == 1 {
            self.fail_stop().await
        } else {
            self.bit_flip().await
        }
    }

    /// Restarts a follower with fsync failing after a few calls: it must
    /// stop (status 3), and start again normally afterwards.
    async fn fail_stop(&mut self) -> Result<()> {
        let id = self.follower().await?;
        let fsyncs = self.rng.random_range(20..200u32);
        self.cluster.kill(id);
        let spec = format!("fsync-eio-after={fsyncs}");
        self.cluster.spawn(id, Start::Existing, Some(&spec))?;
        self.variant("disk_fsync_fail_stop");
        self.event(format!("node {id} restarted with --disk-faults {spec}"));
        let exit = self.cluster.wait_exit(id, FAIL_STOP_TIMEOUT).await;
        let outcome = match exit {
            Some(status) if status.code() == Some(FAIL_STOP_EXIT_CODE) => {
                self.log.fail_stops += 1;
                self.event(format!("node {id} stopped with {status}"));
                Ok(())
            }
            Some(status) => {
                let tail = log_tail(&self.cluster.nodes[&id].log_path);
                Err(anyhow::anyhow!(
                    "node {id} with {spec} exited with {status}, expected code {FAIL_STOP_EXIT_CODE}: {tail}"
                ))
            }
            None => {
                self.cluster.kill(id);
                Err(anyhow::anyhow!(
                    "node {id} with {spec} did not stop within {FAIL_STOP_TIMEOUT:?}"
                ))
            }
        };
        self.hold().await;
        self.cluster.spawn(id, Start::Existing, None)?;
        self.event(format!("node {id} restarted normally"));
        outcome
    }

    /// SIGKILLs a follower, flips a bit in one of its committed WAL
    /// records, restarts it: it must detect the damage, fetch the entries
    /// again and catch up.
    async fn bit_flip(&mut self) -> Result<()> {
        let id = self.follower().await?;
        let statuses = self.cluster.statuses().await;
        let committed = statuses.get(&id).map_or(0, |status| status.commit);
        self.cluster.kill(id);
        let data_dir = self.cluster.nodes[&id].data_dir.clone();
        let flip = disk::flip_bit(&data_dir, committed, &mut self.rng);
        let restart = self.cluster.spawn(id, Start::Existing, None);
        let flip = flip?;
        restart?;
        self.variant("disk_bit_flip");
        self.event(format!(
            "node {id}: flipped bit {} at byte {} of {} (entries {}..={}), restarted",
            flip.bit,
            flip.offset,
            flip.path.display(),
            flip.first,
            flip.last
        ));
        self.hold().await;
        self.wait_caught_up(id).await
    }

    /// Heals whatever a fault left: the proxy, paused and stopped nodes,
    /// removed voters.
    ///
    /// # Errors
    /// A node could not be restarted or membership not restored.
    pub async fn heal(&mut self) -> Result<()> {
        self.cluster.proxy.heal();
        let ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        for id in ids {
            self.cluster.resume(id)?;
        }
        self.supervise();
        let stopped: Vec<u64> = self
            .cluster
            .nodes
            .values()
            .filter(|node| !node.is_running())
            .map(|node| node.id)
            .collect();
        for id in stopped {
            self.cluster.spawn(id, Start::Existing, None)?;
            self.event(format!("heal: restarted node {id}"));
        }
        if !self.removed.is_empty() {
            self.cluster.wait_for_leader(COMMAND_TIMEOUT).await?;
            self.restore_membership().await?;
        }
        Ok(())
    }
}

/// The last line of a node's log, for error messages.
pub fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(400);
    let tail = String::from_utf8_lossy(&text[start..]);
    tail.trim_end().lines().last().unwrap_or("").to_owned()
}
