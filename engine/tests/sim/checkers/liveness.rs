//! Liveness (Raft §5.2 and §9.3 of the thesis: with a healed network and
//! every node up, a leader is elected and requests complete): once faults
//! stop, within a bounded number of ticks there is one leader that every
//! member of its configuration follows in its term, a proposal made after
//! the faults stopped has been acknowledged, every member has applied
//! everything acknowledged, and no member still holds an unresolved
//! proposal.

use barge::core::{LogIndex, Membership, NodeId, Role, Term};

use super::Checkers;

/// What liveness needs to know about one node.
#[derive(Debug, Clone)]
pub struct NodeSummary {
    pub id: NodeId,
    pub up: bool,
    pub role: Option<Role>,
    pub term: Option<Term>,
    pub leader: Option<NodeId>,
    pub applied: LogIndex,
    /// Proposals issued before faults stopped and not yet resolved.
    pub proposals_pending: usize,
    pub membership: Option<Membership>,
}

/// `Ok` once the cluster has settled; otherwise why not yet (reported if
/// the bound runs out). `acked_before` is the highest index acknowledged
/// when faults stopped: something above it must be acknowledged since.
pub fn settled(
    nodes: &[NodeSummary],
    acked_before: LogIndex,
    checkers: &Checkers,
) -> Result<(), String> {
    let Some(leader) = nodes
        .iter()
        .filter(|node| node.up && node.role == Some(Role::Leader))
        .max_by_key(|node| node.term)
    else {
        return Err("no leader".into());
    };
    let membership = leader
        .membership
        .as_ref()
        .ok_or("leader without membership")?;
    let acked = checkers.no_lost_acknowledged_proposal.highest_acked();
    if acked <= acked_before {
        return Err(format!(
            "leader {} of {:?}: nothing acknowledged since faults stopped (highest {acked})",
            leader.id, leader.term
        ));
    }
    for node in nodes.iter().filter(|node| membership.contains(node.id)) {
        if !node.up {
            return Err(format!("member {} is down", node.id));
        }
        if node.term != leader.term || node.leader != Some(leader.id) {
            return Err(format!(
                "member {} at {:?} follows {:?}, not leader {} of {:?}",
                node.id, node.term, node.leader, leader.id, leader.term
            ));
        }
        if node.applied < acked {
            return Err(format!(
                "member {} applied {} of acknowledged {acked}",
                node.id, node.applied
            ));
        }
        if node.proposals_pending > 0 {
            return Err(format!(
                "member {} still has {} unresolved proposals",
                node.id, node.proposals_pending
            ));
        }
    }
    Ok(())
}
