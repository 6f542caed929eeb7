//! A replicated key-value store on Barge, run as one process per node.
//!
//! ```text
//! barge-loadgen certs --nodes 3 --out /tmp/kv-certs
//! kv --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!    --clients 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003 \
//!    --data-dir /tmp/kv1 --certs /tmp/kv-certs          # and likewise --id 2, --id 3
//! ```
//!
//! Client protocol: one command per line over TCP, one answer line each.
//! `PUT k v` → `OK`; `GET k` → `OK v` or `NONE`; `CAS k old new` → `OK` or
//! `ERR cas mismatch`; `DEL k` → `OK 1` (deleted) or `OK 0` (absent).
//! Writes on a follower answer `REDIRECT <leader client address>`; `GET` is
//! served by any node, linearizably, after a `read_index` barrier. `ERR ...`
//! for bad input; a write answered `ERR` other than `ERR invalid`/`ERR cas
//! mismatch` may or may not have been applied. Keys, values: no whitespace.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use barge::core::{Entry, NodeId};
use barge::node::{Node, NodeConfig, NodeError, StartMode, StateMachine};
use barge_net::{ClusterId, NodeIdentity, PeerId};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

const USAGE: &str = "usage: kv --id N --peers ID=HOST:PORT,.. --data-dir DIR --certs DIR \
          [--client HOST:PORT] [--clients ID=HOST:PORT,..] [--start MODE]
  --peers     Raft (QUIC/UDP) address of every node, this one included
  --clients   client (TCP) address of every node, for REDIRECT answers
  --client    where this node serves clients (default: its --clients entry)
  --certs     directory from `barge-loadgen certs` (ca.pem, node-N.pem, cluster)
  --data-dir  log and snapshots; a restart on the same directory rejoins
  --start     new (default: first start, or reuse the directory) | existing
              (restarts: refuses an empty directory, a node that lost its disk
              must not vote) | join (a node added later; add it from the leader)
Client protocol, one line each way: PUT k v | GET k | CAS k old new | DEL k";
const KEY_BYTES_MAX: usize = 256;
const VALUE_BYTES_MAX: usize = 4096;
const LINE_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + KEY_BYTES_MAX + 16;
const CONNECTIONS_MAX: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const PUT: u8 = 1;
const CAS: u8 = 2;
const DEL: u8 = 3;

type Map = Arc<Mutex<BTreeMap<Bytes, Bytes>>>;

/// Commands are `tag` then length-prefixed (u16) byte strings.
struct Kv(Map);

fn take_field(buf: &mut Bytes) -> Option<Bytes> {
    let len = usize::from(buf.try_get_u16().ok()?);
    (buf.len() >= len).then(|| buf.split_to(len))
}

impl StateMachine for Kv {
    fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>) {
        let mut map = self.0.lock();
        for entry in entries {
            let mut cmd = entry.payload.clone();
            let tag = cmd.try_get_u8().unwrap_or(0);
            let fields = [(); 3].map(|()| take_field(&mut cmd));
            let response: &'static [u8] = match (tag, fields) {
                (PUT, [Some(k), Some(v), None]) => {
                    map.insert(k, v);
                    b"OK"
                }
                (DEL, [Some(k), None, None]) => map.remove(&k).map_or(b"OK 0", |_| b"OK 1"),
                (CAS, [Some(k), Some(old), Some(new)]) if map.get(&k) == Some(&old) => {
                    map.insert(k, new);
                    b"OK"
                }
                (CAS, [Some(_), Some(_), Some(_)]) => b"ERR cas mismatch",
                _ => b"ERR invalid command in log",
            };
            responses.push(Bytes::from_static(response));
        }
    }
    fn snapshot(&mut self) -> Result<Bytes, String> {
        let mut out = BytesMut::new();
        for (key, value) in self.0.lock().iter() {
            for field in [key, value] {
                out.put_u16(u16::try_from(field.len()).map_err(|_| "oversized field")?);
                out.put_slice(field);
            }
        }
        Ok(out.freeze())
    }
    fn restore(&mut self, mut snapshot: Bytes) -> Result<(), String> {
        let mut map = BTreeMap::new();
        while !snapshot.is_empty() {
            let key = take_field(&mut snapshot).ok_or("truncated key")?;
            map.insert(key, take_field(&mut snapshot).ok_or("truncated value")?);
        }
        *self.0.lock() = map;
        Ok(())
    }
}

/// Runs `future` for at most REQUEST_TIMEOUT; `Err(None)` means it timed out.
async fn within<T>(
    future: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Result<T, Option<NodeError>> {
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, future).await;
    outcome.map_err(|_| None)?.map_err(Some)
}

/// What every client connection shares.
struct Server {
    node: Node,
    map: Map,
    clients: BTreeMap<NodeId, SocketAddr>,
}

