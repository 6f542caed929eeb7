//! The KV example as separate OS processes behind the fault proxy: start,
//! SIGKILL, SIGSTOP / SIGCONT, restart, ask for `STATUS`. Every child is a
//! [`ChildProcess`]: killed and reaped when the [`Cluster`] is dropped, also
//! on error paths, and stopping by itself if this process dies.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge_net::{ClusterId, PeerId};
use tokio::task::JoinSet;

use super::client::{self, Reply, Status};
use crate::children::{self, ChildProcess};
use crate::proxy::{FaultProxy, ProxyConfig};

/// Timeout of one `STATUS` or control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);
/// How the node refuses a membership change to the configuration it already
/// has (`barge::core` `MembershipError`, forwarded by the KV example).
const ALREADY_APPLIED: &str = "already is the requested one";
/// Packets the proxy holds back at most (delay faults).
const PROXY_DELAYED_PACKETS_MAX: usize = 20_000;
const PROXY_DATAGRAM_BYTES_MAX: usize = 65_535;

/// How a node process starts (the example's `--start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    New,
    Existing,
}

/// One node's fixed addresses and its current process.
#[derive(Debug)]
pub struct NodeProcess {
    pub id: u64,
    /// Where its QUIC endpoint binds (behind the proxy's front address).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<ChildProcess>,
    paused: bool,
    /// Processes started for this node, first start included.
    pub starts: u32,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// The processes, the proxy between them, and where clients reach them.
#[derive(Debug)]
pub struct Cluster {
    program: PathBuf,
    certs: PathBuf,
    peers_arg: String,
    clients_arg: String,
    pub nodes: BTreeMap<u64, NodeProcess>,
    pub proxy: FaultProxy,
    pub clients: Arc<BTreeMap<u64, SocketAddr>>,
}

/// Sends `signal` (a `kill -s` name) to `pid` with the `kill` command, which
/// keeps this crate free of `unsafe`.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running `kill`")?;
    if !status.success() {
        bail!("kill -s {signal} {pid}: {status}");
    }
    Ok(())
}

impl Cluster {
    /// Writes certificates under `dir`, starts the proxy and `count` nodes
    /// (`program kv ...`), and returns without waiting for a leader.
    ///
    /// # Errors
    /// Certificates, ports, the proxy or a process could not be set up.
    pub fn start(dir: &Path, count: u64, seed: u64, program: &Path) -> Result<Cluster> {
        let certs = dir.join("certs");
        let ids: Vec<PeerId> = (1..=count).map(PeerId).collect();
        barge_net::tls::write_dev_cluster(&certs, ClusterId(0xc4a05), &ids)
            .with_context(|| format!("writing certificates to {}", certs.display()))?;
        // Held until the proxy has bound its front sockets, so it cannot
        // take one of these ports; released just before the nodes start.
        let held = children::loopback_ports(count)?;
        let mut addresses = BTreeMap::new();
        for (id, (udp, tcp)) in (1..=count).zip(&held) {
            addresses.insert(id, (udp.local_addr()?, tcp.local_addr()?));
        }
        let proxy = FaultProxy::start(ProxyConfig {
            nodes: addresses.iter().map(|(id, (udp, _))| (*id, *udp)).collect(),
            seed,
            delayed_packets_max: PROXY_DELAYED_PACKETS_MAX,
            datagram_bytes_max: PROXY_DATAGRAM_BYTES_MAX,
        })
        .context("starting the fault proxy")?;
        drop(held);
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for (id, (_, client)) in &addresses {
            let front = proxy
                .front(*id)
                .with_context(|| format!("the proxy has no front address for node {id}"))?;
            peers.push(format!("{id}={front}"));
            clients.push(format!("{id}={client}"));
        }
        let nodes = addresses
            .iter()
            .map(|(&id, &(listen, _))| {
                let node = NodeProcess {
                    id,
                    listen,
                    data_dir: dir.join(format!("node-{id}")),
                    log_path: dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    starts: 0,
                };
                (id, node)
            })
            .collect();
        let mut cluster = Cluster {
            program: program.to_owned(),
            certs,
            peers_arg: peers.join(","),
            clients_arg: clients.join(","),
            clients: Arc::new(addresses.iter().map(|(id, (_, c))| (*id, *c)).collect()),
            nodes,
            proxy,
        };
        for id in 1..=count {
            cluster.spawn(id, Start::New, None)?;
        }
        Ok(cluster)
    }

    /// Starts node `id`'s process (it must not be running).
    ///
    /// # Errors
    /// The log file or the process could not be created.
    pub fn spawn(&mut self, id: u64, start: Start, disk_faults: Option<&str>) -> Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .with_context(|| format!("opening {}", node.log_path.display()))?;
        let mut command = Command::new(&self.program);
        command
            .arg("kv")
            .args(["--id", &id.to_string()])
            .args(["--peers", &self.peers_arg])
            .args(["--listen", &node.listen.to_string()])
            .args(["--clients", &self.clients_arg])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--certs")
            .arg(&self.certs);
        if start == Start::Existing {
            command.args(["--start", "existing"]);
        }
        if let Some(spec) = disk_faults {
            command.args(["--disk-faults", spec]);
        }
        command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = ChildProcess::spawn(&mut command)
            .with_context(|| format!("starting node {id}: {}", self.program.display()))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// SIGKILLs node `id` (also when paused) and reaps it.
    pub fn kill(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let child = node.child.take()?;
        node.paused = false;
        child.kill()
    }

