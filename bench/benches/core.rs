//! Criterion benchmarks for `core` (filled by its issue).

fn main() {}
