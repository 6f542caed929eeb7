//! One key's history compiled for the search: values interned to small
//! integers, each operation reduced to a step function on the model state.

use std::collections::HashMap;

use super::{Op, Operation, Outcome};

/// The model state of a key: [`ABSENT`], or `1 + index` into
/// [`KeyHistory::values`].
pub(super) type State = u32;

/// The state of a key never written (or deleted).
pub(super) const ABSENT: State = 0;

/// What an operation does to the state of its key, given what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// The history of one key, in invocation order, indeterminate reads dropped.
#[derive(Debug)]
pub(super) struct KeyHistory<'a> {
    pub(super) operations: Vec<KeyOperation<'a>>,
    /// Interned values: state `s > 0` is `values[s - 1]`.
    values: Vec<&'a str>,
}

impl<'a> KeyHistory<'a> {
    /// Compiles `operations`, which are all on one key and validated (each
    /// outcome fits its op; see `validate` in the parent module).
    pub(super) fn new(operations: &[&'a Operation]) -> Self {
        let mut sorted: Vec<&'a Operation> = operations.to_vec();
        // Stable: equal invocation times keep their order in the history.
        sorted.sort_by_key(|operation| operation.invoked_ns);
        let mut interner = Interner::default();
        let compiled = sorted
            .into_iter()
            .filter_map(|operation| {
                let step = compile(operation, &mut interner)?;
                let return_ns = match (step.is_definite(), operation.completed_ns) {
                    (true, Some(completed_ns)) => u128::from(completed_ns),
                    _ => u128::MAX,
                };
                Some(KeyOperation {
                    operation,
                    step,
                    call_ns: u128::from(operation.invoked_ns),
                    return_ns,
                })
            })
            .collect();
        KeyHistory {
            operations: compiled,
            values: interner.values,
        }
    }

    /// The operations kept, in invocation order.
    pub(super) fn operations(&self) -> Vec<&'a Operation> {
        self.operations
            .iter()
            .map(|operation| operation.operation)
            .collect()
    }

    /// How a state reads to a person.
    pub(super) fn describe(&self, state: State) -> String {
        match state.checked_sub(1) {
            None => "absent".to_owned(),
            Some(index) => format!("{:?}", self.values[index as usize]),
        }
    }
}

#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, State>,
    values: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn intern(&mut self, value: &'a str) -> State {
        let next = State::try_from(self.values.len() + 1)
            .expect("fewer than 2^32 distinct values: a history that large does not fit in memory");
        let values = &mut self.values;
        *self.ids.entry(value).or_insert_with(|| {
            values.push(value);
            next
        })
    }
}

/// The step of one operation, or `None` for an indeterminate read (it
/// constrains nothing). The outcome must fit the op (checked by `validate`);
/// a misfit is treated as indeterminate rather than trusted.
fn compile<'a>(operation: &'a Operation, interner: &mut Interner<'a>) -> Option<Step> {
    let step = match (&operation.op, &operation.outcome) {
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
