//! Shrinking a failing key history to a small failing sub-history (delta
//! debugging), and explaining why it fails.

use std::collections::HashSet;

use super::history::KeyHistory;
use super::render::describe;
use super::search::{search, Budget, SearchResult};
use super::{Op, Operation, Outcome};

/// Returns a sub-history of `operations` (one key, invocation order, known
/// not to be linearizable) that is still not linearizable, as small as the
/// time budget allows: first the shortest failing prefix found by bisection,
/// then removal of ever smaller windows of operations (ddmin), keeping each
/// removal after which the rest still fails.
///
/// A removal that would leave a read (or a successful `CAS`) observing a
/// value whose writers were all removed is not tried: the result would
/// "fail" only because the value is no longer written, hiding the real
/// culprit behind a read of a value never written.
pub(super) fn shrink<'a>(operations: &[&'a Operation], budget: &Budget) -> Vec<&'a Operation> {
    let written_anywhere = written_values(operations);
    let fails = |candidate: &[&'a Operation]| {
        !candidate.is_empty()
            && observed_writes_kept(candidate, &written_anywhere)
            && matches!(
                search(&KeyHistory::new(candidate), budget, false),
                SearchResult::NotLinearizable(_)
            )
    };

    // Bisect for a short failing prefix. Failure is not monotone in the
    // prefix length (a later write can explain an earlier read), so `high`
    // only ever moves to a length seen failing.
    let (mut low, mut high) = (1, operations.len());
    while low < high && !budget.expired() {
        let middle = low + (high - low) / 2;
        if fails(&operations[..middle]) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let mut current: Vec<&'a Operation> = operations[..high].to_vec();

    let mut window = (current.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() {
            if budget.expired() {
                return current;
            }
            let end = (start + window).min(current.len());
            let candidate: Vec<&'a Operation> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            if fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if window > 1 {
            window /= 2;
        } else if !removed_any {
            return current;
        }
    }
}

/// A short human explanation of why `operations` (one key, not
/// linearizable) fail: the longest order found in which operations can take
/// effect, and the operation that could not take effect in time after it.
pub(super) fn explain(operations: &[&Operation], budget: &Budget) -> String {
    let history = KeyHistory::new(operations);
    match search(&history, budget, true) {
        SearchResult::NotLinearizable(deepest) => {
            let order: Vec<String> = deepest
                .order
                .iter()
                .map(|&index| describe(history.operations[index].operation))
                .collect();
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
                    history.describe(deepest.state)
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

/// The values some operation of `operations` may have written.
fn written_values<'a>(operations: &[&'a Operation]) -> HashSet<&'a str> {
    operations
        .iter()
        .filter_map(|operation| match (&operation.op, &operation.outcome) {
            (Op::Put { value, .. }, _) => Some(value.as_str()),
            (Op::Cas { new, .. }, Outcome::Cas(true) | Outcome::Indeterminate) => {
                Some(new.as_str())
            }
            _ => None,
        })
        .collect()
}

/// Whether every value observed in `candidate` that some operation of the
/// whole history wrote is still written by some operation of `candidate`.
fn observed_writes_kept(candidate: &[&Operation], written_anywhere: &HashSet<&str>) -> bool {
    let written_here = written_values(candidate);
    candidate.iter().all(|operation| {
        let observed = match (&operation.op, &operation.outcome) {
            (Op::Get { .. }, Outcome::Get(Some(value))) => value.as_str(),
            (Op::Cas { expected, .. }, Outcome::Cas(true)) => expected.as_str(),
            _ => return true,
        };
        !written_anywhere.contains(observed) || written_here.contains(observed)
    })
}
