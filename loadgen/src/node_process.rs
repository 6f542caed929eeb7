//! `barge-loadgen node` (hidden: `run --processes` starts it, one process
//! per node): one Barge node with the load generator's counting state
//! machine, serving the binary pipelined client protocol of
//! `run::protocol` over TCP.
//!
//! ```text
//! barge-loadgen certs --nodes 3 --out /tmp/certs
//! barge-loadgen node --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!     --client 127.0.0.1:8001 --clients 2=127.0.0.1:8002,3=127.0.0.1:8003 \
//!     --data-dir /tmp/n1 --certs /tmp/certs          # and likewise --id 2, --id 3
//! ```
//!
//! Prints `ready` on stdout once the node runs and the client port is bound,
//! and nothing on stdout after that. Stops cleanly (log synced, connections
//! closed) on SIGTERM or SIGINT, and with `--parent-stdin` also when its
//! stdin closes, so a load generator that dies takes its nodes with it.
//!
//! Each connection reads what the socket has, cuts it into frames, and puts
//! consecutive proposals of one read into one `Node::propose_batch` call
//! (split at the core's `batch_entries_max` / `batch_bytes_max`, since a
//! larger call is refused): the proposer side's cost is paid per read, not
//! per entry. Answers go back in completion order, several per write.
//! Bounded: frame bytes, proposals in flight per connection (the reader
//! stops reading when they are all taken, so TCP pushes back on the
//! client), and connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use barge::core::NodeId;
use barge::node::{ConfigError, Node, NodeConfig, NodeError};
use bytes::{Bytes, BytesMut};
use lexopt::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::run::protocol::{self, Frame};
use crate::run::Counter;

const USAGE: &str = "usage: barge-loadgen node --client HOST:PORT [options] and node flags
  --client HOST:PORT        where this node serves the binary client protocol (TCP)
  --clients ID=HOST:PORT,.. the other nodes' client addresses, sent with not-leader answers
  --metrics HOST:PORT       serve Prometheus metrics over HTTP there
  --inflight-max N          proposals in flight per connection (default 16384)
  --connections-max N       client connections (default 64)
  --parent-stdin            stop when stdin closes (the load generator holds it open)
  --no-fsync                UNSAFE, measurement only: the log does not fdatasync its writes
                            (a power failure or kernel crash may lose acknowledged entries)
node flags (`barge::node::NodeConfig::from_flags`):";

/// The largest proposal payload accepted (as `run --payload`).
const PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// A frame holds one proposal: the payload and the fixed header.
const FRAME_BYTES_MAX: usize = PAYLOAD_BYTES_MAX + protocol::HEADER_BYTES;
/// Bytes asked of the socket per read (more arrive only if the frame at
/// the end of the buffer needs them).
const READ_BYTES: usize = 64 << 10;
/// Answers are gathered up to about this many bytes per socket write.
const WRITE_BYTES_TARGET: usize = 256 << 10;
/// The encoded size of a batch, as the core counts it against
/// `batch_bytes_max` (the batch format of `barge::core::Batch`: a u32 count,
/// then a u32 end offset and a kind byte per entry, then the payloads). The
/// core does not export its own count, so this is the one copy here.
const BATCH_HEADER_BYTES: usize = 4;
const ENTRY_OVERHEAD_BYTES: usize = 5;

/// What one node process needs.
#[derive(Debug)]
struct Options {
    /// The node itself, from the node flags.
    config: NodeConfig,
    client: SocketAddr,
    clients: BTreeMap<NodeId, SocketAddr>,
    metrics: Option<SocketAddr>,
    inflight_max: usize,
    connections_max: usize,
    parent_stdin: bool,
    /// False with the unsafe `--no-fsync`.
    fsync: bool,
}

fn usage() -> String {
    format!("{USAGE}\n{}", NodeConfig::FLAGS_USAGE)
}

