//! Bad configuration is refused at start with an error that names the
//! problem, and a refused start leaves nothing behind (its ports and data
//! directory can be used right away).

mod node;

use std::collections::BTreeSet;
use std::time::Duration;

use barge::core::NodeId;
use barge::node::{ConfigError, Node, StartError, StartMode};
use barge_net::PeerId;
use bytes::Bytes;
use node::{Cluster, Recorder};

async fn refused(config: barge::node::NodeConfig) -> StartError {
    match Node::start(config, Recorder::default()).await {
        Ok(node) => {
            node.shutdown().await.expect("shutdown");
            panic!("a bad configuration was accepted");
        }
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_by_name() {
    let mut cluster = Cluster::start(0, 3).await;
    let one = NodeId(1);
    cluster.initial_voters = BTreeSet::from([one]);

    let mut config = cluster.config(one, StartMode::New);
    config.peers.insert(one, cluster.addresses[&one]);
    let error = refused(config).await;
    assert!(matches!(error, StartError::Config(ConfigError::SelfInPeers(id)) if id == one));
    assert!(
        error.to_string().contains("peers must not list this node"),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.identity = cluster.ca.issue(PeerId(2)).expect("certificate");
    let error = refused(config).await;
    assert!(
        matches!(
            error,
            StartError::Config(ConfigError::IdentityMismatch { certificate: 2, .. })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("certificate is for node 2"),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.cluster += 1;
    let error = refused(config).await;
    assert!(
        matches!(
            error,
            StartError::Config(ConfigError::ClusterMismatch { .. })
        ),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.initial_voters.insert(NodeId(9));
    let error = refused(config).await;
    assert!(
        matches!(
            error,
            StartError::Config(ConfigError::VoterWithoutAddress(NodeId(9)))
        ),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::Join);
    config.initial_voters = BTreeSet::from([one]);
    let error = refused(config).await;
    assert!(
        matches!(error, StartError::Config(ConfigError::NoVoters)),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.tick_interval = Duration::ZERO;
    let error = refused(config).await;
    assert!(
        matches!(error, StartError::Config(ConfigError::TickInterval(_))),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.request_queue_max = 0;
    let error = refused(config).await;
    assert!(error.to_string().contains("request_queue_max"), "{error}");

    let mut config = cluster.config(one, StartMode::New);
    config.log.segment_bytes = 4096;
    let error = refused(config).await;
    assert!(
        matches!(
            error,
            StartError::Config(ConfigError::SegmentTooSmall(4096))
        ),
        "{error}"
    );

    let mut config = cluster.config(one, StartMode::New);
    config.raft.election_timeout_ticks_min = config.raft.election_timeout_ticks_max + 1;
    let error = refused(config).await;
    assert!(
        matches!(error, StartError::Config(ConfigError::Raft(_))),
        "{error}"
    );

    // None of those touched the data directory.
    assert!(!cluster.dir.path().join("node-1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_must_match_the_start_mode_and_node() {
    let mut cluster = Cluster::start(0, 3).await;
    let (one, two) = (NodeId(1), NodeId(2));

    // An existing member never starts on an empty directory: it may have
    // lost votes and entries it acknowledged.
    let error = refused(cluster.config(one, StartMode::Existing)).await;
    assert!(
        matches!(error, StartError::FreshDataDirectory(_)),
        "{error}"
    );
    assert!(error.to_string().contains("StartMode::Join"), "{error}");

    // A one-voter cluster of node 1 writes its directory.
    let mut config = cluster.config(one, StartMode::New);
    config.initial_voters = BTreeSet::from([one]);
    cluster.launch(config).await;
    cluster.leader(Duration::from_secs(10)).await;
    cluster
        .propose(Bytes::from_static(b"x"), Duration::from_secs(10))
        .await;
    cluster.stop(one).await;

    // Node 2 pointed at node 1's directory is refused, naming both.
    let mut config = cluster.config(two, StartMode::Existing);
    config.data_dir = cluster.dir.path().join("node-1");
    let error = refused(config).await;
    assert!(
        matches!(error, StartError::WrongDataDirectory { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("id=1") && message.contains("id=2"),
        "{message}"
    );

    // So is node 1 of another cluster.
    let mut config = cluster.config(one, StartMode::Existing);
    config.cluster += 1;
    config.identity = barge_net::DevCa::generate(barge_net::ClusterId(config.cluster))
        .expect("CA")
        .issue(PeerId(1))
        .expect("certificate");
    let error = refused(config).await;
    assert!(
        matches!(error, StartError::WrongDataDirectory { .. }),
        "{error}"
    );

    // A listen address already taken is a transport error, and the metrics
    // listener's address is checked too.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut config = cluster.config(one, StartMode::Existing);
    config.listen = taken.local_addr().expect("address");
    let error = refused(config).await;
    assert!(matches!(error, StartError::Transport(_)), "{error}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = cluster.config(one, StartMode::Existing);
    config.metrics_listen = Some(taken.local_addr().expect("address"));
    let error = refused(config).await;
    assert!(matches!(error, StartError::Io { .. }), "{error}");
    assert!(error.to_string().contains("metrics listener"), "{error}");

    // After all those refusals, node 1 restarts on its own directory and
    // address and still holds its entry.
    let mut config = cluster.config(one, StartMode::Existing);
    config.initial_voters = BTreeSet::from([one]);
    cluster.machines.insert(one, Recorder::default());
    cluster.launch(config).await;
    cluster.wait_applied(one, 2, Duration::from_secs(10)).await;
    assert_eq!(cluster.machines[&one].applied.lock()[0].1, "x");
    cluster.stop_all().await;
}
