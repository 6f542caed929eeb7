//! `examples/kv.rs` as three separate processes on loopback, driven
//! through its line protocol (v2): writes, linearizable reads on every node,
//! compare-and-set, delete, leader redirects, bad client input, STATUS,
//! membership changes, equal state and log hashes on every node, a killed
//! leader process restarted on its data directory, and a node whose log
//! fails under `--disk-faults` exiting with status 3 and rejoining when
//! restarted without it.
//!
//! The child processes run the example's own code: this test binary
//! includes `examples/kv.rs` as a module and re-executes itself with the
//! ignored test `kv_process` as entry point, the example's arguments in
//! `BARGE_KV_ARGS`. That works under any cargo invocation (`cargo test
//! --test node_kv` does not build examples, and a nested `cargo build`
//! would race other builds of the shared target directory).

#[allow(dead_code)]
#[path = "../examples/kv.rs"]
mod kv;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use barge_net::{ClusterId, PeerId};

const ARGS_VARIABLE: &str = "BARGE_KV_ARGS";
const WAIT: Duration = Duration::from_secs(20);

/// Entry point of a child process (not a test of its own: without
/// `BARGE_KV_ARGS` it returns at once).
#[test]
#[ignore = "entry point of the kv child processes of kv_three_processes"]
fn kv_process() {
    let Ok(args) = std::env::var(ARGS_VARIABLE) else {
        return;
    };
    let args = args.split('\n').map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(error) = runtime.block_on(kv::run(args)) {
        eprintln!("kv process failed: {error:#}");
        std::process::exit(1);
    }
}

/// The three processes; killed on drop so a failed test leaves none behind.
struct Processes {
    args: BTreeMap<u64, Vec<String>>,
    children: BTreeMap<u64, Child>,
    clients: BTreeMap<u64, SocketAddr>,
}

