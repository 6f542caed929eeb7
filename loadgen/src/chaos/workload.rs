//! Clients: each runs put / get / cas / del on a few shared keys and records
//! every operation whose effect is known or possible into its own history.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::client::{Connection, Reply, RequestError};
use crate::check::{Op, Operation, Outcome};

/// Bounds and timers of the clients.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub keys: u64,
    pub seed: u64,
    /// Per request: after it a write is indeterminate, a read dropped.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// REDIRECT answers followed for one operation.
    pub redirects_max: u32,
    /// Operations one client records at most; it stops after that.
    pub operations_per_client_max: usize,
    /// Pace of one client (operations started per second), so that a long
    /// run spreads its bounded history over the whole run; `None`: as fast
    /// as answers come.
    pub operations_per_s_max: Option<f64>,
    /// Pause after a failure before the next attempt (no busy loop while no
    /// node serves).
    pub failure_backoff: Duration,
}

impl WorkloadConfig {
    /// Clients that together record at most `history_operations_max`
    /// operations, paced to spread them over `duration` when they could
    /// otherwise run out early.
    pub fn new(
        keys: u64,
        seed: u64,
        clients: u64,
        duration: Duration,
        history_operations_max: usize,
    ) -> WorkloadConfig {
        let per_client =
            history_operations_max / usize::try_from(clients.max(1)).unwrap_or(usize::MAX);
        // Faster than this, a client would fill its share before the end.
        let pace = per_client as f64 / duration.as_secs_f64().max(1.0);
        WorkloadConfig {
            keys,
            seed,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            redirects_max: 3,
            operations_per_client_max: per_client,
            // Above ~2000/s a client is not slowed down in practice.
            operations_per_s_max: (pace < 2000.0).then_some(pace),
            failure_backoff: Duration::from_millis(50),
        }
    }
}

/// What clients counted besides their histories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Operations started.
    pub attempted: u64,
    /// Answered with a definite result (OK, NONE, MISMATCH, ...).
    pub acknowledged: u64,
    /// Definitely not applied (FAIL, REDIRECT not followed, node
    /// unreachable), or reads without an answer.
    pub failed: u64,
    /// Writes whose outcome is unknown (MAYBE, timeout, connection lost).
    pub indeterminate: u64,
    /// REDIRECT answers seen (each one followed or counted in `failed`).
    pub redirects: u64,
    /// Answers that fit no shape of the protocol.
    pub protocol_errors: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.attempted += other.attempted;
        self.acknowledged += other.acknowledged;
        self.failed += other.failed;
        self.indeterminate += other.indeterminate;
        self.redirects += other.redirects;
        self.protocol_errors += other.protocol_errors;
    }
}

/// One client's result.
#[derive(Debug, Default)]
pub struct ClientRun {
    pub history: Vec<Operation>,
    pub counters: Counters,
}

/// Monotonic nanoseconds since the run started: the history's clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now_ns(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The request line of `op`.
pub fn request_line(op: &Op) -> String {
    match op {
        Op::Put { key, value } => format!("PUT {key} {value}"),
        Op::Get { key } => format!("GET {key}"),
        Op::Cas { key, expected, new } => format!("CAS {key} {expected} {new}"),
        Op::Delete { key } => format!("DEL {key}"),
    }
}

/// The outcome a definite answer means for `op`, or `None` when the answer
/// does not fit the operation.
pub fn outcome_of(op: &Op, reply: &Reply) -> Option<Outcome> {
    match (op, reply) {
        (Op::Put { .. }, Reply::Ok(None)) => Some(Outcome::Put),
        (Op::Get { .. }, Reply::Ok(Some(value))) => Some(Outcome::Get(Some(value.clone()))),
        (Op::Get { .. }, Reply::Absent) => Some(Outcome::Get(None)),
        (Op::Cas { .. }, Reply::Ok(None)) => Some(Outcome::Cas(true)),
        (Op::Cas { .. }, Reply::Mismatch) => Some(Outcome::Cas(false)),
        (Op::Delete { .. }, Reply::Ok(Some(flag))) if flag == "1" => Some(Outcome::Delete(true)),
        (Op::Delete { .. }, Reply::Ok(Some(flag))) if flag == "0" => Some(Outcome::Delete(false)),
        _ => None,
    }
}

fn is_read(op: &Op) -> bool {
    matches!(op, Op::Get { .. })
}

/// What became of one operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    Known(Outcome),
    /// A write that may or may not have been applied.
    Unknown,
    /// Not applied, or a read without an answer: not in the history.
    Failed,
}

/// Adds one finished operation to the history and the counters.
pub fn record(
    run: &mut ClientRun,
    client: u64,
    op: Op,
    fate: Fate,
    invoked_ns: u64,
    completed_ns: u64,
) {
    run.counters.attempted += 1;
    match fate {
        Fate::Known(outcome) => {
            run.counters.acknowledged += 1;
            run.history.push(Operation {
                client,
                op,
                outcome,
                invoked_ns,
                completed_ns: Some(completed_ns),
            });
        }
        Fate::Unknown if !is_read(&op) => {
            run.counters.indeterminate += 1;
            run.history.push(Operation {
                client,
                op,
                outcome: Outcome::Indeterminate,
                invoked_ns,
                completed_ns: None,
            });
        }
        Fate::Unknown | Fate::Failed => run.counters.failed += 1,
    }
}

