//! The Wing–Gong–Lowe search over one key's history.
//!
//! Definite operations contribute a call and a return entry to a doubly
//! linked list sorted by time; indeterminate operations have no return (it
//! is at infinity) and sit in classes, below. At each node of the search the
//! candidates are the operations invoked before the first return entry of
//! the list: that operation must take effect before it returned, so
//! whatever takes effect before it must have been invoked by then. The
//! definite candidates are tried first, then the indeterminate ones: most
//! indeterminate operations are never needed. Linearizing a definite
//! candidate lifts it out of the list (undone in LIFO order on backtracking,
//! as in dancing links); the search succeeds when the list is empty, the
//! remaining indeterminate operations never taking effect.
//!
//! One pruning rule keeps indeterminate operations from multiplying the
//! search space (without it, every failed node tries every subset of the
//! pending indeterminate writes): an indeterminate operation is never
//! directly followed by a blind write (a put). Any linearization can be put
//! in that form by dropping each indeterminate operation so followed, since
//! the put hides its effect and it may as well never have happened; so the
//! rule loses no linearization. Whether the last linearized operation was
//! indeterminate is part of the memoised state, because it changes which
//! continuations a node explores.
//!
//! Indeterminate operations with equal steps (most often puts of values no
//! read observes, which all count as one state) are interchangeable once
//! invoked, so only the earliest-invoked unconsumed one of each class is
//! ever tried.
//!
//! The memo also applies subsumption (see [`Memo`]): a node that differs
//! from a visited one only by having consumed more indeterminate operations
//! can do nothing the visited one could not.

use std::time::Instant;

use super::history::{KeyHistory, State};
use super::memo::{Linearized, Memo};

/// How often (in search steps) the clock is read.
const STEPS_PER_CLOCK_READ: u64 = 1024;

/// The bounds one search runs under.
#[derive(Clone, Debug)]
pub(super) struct Budget {
    /// When to give up; `None` for never (the time limit overflowed `Instant`).
    pub(super) deadline: Option<Instant>,
    /// Most memoised (linearized set, state) pairs per search.
    pub(super) states_max: usize,
    /// Most search steps per search.
    pub(super) steps_max: u64,
}

impl Budget {
    pub(super) fn new(deadline: Option<Instant>, states_max: usize) -> Self {
        Budget {
            deadline,
            states_max,
            steps_max: u64::MAX,
        }
    }

    /// The same deadline, with at most `steps_max` steps per search.
    pub(super) fn with_steps_max(&self, steps_max: u64) -> Self {
        Budget {
            steps_max,
            ..self.clone()
        }
    }

