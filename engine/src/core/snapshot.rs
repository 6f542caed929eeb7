//! Snapshots (§7, thesis chapter 5): asking the application for one at the
//! configured thresholds, compacting below it, streaming it to a follower
//! behind the compacted prefix in acknowledged chunks, and installing one
//! received from the leader.

use bytes::{Bytes, BytesMut};

use super::action::{Action, Snapshot};
use super::message::{MessageBody, SnapshotChunk, SnapshotMeta};
use super::progress::ProgressState;
use super::raft::{DriverError, Raft};
use super::types::{LogId, LogIndex, NodeId};
use super::MessageError;

/// A snapshot being received, contiguous from offset 0.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: BytesMut,
}

impl Raft {
    pub(crate) fn maybe_request_snapshot(&mut self) {
        if self.snapshot_requested {
            return;
        }
        let snapshot_index = self.log.snapshot().index;
        let entries = self.applied.0.saturating_sub(snapshot_index.0);
        let over_entries = entries >= self.config.snapshot_log_entries_threshold;
        let over_bytes =
            self.log.bytes() >= self.config.snapshot_log_bytes_threshold && entries > 0;
        if over_entries || over_bytes {
            self.snapshot_requested = true;
            self.actions.push_back(Action::RequestSnapshot);
        }
    }

