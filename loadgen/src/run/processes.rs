//! A local cluster of node processes (`--processes`): each node is a child
//! `barge-loadgen node` (see `node_process`), with its log in its own
//! directory under one temporary directory (fsync on), QUIC with mutual TLS
//! on loopback from certificates written there, and the binary client
//! protocol on a loopback TCP port.
//!
//! Children never outlive the cluster (`barge_loadgen::children`): they
//! are killed and reaped when [`ProcessCluster`] is dropped (every error
//! path), and they stop by themselves when their stdin from this process
//! closes, so also if it dies. A clean
//! [`ProcessCluster::shutdown`] closes their stdin and waits for each to
//! shut its node down (log synced) and exit with status 0.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge::core::NodeId;
use barge::node::Metrics;
use barge_loadgen::children::{self, ChildProcess};
use barge_net::{ClusterId, PeerId};

use super::remote::Connection;
use super::resources::Resources;

const CLUSTER: u64 = 0x10ad;
/// How long a child may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to stop after its stdin closes.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The running node processes and a connection to each for its stats.
#[derive(Debug)]
pub struct ProcessCluster {
    /// Node `NodeId(i + 1)` at index `i`. Declared first: dropped (killed)
    /// before the data directory goes.
    children: Vec<ChildProcess>,
    stats: Vec<Connection>,
    client_addresses: Vec<SocketAddr>,
    data: tempfile::TempDir,
}

/// Distinct free loopback ports, released for the children to bind.
fn free_ports(count: u64) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for (socket, listener) in children::loopback_ports(count)? {
        udp.push(socket.local_addr()?);
        tcp.push(listener.local_addr()?);
    }
    Ok((udp, tcp))
}

fn address_list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .enumerate()
        .map(|(index, address)| format!("{}={address}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

impl ProcessCluster {
    /// Starts `voters` node processes with their data under a fresh
    /// temporary directory inside `parent`, and waits until each is ready.
    ///
    /// # Errors
    /// Certificates that cannot be written, a child that cannot be spawned
    /// or exits or stalls during its start (its own error is on stderr).
    pub async fn start(voters: u64, parent: &Path, fsync: bool) -> Result<ProcessCluster> {
        let data = tempfile::Builder::new()
            .prefix("barge-processes-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a data directory in {}", parent.display()))?;
        let certs = data.path().join("certs");
        let ids: Vec<PeerId> = (1..=voters).map(PeerId).collect();
        barge_net::tls::write_dev_cluster(&certs, ClusterId(CLUSTER), &ids)
            .with_context(|| format!("writing certificates to {}", certs.display()))?;
        let (raft_addresses, client_addresses) = free_ports(voters)?;
        let program = std::env::current_exe().context("locating this program")?;
        let mut children = Vec::new();
        for id in 1..=voters {
            let index = (id - 1) as usize;
            let mut command = Command::new(&program);
            command.arg("node");
            if !fsync {
                command.arg("--no-fsync");
            }
            command
                .args(["--id", &id.to_string()])
                .args(["--peers", &address_list(&raft_addresses)])
                .args(["--client", &client_addresses[index].to_string()])
                .args(["--clients", &address_list(&client_addresses)])
                .arg("--data-dir")
                .arg(data.path().join(format!("node-{id}")))
                .arg("--certs")
                .arg(&certs)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let child = ChildProcess::spawn(&mut command)
                .with_context(|| format!("starting node {id} ({})", program.display()))?;
            children.push(child);
        }
        for (index, child) in children.iter_mut().enumerate() {
            child
                .wait_ready(READY_TIMEOUT)
                .await
                .with_context(|| format!("node {}", index + 1))?;
        }
        let mut stats = Vec::with_capacity(client_addresses.len());
        for (index, address) in client_addresses.iter().enumerate() {
            stats.push(Connection::open(NodeId(index as u64 + 1), *address).await?);
        }
        Ok(ProcessCluster {
            children,
            stats,
            client_addresses,
            data,
        })
    }

    /// Each node's client address, node 1 first.
    pub fn client_addresses(&self) -> &[SocketAddr] {
        &self.client_addresses
    }

    /// Each node's metrics, node 1 first.
    ///
    /// # Errors
    /// A node that does not answer.
    pub async fn metrics(&self) -> Result<Vec<Metrics>> {
        let mut all = Vec::with_capacity(self.stats.len());
        for connection in &self.stats {
            all.push(connection.stats().await?);
        }
        Ok(all)
    }

    /// The leader every node agrees on, if they agree.
    pub async fn agreed_leader(&self) -> Option<NodeId> {
        let metrics = self.metrics().await.ok()?;
        let mut leaders = metrics.iter().map(|node| node.leader);
        let first = leaders.next()??;
        leaders.all(|leader| leader == Some(first)).then_some(first)
    }

    /// Waits until every node names the same leader.
    ///
    /// # Errors
    /// No agreement within `timeout`, or a node that does not answer.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let seen: Vec<_> = self.metrics().await?.iter().map(|m| m.leader).collect();
                bail!("no agreed leader within {timeout:?}; each node's view: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU and memory of each child, named `node-<id>`.
    pub fn resources(&self) -> Vec<(String, Resources)> {
        self.children
            .iter()
            .enumerate()
            .map(|(index, child)| {
                (
                    format!("node-{}", index + 1),
                    Resources::of_process(child.id()),
                )
            })
            .collect()
    }

    /// Closes every child's stdin, waits for each to stop its node (log
    /// synced) and exit, and removes the data.
    ///
    /// # Errors
    /// A child that exited with a failure status or did not exit in time
    /// (it is killed).
    pub async fn shutdown(mut self) -> Result<()> {
        drop(std::mem::take(&mut self.stats));
        let mut children = std::mem::take(&mut self.children);
        for child in &mut children {
            child.close_stdin();
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut failures = Vec::new();
        for (index, child) in children.iter_mut().enumerate() {
            let failure = match child.wait_exit(deadline).await {
                Ok(Some(status)) if status.success() => continue,
                Ok(Some(status)) => format!("exited with {status}"),
                Ok(None) => format!("did not exit within {EXIT_TIMEOUT:?}; killed"),
                Err(error) => format!("cannot wait for it: {error}"),
            };
            failures.push(format!("node {}: {failure}", index + 1));
        }
        // The ones that exited are reaped already, the others are killed.
        drop(children);
        let path = self.data.path().to_path_buf();
        self.data
            .close()
            .with_context(|| format!("removing {}", path.display()))?;
        if !failures.is_empty() {
            bail!("node processes failed to stop: {}", failures.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_listed_by_id() {
        let (udp, tcp) = free_ports(3).expect("ports");
        for set in [&udp, &tcp] {
            let mut ports: Vec<u16> = set.iter().map(SocketAddr::port).collect();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), 3, "ports repeat within a set: {set:?}");
        }
        let list = address_list(&udp[..2]);
        assert_eq!(list, format!("1={},2={}", udp[0], udp[1]));
    }
}
