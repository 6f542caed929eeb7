//! Filled by its issue.

pub fn run(_parser: lexopt::Parser) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
