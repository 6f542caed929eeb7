//! Real disk, real crashes: a child process (this test binary re-executed)
//! appends through io_uring and prints an index only after the log reported
//! it durable; the parent SIGKILLs it mid-append, reopens the log, and
//! checks every acknowledged entry. Repeated 20 times on the same log, each
//! child continuing where recovery left off.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use barge_wal::{Completion, Wal, WalConfig};
use common::{decode, payload};

const CHILD_DIR: &str = "BARGE_WAL_KILL_CHILD_DIR";

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4 << 20,
        write_bytes_max: 1 << 20,
        queued_bytes_max: 1 << 20,
        ..WalConfig::default()
    }
}

/// The child: appends one-entry batches as fast as backpressure allows and
/// prints `ACK <index>` for every durability report. Exits by itself after
/// 30 s in case the parent never kills it.
#[test]
#[ignore = "run by kill_child_mid_append as a child process"]
fn child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (wal, recovery) = Wal::open(&dir, config()).expect("child open");
    let completions = wal.completions();
    let printer = std::thread::spawn(move || {
        use std::io::Write;
        let stdout = std::io::stdout();
        while let Ok(completion) = completions.recv_timeout(Duration::from_secs(30)) {
            if let Completion::Durable(durable) = completion {
                if let Some(last) = durable.last {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "ACK {}", last.index);
                    let _ = out.flush();
                }
            }
        }
    });
    let started = Instant::now();
    let mut next = recovery.next_index.unwrap_or(1);
    while started.elapsed() < Duration::from_secs(30) {
        let len = (next as usize * 7919) % 6000;
        wal.append(next, next, 1, payload(next, next, 1, next, len))
            .expect("child append");
        next += 1;
    }
    drop(wal);
    let _ = printer.join();
}

#[test]
fn kill_child_mid_append() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let exe = std::env::current_exe().expect("test binary path");
    let mut acked_max = 0u64;
    for round in 0..20u64 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let spawned = Instant::now();
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wanted_acks = 20 + round * 37 % 400;
        let mut acks = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks < wanted_acks && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(index) = line.strip_prefix("ACK ") {
                let index: u64 = index.parse().expect("acked index");
                assert!(
                    index >= acked_max || acks > 0,
                    "round {round}: ack {index} below {acked_max}"
                );
                acked_max = acked_max.max(index);
                acks += 1;
            }
        }
        assert!(acks > 0, "round {round}: child acknowledged nothing");
        eprintln!("round {round}: {acks} acks after {:?}", spawned.elapsed());
        child.kill().expect("SIGKILL child");
        // Acks already in the pipe were durable before the kill, too.
        for line in lines.map_while(Result::ok) {
            if let Some(index) = line.strip_prefix("ACK ") {
                acked_max = acked_max.max(index.parse().expect("acked index"));
            }
        }
        let status = child.wait().expect("reap child");
        assert!(!status.success(), "round {round}: child exited by itself");

        let reopen_started = Instant::now();
        let (wal, recovery) = Wal::open(dir.path(), config()).expect("reopen after kill");
        eprintln!(
            "round {round}: acked {acked_max}, reopen {:?}, last {:?}",
            reopen_started.elapsed(),
            recovery.last
        );
        assert!(recovery.damaged.is_empty(), "round {round}: {recovery:?}");
        let last = recovery.last.expect("entries survive").index;
        assert!(
            last >= acked_max,
            "round {round}: acknowledged {acked_max}, recovered up to {last}"
        );
        // Every acknowledged entry reads back intact (sampled densely near
        // the tail, where a crash could hurt).
        let first = wal.first_index().expect("first index");
        let mut index = acked_max.saturating_sub(3000).max(first);
        while index <= acked_max {
            let batches = wal
                .read(index..=acked_max, 1 << 20)
                .expect("read acknowledged");
            for stored in &batches {
                let batch = decode(stored).expect("intact payload");
                assert_eq!(batch.first, index, "round {round}");
                index = batch.last + 1;
            }
        }
        // Keep the log short, as an engine taking snapshots would.
        wal.compact(acked_max.saturating_sub(3000))
            .expect("compact");
        wal.shutdown().expect("shutdown");
    }
    assert!(
        acked_max > 1000,
        "children acknowledged only {acked_max} entries"
    );
}