impl Processes {
    fn spawn(&mut self, id: u64) {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["kv_process", "--exact", "--ignored", "--nocapture"])
            .env(ARGS_VARIABLE, self.args[&id].join("\n"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kv process");
        self.children.insert(id, child);
    }

    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Stops every process with SIGTERM and checks each exits cleanly.
    fn terminate(&mut self) {
        for child in self.children.values() {
            let status = Command::new("kill")
                .arg(child.id().to_string())
                .status()
                .expect("kill command");
            assert!(status.success());
        }
        let deadline = Instant::now() + WAIT;
        while let Some((&id, child)) = self.children.iter_mut().next() {
            // Still in the map while waited for: a failed assertion leaves
            // it to `Drop`, which kills it.
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "node {id} exited with {status}");
                self.children.remove(&id);
                continue;
            }
            assert!(Instant::now() < deadline, "node {id} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn id_of(&self, client: SocketAddr) -> u64 {
        *self
            .clients
            .iter()
            .find(|(_, address)| **address == client)
            .expect("a known client address")
            .0
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send(address: SocketAddr, line: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(line)?;
    stream.write_all(b"\n")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

/// Sends `line` (an idempotent command: it may be retried after an outcome
/// was unknown) to `start`, following redirects, retrying on errors and on
/// unreachable nodes until `WAIT` passes. Returns who answered and how.
fn command(processes: &Processes, start: u64, line: &str) -> (u64, String) {
    let deadline = Instant::now() + WAIT;
    let mut target = start;
    loop {
        assert!(
            Instant::now() < deadline,
            "no answer to {line:?} within {WAIT:?}"
        );
        match send(processes.clients[&target], line.as_bytes()) {
            Ok(reply) if reply.starts_with("REDIRECT ") => {
                let address = reply["REDIRECT ".len()..].parse().expect("an address");
                target = processes.id_of(address);
                continue;
            }
            Ok(reply)
                if !reply.is_empty()
                    && !reply.starts_with("FAIL")
                    && !reply.starts_with("MAYBE") =>
            {
                return (target, reply)
            }
            // No leader yet, an unknown outcome, the node is down, or the
            // connection closed without an answer (seen once, unexplained,
            // right after another node's fail-stop: an unknown outcome too).
            _ => {}
        }
        // Try the next live node after a pause.
        let ids: Vec<u64> = processes.children.keys().copied().collect();
        let position = ids.iter().position(|id| *id == target).unwrap_or(0);
        target = ids[(position + 1) % ids.len()];
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The answer of node `id` itself to `line`, a read, retried while it is a
/// failure shape (a read is refused while leadership settles).
fn read_on(processes: &Processes, id: u64, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = send(processes.clients[&id], line.as_bytes());
        let failed = |reply: &String| {
            ["REDIRECT", "FAIL", "MAYBE"]
                .iter()
                .any(|shape| reply.starts_with(shape))
        };
        match reply {
            Ok(reply) if !failed(&reply) => return reply,
            other => assert!(Instant::now() < deadline, "node {id}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port_pairs(count: u64) -> BTreeMap<u64, (SocketAddr, SocketAddr)> {
    // Outside the ephemeral range: nothing else takes a port while a node
    // is down between restarts.
    (1..=count)
        .map(|id| {
            let udp = barge_net::ports::loopback_address().expect("free UDP port");
            let tcp = barge_net::ports::loopback_address().expect("free TCP port");
            (id, (udp, tcp))
        })
        .collect()
}

/// Starts three kv processes on free loopback ports, certificates and data
/// directories under `dir`; `extra` adds arguments for one node.
fn start_cluster(dir: &Path, extra: Option<(u64, &[&str])>) -> Processes {
    let certs = dir.join("certs");
    let ids: Vec<PeerId> = (1..=3).map(PeerId).collect();
    barge_net::tls::write_dev_cluster(&certs, ClusterId(0xb4), &ids).expect("certificates");
    let addresses = free_port_pairs(3);
    let list = |pick: fn(&(SocketAddr, SocketAddr)) -> SocketAddr| {
        let items: Vec<String> = addresses
            .iter()
            .map(|(id, pair)| format!("{id}={}", pick(pair)))
            .collect();
        items.join(",")
    };
    let (peers, clients) = (list(|pair| pair.0), list(|pair| pair.1));
    let mut processes = Processes {
        args: BTreeMap::new(),
        children: BTreeMap::new(),
        clients: addresses.iter().map(|(id, pair)| (*id, pair.1)).collect(),
    };
    for id in 1..=3u64 {
        let data_dir = dir.join(format!("kv{id}"));
        let args = [
            "--id",
            &id.to_string(),
            "--peers",
            &peers,
            "--clients",
            &clients,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--certs",
            &certs.to_string_lossy(),
        ];
        let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        if let Some((_, more)) = extra.filter(|(node, _)| *node == id) {
            args.extend(more.iter().map(|arg| (*arg).to_owned()));
        }
        processes.args.insert(id, args);
        processes.spawn(id);
    }
    processes
}

/// The `key=value` fields of a STATUS answer.
fn status(address: SocketAddr) -> Option<BTreeMap<String, String>> {
    let reply = send(address, b"STATUS").ok()?;
    let fields = reply.strip_prefix("OK ")?.split(' ');
    let pairs = fields.filter_map(|field| field.split_once('='));
    Some(pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

/// Waits until every running node reports the same `applied` index, at
/// least `applied_min`, and checks they then agree on the state and log
/// hashes. Returns the common STATUS fields.
fn converged(processes: &Processes, applied_min: u64) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<BTreeMap<String, String>> = processes
            .children
            .keys()
            .filter_map(|id| status(processes.clients[id]))
            .collect();
        let applied: BTreeSet<&str> = statuses.iter().map(|s| s["applied"].as_str()).collect();
        // The membership comes from metrics published every few
        // milliseconds (and configuration entries never reach `apply`), so
        // equal `applied` alone can still show a stale configuration.
        let members: BTreeSet<(&str, &str)> = statuses
            .iter()
            .map(|s| (s["voters"].as_str(), s["learners"].as_str()))
            .collect();
        let done = statuses.len() == processes.children.len()
            && applied.len() == 1
            && members.len() == 1
            && statuses[0]["applied"].parse::<u64>().expect("a number") >= applied_min;
        if done {
            for status in &statuses[1..] {
                assert_eq!(status["state"], statuses[0]["state"], "{statuses:?}");
                assert_eq!(status["log"], statuses[0]["log"], "{statuses:?}");
            }
            return statuses[0].clone();
        }
        assert!(Instant::now() < deadline, "never converged: {statuses:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `id`'s STATUS satisfies `check`.
fn wait_status(processes: &Processes, id: u64, check: impl Fn(&BTreeMap<String, String>) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let current = status(processes.clients[&id]);
        if current.as_ref().is_some_and(&check) {
            return;
        }
        assert!(Instant::now() < deadline, "node {id}: {current:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state machine alone: responses, and a snapshot restored into a new
/// one carries the map, the log hash and the applied index, so a node that
/// installs it goes on hashing exactly like the others.
#[test]
fn kv_snapshots_carry_the_log_hash() {
    use barge::core::{Entry, EntryKind, LogId, LogIndex, Term};
    use barge::node::StateMachine;
    let entry = |index: u64, payload: &'static str| Entry {
        id: LogId {
            term: Term(2),
            index: LogIndex(index),
        },
        kind: EntryKind::Normal,
        payload: payload.into(),
    };
    let mut first = kv::Kv(Default::default());
    let mut responses = Vec::new();
    let batch = [
        entry(3, "PUT a 1"),
        entry(4, "CAS a 1 2"),
        entry(5, "CAS a 1 3"),
    ];
    first.apply(&batch, &mut responses);
    first.apply(
        &[entry(7, "DEL b"), entry(8, "PUT b x"), entry(9, "junk")],
        &mut responses,
    );
    let expected = ["OK", "OK", "MISMATCH", "OK 0", "OK", "FAIL invalid entry"];
    assert_eq!(
        responses,
        expected.map(|text| bytes::Bytes::from_static(text.as_bytes()))
    );
    let snapshot = first.snapshot().expect("snapshot");
    let mut second = kv::Kv(Default::default());
    second.restore(snapshot.clone()).expect("restore");
    let later = [entry(10, "DEL a")];
    first.apply(&later, &mut responses);
    second.apply(&later, &mut responses);
    let (first, second) = (first.0.lock(), second.0.lock());
    assert_eq!(second.map, first.map);
    assert_eq!((second.log, second.applied), (first.log, 10));
    assert_ne!(first.log, 0);
    let bad = kv::Kv(Default::default()).restore(snapshot.slice(..snapshot.len() - 3));
    assert!(bad.is_err(), "a cut snapshot restored");
    for broken in ["", "12 x\n", "[1, 2]", "[1, -2, {}]", "[1, 2, {\"k\": 3}]"] {
        let restored = kv::Kv(Default::default()).restore(broken.into());
        assert!(restored.is_err(), "{broken:?} restored");
    }
}

#[test]
fn kv_three_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut processes = start_cluster(dir.path(), None);

    // Reads are served by every node and see the acknowledged write.
    let (_, reply) = command(&processes, 1, "PUT colour blue");
    assert_eq!(reply, "OK");
    for id in 1..=3 {
        assert_eq!(
            read_on(&processes, id, "GET colour"),
            "OK blue",
            "node {id}"
        );
    }
    // A write on a follower is redirected to the leader. The value is the
    // one stored: should leadership have moved to that node, it applies
    // there and changes nothing; then the leader is looked up again.
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let (leader, _) = command(&processes, 1, "PUT colour blue");
        let follower = if leader == 1 { 2 } else { 1 };
        let reply = send(processes.clients[&follower], b"PUT colour blue");
        let redirect = format!("REDIRECT {}", processes.clients[&leader]);
        if reply.as_ref().is_ok_and(|reply| *reply == redirect) {
            break leader;
        }
        assert!(Instant::now() < deadline, "{reply:?}, expected {redirect}");
        std::thread::sleep(Duration::from_millis(50));
    };

    // Compare-and-set and delete, sent on to whoever leads (the answers
    // assume no write is retried after an unknown outcome: such a retry
    // needs a leader change in the middle of a request).
    let exchange = |line: &str| command(&processes, leader, line).1;
    assert_eq!(exchange("CAS colour red green"), "MISMATCH");
    assert_eq!(exchange("CAS colour blue green"), "OK");
    assert_eq!(exchange("GET colour"), "OK green");
    assert_eq!(exchange("DEL colour"), "OK 1");
    assert_eq!(exchange("DEL colour"), "OK 0");
    assert_eq!(exchange("GET colour"), "NONE");

    // Bad input gets a clear error, never a crash (any node refuses it
    // before consulting the cluster).
    let leader_client = processes.clients[&leader];
    let refused = |line: &str| send(leader_client, line.as_bytes()).expect("reply");
    assert!(refused("FLY away").starts_with("FAIL invalid"));
    assert!(refused("PUT onlykey").starts_with("FAIL invalid"));
    assert!(refused(&format!("PUT {} v", "k".repeat(300))).starts_with("FAIL invalid"));
    assert!(refused(&format!("PUT k {}", "v".repeat(5000))).starts_with("FAIL invalid"));
    let reply = send(leader_client, &[b'G', b'E', b'T', b' ', 0xff, 0xfe]).expect("reply");
    assert_eq!(reply, "FAIL invalid: not UTF-8");
    // An endless line is cut off with an error and the connection closed.
    let mut stream = TcpStream::connect(leader_client).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.starts_with("FAIL invalid: line longer than"),
        "{reply:?}"
    );
    // Several commands on one connection are answered in order (sent
    // again, following a redirect, while leadership moves: they are
    // idempotent).
    let deadline = Instant::now() + WAIT;
    let mut target = leader_client;
    loop {
        let mut stream = TcpStream::connect(target).expect("connect");
        stream
            .write_all(b"PUT a 1\nPUT b 2\nGET a\nGET b\n")
            .expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let replies: Vec<String> = BufReader::new(stream)
            .lines()
            .take(4)
            .map(|line| line.expect("line"))
            .collect();
        if replies == ["OK", "OK", "OK 1", "OK 2"] {
            break;
        }
        let settling = ["REDIRECT", "FAIL", "MAYBE"];
        let unsettled = replies.iter().any(|reply| {
            settling.iter().any(|shape| reply.starts_with(shape)) && !reply.contains("invalid")
        });
        assert!(unsettled && Instant::now() < deadline, "{replies:?}");
        if let Some(address) = replies
            .iter()
            .find_map(|reply| reply.strip_prefix("REDIRECT "))
        {
            target = address.parse().expect("an address");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Membership requests name nodes of --peers only.
    for line in ["VOTERS 1,9", "VOTERS 1,x", "VOTERS", "LEARNER 9", "LEARNER"] {
        assert!(refused(line).starts_with("FAIL invalid"), "{line}");
    }

    // STATUS: every node knows the leader and the voters, and agrees on
    // the state and log hashes once it has applied as much as the others.
    let common = converged(&processes, 1);
    assert_eq!((&*common["voters"], &*common["learners"]), ("1,2,3", "-"));
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<_> = (1..=3).map(|id| status(processes.clients[&id])).collect();
        let leaders: BTreeSet<_> = statuses
            .iter()
            .flatten()
            .map(|s| s["leader"].clone())
            .collect();
        if statuses.iter().all(Option::is_some) && leaders.len() == 1 && !leaders.contains("0") {
            for (id, fields) in (1..=3).zip(statuses.iter().flatten()) {
                assert_eq!(fields["id"], id.to_string());
                assert!(fields["term"].parse::<u64>().expect("term") >= 1);
                assert_eq!(fields["state"].len(), 16, "{fields:?}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "no common leader: {statuses:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Membership: remove a follower (of whoever leads now: a write finds
    // out), write without it, add it back as a learner and then as a
    // voter; it catches up and every node agrees.
    let (leader, _) = command(&processes, leader, "PUT a 1");
    let removed = if leader == 1 { 2 } else { 1 };
    let others: Vec<String> = (1..=3)
        .filter(|id| *id != removed)
        .map(|id| id.to_string())
        .collect();
    let others = others.join(",");
    assert_eq!(
        command(&processes, leader, &format!("VOTERS {others}")).1,
        "OK"
    );
    wait_status(&processes, leader, |fields| fields["voters"] == others);
    assert_eq!(command(&processes, leader, "PUT during removal").1, "OK");
    let learner = removed.to_string();
    assert_eq!(
        command(&processes, leader, &format!("LEARNER {learner}")).1,
        "OK"
    );
    wait_status(&processes, leader, |fields| fields["learners"] == learner);
    assert_eq!(command(&processes, leader, "VOTERS 1,2,3").1, "OK");
    wait_status(&processes, leader, |fields| {
        fields["voters"] == "1,2,3" && fields["learners"] == "-"
    });
    let common = converged(&processes, 1);
    assert_eq!(common["voters"], "1,2,3");
    assert_eq!(read_on(&processes, removed, "GET during"), "OK removal");

    // Kill the leader process outright: the survivors elect a leader and
    // keep every acknowledged write.
    let (leader, _) = command(&processes, leader, "PUT a 1");
    processes.kill(leader);
    let survivor = *processes.children.keys().next().expect("a survivor");
    let (new_leader, reply) = command(&processes, survivor, "PUT after kill");
    assert_eq!(reply, "OK");
    assert_ne!(new_leader, leader);
    for id in processes.children.keys() {
        assert_eq!(read_on(&processes, *id, "GET a"), "OK 1", "node {id}");
    }

    // Restarted on its data directory, the old leader catches up (and its
    // own answer is awaited, not another node's).
    let args = processes.args.get_mut(&leader).expect("arguments");
    args.extend(["--start".to_owned(), "existing".to_owned()]);
    processes.spawn(leader);
    let deadline = Instant::now() + WAIT;
    loop {
        match send(processes.clients[&leader], b"GET after") {
            Ok(reply) if reply == "OK kill" => break,
            Ok(reply) if reply.starts_with("OK") || reply == "NONE" => {
                panic!("stale read after restart: {reply}")
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {leader} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The restarted node replayed its log: same state and log hashes.
    converged(&processes, 1);
    processes.terminate();

    // A restart that finds an empty data directory is refused, saying why,
    // as a fail-stop (status 3); bad flags are usage errors (status 1).
    let mut args = processes.args[&3].clone();
    let position = args
        .iter()
        .position(|arg| arg == "--data-dir")
        .expect("flag");
    args[position + 1] = dir.path().join("wiped").to_string_lossy().into_owned();
    // Node 3 may carry `--start existing` already (if it was the restarted
    // leader); a flag given twice is a usage error.
    match args.iter().position(|arg| arg == "--start") {
        Some(position) => args[position + 1] = "existing".to_owned(),
        None => args.extend(["--start".to_owned(), "existing".to_owned()]),
    }
    let (code, stderr) = run_to_exit(&args);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("holds no node state"), "{stderr}");
    for (flag, value, message) in [
        ("--disk-faults", "fsync-eio-after=x", "not a whole number"),
        ("--start", "old", "expected new, existing or join"),
        ("--peers", "1=127.0.0.1", "bad address"),
        ("--bogus", "1", "unknown flags"),
    ] {
        let mut args = processes.args[&3].clone();
        match args.iter().position(|arg| arg == flag) {
            Some(position) => args[position + 1] = value.to_owned(),
            None => args.extend([flag.to_owned(), value.to_owned()]),
        }
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(1), "{flag} {value}: {stderr}");
        assert!(stderr.contains(message), "{flag} {value}: {stderr}");
    }
}

/// Runs a kv process that is expected to exit by itself; its exit code and
/// standard error.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["kv_process", "--exact", "--ignored", "--nocapture"])
        .env(ARGS_VARIABLE, args.join("\n"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kv process");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn kv_disk_faults_stop_a_node_that_rejoins_without_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults: &[&str] = &["--disk-faults", "fsync-eio-after=40"];
    let mut processes = start_cluster(dir.path(), Some((3, faults)));
    let healthy_args = processes.args[&3][..processes.args[&3].len() - 2].to_vec();

    // Writes reach node 3's log until one of its fdatasyncs fails: the node
    // stops at once and the process exits with status 3.
    let deadline = Instant::now() + WAIT;
    let mut writes = 0;
    let status = loop {
        let node = processes.children.get_mut(&3).expect("node 3");
        if let Some(status) = node.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "node 3 never failed");
        let (_, reply) = command(&processes, 1, &format!("PUT key{writes} {writes}"));
        assert_eq!(reply, "OK");
        writes += 1;
    };
    assert_eq!(status.code(), Some(3), "{status}");
    processes.children.remove(&3);
    // The other two keep the cluster going.
    let (_, reply) = command(&processes, 1, "PUT while-down yes");
    assert_eq!(reply, "OK");

    // Restarted on the same directory without faults, it rejoins.
    processes.args.insert(3, healthy_args);
    processes
        .args
        .get_mut(&3)
        .expect("arguments")
        .extend(["--start".into(), "existing".into()]);
    processes.spawn(3);
    converged(&processes, writes);
    assert_eq!(read_on(&processes, 3, "GET while-down"), "OK yes");
    processes.terminate();
}
