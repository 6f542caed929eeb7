//! Command-line options of `barge-loadgen chaos`, validated before anything
//! starts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lexopt::prelude::*;

pub const USAGE: &str = "usage: barge-loadgen chaos [options]
  --nodes N          cluster size: 3 or 5 (default 3)
  --duration SECS    how long clients run and faults are injected (default 120)
  --clients N        concurrent clients, 1..=64 (default 8)
  --keys K           keys the clients share, 1..=1024 (default 8)
  --nemesis LIST     comma-separated fault families among kill,pause,partition,
                     delay,member,disk; `all` (default) or `none`
  --interval SECS    length of each fault and of the healed pause after it
                     (default 5, 0.5..=600)
  --seed S           seed of every random choice (default: from the clock)
  --dir DIR          run directory: certificates, data, node logs (default: a
                     temporary directory, kept when the verdict fails)
  --json             print one JSON object instead of the table
  --check-time SECS  time bound of the linearizability check (default 60)
Exit status: 0 pass, 1 a check failed (or the run could not be done),
2 the linearizability check gave up (unknown).";

/// One family of faults the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// SIGKILL the leader or a random node, restart it later.
    Kill,
    /// SIGSTOP a node for longer than the election timeout, then SIGCONT.
    Pause,
    /// Network partitions through the fault proxy.
    Partition,
    /// Delay, jitter, loss, duplication and reordering on every link.
    Delay,
    /// Remove voters and add them back (learner first).
    Member,
    /// Fail-stop on an fsync error; a bit flipped in a WAL record.
    Disk,
}

impl Family {
    /// Every family, in the order the nemesis cycles through them.
    pub const ALL: [Family; 6] = [
        Family::Kill,
        Family::Pause,
        Family::Partition,
        Family::Delay,
        Family::Member,
        Family::Disk,
    ];

    /// The family's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Kill => "kill",
            Family::Pause => "pause",
            Family::Partition => "partition",
            Family::Delay => "delay",
            Family::Member => "member",
            Family::Disk => "disk",
        }
    }

    fn parse(text: &str) -> Result<Family> {
        Family::ALL
            .into_iter()
            .find(|family| family.name() == text)
            .with_context(|| {
                format!("--nemesis: unknown fault family `{text}` (expected kill, pause, partition, delay, member, disk, all or none)")
            })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Everything `chaos` was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub nodes: u64,
    pub duration: Duration,
    pub clients: u64,
    pub keys: u64,
    pub nemesis: Vec<Family>,
    pub interval: Duration,
    pub seed: u64,
    pub dir: Option<PathBuf>,
    pub json: bool,
    pub check_time: Duration,
}

