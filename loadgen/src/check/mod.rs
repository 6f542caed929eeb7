//! A linearizability checker for the key-value model of the KV example
//! (`PUT`, `GET`, `CAS`, `DEL` on string keys and values).
//!
//! # Contract
//!
//! [`check`] takes a history of client [`Operation`]s, each with the client
//! that issued it, what it asked, what it got back, and when it was invoked
//! and completed, and answers with a [`Verdict`]:
//!
//! - [`Verdict::Linearizable`]: there is a total order of the operations,
//!   consistent with real time (an operation that completed before another
//!   was invoked comes first), in which every result is what a single
//!   sequential map would have answered. Only given when proven.
//! - [`Verdict::NotLinearizable`]: no such order exists; the checker names the
//!   key, the smallest failing sub-history it could find for that key, and a
//!   short explanation.
//! - [`Verdict::Unknown`]: the search hit [`Limits::time`] or
//!   [`Limits::states_max`], or the history is malformed. Never read as "ok".
//!
//! Operations on different keys never constrain each other in this model
//! (linearizability is compositional), so the history is split per key and
//! each key is searched alone.
//!
//! What goes into a history:
//! - Operations that definitely failed (`REDIRECT`, `ERR` before proposing)
//!   are simply left out; so are reads that failed.
//! - An operation whose fate is unknown (timeout, lost connection) has
//!   [`Outcome::Indeterminate`] and `completed_ns: None`: it may take effect
//!   at any time after its invocation, or never. An indeterminate `Get`
//!   constrains nothing and is dropped.
//! - `CAS` on an absent key fails (`Cas(false)`), as in the KV example.
//!
//! # Algorithm
//!
//! Wing and Gong's search with Lowe's improvements, as in porcupine: the
//! calls and returns of one key's operations sit in a doubly linked list
//! sorted by time; the search repeatedly linearizes a pending call that comes
//! before the first return in the list, lifting it out of the list, and
//! backtracks when no candidate fits. Each visited (set of linearized
//! operations, model state) pair is remembered, so no subtree is searched
//! twice. Indeterminate operations are what makes such searches blow up;
//! here (details in `search.rs`):
//! - they are tried only after every definite candidate at a node failed;
//! - values no operation observes share one model state, so writes of them
//!   are interchangeable, and only the earliest-invoked unused one of each
//!   class of equal indeterminate operations is ever tried;
//! - an indeterminate operation is never directly followed by a put (it
//!   could as well never have happened);
//! - a visited node subsumes any node with the same definite operations and
//!   state that used up more indeterminate operations.
//!
//! Shrinking a failing key never trusts a sub-history that fails only
//! because operations were taken away (a read whose write was removed
//! "sees a value never written"): operations left out are weakened to
//! indeterminate, or dropped when they completed before the earliest kept
//! operation while the key may then hold any value. Either way the result
//! still proves the whole history wrong. See `shrink.rs`.
//!
//! # Example
//!
//! ```
//! use barge_loadgen::check::{check, Limits, Op, Operation, Outcome, Verdict};
//!
//! let put = |client, value: &str, invoked_ns, completed_ns| Operation {
//!     client,
//!     op: Op::Put { key: "x".into(), value: value.into() },
//!     outcome: Outcome::Put,
//!     invoked_ns,
//!     completed_ns: Some(completed_ns),
//! };
//! let get = |client, seen: &str, invoked_ns, completed_ns| Operation {
//!     client,
//!     op: Op::Get { key: "x".into() },
//!     outcome: Outcome::Get(Some(seen.into())),
//!     invoked_ns,
//!     completed_ns: Some(completed_ns),
//! };
//!
//! // Two writes in sequence, then a read of the older value: a stale read.
//! let history = [put(1, "a", 0, 10), put(2, "b", 20, 30), get(3, "a", 40, 50)];
//! match check(&history, &Limits::default()) {
//!     Verdict::NotLinearizable { key, smallest_failing, .. } => {
//!         assert_eq!(key, "x");
//!         assert_eq!(smallest_failing.len(), 3);
//!     }
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//!
//! // The same read overlapping the second write may see either value.
//! let history = [put(1, "a", 0, 10), put(2, "b", 20, 45), get(3, "a", 40, 50)];
//! assert_eq!(check(&history, &Limits::default()), Verdict::Linearizable);
//! ```

mod history;
mod memo;
mod render;
mod search;
mod shrink;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use render::render;

use history::KeyHistory;
use search::{Budget, SearchResult};

/// Each search while shrinking may take this many times the steps the
/// refutation of the whole key took, and at least [`SHRINK_STEPS_MIN`].
const SHRINK_STEPS_FACTOR: u64 = 4;
const SHRINK_STEPS_MIN: u64 = 200_000;

/// A key of the KV model.
pub type Key = String;
/// A value of the KV model.
pub type Value = String;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `PUT key value`.
    Put { key: Key, value: Value },
    /// `GET key`.
    Get { key: Key },
    /// `CAS key expected new`: set `new` if the current value is `expected`.
    Cas {
        key: Key,
        expected: Value,
        new: Value,
    },
    /// `DEL key`.
    Delete { key: Key },
}

