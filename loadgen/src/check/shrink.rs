//! Shrinking a failing key history to a small failing sub-history (delta
//! debugging), and explaining why it fails.

use super::history::{KeyHistory, ABSENT, UNOBSERVED};
use super::render::describe;
use super::search::{search, Budget, SearchResult};
use super::{Op, Operation, Outcome};

/// Returns a sub-history of `operations` (one key, invocation order, known
/// not to be linearizable) that is still not linearizable, as small as the
/// time budget allows.
///
/// Plain removal of operations is misleading: the rest can fail for a new
/// reason (remove the writes before a read and the read "sees a value never
/// written"). So the shrinker weakens instead (see [`weakened_fails`]): an
/// operation left out of the result stays in the searched history as
/// indeterminate, or is dropped if it completed before the earliest kept
/// operation, the key then holding any value. Each accepted step still
/// proves the original history wrong, and the kept operations fail on
/// their own too (dropping indeterminate operations only removes options,
/// and "any value" includes absent).
///
/// First bisection finds a short prefix of definite operations to keep,
/// then galloping and bisection a short suffix of that prefix; then windows
/// of ever smaller size are weakened in turn (ddmin), reads first so that
/// the writes they saw stay as context. Last, for readability, the writes
/// of the values the result observes are added back when that still fails.
pub(super) fn shrink<'a>(operations: &[&'a Operation], budget: &Budget) -> Vec<&'a Operation> {
    let definite: Vec<usize> = (0..operations.len())
        .filter(|&index| operations[index].outcome != Outcome::Indeterminate)
        .collect();
    let fails = |kept: &[usize]| !kept.is_empty() && weakened_fails(operations, kept, budget);

    if definite.is_empty() {
        // Cannot fail (every operation may never take effect); nothing to
        // shrink towards.
        return operations.to_vec();
    }
    // Bisect for a short failing prefix of the definite operations. Failure
    // is monotone in the prefix kept (a longer prefix weakens less), so
    // this finds the shortest.
    let (mut low, mut high) = (1, definite.len());
    while low < high && !budget.expired() {
        let middle = low + (high - low) / 2;
        if fails(&definite[..middle]) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    // Then for a short failing suffix of that prefix: monotone too (a later
    // start weakens more). Galloping back from the end keeps the kept part,
    // and so each search, small; weakened operations whose values no kept
    // read observes are all alike to the search, so they cost little.
    let mut passing = high;
    let mut low = 0;
    let mut size = 1;
    while !budget.expired() {
        let start = high.saturating_sub(size);
        if start == 0 {
            break;
        }
        if fails(&definite[start..high]) {
            low = start;
            break;
        }
        passing = start;
        size *= 2;
    }
    // The largest failing start in `low..passing`.
    let mut start = passing.saturating_sub(1).max(low);
    while low < start && !budget.expired() {
        let middle = start - (start - low) / 2;
        if fails(&definite[middle..high]) {
            low = middle;
        } else {
            start = middle - 1;
        }
    }
    let kept: Vec<usize> = definite[low..high].to_vec();

    // Reads first, so that the writes they saw stay as context; then all.
    let is_read = |index: usize| matches!(operations[index].op, Op::Get { .. });
    let kept = weaken_windows(kept, is_read, &fails, budget);
    let kept = weaken_windows(kept, |_| true, &fails, budget);
    // The writes added back for context may let more reads go.
    let with_context = with_writes(operations, kept.clone());
    let kept = if with_context.len() > kept.len() && fails(&with_context) {
        weaken_windows(with_context, is_read, &fails, budget)
    } else {
        kept
    };
    kept.into_iter().map(|index| operations[index]).collect()
}

/// Delta debugging: weakens windows of ever smaller size among the `kept`
/// operations for which `weakenable` holds, keeping each weakening after
/// which `fails` still holds, until no single one can go or time is up.
fn weaken_windows(
    mut kept: Vec<usize>,
    weakenable: impl Fn(usize) -> bool,
    fails: &impl Fn(&[usize]) -> bool,
    budget: &Budget,
) -> Vec<usize> {
    let candidates = kept.iter().filter(|&&index| weakenable(index)).count();
    let mut window = (candidates / 2).max(1);
    loop {
        let mut weakened_any = false;
        let mut start = 0;
        loop {
            if budget.expired() {
                return kept;
            }
            // The next `window` weakenable operations from position `start`.
            let Some(first) = (start..kept.len()).find(|&position| weakenable(kept[position]))
            else {
                break;
            };
            let chosen: Vec<usize> = (first..kept.len())
                .filter(|&position| weakenable(kept[position]))
                .take(window)
                .collect();
            let end = chosen.last().map_or(first, |&last| last + 1);
            let candidate: Vec<usize> = kept
                .iter()
                .enumerate()
                .filter(|(position, _)| !chosen.contains(position))
                .map(|(_, &index)| index)
                .collect();
            if fails(&candidate) {
                kept = candidate;
                weakened_any = true;
                start = first;
            } else {
                start = end;
            }
        }
        if window > 1 {
            window /= 2;
        } else if !weakened_any {
            return kept;
        }
    }
}

