//! The two ways a run deploys its nodes, behind one interface for the
//! driver and the report: in this process ([`LocalCluster`], the default)
//! or one OS process per node ([`ProcessCluster`], `--processes`).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use barge::core::NodeId;
use barge::node::{Metrics, NodeError};
use barge_net::Bytes;

use super::cluster::{LocalCluster, LocalRouter};
use super::processes::ProcessCluster;
use super::remote::RemoteRouter;
use super::resources::Resources;

/// A running cluster.
#[derive(Debug)]
pub enum Cluster {
    Local(LocalCluster),
    Processes(ProcessCluster),
}

impl Cluster {
    /// Starts `voters` nodes, as processes if `processes`; without `fsync`
    /// their logs do not sync writes (unsafe, measurement only).
    ///
    /// # Errors
    /// As [`LocalCluster::start`] or [`ProcessCluster::start`].
    pub async fn start(
        voters: u64,
        parent: &Path,
        processes: bool,
        fsync: bool,
    ) -> Result<Cluster> {
        Ok(match processes {
            false => Cluster::Local(LocalCluster::start(voters, parent, fsync).await?),
            true => Cluster::Processes(ProcessCluster::start(voters, parent, fsync).await?),
        })
    }

    /// Whether the nodes run in processes of their own.
    pub fn processes(&self) -> bool {
        matches!(self, Cluster::Processes(_))
    }

    /// Waits until every node names the same leader.
    ///
    /// # Errors
    /// No agreement within `timeout` (or a node process not answering).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        match self {
            Cluster::Local(cluster) => cluster.wait_for_leader(timeout).await,
            Cluster::Processes(cluster) => cluster.wait_for_leader(timeout).await,
        }
    }

    /// The leader every node agrees on, if they agree.
    pub async fn agreed_leader(&self) -> Option<NodeId> {
        match self {
            Cluster::Local(cluster) => cluster.agreed_leader(),
            Cluster::Processes(cluster) => cluster.agreed_leader().await,
        }
    }

    /// Each node's metrics, node 1 first.
    ///
    /// # Errors
    /// A node process that does not answer.
    pub async fn metrics(&self) -> Result<Vec<Metrics>> {
        match self {
            Cluster::Local(cluster) => Ok(cluster.metrics()),
            Cluster::Processes(cluster) => cluster.metrics().await,
        }
    }

    /// CPU and memory of every process the run uses: this one (named
    /// `loadgen`, holding the nodes too when they are local) and each node
    /// process.
    pub fn resources(&self) -> Vec<(String, Resources)> {
        let mut all = vec![("loadgen".to_owned(), Resources::now())];
        if let Cluster::Processes(cluster) = self {
            all.extend(cluster.resources());
        }
        all
    }

    /// A router for the proposers, aimed at `leader`; with processes, it
    /// opens `connections_per_node` connections to each node.
    ///
    /// # Errors
    /// A node process that cannot be connected to.
    pub async fn router(&self, leader: NodeId, connections_per_node: usize) -> Result<Router> {
        let router = match self {
            Cluster::Local(cluster) => Router::Local(cluster.router()),
            Cluster::Processes(cluster) => Router::Remote(
                RemoteRouter::connect(cluster.client_addresses(), connections_per_node).await?,
            ),
        };
        router.redirect(Some(leader));
        Ok(router)
    }

    /// Stops every node (logs synced) and removes the data.
    ///
    /// # Errors
    /// As [`LocalCluster::shutdown`] or [`ProcessCluster::shutdown`].
    pub async fn shutdown(self) -> Result<()> {
        match self {
            Cluster::Local(cluster) => cluster.shutdown().await,
            Cluster::Processes(cluster) => cluster.shutdown().await,
        }
    }
}

/// Where proposers send, whichever way the nodes run.
#[derive(Debug)]
pub enum Router {
    Local(LocalRouter),
    Remote(RemoteRouter),
}

impl Router {
    /// Proposes one entry to the node believed to lead.
    ///
    /// # Errors
    /// As [`barge::node::Node::propose`].
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, NodeError> {
        match self {
            Router::Local(router) => router.leader().propose(payload).await,
            Router::Remote(router) => router.propose(payload).await,
        }
    }

    /// Follows a leader hint (or looks for the leader without one); returns
    /// whether the target changed.
    pub fn redirect(&self, hint: Option<NodeId>) -> bool {
        match self {
            Router::Local(router) => router.redirect(hint),
            Router::Remote(router) => router.redirect(hint),
        }
    }

    /// The node proposals currently go to.
    pub fn target(&self) -> NodeId {
        match self {
            Router::Local(router) => router.target(),
            Router::Remote(router) => router.target(),
        }
    }
}
