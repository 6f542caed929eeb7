//! Command-line options of `barge-loadgen run`, parsed and checked before
//! anything starts, so a bad flag costs nothing but an error and the usage.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lexopt::prelude::*;

pub const USAGE: &str = "usage: barge-loadgen [run] [options]

Starts a local Barge cluster (fsync on unless --no-fsync, TLS on, logs in a
temporary directory), drives it with proposers, shows progress on stderr every second
and ends with a table on stdout (or one JSON object with --json).

  --nodes N            voters in the cluster (default 3, at most 7)
  --clients N          closed loop: N proposers, one proposal outstanding each (default 256);
                       with --rate: the bound on proposals in flight (default 16384)
  --rate OPS           open loop: OPS proposals per second on a fixed schedule; latency is
                       measured from each proposal's intended send time
  --payload BYTES      bytes per proposal (default 64, at most 1 MiB)
  --duration SECS      measured time (default 10)
  --warmup SECS        unmeasured time before it (default 2)
  --client-threads N   Tokio worker threads driving the proposers (default 2)
  --data-dir DIR       parent directory for the nodes' data (default: the system temp dir);
                       a fresh subdirectory is created there and removed afterwards
  --baseline           also measure, on the same disk and loopback: raw write+fdatasync
                       latency, raw sequential write bandwidth, raw quinn round trip
  --sweep P=V1,V2,..   one run per value of P (clients or payload); prints a table and
                       writes an SVG plot
  --plot FILE          where --sweep writes its plot (default barge-sweep-<P>.svg)
  --json               one JSON object on stdout, nothing else
  --processes          one OS process per node (`barge-loadgen node` children); the
                       proposers reach them over a binary protocol on loopback TCP
  --connections N      with --processes: TCP connections to each node (default 1: one
                       connection gathers the most proposals per read, so the largest batches)
  --no-fsync           UNSAFE, for measurement only: the nodes' logs skip fdatasync, so
                       a power failure or kernel crash may lose acknowledged writes;
                       the output is labelled (`UNSAFE: fsync off`, \"fsync\": false)
  -h, --help           this text";

/// Which parameter a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepParameter {
    /// `--clients` (closed loop) or the in-flight bound (open loop).
    Clients,
    /// `--payload`.
    Payload,
}

impl SweepParameter {
    pub fn name(self) -> &'static str {
        match self {
            SweepParameter::Clients => "clients",
            SweepParameter::Payload => "payload",
        }
    }
}

/// A `--sweep` specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    pub parameter: SweepParameter,
    pub values: Vec<usize>,
}

/// Values in one sweep: each is a cluster start plus a full run.
pub const SWEEP_VALUES_MAX: usize = 16;
pub const NODES_MAX: u64 = 7;
pub const CLIENTS_MAX: usize = 1_000_000;
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
pub const CLIENT_THREADS_MAX: usize = 64;
pub const CONNECTIONS_MAX: usize = 64;
/// In-flight bound of the open loop when `--clients` is not given.
pub const OPEN_LOOP_INFLIGHT_DEFAULT: usize = 16_384;

/// Everything one run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub nodes: u64,
    /// `None` when not given: 256 closed loop, 16384 in flight open loop.
    pub clients: Option<usize>,
    pub rate_per_s: Option<u64>,
    pub payload_bytes: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub client_threads: usize,
    pub data_dir: Option<PathBuf>,
    pub baseline: bool,
    pub sweep: Option<Sweep>,
    pub plot: Option<PathBuf>,
    pub json: bool,
    /// One OS process per node.
    pub processes: bool,
    /// With `processes`: TCP connections from the proposers to each node.
    pub connections_per_node: usize,
    /// False with `--no-fsync`: the nodes' logs do not sync (unsafe).
    pub fsync: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            clients: None,
            rate_per_s: None,
            payload_bytes: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            client_threads: 2,
            data_dir: None,
            baseline: false,
            sweep: None,
            plot: None,
            json: false,
            processes: false,
            // Measured at 1024 proposers: 1 connection ~230k entries/s,
            // 2 ~130-160k, 4 ~150k, 16 ~96k (larger read bursts, larger
            // batches on the node).
            connections_per_node: 1,
            fsync: true,
        }
    }
}

