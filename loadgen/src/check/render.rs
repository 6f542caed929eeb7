//! Printing operations and sub-histories for people.

use std::fmt::Write as _;

use super::{Op, Operation, Outcome};

/// Renders `operations` as a timeline, one line per operation in the given
/// order: client, op, outcome, and `[invoked, completed]` in milliseconds
/// relative to the earliest invocation (`?` for an unknown completion).
///
/// ```
/// use barge_loadgen::check::{render, Op, Operation, Outcome};
///
/// let text = render(&[Operation {
///     client: 7,
///     op: Op::Put { key: "x".into(), value: "1".into() },
///     outcome: Outcome::Put,
///     invoked_ns: 5_000_000,
///     completed_ns: Some(7_500_000),
/// }]);
/// assert_eq!(text, "client 7    put x 1                        -> ok            [0.000, 2.500] ms\n");
/// ```
pub fn render(operations: &[Operation]) -> String {
    let origin_ns = operations
        .iter()
        .map(|operation| operation.invoked_ns)
        .min()
        .unwrap_or(0);
    // Signed: a malformed completion before the origin shows as negative.
    let milliseconds = |ns: u64| {
        format!(
            "{:.3}",
            (i128::from(ns) - i128::from(origin_ns)) as f64 / 1e6
        )
    };
    let mut text = String::new();
    for operation in operations {
        let completed = operation
            .completed_ns
            .map_or_else(|| "?".to_owned(), milliseconds);
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "client {:<4} {:<30} -> {:<13} [{}, {}] ms",
            operation.client,
            op_text(&operation.op),
            outcome_text(&operation.outcome),
            milliseconds(operation.invoked_ns),
            completed,
        );
    }
    text
}

/// One operation on one line without times, e.g. `client 3: get x -> "1"`.
pub(super) fn describe(operation: &Operation) -> String {
    format!(
        "client {}: {} -> {}",
        operation.client,
        op_text(&operation.op),
        outcome_text(&operation.outcome)
    )
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Put { key, value } => format!("put {key} {value}"),
        Op::Get { key } => format!("get {key}"),
        Op::Cas { key, expected, new } => format!("cas {key} {expected} {new}"),
        Op::Delete { key } => format!("del {key}"),
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Put | Outcome::Cas(true) => "ok".to_owned(),
        Outcome::Get(Some(value)) => format!("{value:?}"),
        Outcome::Get(None) => "none".to_owned(),
        Outcome::Cas(false) => "mismatch".to_owned(),
        Outcome::Delete(true) => "deleted".to_owned(),
        Outcome::Delete(false) => "absent".to_owned(),
        Outcome::Indeterminate => "indeterminate".to_owned(),
    }
}
