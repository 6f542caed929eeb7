//! Cluster configurations and their quorums (§6, thesis chapter 4).
//!
//! A configuration takes effect on a node as soon as its entry is appended
//! to the node's log, committed or not (thesis §4.1). A joint configuration
//! (C_old,new) needs a majority of *both* voter sets for elections and for
//! commitment (§6). Learners receive the log but never vote or count.
//!
//! Transitions (which change is allowed from which configuration) are in
//! [`Membership::plan_change`]; the leader's automatic leave of the joint
//! configuration is in [`Membership::leave_joint`].

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::types::{LogIndex, NodeId};

/// A cluster configuration.
///
/// Invariant: `learners` is disjoint from `voters` and `voters_outgoing`;
/// `voters` is non-empty (an empty cluster cannot elect anyone).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// The voters (C_new when joint).
    pub voters: BTreeSet<NodeId>,
    /// The voters of C_old while joint; empty when not joint.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members that replicate the log.
    pub learners: BTreeSet<NodeId>,
}

/// A requested change: the target voters and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Voters of the target configuration.
    pub voters: BTreeSet<NodeId>,
    /// Learners of the target configuration.
    pub learners: BTreeSet<NodeId>,
}

/// Why a membership payload or change is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The payload is not a valid encoding.
    #[error("membership payload malformed: {0}")]
    Malformed(&'static str),
    /// No voters.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// A node is both voter and learner.
    #[error("{0} is both a voter and a learner")]
    VoterAndLearner(NodeId),
    /// More members than the configured bound.
    #[error("{count} members exceed the limit of {limit}")]
    TooManyMembers {
        /// Members requested.
        count: usize,
        /// Limit.
        limit: usize,
    },
    /// The change is a no-op.
    #[error("the configuration already is the requested one")]
    Unchanged,
}

/// Upper bound on the members a decoded configuration may list; keeps a
/// hostile payload from making the core allocate without limit.
pub const MEMBERS_MAX: usize = 1024;