impl Op {
    /// The key the operation is on.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What a client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `PUT` acknowledged.
    Put,
    /// `GET` answered with the value, or `None` for an absent key.
    Get(Option<Value>),
    /// `CAS`: `true` if it swapped, `false` on a mismatch (or absent key).
    Cas(bool),
    /// `DEL`: `true` if the key was present.
    Delete(bool),
    /// Timeout, `MAYBE`, lost connection: the operation may take effect at
    /// any time after its invocation, or never.
    Indeterminate,
}

/// One client operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (only used for display).
    pub client: u64,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub outcome: Outcome,
    /// When it was invoked, in nanoseconds from any fixed origin.
    pub invoked_ns: u64,
    /// When its answer arrived; `None` for an indeterminate operation.
    pub completed_ns: Option<u64>,
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists for every key.
    Linearizable,
    /// The history of `key` has no linearization.
    NotLinearizable {
        /// The first key found failing.
        key: Key,
        /// The smallest sub-history of `key` found that still fails, in
        /// invocation order. It fails on its own, and keeps failing when
        /// every other operation of the key is allowed to have taken effect
        /// at any time after its invocation, or never (and, when it starts
        /// later than the key's history, whatever the key held then).
        /// Shrinking stops at the time limit, so this is small but not
        /// necessarily minimal.
        smallest_failing: Vec<Operation>,
        /// A short human explanation of why `smallest_failing` fails.
        explanation: String,
    },
    /// The checker gave up (time or state limit) or the history is malformed.
    Unknown {
        /// Why no verdict could be reached.
        reason: String,
    },
}

/// Bounds on the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for the whole [`check`] call, shrinking included.
    pub time: Duration,
    /// Most (linearized set, state) pairs remembered while searching one key;
    /// each costs a few dozen bytes plus one bit per concurrent operation.
    pub states_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(60),
            states_max: 2_000_000,
        }
    }
}

/// Checks `history` for linearizability against the KV model, key by key.
///
/// Keys are searched in lexicographic order; the first key proven
/// non-linearizable is reported, after shrinking its history. If no key fails
/// but some key's search gave up, the verdict is [`Verdict::Unknown`].
///
/// A malformed operation (an outcome of the wrong kind for its op, or a
/// completion before its invocation) makes the verdict [`Verdict::Unknown`]
/// naming it. A definite outcome with `completed_ns: None` is accepted and
/// treated as completing at an unknown time (it must still take effect); an
/// indeterminate outcome with a completion time is treated as indeterminate.
pub fn check(history: &[Operation], limits: &Limits) -> Verdict {
    let started = Instant::now();
    let budget = Budget::new(started.checked_add(limits.time), limits.states_max);
    if let Err(reason) = validate(history) {
        return Verdict::Unknown { reason };
    }
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key
            .entry(operation.op.key())
            .or_default()
            .push(operation);
    }
    let mut gave_up: Option<String> = None;
    for (key, operations) in by_key {
        let key_history = KeyHistory::new(&operations);
        match search::search(&key_history, history::ABSENT, &budget, false) {
            SearchResult::Linearizable => {}
            SearchResult::GaveUp(reason) => {
                gave_up.get_or_insert_with(|| format!("key {key:?}: {reason}"));
            }
            SearchResult::NotLinearizable(failure) => {
                // Shrinking searches weakened histories, some much harder
                // than the original: a step cap per search keeps one of
                // them from eating the whole time limit.
                let steps_max = failure
                    .steps
                    .saturating_mul(SHRINK_STEPS_FACTOR)
                    .max(SHRINK_STEPS_MIN);
                let failing =
                    shrink::shrink(&key_history.operations(), &budget.with_steps_max(steps_max));
                let explanation = shrink::explain(&failing, &budget);
                return Verdict::NotLinearizable {
                    key: key.to_owned(),
                    smallest_failing: failing.into_iter().cloned().collect(),
                    explanation,
                };
            }
        }
    }
    match gave_up {
        None => Verdict::Linearizable,
        Some(reason) => Verdict::Unknown { reason },
    }
}

/// Checks that every operation's outcome fits its op and its times are in
/// order; the error names the first operation that does not.
fn validate(history: &[Operation]) -> Result<(), String> {
    for (index, operation) in history.iter().enumerate() {
        let fits = matches!(
            (&operation.op, &operation.outcome),
            (_, Outcome::Indeterminate)
                | (Op::Put { .. }, Outcome::Put)
                | (Op::Get { .. }, Outcome::Get(_))
                | (Op::Cas { .. }, Outcome::Cas(_))
                | (Op::Delete { .. }, Outcome::Delete(_))
        );
        if !fits {
            return Err(format!(
                "malformed history: operation {index} ({:?}) has outcome {:?}",
                operation.op, operation.outcome
            ));
        }
        if let Some(completed_ns) = operation.completed_ns {
            if completed_ns < operation.invoked_ns {
                return Err(format!(
                    "malformed history: operation {index} completed at {completed_ns} ns, \
                     before its invocation at {} ns",
                    operation.invoked_ns
                ));
            }
        }
    }
    Ok(())
}
