//! The simulator's parts; `sim.rs` holds the tests that run them.

pub mod checkers;
pub mod cluster;
pub mod disk;
pub mod events;
pub mod log;
pub mod nemesis;
pub mod network;
pub mod node;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod state_machine;
pub mod workload;
