//! Linearizability checker for the key-value model (filled in by the checker work).
