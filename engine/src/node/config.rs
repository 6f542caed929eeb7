//! The node's configuration and its validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use barge_net::{ClusterId, NodeIdentity, PeerId, TlsError};
use barge_wal::{Backend, Faults};

use crate::core::{self, NodeId};

/// How a node treats its data directory at start.
///
/// The distinction exists because a voter that lost its disk and comes back
/// empty under its old id could vote twice in a term or forget entries it
/// acknowledged, breaking Raft's safety. So an empty directory is accepted
/// only when the operator says the node is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// A brand-new cluster of [`NodeConfig::initial_voters`]: an empty data
    /// directory is initialised; an existing one is reused.
    New,
    /// A node of a running cluster restarting: the data directory must
    /// exist and belong to this node and cluster. An empty directory is
    /// refused (the node may have lost acknowledged state).
    Existing,
    /// A node being added to a running cluster (or re-added after losing its
    /// disk, once removed from the configuration): an empty data directory is
    /// initialised and the node waits to be told its configuration by the
    /// leader; it never campaigns before it is a voter. Set
    /// [`NodeConfig::initial_voters`] to the cluster's initial voters (the
    /// node leaves itself out of them in any case). Start the node, then
    /// add it from the leader with `add_learner` / `change_membership`.
    Join,
}

impl std::str::FromStr for StartMode {
    type Err = ConfigError;

    /// `new`, `existing` or `join` (how command lines name the modes).
    fn from_str(text: &str) -> Result<StartMode, ConfigError> {
        match text {
            "new" => Ok(StartMode::New),
            "existing" => Ok(StartMode::Existing),
            "join" => Ok(StartMode::Join),
            _ => Err(ConfigError::StartMode(text.to_owned())),
        }
    }
}

/// Storage options of the node's write-ahead log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Segment size (default 64 MiB).
    pub segment_bytes: u64,
    /// I/O backend (default io_uring, falling back to blocking I/O if the
    /// kernel or a seccomp filter refuses io_uring).
    pub backend: Backend,
    /// Bytes queued for the log thread before appends wait (default 64 MiB).
    pub queued_bytes_max: usize,
    /// Sync each log write with `fdatasync` before it counts as durable
    /// (default true). False is UNSAFE and for measurement only
    /// (`barge_wal::SyncMode::Never`): a power failure or kernel crash may
    /// lose entries the node acknowledged, on several nodes at once, so a
    /// committed write can vanish. A process crash alone loses nothing.
    pub fsync: bool,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 64 << 20,
            backend: Backend::Uring,
            queued_bytes_max: 64 << 20,
            fsync: true,
        }
    }
}

/// Everything a [`super::Node`] needs. Build it with [`NodeConfig::new`] and
/// adjust public fields; [`NodeConfig::validate`] runs at start.
#[derive(Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// The cluster id, checked in every connection handshake.
    pub cluster: u64,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address book: every other node this one may ever talk to, voters and
    /// learners alike. Membership decides who votes; this map only says where
    /// nodes are, so it must already hold nodes that will be added later.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The voters of a new cluster ([`StartMode::New`]). Until a snapshot
    /// holds a configuration, it is also what the log's entries are
    /// interpreted from at every restart, so give every node the same set on
    /// every start (the default, this node plus every peer, is right only
    /// while the address book lists exactly the initial voters: with spare
    /// addresses for nodes added later, set it explicitly). A joining node
    /// ([`StartMode::Join`]) leaves itself out of it.
    pub initial_voters: BTreeSet<NodeId>,
    /// How to treat the data directory.
    pub start: StartMode,
    /// Where the log, snapshots and the node identity file live.
    pub data_dir: PathBuf,
    /// TLS identity (cluster CA, this node's certificate and key).
    pub identity: NodeIdentity,
    /// The Raft core's timers and bounds (in ticks).
    pub raft: core::Config,
    /// The write-ahead log's options.
    pub log: LogOptions,
    /// Wall-clock length of one Raft tick (default 10 ms: elections after
    /// 100-200 ms of silence with the core's default timeouts).
    pub tick_interval: Duration,
    /// Requests (proposals, reads, admin calls) queued for the Raft thread
    /// before callers wait (default 65 536). This and the core's
    /// `uncommitted_bytes_max` are the node's admission control.
    pub request_queue_max: usize,
    /// Serve Prometheus metrics over HTTP on this address (default off).
    pub metrics_listen: Option<SocketAddr>,
    /// Seed of the core's election-timeout randomness (default: derived from
    /// the node id and the current time, so nodes never share timeouts).
    pub rng_seed: Option<u64>,
}

