//! The search's memory: the set of linearized operations, and the visited
//! (linearized set, state) pairs with subsumption.

use std::collections::HashMap;

use super::history::State;

/// The set of linearized operations: one bitset for definite operations (in
/// call order, so it is mostly an all-ones prefix, which the memo stores as a
/// count) and one for indeterminate operations.
#[derive(Debug)]
pub(super) struct Linearized {
    definite: Vec<u64>,
    indeterminate: Vec<u64>,
    /// Words of `definite` before this one are all ones.
    full_words: usize,
    /// Words of `definite` from this one on are all zeros.
    end_words: usize,
}

impl Linearized {
    pub(super) fn new(definite_count: usize, indeterminate_count: usize) -> Self {
        Linearized {
            definite: vec![0; definite_count.div_ceil(64)],
            indeterminate: vec![0; indeterminate_count.div_ceil(64)],
            full_words: 0,
            end_words: 0,
        }
    }

    /// Adds or removes operation `bit` of the indeterminate or definite set.
    pub(super) fn flip(&mut self, indeterminate: bool, bit: u32) {
        let word = bit as usize / 64;
        let mask = 1u64 << (bit % 64);
        if indeterminate {
            self.indeterminate[word] ^= mask;
            return;
        }
        self.definite[word] ^= mask;
        if self.definite[word] & mask != 0 {
            self.end_words = self.end_words.max(word + 1);
            while self.full_words < self.definite.len()
                && self.definite[self.full_words] == u64::MAX
            {
                self.full_words += 1;
            }
        } else {
            self.full_words = self.full_words.min(word);
            while self.end_words > self.full_words && self.definite[self.end_words - 1] == 0 {
                self.end_words -= 1;
            }
        }
    }
}

/// What must match exactly for one visited node to subsume another: the
/// definite set (its all-ones prefix as a count, then the words up to the
/// last non-zero one), the state, and whether the last linearized operation
/// was indeterminate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Group {
    /// The model state, and in bit 32 whether the last linearized operation
    /// was indeterminate.
    state: u64,
    full_words: u32,
    definite: Box<[u64]>,
}

/// The visited nodes of one search.
///
/// Subsumption: a node with the same definite set and state as a visited
/// node, but a superset of its consumed indeterminate operations, can only
/// reach linearizations the visited node could also reach (every
/// indeterminate operation is free to never take effect), so it is pruned.
/// The same holds across the after-indeterminate flag in one direction: a
/// node restricted by it (no put may follow) is subsumed by an unrestricted
/// one, and is stored in the group of its own flag, so an unrestricted node
/// looks only at unrestricted visited nodes while a restricted node looks at
/// both. Every visited node not on the search stack has failed; one on the
/// stack subsumes only nodes below it that consumed strictly more, whose
/// continuations it explores itself.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// For each group, the antichain of minimal indeterminate sets visited.
    groups: HashMap<Group, Vec<Box<[u64]>>>,
    len: usize,
}

impl Memo {
    /// Records the node (`linearized`, `state`, `after_indeterminate`);
    /// returns `false` if a visited node subsumes it (including itself).
    pub(super) fn insert(
        &mut self,
        linearized: &Linearized,
        state: State,
        after_indeterminate: bool,
    ) -> bool {
        let end_words = linearized.end_words.max(linearized.full_words);
        let mut group = Group {
            state: u64::from(state),
            // Cannot truncate: the bitset has fewer words than there are
            // events, which are counted in `u32`.
            full_words: linearized.full_words as u32,
            definite: linearized.definite[linearized.full_words..end_words].into(),
        };
        let consumed = &linearized.indeterminate;
        if after_indeterminate {
            // An unrestricted visited node subsumes this restricted one.
            if self
                .groups
                .get(&group)
                .is_some_and(|sets| sets.iter().any(|set| subset(set, consumed)))
            {
                return false;
            }
            group.state |= 1 << 32;
        }
        let sets = self.groups.entry(group).or_default();
        if sets.iter().any(|set| subset(set, consumed)) {
            return false;
        }
        // Sets this one is a subset of are subsumed from now on.
        let before = sets.len();
        sets.retain(|set| !subset(consumed, set));
        self.len = self.len - (before - sets.len()) + 1;
        sets.push(consumed.as_slice().into());
        true
    }

    /// How many nodes are remembered.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// Whether `small ⊆ large` (bitsets of equal length).
fn subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .zip(large)
        .all(|(small, large)| small & !large == 0)
}