impl Server {
    /// Answers one command line.
    async fn answer(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(1).is_some_and(|key| key.len() > KEY_BYTES_MAX)
            || words.iter().any(|word| word.len() > VALUE_BYTES_MAX)
        {
            return format!(
                "ERR invalid: keys up to {KEY_BYTES_MAX} bytes, values {VALUE_BYTES_MAX}"
            );
        }
        let tag = match words.as_slice() {
            // Linearizable: read local state once it has applied everything
            // the leader had committed when the read began.
            ["GET", key] => {
                let read = within(self.node.read_index()).await;
                return self.reply(read.map(|_| match self.map.lock().get(key.as_bytes()) {
                    Some(value) => format!("OK {}", String::from_utf8_lossy(value)),
                    None => "NONE".to_owned(),
                }));
            }
            ["PUT", _, _] => PUT,
            ["CAS", _, _, _] => CAS,
            ["DEL", _] => DEL,
            _ => return "ERR invalid command; expected PUT k v|GET k|CAS k old new|DEL k".into(),
        };
        let mut command = BytesMut::from(&[tag][..]);
        for field in &words[1..] {
            // Fields were checked against VALUE_BYTES_MAX, far below 64 KiB.
            command.put_u16(u16::try_from(field.len()).unwrap_or(u16::MAX));
            command.put_slice(field.as_bytes());
        }
        let written = within(self.node.propose(command.freeze())).await;
        self.reply(written.map(|response| String::from_utf8_lossy(&response).into_owned()))
    }

    fn reply(&self, outcome: Result<String, Option<NodeError>>) -> String {
        match outcome {
            Ok(reply) => reply,
            Err(Some(NodeError::NotLeader {
                leader_hint: Some(leader),
            })) => match self.clients.get(&leader) {
                Some(address) => format!("REDIRECT {address}"),
                None => format!("ERR not leader; leader is node {leader} (no --clients)"),
            },
            Err(Some(error)) => format!("ERR {error}"),
            Err(None) => "ERR timeout; a write may or may not apply".to_owned(),
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
            if line.len() > LINE_BYTES_MAX && line.last() != Some(&b'\n') {
                // The rest of the line cannot be told from a new command: hang up.
                let reply = format!("ERR invalid: line longer than {LINE_BYTES_MAX} bytes\n");
                return write.write_all(reply.as_bytes()).await;
            }
            let reply = match std::str::from_utf8(&line) {
                Ok(text) => self.answer(text.trim()).await,
                Err(_) => "ERR invalid: not UTF-8".to_owned(),
            };
            write.write_all(format!("{reply}\n").as_bytes()).await?;
        }
    }
}

fn parse_map(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>> {
    let item = |item: &str| -> Result<(NodeId, SocketAddr)> {
        let (id, address) = item.split_once('=').context("expected ID=HOST:PORT")?;
        Ok((
            NodeId(id.parse().context("id")?),
            address.parse().context("address")?,
        ))
    };
    text.split(',')
        .map(|i| item(i).with_context(|| format!("{i:?}")))
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    run(std::env::args().skip(1).collect()).await
}

/// The whole program, from its arguments (the smoke test runs it this way).
pub async fn run(args: Vec<String>) -> Result<()> {
    if args.is_empty() || args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    anyhow::ensure!(args.len() % 2 == 0, "every flag takes one value\n{USAGE}");
    let mut flags: HashMap<&str, &str> = args.chunks(2).map(|f| (&*f[0], &*f[1])).collect();
    let mut flag = |name| {
        flags
            .remove(name)
            .with_context(|| format!("{name} is required\n{USAGE}"))
    };
    let id = NodeId(flag("--id")?.parse().context("--id")?);
    let mut peers = parse_map(flag("--peers")?).context("--peers")?;
    let (data_dir, certs) = (
        PathBuf::from(flag("--data-dir")?),
        PathBuf::from(flag("--certs")?),
    );
    let clients = flag("--clients")
        .map_or(Ok(BTreeMap::new()), parse_map)
        .context("--clients")?;
    let start = match flag("--start").unwrap_or("new") {
        "new" => StartMode::New,
        "existing" => StartMode::Existing,
        "join" => StartMode::Join,
        other => anyhow::bail!("--start {other}: expected new, existing or join"),
    };
    let client: SocketAddr = match flag("--client") {
        Ok(text) => text.parse().context("--client")?,
        Err(_) => *clients
            .get(&id)
            .context("--client, or --clients naming this id, is required")?,
    };
    anyhow::ensure!(
        flags.is_empty(),
        "unknown flags {:?}\n{USAGE}",
        flags.keys()
    );
    let listen = peers
        .remove(&id)
        .context("--peers has no address for this node")?;
    let cluster =
        std::fs::read_to_string(certs.join("cluster")).context("reading certs/cluster")?;
    let cluster = u64::from_str_radix(cluster.trim(), 16).context("certs/cluster: not hex")?;
    let identity = NodeIdentity::load(&certs, ClusterId(cluster), PeerId(id.0))?;

    // Registered first: a SIGTERM while starting still ends in a clean stop.
    let mut terminate = signal(SignalKind::terminate())?;
    let map = Map::default();
    let mut config = NodeConfig::new(id, cluster, listen, peers, data_dir, identity);
    config.start = start;
    let node = Node::start(config, Kv(Arc::clone(&map))).await?;
    let server = Arc::new(Server { node, map, clients });
    let listener = tokio::net::TcpListener::bind(client)
        .await
        .context("--client")?;
    let mut connections = JoinSet::new();
    println!("kv node {id} serving clients on {client}");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            Some(_) = connections.join_next() => {}
            Ok((mut stream, _)) = listener.accept() => {
                if connections.len() >= CONNECTIONS_MAX {
                    let _ = stream.write_all(b"ERR busy: too many connections\n").await;
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