    /// SIGSTOPs node `id`.
    ///
    /// # Errors
    /// It is not running, or the signal could not be sent.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        let child = node
            .child
            .as_ref()
            .with_context(|| format!("node {id} is not running"))?;
        signal(child.id(), "STOP")?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONTs node `id` if it is paused.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if let (true, Some(child)) = (node.paused, node.child.as_ref()) {
            signal(child.id(), "CONT")?;
        }
        node.paused = false;
        Ok(())
    }

    /// Processes that ended on their own since the last call (reaped).
    pub fn reap(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut ended = Vec::new();
        for node in self.nodes.values_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    ended.push((node.id, status));
                    node.child = None;
                    node.paused = false;
                }
                Ok(None) => {}
                Err(_) => {
                    // Cannot tell whether it lives: make sure it does not
                    // (dropping kills it).
                    node.child = None;
                }
            }
        }
        ended
    }

    /// Waits (bounded) for node `id` to exit by itself.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = node
            .child
            .as_mut()?
            .wait_exit(Instant::now() + timeout)
            .await
            .ok()??;
        node.child = None;
        Some(status)
    }

    /// Ids of nodes whose process runs (paused ones included).
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// `STATUS` of every node that answers within a second.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn statuses(&self) -> BTreeMap<u64, Status> {
        statuses(&self.clients).await
    }

    /// The node that says it leads, in the highest term any node reports.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn leader(&self) -> Option<u64> {
        leader_of(&self.statuses().await)
    }

    /// Waits (bounded) until some node leads.
    ///
    /// # Errors
    /// No leader within `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        Ok(self.statuses_with_leader(timeout).await?.1)
    }

    /// Waits (bounded) for a round of statuses in which some node leads
    /// (leadership may be unknown for a moment, during an election or a
    /// configuration change), and returns it with the leader.
    ///
    /// # Errors
    /// No leader within `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn statuses_with_leader(
        &self,
        timeout: Duration,
    ) -> Result<(BTreeMap<u64, Status>, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            if let Some(leader) = leader_of(&statuses) {
                return Ok((statuses, leader));
            }
            if Instant::now() >= deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a command that only the leader serves (`LEARNER`, `VOTERS`,
    /// a final `GET`), following redirects and retrying failures until a
    /// definite answer or `timeout`.
    ///
    /// # Errors
    /// No definite answer within `timeout`; the last answer is named.
    ///
    /// # Cancel safety
    /// Cancel-safe, but the command may have been applied.
    pub async fn command(&self, line: &str, timeout: Duration) -> Result<Reply> {
        Ok(self.command_at(line, timeout, None).await?.0)
    }

    /// As [`Cluster::command`], trying node `first` before asking every node
    /// for `STATUS` to find the leader (a node that answered a command a
    /// moment ago most likely still leads); also returns the node that
    /// answered.
    ///
    /// # Errors
    /// As [`Cluster::command`].
    ///
    /// # Cancel safety
    /// As [`Cluster::command`].
    pub async fn command_at(
        &self,
        line: &str,
        timeout: Duration,
        first: Option<u64>,
    ) -> Result<(Reply, u64)> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt");
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        let mut target = match first.filter(|id| self.clients.contains_key(id)) {
            Some(id) => id,
            None => self.leader().await.unwrap_or(ids[0]),
        };
        let mut attempt = 0usize;
        while Instant::now() < deadline {
            attempt += 1;
            match client::once(self.clients[&target], line, CONTROL_TIMEOUT).await {
                Ok(Reply::Redirect(address)) => {
                    last = format!("REDIRECT {address}");
                    if let Some((&id, _)) = self.clients.iter().find(|(_, a)| **a == address) {
                        target = id;
                        continue;
                    }
                }
                Ok(reply @ (Reply::Ok(_) | Reply::Absent | Reply::Mismatch)) => {
                    return Ok((reply, target));
                }
                // The goal of a membership command is a configuration: an
                // earlier attempt whose answer was lost (a timeout, `MAYBE`,
                // a leader change) may have reached it, and the node then
                // refuses the change as the configuration it already has.
                Ok(Reply::Fail(reason)) if reason.contains(ALREADY_APPLIED) => {
                    return Ok((Reply::Ok(Some(reason)), target));
                }
                Ok(reply) => last = format!("{reply:?}"),
                Err(error) => last = error.to_string(),
            }
            target = self.leader().await.unwrap_or(ids[attempt % ids.len()]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("`{line}`: no definite answer within {timeout:?} (last: {last})")
    }
}

/// `STATUS` of every node that answers within a second.
///
/// # Cancel safety
/// Cancel-safe.
pub async fn statuses(clients: &BTreeMap<u64, SocketAddr>) -> BTreeMap<u64, Status> {
    let mut tasks = JoinSet::new();
    for (&id, &address) in clients {
        tasks.spawn(async move { (id, client::status(address, CONTROL_TIMEOUT).await) });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((id, Some(status))) = joined {
            answers.insert(id, status);
        }
    }
    answers
}

/// The node that says it leads, in the highest term any node reports.
pub fn leader_of(statuses: &BTreeMap<u64, Status>) -> Option<u64> {
    statuses
        .values()
        .filter(|status| status.leader == status.id && status.id != 0)
        .max_by_key(|status| status.term)
        .map(|status| status.id)
}
