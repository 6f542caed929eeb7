//! Proposal answers delivered in groups, on the callers' runtime.
//!
//! Sending a proposal's answer wakes the task awaiting it. From the
//! `barge-raft` thread that wake is foreign to the caller's runtime: a push
//! onto its shared inject queue under a mutex and, when a worker sleeps, a
//! futex wake-up, once per proposal. Under load these wake-ups were the top
//! of the Raft thread's profile.
//!
//! So the Raft thread hands each burst of answers (everything one loop
//! iteration decided) to one *completer* task running on a caller runtime:
//! one lock and at most one foreign wake-up per burst. The completer sends
//! the answers from a worker of that runtime, where each wake is a push onto
//! the worker's own run queue.
//!
//! Only callers on the completer's runtime are grouped
//! ([`Completions::route`]): a task on another runtime (or a thread
//! blocking outside any runtime) is answered directly by the Raft thread, so
//! no caller waits on a runtime it does not run on. The completer runs on a
//! multi-thread runtime only (a current-thread runtime runs tasks only while
//! someone blocks on it). It is started by the first proposal from such a
//! runtime and lives until that runtime drops it or the node stops; its drop
//! answers whatever it still held, directly, so no answer is lost.
//!
//! Bound: the pending answers are at most the proposals in flight, which the
//! request queue (`request_queue_max`) and the core's uncommitted bounds
//! already limit.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{oneshot, Notify};

use super::error::NodeError;

/// Fewer answers than this in one burst are sent directly: a lone answer
/// gains nothing from the extra task hop, and would pay its latency.
pub(crate) const GROUP_ANSWERS_MIN: usize = 4;

/// A decided answer, not yet sent.
pub(crate) enum Answer {
    One(
        oneshot::Sender<Result<Bytes, NodeError>>,
        Result<Bytes, NodeError>,
    ),
    Many(
        oneshot::Sender<Result<Vec<Bytes>, NodeError>>,
        Result<Vec<Bytes>, NodeError>,
    ),
}

impl Answer {
    /// Sends it; a caller that stopped waiting is no error.
    pub(crate) fn send(self) {
        match self {
            Answer::One(sender, result) => {
                let _ = sender.send(result);
            }
            Answer::Many(sender, result) => {
                let _ = sender.send(result);
            }
        }
    }
}

/// The answers the Raft thread decided in one loop iteration: direct ones
/// are sent at once, grouped ones wait for [`Outbox::flush`].
#[derive(Default)]
pub(crate) struct Outbox {
    grouped: Vec<Answer>,
}

impl Outbox {
    pub(crate) fn push(&mut self, route: Route, answer: Answer) {
        match route {
            Route::Grouped => self.grouped.push(answer),
            Route::Direct => answer.send(),
        }
    }

    /// Hands the grouped answers to the completer, or sends them here when
    /// they are too few to be worth the hop.
    pub(crate) fn flush(&mut self, completions: &Completions) {
        if self.grouped.len() >= GROUP_ANSWERS_MIN {
            completions.hand_over(&mut self.grouped);
        } else {
            self.send_here();
        }
    }

    /// Sends everything from this thread (the node is stopping).
    pub(crate) fn send_here(&mut self) {
        for answer in self.grouped.drain(..) {
            answer.send();
        }
    }
}

/// Whether the Raft thread may hand a request's answer to the completer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The caller runs on the completer's runtime.
    Grouped,
    /// Anywhere else: the Raft thread answers it.
    Direct,
}

/// The completer's state, shared by the node (proposers), the Raft thread
/// and the completer task.
pub(crate) struct Completions {
    /// The key ([`runtime_key`]) of the runtime the completer runs on, 0
    /// when none runs; read without the lock on every proposal.
    running: AtomicU64,
    state: Mutex<State>,
    /// Wakes the completer; a notification sent while it works is kept as
    /// a permit, so none is lost.
    wake: Notify,
}

struct State {
    pending: Vec<Answer>,
    /// The key of the runtime the running completer is on.
    runtime: Option<u64>,
    /// The node stopped: no completer starts again.
    ended: bool,
}

impl Completions {
    pub(crate) fn new() -> Arc<Completions> {
        Arc::new(Completions {
            running: AtomicU64::new(0),
            state: Mutex::new(State {
                pending: Vec::new(),
                runtime: None,
                ended: false,
            }),
            wake: Notify::new(),
        })
    }

    /// How the answer of a request made from the current context can be
    /// sent. Starts a completer on the current runtime if none runs and it
    /// is a multi-thread runtime.
    pub(crate) fn route(self: &Arc<Completions>) -> Route {
        let Ok(handle) = Handle::try_current() else {
            return Route::Direct;
        };
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Route::Direct;
        }
        let runtime = runtime_key(&handle);
        match self.running.load(Ordering::Acquire) {
            0 => {}
            running if running == runtime => return Route::Grouped,
            _ => return Route::Direct,
        }
        let mut state = self.state.lock();
        if state.ended {
            return Route::Direct;
        }
        if state.runtime.is_none() {
            state.runtime = Some(runtime);
            self.running.store(runtime, Ordering::Release);
            // The guard is an argument, not a local: a task dropped before
            // its first poll still runs it.
            handle.spawn(complete(Stopped(Arc::clone(self))));
        }
        if state.runtime == Some(runtime) {
            Route::Grouped
        } else {
            Route::Direct
        }
    }

    /// Hands `answers` (all of [`Route::Grouped`] requests) to the
    /// completer, or sends them here if it is gone. Leaves `answers` empty.
    pub(crate) fn hand_over(&self, answers: &mut Vec<Answer>) {
        if answers.is_empty() {
            return;
        }
        {
            let mut state = self.state.lock();
            if state.runtime.is_some() {
                state.pending.append(answers);
                drop(state);
                self.wake.notify_one();
                return;
            }
        }
        for answer in answers.drain(..) {
            answer.send();
        }
    }

    /// The node stops: the completer sends what it holds and ends, and none
    /// starts again.
    pub(crate) fn end(&self) {
        self.state.lock().ended = true;
        self.wake.notify_one();
    }
}

