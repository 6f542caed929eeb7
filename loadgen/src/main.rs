//! `barge-loadgen`: runs Barge components and clusters under load and reports
//! throughput and latency, each figure beside a baseline measured in the same
//! run.
//!
//! Subcommands (each has its own module and its own `--help`):
//! - `wal`: the write-ahead log alone under concurrent appenders;
//! - `net`: the QUIC entries stream between two endpoints on loopback;
//! - `certs`: a development cluster CA and node certificates.

mod certs;
mod net_bench;
mod wal_bench;

use anyhow::{bail, Result};

const USAGE: &str =
    "usage: barge-loadgen <wal|net|certs> [options]   (each subcommand takes --help)";

fn main() {
    if let Err(error) = run() {
        eprintln!("barge-loadgen: error: {error:#}");
        std::process::exit(1);
    }
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
        None => bail!("no subcommand given\n{USAGE}"),
    };
    match subcommand.as_str() {
        "wal" => wal_bench::run(parser),
        "net" => net_bench::run(parser),
        "certs" => certs::run(parser),
        other => bail!("unknown subcommand `{other}`\n{USAGE}"),
    }
}
