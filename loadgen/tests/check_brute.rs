//! The checker against brute force: on many small random histories (one
//! key, few values, overlapping operations, some indeterminate), the verdict
//! must equal that of trying every order of every subset of indeterminate
//! operations; and every smallest failing sub-history it reports must fail
//! under brute force too. This is what keeps the search's pruning rules
//! (no put right after an indeterminate operation, interchangeable
//! indeterminate operations, subsumption in the memo) and the shrinker's
//! weakening honest.

use barge_loadgen::check::{check, render, Limits, Op, Operation, Outcome, Verdict};

mod common;
use common::Rng;

const VALUES: [&str; 3] = ["a", "b", "c"];

fn random_history(rng: &mut Rng) -> Vec<Operation> {
    let count = 1 + rng.below(7);
    let value = |rng: &mut Rng| VALUES[rng.below(3) as usize].to_owned();
    (0..count)
        .map(|client| {
            let invoked_ns = rng.below(12);
            let completed_ns = invoked_ns + rng.below(6);
            let key = "k".to_owned();
            let (op, outcome) = match rng.below(4) {
                0 => (
                    Op::Put {
                        key,
                        value: value(rng),
                    },
                    Outcome::Put,
                ),
                1 => {
                    let seen = (rng.below(4) > 0).then(|| value(rng));
                    (Op::Get { key }, Outcome::Get(seen))
                }
                2 => {
                    let (expected, new) = (value(rng), value(rng));
                    (
                        Op::Cas { key, expected, new },
                        Outcome::Cas(rng.below(2) == 0),
                    )
                }
                _ => (Op::Delete { key }, Outcome::Delete(rng.below(2) == 0)),
            };
            let indeterminate = rng.below(5) == 0;
            Operation {
                client,
                op,
                outcome: if indeterminate {
                    Outcome::Indeterminate
                } else {
                    outcome
                },
                invoked_ns,
                // Now and then a definite operation whose completion is
                // unknown: it must take effect, at any time after invocation.
                completed_ns: (!indeterminate && rng.below(10) > 0).then_some(completed_ns),
            }
        })
        .collect()
}

/// The state after `operation` takes effect in `state`, if its recorded
/// outcome allows it there. An indeterminate operation may have any result.
fn apply(operation: &Operation, state: &Option<String>) -> Option<Option<String>> {
    let definite = operation.outcome != Outcome::Indeterminate;
    match (&operation.op, &operation.outcome) {
        (Op::Put { value, .. }, _) => Some(Some(value.clone())),
        (Op::Get { .. }, Outcome::Get(seen)) => (seen == state).then(|| state.clone()),
        (Op::Get { .. }, _) => None,
        (Op::Cas { expected, new, .. }, outcome) => {
            let matches = state.as_ref() == Some(expected);
            match (definite, outcome) {
                (true, Outcome::Cas(true)) => matches.then(|| Some(new.clone())),
                (true, _) => (!matches).then(|| state.clone()),
                (false, _) => Some(if matches {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
            }
        }
        (Op::Delete { .. }, Outcome::Delete(was_present)) => {
            (state.is_some() == *was_present).then_some(None)
        }
        (Op::Delete { .. }, _) => Some(None),
    }
}

/// Whether some order of all definite operations and some subset of the
/// indeterminate ones, consistent with real time, explains every result.
fn brute_force_linearizable(history: &[Operation]) -> bool {
    let operations: Vec<&Operation> = history
        .iter()
        .filter(|operation| {
            !(operation.outcome == Outcome::Indeterminate && matches!(operation.op, Op::Get { .. }))
        })
        .collect();
    let optional: Vec<usize> = (0..operations.len())
        .filter(|&index| operations[index].outcome == Outcome::Indeterminate)
        .collect();
    (0..1u32 << optional.len()).any(|subset| {
        let chosen: Vec<usize> = (0..operations.len())
            .filter(
                |index| match optional.iter().position(|optional| optional == index) {
                    Some(bit) => subset & (1 << bit) != 0,
                    None => true,
                },
            )
            .collect();
        orders_exist(
            &operations,
            &chosen,
            &mut vec![false; operations.len()],
            &None,
        )
    })
}

fn orders_exist(
    operations: &[&Operation],
    chosen: &[usize],
    placed: &mut Vec<bool>,
    state: &Option<String>,
) -> bool {
    if chosen.iter().all(|&index| placed[index]) {
        return true;
    }
    for &next in chosen {
        if placed[next] {
            continue;
        }
        // Every chosen operation that completed before `next` was invoked
        // must already be placed.
        let ready = chosen.iter().all(|&other| {
            placed[other]
                || other == next
                || operations[other].outcome == Outcome::Indeterminate
                || operations[other]
                    .completed_ns
                    .is_none_or(|completed_ns| completed_ns >= operations[next].invoked_ns)
        });
        if !ready {
            continue;
        }
        if let Some(after) = apply(operations[next], state) {
            placed[next] = true;
            let found = orders_exist(operations, chosen, placed, &after);
            placed[next] = false;
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn verdicts_match_brute_force_on_small_histories() {
    let (mut linearizable, mut violations) = (0, 0);
    for seed in 0..20_000u64 {
        let history = random_history(&mut Rng(seed));
        let expected = brute_force_linearizable(&history);
        match check(&history, &Limits::default()) {
            Verdict::Linearizable => {
                assert!(
                    expected,
                    "seed {seed}: checker says linearizable:\n{}",
                    render(&history)
                );
                linearizable += 1;
            }
            Verdict::NotLinearizable {
                smallest_failing, ..
            } => {
                assert!(
                    !expected,
                    "seed {seed}: checker says violation:\n{}",
                    render(&history)
                );
                assert!(
                    !brute_force_linearizable(&smallest_failing),
                    "seed {seed}: the reported sub-history is linearizable:\n{}\nof:\n{}",
                    render(&smallest_failing),
                    render(&history)
                );
                violations += 1;
            }
            Verdict::Unknown { reason } => panic!("seed {seed}: unknown ({reason})"),
        }
    }
    eprintln!("{linearizable} linearizable, {violations} violations");
    // Both verdicts must be well represented for the comparison to mean much.
    assert!(
        linearizable > 2_000 && violations > 2_000,
        "{linearizable} / {violations}"
    );
}