    pub(super) fn expired(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// How a search ended.
#[derive(Debug)]
pub(super) enum SearchResult {
    Linearizable,
    NotLinearizable(Deepest),
    GaveUp(String),
}

/// The longest partial linearization the search reached (recorded only when
/// asked for; empty otherwise), to explain a failure.
#[derive(Debug, Default)]
pub(super) struct Deepest {
    /// Indices into the history's operations, in linearization order.
    pub(super) order: Vec<usize>,
    /// The state after them.
    pub(super) state: State,
    /// The pending definite operation that returned first: nothing could be
    /// linearized in time for it (index into the history's operations).
    pub(super) blocked: Option<usize>,
    /// How many steps the search took to fail.
    pub(super) steps: u64,
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// An entry of a linked list; entry `HEAD` of each list is a sentinel.
#[derive(Clone, Copy, Debug)]
struct Entry {
    prev: u32,
    next: u32,
    /// Index into the history's operations.
    operation: u32,
    /// Position of this event among all events sorted by time.
    position: u32,
    /// For a call, the entry of its return; `NIL` for a return.
    matching: u32,
    /// Bit of this operation in its list's linearized set.
    bit: u32,
}

/// A doubly linked list whose removals are undone in reverse order.
#[derive(Debug)]
struct List {
    entries: Vec<Entry>,
}

impl List {
    fn with_head() -> Self {
        let head = Entry {
            prev: NIL,
            next: NIL,
            operation: NIL,
            position: 0,
            matching: NIL,
            bit: 0,
        };
        List {
            entries: vec![head],
        }
    }

    fn first(&self) -> u32 {
        self.entries[HEAD as usize].next
    }

    fn push(&mut self, operation: u32, position: u32, bit: u32) -> u32 {
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 events per key");
        let last = index - 1;
        self.entries[last as usize].next = index;
        self.entries.push(Entry {
            prev: last,
            next: NIL,
            operation,
            position,
            matching: NIL,
            bit,
        });
        index
    }

    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        self.entries[prev as usize].next = next;
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Relinks an entry unlinked last (dancing links: its neighbours still
    /// point around it).
    fn relink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        self.entries[prev as usize].next = index;
        if next != NIL {
            self.entries[next as usize].prev = index;
        }
    }

    /// Removes a call entry and its matching return.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.entries[call as usize].matching);
    }

    fn unlift(&mut self, call: u32) {
        self.relink(self.entries[call as usize].matching);
        self.relink(call);
    }
}

/// Where the search is among the candidates of a node: walking the
/// definite list, or the classes of indeterminate operations.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    Definite(u32),
    Indeterminate(u32),
}

/// A linearized candidate, to undo on backtracking.
#[derive(Clone, Copy, Debug)]
struct Frame {
    cursor: Cursor,
    operation: u32,
    state_before: State,
    boundary: u32,
}

/// An indeterminate operation, as a member of its class.
#[derive(Clone, Copy, Debug)]
struct Member {
    operation: u32,
    /// Position of its call among all events sorted by time.
    position: u32,
    /// Its bit in the indeterminate linearized set.
    bit: u32,
}

/// The definite list and the classes of indeterminate operations built from
/// one key's history.
struct Lists {
    definite: List,
    definite_count: usize,
    /// Per class, its members in invocation order.
    classes: Vec<Vec<Member>>,
    indeterminate_count: usize,
}

impl Lists {
    fn new(history: &KeyHistory<'_>) -> Self {
        // (time, return after call at equal times, operation): a return and a
        // call at the same instant count as concurrent.
        let mut events: Vec<(u128, bool, u32)> = Vec::with_capacity(history.operations.len() * 2);
        for (index, operation) in history.operations.iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 operations per key");
            events.push((operation.call_ns, false, index));
            if operation.step.is_definite() {
                events.push((operation.return_ns, true, index));
            }
        }
        events.sort_unstable();
        let mut lists = Lists {
            definite: List::with_head(),
            definite_count: 0,
            classes: vec![Vec::new(); history.classes],
            indeterminate_count: 0,
        };
        let mut call_entries = vec![NIL; history.operations.len()];
        for (position, &(_, is_return, operation)) in events.iter().enumerate() {
            let position = u32::try_from(position).expect("fewer than 2^32 events per key");
            let key_operation = &history.operations[operation as usize];
            if is_return {
                let entry = lists.definite.push(operation, position, 0);
                let call = call_entries[operation as usize];
                lists.definite.entries[call as usize].matching = entry;
            } else if key_operation.step.is_definite() {
                let bit = lists.definite_count as u32;
                lists.definite_count += 1;
                call_entries[operation as usize] = lists.definite.push(operation, position, bit);
            } else {
                let bit = lists.indeterminate_count as u32;
                lists.indeterminate_count += 1;
                lists.classes[key_operation.class as usize].push(Member {
                    operation,
                    position,
                    bit,
                });
            }
        }
        lists
    }
}

