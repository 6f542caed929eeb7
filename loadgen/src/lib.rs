//! The library half of `barge-loadgen`: the pieces of the fault-experiment
//! tool (`barge-loadgen chaos`) that its integration tests use directly.
//!
//! - [`check`]: a linearizability checker for the key-value model;
//! - [`proxy`]: a userspace UDP fault proxy placed in front of each node;
//! - [`chaos`]: the experiment itself (processes, clients, nemesis, report);
//! - [`children`]: child processes (node processes of `chaos` and of
//!   `run --processes`), killed on drop, stopping when their parent is gone;
//! - [`kv`]: the replicated key-value example (`engine/examples/kv.rs`),
//!   compiled in so that `barge-loadgen kv` runs it as a node process.

pub mod chaos;
pub mod check;
pub mod children;
pub mod proxy;

/// The key-value example, compiled from its source in `engine/examples`.
#[allow(dead_code)] // its `main` is the example's entry point, unused here
#[path = "../../engine/examples/kv.rs"]
pub mod kv;