impl Membership {
    /// A simple configuration of voters only.
    #[must_use]
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            voters_outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether this is a joint configuration.
    #[must_use]
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in this configuration (either half when joint).
    #[must_use]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member (voters of both halves and learners).
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let all: BTreeSet<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.into_iter()
    }

    /// Whether the nodes for which `granted` is true form a quorum: a
    /// majority of `voters` and, when joint, of `voters_outgoing` too.
    pub fn is_quorum(&self, granted: impl Fn(NodeId) -> bool) -> bool {
        let majority = |set: &BTreeSet<NodeId>| {
            set.is_empty() || set.iter().filter(|id| granted(**id)).count() * 2 > set.len()
        };
        majority(&self.voters) && majority(&self.voters_outgoing)
    }

    /// Whether the nodes for which `rejected` is true make a quorum
    /// impossible (used to lose an election early).
    pub fn is_quorum_impossible(&self, rejected: impl Fn(NodeId) -> bool) -> bool {
        let lost = |set: &BTreeSet<NodeId>| {
            !set.is_empty() && set.iter().filter(|id| rejected(**id)).count() * 2 >= set.len()
        };
        lost(&self.voters) || lost(&self.voters_outgoing)
    }

    /// The highest index stored on a quorum, given each voter's match index.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let of = |set: &BTreeSet<NodeId>| {
            if set.is_empty() {
                return LogIndex(u64::MAX);
            }
            let mut indexes: Vec<LogIndex> = set.iter().map(|id| matched(*id)).collect();
            indexes.sort_unstable_by(|a, b| b.cmp(a));
            indexes[set.len() / 2]
        };
        of(&self.voters).min(of(&self.voters_outgoing))
    }

    /// Checks the structural invariant.
    ///
    /// # Errors
    /// The first violation found.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if let Some(id) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Err(MembershipError::VoterAndLearner(*id));
        }
        let count = self.voters.len() + self.voters_outgoing.len() + self.learners.len();
        if count > MEMBERS_MAX {
            return Err(MembershipError::TooManyMembers {
                count,
                limit: MEMBERS_MAX,
            });
        }
        Ok(())
    }

    /// The configuration to append for `change`, from this (non-joint)
    /// configuration: the target itself when at most one voter is added or
    /// removed (single-server change, thesis §4.1), a joint configuration
    /// otherwise (§6).
    ///
    /// # Errors
    /// [`MembershipError`] if the target is invalid or equal to the current.
    pub fn plan_change(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        let target = Membership {
            voters: change.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners: change.learners.clone(),
        };
        target.validate()?;
        if &target == self {
            return Err(MembershipError::Unchanged);
        }
        let differing = self.voters.symmetric_difference(&target.voters).count();
        if differing <= 1 {
            return Ok(target);
        }
        let joint = Membership {
            voters: target.voters,
            voters_outgoing: self.voters.clone(),
            learners: target.learners,
        };
        joint.validate()?;
        Ok(joint)
    }

    /// The configuration that leaves this joint one: C_new alone.
    #[must_use]
    pub fn leave_joint(&self) -> Membership {
        Membership {
            voters: self.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
        }
    }

    /// Encodes as an entry payload: three length-prefixed lists of u64 LE.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::new();
        for set in [&self.voters, &self.voters_outgoing, &self.learners] {
            // Bounded by MEMBERS_MAX through validate(); u32 is plenty.
            buffer.put_u32_le(set.len() as u32);
            for id in set {
                buffer.put_u64_le(id.0);
            }
        }
        buffer.freeze()
    }

    /// Decodes an entry payload produced by [`Membership::encode`].
    ///
    /// # Errors
    /// [`MembershipError`] if the payload is malformed or invalid.
    pub fn decode(payload: &[u8]) -> Result<Membership, MembershipError> {
        let mut rest = payload;
        let mut take = |len: usize| -> Result<&[u8], MembershipError> {
            if rest.len() < len {
                return Err(MembershipError::Malformed("truncated"));
            }
            let (head, tail) = rest.split_at(len);
            rest = tail;
            Ok(head)
        };
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        let mut total = 0usize;
        for set in &mut sets {
            let count = u32::from_le_bytes(
                take(4)?
                    .try_into()
                    .map_err(|_| MembershipError::Malformed("count"))?,
            ) as usize;
            total += count;
            if total > MEMBERS_MAX {
                return Err(MembershipError::TooManyMembers {
                    count: total,
                    limit: MEMBERS_MAX,
                });
            }
            for _ in 0..count {
                let id = u64::from_le_bytes(
                    take(8)?
                        .try_into()
                        .map_err(|_| MembershipError::Malformed("id"))?,
                );
                set.insert(NodeId(id));
            }
        }
        if !rest.is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        let [voters, voters_outgoing, learners] = sets;
        let membership = Membership {
            voters,
            voters_outgoing,
            learners,
        };
        membership.validate()?;
        Ok(membership)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn joint_quorum_needs_both_majorities() {
        let joint = Membership {
            voters: ids(&[3, 4, 5]),
            voters_outgoing: ids(&[1, 2, 3]),
            learners: ids(&[]),
        };
        assert!(!joint.is_quorum(|id| [1, 2].contains(&id.0)));
        assert!(joint.is_quorum(|id| [1, 3, 4].contains(&id.0)));
        let matched = |id: NodeId| LogIndex([0, 10, 9, 8, 2, 1][id.0 as usize]);
        // old: 10,9,8 -> 9 ; new: 8,2,1 -> 2
        assert_eq!(joint.committed_index(matched), LogIndex(2));
    }

    #[test]
    fn plan_change_uses_joint_only_when_needed() {
        let current = Membership::new(ids(&[1, 2, 3]));
        let add_one = MembershipChange {
            voters: ids(&[1, 2, 3, 4]),
            learners: ids(&[]),
        };
        assert!(!current.plan_change(&add_one).expect("valid").is_joint());
        let replace_two = MembershipChange {
            voters: ids(&[1, 4, 5]),
            learners: ids(&[]),
        };
        let joint = current.plan_change(&replace_two).expect("valid");
        assert!(joint.is_joint());
        assert_eq!(joint.leave_joint().voters, ids(&[1, 4, 5]));
        let same = MembershipChange {
            voters: ids(&[1, 2, 3]),
            learners: ids(&[]),
        };
        assert_eq!(current.plan_change(&same), Err(MembershipError::Unchanged));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let m = Membership {
            voters: ids(&[1, 2]),
            voters_outgoing: ids(&[7]),
            learners: ids(&[9]),
        };
        assert_eq!(Membership::decode(&m.encode()), Ok(m.clone()));
        let bytes = m.encode();
        assert!(Membership::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Membership::decode(&[255, 255, 255, 255]).is_err());
        let both = Membership {
            voters: ids(&[1]),
            voters_outgoing: ids(&[]),
            learners: ids(&[1]),
        };
        assert_eq!(
            Membership::decode(&both.encode()),
            Err(MembershipError::VoterAndLearner(NodeId(1)))
        );
    }
}
