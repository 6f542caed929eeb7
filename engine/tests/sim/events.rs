//! The simulation's agenda: events ordered by simulated time, ties broken
//! by the order they were scheduled, so a run is a pure function of its seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use barge::core::{Message, MessageBody};

#[derive(Debug)]
pub enum Event {
    /// A message arrives at slot `to`.
    Deliver {
        from: usize,
        to: usize,
        message: Message,
    },
    /// A node's clock ticks (stale if `incarnation` is not the current one).
    Tick { node: usize, incarnation: u64 },
    /// A node's disk may have completed queued writes.
    Disk { node: usize, incarnation: u64 },
    /// A client issues a proposal or a read.
    Client,
    /// The fault schedule acts.
    Nemesis,
    /// A crashed node powers back on.
    Restart { node: usize },
}

impl Event {
    /// One short line for traces: message bodies are summarized (an append
    /// may carry thousands of batches).
    pub fn describe(&self) -> String {
        match self {
            Event::Deliver { message, .. } => {
                let body = match &message.body {
                    MessageBody::Append {
                        prev,
                        batches,
                        commit,
                    } => format!(
                        "Append prev {prev} entries {}..={} in {} batches commit {commit}",
                        batches
                            .first()
                            .map_or(prev.index.next(), |batch| batch.first()),
                        batches.last().map_or(prev.index, |batch| batch.last()),
                        batches.len()
                    ),
                    MessageBody::InstallSnapshot(chunk) => format!(
                        "InstallSnapshot {} offset {} len {} of {}",
                        chunk.meta.last,
                        chunk.offset,
                        chunk.data.len(),
                        chunk.total_bytes
                    ),
                    other => format!("{other:?}"),
                };
                format!(
                    "{} -> {} {}: {body}",
                    message.from, message.to, message.term
                )
            }
            other => format!("{other:?}"),
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    time: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event comes first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

#[derive(Debug, Default)]
pub struct Agenda {
    heap: BinaryHeap<Scheduled>,
    sequence: u64,
    pub now: u64,
}

impl Agenda {
    pub fn at(&mut self, time: u64, event: Event) {
        self.sequence += 1;
        self.heap.push(Scheduled {
            time: time.max(self.now),
            sequence: self.sequence,
            event,
        });
    }

    pub fn after(&mut self, delay: u64, event: Event) {
        self.at(self.now + delay, event);
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<Event> {
        let scheduled = self.heap.pop()?;
        self.now = scheduled.time;
        Some(scheduled.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_scheduling_order() {
        let mut agenda = Agenda::default();
        agenda.at(5, Event::Client);
        agenda.at(3, Event::Nemesis);
        agenda.at(5, Event::Restart { node: 1 });
        assert!(matches!(agenda.pop(), Some(Event::Nemesis)));
        assert_eq!(agenda.now, 3);
        assert!(matches!(agenda.pop(), Some(Event::Client)));
        assert!(matches!(agenda.pop(), Some(Event::Restart { node: 1 })));
        assert!(agenda.pop().is_none());
    }
}
