//! `barge-loadgen certs`: writes a development cluster CA and node
//! certificates as PEM files (names documented in `barge_net::tls`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use barge_net::{ClusterId, PeerId};
use lexopt::prelude::*;

const USAGE: &str = "usage: barge-loadgen certs [--nodes N] --out DIR [--cluster HEX]

Writes DIR/ca.pem, DIR/ca.key.pem, DIR/node-<id>.pem and DIR/node-<id>.key.pem
for node ids 1..=N (default 3), and DIR/cluster (the cluster id, hex; default 1).
Each node certificate names node-<id>.<cluster as 16 hex digits>.barge.";

pub fn run(mut parser: lexopt::Parser) -> Result<()> {
    let mut nodes: u64 = 3;
    let mut out: Option<PathBuf> = None;
    let mut cluster = ClusterId(1);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("nodes") => nodes = parser.value()?.parse()?,
            Long("out") => out = Some(parser.value()?.into()),
            Long("cluster") => {
                let text: String = parser.value()?.parse()?;
                cluster = ClusterId(
                    u64::from_str_radix(text.trim_start_matches("0x"), 16)
                        .with_context(|| format!("--cluster {text}: not a hex number"))?,
                );
            }
            Long("help") | Short('h') => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    let Some(out) = out else {
        bail!("--out DIR is required\n{USAGE}");
    };
    if nodes == 0 || nodes > 1000 {
        bail!("--nodes must be between 1 and 1000, got {nodes}");
    }
    let ids: Vec<PeerId> = (1..=nodes).map(PeerId).collect();
    let written = barge_net::tls::write_dev_cluster(&out, cluster, &ids)
        .with_context(|| format!("writing certificates to {}", out.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