    pub(crate) fn snapshot_created(&mut self, last: LogId, data: Bytes) -> Result<(), DriverError> {
        self.snapshot_requested = false;
        if last.index <= self.log.snapshot().index {
            return Ok(());
        }
        if last.index > self.applied || !self.log.matches(last) {
            return Err(DriverError::BadSnapshotPoint { last });
        }
        let membership = self
            .memberships
            .iter()
            .rev()
            .find(|(index, _)| *index <= last.index)
            .map_or_else(|| self.memberships[0].1.clone(), |(_, m)| m.clone());
        // Keep the entries that followers this leader hears from still
        // need (up to one threshold's worth behind the snapshot): sending
        // them beats streaming a snapshot that a fast-compacting leader
        // may replace before it arrives.
        let floor = LogIndex(
            last.index
                .0
                .saturating_sub(self.config.snapshot_log_entries_threshold),
        );
        let needed = self.leader_state.as_ref().and_then(|leader| {
            leader
                .progress
                .values()
                .filter(|p| p.recent_active || p.active_previous)
                .map(|p| match &p.state {
                    ProgressState::Snapshot { last, .. } => last.index,
                    _ => p.match_index,
                })
                .min()
        });
        let keep_after = needed.map_or(last.index, |needed| needed.max(floor));
        self.log.compact_keeping(last, keep_after);
        if self.log.bytes_through(last.index) > self.config.snapshot_log_bytes_threshold {
            // Holding entries back must not break the memory bound: the
            // prefix held back stays within one threshold. (Counting the
            // suffix after the snapshot too, which cannot be dropped anyway,
            // made a leader with a long uncommitted tail drop everything,
            // and a follower a few entries behind then chased snapshot
            // after snapshot: sim seed 6597069767477 of `damaged_logs`.)
            self.log.compact(last);
        }
        // Keep the configuration in force at the snapshot as the base.
        self.memberships.retain(|(index, _)| *index > last.index);
        self.memberships.insert(0, (last.index, membership.clone()));
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta { last, membership },
            data,
        });
        self.actions
            .push_back(Action::CompactLog { up_to: last.index });
        Ok(())
    }

    /// Switches `peer` to snapshot streaming (its next entry is compacted).
    pub(crate) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        progress.become_snapshot(snapshot);
        self.metrics.snapshots_sent += 1;
        self.send_snapshot_chunks(peer);
    }

    /// Sends chunks within the snapshot window.
    pub(crate) fn send_snapshot_chunks(&mut self, peer: NodeId) {
        let Some(snapshot) = self.progress(peer).and_then(|p| p.streaming.clone()) else {
            return;
        };
        let chunk_bytes = self.config.snapshot_chunk_bytes;
        let window = chunk_bytes * self.config.snapshot_chunks_inflight_max;
        let total = snapshot.data.len() as u64;
        loop {
            let Some(progress) = self.progress_mut(peer) else {
                return;
            };
            let retry = std::mem::take(&mut progress.snapshot_retry);
            let ProgressState::Snapshot {
                sent_bytes,
                acked_bytes,
                ..
            } = &mut progress.state
            else {
                return;
            };
            let (offset, end) = if total == 0 || (retry && *sent_bytes >= total) {
                // Everything was sent and acknowledged but no "installed"
                // answer came (or the snapshot is empty): resend the last
                // chunk, which the follower answers with its state.
                (total.saturating_sub(chunk_bytes.min(total)), total)
            } else if *sent_bytes >= total || *sent_bytes >= *acked_bytes + window {
                return;
            } else {
                let offset = *sent_bytes;
                let end = (offset + chunk_bytes).min(total);
                *sent_bytes = end;
                (offset, end)
            };
            let chunk = SnapshotChunk {
                meta: snapshot.meta.clone(),
                total_bytes: total,
                offset,
                // Bounded by the snapshot's length above.
                data: snapshot.data.slice(offset as usize..end as usize),
            };
            self.send(peer, MessageBody::InstallSnapshot(chunk));
            if end >= total {
                return;
            }
        }
    }

    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
    ) -> Result<(), MessageError> {
        let malformed = |reason| MessageError::MalformedSnapshot { from, reason };
        if chunk.total_bytes > self.config.snapshot_bytes_max {
            return Err(malformed("snapshot larger than snapshot_bytes_max"));
        }
        if chunk.data.len() as u64 > self.config.snapshot_chunk_bytes {
            return Err(malformed("chunk too large"));
        }
        if chunk.offset.saturating_add(chunk.data.len() as u64) > chunk.total_bytes {
            return Err(malformed("chunk beyond the snapshot's end"));
        }
        chunk
            .meta
            .membership
            .validate()
            .map_err(|_| malformed("invalid membership"))?;
        let last = chunk.meta.last;
        let respond = |raft: &mut Raft, received_bytes: u64, installed: bool, rejected: bool| {
            raft.send(
                from,
                MessageBody::InstallSnapshotResponse {
                    last,
                    received_bytes,
                    installed,
                    rejected,
                },
            );
        };
        // Already have it: the entries are durable and committed here.
        if last.index <= self.commit || self.installing == Some(last) {
            if self.installing.is_none() {
                let body = MessageBody::InstallSnapshotResponse {
                    last,
                    received_bytes: chunk.total_bytes,
                    installed: true,
                    rejected: false,
                };
                self.send_gated(from, body, None, Some(last.index));
            }
            return Ok(());
        }
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last == last);
        if !same {
            if chunk.offset != 0 {
                respond(self, 0, false, false);
                return Ok(());
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: chunk.meta.clone(),
                total_bytes: chunk.total_bytes,
                data: BytesMut::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Ok(());
        };
        if incoming.total_bytes != chunk.total_bytes {
            return Err(malformed("total size changed between chunks"));
        }
        let received = incoming.data.len() as u64;
        if chunk.offset == received {
            incoming.data.extend_from_slice(&chunk.data);
        }
        let received = incoming.data.len() as u64;
        if received < incoming.total_bytes {
            respond(self, received, false, false);
            return Ok(());
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return Ok(());
        };
        self.install(Snapshot {
            meta: incoming.meta,
            data: incoming.data.freeze(),
        });
        Ok(())
    }

    /// Replaces the log and state by a received snapshot; the driver
    /// restores it and reports with `handle_snapshot_installed`.
    fn install(&mut self, snapshot: Snapshot) {
        let last = snapshot.meta.last;
        // The log keeps its suffix after the snapshot when it holds the
        // snapshot's last entry (§7); the configurations in that suffix
        // stay in force with it (sim finding F3: dropping them let a node
        // win an election under a configuration its log had left).
        let keep_suffix = self.log.matches(last);
        let kept: Vec<_> = if keep_suffix {
            self.memberships
                .iter()
                .filter(|(index, _)| *index > last.index)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.log.restore(last);
        self.memberships = vec![(last.index, snapshot.meta.membership.clone())];
        self.memberships.extend(kept);
        self.commit = self.commit.max(last.index);
        self.applying = last.index;
        self.installing = Some(last);
        self.metrics.snapshots_installed += 1;
        self.snapshot = Some(snapshot.clone());
        self.actions.push_back(Action::InstallSnapshot {
            snapshot,
            keep_suffix,
        });
    }

    pub(crate) fn snapshot_installed(&mut self, last: LogId) -> Result<(), DriverError> {
        match self.installing {
            Some(installing) if installing == last => {}
            // A newer snapshot superseded this one before the driver
            // finished it: nothing to do until the newer one is reported.
            Some(installing) if last.index < installing.index => return Ok(()),
            _ => return Err(DriverError::NotInstalling { last }),
        }
        self.installing = None;
        self.applied = last.index;
        self.log.set_durable_at_least(last.index);
        if let Some(leader) = self.leader {
            let received_bytes = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
            self.send(
                leader,
                MessageBody::InstallSnapshotResponse {
                    last,
                    received_bytes,
                    installed: true,
                    rejected: false,
                },
            );
        }
        self.maybe_apply();
        self.on_applied();
        Ok(())
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        last: LogId,
        received_bytes: u64,
        installed: bool,
        rejected: bool,
    ) {
        let Some(progress) = self.progress_mut(from) else {
            return;
        };
        progress.recent_active = true;
        let ProgressState::Snapshot {
            last: sending,
            sent_bytes,
            acked_bytes,
        } = &mut progress.state
        else {
            return;
        };
        if *sending != last {
            return;
        }
        if installed {
            // Whatever generation the follower is in now, it holds the
            // snapshot: damage below it is never cut (the snapshot covers it).
            let generation = progress.generation;
            progress.acknowledged(last.index, generation);
            self.advance_commit();
            self.send_append(from);
            return;
        }
        if rejected {
            progress.become_probe();
            return;
        }
        // The follower's count is authoritative: it restarts from 0 after
        // a crash, and the stream must restart with it.
        if received_bytes < *acked_bytes {
            *sent_bytes = received_bytes;
        }
        *acked_bytes = received_bytes;
        *sent_bytes = (*sent_bytes).max(received_bytes);
        self.send_snapshot_chunks(from);
    }
}
