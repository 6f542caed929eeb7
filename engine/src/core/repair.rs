//! Protocol-aware recovery of a damaged log (after PAR, Alagappan et al.,
//! FAST 2018): a node whose log lost entries to corruption keeps its
//! promises as if it still held them, until it has them back.
//!
//! # The repair floor
//! The driver cuts the damaged log back to its intact prefix and hands the
//! core the last entry id the log held before the damage as
//! [`super::Persisted::lost`]: the *repair floor*. The node may have
//! acknowledged (and helped commit) every entry up to the floor. Raft's
//! Leader Completeness argument (§5.4.3) needs one thing from a voter: that
//! it only votes for candidates at least as up to date as the log it
//! *acknowledged*. So while the floor is set:
//! - a (pre-)vote is granted only to a candidate whose last log id is at
//!   least `max(own last, floor)`;
//! - the node never campaigns (no pre-vote, no election, no `TimeoutNow`):
//!   its own log may lack committed entries, so it must not lead.
//!
//! # When the floor clears
//! Only on *durable* state, so that the driver may drop its persisted copy
//! of the floor as soon as the core reports none
//! ([`super::Raft::repair_floor`]) without a crash bringing back a node
//! that forgot its promises:
//! - the durable log's last id reaches the floor. If its term equals the
//!   floor's, the entry at that index is the one lost (one leader per term
//!   creates it, and never rewrites its own log), so by Log Matching the log
//!   holds again everything it had up to the floor. If its term is higher,
//!   that entry was created by a leader of a later term, which held every
//!   entry committed before (Leader Completeness), and by Log Matching so
//!   does this log. Either way comparing candidates against the own log is
//!   at least as strict as against the floor;
//! - the commit index (learned from a leader, on a log that matches the
//!   leader's) reaches the floor's index and the log is durable up to it:
//!   every committed entry this node ever held (all at or below the floor)
//!   is held again, which is all the voting argument needs;
//! - a snapshot covering the floor's index is installed (the commit index
//!   moves to it: the previous case).
//!
//! # Telling the leader
//! The leader that saw this node acknowledge the lost entries believes it
//! still holds them: it would resend nothing below its match point. Every
//! answer to an append carries the node's log generation
//! ([`super::LogGeneration`]), which the driver raised durably before the
//! cut, and while the floor is set the node answers heartbeats with a
//! rejection too, so an idle leader learns it as well. A leader lowers a
//! follower's match point only on a generation newer than the one it
//! learnt the match point in (`Progress::generation_seen`) and ignores
//! answers of older generations: a rejection merely reordered behind a
//! later acknowledgement (same generation) is stale, and an acknowledgement
//! sent before the loss cannot raise the match point back. Counting an
//! acknowledgement from before the loss was safe anyway (the floor keeps
//! the promise it made), but the leader would then never resend the lost
//! entries. A new leader starts each follower at generation 0 and match 0,
//! so it needs no history.
//!
//! Lost entries that were never committed and that a new leader overwrote
//! can keep the floor set until the new leader's log passes the floor
//! (a higher term at any index does): a liveness cost, never a safety one.
//! If every copy of a committed entry is damaged, no candidate satisfies the
//! floors and no damaged node campaigns: the cluster stops, safely, and
//! says so through the floor in [`super::Metrics::repair_floor`].

use super::action::Role;
use super::config::InjectedBug;
use super::raft::Raft;
use super::types::LogId;

impl Raft {
    /// Whether the floor is ignored (the simulator's proof that it matters).
    fn repair_floor_disabled(&self) -> bool {
        self.config.testing_bug == Some(InjectedBug::RepairWithoutVoteFloor)
    }

    /// The log id candidates are compared against (§5.4.1): the own last
    /// entry, or the repair floor while it is set and higher.
    pub(crate) fn vote_floor(&self) -> LogId {
        let last = self.log.last();
        match self.repair_floor {
            Some(floor) if !self.repair_floor_disabled() => last.max(floor),
            _ => last,
        }
    }

    /// Whether a pending repair forbids campaigning.
    pub(crate) fn repair_blocks_campaign(&self) -> bool {
        self.repair_floor.is_some() && !self.repair_floor_disabled()
    }

    /// The durable last log id.
    fn durable_last(&self) -> LogId {
        let index = self.log.durable();
        LogId::new(self.log.term_at(index).unwrap_or_default(), index)
    }

    /// Clears the floor once the durable state holds again everything the
    /// floor stood for (see the module docs for why each case is safe).
    pub(crate) fn update_repair_floor(&mut self) {
        let Some(floor) = self.repair_floor else {
            return;
        };
        if self.installing.is_some() {
            // The log is being replaced; its durable state is in flux.
            return;
        }
        if self.repair_done(floor) {
            self.repair_floor = None;
        }
    }

    /// Whether the durable state holds again everything `floor` stood for:
    /// the durable log reaches it, or the commit index reaches its index on a
    /// log durable that far (see the module docs).
    fn repair_done(&self, floor: LogId) -> bool {
        let durable = self.durable_last();
        durable >= floor || (self.commit >= floor.index && durable.index >= floor.index)
    }

    /// The repair state's invariants, checked with the others after every
    /// input: a floor only stands while the durable log is short of it, and
    /// a node with a floor never campaigns or leads.
    pub(crate) fn check_repair_invariants(&self) {
        let Some(floor) = self.repair_floor else {
            return;
        };
        let context = || format!("node {} term {}", self.id, self.term);
        if self.installing.is_none() {
            assert!(
                !self.repair_done(floor),
                "{}: repair floor {} still set with durable {} and commit {}",
                context(),
                floor,
                self.durable_last(),
                self.commit
            );
        }
        assert!(
            self.repair_floor_disabled() || self.role == Role::Follower,
            "{}: {:?} with repair floor {} pending",
            context(),
            self.role,
            floor
        );
    }
}
