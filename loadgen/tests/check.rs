//! The linearizability checker on hand-written histories: shapes known to be
//! linearizable, and the classic violations (stale read, lost update, …),
//! each of which must be found and shrunk to a few operations that still
//! contain the culprit.

use std::time::Duration;

use barge_loadgen::check::{check, render, Limits, Op, Operation, Outcome, Verdict};

/// Milliseconds, to write times readably.
const MS: u64 = 1_000_000;

fn put(client: u64, key: &str, value: &str, invoked_ms: u64, completed_ms: u64) -> Operation {
    Operation {
        client,
        op: Op::Put {
            key: key.into(),
            value: value.into(),
        },
        outcome: Outcome::Put,
        invoked_ns: invoked_ms * MS,
        completed_ns: Some(completed_ms * MS),
    }
}

fn get(
    client: u64,
    key: &str,
    seen: Option<&str>,
    invoked_ms: u64,
    completed_ms: u64,
) -> Operation {
    Operation {
        client,
        op: Op::Get { key: key.into() },
        outcome: Outcome::Get(seen.map(Into::into)),
        invoked_ns: invoked_ms * MS,
        completed_ns: Some(completed_ms * MS),
    }
}

fn cas(
    client: u64,
    key: &str,
    expected: &str,
    new: &str,
    swapped: bool,
    invoked_ms: u64,
    completed_ms: u64,
) -> Operation {
    Operation {
        client,
        op: Op::Cas {
            key: key.into(),
            expected: expected.into(),
            new: new.into(),
        },
        outcome: Outcome::Cas(swapped),
        invoked_ns: invoked_ms * MS,
        completed_ns: Some(completed_ms * MS),
    }
}

fn delete(
    client: u64,
    key: &str,
    was_present: bool,
    invoked_ms: u64,
    completed_ms: u64,
) -> Operation {
    Operation {
        client,
        op: Op::Delete { key: key.into() },
        outcome: Outcome::Delete(was_present),
        invoked_ns: invoked_ms * MS,
        completed_ns: Some(completed_ms * MS),
    }
}

/// Makes an operation indeterminate: it timed out after its invocation.
fn timed_out(mut operation: Operation) -> Operation {
    operation.outcome = Outcome::Indeterminate;
    operation.completed_ns = None;
    operation
}

fn verdict(history: &[Operation]) -> Verdict {
    check(history, &Limits::default())
}

