//! Finding the load generator's child processes from the outside, for the
//! tests that check they stop when their parent dies.

use std::path::Path;

/// Command lines of running `barge-loadgen <subcommand>` processes whose
/// arguments mention `path` (they name their data directories under it).
pub fn processes_using(path: &Path, subcommand: &str) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let subcommand = format!(" {subcommand} ");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| {
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            (line.contains(&needle) && line.contains(&subcommand)).then_some(line)
        })
        .collect()
}
