//! One key's history compiled for the search: values interned to small
//! integers, each operation reduced to a step function on the model state.

use std::collections::HashMap;

use super::{Op, Operation, Outcome};

/// The model state of a key: [`ABSENT`], [`UNOBSERVED`], or `1 + index`
/// into `KeyHistory::values`.
pub(super) type State = u32;

/// The state of a key never written (or deleted).
pub(super) const ABSENT: State = 0;

/// The state of a key holding a value that no operation of the history
/// observes (no read returns it, no compare-and-set expects it). Every step
/// treats all such values alike, so they share one state: fewer distinct
/// states to search, and interchangeable indeterminate writes.
pub(super) const UNOBSERVED: State = 1;

/// What an operation does to the state of its key, given what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    Put {
        value: State,
    },
    Get {
        seen: State,
    },
    CasSwapped {
        expected: State,
        new: State,
    },
    CasMismatch {
        expected: State,
    },
    Delete {
        was_present: bool,
    },
    /// Indeterminate writes: they may take effect, with whatever result.
    MaybePut {
        value: State,
    },
    MaybeCas {
        expected: State,
        new: State,
    },
    MaybeDelete,
}

impl Step {
    /// The state after taking effect in `state`, or `None` if the recorded
    /// result is impossible there. An indeterminate operation that would not
    /// change the state also answers `None`: taking effect then is the same
    /// as never taking effect, which the search always allows anyway.
    pub(super) fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Put { value } => Some(value),
            Step::Get { seen } => (state == seen).then_some(state),
            Step::CasSwapped { expected, new } => (state == expected).then_some(new),
            Step::CasMismatch { expected } => (state != expected).then_some(state),
            Step::Delete { was_present } => ((state != ABSENT) == was_present).then_some(ABSENT),
            Step::MaybePut { value } => (state != value).then_some(value),
            Step::MaybeCas { expected, new } => (state == expected && state != new).then_some(new),
            Step::MaybeDelete => (state != ABSENT).then_some(ABSENT),
        }
    }

    /// Whether the operation sets the state without looking at it: an
    /// operation taking effect just before it is never observed.
    pub(super) fn is_blind_write(self) -> bool {
        matches!(self, Step::Put { .. } | Step::MaybePut { .. })
    }

    /// Whether the operation certainly took effect (it has a recorded result).
    pub(super) fn is_definite(self) -> bool {
        !matches!(
            self,
            Step::MaybePut { .. } | Step::MaybeCas { .. } | Step::MaybeDelete
        )
    }
}

/// One operation of a key, ready for the search.
#[derive(Clone, Debug)]
pub(super) struct KeyOperation<'a> {
    pub(super) operation: &'a Operation,
    pub(super) step: Step,
    /// Invocation time.
    pub(super) call_ns: u128,
    /// Return time of a definite operation; `u128::MAX` stands for "at an
    /// unknown time", which is later than every real time. Unused for an
    /// indeterminate operation, which has no return.
    pub(super) return_ns: u128,
    /// Indeterminate operations with equal steps are interchangeable once
    /// invoked: they form a class, and the search only ever lets the
    /// earliest-invoked unconsumed one of a class take effect. Unused for
    /// definite operations.
    pub(super) class: u32,
}

/// The history of one key, in invocation order, indeterminate reads dropped.
#[derive(Debug)]
pub(super) struct KeyHistory<'a> {
    pub(super) operations: Vec<KeyOperation<'a>>,
    /// Interned values: state `s > 0` is `values[s - 1]` (`values[0]` is a
    /// placeholder for [`UNOBSERVED`]).
    values: Vec<&'a str>,
    /// How many classes of indeterminate operations there are.
    pub(super) classes: usize,
}

