//! A replicated key-value store on Barge: one process per node, clients on
//! TCP, one request line and one answer line each, answered in order.
//!
//! ```text
//! barge-loadgen certs --nodes 3 --out /tmp/kv-certs
//! kv --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!    --clients 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003 \
//!    --data-dir /tmp/kv1 --certs /tmp/kv-certs          # and likewise --id 2, --id 3
//! ```
//!
//! Requests (see USAGE) and answers: `PUT k v` → `OK`; `GET k` → `OK v` |
//! `NONE` (linearizable: `read_index`, then the local map); `CAS k old new`
//! → `OK` | `MISMATCH`; `DEL k` → `OK 1` | `OK 0`; `STATUS` → `OK id= leader=
//! term= commit= applied= voters= learners= state= log=` (FNV-1a of the map
//! and of every applied entry); `LEARNER id`, `VOTERS a,b,c` → `OK`.
//!
//! Failures say whether a write may have happened. `REDIRECT addr`, `FAIL
//! reason`: not applied (`NotLeader`, `Overloaded`, `Invalid` and
//! `ChangeInProgress` refuse a request before anything is appended; a failed
//! node is not asked). `MAYBE reason`: unknown (`ProposalDropped` comes after
//! an append; `Storage` and `Stopped` fail appended proposals too; timeouts).
//! A fatal node error (a poisoned log under `--disk-faults`, a refused start)
//! is printed and exits the process with status 3; SIGTERM and SIGINT stop
//! it gracefully.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use barge::core::{Entry, NodeId};
use barge::node::{Node, NodeConfig, NodeError, StateMachine};
use barge_wal::Backend;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: kv --id N --peers ID=HOST:PORT,.. --clients ID=HOST:PORT,.. \
--data-dir DIR --certs DIR [--listen HOST:PORT] [--start new|existing|join] [--disk-faults SPEC]
  --peers: QUIC addresses other nodes dial; --listen: where this node binds (default: --peers)
  --clients: TCP client addresses; --certs: from `barge-loadgen certs`; --data-dir: log, snapshots
  --start: new (default) | existing (refuses an empty directory) | join (a node added later)
  --disk-faults: comma-separated fsync-eio-after=N|write-eio-after=N|enospc-after=N|read-eio-after=N
Requests: PUT k v | GET k | CAS k old new | DEL k | STATUS | LEARNER id | VOTERS a,b,c";
const KEY_BYTES_MAX: usize = 256;
const VALUE_BYTES_MAX: usize = 4096;
const LINE_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + KEY_BYTES_MAX + 16;
const CONNECTIONS_MAX: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// 64-bit FNV-1a of `bytes`, continuing from `hash`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    let step = |hash: u64, byte: &u8| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
    bytes.iter().fold(hash, step)
}

/// The replicated map; `log` hashes each applied (index, payload), whose
/// last index is `applied`; all three travel in snapshots.
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
        let mut kv = self.0.lock();
        for entry in entries {
            kv.applied = entry.id.index.0;
            kv.log = fnv(fnv(kv.log, &kv.applied.to_le_bytes()), &entry.payload);
            let text = std::str::from_utf8(&entry.payload).unwrap_or_default();
            let (map, words) = (&mut kv.map, text.split(' ').collect::<Vec<_>>());
            let (response, write) = match words[..] {
                ["PUT", key, value] => ("OK", Some((key, value))),
                ["CAS", key, old, new] if map.get(key).is_some_and(|v| v == old) => {
                    ("OK", Some((key, new)))
                }
                ["CAS", ..] => ("MISMATCH", None),
                ["DEL", key] => (map.remove(key).map_or("OK 0", |_| "OK 1"), None),
                _ => ("FAIL invalid entry", None),
            };
            if let Some((key, value)) = write {
                map.insert(key.into(), value.into());
            }
            responses.push(Bytes::from_static(response.as_bytes()));
        }
    }
    fn snapshot(&mut self) -> Result<Bytes, String> {
        let kv = self.0.lock();
        let mut text = format!("{} {}\n", kv.log, kv.applied);
        for (key, value) in &kv.map {
            let _ = writeln!(text, "{key} {value}"); // writing to a String cannot fail
        }
        Ok(text.into())
    }
    fn restore(&mut self, snapshot: Bytes) -> Result<(), String> {
        let text = std::str::from_utf8(&snapshot).map_err(|error| error.to_string())?;
        let mut lines = text
            .lines()
            .map(|line| line.split_once(' ').ok_or("bad line"));
        let (log, applied) = lines.next().ok_or("empty snapshot")??;
        let pairs = lines.map(|pair| pair.map(|(key, value)| (key.into(), value.into())));
        *self.0.lock() = State {
            map: pairs.collect::<Result<_, _>>()?,
            log: log.parse().map_err(|_| "bad log hash")?,
            applied: applied.parse().map_err(|_| "bad applied index")?,
        };
        Ok(())
    }
}

