//! `barge`: a high-throughput batching Raft engine.
//!
//! [`core`] is the Raft protocol as a deterministic, sans-IO state machine.

pub mod core;
pub mod node;
pub mod wire;
