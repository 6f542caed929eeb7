//! Throughput of the Raft core alone (issue 3, "Benchmark"): a 3-node
//! cluster of cores in one thread, with an in-memory log that is durable the
//! moment it is written and messages passed through in-memory queues, so
//! what is measured is the protocol's own cost per committed entry.
//!
//! `core/committed`: 64-byte entries proposed in batches of 1, 64 and 1024,
//! pipelined (proposals keep coming while earlier ones replicate), counted
//! once the leader has applied them. `core/encode_only` is the baseline in
//! the same run: encoding the same batches and nothing else, the floor any
//! implementation pays.
//!
//! Run: `cargo bench -p barge-bench --bench core`.

use std::collections::VecDeque;
use std::hint::black_box;

use barge::core::{
    Action, Batch, Config, LogId, LogIndex, Membership, NodeId, Persisted, Raft, Role, Term,
};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ENTRY_BYTES: usize = 64;
/// Entries committed per measured iteration, whatever the batch size.
const ENTRIES_PER_ITERATION: u64 = 1 << 16;

/// Three cores wired back to back.
struct Cluster {
    nodes: Vec<Raft>,
    messages: VecDeque<barge::core::Message>,
    applied: Vec<LogId>,
}

impl Cluster {
    fn new() -> Cluster {
        let config = Config {
            // Large enough that the pipeline, not the bound, sets the pace.
            uncommitted_bytes_max: 64 << 20,
            inflight_messages_max: 1024,
            inflight_bytes_max: 256 << 20,
            ..Config::default()
        };
        let membership = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
        let nodes = (1..=3)
            .map(|id| {
                let persisted = Persisted {
                    initial_membership: membership.clone(),
                    ..Persisted::default()
                };
                // Cannot fail: the default configuration and an empty disk are valid.
                Raft::new(NodeId(id), config.clone(), persisted, id).expect("valid start")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            messages: VecDeque::new(),
            applied: vec![LogId::default(); 3],
        };
        // Node 1 campaigns first: tick it alone until it leads.
        for _ in 0..10_000 {
            if cluster.nodes[0].role() == Role::Leader {
                break;
            }
            cluster.nodes[0].handle_tick();
            cluster.pump();
        }
        assert_eq!(
            cluster.nodes[0].role(),
            Role::Leader,
            "node 1 did not become leader"
        );
        cluster
    }

    /// Carries out every action of every node and delivers every message,
    /// until the cluster is quiet.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            for slot in 0..self.nodes.len() {
                busy |= self.drain(slot);
            }
            while let Some(message) = self.messages.pop_front() {
                busy = true;
                let slot = (message.to.0 - 1) as usize;
                // Cannot fail: messages come from correct cores.
                self.nodes[slot]
                    .handle_message(message)
                    .expect("well-formed message");
                self.drain(slot);
            }
            if !busy {
                return;
            }
        }
    }

    fn drain(&mut self, slot: usize) -> bool {
        let mut busy = false;
        let mut durable: Option<LogId> = None;
        loop {
            let node = &mut self.nodes[slot];
            let Some(action) = node.poll_action() else {
                match durable.take() {
                    // The in-memory log is durable as soon as written.
                    Some(last) => {
                        node.handle_log_durable(last);
                        continue;
                    }
                    None => return busy,
                }
            };
            busy = true;
            match action {
                Action::PersistHardState(hard_state) => node.handle_hard_state_durable(hard_state),
                Action::AppendBatches(batches) => {
                    durable = batches.last().map(Batch::last_id).or(durable);
                }
                Action::Send { message, .. } => self.messages.push_back(message),
                Action::Apply { last, batches, .. } => {
                    // The term is needed to name a snapshot point later.
                    let term = batches
                        .iter()
                        .find(|batch| batch.contains(last))
                        .map_or(Term(0), Batch::term);
                    black_box(&batches);
                    // Cannot fail: `last` comes from the core's own Apply.
                    node.handle_applied(last)
                        .expect("applied what was handed out");
                    self.applied[slot] = LogId::new(term, last);
                }
                Action::RequestSnapshot => {
                    // The state machine here holds nothing worth restoring.
                    // Cannot fail: the point is an applied entry of this log.
                    node.handle_snapshot_created(self.applied[slot], Bytes::new())
                        .expect("snapshot at an applied entry");
                }
                _ => {}
            }
        }
    }

    /// Proposes `entries` entries in batches of `batch`, pipelined, and runs
    /// until the leader has applied them all.
    fn commit(&mut self, payloads: &[Bytes], entries: u64) {
        let mut proposed = 0;
        let mut last = LogIndex(0);
        while proposed < entries {
            match self.nodes[0].handle_propose(payloads) {
                Ok(ticket) => {
                    proposed += payloads.len() as u64;
                    last = ticket.last;
                    // Let replication run every few batches, as a node's
                    // event loop would between reads from its clients.
                    if proposed % 4096 < payloads.len() as u64 {
                        self.pump();
                    }
                }
                Err(_) => self.pump(),
            }
        }
        while self.applied[0].index < last {
            self.pump();
            self.nodes[0].handle_tick();
        }
    }
}

fn payloads(batch: usize) -> Vec<Bytes> {
    (0..batch)
        .map(|i| Bytes::from(vec![i as u8; ENTRY_BYTES]))
        .collect()
}

fn bench_core(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("core");
    group.throughput(Throughput::Elements(ENTRIES_PER_ITERATION));
    group.sample_size(10);
    for batch in [1usize, 64, 1024] {
        let payloads = payloads(batch);
        group.bench_with_input(
            BenchmarkId::new("committed", batch),
            &batch,
            |bencher, _| {
                let mut cluster = Cluster::new();
                bencher.iter(|| cluster.commit(&payloads, ENTRIES_PER_ITERATION));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("encode_only", batch),
            &batch,
            |bencher, _| {
                bencher.iter(|| {
                    let mut index = 1;
                    for _ in 0..ENTRIES_PER_ITERATION / batch as u64 {
                        black_box(Batch::encode_normal(LogIndex(index), Term(1), &payloads));
                        index += batch as u64;
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