/// What every client connection shares.
struct Server {
    node: Node,
    kv: Arc<Mutex<State>>,
    clients: BTreeMap<NodeId, SocketAddr>,
    /// The nodes of --peers, which LEARNER and VOTERS may name.
    members: BTreeSet<NodeId>,
}

impl Server {
    async fn answer(&self, words: &[&str]) -> Result<String, NodeError> {
        let ids = words.get(1).map_or("", |ids| ids).split(',');
        let ids: Option<BTreeSet<_>> = ids.map(|id| id.parse().map(NodeId).ok()).collect();
        let ids = ids.filter(|ids| !ids.is_empty() && ids.is_subset(&self.members));
        Ok(match (words, ids) {
            (["GET", key], _) => {
                self.node.read_index().await?;
                let value = self.kv.lock().map.get(*key).cloned();
                value.map_or("NONE".into(), |value| format!("OK {value}"))
            }
            (["PUT", _, _] | ["CAS", _, _, _] | ["DEL", _], _) => {
                let response = self.node.propose(words.join(" ").into()).await?;
                String::from_utf8_lossy(&response).into_owned()
            }
            (["LEARNER", _], Some(learners)) => {
                for learner in learners {
                    self.node.add_learner(learner).await?;
                }
                "OK".into()
            }
            (["VOTERS", _], Some(voters)) => {
                let learners = &self.node.metrics().membership.learners - &voters;
                self.node.change_membership(voters, learners).await?;
                "OK".into()
            }
            (["STATUS"], _) => self.status(),
            _ => format!(
                "FAIL invalid request; {}",
                USAGE.lines().last().unwrap_or_default()
            ),
        })
    }

    /// Metrics are read first: they lag the map, so the larger applied
    /// index is one the map reflects exactly (entries after the last one
    /// `apply` saw are the engine's no-ops and configurations).
    fn status(&self) -> String {
        let metrics = self.node.metrics();
        let kv = self.kv.lock();
        let pairs = kv
            .map
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), b" ", v.as_bytes(), b"\n"]);
        let state = pairs.fold(0xcbf2_9ce4_8422_2325, fnv);
        let list = |ids: &BTreeSet<NodeId>| {
            let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
            Some(ids.join(","))
                .filter(|list| !list.is_empty())
                .unwrap_or("-".into())
        };
        let membership = &metrics.membership;
        let (voters, learners) = (list(&membership.voters), list(&membership.learners));
        let leader = metrics.leader.map_or(0, |id| id.0);
        let applied = kv.applied.max(metrics.applied_index.0);
        format!(
            "OK id={} leader={leader} term={} commit={} applied={applied} voters={voters} \
             learners={learners} state={state:016x} log={:016x}",
            metrics.id.0,
            metrics.term.0,
            metrics.commit_index.0.max(applied),
            kv.log,
        )
    }

    async fn reply(&self, text: &str) -> String {
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        if words.get(1).is_some_and(|key| key.len() > KEY_BYTES_MAX)
            || words.iter().any(|word| word.len() > VALUE_BYTES_MAX)
        {
            return format!(
                "FAIL invalid: keys up to {KEY_BYTES_MAX} bytes, values {VALUE_BYTES_MAX}"
            );
        }
        if let Some(error) = self.node.failure().filter(|_| words != ["STATUS"]) {
            return format!("FAIL node stopped: {error}");
        }
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.answer(&words)).await;
        let Ok(answer) = answer else {
            return format!("MAYBE no outcome within {REQUEST_TIMEOUT:?}");
        };
        match answer {
            Ok(answer) => answer,
            Err(NodeError::NotLeader {
                leader_hint: Some(leader),
            }) if self.clients.contains_key(&leader) => {
                format!("REDIRECT {}", self.clients[&leader])
            }
            Err(error @ (NodeError::NotLeader { .. } | NodeError::Overloaded)) => {
                format!("FAIL {error}")
            }
            Err(error @ (NodeError::Invalid(_) | NodeError::ChangeInProgress)) => {
                format!("FAIL {error}")
            }
            Err(error) => format!("MAYBE {error}"),
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let (mut reader, mut line) = (BufReader::new(read), Vec::new());
        loop {
            line.clear();
            // At most one byte more than a line may hold: memory stays bounded.
            let mut bounded = (&mut reader).take(LINE_BYTES_MAX as u64 + 1);
            if bounded.read_until(b'\n', &mut line).await? == 0 {
                return Ok(());
            }
            let reply = match std::str::from_utf8(&line) {
                // The rest of the line cannot be told from a new request: hang up.
                _ if line.len() > LINE_BYTES_MAX && line.last() != Some(&b'\n') => break,
                Ok(text) => self.reply(text).await,
                Err(_) => "FAIL invalid: not UTF-8".to_owned(),
            };
            write.write_all(format!("{reply}\n").as_bytes()).await?;
        }
        let reply = format!("FAIL invalid: line longer than {LINE_BYTES_MAX} bytes\n");
        write.write_all(reply.as_bytes()).await
    }
}