fn parse(mut parser: lexopt::Parser) -> Result<Option<Options>> {
    let (mut client, mut clients, mut metrics) = (None, BTreeMap::new(), None);
    let (mut inflight_max, mut connections_max, mut parent_stdin) = (16_384, 64, false);
    let mut fsync = true;
    // Every other `--flag value` is a node flag, for `NodeConfig::from_flags`.
    let mut node_flags: Vec<(String, String)> = Vec::new();
    while let Some(arg) = parser.next()? {
        let text =
            |parser: &mut lexopt::Parser| -> Result<String> { Ok(parser.value()?.string()?) };
        match arg {
            Long("client") => client = Some(text(&mut parser)?.parse().context("--client")?),
            Long("clients") => {
                clients = NodeConfig::parse_addresses(&text(&mut parser)?).context("--clients")?;
            }
            Long("metrics") => metrics = Some(text(&mut parser)?.parse().context("--metrics")?),
            Long("inflight-max") => {
                inflight_max = text(&mut parser)?.parse().context("--inflight-max")?;
                if !(1..=1 << 20).contains(&inflight_max) {
                    bail!("--inflight-max must be between 1 and 1048576, got {inflight_max}");
                }
            }
            Long("connections-max") => {
                connections_max = text(&mut parser)?.parse().context("--connections-max")?;
                if !(1..=4096).contains(&connections_max) {
                    bail!("--connections-max must be between 1 and 4096, got {connections_max}");
                }
            }
            Long("parent-stdin") => parent_stdin = true,
            Long("no-fsync") => fsync = false,
            Long("help") | Short('h') => return Ok(None),
            Long(flag) => {
                let flag = format!("--{flag}");
                let value = text(&mut parser).with_context(|| format!("{flag}\n{}", usage()))?;
                node_flags.push((flag, value));
            }
            other => bail!("{}\n{}", other.unexpected(), usage()),
        }
    }
    let mut flags = BTreeMap::new();
    for (flag, value) in &node_flags {
        if flags.insert(flag.as_str(), value.as_str()).is_some() {
            bail!("{flag} is given twice");
        }
    }
    let config = NodeConfig::from_flags(&mut flags).map_err(|error| match error {
        ConfigError::Flag { .. } => anyhow::anyhow!("{error}\n{}", usage()),
        other => anyhow::Error::new(other),
    })?;
    if let Some(unknown) = flags.keys().next() {
        bail!("unknown flag {unknown}\n{}", usage());
    }
    Ok(Some(Options {
        config,
        client: client.with_context(|| format!("--client: required\n{}", usage()))?,
        clients,
        metrics,
        inflight_max,
        connections_max,
        parent_stdin,
        fsync,
    }))
}

/// Parses the options of `node` and runs the node until it is told to stop.
///
/// # Errors
/// Bad flags, unreadable certificates, a node that cannot start, a client
/// port that cannot be bound, or a failed final sync of the log.
pub fn run(parser: lexopt::Parser) -> Result<()> {
    let Some(options) = parse(parser)? else {
        println!("{}", usage());
        return Ok(());
    };
    // One worker serves the clients: the node's own threads (raft, log,
    // network) need the cores more.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("node-client")
        .enable_all()
        .build()
        .context("building the client runtime")?;
    runtime.block_on(serve_node(options))
}

/// Limits and lookups every connection shares.
#[derive(Debug)]
struct Server {
    node: Node,
    /// Client addresses by node id, for not-leader answers.
    clients: BTreeMap<NodeId, String>,
    inflight_max: usize,
    batch_entries_max: usize,
    batch_bytes_max: usize,
}

async fn serve_node(options: Options) -> Result<()> {
    // Registered before the node starts: a SIGTERM while starting still
    // ends in a clean stop.
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut config = options.config;
    let id = config.id;
    config.metrics_listen = options.metrics;
    config.log.fsync = options.fsync;
    let batch_entries_max = (config.raft.batch_entries_max as usize).min(options.inflight_max);
    let batch_bytes_max = config.raft.batch_bytes_max as usize;
    let node = Node::start(config, Counter::default())
        .await
        .with_context(|| format!("starting node {id}"))?;
    let listener = match TcpListener::bind(options.client).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = node.shutdown().await;
            return Err(error).with_context(|| format!("binding --client {}", options.client));
        }
    };
    let server = Arc::new(Server {
        node,
        clients: (options.clients.iter())
            .map(|(id, address)| (*id, address.to_string()))
            .collect(),
        inflight_max: options.inflight_max,
        batch_entries_max,
        batch_bytes_max,
    });
    println!("ready");
    let connections = Arc::new(Semaphore::new(options.connections_max));
    let mut tasks = tokio::task::JoinSet::new();
    let parent_gone = watch_parent(options.parent_stdin);
    tokio::pin!(parent_gone);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = &mut parent_gone => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    let mut refusal = BytesMut::new();
                    protocol::encode(&mut refusal, 0, protocol::STATUS_FAILURE, b"too many connections");
                    let _ = stream.write_all(&refusal).await;
                    continue;
                };
                let server = Arc::clone(&server);
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Err(error) = serve_connection(server, stream).await {
                        eprintln!("barge-loadgen node: client connection: {error:#}");
                    }
                });
            }
        }
    }
    tasks.shutdown().await;
    server
        .node
        .shutdown()
        .await
        .with_context(|| format!("shutting node {} down", server.node.id()))
}

