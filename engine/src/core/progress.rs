//! A leader's view of one follower's log (thesis §3.5 and etcd's
//! `tracker/progress.go`): the probe / replicate / snapshot state machine
//! and the in-flight window. Every transition of that state machine is a
//! method here.

use std::collections::VecDeque;

use super::action::Snapshot;
use super::types::{LogGeneration, LogId, LogIndex};

/// How the leader currently replicates to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Matching point unknown: one append at a time until one succeeds.
    Probe {
        /// An append is outstanding; wait for its answer or a heartbeat.
        paused: bool,
    },
    /// Matching point known: stream appends optimistically (pipelining)
    /// within the in-flight window.
    Replicate,
    /// The follower needs entries the leader compacted: stream a snapshot.
    Snapshot {
        /// The snapshot being sent.
        last: LogId,
        /// Next byte offset to send.
        sent_bytes: u64,
        /// Bytes the follower confirmed, contiguous from 0.
        acked_bytes: u64,
    },
}

/// One follower's progress.
///
/// Invariant: `match_index < next_index`; the in-flight window holds at
/// most `inflight_messages_max` messages and (beyond one message) at most
/// `inflight_bytes_max` bytes.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) state: ProgressState,
    /// Highest index known replicated (durably) on the follower, in
    /// `generation`.
    pub(crate) match_index: LogIndex,
    /// The follower's latest log generation seen (see
    /// [`super::message::AppendResult`]): answers of an older one are
    /// stale, and only answers of this one raise `match_index`.
    pub(crate) generation: LogGeneration,
    /// Next index to send.
    pub(crate) next_index: LogIndex,
    /// Last index and bytes of each append in flight, oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// `recent_active` of the previous check-quorum round: together they
    /// say "heard from within the last one or two election timeouts".
    pub(crate) active_previous: bool,
    /// Highest read round the follower acknowledged.
    pub(crate) read_round: u64,
    /// Heartbeat intervals with appends in flight and no acknowledgement.
    stalled_heartbeats: u32,
    /// A heartbeat passed while streaming a snapshot: resend even if every
    /// byte was acknowledged (the "installed" answer may be lost).
    pub(crate) snapshot_retry: bool,
    /// The snapshot being streamed (kept even if a newer one is taken
    /// meanwhile, so a slow transfer still finishes).
    pub(crate) streaming: Option<Snapshot>,
}

