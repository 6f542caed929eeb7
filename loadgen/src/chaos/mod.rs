//! Fault experiments on real processes (filled in by the chaos work).