/// A short human explanation of why `operations` (one key, not
/// linearizable) fail: the longest order found in which operations can take
/// effect, and the operation that could not take effect in time after it.
pub(super) fn explain(operations: &[&Operation], budget: &Budget) -> String {
    let history = KeyHistory::new(operations);
    match search(&history, ABSENT, budget, true) {
        SearchResult::NotLinearizable(deepest) => {
            let order: Vec<String> = deepest
                .order
                .iter()
                .map(|&index| describe(history.operations[index].operation))
                .collect();
            // A value no operation observes has no state of its own; name it
            // after the last write in the order, which is what set it.
            let state_text = if deepest.state == UNOBSERVED {
                deepest
                    .order
                    .iter()
                    .rev()
                    .find_map(|&index| match &history.operations[index].operation.op {
                        Op::Put { value, .. } | Op::Cas { new: value, .. } => {
                            Some(format!("{value:?}"))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| history.describe(deepest.state))
            } else {
                history.describe(deepest.state)
            };
            let prefix = if order.is_empty() {
                format!(
                    "no operation of these {} can take effect first (the key starts absent)",
                    operations.len()
                )
            } else {
                format!(
                    "at most {} of these {} operations take effect in a consistent order \
                     [{}], leaving the key {}",
                    order.len(),
                    operations.len(),
                    order.join("; "),
                    state_text
                )
            };
            match deepest.blocked {
                Some(index) => format!(
                    "{prefix}; then nothing lets `{}` take effect before it returned",
                    describe(history.operations[index].operation)
                ),
                None => prefix,
            }
        }
        SearchResult::Linearizable => {
            "internal inconsistency: the shrunk history checks as linearizable".to_owned()
        }
        SearchResult::GaveUp(reason) => {
            format!("not linearizable (explanation cut short: {reason})")
        }
    }
}

/// Whether `operations` (one key, invocation order, validated) still fail
/// with only the `kept` operations definite (`kept` not empty).
///
/// With `cut` the earliest invocation among the kept operations: the other
/// operations that completed before `cut` are dropped, and the key may hold
/// anything at `cut`; the other operations still running at `cut` or
/// invoked later are weakened to indeterminate. Sound: from a linearization
/// of the whole history, take as the state at `cut` the state just before
/// the first operation invoked at or after it; the weakened operations that
/// took effect before that point do not take effect, the rest keep their
/// place, and dropped reads are gone.
fn weakened_fails(operations: &[&Operation], kept: &[usize], budget: &Budget) -> bool {
    let mut keep = vec![false; operations.len()];
    for &index in kept {
        keep[index] = true;
    }
    let cut_ns = kept
        .iter()
        .map(|&index| operations[index].invoked_ns)
        .min()
        .unwrap_or(0);
    // Operations invoked after every kept one returned can take effect
    // last, or never: they cannot matter, and leaving them out keeps the
    // search small.
    let horizon_ns = kept
        .iter()
        .map(|&index| operations[index].completed_ns.unwrap_or(u64::MAX))
        .max()
        .unwrap_or(0);
    let mut dropped_any = false;
    let mut relevant: Vec<&Operation> = Vec::new();
    let mut weaken: Vec<bool> = Vec::new();
    for (index, &operation) in operations.iter().enumerate() {
        let completed_before_cut = operation.outcome != Outcome::Indeterminate
            && operation
                .completed_ns
                .is_some_and(|completed_ns| completed_ns < cut_ns);
        if !keep[index] && completed_before_cut {
            dropped_any = true;
        } else if keep[index] || operation.invoked_ns <= horizon_ns {
            relevant.push(operation);
            weaken.push(!keep[index]);
        }
    }
    let history = KeyHistory::weakened(&relevant, |index| weaken[index]);
    let fails_from = |initial| {
        matches!(
            search(&history, initial, budget, false),
            SearchResult::NotLinearizable(_)
        )
    };
    if dropped_any {
        history.states().all(fails_from)
    } else {
        fails_from(ABSENT)
    }
}

/// The `kept` operations plus the definite writes of the values they
/// observe (when a value has at most two such writes), in invocation order.
/// Adding definite operations back can move the cut of [`weakened_fails`]
/// earlier, so the caller checks that the result still fails.
fn with_writes(operations: &[&Operation], mut kept: Vec<usize>) -> Vec<usize> {
    const WRITES_PER_VALUE_MAX: usize = 2;
    let observed: Vec<&str> = kept
        .iter()
        .filter_map(
            |&index| match (&operations[index].op, &operations[index].outcome) {
                (Op::Get { .. }, Outcome::Get(Some(value))) => Some(value.as_str()),
                (Op::Cas { expected, .. }, Outcome::Cas(true)) => Some(expected.as_str()),
                _ => None,
            },
        )
        .collect();
    for value in observed {
        let writes: Vec<usize> = (0..operations.len())
            .filter(
                |&index| match (&operations[index].op, &operations[index].outcome) {
                    (Op::Put { value: written, .. }, Outcome::Put) => written == value,
                    (Op::Cas { new, .. }, Outcome::Cas(true)) => new == value,
                    _ => false,
                },
            )
            .collect();
        if writes.len() <= WRITES_PER_VALUE_MAX {
            kept.extend(writes);
        }
    }
    kept.sort_unstable();
    kept.dedup();
    kept
}
