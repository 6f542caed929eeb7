//! `barge-loadgen run --processes` and its node processes, end to end, as a
//! user runs them: the binary, real child processes, fsync and TLS on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod running;

const BINARY: &str = env!("CARGO_BIN_EXE_barge-loadgen");

fn loadgen(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("barge-loadgen runs")
}

/// Node processes whose command line mentions `path`.
fn processes_using(path: &Path) -> Vec<String> {
    running::processes_using(path, "node")
}

#[test]
fn a_short_process_run_reports_the_promised_fields() {
    let parent = tempfile::tempdir().expect("parent directory");
    let data = parent.path().to_str().expect("UTF-8 path");
    let output = loadgen(&[
        "run",
        "--processes",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--clients",
        "32",
        "--json",
        "--data-dir",
        data,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run failed: {stderr}");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert!(json["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{json}");
    for field in ["p50", "p99", "p999", "max"] {
        assert!(json["latency_us"][field].as_u64().is_some(), "{field}");
    }
    assert!(json["leader_changes"].as_u64().is_some());
    assert!(json["fsyncs_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{json}");
    assert_eq!(json["node_processes"], true);
    let processes = json["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 4, "the load generator and 3 nodes");
    let mut peak_sum = 0;
    for process in processes {
        let peak = process["peak_rss_bytes"].as_u64().expect("peak RSS");
        assert!(peak > 0, "{process}");
        peak_sum += peak;
    }
    assert_eq!(json["peak_rss_bytes"].as_u64(), Some(peak_sum));
    let nodes = json["per_node"].as_array().expect("per node");
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().filter(|node| node["leader"] == true).count(),
        1
    );
    assert_eq!(json["abandoned"], 0);
    // Everything stopped and was removed.
    assert!(processes_using(parent.path()).is_empty());
    let left: Vec<_> = std::fs::read_dir(parent.path()).expect("read").collect();
    assert!(left.is_empty(), "data left behind: {left:?}");
}

#[test]
fn node_processes_stop_when_the_load_generator_is_killed() {
    let parent = tempfile::tempdir().expect("parent directory");
    let mut run = Command::new(BINARY)
        .args(["run", "--processes", "--duration", "60", "--clients", "4"])
        .arg("--data-dir")
        .arg(parent.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("barge-loadgen starts");
    let stderr = run.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("cluster of 3 up"));
    assert!(started, "the cluster never came up");
    assert_eq!(
        processes_using(parent.path()).len(),
        3,
        "three node processes"
    );
    run.kill().expect("SIGKILL the load generator");
    run.wait().expect("reaped");
    // Their stdin closed with it: each shuts its node down and exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_using(parent.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "node processes outlived the load generator: {:?}",
            processes_using(parent.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_flags_are_refused_with_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--connections", "2"],
            "only applies with --processes",
        ),
        (
            &["run", "--processes", "--connections", "0"],
            "--connections must be between",
        ),
        (&["node", "--id", "1"], "--peers: required"),
        (
            &[
                "node",
                "--id",
                "4",
                "--peers",
                "1=127.0.0.1:1",
                "--client",
                "127.0.0.1:2",
                "--data-dir",
                "/nonexistent",
                "--certs",
                "/nonexistent",
            ],
            "no address for this node",
        ),
        (
            &[
                "node",
                "--id",
                "1",
                "--peers",
                "1:127.0.0.1:1",
                "--data-dir",
                "/nonexistent",
                "--certs",
                "/nonexistent",
            ],
            "expected ID=HOST:PORT",
        ),
        (
            &["node", "--inflight-max", "0", "--id", "1"],
            "--inflight-max must be between",
        ),
    ];
    for (args, expected) in cases {
        let output = loadgen(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(expected),
            "{args:?}: `{stderr}` lacks `{expected}`"
        );
    }
}

/// Appends a request frame (see `run::protocol`).
fn frame(out: &mut Vec<u8>, id: u64, kind: u8, payload: &[u8]) {
    let length = u32::try_from(9 + payload.len()).expect("small frame");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Reads one answer: (id, status, details).
fn answer(stream: &mut TcpStream) -> (u64, u8, Vec<u8>) {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("answer length");
    let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut body).expect("answer body");
    let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    (id, body[8], body[9..].to_vec())
}

/// One node process serving a one-voter cluster: pipelined proposals are
/// all answered, stats are served, and hostile frames are refused with an
/// answer and a closed connection, not a crash.
#[test]
fn a_node_process_speaks_the_binary_protocol_and_refuses_bad_frames() {
    let directory = tempfile::tempdir().expect("directory");
    let certs = directory.path().join("certs");
    let written = loadgen(&[
        "certs",
        "--nodes",
        "1",
        "--out",
        certs.to_str().expect("UTF-8"),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let raft = barge_net::ports::loopback_address().expect("a free UDP port");
    let client = barge_net::ports::loopback_address().expect("a free TCP port");
    let mut node = Command::new(BINARY)
        .args(["node", "--id", "1", "--peers", &format!("1={raft}")])
        .args(["--client", &client.to_string(), "--parent-stdin"])
        .arg("--data-dir")
        .arg(directory.path().join("node-1"))
        .arg("--certs")
        .arg(&certs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut ready = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("first line");
    assert_eq!(ready.trim(), "ready");

    let mut stream = TcpStream::connect(client).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // A one-voter cluster elects itself; until then proposals are refused
    // as not-leader, so retry until one commits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut out = Vec::new();
        frame(&mut out, 1, 0, b"first");
        stream.write_all(&out).expect("write");
        let (id, status, _) = answer(&mut stream);
        assert_eq!(id, 1);
        if status == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never became leader (status {status})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 500 proposals in one write: every id answered once, all committed.
    let mut out = Vec::new();
    for id in 100..600 {
        frame(&mut out, id, 0, &[0xa5; 64]);
    }
    frame(&mut out, 7, 1, b"");
    stream.write_all(&out).expect("write burst");
    let mut seen = std::collections::BTreeSet::new();
    let mut stats = None;
    for _ in 0..501 {
        let (id, status, details) = answer(&mut stream);
        assert_eq!(
            status,
            0,
            "answer {id}: {}",
            String::from_utf8_lossy(&details)
        );
        if id == 7 {
            stats = Some(details);
        } else {
            assert!(seen.insert(id), "id {id} answered twice");
        }
    }
    assert_eq!(seen.len(), 500);
    assert_eq!(stats.expect("stats answered").len(), 17 * 8);
    // Metrics are republished every few milliseconds: poll until they show
    // this node leading and the 501 proposals committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fields = loop {
        let mut out = Vec::new();
        frame(&mut out, 10, 1, b"");
        stream.write_all(&out).expect("write");
        let (id, status, stats) = answer(&mut stream);
        assert_eq!((id, status, stats.len()), (10, 0, 17 * 8));
        let fields: Vec<u64> = stats
            .chunks_exact(8)
            .map(|field| u64::from_le_bytes(field.try_into().expect("8 bytes")))
            .collect();
        if (fields[1] == 1 && fields[16] >= 501) || Instant::now() >= deadline {
            break fields;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(fields[0], 1, "node id: {fields:?}");
    assert_eq!(fields[1], 1, "it leads itself: {fields:?}");
    assert!(fields[16] >= 501, "proposals committed: {fields:?}");
    assert!(fields[9] > 0, "fsyncs: {fields:?}");

    // An empty proposal and an unknown kind: refused, the connection lives.
    let mut out = Vec::new();
    frame(&mut out, 8, 0, b"");
    frame(&mut out, 9, 42, b"x");
    stream.write_all(&out).expect("write");
    let mut refused: Vec<(u64, u8)> = (0..2)
        .map(|_| answer(&mut stream))
        .map(|(id, status, _)| (id, status))
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, vec![(8, 3), (9, 3)]);

    // A frame claiming 4 GiB: answered with a failure, then closed.
    stream.write_all(&u32::MAX.to_le_bytes()).expect("write");
    let (id, status, message) = answer(&mut stream);
    assert_eq!((id, status), (0, 3));
    assert!(
        String::from_utf8_lossy(&message).contains("exceeds"),
        "{message:?}"
    );
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).expect("closed"), 0);

    // The node still serves new connections.
    let mut again = TcpStream::connect(client).expect("reconnect");
    let mut out = Vec::new();
    frame(&mut out, 1, 0, b"after");
    again.write_all(&out).expect("write");
    again
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_eq!(answer(&mut again).1, 0);
    // SIGTERM: the node shuts down cleanly and exits with status 0 (the
    // other way to stop it, its stdin closing, is tested above).
    let terminated = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = node.kill();
            panic!("the node did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
