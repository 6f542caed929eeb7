//! Criterion benchmarks for `wal` (filled by its issue).

fn main() {}