/// Searches for a linearization of `history` from the key's `initial` state;
/// with `record`, also keeps the deepest partial linearization for an
/// explanation (costly: use it on small histories only).
pub(super) fn search(
    history: &KeyHistory<'_>,
    initial: State,
    budget: &Budget,
    record: bool,
) -> SearchResult {
    let mut lists = Lists::new(history);
    let mut linearized = Linearized::new(lists.definite_count, lists.indeterminate_count);
    let mut memo = Memo::default();
    // Per class of interchangeable indeterminate operations, how many have
    // taken effect: always its earliest-invoked members.
    let mut consumed = vec![0usize; lists.classes.len()];
    let mut stack: Vec<Frame> = Vec::new();
    let mut deepest = Deepest::default();
    let mut state = initial;
    let mut cursor = Cursor::Definite(lists.definite.first());
    // Position of the first return entry; meaningful while walking the
    // classes.
    let mut boundary = 0;
    let mut steps: u64 = 0;
    loop {
        if lists.definite.first() == NIL {
            return SearchResult::Linearizable;
        }
        steps += 1;
        if steps > budget.steps_max {
            return SearchResult::GaveUp(format!("step limit of {} reached", budget.steps_max));
        }
        if steps % STEPS_PER_CLOCK_READ == 0 && budget.expired() {
            return SearchResult::GaveUp(format!(
                "time limit reached after {steps} search steps and {} states",
                memo.len()
            ));
        }
        let candidate = match cursor {
            Cursor::Definite(index) => {
                // Cannot be NIL: the walk stops at the first return entry,
                // and every call in the list has its return after it.
                let entry = lists.definite.entries[index as usize];
                if entry.matching == NIL {
                    boundary = entry.position;
                    if record && stack.len() >= deepest.order.len() {
                        deepest = record_deepest(&stack, state, entry.operation);
                    }
                    cursor = Cursor::Indeterminate(0);
                    continue;
                }
                Some((entry.operation, entry.bit))
            }
            Cursor::Indeterminate(class) => match lists.classes.get(class as usize) {
                None => None,
                Some(members) => match members.get(consumed[class as usize]) {
                    Some(head) if head.position < boundary => Some((head.operation, head.bit)),
                    _ => {
                        cursor = Cursor::Indeterminate(class + 1);
                        continue;
                    }
                },
            },
        };
        let Some((operation, bit)) = candidate else {
            // Every candidate failed here: undo the last linearization and
            // try the candidate after it.
            let Some(frame) = stack.pop() else {
                deepest.steps = steps;
                return SearchResult::NotLinearizable(deepest);
            };
            state = frame.state_before;
            boundary = frame.boundary;
            cursor = match frame.cursor {
                Cursor::Definite(index) => {
                    lists.definite.unlift(index);
                    let entry = lists.definite.entries[index as usize];
                    linearized.flip(false, entry.bit);
                    Cursor::Definite(entry.next)
                }
                Cursor::Indeterminate(class) => {
                    consumed[class as usize] -= 1;
                    let member = lists.classes[class as usize][consumed[class as usize]];
                    linearized.flip(true, member.bit);
                    Cursor::Indeterminate(class + 1)
                }
            };
            continue;
        };
        let step = history.operations[operation as usize].step;
        let indeterminate = matches!(cursor, Cursor::Indeterminate(_));
        let after_indeterminate = stack
            .last()
            .is_some_and(|frame| matches!(frame.cursor, Cursor::Indeterminate(_)));
        let applied = if after_indeterminate && step.is_blind_write() {
            None
        } else {
            step.apply(state)
        };
        if let Some(next_state) = applied {
            linearized.flip(indeterminate, bit);
            if memo.insert(&linearized, next_state, indeterminate) {
                if memo.len() > budget.states_max {
                    return SearchResult::GaveUp(format!(
                        "state limit of {} reached after {steps} search steps",
                        budget.states_max
                    ));
                }
                stack.push(Frame {
                    cursor,
                    operation,
                    state_before: state,
                    boundary,
                });
                state = next_state;
                match cursor {
                    Cursor::Definite(index) => lists.definite.lift(index),
                    Cursor::Indeterminate(class) => consumed[class as usize] += 1,
                }
                cursor = Cursor::Definite(lists.definite.first());
                continue;
            }
            linearized.flip(indeterminate, bit);
        }
        cursor = match cursor {
            Cursor::Definite(index) => {
                Cursor::Definite(lists.definite.entries[index as usize].next)
            }
            Cursor::Indeterminate(class) => Cursor::Indeterminate(class + 1),
        };
    }
}

fn record_deepest(stack: &[Frame], state: State, blocked: u32) -> Deepest {
    Deepest {
        order: stack.iter().map(|frame| frame.operation as usize).collect(),
        state,
        blocked: Some(blocked as usize),
        steps: 0,
    }
}
