//! `barge-loadgen run --no-fsync`, as a user runs it: the nodes' logs skip
//! fdatasync (unsafe, measurement only), proposals still commit, and the
//! output says so.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_barge-loadgen");

/// Runs a short unsafe run and returns its JSON report.
fn unsafe_run(extra: &[&str]) -> serde_json::Value {
    let parent = tempfile::tempdir().expect("parent directory");
    let data = parent.path().to_str().expect("UTF-8 path");
    let mut args = vec![
        "run",
        "--no-fsync",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--clients",
        "32",
        "--json",
        "--data-dir",
        data,
    ];
    args.extend_from_slice(extra);
    let output = Command::new(BINARY)
        .args(&args)
        .output()
        .expect("barge-loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run {args:?} failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

fn assert_unsafe_report(json: &serde_json::Value) {
    assert_eq!(json["fsync"], false, "{json}");
    assert!(json["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{json}");
    assert_eq!(json["fsyncs_per_s"].as_f64(), Some(0.0), "{json}");
    let nodes = json["per_node"].as_array().expect("per node");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        assert_eq!(node["fsyncs_per_s"].as_f64(), Some(0.0), "{node}");
    }
}

#[test]
fn in_process_run_without_fsync_commits_and_is_labelled() {
    let json = unsafe_run(&[]);
    assert_unsafe_report(&json);
    assert_eq!(json["node_processes"], false);
}

#[test]
fn process_run_without_fsync_commits_and_is_labelled() {
    let json = unsafe_run(&["--processes"]);
    assert_unsafe_report(&json);
    assert_eq!(json["node_processes"], true);
}

#[test]
fn help_describes_no_fsync_as_unsafe() {
    let output = Command::new(BINARY)
        .args(["run", "--help"])
        .output()
        .expect("barge-loadgen runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let line = help
        .lines()
        .find(|line| line.trim_start().starts_with("--no-fsync"))
        .unwrap_or_else(|| panic!("no --no-fsync in the help: {help}"));
    assert!(line.contains("UNSAFE"), "{line}");
}
