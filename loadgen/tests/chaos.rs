//! Bounded runs of `barge-loadgen chaos`, one per fault family, each a real
//! 3-node cluster of KV example processes on loopback (plus one 5-node run):
//! every run must end linearizable, with no acknowledged write lost and all
//! nodes agreeing on their state and log, after at least one fault of its
//! family. They run one at a time (the machine has two cores).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod running;

/// One experiment at a time: each runs a whole cluster.
static SERIAL: Mutex<()> = Mutex::new(());

/// Far above a run's own bounds (duration, convergence, final check).
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

fn chaos(args: &[&str]) -> Run {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_barge-loadgen"))
        .arg("chaos")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start barge-loadgen chaos");
    // Drained on threads so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chaos") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chaos {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs one family and checks the verdict.
fn family(name: &str, nodes: &str, seed: &str) -> Value {
    let run = chaos(&[
        "--nemesis",
        name,
        "--nodes",
        nodes,
        "--duration",
        "40",
        "--interval",
        "3",
        "--seed",
        seed,
        "--check-time",
        "60",
        "--json",
    ]);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "{name}: no JSON report ({error}); status {}\nstdout: {}\nstderr: {}",
            run.status, run.stdout, run.stderr
        )
    });
    let context = format!("{name}: {report:#}\nstderr: {}", run.stderr);
    assert_eq!(report["linearizable"], Value::Bool(true), "{context}");
    assert_eq!(report["lost_acked_writes"], 0, "{context}");
    assert_eq!(report["nodes_agree"], Value::Bool(true), "{context}");
    assert_eq!(
        report["unexpected_exits"],
        serde_json::json!([]),
        "{context}"
    );
    assert_eq!(report["nemesis_errors"], serde_json::json!([]), "{context}");
    assert!(
        report["faults"][name].as_u64().unwrap_or(0) >= 1,
        "{context}"
    );
    assert!(
        report["acknowledged"].as_u64().unwrap_or(0) >= 1000,
        "{context}"
    );
    assert_eq!(report["verdict"], "pass", "{context}");
    assert!(run.status.success(), "{context}");
    report
}

#[test]
fn kill() {
    family("kill", "3", "11");
}

#[test]
fn pause() {
    family("pause", "3", "12");
}

#[test]
fn partition() {
    family("partition", "3", "13");
}

#[test]
fn delay() {
    family("delay", "3", "14");
}

#[test]
fn member() {
    family("member", "3", "15");
}

#[test]
fn disk() {
    let report = family("disk", "3", "16");
    let variants = &report["fault_variants"];
    assert!(
        variants["disk_fsync_fail_stop"].as_u64().unwrap_or(0) >= 1,
        "{report:#}"
    );
    assert!(
        variants["disk_bit_flip"].as_u64().unwrap_or(0) >= 1,
        "{report:#}"
    );
    assert!(
        report["fail_stops"].as_u64().unwrap_or(0) >= 1,
        "{report:#}"
    );
}

#[test]
fn five_nodes_all_families() {
    let run = chaos(&[
        "--nodes",
        "5",
        "--duration",
        "30",
        "--interval",
        "2",
        "--seed",
        "17",
        "--json",
    ]);
    let report: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|error| panic!("no JSON ({error}): {}\n{}", run.stdout, run.stderr));
    let context = format!("{report:#}\nstderr: {}", run.stderr);
    assert_eq!(report["verdict"], "pass", "{context}");
    assert_eq!(report["nodes"], 5, "{context}");
    assert_eq!(
        report["node_status"].as_object().map(|nodes| nodes.len()),
        Some(5)
    );
    let faults: u64 = report["faults"]
        .as_object()
        .map_or(0, |faults| faults.values().filter_map(Value::as_u64).sum());
    assert!(faults >= 3, "{context}");
}

#[test]
fn bad_options_are_refused_with_a_clear_error() {
    for (args, needle) in [
        (&["--nodes", "4"][..], "--nodes"),
        (&["--nemesis", "flood"][..], "flood"),
        (&["--duration", "0"][..], "--duration"),
        (&["--surprise"][..], "surprise"),
    ] {
        let run = chaos(args);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

/// Command lines of the `kv` node processes whose arguments name `path`.
fn kv_processes_using(path: &std::path::Path) -> Vec<String> {
    running::processes_using(path, "kv")
}

/// The KV nodes hold their stdin from the chaos tool (`--parent-stdin`):
/// when the tool dies without a chance to kill them, they exit by
/// themselves.
#[test]
fn kv_nodes_stop_when_the_chaos_tool_is_killed() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let parent = tempfile::tempdir().expect("parent directory");
    let dir = parent.path().join("run");
    let mut run = Command::new(env!("CARGO_BIN_EXE_barge-loadgen"))
        .args(["chaos", "--nemesis", "none", "--duration", "60"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start barge-loadgen chaos");
    // Running and serving (each says so in its log), not failing to start.
    let serving = |id: u32| {
        std::fs::read_to_string(dir.join(format!("node-{id}.log")))
            .is_ok_and(|log| log.contains("serving clients"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while kv_processes_using(&dir).len() < 3 || !(1..=3).all(serving) {
        if Instant::now() >= deadline {
            let _ = run.kill();
            let _ = run.wait();
            let running = kv_processes_using(&dir);
            panic!("the three kv nodes never served: {running:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill().expect("SIGKILL the chaos tool");
    run.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kv_processes_using(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "kv nodes outlived the chaos tool: {:?}",
            kv_processes_using(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