/// One client: its connection, where it sends, what it knows.
struct Client {
    id: u64,
    config: WorkloadConfig,
    nodes: Arc<BTreeMap<u64, SocketAddr>>,
    rng: SmallRng,
    target: u64,
    connection: Option<Connection>,
    writes: u64,
    /// The value this client last saw for each key (for CAS).
    seen: BTreeMap<String, String>,
}

impl Client {
    fn next_node(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.target = ids[self.rng.random_range(0..ids.len())];
        self.connection = None;
    }

    fn choose(&mut self) -> Op {
        let key = format!("k{}", self.rng.random_range(0..self.config.keys));
        self.writes += 1;
        // Unique across the run: client id and a per-client counter.
        let value = format!("c{}-{}", self.id, self.writes);
        let roll = self.rng.random_range(0..100u32);
        match (roll, self.seen.get(&key)) {
            (0..35, _) => Op::Get { key },
            (35..55, Some(expected)) => Op::Cas {
                expected: expected.clone(),
                key,
                new: value,
            },
            (55..63, _) => Op::Delete { key },
            _ => Op::Put { key, value },
        }
    }

    /// Runs `op` to a fate, following redirects.
    async fn execute(&mut self, op: &Op, counters: &mut Counters) -> Fate {
        let line = request_line(op);
        for _ in 0..=self.config.redirects_max {
            if self.connection.is_none() {
                let address = self.nodes[&self.target];
                match Connection::open(address, self.config.connect_timeout).await {
                    Ok(connection) => self.connection = Some(connection),
                    Err(_) => {
                        self.next_node();
                        return Fate::Failed;
                    }
                }
            }
            let Some(connection) = self.connection.as_mut() else {
                return Fate::Failed;
            };
            let reply = match connection.request(&line, self.config.request_timeout).await {
                Ok(reply) => reply,
                Err(RequestError::Connect { .. }) => return Fate::Failed,
                Err(RequestError::NoAnswer(_)) => {
                    self.next_node();
                    return Fate::Unknown;
                }
            };
            match reply {
                Reply::Redirect(address) => {
                    counters.redirects += 1;
                    match self.nodes.iter().find(|(_, a)| **a == address) {
                        Some((&id, _)) => {
                            self.target = id;
                            self.connection = None;
                        }
                        None => {
                            counters.protocol_errors += 1;
                            self.next_node();
                            return Fate::Failed;
                        }
                    }
                }
                Reply::Fail(_) => {
                    self.next_node();
                    return Fate::Failed;
                }
                Reply::Maybe(_) => {
                    self.next_node();
                    return Fate::Unknown;
                }
                Reply::Unexpected(_) => {
                    counters.protocol_errors += 1;
                    self.connection = None;
                    return Fate::Unknown;
                }
                reply => {
                    return match outcome_of(op, &reply) {
                        Some(outcome) => Fate::Known(outcome),
                        None => {
                            counters.protocol_errors += 1;
                            self.connection = None;
                            Fate::Unknown
                        }
                    };
                }
            }
        }
        Fate::Failed
    }

    fn learn(&mut self, op: &Op, fate: &Fate) {
        let (key, value) = match (op, fate) {
            (Op::Put { key, value }, Fate::Known(_)) => (key, Some(value)),
            (Op::Get { key }, Fate::Known(Outcome::Get(value))) => (key, value.as_ref()),
            (Op::Cas { key, new, .. }, Fate::Known(Outcome::Cas(true))) => (key, Some(new)),
            (Op::Delete { key }, Fate::Known(_)) => (key, None),
            _ => return,
        };
        match value {
            Some(value) => self.seen.insert(key.clone(), value.clone()),
            None => self.seen.remove(key),
        };
    }
}