impl<'a> KeyHistory<'a> {
    /// Compiles `operations`, which are all on one key and validated (each
    /// outcome fits its op; see `validate` in the parent module).
    pub(super) fn new(operations: &[&'a Operation]) -> Self {
        Self::weakened(operations, |_| false)
    }

    /// Compiles `operations` (as [`KeyHistory::new`]) with the operations at
    /// the indices where `weaken` is true made indeterminate: they may take
    /// effect at any time after their invocation, or never, whatever they
    /// returned (a weakened read is dropped). Weakening only adds
    /// linearizations, so if the weakened history fails, so does the
    /// original.
    pub(super) fn weakened(operations: &[&'a Operation], weaken: impl Fn(usize) -> bool) -> Self {
        let mut sorted: Vec<(&'a Operation, bool)> = operations
            .iter()
            .enumerate()
            .map(|(index, &operation)| (operation, weaken(index)))
            .collect();
        // Stable: equal invocation times keep their order in the history.
        sorted.sort_by_key(|(operation, _)| operation.invoked_ns);
        let mut interner = Interner::observing(&sorted);
        let mut classes: HashMap<Step, u32> = HashMap::new();
        let compiled = sorted
            .into_iter()
            .filter_map(|(operation, weaken)| {
                let step = compile(operation, weaken, &mut interner)?;
                let return_ns = match (step.is_definite(), operation.completed_ns) {
                    (true, Some(completed_ns)) => u128::from(completed_ns),
                    _ => u128::MAX,
                };
                let class = if step.is_definite() {
                    0
                } else {
                    // Cannot truncate: fewer classes than operations, which
                    // the search counts in `u32`.
                    let next_class = classes.len() as u32;
                    *classes.entry(step).or_insert(next_class)
                };
                Some(KeyOperation {
                    operation,
                    step,
                    call_ns: u128::from(operation.invoked_ns),
                    return_ns,
                    class,
                })
            })
            .collect();
        KeyHistory {
            operations: compiled,
            values: interner.values,
            classes: classes.len(),
        }
    }

    /// The operations kept, in invocation order.
    pub(super) fn operations(&self) -> Vec<&'a Operation> {
        self.operations
            .iter()
            .map(|operation| operation.operation)
            .collect()
    }

    /// Every state a key can be in with this history's values.
    pub(super) fn states(&self) -> std::ops::RangeInclusive<State> {
        // Cannot truncate: values were interned with `State` ids.
        ABSENT..=self.values.len() as State
    }

    /// How a state reads to a person.
    pub(super) fn describe(&self, state: State) -> String {
        match state {
            ABSENT => "absent".to_owned(),
            UNOBSERVED => "holding a value no operation observes".to_owned(),
            _ => format!("{:?}", self.values[state as usize - 1]),
        }
    }
}

struct Interner<'a> {
    ids: HashMap<&'a str, State>,
    values: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    /// An interner giving its own state only to the values that `operations`
    /// observe: read by a definite read, or expected by a compare-and-set.
    fn observing(operations: &[(&'a Operation, bool)]) -> Self {
        let mut interner = Interner {
            ids: HashMap::new(),
            values: vec![""],
        };
        for &(operation, weaken) in operations {
            let observed = match (&operation.op, &operation.outcome) {
                (Op::Get { .. }, Outcome::Get(Some(value))) if !weaken => value,
                (Op::Cas { expected, .. }, _) => expected,
                _ => continue,
            };
            let next = State::try_from(interner.values.len() + 1).expect(
                "fewer than 2^32 distinct values: a history that large does not fit in memory",
            );
            let values = &mut interner.values;
            interner.ids.entry(observed).or_insert_with(|| {
                values.push(observed);
                next
            });
        }
        interner
    }

    fn intern(&mut self, value: &str) -> State {
        self.ids.get(value).copied().unwrap_or(UNOBSERVED)
    }
}

/// The step of one operation (as if indeterminate when `weaken`), or `None`
/// for an indeterminate read (it constrains nothing). The outcome must fit the op (checked by `validate`);
/// a misfit is treated as indeterminate rather than trusted.
fn compile<'a>(
    operation: &'a Operation,
    weaken: bool,
    interner: &mut Interner<'a>,
) -> Option<Step> {
    let outcome = if weaken {
        &Outcome::Indeterminate
    } else {
        &operation.outcome
    };
    let step = match (&operation.op, outcome) {
        (Op::Put { value, .. }, Outcome::Put) => Step::Put {
            value: interner.intern(value),
        },
        (Op::Get { .. }, Outcome::Get(seen)) => Step::Get {
            seen: seen
                .as_deref()
                .map_or(ABSENT, |value| interner.intern(value)),
        },
        (Op::Cas { expected, new, .. }, Outcome::Cas(true)) => Step::CasSwapped {
            expected: interner.intern(expected),
            new: interner.intern(new),
        },
        (Op::Cas { expected, .. }, Outcome::Cas(false)) => Step::CasMismatch {
            expected: interner.intern(expected),
        },
        (Op::Delete { .. }, Outcome::Delete(was_present)) => Step::Delete {
            was_present: *was_present,
        },
        (Op::Get { .. }, _) => return None,
        (Op::Put { value, .. }, _) => Step::MaybePut {
            value: interner.intern(value),
        },
        (Op::Cas { expected, new, .. }, _) => Step::MaybeCas {
            expected: interner.intern(expected),
            new: interner.intern(new),
        },
        (Op::Delete { .. }, _) => Step::MaybeDelete,
    };
    Some(step)
}