/// Parses seconds: a positive decimal number within `range`.
fn seconds(name: &str, text: &str, min: f64, max: f64) -> Result<Duration> {
    let value: f64 = text
        .parse()
        .with_context(|| format!("{name} {text}: not a number of seconds"))?;
    if !(min..=max).contains(&value) {
        bail!("{name} {text}: must be between {min} and {max} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

fn integer(name: &str, text: &str, min: u64, max: u64) -> Result<u64> {
    let value: u64 = text
        .parse()
        .with_context(|| format!("{name} {text}: not a whole number"))?;
    if !(min..=max).contains(&value) {
        bail!("{name} {text}: must be between {min} and {max}");
    }
    Ok(value)
}

fn families(text: &str) -> Result<Vec<Family>> {
    match text {
        "all" => return Ok(Family::ALL.to_vec()),
        "none" => return Ok(Vec::new()),
        _ => {}
    }
    let mut list = Vec::new();
    for item in text.split(',') {
        let family = Family::parse(item.trim())?;
        if !list.contains(&family) {
            list.push(family);
        }
    }
    Ok(list)
}

impl Options {
    /// Parses the options after `chaos`. `Ok(None)` means `--help` was
    /// printed.
    ///
    /// # Errors
    /// An unknown option, a missing or malformed value, or a value out of
    /// range, with a message naming the option.
    pub fn parse(mut parser: lexopt::Parser) -> Result<Option<Options>> {
        let mut options = Options {
            nodes: 3,
            duration: Duration::from_secs(120),
            clients: 8,
            keys: 8,
            nemesis: Family::ALL.to_vec(),
            interval: Duration::from_secs(5),
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |elapsed| elapsed.as_nanos() as u64),
            dir: None,
            json: false,
            check_time: Duration::from_secs(60),
        };
        while let Some(arg) = parser.next()? {
            let flag = match &arg {
                Long(name) => format!("--{name}"),
                _ => String::new(),
            };
            match arg {
                Long("nodes") => {
                    let text: String = parser.value()?.string()?;
                    options.nodes = integer(&flag, &text, 3, 5)?;
                    if options.nodes == 4 {
                        bail!("--nodes 4: must be 3 or 5");
                    }
                }
                Long("duration") => {
                    options.duration = seconds(&flag, &parser.value()?.string()?, 1.0, 86_400.0)?;
                }
                Long("clients") => {
                    options.clients = integer(&flag, &parser.value()?.string()?, 1, 64)?
                }
                Long("keys") => options.keys = integer(&flag, &parser.value()?.string()?, 1, 1024)?,
                Long("nemesis") => options.nemesis = families(&parser.value()?.string()?)?,
                Long("interval") => {
                    options.interval = seconds(&flag, &parser.value()?.string()?, 0.5, 600.0)?;
                }
                Long("seed") => {
                    options.seed = integer(&flag, &parser.value()?.string()?, 0, u64::MAX)?;
                }
                Long("dir") => options.dir = Some(parser.value()?.into()),
                Long("json") => options.json = true,
                Long("check-time") => {
                    options.check_time = seconds(&flag, &parser.value()?.string()?, 0.1, 86_400.0)?;
                }
                Long("help") | Short('h') => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => bail!("{}\n{USAGE}", other.unexpected()),
            }
        }
        if let Some(dir) = &options.dir {
            let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if occupied {
                bail!("--dir {}: exists and is not empty", dir.display());
            }
        }
        Ok(Some(options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>> {
        Options::parse(lexopt::Parser::from_args(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let options = parse(&[]).unwrap().unwrap();
        assert_eq!(options.nodes, 3);
        assert_eq!(options.duration, Duration::from_secs(120));
        assert_eq!(options.clients, 8);
        assert_eq!(options.keys, 8);
        assert_eq!(options.nemesis, Family::ALL.to_vec());
        assert_eq!(options.interval, Duration::from_secs(5));
        assert!(!options.json);
    }

    #[test]
    fn every_option() {
        let options = parse(&[
            "--nodes",
            "5",
            "--duration",
            "45",
            "--clients",
            "4",
            "--keys",
            "16",
            "--nemesis",
            "kill,disk,kill",
            "--interval",
            "2.5",
            "--seed",
            "7",
            "--json",
            "--check-time",
            "10",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(options.nodes, 5);
        assert_eq!(options.duration, Duration::from_secs(45));
        assert_eq!(options.clients, 4);
        assert_eq!(options.keys, 16);
        assert_eq!(options.nemesis, vec![Family::Kill, Family::Disk]);
        assert_eq!(options.interval, Duration::from_millis(2500));
        assert_eq!(options.seed, 7);
        assert!(options.json);
        assert_eq!(options.check_time, Duration::from_secs(10));
        assert_eq!(
            parse(&["--nemesis", "none"]).unwrap().unwrap().nemesis,
            vec![]
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        for (args, needle) in [
            (&["--nodes", "4"][..], "--nodes"),
            (&["--nodes", "7"][..], "--nodes"),
            (&["--nodes", "three"][..], "--nodes"),
            (&["--duration", "0"][..], "--duration"),
            (&["--duration", "-3"][..], "--duration"),
            (&["--clients", "0"][..], "--clients"),
            (&["--keys", "100000"][..], "--keys"),
            (&["--nemesis", "kill,flood"][..], "flood"),
            (&["--interval", "0.1"][..], "--interval"),
            (&["--seed", "x"][..], "--seed"),
            (&["--check-time", "nan"][..], "--check-time"),
            (&["--bogus"][..], "bogus"),
            (&["--nodes"][..], "nodes"),
        ] {
            let error = format!("{:#}", parse(args).unwrap_err());
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    #[test]
    fn occupied_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let error = format!("{:#}", parse(&["--dir", &path]).unwrap_err());
        assert!(error.contains("not empty"), "{error}");
        let empty = dir.path().join("empty");
        let path = empty.to_string_lossy().into_owned();
        assert_eq!(parse(&["--dir", &path]).unwrap().unwrap().dir, Some(empty));
    }
}