/// A runtime's id as a nonzero `u64`, so the proposers' check is one atomic
/// load instead of a lock. Tokio's `Id` wraps a `NonZeroU64` and hashes as
/// that one `write_u64`, which [`KeyHasher`] keeps as it is; were that to
/// change, the key would still be a deterministic function of the id, and a
/// collision would only send another runtime's answers through the
/// completer, which still delivers them.
fn runtime_key(handle: &Handle) -> u64 {
    let mut key = KeyHasher(0);
    handle.id().hash(&mut key);
    key.0.max(1)
}

/// Folds what a `Hash` impl writes into a `u64`; a lone `write_u64` comes
/// out unchanged.
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = self.0.rotate_left(17).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ value;
    }
}

/// The completer: sends every answer handed over, until the node stops.
async fn complete(stopped: Stopped) {
    let completions = &stopped.0;
    let mut batch = Vec::new();
    loop {
        let ended = {
            let mut state = completions.state.lock();
            std::mem::swap(&mut state.pending, &mut batch);
            state.ended
        };
        for answer in batch.drain(..) {
            answer.send();
        }
        if ended {
            return;
        }
        completions.wake.notified().await;
    }
}

/// Marks the completer gone and sends what it left behind, directly; runs
/// when the task ends or its runtime drops it.
struct Stopped(Arc<Completions>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let left = {
            let mut state = self.0.state.lock();
            state.runtime = None;
            self.0.running.store(0, Ordering::Release);
            std::mem::take(&mut state.pending)
        };
        for answer in left {
            answer.send();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn answer(value: &'static [u8]) -> (Answer, oneshot::Receiver<Result<Bytes, NodeError>>) {
        let (sender, receiver) = oneshot::channel();
        (Answer::One(sender, Ok(Bytes::from_static(value))), receiver)
    }

    #[test]
    fn outside_a_runtime_answers_go_direct() {
        let completions = Completions::new();
        assert_eq!(completions.route(), Route::Direct);
        let (first, receiver) = answer(b"a");
        let mut answers = vec![first];
        completions.hand_over(&mut answers);
        assert!(answers.is_empty());
        assert_eq!(
            receiver.blocking_recv().expect("sent"),
            Ok(Bytes::from_static(b"a"))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_current_thread_runtime_gets_no_completer() {
        let completions = Completions::new();
        assert_eq!(completions.route(), Route::Direct);
        assert_eq!(completions.running.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_answers_arrive_through_the_completer() {
        let completions = Completions::new();
        assert_eq!(completions.route(), Route::Grouped);
        let mut receivers = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..10 {
            let (one, receiver) = answer(b"ok");
            answers.push(one);
            receivers.push(receiver);
        }
        // Handed over from a foreign thread, as the Raft thread does.
        let handed = Arc::clone(&completions);
        std::thread::spawn(move || handed.hand_over(&mut answers))
            .join()
            .expect("no panic");
        for receiver in receivers {
            let result = tokio::time::timeout(Duration::from_secs(30), receiver)
                .await
                .expect("answered")
                .expect("sent");
            assert_eq!(result, Ok(Bytes::from_static(b"ok")));
        }
        completions.end();
        // The completer ends and no other starts.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while completions.running.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline, "completer still runs");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(completions.route(), Route::Direct);
    }

    #[test]
    fn answers_held_by_a_dropped_runtime_are_still_sent() {
        let completions = Completions::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let route = runtime.block_on(async { completions.route() });
        assert_eq!(route, Route::Grouped);
        // Occupy the only worker, then leave an answer without a wake-up
        // and stop the runtime.
        let (started, worker_busy) = std::sync::mpsc::channel::<()>();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        runtime.spawn(async move {
            let _ = started.send(());
            let _ = blocked.recv();
        });
        worker_busy.recv().expect("the blocking task started");
        let (kept, receiver) = answer(b"kept");
        completions.state.lock().pending.push(kept);
        runtime.shutdown_background();
        drop(release);
        assert_eq!(
            receiver.blocking_recv().expect("sent on drop"),
            Ok(Bytes::from_static(b"kept"))
        );
        // Sent by the drop, or by a last poll before the worker saw the
        // shutdown; either way the task is dropped with the runtime.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while completions.running.load(Ordering::Acquire) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "completer not dropped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Another runtime may start a new completer.
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        assert_eq!(
            other.block_on(async { completions.route() }),
            Route::Grouped
        );
    }

    #[test]
    fn a_runtime_key_is_its_id() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let key = runtime_key(runtime.handle());
        assert_eq!(key.to_string(), runtime.handle().id().to_string());
        assert_ne!(key, runtime_key(other.handle()));
    }
}
