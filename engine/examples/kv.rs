//! A replicated key-value store on Barge: one process per node (flags: `--clients` and
//! [`NodeConfig::FLAGS_USAGE`]), clients on TCP, one request line and one answer line each,
//! answered in order.
//!
//! ```text
//! barge-loadgen certs --nodes 3 --out /tmp/kv-certs
//! kv --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!    --clients 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003 \
//!    --data-dir /tmp/kv1 --certs /tmp/kv-certs          # and likewise --id 2, --id 3
//! ```
//!
//! `PUT k v` → `OK`; `GET k` → `OK v` | `NONE` (linearizable: `read_index`, then the local map);
//! `CAS k old new` → `OK` | `MISMATCH`; `DEL k` → `OK 1` | `OK 0`; `STATUS` → `OK`
//! `Metrics::summary` `state= log=` (FNV-1a of the map and of every applied entry);
//! `LEARNER id`, `VOTERS a,b,c` → `OK`. Failures: `REDIRECT addr`, `FAIL reason` (not applied),
//! `MAYBE reason` (may have been: [`NodeError::may_have_applied`]). A fatal node error (a
//! poisoned log under `--disk-faults`, a refused start) exits with status 3; SIGTERM and SIGINT
//! stop the node gracefully.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use barge::core::{Entry, LogIndex, NodeId};
use barge::node::{Node, NodeConfig, NodeError, StateMachine};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: kv --clients ID=HOST:PORT,.. (TCP client addresses) and node flags:";
const REQUESTS: &str = "requests: PUT k v | GET k | CAS k old new | DEL k | STATUS | LEARNER id \
| VOTERS a,b,c";
const KEY_BYTES_MAX: usize = 256;
const VALUE_BYTES_MAX: usize = 4096;
const LINE_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + KEY_BYTES_MAX + 16;
const CONNECTIONS_MAX: usize = 256;
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// 64-bit FNV-1a of `bytes`, continuing from `hash`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    let step = |hash: u64, byte: &u8| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
    bytes.iter().fold(hash, step)
}

/// The replicated map; `log` hashes each applied (index, payload), whose last index is
/// `applied`; all three travel in snapshots.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) map: BTreeMap<String, String>,
    pub(crate) log: u64,
    pub(crate) applied: u64,
}

/// Entries are the client's words, joined by one space.
pub(crate) struct Kv(pub(crate) Arc<Mutex<State>>);

impl StateMachine for Kv {
    fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>) {
        let kv = &mut *self.0.lock();
        for entry in entries {
            kv.applied = entry.id.index.0;
            kv.log = fnv(fnv(kv.log, &kv.applied.to_le_bytes()), &entry.payload);
            let text = std::str::from_utf8(&entry.payload).unwrap_or_default();
            let response = match text.split(' ').collect::<Vec<_>>()[..] {
                ["CAS", key, old, _] if kv.map.get(key).is_none_or(|now| now != old) => "MISMATCH",
                ["PUT", key, value] | ["CAS", key, _, value] => {
                    kv.map.insert(key.into(), value.into());
                    "OK"
                }
                ["DEL", key] => kv.map.remove(key).map_or("OK 0", |_| "OK 1"),
                _ => "FAIL invalid entry",
            };
            responses.push(Bytes::from_static(response.as_bytes()));
        }
    }
    fn snapshot(&mut self) -> Result<Bytes, String> {
        let kv = &*self.0.lock();
        let snapshot = serde_json::to_vec(&(kv.log, kv.applied, &kv.map));
        snapshot.map(Bytes::from).map_err(|error| error.to_string())
    }
    fn restore(&mut self, snapshot: Bytes) -> Result<(), String> {
        let (log, applied, map) =
            serde_json::from_slice(&snapshot).map_err(|error| error.to_string())?;
        *self.0.lock() = State { map, log, applied };
        Ok(())
    }
}

/// What every client connection shares.
struct Server {
    node: Node,
    kv: Arc<Mutex<State>>,
    clients: BTreeMap<NodeId, std::net::SocketAddr>,
}

impl Server {
    /// The answer to one request, or the error that stands for it.
    async fn answer(&self, words: &[&str]) -> Result<String, NodeError> {
        // LEARNER and VOTERS name nodes that have a client address.
        let ids = words.get(1).map_or("", |ids| ids).split(',');
        let ids: Option<BTreeSet<_>> = ids.map(|id| id.parse().ok().map(NodeId)).collect();
        let ids = ids.filter(|ids| ids.iter().all(|id| self.clients.contains_key(id)));
        match (words, ids) {
            (["GET", key], _) => {
                self.node.read_index().await?;
                let value = self.kv.lock().map.get(*key).cloned();
                return Ok(value.map_or("NONE".into(), |value| format!("OK {value}")));
            }
            (["PUT", _, _] | ["CAS", _, _, _] | ["DEL", _], _) => {
                let response = self.node.propose(words.join(" ").into()).await?;
                return Ok(String::from_utf8_lossy(&response).into_owned());
            }
            (["STATUS"], _) => {
                // Metrics lag the map (so are read first): the larger applied index is
                // the map's exactly (later entries are the engine's no-ops and configurations).
                let (mut metrics, kv) = (self.node.metrics(), self.kv.lock());
                metrics.applied_index = metrics.applied_index.max(LogIndex(kv.applied));
                metrics.commit_index = metrics.commit_index.max(metrics.applied_index);
                let map = serde_json::to_vec(&kv.map).unwrap_or_default(); // strings: cannot fail
                let (state, log) = (fnv(0xcbf2_9ce4_8422_2325, &map), kv.log);
                let summary = metrics.summary();
                return Ok(format!("OK {summary} state={state:016x} log={log:016x}"));
            }
            (["LEARNER", _], Some(learners)) => {
                for learner in learners {
                    self.node.add_learner(learner).await?;
                }
            }
            (["VOTERS", _], Some(voters)) => {
                let learners = &self.node.metrics().membership.learners - &voters;
                self.node.change_membership(voters, learners).await?;
            }
            _ => return Ok(format!("FAIL invalid request; {REQUESTS}")),
        }
        Ok("OK".into())
    }

