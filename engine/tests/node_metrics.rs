//! The optional HTTP listener serves the node's metrics in Prometheus text
//! format, answers anything else with 404, and bounds what it reads.

mod node;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use barge::core::NodeId;
use bytes::Bytes;
use node::Cluster;

const WAIT: Duration = Duration::from_secs(10);

fn http(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    // The listener may answer and close before reading a long request.
    let _ = stream.write_all(request);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_listener() {
    let address = barge_net::ports::loopback_address().expect("free port");
    let mut cluster = Cluster::start(0, 1).await;
    let mut config = cluster.config(NodeId(1), barge::node::StartMode::New);
    config.initial_voters = [NodeId(1)].into();
    config.metrics_listen = Some(address);
    cluster.launch(config).await;
    cluster.leader(WAIT).await;
    let index = cluster.propose(Bytes::from_static(b"x"), WAIT).await;
    cluster.wait_applied(NodeId(1), index, WAIT).await;

    let response = tokio::task::spawn_blocking(move || {
        [
            http(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            http(address, b"GET /secret HTTP/1.1\r\n\r\n"),
            http(address, b"\x00\xff garbage\r\n\r\n"),
            http(address, &vec![b'A'; 64 * 1024]),
        ]
    })
    .await
    .expect("client");
    assert!(
        response[0].starts_with("HTTP/1.1 200 OK"),
        "{}",
        response[0]
    );
    assert!(
        response[0].contains("barge_is_leader{node=\"1\"} 1"),
        "{}",
        response[0]
    );
    assert!(
        response[0].contains(&format!("barge_applied_index{{node=\"1\"}} {index}")),
        "{}",
        response[0]
    );
    assert!(
        response[0].contains("barge_followers_went_back_total{node=\"1\"} 0"),
        "{}",
        response[0]
    );
    for other in &response[1..] {
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }
    cluster.stop_all().await;
}