/// Heartbeat intervals without any acknowledgement, appends in flight,
/// after which the leader assumes they were lost and probes again. The
/// core has no transport to tell it "unreachable" (etcd's
/// `ReportUnreachable`), so it infers loss from silence.
const STALLED_HEARTBEATS_MAX: u32 = 3;

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            state: ProgressState::Probe { paused: false },
            match_index: LogIndex(0),
            generation: LogGeneration(0),
            next_index,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            active_previous: true,
            read_round: 0,
            stalled_heartbeats: 0,
            snapshot_retry: false,
            streaming: None,
        }
    }

    pub(crate) fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Whether another append may be sent now.
    pub(crate) fn can_send(&self, messages_max: usize, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate => {
                self.inflight.len() < messages_max && self.inflight_bytes < bytes_max
            }
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records an append of entries up to `last` (`bytes` of batches).
    pub(crate) fn sent(&mut self, first: LogIndex, last: LogIndex, bytes: u64) {
        match &mut self.state {
            ProgressState::Probe { paused } => {
                *paused = true;
                // The probe asks about the entry before its first batch.
                self.next_index = first.max(self.match_index.next());
            }
            ProgressState::Replicate => {
                if last >= self.next_index {
                    self.next_index = last.next();
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Takes note of the log generation of an answer that shows the
    /// follower holds (at most) `held` now. Returns false for an answer of
    /// an older generation: sent before the follower's log went back, it is
    /// stale and ignored. A newer generation means the follower lost entries
    /// since it acknowledged `match_index`: the match point falls to what
    /// the answer shows it holds, and the leader probes from there (a
    /// snapshot being streamed goes on: it does not depend on the log).
    pub(crate) fn generation_seen(&mut self, generation: LogGeneration, held: LogIndex) -> bool {
        self.recent_active = true;
        if generation < self.generation {
            return false;
        }
        if generation > self.generation {
            self.generation = generation;
            self.match_index = self.match_index.min(held);
            self.stalled_heartbeats = 0;
            if !matches!(self.state, ProgressState::Snapshot { .. }) {
                self.become_probe();
            }
        }
        true
    }

    /// The follower, in log generation `generation`, holds everything up to
    /// `index`. Returns whether this was news.
    pub(crate) fn acknowledged(&mut self, index: LogIndex, generation: LogGeneration) -> bool {
        if !self.generation_seen(generation, index) {
            return false;
        }
        let news = index > self.match_index;
        if news {
            self.match_index = index;
            self.stalled_heartbeats = 0;
        }
        self.next_index = self.next_index.max(index.next());
        while let Some((last, bytes)) = self.inflight.front() {
            if *last > index {
                break;
            }
            self.inflight_bytes -= bytes;
            self.inflight.pop_front();
        }
        match self.state {
            ProgressState::Probe { .. } => self.become_replicate(),
            ProgressState::Snapshot { last, .. } if index >= last.index => {
                self.become_probe();
            }
            _ => {}
        }
        news
    }

    /// The follower, in log generation `generation`, refused an append
    /// whose previous entry was `rejected`; retry from `next` (already
    /// computed from the hint). Returns false for a stale rejection that
    /// changes nothing.
    ///
    /// In the generation the match point was learnt in, the follower's log
    /// agrees with the leader's up to it and never goes back, so a rejection
    /// at or below it is one reordered behind a later acknowledgement:
    /// stale. Only a newer generation says the follower lost entries it
    /// acknowledged (it cut a damaged log back, `repair.rs`; it also says so
    /// in answer to heartbeats while it refetches them): then the match
    /// point moves back to what it still holds and the leader probes from
    /// there, or it would resend from the old match point, or nothing at
    /// all, forever.
    pub(crate) fn rejected(
        &mut self,
        rejected: LogIndex,
        next: LogIndex,
        generation: LogGeneration,
    ) -> bool {
        let newer = generation > self.generation;
        if !self.generation_seen(generation, next.prev()) {
            return false;
        }
        if newer {
            if matches!(self.state, ProgressState::Probe { .. }) {
                // Retry where the follower's hint says, as for any probe.
                self.next_index = next.max(self.match_index.next());
            }
            return true;
        }
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = next.max(self.match_index.next());
                true
            }
            ProgressState::Probe { .. } => {
                if rejected != self.next_index.prev() {
                    return false;
                }
                self.next_index = next.max(self.match_index.next()).min(self.next_index);
                self.state = ProgressState::Probe { paused: false };
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.streaming = None;
        self.state = ProgressState::Probe { paused: false };
        self.next_index = self.match_index.next();
        self.clear_inflight();
    }

    fn become_replicate(&mut self) {
        self.streaming = None;
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self, snapshot: Snapshot) {
        let last = snapshot.meta.last;
        self.streaming = Some(snapshot);
        self.state = ProgressState::Snapshot {
            last,
            sent_bytes: 0,
            acked_bytes: 0,
        };
        self.clear_inflight();
    }

    /// A heartbeat interval passed: a paused probe may try again, and a
    /// snapshot stream restarts from what was acknowledged (chunks may have
    /// been lost).
    pub(crate) fn heartbeat(&mut self) {
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = false,
            ProgressState::Snapshot {
                sent_bytes,
                acked_bytes,
                ..
            } => *sent_bytes = *acked_bytes,
            ProgressState::Replicate => {
                if self.inflight.is_empty() {
                    self.stalled_heartbeats = 0;
                } else {
                    self.stalled_heartbeats += 1;
                    if self.stalled_heartbeats >= STALLED_HEARTBEATS_MAX {
                        self.stalled_heartbeats = 0;
                        self.become_probe();
                    }
                }
            }
        }
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G0: LogGeneration = LogGeneration(0);
    const G1: LogGeneration = LogGeneration(1);
    const G2: LogGeneration = LogGeneration(2);

    #[test]
    fn probe_replicate_window() {
        let mut p = Progress::new(LogIndex(11));
        assert!(p.can_send(2, 100));
        p.sent(LogIndex(11), LogIndex(11), 10);
        assert!(!p.can_send(2, 100), "probe waits for an answer");
        assert!(p.rejected(LogIndex(10), LogIndex(5), G0));
        assert_eq!(p.next_index, LogIndex(5));
        assert!(
            !p.rejected(LogIndex(10), LogIndex(3), G0),
            "stale rejection"
        );
        assert!(p.acknowledged(LogIndex(8), G0));
        assert_eq!(p.state, ProgressState::Replicate);
        p.sent(LogIndex(9), LogIndex(12), 60);
        p.sent(LogIndex(13), LogIndex(14), 60);
        assert!(!p.can_send(3, 100), "byte window full");
        assert!(!p.can_send(2, 1000), "message window full");
        p.acknowledged(LogIndex(12), G0);
        assert_eq!(p.inflight_bytes(), 60);
        assert!(p.can_send(2, 100));
        assert!(
            !p.rejected(LogIndex(11), LogIndex(1), G0),
            "below match: stale"
        );
        assert_eq!(p.match_index, LogIndex(12));
        assert_eq!(p.state, ProgressState::Replicate);
        assert!(p.rejected(LogIndex(14), LogIndex(13), G0));
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        assert_eq!(p.next_index, LogIndex(13));
    }

    /// Acknowledged up to 20 in generation 0, replicating past it.
    fn replicating_at_20() -> Progress {
        let mut p = Progress::new(LogIndex(11));
        p.sent(LogIndex(11), LogIndex(11), 10);
        assert!(p.acknowledged(LogIndex(20), G0));
        assert_eq!(p.state, ProgressState::Replicate);
        p.sent(LogIndex(21), LogIndex(25), 10);
        p
    }

    #[test]
    fn stale_rejection_in_the_same_generation_keeps_the_match_point() {
        // A rejection reordered behind a later acknowledgement: the
        // follower then held only up to 7, but nothing was lost since.
        let mut p = replicating_at_20();
        assert!(!p.rejected(LogIndex(10), LogIndex(8), G0));
        assert_eq!(p.match_index, LogIndex(20));
        assert_eq!(p.next_index, LogIndex(26));
        assert_eq!(p.state, ProgressState::Replicate);
        // So is a heartbeat's (rejected = the commit it carried, <= match).
        assert!(!p.rejected(LogIndex(20), LogIndex(8), G0));
        assert_eq!(p.match_index, LogIndex(20));
        assert_eq!(p.state, ProgressState::Replicate);
    }

    #[test]
    fn follower_whose_log_went_back_is_probed_from_what_it_holds() {
        let mut p = replicating_at_20();
        // The follower cut its log back to 7 (generation 1) and refuses the
        // append after 25.
        assert!(p.rejected(LogIndex(25), LogIndex(8), G1));
        assert_eq!(p.match_index, LogIndex(7));
        assert_eq!(p.next_index, LogIndex(8));
        assert_eq!(p.generation, G1);
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        // Answers from before the loss, reordered behind it, are stale: an
        // acknowledgement of 20 must not bring the old match point back.
        assert!(!p.acknowledged(LogIndex(20), G0));
        assert!(!p.rejected(LogIndex(25), LogIndex(21), G0));
        assert_eq!(p.match_index, LogIndex(7));
        assert_eq!(p.next_index, LogIndex(8));
        // The duplicate of the signal is an ordinary (stale) rejection now.
        p.sent(LogIndex(8), LogIndex(8), 10);
        assert!(!p.rejected(LogIndex(25), LogIndex(8), G1));
        assert_eq!(p.match_index, LogIndex(7));
        // The repair proceeds in the new generation.
        assert!(p.acknowledged(LogIndex(25), G1));
        assert_eq!(p.match_index, LogIndex(25));
        assert_eq!(p.state, ProgressState::Replicate);

        // The same in probe state, learnt from an acknowledgement: the first
        // answer of the new generation says what the follower holds.
        let mut p = replicating_at_20();
        p.become_probe();
        p.sent(LogIndex(21), LogIndex(21), 10);
        assert!(!p.acknowledged(LogIndex(12), G2), "no news for commit");
        assert_eq!(p.match_index, LogIndex(12));
        assert_eq!(p.next_index, LogIndex(13));
        assert_eq!(p.generation, G2);
        assert_eq!(p.state, ProgressState::Replicate);
    }

    #[test]
    fn newer_generation_never_raises_the_match_point_by_itself() {
        // A new leader's progress knows nothing (generation 0, match 0): a
        // follower that lost entries under an earlier leader is probed as
        // usual, from the hint, and its generation adopted.
        let mut p = Progress::new(LogIndex(31));
        p.sent(LogIndex(31), LogIndex(31), 10);
        assert!(p.rejected(LogIndex(30), LogIndex(8), G1));
        assert_eq!(p.match_index, LogIndex(0));
        assert_eq!(p.next_index, LogIndex(8));
        assert_eq!(p.generation, G1);
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        // While a snapshot streams, the loss lowers the match point and the
        // stream goes on.
        let mut p = replicating_at_20();
        p.become_snapshot(Snapshot::default());
        assert!(p.rejected(LogIndex(20), LogIndex(6), G1));
        assert_eq!(p.match_index, LogIndex(5));
        assert!(matches!(p.state, ProgressState::Snapshot { .. }));
    }
}
