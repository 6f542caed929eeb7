//! The core's configuration: every timer and every bound, units last.

use super::batch::BatchLimits;

/// Timers (in ticks) and bounds of the Raft core.
///
/// A tick is whatever period the driver chooses (the node uses 10 ms);
/// every timer is a whole number of ticks so the core never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lowest election timeout (default 10). Also the leader-stickiness
    /// window: a follower that heard from a leader less than this many ticks
    /// ago ignores (pre-)vote requests (thesis §4.2.3).
    pub election_timeout_ticks_min: u64,
    /// Election timeouts are drawn uniformly from `[min, max)` (default 20).
    pub election_timeout_ticks_max: u64,
    /// Ticks between leader heartbeats (default 2).
    pub heartbeat_interval_ticks: u64,
    /// Run a pre-vote round before each election (thesis §9.6; default on).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down (thesis §6.2; default on). Required by `lease_read`.
    pub check_quorum: bool,
    /// Serve reads from a leader lease without a heartbeat round (thesis
    /// §6.4.1; default off). Safe only if clocks drift less than
    /// `clock_drift_ticks` per election timeout.
    pub lease_read: bool,
    /// Margin subtracted from the lease for clock drift (default 2).
    pub clock_drift_ticks: u64,
    /// Append messages in flight per follower (default 256).
    pub inflight_messages_max: usize,
    /// Batch bytes in flight per follower (default 64 MiB).
    pub inflight_bytes_max: u64,
    /// Bytes proposed but not yet committed; a proposal beyond it is
    /// refused with `Overloaded` (default 64 MiB: about a second of
    /// traffic at the 1 M entries/s goal, and part of the memory bound).
    pub uncommitted_bytes_max: u64,
    /// Batch bytes per append message, soft: one batch larger than this is
    /// still sent alone (default 4 MiB).
    pub append_bytes_max: u64,
    /// Entries per batch, also per proposal call (default 4096).
    pub batch_entries_max: u32,
    /// Encoded bytes per batch, also per proposal call (default 16 MiB).
    pub batch_bytes_max: u32,
    /// Ask for a snapshot once this many applied entries follow the last
    /// one (default 100 000). This also bounds the log the core keeps in
    /// memory: it holds every batch after the last snapshot.
    pub snapshot_log_entries_threshold: u64,
    /// Ask for a snapshot once the log after the last snapshot holds this
    /// many bytes (default 64 MiB). With the entry threshold this bounds the
    /// log a node keeps in memory.
    pub snapshot_log_bytes_threshold: u64,
    /// Bytes per snapshot chunk message (default 1 MiB).
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot accepted from a leader (default 4 GiB).
    pub snapshot_bytes_max: u64,
    /// Snapshot chunks in flight per follower (default 4).
    pub snapshot_chunks_inflight_max: u64,
    /// Reads queued at once, leader and follower side (default 65 536);
    /// beyond it `handle_read_index` returns `Overloaded`.
    pub reads_pending_max: usize,
    /// Messages withheld until durability at once (default 65 536); beyond
    /// it the oldest heartbeat responses are dropped (they are retried).
    pub withheld_messages_max: usize,
    /// Test only: inject a known protocol bug so the simulator can prove its
    /// checkers catch it. Never set this outside tests.
    #[doc(hidden)]
    pub testing_bug: Option<InjectedBug>,
}

/// Test only: protocol bugs the simulator must detect.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// Commit entries of an older term by counting replicas (the Figure 8
    /// mistake, §5.4.2).
    CommitOlderTermByCounting,
    /// Acknowledge appends before they are durable.
    AckBeforeDurable,
    /// Repair a damaged log by truncating it and ignoring the repair floor
    /// (vote as if the lost entries had never been acknowledged, and
    /// campaign freely).
    RepairWithoutVoteFloor,
    /// A leader ignores the log generation of append answers (every answer
    /// counts as the follower's latest), so it never notices that a
    /// follower lost entries it acknowledged: the follower is never
    /// repaired while that leader lasts (a liveness bug; scenario tests
    /// catch it).
    IgnoreLogGeneration,
}

/// Why a [`Config`] is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field must be positive.
    #[error("{field} must be positive")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// The election timeout range is empty or too short.
    #[error(
        "election timeout range [{min}, {max}) is invalid: need heartbeat {heartbeat} < min < max"
    )]
    ElectionTimeout {
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
        /// Heartbeat interval.
        heartbeat: u64,
    },
    /// Lease reads need check-quorum and a drift smaller than the timeout.
    #[error("lease_read requires check_quorum and clock_drift_ticks < election_timeout_ticks_min")]
    Lease,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_read: false,
            clock_drift_ticks: 2,
            inflight_messages_max: 256,
            inflight_bytes_max: 64 << 20,
            uncommitted_bytes_max: 64 << 20,
            append_bytes_max: 4 << 20,
            batch_entries_max: 4096,
            batch_bytes_max: 16 << 20,
            snapshot_log_entries_threshold: 100_000,
            snapshot_log_bytes_threshold: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 4 << 30,
            snapshot_chunks_inflight_max: 4,
            reads_pending_max: 65_536,
            withheld_messages_max: 65_536,
            testing_bug: None,
        }
    }
}

impl Config {
    /// Checks that the timers and bounds make sense together.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_interval_ticks", self.heartbeat_interval_ticks),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("append_bytes_max", self.append_bytes_max),
            ("batch_entries_max", u64::from(self.batch_entries_max)),
            ("batch_bytes_max", u64::from(self.batch_bytes_max)),
            (
                "snapshot_log_entries_threshold",
                self.snapshot_log_entries_threshold,
            ),
            (
                "snapshot_log_bytes_threshold",
                self.snapshot_log_bytes_threshold,
            ),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_bytes_max", self.snapshot_bytes_max),
            (
                "snapshot_chunks_inflight_max",
                self.snapshot_chunks_inflight_max,
            ),
            ("reads_pending_max", self.reads_pending_max as u64),
            ("withheld_messages_max", self.withheld_messages_max as u64),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { field });
        }
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks_min
            || self.election_timeout_ticks_min >= self.election_timeout_ticks_max
        {
            return Err(ConfigError::ElectionTimeout {
                min: self.election_timeout_ticks_min,
                max: self.election_timeout_ticks_max,
                heartbeat: self.heartbeat_interval_ticks,
            });
        }
        if self.lease_read
            && (!self.check_quorum || self.clock_drift_ticks >= self.election_timeout_ticks_min)
        {
            return Err(ConfigError::Lease);
        }
        Ok(())
    }

    /// Limits for decoding batches that came from outside.
    #[must_use]
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            entries_max: self.batch_entries_max,
            bytes_max: self.batch_bytes_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let zero = Config {
            inflight_messages_max: 0,
            ..Config::default()
        };
        assert_eq!(
            zero.validate(),
            Err(ConfigError::Zero {
                field: "inflight_messages_max"
            })
        );
        let timers = Config {
            election_timeout_ticks_max: 10,
            ..Config::default()
        };
        assert!(matches!(
            timers.validate(),
            Err(ConfigError::ElectionTimeout { .. })
        ));
        let lease = Config {
            lease_read: true,
            check_quorum: false,
            ..Config::default()
        };
        assert_eq!(lease.validate(), Err(ConfigError::Lease));
    }
}