    /// The answer line to one request line.
    async fn reply(&self, text: &str) -> String {
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let too_long = words.get(1).is_some_and(|key| key.len() > KEY_BYTES_MAX)
            || words.iter().any(|word| word.len() > VALUE_BYTES_MAX);
        if too_long {
            return format!("FAIL invalid: key/value over {KEY_BYTES_MAX}/{VALUE_BYTES_MAX} bytes");
        }
        if let Some(error) = self.node.failure().filter(|_| words != ["STATUS"]) {
            return format!("FAIL node stopped: {error}");
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, self.answer(&words)).await {
            Err(_) => format!("MAYBE no outcome within {REQUEST_TIMEOUT:?}"),
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) if error.may_have_applied() => format!("MAYBE {error}"),
            Ok(Err(error)) => match error.leader_hint().and_then(|id| self.clients.get(&id)) {
                Some(leader) => format!("REDIRECT {leader}"),
                None => format!("FAIL {error}"),
            },
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (mut stream, mut line) = (BufReader::new(stream), Vec::new());
        loop {
            line.clear();
            // At most one byte more than a line may hold: memory stays bounded.
            let mut bounded = (&mut stream).take(LINE_BYTES_MAX as u64 + 1);
            let read = bounded.read_until(b'\n', &mut line).await?;
            let reply = match std::str::from_utf8(&line) {
                _ if read == 0 => return Ok(()),
                // The rest of the line cannot be told from a new request: hang up.
                _ if read > LINE_BYTES_MAX && !line.ends_with(b"\n") => break,
                Ok(text) => self.reply(text).await,
                Err(_) => "FAIL invalid: not UTF-8".to_owned(),
            };
            stream.write_all(format!("{reply}\n").as_bytes()).await?;
        }
        let reply = format!("FAIL invalid: line longer than {LINE_BYTES_MAX} bytes\n");
        stream.write_all(reply.as_bytes()).await
    }
}

/// The node failed (or could not start on its data directory): say why and exit with status 3,
/// which the chaos tool reads as a fail-stop.
fn fail_stop(id: NodeId, error: &dyn std::fmt::Display) -> ! {
    eprintln!("kv node {id} failed: {error}");
    std::process::exit(3)
}

#[tokio::main]
async fn main() -> Result<()> {
    run(std::env::args().skip(1).collect()).await
}

/// The whole program, from its arguments (the tests run it this way). Exits the process with
/// status 3 when the node fails or refuses to start.
pub async fn run(args: Vec<String>) -> Result<()> {
    let usage = format!("{USAGE}\n{}\n{REQUESTS}", NodeConfig::FLAGS_USAGE);
    if args.is_empty() || args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{usage}");
        return Ok(());
    }
    let parsed = NodeConfig::from_args(&args, ["--clients"]);
    let (config, [clients]) = parsed.map_err(|error| anyhow::anyhow!("{error}\n{usage}"))?;
    let (id, clients) = (config.id, NodeConfig::parse_addresses(clients));
    let clients = clients.context("--clients")?;
    let client = clients.get(&id).copied();
    let client = client.context("--clients has no address for this node")?;
    // Registered first: a SIGTERM while starting still ends in a clean stop.
    let mut terminate = signal(SignalKind::terminate())?;
    let kv = Arc::default();
    let started = Node::start(config, Kv(Arc::clone(&kv))).await;
    let node = started.unwrap_or_else(|error| fail_stop(id, &error));
    let server = Arc::new(Server { node, kv, clients });
    let listener = tokio::net::TcpListener::bind(client).await;
    let listener = listener.context("binding --clients")?;
    println!("kv node {id} serving clients on {client}");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            error = server.node.failed() => fail_stop(id, &error),
            Ok((mut stream, _)) = listener.accept() => {
                // Each connection holds a clone of `server`, so this counts them.
                if Arc::strong_count(&server) > CONNECTIONS_MAX {
                    let _ = stream.write_all(b"FAIL too many connections\n").await;
                    continue;
                }
                let server = Arc::clone(&server);
                tokio::spawn(async move { server.serve(stream).await });
            }
        }
    }
    Ok(server.node.shutdown().await?)
}