impl NodeConfig {
    /// A configuration with the documented defaults.
    #[must_use]
    pub fn new(
        id: NodeId,
        cluster: u64,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        data_dir: PathBuf,
        identity: NodeIdentity,
    ) -> NodeConfig {
        let mut initial_voters: BTreeSet<NodeId> = peers.keys().copied().collect();
        initial_voters.insert(id);
        NodeConfig {
            id,
            cluster,
            listen,
            peers,
            initial_voters,
            start: StartMode::New,
            data_dir,
            identity,
            raft: core::Config::default(),
            log: LogOptions::default(),
            tick_interval: Duration::from_millis(10),
            request_queue_max: 65_536,
            metrics_listen: None,
            rng_seed: None,
        }
    }

    /// As [`NodeConfig::new`], with the cluster id and this node's TLS
    /// identity read from `certificates`, a directory written by
    /// `barge-loadgen certs` (or [`barge_net::tls::write_dev_cluster`]): the
    /// cluster id in hex in `cluster`, the CA in `ca.pem`, this node's
    /// certificate and key in `node-<id>.pem` and `node-<id>.key.pem`.
    ///
    /// # Errors
    /// [`ConfigError::ClusterFile`] if `cluster` cannot be read or is not
    /// hex; [`ConfigError::Identity`] naming the certificate file at fault.
    pub fn from_certificates(
        id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        data_dir: PathBuf,
        certificates: &Path,
    ) -> Result<NodeConfig, ConfigError> {
        let path = certificates.join("cluster");
        let cluster = std::fs::read_to_string(&path)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                u64::from_str_radix(text.trim(), 16).map_err(|_| format!("{text:?} is not hex"))
            })
            .map_err(|reason| ConfigError::ClusterFile { path, reason })?;
        let identity = NodeIdentity::load(certificates, ClusterId(cluster), PeerId(id.0))?;
        Ok(NodeConfig::new(
            id, cluster, listen, peers, data_dir, identity,
        ))
    }

    /// Parses an address book written `ID=HOST:PORT,ID=HOST:PORT,..` (the
    /// form command lines use), for example
    /// `1=127.0.0.1:7001,2=localhost:7002`. A host name resolves to its
    /// first address.
    ///
    /// ```
    /// use barge::core::NodeId;
    /// use barge::node::NodeConfig;
    ///
    /// let peers = NodeConfig::parse_addresses("1=127.0.0.1:7001,2=127.0.0.1:7002")?;
    /// assert_eq!(peers[&NodeId(2)], "127.0.0.1:7002".parse::<std::net::SocketAddr>()?);
    /// assert!(NodeConfig::parse_addresses("1=127.0.0.1:7001,1=127.0.0.1:7002").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::AddressMap`] naming the item that is malformed, has
    /// an id that is not a number or is repeated, or an address that does
    /// not resolve.
    pub fn parse_addresses(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
        let mut addresses = BTreeMap::new();
        for item in text.split(',') {
            let error = |reason: &str| ConfigError::AddressMap {
                item: item.to_owned(),
                reason: reason.to_owned(),
            };
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| error("expected ID=HOST:PORT"))?;
            let id = NodeId(id.parse().map_err(|_| error("the id is not a number"))?);
            let address = match address.parse::<SocketAddr>() {
                Ok(address) => address,
                Err(_) => address
                    .to_socket_addrs()
                    .map_err(|resolve| error(&format!("bad address: {resolve}")))?
                    .next()
                    .ok_or_else(|| error("the host has no address"))?,
            };
            if addresses.insert(id, address).is_some() {
                return Err(error("the id appears twice"));
            }
        }
        Ok(addresses)
    }

    /// The command-line flags [`NodeConfig::from_flags`] reads, as usage
    /// lines for a program's help text.
    pub const FLAGS_USAGE: &'static str = "\
  --id N: this node; --data-dir DIR: its log, snapshots and identity file
  --peers ID=HOST:PORT,..: where every node, this one included, is dialled (QUIC)
  --listen HOST:PORT: where this node binds (default: its own --peers entry)
  --certs DIR: from `barge-loadgen certs` (cluster id, CA, node certificates)
  --start new|existing|join: new (default), existing (refuses an empty data
    directory) or join (a node added to a running cluster later)
  --disk-faults SPEC: run the log on barge-wal's fault-injecting backend, SPEC
    being comma-separated fsync-eio-after=N|write-eio-after=N|enospc-after=N|read-eio-after=N";

    /// A configuration from command-line flags, for programs that run one
    /// node per process: `--id`, `--peers`, `--data-dir` and `--certs` are
    /// required; `--listen`, `--start` and `--disk-faults` are optional (see
    /// [`NodeConfig::FLAGS_USAGE`]). `flags` maps each flag, dashes
    /// included, to its value; the flags read are removed from it, so what is
    /// left is the program's own (or unknown). `--peers` names this node too,
    /// and [`NodeConfig::initial_voters`] is every node it names.
    ///
    /// ```no_run
    /// use std::collections::BTreeMap;
    /// use barge::node::NodeConfig;
    ///
    /// let mut flags = BTreeMap::from([
    ///     ("--id", "1"),
    ///     ("--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"),
    ///     ("--data-dir", "/tmp/node1"),
    ///     ("--certs", "/tmp/certs"),
    ///     ("--clients", "8001"),
    /// ]);
    /// let config = NodeConfig::from_flags(&mut flags)?;
    /// assert_eq!(config.peers.len(), 2);
    /// assert_eq!(flags, BTreeMap::from([("--clients", "8001")]));
    /// # Ok::<(), barge::node::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Flag`] naming a missing flag or a bad value, and the
    /// errors of [`NodeConfig::from_certificates`].
    pub fn from_flags(flags: &mut BTreeMap<&str, &str>) -> Result<NodeConfig, ConfigError> {
        let mut required = |flag: &'static str| {
            flags.remove(flag).ok_or_else(|| ConfigError::Flag {
                flag,
                reason: "required".to_owned(),
            })
        };
        let (id, peers) = (required("--id")?, required("--peers")?);
        let (data_dir, certs) = (required("--data-dir")?, required("--certs")?);
        let (listen, start) = (flags.remove("--listen"), flags.remove("--start"));
        let faults = flags.remove("--disk-faults");
        let bad = |flag, reason: &dyn std::fmt::Display| ConfigError::Flag {
            flag,
            reason: reason.to_string(),
        };
        let id = NodeId(id.parse().map_err(|error| bad("--id", &error))?);
        let mut peers =
            NodeConfig::parse_addresses(peers).map_err(|error| bad("--peers", &error))?;
        let own = peers
            .remove(&id)
            .ok_or_else(|| bad("--peers", &format!("no address for this node ({id})")))?;
        let listen = listen.map_or(Ok(own), str::parse);
        let listen = listen.map_err(|error| bad("--listen", &error))?;
        let (data_dir, certs) = (PathBuf::from(data_dir), Path::new(certs));
        let mut config = NodeConfig::from_certificates(id, listen, peers, data_dir, certs)?;
        config.start = start.map_or(Ok(StartMode::New), str::parse)?;
        if let Some(faults) = faults {
            let faults = faults.parse::<Faults>();
            let faults = faults.map_err(|error| bad("--disk-faults", &error))?;
            config.log.backend = Backend::FaultyBlocking(faults);
        }
        Ok(config)
    }

    /// A configuration from a whole command line of `--flag value` pairs
    /// (program name left out): the flags of [`NodeConfig::from_flags`] and
    /// the program's own `required` flags, whose values come back in the
    /// order `required` names them.
    ///
    /// ```no_run
    /// use barge::node::NodeConfig;
    ///
    /// let args: Vec<String> = std::env::args().skip(1).collect();
    /// let (config, [clients]) = NodeConfig::from_args(&args, ["--clients"])?;
    /// # Ok::<(), barge::node::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::CommandLine`] if an argument is not in a pair, a flag
    /// repeats or is unknown; [`ConfigError::Flag`] naming a missing flag;
    /// the errors of [`NodeConfig::from_flags`].
    pub fn from_args<'a, const N: usize>(
        args: &'a [String],
        required: [&'static str; N],
    ) -> Result<(NodeConfig, [&'a str; N]), ConfigError> {
        let mut flags = BTreeMap::new();
        for pair in args.chunks(2) {
            let [flag, value] = pair else {
                let odd = "every flag takes one value, but the arguments do not pair up";
                return Err(ConfigError::CommandLine(format!("{odd} (last: {pair:?})")));
            };
            if flags.insert(flag.as_str(), value.as_str()).is_some() {
                return Err(ConfigError::CommandLine(format!("{flag} is given twice")));
            }
        }
        if let Some(flag) = required.iter().find(|flag| !flags.contains_key(*flag)) {
            let reason = "required".to_owned();
            return Err(ConfigError::Flag { flag, reason });
        }
        // Every required flag is present: checked just above.
        let values = required.map(|flag| flags.remove(flag).unwrap_or_default());
        let config = NodeConfig::from_flags(&mut flags)?;
        if !flags.is_empty() {
            let unknown: Vec<&str> = flags.into_keys().collect();
            return Err(ConfigError::CommandLine(format!(
                "unknown flags {unknown:?}"
            )));
        }
        Ok((config, values))
    }

    /// Checks the configuration as a whole.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.raft.validate().map_err(ConfigError::Raft)?;
        if self.peers.contains_key(&self.id) {
            return Err(ConfigError::SelfInPeers(self.id));
        }
        if self.identity.node.0 != self.id.0 {
            return Err(ConfigError::IdentityMismatch {
                id: self.id,
                certificate: self.identity.node.0,
            });
        }
        if self.identity.cluster.0 != self.cluster {
            return Err(ConfigError::ClusterMismatch {
                cluster: self.cluster,
                certificate: self.identity.cluster.0,
            });
        }
        if self.start == StartMode::Join
            && self.initial_voters.iter().all(|voter| *voter == self.id)
        {
            return Err(ConfigError::NoVoters);
        }
        if self.start == StartMode::New {
            if self.initial_voters.is_empty() {
                return Err(ConfigError::NoVoters);
            }
            if let Some(unknown) = self
                .initial_voters
                .iter()
                .find(|voter| **voter != self.id && !self.peers.contains_key(voter))
            {
                return Err(ConfigError::VoterWithoutAddress(*unknown));
            }
        }
        if self.tick_interval < Duration::from_millis(1)
            || self.tick_interval > Duration::from_secs(10)
        {
            return Err(ConfigError::TickInterval(self.tick_interval));
        }
        if self.request_queue_max == 0 {
            return Err(ConfigError::Zero("request_queue_max"));
        }
        if self.log.segment_bytes < (1 << 20) {
            return Err(ConfigError::SegmentTooSmall(self.log.segment_bytes));
        }
        if self.log.queued_bytes_max < self.raft.batch_bytes_max as usize {
            return Err(ConfigError::LogQueueBelowBatch {
                queued_bytes_max: self.log.queued_bytes_max,
                batch_bytes_max: self.raft.batch_bytes_max,
            });
        }
        Ok(())
    }
}