impl Options {
    /// Closed-loop proposers, or the open loop's in-flight bound.
    pub fn concurrency(&self) -> usize {
        self.clients.unwrap_or(if self.rate_per_s.is_some() {
            OPEN_LOOP_INFLIGHT_DEFAULT
        } else {
            256
        })
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Run(Options),
}

fn seconds(text: &str, flag: &str, min: f64, max: f64) -> Result<Duration> {
    let value: f64 = text
        .parse()
        .with_context(|| format!("{flag} {text}: not a number of seconds"))?;
    if !(min..=max).contains(&value) {
        bail!("{flag} must be between {min} and {max} seconds, got {text}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {text}: not a whole number"))
}

fn in_range(value: usize, flag: &str, min: usize, max: usize) -> Result<usize> {
    if !(min..=max).contains(&value) {
        bail!("{flag} must be between {min} and {max}, got {value}");
    }
    Ok(value)
}

fn parse_sweep(text: &str) -> Result<Sweep> {
    let Some((name, list)) = text.split_once('=') else {
        bail!("--sweep {text}: expected clients=V1,V2,... or payload=V1,V2,...");
    };
    let parameter = match name {
        "clients" => SweepParameter::Clients,
        "payload" => SweepParameter::Payload,
        other => bail!("--sweep: unknown parameter `{other}` (clients or payload)"),
    };
    let values = list
        .split(',')
        .map(|value| number::<usize>(value.trim(), "--sweep"))
        .collect::<Result<Vec<usize>>>()?;
    if values.is_empty() || values.len() > SWEEP_VALUES_MAX {
        bail!("--sweep takes 1 to {SWEEP_VALUES_MAX} values");
    }
    let (min, max) = match parameter {
        SweepParameter::Clients => (1, CLIENTS_MAX),
        SweepParameter::Payload => (1, PAYLOAD_BYTES_MAX),
    };
    for value in &values {
        in_range(*value, "--sweep values", min, max)?;
    }
    Ok(Sweep { parameter, values })
}

/// Parses the arguments after `run` (or all of them when `run` is implied).
///
/// # Errors
/// The first bad or unknown flag, with the usage text.
pub fn parse(mut parser: lexopt::Parser) -> Result<Command> {
    let mut options = Options::default();
    let mut connections = None;
    while let Some(arg) = parser.next()? {
        let text =
            |parser: &mut lexopt::Parser| -> Result<String> { Ok(parser.value()?.string()?) };
        match arg {
            Long("nodes") => {
                let nodes = number::<usize>(&text(&mut parser)?, "--nodes")?;
                options.nodes = in_range(nodes, "--nodes", 1, NODES_MAX as usize)? as u64;
            }
            Long("clients") => {
                let clients = number(&text(&mut parser)?, "--clients")?;
                options.clients = Some(in_range(clients, "--clients", 1, CLIENTS_MAX)?);
            }
            Long("rate") => {
                let rate: u64 = number(&text(&mut parser)?, "--rate")?;
                if !(1..=100_000_000).contains(&rate) {
                    bail!("--rate must be between 1 and 100000000 proposals per second");
                }
                options.rate_per_s = Some(rate);
            }
            Long("payload") => {
                let payload = number(&text(&mut parser)?, "--payload")?;
                options.payload_bytes = in_range(payload, "--payload", 1, PAYLOAD_BYTES_MAX)?;
            }
            Long("duration") => {
                options.duration = seconds(&text(&mut parser)?, "--duration", 0.5, 3600.0)?;
            }
            Long("warmup") => {
                options.warmup = seconds(&text(&mut parser)?, "--warmup", 0.0, 600.0)?;
            }
            Long("client-threads") => {
                let threads = number(&text(&mut parser)?, "--client-threads")?;
                options.client_threads =
                    in_range(threads, "--client-threads", 1, CLIENT_THREADS_MAX)?;
            }
            Long("data-dir") => options.data_dir = Some(parser.value()?.into()),
            Long("baseline") => options.baseline = true,
            Long("sweep") => options.sweep = Some(parse_sweep(&text(&mut parser)?)?),
            Long("plot") => options.plot = Some(parser.value()?.into()),
            Long("json") => options.json = true,
            Long("processes") => options.processes = true,
            Long("connections") => {
                let count = number(&text(&mut parser)?, "--connections")?;
                connections = Some(in_range(count, "--connections", 1, CONNECTIONS_MAX)?);
            }
            Long("no-fsync") => options.fsync = false,
            Long("help") | Short('h') => return Ok(Command::Help),
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    if let Some(connections) = connections {
        if !options.processes {
            bail!("--connections only applies with --processes");
        }
        options.connections_per_node = connections;
    }
    if options.plot.is_some() && options.sweep.is_none() {
        bail!("--plot only applies with --sweep");
    }
    Ok(Command::Run(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command> {
        parse(lexopt::Parser::from_args(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let Command::Run(options) = parse_args(&[]).expect("no arguments parse") else {
            panic!("expected a run");
        };
        assert_eq!(options, Options::default());
        assert_eq!(options.nodes, 3);
        assert_eq!(options.concurrency(), 256);
        assert_eq!(options.payload_bytes, 64);
        assert_eq!(options.duration, Duration::from_secs(10));
        assert_eq!(options.warmup, Duration::from_secs(2));
        assert!(options.fsync, "fsync must be on by default");
    }

    #[test]
    fn every_flag_is_read() {
        let command = parse_args(&[
            "--nodes",
            "5",
            "--clients",
            "1024",
            "--payload",
            "16384",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--client-threads",
            "3",
            "--data-dir",
            "/var/tmp",
            "--baseline",
            "--json",
            "--processes",
            "--connections",
            "8",
            "--no-fsync",
        ])
        .expect("valid flags");
        let Command::Run(options) = command else {
            panic!("expected a run");
        };
        assert_eq!(options.nodes, 5);
        assert_eq!(options.concurrency(), 1024);
        assert_eq!(options.payload_bytes, 16384);
        assert_eq!(options.duration, Duration::from_millis(2500));
        assert_eq!(options.warmup, Duration::ZERO);
        assert_eq!(options.client_threads, 3);
        assert_eq!(options.data_dir, Some(PathBuf::from("/var/tmp")));
        assert!(options.baseline && options.json && options.processes);
        assert_eq!(options.connections_per_node, 8);
        assert!(!options.fsync);
    }

    #[test]
    fn open_loop_defaults_to_a_larger_inflight_bound() {
        let Command::Run(options) = parse_args(&["--rate", "1000"]).expect("valid") else {
            panic!("expected a run");
        };
        assert_eq!(options.rate_per_s, Some(1000));
        assert_eq!(options.concurrency(), OPEN_LOOP_INFLIGHT_DEFAULT);
    }

    #[test]
    fn sweeps_parse_and_bad_ones_are_named() {
        let Command::Run(options) =
            parse_args(&["--sweep", "clients=1,16,256,1024"]).expect("valid sweep")
        else {
            panic!("expected a run");
        };
        assert_eq!(
            options.sweep,
            Some(Sweep {
                parameter: SweepParameter::Clients,
                values: vec![1, 16, 256, 1024]
            })
        );
        let error = parse_args(&["--sweep", "threads=1,2"]).unwrap_err();
        assert!(error.to_string().contains("unknown parameter"), "{error}");
        let error = parse_args(&["--sweep", "payload=64,x"]).unwrap_err();
        assert!(error.to_string().contains("not a whole number"), "{error}");
        let error = parse_args(&["--sweep", "payload=0"]).unwrap_err();
        assert!(error.to_string().contains("between"), "{error}");
        let error = parse_args(&["--sweep", "clients"]).unwrap_err();
        assert!(error.to_string().contains("expected clients="), "{error}");
    }

    #[test]
    fn bad_flags_give_clear_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["--nodes", "0"], "--nodes must be between"),
            (&["--nodes", "three"], "not a whole number"),
            (&["--clients", "0"], "--clients must be between"),
            (&["--payload", "2000000"], "--payload must be between"),
            (&["--duration", "0.1"], "--duration must be between"),
            (&["--duration", "soon"], "not a number of seconds"),
            (&["--rate", "0"], "--rate must be between"),
            (&["--connections", "2"], "only applies with --processes"),
            (
                &["--processes", "--connections", "0"],
                "--connections must be between",
            ),
            (&["--plot", "x.svg"], "only applies with --sweep"),
            (&["--frobnicate"], "usage:"),
        ];
        for (args, expected) in cases {
            let error = parse_args(args).unwrap_err();
            assert!(
                format!("{error:#}").contains(expected),
                "{args:?}: `{error:#}` lacks `{expected}`"
            );
        }
        assert_eq!(parse_args(&["--help"]).expect("help"), Command::Help);
    }
}
