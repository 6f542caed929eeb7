//! Shared helpers: loopback clusters and a raw quinn client that can say
//! anything on the wire.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use barge_net::frame::{encode_contiguous, FrameKind};
use barge_net::tls::{client_crypto, node_name};
use barge_net::{
    ClusterId, Config, DevCa, Hello, Incoming, NodeIdentity, PeerId, QuicTransport, Transport,
};
use quinn::crypto::rustls::QuicClientConfig;

pub const CLUSTER: ClusterId = ClusterId(0xc0ffee);

/// Sockets bound up front so every node knows every address.
pub fn sockets(count: usize) -> (Vec<UdpSocket>, Vec<SocketAddr>) {
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let addresses = sockets
        .iter()
        .map(|socket| socket.local_addr().expect("local address"))
        .collect();
    (sockets, addresses)
}

/// Configurations for nodes 1..=count, each listing all others.
pub fn configs(ca: &DevCa, addresses: &[SocketAddr]) -> Vec<Config> {
    (0..addresses.len())
        .map(|me| {
            let node = PeerId(me as u64 + 1);
            let peers = (0..addresses.len())
                .filter(|&other| other != me)
                .map(|other| (PeerId(other as u64 + 1), addresses[other]))
                .collect::<BTreeMap<_, _>>();
            let mut config = Config::new(
                node,
                ca.cluster(),
                addresses[me],
                peers,
                ca.issue(node).expect("issue certificate"),
            );
            // Fast retries keep the tests quick.
            config.reconnect_backoff_min = Duration::from_millis(20);
            config.reconnect_backoff_max = Duration::from_millis(200);
            config
        })
        .collect()
}

/// Starts a cluster of `count` nodes, letting `adjust` change each config.
pub fn start_cluster(count: usize, adjust: impl Fn(&mut Config)) -> Vec<(QuicTransport, Incoming)> {
    let ca = DevCa::generate(CLUSTER).expect("generate CA");
    let (sockets, addresses) = sockets(count);
    configs(&ca, &addresses)
        .into_iter()
        .zip(sockets)
        .map(|(mut config, socket)| {
            adjust(&mut config);
            QuicTransport::start_with_socket(config, socket).expect("start transport")
        })
        .collect()
}

/// Waits until every node reports every peer connected (bounded).
pub async fn wait_connected(nodes: &[&QuicTransport], peers: &[PeerId]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = nodes.iter().all(|node| {
            peers
                .iter()
                .filter(|&&peer| peer != node.node())
                .all(|&peer| node.is_connected(peer))
        });
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes did not connect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until `condition` holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bare quinn client holding `identity`, dialling with `alpn_version`.
pub fn raw_client(identity: &NodeIdentity, alpn_version: u16) -> quinn::Endpoint {
    let crypto = client_crypto(identity, alpn_version).expect("client crypto");
    let config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).expect("quic")));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// Connects a raw client to `server` and sends `hello` as the handshake.
/// Returns the connection and the handshake streams.
pub async fn raw_connect(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    cluster: ClusterId,
    server_node: PeerId,
    hello: Hello,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), quinn::ConnectionError> {
    let connection = endpoint
        .connect(server, &node_name(cluster, server_node))
        .expect("connect")
        .await?;
    let (mut send, receive) = connection.open_bi().await?;
    send.write_all(&encode_contiguous(FrameKind::Handshake, &hello.encode()))
        .await
        .map_err(|_| quinn::ConnectionError::LocallyClosed)?;
    Ok((connection, send, receive))
}

/// Waits (bounded) for `connection` to close and returns the application
/// close code, if it was an application close.
pub async fn close_code(connection: &quinn::Connection) -> Option<u64> {
    let error = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("connection was not closed within 10 s");
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