/// Why a [`NodeConfig`] is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The certificate directory's `cluster` file is unreadable or not hex.
    #[error("{path}: {reason}")]
    ClusterFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node's certificate, key or the CA could not be loaded.
    #[error("TLS identity: {0}")]
    Identity(#[from] TlsError),
    /// A start mode other than `new`, `existing` or `join`.
    #[error("start mode {0:?}: expected new, existing or join")]
    StartMode(String),
    /// An `ID=HOST:PORT,..` address book is malformed.
    #[error("address {item:?}: {reason}")]
    AddressMap {
        /// The offending comma-separated item.
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// A command-line flag of [`NodeConfig::from_flags`] is missing or its
    /// value is bad.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, dashes included.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A command line is not `--flag value` pairs of known flags, each
    /// given once ([`NodeConfig::from_args`]).
    #[error("{0}")]
    CommandLine(String),
    /// The core's timers or bounds are inconsistent.
    #[error("raft: {0}")]
    Raft(core::ConfigError),
    /// The address book lists this node itself.
    #[error("peers must not list this node ({0})")]
    SelfInPeers(NodeId),
    /// The certificate names another node.
    #[error("node id {id} but the certificate is for node {certificate}")]
    IdentityMismatch {
        /// Configured id.
        id: NodeId,
        /// Id in the certificate.
        certificate: u64,
    },
    /// The certificate names another cluster.
    #[error("cluster {cluster} but the certificate is for cluster {certificate}")]
    ClusterMismatch {
        /// Configured cluster.
        cluster: u64,
        /// Cluster in the certificate.
        certificate: u64,
    },
    /// A new cluster, or a node joining one, needs voters other than itself
    /// (a joining node).
    #[error("initial_voters must name at least one voter (other than a joining node itself)")]
    NoVoters,
    /// An initial voter is missing from the address book.
    #[error("initial voter {0} has no address in peers")]
    VoterWithoutAddress(NodeId),
    /// The tick is outside 1 ms ..= 10 s.
    #[error("tick interval {0:?} is outside 1 ms ..= 10 s")]
    TickInterval(Duration),
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// Segments below 1 MiB would roll on nearly every batch.
    #[error("segment size {0} bytes is below 1 MiB")]
    SegmentTooSmall(u64),
    /// One batch must fit in the log's queue or appends could never proceed.
    #[error(
        "log queued_bytes_max {queued_bytes_max} is below raft batch_bytes_max {batch_bytes_max}"
    )]
    LogQueueBelowBatch {
        /// The log bound.
        queued_bytes_max: usize,
        /// The batch bound.
        batch_bytes_max: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_books_parse_with_clear_errors() {
        let peers = NodeConfig::parse_addresses("3=127.0.0.1:7003,1=localhost:7001")
            .expect("a valid address book");
        assert_eq!(peers.len(), 2);
        assert_eq!(
            peers[&NodeId(3)],
            "127.0.0.1:7003".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(peers[&NodeId(1)].port(), 7001);
        for (text, reason) in [
            ("1=127.0.0.1:7001,", "expected ID=HOST:PORT"),
            ("127.0.0.1:7001", "expected ID=HOST:PORT"),
            ("one=127.0.0.1:7001", "the id is not a number"),
            ("1=127.0.0.1", "bad address"),
            ("1=127.0.0.1:7001,1=127.0.0.1:7002", "appears twice"),
        ] {
            let error = NodeConfig::parse_addresses(text).expect_err(text);
            assert!(matches!(error, ConfigError::AddressMap { .. }), "{text}");
            assert!(error.to_string().contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn certificates_come_from_a_certs_directory() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ids = [PeerId(1), PeerId(2)];
        barge_net::tls::write_dev_cluster(dir.path(), ClusterId(0x2a), &ids).expect("certificates");
        let listen = "127.0.0.1:7001".parse().expect("address");
        let peers = NodeConfig::parse_addresses("2=127.0.0.1:7002").expect("peers");
        let config = NodeConfig::from_certificates(
            NodeId(2),
            listen,
            BTreeMap::new(),
            "data".into(),
            dir.path(),
        )
        .expect("node 2 has a certificate");
        assert_eq!((config.cluster, config.identity.node), (0x2a, PeerId(2)));
        let missing =
            NodeConfig::from_certificates(NodeId(3), listen, peers.clone(), "d".into(), dir.path())
                .expect_err("no certificate for node 3");
        assert!(missing.to_string().contains("node-3.pem"), "{missing}");
        std::fs::write(dir.path().join("cluster"), "not hex\n").expect("write");
        let bad = NodeConfig::from_certificates(NodeId(1), listen, peers, "d".into(), dir.path())
            .expect_err("bad cluster file");
        assert!(matches!(bad, ConfigError::ClusterFile { .. }), "{bad}");
        assert!(bad.to_string().contains("is not hex"), "{bad}");
    }

    #[test]
    fn flags_make_a_configuration_and_leave_the_program_its_own() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ids = [PeerId(1), PeerId(2)];
        barge_net::tls::write_dev_cluster(dir.path(), ClusterId(7), &ids).expect("certificates");
        let certs = dir.path().to_str().expect("a UTF-8 temporary path");
        let peers = "1=127.0.0.1:7001,2=127.0.0.1:7002";
        let base = [
            ("--id", "2"),
            ("--peers", peers),
            ("--data-dir", "data"),
            ("--certs", certs),
            ("--clients", "mine"),
        ];
        let mut flags = BTreeMap::from(base);
        let config = NodeConfig::from_flags(&mut flags).expect("valid flags");
        assert_eq!(flags, BTreeMap::from([("--clients", "mine")]));
        assert_eq!(
            (config.id, config.cluster, config.start),
            (NodeId(2), 7, StartMode::New)
        );
        assert_eq!(
            config.listen,
            "127.0.0.1:7002".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(
            config.peers.keys().copied().collect::<Vec<_>>(),
            [NodeId(1)]
        );
        assert_eq!(
            config.initial_voters,
            BTreeSet::from([NodeId(1), NodeId(2)])
        );
        assert!(matches!(config.log.backend, Backend::Uring));
        let mut flags = BTreeMap::from(base);
        flags.extend([
            ("--listen", "0.0.0.0:9002"),
            ("--start", "existing"),
            ("--disk-faults", "fsync-eio-after=3"),
        ]);
        let config = NodeConfig::from_flags(&mut flags).expect("valid optional flags");
        assert_eq!(config.listen.port(), 9002);
        assert_eq!(config.start, StartMode::Existing);
        assert!(matches!(config.log.backend, Backend::FaultyBlocking(_)));
        for (flag, value, reason) in [
            ("--certs", None, "--certs: required"),
            ("--id", Some("two"), "--id: invalid digit"),
            ("--id", Some("3"), "--peers: no address for this node (n3)"),
            (
                "--peers",
                Some("2=nowhere"),
                "--peers: address \"2=nowhere\"",
            ),
            ("--listen", Some("here"), "--listen: invalid socket address"),
            ("--start", Some("old"), "start mode \"old\""),
            (
                "--disk-faults",
                Some("fsync-eio-after=x"),
                "--disk-faults: disk fault",
            ),
        ] {
            let mut flags = BTreeMap::from(base);
            match value {
                Some(value) => flags.insert(flag, value),
                None => flags.remove(flag),
            };
            let error = NodeConfig::from_flags(&mut flags).expect_err(reason);
            assert!(error.to_string().contains(reason), "{reason}: {error}");
        }
    }

    #[test]
    fn command_lines_are_pairs_of_known_flags() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ids = [PeerId(1), PeerId(2)];
        barge_net::tls::write_dev_cluster(dir.path(), ClusterId(7), &ids).expect("certificates");
        let certs = dir.path().to_str().expect("a UTF-8 temporary path");
        let line = |extra: &[&str]| -> Vec<String> {
            let peers = "1=127.0.0.1:7001,2=127.0.0.1:7002";
            let base = [
                "--id",
                "1",
                "--peers",
                peers,
                "--data-dir",
                "data",
                "--certs",
                certs,
            ];
            base.iter()
                .chain(extra)
                .map(|arg| (*arg).to_owned())
                .collect()
        };
        let args = line(&["--clients", "mine", "--start", "existing"]);
        let (config, [clients]) = NodeConfig::from_args(&args, ["--clients"]).expect("valid");
        assert_eq!(
            (config.id, config.start, clients),
            (NodeId(1), StartMode::Existing, "mine")
        );
        let (_, []) = NodeConfig::from_args(&line(&[]), []).expect("no program flags");
        for (extra, reason) in [
            (&["--clients"][..], "do not pair up (last: [\"--clients\"])"),
            (
                &["--clients", "a", "--clients", "b"],
                "--clients is given twice",
            ),
            (&["--id", "2"], "--id is given twice"),
            (&["--client", "a"], "--clients: required"),
            (
                &["--clients", "a", "--bogus", "b"],
                "unknown flags [\"--bogus\"]",
            ),
        ] {
            let error = NodeConfig::from_args(&line(extra), ["--clients"]).expect_err(reason);
            assert!(error.to_string().contains(reason), "{reason}: {error}");
        }
        let args = line(&["--clients", "a", "--start", "old"]);
        let error = NodeConfig::from_args(&args, ["--clients"]).expect_err("a bad node flag");
        assert!(error.to_string().contains("start mode \"old\""), "{error}");
    }

    #[test]
    fn start_modes_parse_by_name() {
        assert_eq!("join".parse::<StartMode>().expect("valid"), StartMode::Join);
        assert_eq!(
            "existing".parse::<StartMode>().expect("valid"),
            StartMode::Existing
        );
        let error = "old".parse::<StartMode>().expect_err("invalid");
        assert!(error.to_string().contains("expected new, existing or join"));
    }
}
