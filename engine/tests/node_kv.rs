//! Smoke test of `examples/kv.rs` as three separate processes on loopback,
//! driven through its line protocol: writes, linearizable reads on every
//! node, compare-and-set, delete, leader redirects, bad client input, a
//! killed leader process and its restart on the same data directory.
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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
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
            Ok(reply) if !reply.starts_with("ERR") => return (target, reply),
            // No leader yet, an unknown outcome, or the node is down.
            _ => {}
        }
        // Try the next live node after a pause.
        let ids: Vec<u64> = processes.children.keys().copied().collect();
        let position = ids.iter().position(|id| *id == target).unwrap_or(0);
        target = ids[(position + 1) % ids.len()];
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port_pairs(count: u64) -> BTreeMap<u64, (SocketAddr, SocketAddr)> {
    // Bind, read the port, release: the process binds it again right after.
    (1..=count)
        .map(|id| {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addresses = (
                udp.local_addr().expect("udp"),
                tcp.local_addr().expect("tcp"),
            );
            (id, addresses)
        })
        .collect()
}

#[test]
fn kv_three_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
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
        let data_dir = dir.path().join(format!("kv{id}"));
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
        processes
            .args
            .insert(id, args.iter().map(|arg| (*arg).to_owned()).collect());
        processes.spawn(id);
    }

    // Writes on a follower are redirected to the leader; reads are served
    // by every node and see the acknowledged write.
    let (leader, reply) = command(&processes, 1, "PUT colour blue");
    assert_eq!(reply, "OK");
    for id in 1..=3 {
        let reply = send(processes.clients[&id], b"GET colour").expect("get");
        assert_eq!(reply, "OK blue", "node {id}");
    }
    let follower = if leader == 1 { 2 } else { 1 };
    let reply = send(processes.clients[&follower], b"PUT colour red").expect("put");
    assert_eq!(reply, format!("REDIRECT {}", processes.clients[&leader]));

    // Compare-and-set and delete.
    let leader_client = processes.clients[&leader];
    let exchange = |line: &str| send(leader_client, line.as_bytes()).expect("reply");
    assert_eq!(exchange("CAS colour red green"), "ERR cas mismatch");
    assert_eq!(exchange("CAS colour blue green"), "OK");
    assert_eq!(exchange("GET colour"), "OK green");
    assert_eq!(exchange("DEL colour"), "OK 1");
    assert_eq!(exchange("DEL colour"), "OK 0");
    assert_eq!(exchange("GET colour"), "NONE");

    // Bad input gets a clear error, never a crash.
    assert!(exchange("FLY away").starts_with("ERR invalid command"));
    assert!(exchange("PUT onlykey").starts_with("ERR invalid command"));
    assert!(exchange(&format!("PUT {} v", "k".repeat(300))).starts_with("ERR invalid"));
    assert!(exchange(&format!("PUT k {}", "v".repeat(5000))).starts_with("ERR invalid"));
    let reply = send(leader_client, &[b'G', b'E', b'T', b' ', 0xff, 0xfe]).expect("reply");
    assert_eq!(reply, "ERR invalid: not UTF-8");
    // An endless line is cut off with an error and the connection closed.
    let mut stream = TcpStream::connect(leader_client).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.starts_with("ERR invalid: line longer than"),
        "{reply:?}"
    );
    // Several commands on one connection are answered in order.
    let mut stream = TcpStream::connect(leader_client).expect("connect");
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
    assert_eq!(replies, ["OK", "OK", "OK 1", "OK 2"]);

    // Kill the leader process outright: the survivors elect a leader and
    // keep every acknowledged write.
    processes.kill(leader);
    let survivor = *processes.children.keys().next().expect("a survivor");
    let (new_leader, reply) = command(&processes, survivor, "PUT after kill");
    assert_eq!(reply, "OK");
    assert_ne!(new_leader, leader);
    for id in processes.children.keys() {
        let reply = send(processes.clients[id], b"GET a").expect("get");
        assert_eq!(reply, "OK 1", "node {id}");
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
    processes.terminate();

    // A restart that finds an empty data directory is refused, saying why.
    let mut args = processes.args[&3].clone();
    let position = args
        .iter()
        .position(|arg| arg == "--data-dir")
        .expect("flag");
    args[position + 1] = dir.path().join("wiped").to_string_lossy().into_owned();
    args.extend(["--start".to_owned(), "existing".to_owned()]);
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
            panic!("a refused start did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no node state"), "{stderr}");
}
