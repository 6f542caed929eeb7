//! The one trait an embedder implements.

use bytes::Bytes;

use crate::core::Entry;

/// The application's replicated state.
///
/// Called on the node's Raft thread, in log order; a slow `apply` slows
/// commits of everything behind it, so keep it in memory and cheap, and
/// hand heavy work to another thread.
pub trait StateMachine: Send + 'static {
    /// Applies committed entries in order (only application entries: no-ops
    /// and membership entries are the engine's) and pushes exactly one
    /// response per entry into `responses`, in the same order. The response
    /// of a proposal is returned by [`super::Node::propose`].
    ///
    /// Must be deterministic: every replica applies the same entries and
    /// must reach the same state.
    fn apply(&mut self, entries: &[Entry], responses: &mut Vec<Bytes>);

    /// Serializes the whole state (everything applied so far). Called when
    /// the log since the last snapshot exceeds the core's thresholds.
    ///
    /// # Errors
    /// A message; the node logs it and retries at the next threshold.
    fn snapshot(&mut self) -> Result<Bytes, String>;

    /// Replaces the whole state with a snapshot's.
    ///
    /// # Errors
    /// A message; at start this refuses to start the node, when installing
    /// a leader's snapshot it stops the node (its state would be unknown).
    fn restore(&mut self, snapshot: Bytes) -> Result<(), String>;
}