/// Resolves when stdin reaches its end (or fails), if asked to watch it;
/// never otherwise.
async fn watch_parent(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let (closed, closing) = tokio::sync::oneshot::channel::<()>();
    match barge_loadgen::children::watch_stdin_closed(move || {
        let _ = closed.send(());
    }) {
        // The sender fires (or is dropped) only when stdin has ended.
        Ok(()) => {
            let _ = closing.await;
        }
        Err(error) => {
            eprintln!("barge-loadgen node: cannot watch stdin ({error}); stop it with SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

/// What the reader hands the writer. Every answer but the last holds
/// in-flight permits until it is written, so the queue is bounded by them
/// even when a client sends without reading.
#[derive(Debug)]
enum Answer {
    /// The answers to one batch of proposals.
    Proposals {
        ids: Vec<u64>,
        result: Result<Vec<Bytes>, NodeError>,
        _permits: OwnedSemaphorePermit,
    },
    /// A stats answer, or the refusal of one bad request.
    Immediate {
        id: u64,
        status: u8,
        body: Vec<u8>,
        _permit: OwnedSemaphorePermit,
    },
    /// The stream cannot be trusted any more: say why, then close.
    Closing { message: String },
}

/// Waits for one in-flight permit, for an answer made at once.
async fn permit(inflight: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
    Arc::clone(inflight)
        .acquire_owned()
        .await
        .context("the in-flight semaphore closed")
}

async fn serve_connection(server: Arc<Server>, stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (reader, writer) = stream.into_split();
    // Unbounded in type only: every queued answer but the closing one holds
    // permits of the connection's in-flight semaphore.
    let (answers, queue) = mpsc::unbounded_channel();
    let written = tokio::spawn(write_answers(Arc::clone(&server), writer, queue));
    let read = read_requests(&server, reader, answers).await;
    // The writer ends once every batch task has answered and dropped its
    // sender.
    let wrote = written.await.context("the answer writer panicked")?;
    read.and(wrote)
}

async fn read_requests(
    server: &Arc<Server>,
    mut reader: OwnedReadHalf,
    answers: mpsc::UnboundedSender<Answer>,
) -> Result<()> {
    let inflight = Arc::new(Semaphore::new(server.inflight_max));
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut batch = Batch::default();
    loop {
        buffer.reserve(READ_BYTES);
        if reader.read_buf(&mut buffer).await.context("reading")? == 0 {
            return Ok(());
        }
        loop {
            let frame = match protocol::take_frame(&mut buffer, FRAME_BYTES_MAX) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    batch.submit(server, &inflight, &answers).await?;
                    let message = format!("{error:#}");
                    let _ = answers.send(Answer::Closing { message });
                    return Err(error);
                }
            };
            let Frame { id, code, body } = frame;
            match code {
                protocol::KIND_PROPOSE if body.is_empty() => {
                    let _ = answers.send(Answer::Immediate {
                        id,
                        status: protocol::STATUS_FAILURE,
                        body: b"empty proposal".to_vec(),
                        _permit: permit(&inflight).await?,
                    });
                }
                protocol::KIND_PROPOSE => {
                    let bytes = ENTRY_OVERHEAD_BYTES + body.len();
                    if batch.ids.len() >= server.batch_entries_max
                        || batch.bytes + bytes > server.batch_bytes_max
                    {
                        batch.submit(server, &inflight, &answers).await?;
                    }
                    batch.push(id, body, bytes);
                }
                protocol::KIND_STATS => {
                    let _permit = permit(&inflight).await?;
                    let body = protocol::encode_stats(&server.node.metrics());
                    let status = protocol::STATUS_OK;
                    let _ = answers.send(Answer::Immediate {
                        id,
                        status,
                        body,
                        _permit,
                    });
                }
                other => {
                    let _ = answers.send(Answer::Immediate {
                        id,
                        status: protocol::STATUS_FAILURE,
                        body: format!("unknown request kind {other}").into_bytes(),
                        _permit: permit(&inflight).await?,
                    });
                }
            }
        }
        batch.submit(server, &inflight, &answers).await?;
    }
}

/// Proposals of one read burst, not yet submitted.
#[derive(Debug, Default)]
struct Batch {
    ids: Vec<u64>,
    payloads: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, id: u64, payload: Bytes, bytes: usize) {
        if self.ids.is_empty() {
            self.bytes = BATCH_HEADER_BYTES;
        }
        self.ids.push(id);
        self.payloads.push(payload);
        self.bytes += bytes;
    }

    /// Waits for in-flight room for the whole batch, then proposes it on a
    /// task of its own, which sends the answers when the batch resolves.
    async fn submit(
        &mut self,
        server: &Arc<Server>,
        inflight: &Arc<Semaphore>,
        answers: &mpsc::UnboundedSender<Answer>,
    ) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.ids);
        let mut payloads = std::mem::take(&mut self.payloads);
        // `batch_entries_max <= inflight_max`, so the count is grantable.
        let count = u32::try_from(ids.len()).context("batch length")?;
        let permits = Arc::clone(inflight)
            .acquire_many_owned(count)
            .await
            .context("the in-flight semaphore closed")?;
        let (server, answers) = (Arc::clone(server), answers.clone());
        tokio::spawn(async move {
            let result = match payloads.len() {
                // One proposal needs no vector on the node's side.
                1 => match payloads.pop() {
                    Some(payload) => server.node.propose(payload).await.map(|done| vec![done]),
                    None => Ok(Vec::new()),
                },
                _ => server.node.propose_batch(payloads).await,
            };
            let _ = answers.send(Answer::Proposals {
                ids,
                result,
                _permits: permits,
            });
        });
        Ok(())
    }
}