/// Asserts a violation on `key` whose smallest failing sub-history has at
/// most `size_max` operations and contains `culprit`; returns it.
fn assert_violation(
    history: &[Operation],
    key: &str,
    culprit: &Operation,
    size_max: usize,
) -> Vec<Operation> {
    match verdict(history) {
        Verdict::NotLinearizable {
            key: failing_key,
            smallest_failing,
            explanation,
        } => {
            let timeline = render(&smallest_failing);
            assert_eq!(failing_key, key, "{timeline}");
            assert!(smallest_failing.len() <= size_max, "too large:\n{timeline}");
            assert!(
                smallest_failing.contains(culprit),
                "culprit missing:\n{timeline}"
            );
            assert!(!explanation.is_empty());
            assert!(
                matches!(verdict(&smallest_failing), Verdict::NotLinearizable { .. }),
                "the sub-history alone passes:\n{timeline}"
            );
            assert!(
                smallest_failing
                    .windows(2)
                    .all(|pair| pair[0].invoked_ns <= pair[1].invoked_ns),
                "not in invocation order:\n{timeline}"
            );
            smallest_failing
        }
        other => panic!("expected a violation on {key}, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(verdict(&[]), Verdict::Linearizable);
}

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        get(1, "x", None, 0, 1),
        put(1, "x", "a", 2, 3),
        get(2, "x", Some("a"), 4, 5),
        cas(1, "x", "a", "b", true, 6, 7),
        cas(2, "x", "a", "c", false, 8, 9),
        get(3, "x", Some("b"), 10, 11),
        delete(3, "x", true, 12, 13),
        delete(1, "x", false, 14, 15),
        get(2, "x", None, 16, 17),
        cas(2, "x", "b", "d", false, 18, 19),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn overlapping_writes_allow_reads_to_see_either_order() {
    // Two concurrent writes; one reader sees "a" then "b", another only "b".
    let history = [
        put(1, "x", "a", 0, 10),
        put(2, "x", "b", 0, 10),
        get(3, "x", Some("a"), 1, 2),
        get(3, "x", Some("b"), 3, 4),
        get(4, "x", Some("b"), 11, 12),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
    // The other order is just as valid.
    let history = [
        put(1, "x", "a", 0, 10),
        put(2, "x", "b", 0, 10),
        get(3, "x", Some("b"), 1, 2),
        get(3, "x", Some("a"), 3, 4),
        get(4, "x", Some("a"), 11, 12),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn read_overlapping_a_write_may_see_old_or_new_value() {
    let history = [
        put(1, "x", "old", 0, 1),
        put(1, "x", "new", 2, 10),
        get(2, "x", Some("old"), 3, 4),
        get(3, "x", Some("new"), 5, 6),
        get(2, "x", Some("new"), 7, 8),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn cas_chain_is_linearizable() {
    let mut history = vec![put(0, "x", "0", 0, 1)];
    // Four clients race CAS n -> n+1, overlapping; each step succeeds once,
    // and the losers report a mismatch.
    for step in 0..20u64 {
        let base = 10 + step * 10;
        let (old, new) = (step.to_string(), (step + 1).to_string());
        let winner = step % 4;
        for client in 0..4 {
            history.push(cas(
                client,
                "x",
                &old,
                &new,
                client == winner,
                base,
                base + 8,
            ));
        }
    }
    history.push(get(9, "x", Some("20"), 300, 301));
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn deletes_are_linearizable() {
    let history = [
        put(1, "x", "a", 0, 1),
        // Two concurrent deletes: exactly one finds the key.
        delete(2, "x", true, 2, 5),
        delete(3, "x", false, 3, 6),
        get(1, "x", None, 7, 8),
        put(2, "x", "b", 9, 10),
        // A delete overlapping a read: the read may come first.
        delete(3, "x", true, 11, 14),
        get(1, "x", Some("b"), 12, 13),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn indeterminate_write_that_took_effect_is_linearizable() {
    let history = [
        put(1, "x", "a", 0, 1),
        timed_out(put(2, "x", "b", 2, 0)),
        get(3, "x", Some("a"), 10, 11),
        // Seen long after the timeout: it took effect late.
        get(3, "x", Some("b"), 100, 101),
        get(1, "x", Some("b"), 200, 201),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn indeterminate_write_that_never_took_effect_is_linearizable() {
    let history = [
        put(1, "x", "a", 0, 1),
        timed_out(put(2, "x", "b", 2, 0)),
        timed_out(cas(4, "x", "a", "c", false, 3, 0)),
        timed_out(delete(5, "x", false, 4, 0)),
        get(3, "x", Some("a"), 10, 11),
        get(3, "x", Some("a"), 100, 101),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn indeterminate_reads_constrain_nothing() {
    let history = [
        put(1, "x", "a", 0, 1),
        timed_out(get(2, "x", Some("never written"), 2, 0)),
        get(3, "x", Some("a"), 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn indeterminate_write_takes_effect_at_most_once() {
    // "b" is seen, overwritten by "c", then seen again: one indeterminate
    // put cannot take effect twice.
    let history = [
        timed_out(put(1, "x", "b", 0, 0)),
        get(2, "x", Some("b"), 10, 11),
        put(2, "x", "c", 12, 13),
        get(2, "x", Some("b"), 14, 15),
    ];
    let culprit = get(2, "x", Some("b"), 14, 15);
    assert_violation(&history, "x", &culprit, 4);
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_invocation() {
    let history = [
        get(2, "x", Some("b"), 0, 1),
        timed_out(put(1, "x", "b", 5, 0)),
    ];
    let culprit = history[0].clone();
    assert_violation(&history, "x", &culprit, 2);
}

#[test]
fn many_clients_interleaved_are_linearizable() {
    // 16 clients each write their own value once, all concurrent, then every
    // client reads the same final value.
    let mut history: Vec<Operation> = (0..16)
        .map(|client| put(client, "x", &format!("v{client}"), 0, 100))
        .collect();
    history.extend((0..16).map(|client| get(client, "x", Some("v7"), 101, 102)));
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn stale_read_is_a_violation() {
    let history = [
        put(1, "x", "a", 0, 10),
        get(4, "x", Some("a"), 5, 8),
        put(2, "x", "b", 20, 30),
        get(4, "x", Some("b"), 31, 33),
        // Begins after "b" was acknowledged, yet returns "a".
        get(3, "x", Some("a"), 40, 50),
        get(4, "x", Some("b"), 60, 61),
    ];
    let culprit = history[4].clone();
    let failing = assert_violation(&history, "x", &culprit, 4);
    assert!(
        failing.contains(&history[2]),
        "the newer write explains the violation"
    );
}

#[test]
fn lost_update_is_a_violation() {
    // Both CAS from "0" succeed: one update is lost.
    let history = [
        put(1, "x", "0", 0, 1),
        cas(2, "x", "0", "1", true, 2, 10),
        cas(3, "x", "0", "2", true, 3, 11),
        get(1, "x", Some("2"), 12, 13),
    ];
    let culprit = history[1].clone();
    let failing = assert_violation(&history, "x", &culprit, 4);
    assert!(failing.contains(&history[2]));
}

#[test]
fn read_of_a_value_never_written_is_a_violation() {
    let history = [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 3),
        get(3, "x", Some("z"), 4, 5),
        get(3, "x", Some("b"), 6, 7),
    ];
    let culprit = history[2].clone();
    assert_violation(&history, "x", &culprit, 2);
}

#[test]
fn read_of_a_write_not_yet_invoked_is_a_violation() {
    let history = [
        put(1, "x", "a", 0, 1),
        // Returns "b" before the put of "b" was invoked.
        get(2, "x", Some("b"), 2, 3),
        put(3, "x", "b", 4, 5),
    ];
    let culprit = history[1].clone();
    let failing = assert_violation(&history, "x", &culprit, 3);
    assert!(failing.contains(&history[2]));
}

#[test]
fn non_monotonic_reads_are_a_violation() {
    // The write of "b" overlaps both reads, but once a read saw "b", a later
    // read cannot see "a" again.
    let history = [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 100),
        get(3, "x", Some("b"), 10, 11),
        get(4, "x", Some("a"), 20, 21),
    ];
    let culprit = history[3].clone();
    let failing = assert_violation(&history, "x", &culprit, 4);
    assert!(failing.contains(&history[2]));
}

#[test]
fn delete_reporting_absent_while_present_is_a_violation() {
    let history = [
        put(1, "x", "a", 0, 1),
        get(2, "x", Some("a"), 2, 3),
        delete(3, "x", false, 4, 5),
        get(2, "x", Some("a"), 6, 7),
    ];
    let culprit = history[2].clone();
    assert_violation(&history, "x", &culprit, 3);
}

#[test]
fn violation_on_one_key_among_many_is_named() {
    let mut history = Vec::new();
    for key in 0..20u64 {
        let key = format!("k{key}");
        for step in 0..20u64 {
            let t = step * 10;
            history.push(put(step % 4, &key, &format!("{key}-{step}"), t, t + 6));
            history.push(get(
                4 + step % 4,
                &key,
                Some(&format!("{key}-{step}")),
                t + 7,
                t + 9,
            ));
        }
    }
    // A stale read on k13 only.
    history.push(get(9, "k13", Some("k13-3"), 500, 501));
    let culprit = history.last().cloned().expect("just pushed");
    let failing = assert_violation(&history, "k13", &culprit, 3);
    assert!(failing.iter().all(|operation| operation.op.key() == "k13"));
}

#[test]
fn malformed_operation_gives_unknown() {
    let mut bad = put(1, "x", "a", 10, 20);
    bad.outcome = Outcome::Get(None);
    assert!(matches!(verdict(&[bad]), Verdict::Unknown { .. }));
    let backwards = put(1, "x", "a", 20, 10);
    assert!(matches!(verdict(&[backwards]), Verdict::Unknown { .. }));
}

#[test]
fn pathological_history_with_a_tiny_time_limit_is_unknown() {
    // 300 concurrent writes of distinct values and 300 concurrent reads of
    // them in reverse order, all overlapping: the one valid order interleaves
    // each write with its read, and a depth-first search that tries writes
    // in invocation order wanders through exponentially many subsets first.
    let mut history = Vec::new();
    for index in 0..300u64 {
        history.push(put(index, "x", &index.to_string(), 0, 1_000));
        history.push(get(
            1_000 + index,
            "x",
            Some(&(299 - index).to_string()),
            0,
            1_000,
        ));
    }
    history.push(timed_out(put(5_000, "x", "late", 0, 0)));
    history.push(get(5_001, "x", Some("0"), 1_001, 1_002));
    let limits = Limits {
        time: Duration::from_millis(50),
        states_max: usize::MAX,
    };
    match check(&history, &limits) {
        Verdict::Unknown { reason } => assert!(reason.contains("time"), "{reason}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    let limits = Limits {
        time: Duration::from_secs(60),
        states_max: 1_000,
    };
    match check(&history, &limits) {
        Verdict::Unknown { reason } => assert!(reason.contains("state limit"), "{reason}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[test]
fn render_prints_one_line_per_operation_relative_to_the_first() {
    let text = render(&[
        put(1, "x", "a", 10, 12),
        timed_out(get(2, "x", None, 11, 0)),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].contains("put x a") && lines[0].contains("[0.000, 2.000] ms"),
        "{text}"
    );
    assert!(
        lines[1].contains("get x") && lines[1].contains("indeterminate"),
        "{text}"
    );
    assert!(lines[1].contains("[1.000, ?] ms"), "{text}");
}
