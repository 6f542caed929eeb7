//! `barge-loadgen`: runs Barge components and clusters under load and reports
//! throughput and latency, each figure beside a baseline measured in the same
//! run.
//!
//! Subcommands (each has its own module and its own `--help`):
//! - `run` (the default when no arguments are given): a local cluster under
//!   load, end to end (see `run`);
//! - `wal`: the write-ahead log alone under concurrent appenders;
//! - `net`: the QUIC entries stream between two endpoints on loopback;
//! - `certs`: a development cluster CA and node certificates;
//! - `chaos`: fault experiments on a cluster of KV example processes, with
//!   a linearizability check (`barge_loadgen::chaos`).

mod certs;
mod net_bench;
mod node_process;
mod run;
mod system;
mod wal_bench;

use anyhow::{bail, Result};
use barge_loadgen::children::PARENT_STDIN_FLAG;

const USAGE: &str =
    "usage: barge-loadgen [run|wal|net|certs|chaos] [options]   (each subcommand takes --help)
       with no arguments: `run` with its defaults (3 nodes, 256 clients, 64 B, 10 s)";

fn main() {
    if let Err(error) = run() {
        eprintln!("barge-loadgen: error: {error:#}");
        std::process::exit(1);
    }
}

/// Runs the KV example (`engine/examples/kv.rs`) with the arguments after
/// `kv`, as its own `main` would. With `--parent-stdin` (which `chaos`
/// passes, see `barge_loadgen::children`) it exits when its stdin closes,
/// as `node` does: a node outliving the chaos tool that started it (killed
/// by a test harness's timeout, say) would run forever.
fn kv() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(2).collect();
    let flags = args.len();
    // The example's own parser takes `--flag value` pairs only.
    args.retain(|arg| arg != PARENT_STDIN_FLAG);
    if args.len() != flags {
        barge_loadgen::children::watch_stdin_closed(|| {
            eprintln!("kv: the process that started this node is gone; exiting");
            std::process::exit(1);
        })?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(barge_loadgen::kv::run(args))
}

fn run() -> Result<()> {
    let mut parser = lexopt::Parser::from_env();
    let subcommand = match parser.next()? {
        Some(lexopt::Arg::Value(value)) => value
            .into_string()
            .map_err(|raw| anyhow::anyhow!("subcommand is not UTF-8: {raw:?}"))?,
        Some(lexopt::Arg::Long("help")) | Some(lexopt::Arg::Short('h')) => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("{}\n{USAGE}", other.unexpected()),
        // The README's run command: `cargo run --release -p barge-loadgen`.
        None => return run::run(parser),
    };
    match subcommand.as_str() {
        "run" => run::run(parser),
        "wal" => wal_bench::run(parser),
        "net" => net_bench::run(parser),
        "certs" => certs::run(parser),
        "chaos" => {
            let code = barge_loadgen::chaos::main(parser)?;
            std::process::exit(code)
        }
        // Hidden: one node of `chaos`, the KV example as its own process.
        "kv" => kv(),
        // Hidden: one node process of `run --processes` (see node_process).
        "node" => node_process::run(parser),
        other => bail!("unknown subcommand `{other}`\n{USAGE}"),
    }
}