async fn write_answers(
    server: Arc<Server>,
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Answer>,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(WRITE_BYTES_TARGET);
    while let Some(answer) = queue.recv().await {
        let mut next = Some(answer);
        while let Some(answer) = next.take() {
            let closing = matches!(answer, Answer::Closing { .. });
            encode_answer(&server.clients, &mut out, answer);
            if closing {
                writer.write_all(&out).await.context("writing")?;
                return Ok(());
            }
            if out.len() < WRITE_BYTES_TARGET {
                next = queue.try_recv().ok();
            }
        }
        writer.write_all(&out).await.context("writing")?;
        out.clear();
    }
    Ok(())
}

fn encode_answer(clients: &BTreeMap<NodeId, String>, out: &mut BytesMut, answer: Answer) {
    match answer {
        Answer::Immediate {
            id, status, body, ..
        } => protocol::encode(out, id, status, &body),
        Answer::Closing { message } => {
            protocol::encode(out, 0, protocol::STATUS_FAILURE, message.as_bytes());
        }
        Answer::Proposals {
            ids,
            result: Ok(responses),
            ..
        } => {
            for (id, response) in ids.iter().zip(&responses) {
                protocol::encode(out, *id, protocol::STATUS_OK, response);
            }
        }
        Answer::Proposals {
            ids,
            result: Err(error),
            ..
        } => {
            let redirect = |leader: Option<NodeId>| {
                let address = leader.and_then(|id| clients.get(&id)).map(String::as_str);
                protocol::redirect_body(leader, address)
            };
            let (status, body) = match &error {
                NodeError::NotLeader { leader_hint } => {
                    (protocol::STATUS_NOT_LEADER, redirect(*leader_hint))
                }
                NodeError::ProposalDropped { leader_hint, .. } => {
                    (protocol::STATUS_DROPPED, redirect(*leader_hint))
                }
                NodeError::Overloaded => (protocol::STATUS_OVERLOADED, Vec::new()),
                other => (protocol::STATUS_FAILURE, other.to_string().into_bytes()),
            };
            for id in ids {
                protocol::encode(out, id, status, &body);
            }
        }
    }
}