/// The node failed (or could not start on its data directory): say why
/// and exit with status 3, which the chaos tool reads as a fail-stop.
fn fail_stop(id: NodeId, error: &dyn std::fmt::Display) -> ! {
    eprintln!("kv node {id} failed: {error}");
    std::process::exit(3)
}

#[tokio::main]
async fn main() -> Result<()> {
    run(std::env::args().skip(1).collect()).await
}

/// The whole program, from its arguments (the tests run it this way). Exits
/// the process with status 3 when the node fails or refuses to start.
pub async fn run(args: Vec<String>) -> Result<()> {
    if args.is_empty() || args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    anyhow::ensure!(args.len() % 2 == 0, "every flag takes one value\n{USAGE}");
    let mut flags: HashMap<&str, &str> = args.chunks(2).map(|f| (&*f[0], &*f[1])).collect();
    let mut flag = |name| flags.remove(name).context(format!("{name} is required"));
    let id = NodeId(flag("--id")?.parse().context("--id")?);
    let mut peers = NodeConfig::parse_addresses(flag("--peers")?).context("--peers")?;
    let clients = NodeConfig::parse_addresses(flag("--clients")?).context("--clients")?;
    let (data_dir, certs) = (flag("--data-dir")?.into(), flag("--certs")?.to_owned());
    let start = flag("--start").unwrap_or("new").parse()?;
    let members = peers.keys().copied().collect();
    let own = peers
        .remove(&id)
        .context("--peers has no address for this node")?;
    let listen = flag("--listen")
        .map_or(Ok(own), str::parse)
        .context("--listen")?;
    let faults = flag("--disk-faults").ok().map(str::parse).transpose();
    let faults = faults.context("--disk-faults")?;
    anyhow::ensure!(flags.is_empty(), "unknown flags {flags:?}\n{USAGE}");
    let client = clients.get(&id).copied();
    let client = client.context("--clients has no address for this node")?;
    let mut config = NodeConfig::from_certificates(id, listen, peers, data_dir, certs.as_ref())?;
    config.start = start;
    config.log.backend = faults.map_or(config.log.backend, Backend::FaultyBlocking);
    // Registered first: a SIGTERM while starting still ends in a clean stop.
    let mut terminate = signal(SignalKind::terminate())?;
    let kv = Arc::default();
    let started = Node::start(config, Kv(Arc::clone(&kv))).await;
    let node = started.unwrap_or_else(|error| fail_stop(id, &error));
    let server = Arc::new(Server {
        node,
        kv,
        clients,
        members,
    });
    let listener = tokio::net::TcpListener::bind(client)
        .await
        .context("binding --clients")?;
    let mut connections = tokio::task::JoinSet::new();
    let mut health = tokio::time::interval(Duration::from_millis(50));
    println!("kv node {id} serving clients on {client}");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = health.tick() => if let Some(error) = server.node.failure() {
                fail_stop(id, &error);
            },
            Some(_) = connections.join_next() => {}
            Ok((mut stream, _)) = listener.accept() => {
                if connections.len() >= CONNECTIONS_MAX {
                    let _ = stream.write_all(b"FAIL too many connections\n").await;
                    continue;
                }
                let server = Arc::clone(&server);
                connections.spawn(async move { server.serve(stream).await });
            }
        }
    }
    connections.shutdown().await;
    Ok(server.node.shutdown().await?)
}
