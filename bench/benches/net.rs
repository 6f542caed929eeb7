//! Criterion benchmarks for `net` (filled by its issue).

fn main() {}