/// Runs client `id` until `stop` is set (checked before each operation;
/// an operation in flight ends within its request timeouts).
///
/// # Cancel safety
/// Not cancel-safe: cancelling loses the history. Set `stop` instead.
pub async fn run_client(
    id: u64,
    config: WorkloadConfig,
    nodes: Arc<BTreeMap<u64, SocketAddr>>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> ClientRun {
    let mut rng = SmallRng::seed_from_u64(config.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let ids: Vec<u64> = nodes.keys().copied().collect();
    let target = ids[rng.random_range(0..ids.len())];
    let mut client = Client {
        id,
        config,
        nodes,
        rng,
        target,
        connection: None,
        writes: 0,
        seen: BTreeMap::new(),
    };
    let mut run = ClientRun::default();
    let started = Instant::now();
    let mut started_operations = 0u64;
    while !stop.load(Ordering::Relaxed)
        && run.history.len() < client.config.operations_per_client_max
    {
        if let Some(pace) = client.config.operations_per_s_max {
            let due = started + Duration::from_secs_f64(started_operations as f64 / pace);
            tokio::time::sleep_until(due.into()).await;
        }
        started_operations += 1;
        let op = client.choose();
        let invoked_ns = clock.now_ns();
        let mut counters = Counters::default();
        let fate = client.execute(&op, &mut counters).await;
        let completed_ns = clock.now_ns();
        run.counters.add(&counters);
        client.learn(&op, &fate);
        let failed = !matches!(fate, Fate::Known(_));
        record(&mut run, id, op, fate, invoked_ns, completed_ns);
        if failed {
            tokio::time::sleep(client.config.failure_backoff).await;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn request_lines() {
        assert_eq!(request_line(&put("k1", "v")), "PUT k1 v");
        assert_eq!(request_line(&Op::Get { key: "k".into() }), "GET k");
        let cas = Op::Cas {
            key: "k".into(),
            expected: "a".into(),
            new: "b".into(),
        };
        assert_eq!(request_line(&cas), "CAS k a b");
        assert_eq!(request_line(&Op::Delete { key: "k".into() }), "DEL k");
    }

    #[test]
    fn outcomes_fit_their_operation() {
        let get = Op::Get { key: "k".into() };
        let del = Op::Delete { key: "k".into() };
        assert_eq!(
            outcome_of(&put("k", "v"), &Reply::Ok(None)),
            Some(Outcome::Put)
        );
        assert_eq!(outcome_of(&put("k", "v"), &Reply::Absent), None);
        assert_eq!(
            outcome_of(&get, &Reply::Ok(Some("v".into()))),
            Some(Outcome::Get(Some("v".into())))
        );
        assert_eq!(outcome_of(&get, &Reply::Absent), Some(Outcome::Get(None)));
        assert_eq!(outcome_of(&get, &Reply::Ok(None)), None);
        assert_eq!(
            outcome_of(&del, &Reply::Ok(Some("1".into()))),
            Some(Outcome::Delete(true))
        );
        assert_eq!(
            outcome_of(&del, &Reply::Ok(Some("0".into()))),
            Some(Outcome::Delete(false))
        );
        assert_eq!(outcome_of(&del, &Reply::Ok(Some("2".into()))), None);
    }

    #[test]
    fn long_runs_are_paced_to_the_history_bound() {
        let short = WorkloadConfig::new(8, 1, 8, Duration::from_secs(45), 1_000_000);
        assert_eq!(short.operations_per_client_max, 125_000);
        assert_eq!(short.operations_per_s_max, None);
        let long = WorkloadConfig::new(8, 1, 8, Duration::from_secs(1800), 1_000_000);
        let pace = long.operations_per_s_max.unwrap();
        assert!((pace - 125_000.0 / 1800.0).abs() < 1e-9, "{pace}");
    }

    #[test]
    fn bookkeeping() {
        let mut run = ClientRun::default();
        record(
            &mut run,
            1,
            put("k", "a"),
            Fate::Known(Outcome::Put),
            10,
            20,
        );
        record(&mut run, 1, put("k", "b"), Fate::Unknown, 30, 40);
        record(
            &mut run,
            1,
            Op::Get { key: "k".into() },
            Fate::Unknown,
            50,
            60,
        );
        record(&mut run, 1, put("k", "c"), Fate::Failed, 70, 80);
        assert_eq!(
            run.counters,
            Counters {
                attempted: 4,
                acknowledged: 1,
                failed: 2,
                indeterminate: 1,
                ..Counters::default()
            }
        );
        // The failed write and the unanswered read are not in the history;
        // the unknown write is, with no completion time.
        assert_eq!(run.history.len(), 2);
        assert_eq!(run.history[0].completed_ns, Some(20));
        assert_eq!(run.history[1].outcome, Outcome::Indeterminate);
        assert_eq!(run.history[1].completed_ns, None);
        assert_eq!(run.history[1].invoked_ns, 30);
    }

    #[test]
    fn values_are_unique_and_cas_uses_a_seen_value() {
        let nodes = Arc::new(BTreeMap::from([(1, "127.0.0.1:1".parse().unwrap())]));
        let mut client = Client {
            id: 3,
            config: WorkloadConfig::new(2, 9, 1, Duration::from_secs(1), 1000),
            nodes,
            rng: SmallRng::seed_from_u64(1),
            target: 1,
            connection: None,
            writes: 0,
            seen: BTreeMap::new(),
        };
        let mut values = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let op = client.choose();
            match &op {
                Op::Put { value, .. } => assert!(values.insert(value.clone())),
                Op::Cas { key, expected, new } => {
                    assert_eq!(client.seen.get(key), Some(expected));
                    assert!(values.insert(new.clone()));
                }
                _ => {}
            }
            let fate = match &op {
                Op::Get { .. } => Fate::Known(Outcome::Get(Some("x".into()))),
                Op::Cas { .. } => Fate::Known(Outcome::Cas(true)),
                Op::Delete { .. } => Fate::Known(Outcome::Delete(true)),
                Op::Put { .. } => Fate::Known(Outcome::Put),
            };
            client.learn(&op, &fate);
        }
        assert!(values.len() > 500);
    }
}
