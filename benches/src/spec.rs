//! What a measured point is: the [`Scenario`] and its parameters ([`Spec`]).

use std::fmt;
use std::time::Duration;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every client locks and unlocks its own key (EX): the service's raw cycle rate.
    Uncontended,
    /// Every client locks and unlocks one shared key (EX): handoffs per second, queueing
    /// latency and fairness.
    Contended,
    /// One shared key; each cycle is a shared lock (PR) with probability `read_ratio`, else
    /// exclusive (EX).
    ReadersWriters,
    /// One shared key (EX); measures the time from a release to the grant of the next client.
    Handoff,
    /// `sessions` sessions take `locks` distinct locks between them and hold them all; reports
    /// the server's RSS per held lock.
    ManyLocks,
    /// `sessions` sessions each hold one lock on a key of their own and do nothing else (a
    /// dlock client renews its lease in the background); meanwhile one more client locks and
    /// unlocks a key of its own. Reports that client's cycle latency and the server's CPU (%
    /// of one core) and RSS: what idle sessions cost the server and the clients that work.
    Idle,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Uncontended => "uncontended",
            Scenario::Contended => "contended",
            Scenario::ReadersWriters => "readers-writers",
            Scenario::Handoff => "handoff",
            Scenario::ManyLocks => "many-locks",
            Scenario::Idle => "idle",
        })
    }
}

/// The parameters of one point.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The scenario.
    pub scenario: Scenario,
    /// Concurrent clients (timed scenarios).
    pub clients: usize,
    /// The measured window.
    pub duration: Duration,
    /// Running time before the window, not counted.
    pub warmup: Duration,
    /// Share of shared (read) locks in readers-writers.
    pub read_ratio: f64,
    /// Locks to hold (many-locks).
    pub locks: u64,
    /// Sessions holding them (many-locks), or idle sessions holding one lock each (idle).
    pub sessions: usize,
    /// Acquisitions in flight per session (many-locks).
    pub inflight: usize,
    /// The server process whose CPU and RSS are reported.
    pub server_pid: Option<u32>,
    /// Further server processes (the other members of a cluster) whose CPU is added to the
    /// server's.
    pub more_server_pids: Vec<u32>,
    /// Prefix of every key, so runs do not see each other's leftovers.
    pub key_prefix: String,
    /// Seed of the clients' random choices.
    pub seed: u64,
}

impl Spec {
    /// The defaults: 64 clients, 5 s after 1 s of warm-up, 90 % reads, 1,000,000 locks over
    /// 1,000 sessions; for idle, 10,000 sessions.
    pub fn new(scenario: Scenario) -> Spec {
        Spec {
            scenario,
            clients: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            read_ratio: 0.9,
            locks: 1_000_000,
            sessions: match scenario {
                Scenario::Idle => 10_000,
                _ => 1_000,
            },
            inflight: 4,
            server_pid: None,
            more_server_pids: Vec::new(),
            key_prefix: default_prefix(),
            seed: 0x5eed,
        }
    }
}

impl Spec {
    /// Every server process whose CPU counts: `server_pid` and `more_server_pids`.
    pub fn server_pids(&self) -> Vec<u32> {
        self.server_pid
            .iter()
            .chain(&self.more_server_pids)
            .copied()
            .collect()
    }
}

/// A key prefix unique to this process and moment.
pub fn default_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("lg{}-{}/", std::process::id(), nanos % 1_000_000_000)
}
