//! Criterion microbenchmarks live in `benches/`; this library holds the
//! fixtures they share.
