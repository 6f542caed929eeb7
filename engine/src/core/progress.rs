//! A leader's view of one follower's log (thesis §3.5 and etcd's
//! `tracker/progress.go`): the probe / replicate / snapshot state machine
//! and the in-flight window. Every transition of that state machine is a
//! method here.

use std::collections::VecDeque;

use super::action::Snapshot;
use super::types::{LogId, LogIndex};

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
    /// Highest index known replicated (durably) on the follower.
    pub(crate) match_index: LogIndex,
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

    /// The follower holds everything up to `index`. Returns whether this
    /// was news.
    pub(crate) fn acknowledged(&mut self, index: LogIndex) -> bool {
        self.recent_active = true;
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

    /// The follower refused an append whose previous entry was `rejected`;
    /// retry from `next` (already computed from the hint). Returns false
    /// for a stale rejection that changes nothing.
    ///
    /// A retry point at or below the match point means the follower no
    /// longer holds entries it acknowledged: it cut a damaged log back
    /// (`repair.rs`; it also says so in answer to a heartbeat whose commit
    /// index it lacks). The match point moves back to what the follower
    /// still holds and the leader probes from there; otherwise it would
    /// resend from the old match point, or nothing at all, forever. A
    /// follower that lost nothing never hints below the match point (its
    /// log agrees with the leader's up to it), so only a rejection reordered
    /// behind a later acknowledgement looks the same: that costs one probe,
    /// and commitment never moves back.
    pub(crate) fn rejected(&mut self, rejected: LogIndex, next: LogIndex) -> bool {
        self.recent_active = true;
        if next <= self.match_index && !matches!(self.state, ProgressState::Snapshot { .. }) {
            self.match_index = next.prev();
            self.stalled_heartbeats = 0;
            self.become_probe();
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

    #[test]
    fn probe_replicate_window() {
        let mut p = Progress::new(LogIndex(11));
        assert!(p.can_send(2, 100));
        p.sent(LogIndex(11), LogIndex(11), 10);
        assert!(!p.can_send(2, 100), "probe waits for an answer");
        assert!(p.rejected(LogIndex(10), LogIndex(5)));
        assert_eq!(p.next_index, LogIndex(5));
        assert!(!p.rejected(LogIndex(10), LogIndex(3)), "stale rejection");
        assert!(p.acknowledged(LogIndex(8)));
        assert_eq!(p.state, ProgressState::Replicate);
        p.sent(LogIndex(9), LogIndex(12), 60);
        p.sent(LogIndex(13), LogIndex(14), 60);
        assert!(!p.can_send(3, 100), "byte window full");
        assert!(!p.can_send(2, 1000), "message window full");
        p.acknowledged(LogIndex(12));
        assert_eq!(p.inflight_bytes(), 60);
        assert!(p.can_send(2, 100));
        assert!(
            !p.rejected(LogIndex(11), LogIndex(13)),
            "below match: stale"
        );
        assert!(p.rejected(LogIndex(14), LogIndex(13)));
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        assert_eq!(p.next_index, LogIndex(13));
    }

    #[test]
    fn follower_whose_log_went_back_is_probed_from_what_it_holds() {
        let mut p = Progress::new(LogIndex(11));
        p.sent(LogIndex(11), LogIndex(11), 10);
        assert!(p.acknowledged(LogIndex(20)));
        assert_eq!(p.state, ProgressState::Replicate);
        // The follower cut its log back to 7 and refuses the append after 20.
        assert!(p.rejected(LogIndex(20), LogIndex(8)));
        assert_eq!(p.match_index, LogIndex(7));
        assert_eq!(p.next_index, LogIndex(8));
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        // The same in probe state: the probe after the match point fails.
        let mut p = Progress::new(LogIndex(11));
        p.sent(LogIndex(11), LogIndex(11), 10);
        assert!(p.acknowledged(LogIndex(20)));
        p.become_probe();
        p.sent(LogIndex(21), LogIndex(21), 10);
        assert!(p.rejected(LogIndex(20), LogIndex(3)));
        assert_eq!(p.match_index, LogIndex(2));
        assert_eq!(p.next_index, LogIndex(3));
        // A rejection below the match point that retries above it is stale.
        p.sent(LogIndex(3), LogIndex(5), 10);
        assert!(p.acknowledged(LogIndex(5)));
        assert!(!p.rejected(LogIndex(4), LogIndex(6)));
        assert_eq!(p.match_index, LogIndex(5));
    }
}
