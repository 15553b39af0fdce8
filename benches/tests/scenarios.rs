//! The scenario runner against an in-memory backend on tokio's paused clock: what it counts
//! (cycles, handoffs, per-client shares) and how it ends a window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::Result;
use dlock_benches::backend::echo::EchoBackend;
use dlock_benches::{Access, Backend, Conn, Scenario, Spec, scenario};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Every operation costs this much (virtual) time, like a round trip.
const RTT: Duration = Duration::from_millis(1);

type Keys = Arc<StdMutex<HashMap<String, Arc<Mutex<()>>>>>;

/// One FIFO mutex per key (tokio's `Mutex` is fair), shared by all connections.
#[derive(Default)]
struct FakeBackend {
    keys: Keys,
    /// When true, the fake declares that pending acquisitions must not be dropped.
    keep_pending: bool,
    /// Acquisitions dropped before they completed.
    abandoned: Arc<AtomicUsize>,
    /// When true, connecting costs a round trip too.
    connect_rtt: bool,
    /// Connections being opened right now, and the most there ever were.
    connecting: Arc<AtomicUsize>,
    max_connecting: Arc<AtomicUsize>,
    /// The fewest other keys held at any acquisition of the idle scenario's measuring client.
    min_held_while_probing: Arc<AtomicUsize>,
}

struct FakeConn {
    keys: Keys,
    abandoned: Arc<AtomicUsize>,
    min_held_while_probing: Arc<AtomicUsize>,
}

/// How many keys other than `except` are locked now.
fn held_keys(keys: &Keys, except: &str) -> usize {
    let keys = keys.lock().expect("not poisoned");
    keys.iter()
        .filter(|(k, m)| k.as_str() != except && m.try_lock().is_err())
        .count()
}

/// Counts an acquisition as abandoned if it is dropped before it completes.
struct PendingGuard<'a>(&'a AtomicUsize, bool);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Backend for FakeBackend {
    type Conn = FakeConn;

    fn name(&self) -> &'static str {
        "fake"
    }

    fn unsupported(&self, scenario: Scenario) -> Option<&'static str> {
        (scenario == Scenario::ReadersWriters).then_some("no shared mode")
    }

    fn abandon_safe(&self) -> bool {
        !self.keep_pending
    }

    async fn connect(&self, _id: usize) -> Result<FakeConn> {
        if self.connect_rtt {
            let now = self.connecting.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_connecting.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(RTT).await;
            self.connecting.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(FakeConn {
            keys: self.keys.clone(),
            abandoned: self.abandoned.clone(),
            min_held_while_probing: self.min_held_while_probing.clone(),
        })
    }
}

impl Conn for FakeConn {
    type Held = OwnedMutexGuard<()>;

    async fn acquire(&self, key: &str, _access: Access) -> Result<Self::Held> {
        let m = {
            let mut keys = self.keys.lock().expect("not poisoned");
            keys.entry(key.to_owned()).or_default().clone()
        };
        if key.ends_with("idle-probe") {
            let held = held_keys(&self.keys, key);
            self.min_held_while_probing
                .fetch_min(held, Ordering::SeqCst);
        }
        let mut pending = PendingGuard(&self.abandoned, false);
        tokio::time::sleep(RTT).await;
        let guard = m.lock_owned().await;
        pending.1 = true;
        Ok(guard)
    }

    async fn release(&self, held: Self::Held) -> Result<()> {
        // The lock stays taken until the release has travelled.
        tokio::time::sleep(RTT).await;
        drop(held);
        Ok(())
    }

    async fn close(self, _held: Vec<Self::Held>) -> Result<()> {
        Ok(())
    }
}

fn spec(scenario: Scenario, clients: usize) -> Spec {
    Spec {
        clients,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(100),
        ..Spec::new(scenario)
    }
}

#[tokio::test(start_paused = true)]
async fn uncontended_counts_every_clients_cycles() {
    let row = scenario::run(&FakeBackend::default(), &spec(Scenario::Uncontended, 4))
        .await
        .expect("runs");
    // Two virtual round trips per cycle: about 500 cycles per client in one second.
    assert!((1_900..=2_000).contains(&row.ops), "{row:?}");
    assert_eq!(row.ops_per_s, row.ops as f64);
    assert!(row.client_min >= 475 && row.client_max <= 500, "{row:?}");
    assert_eq!(row.handoffs, None);
    let cycle = row.cycle.expect("cycle latencies");
    assert!((2_000..=2_100).contains(&cycle.p50), "{cycle:?}");
    assert_eq!(row.errors, 0);
}

#[tokio::test(start_paused = true)]
async fn contended_on_a_fifo_lock_hands_off_every_time_and_fairly() {
    let row = scenario::run(&FakeBackend::default(), &spec(Scenario::Contended, 4))
        .await
        .expect("runs");
    assert!(row.ops > 100, "{row:?}");
    // A FIFO lock never gives the lock back to the client that just released it while
    // others wait: every grant is a handoff, and every client gets its turn.
    let handoffs = row.handoffs.expect("handoffs counted");
    assert!(handoffs + 4 >= row.ops, "{row:?}");
    assert!(row.fairness().expect("fairness") >= 0.9, "{row:?}");
    assert!(row.handoff.is_some());
}

#[tokio::test(start_paused = true)]
async fn clients_of_a_backend_that_must_not_abandon_finish_their_wait() {
    let backend = FakeBackend {
        keep_pending: true,
        ..FakeBackend::default()
    };
    let row = scenario::run(&backend, &spec(Scenario::Contended, 8))
        .await
        .expect("runs");
    assert!(row.ops > 0, "{row:?}");
    assert_eq!(backend.abandoned.load(Ordering::Relaxed), 0);
    // The key is free again: every waiter got the lock and released it.
    let key_free = backend
        .keys
        .lock()
        .expect("not poisoned")
        .values()
        .all(|m| m.try_lock().is_ok());
    assert!(key_free);
}

#[tokio::test(start_paused = true)]
async fn clients_of_other_backends_abandon_their_wait_at_the_end() {
    let backend = FakeBackend::default();
    scenario::run(&backend, &spec(Scenario::Contended, 8))
        .await
        .expect("runs");
    // Seven clients were queued behind the holder when the window closed.
    assert!(backend.abandoned.load(Ordering::Relaxed) >= 6);
}

#[tokio::test(start_paused = true)]
async fn unsupported_scenarios_give_a_row_that_says_why() {
    let row = scenario::run(&FakeBackend::default(), &spec(Scenario::ReadersWriters, 4))
        .await
        .expect("runs");
    assert_eq!(row.ops, 0);
    assert_eq!(row.note, "unsupported: no shared mode");
}

#[tokio::test(start_paused = true)]
async fn many_locks_holds_every_lock_until_the_sessions_close() {
    let backend = FakeBackend::default();
    let spec = Spec {
        locks: 1_000,
        sessions: 10,
        inflight: 3,
        ..Spec::new(Scenario::ManyLocks)
    };
    let row = scenario::run(&backend, &spec).await.expect("runs");
    assert_eq!(row.locks, Some(1_000));
    assert_eq!((row.client_min, row.client_max), (100, 100));
    assert_eq!(backend.keys.lock().expect("not poisoned").len(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_hold_their_locks_while_one_client_cycles() {
    let backend = FakeBackend {
        connect_rtt: true,
        min_held_while_probing: Arc::new(AtomicUsize::new(usize::MAX)),
        ..FakeBackend::default()
    };
    let spec = Spec {
        sessions: 600,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(100),
        ..Spec::new(Scenario::Idle)
    };
    let row = scenario::run(&backend, &spec).await.expect("runs");
    assert_eq!((row.clients, row.locks), (600, Some(600)));
    // Every acquisition of the measuring client found all 600 idle locks held.
    assert_eq!(backend.min_held_while_probing.load(Ordering::SeqCst), 600);
    // Connections are opened a bounded number at a time.
    assert_eq!(backend.max_connecting.load(Ordering::SeqCst), 256);
    // One client, two virtual round trips per cycle: about 500 cycles in one second.
    assert!((490..=500).contains(&row.ops), "{row:?}");
    let cycle = row.cycle.expect("cycle latencies");
    assert!((2_000..=2_100).contains(&cycle.p50), "{cycle:?}");
    assert_eq!(row.errors, 0, "{row:?}");
    // Without --server-pid nor an in-process server there is no server CPU or RSS.
    assert_eq!((row.server_cpu_pct, row.rss_held_kb), (None, None));
    // Every session closed: no lock is left.
    assert_eq!(held_keys(&backend.keys, ""), 0);
}

#[test]
fn idle_defaults_to_ten_thousand_sessions() {
    assert_eq!(Spec::new(Scenario::Idle).sessions, 10_000);
    assert_eq!(Spec::new(Scenario::ManyLocks).sessions, 1_000);
}

/// A short point against the echo floor: 2 clients for 200 ms, or 20 idle sessions for
/// 100 ms (after 50 ms of warm-up).
fn short(scenario: Scenario) -> Spec {
    let base = Spec {
        warmup: Duration::from_millis(50),
        ..Spec::new(scenario)
    };
    match scenario {
        Scenario::Idle => Spec {
            sessions: 20,
            duration: Duration::from_millis(100),
            ..base
        },
        _ => Spec {
            clients: 2,
            duration: Duration::from_millis(200),
            ..base
        },
    }
}

#[tokio::test]
async fn the_echo_floor_runs_over_loopback() {
    let echo = EchoBackend::start(Duration::from_secs(10))
        .await
        .expect("echo server");
    assert!(echo.addr().ip().is_loopback());
    let spec = short(Scenario::Uncontended);
    let row = scenario::run(&echo, &spec).await.expect("runs");
    assert!(row.ops > 0, "{row:?}");
    assert!(row.client_min > 0);
    assert_eq!(row.errors, 0);
    // The echo server runs in this process, so both CPU shares are known.
    assert!(row.server_cpu_us_per_op.is_some() && row.client_cpu_us_per_op.is_some());
    let contended = scenario::run(&echo, &Spec::new(Scenario::Contended))
        .await
        .expect("runs");
    assert!(contended.note.starts_with("unsupported"));
    // Only idle connections renew.
    assert_eq!(echo.renewals_echoed(), Some(0));
}

#[tokio::test]
async fn idle_echo_connections_renew_as_a_client_would() {
    // Renewals every 20 ms (± 2 ms), against the scenario's 250 ms and more of windows.
    let echo = EchoBackend::start(Duration::from_millis(60))
        .await
        .expect("echo server");
    let spec = short(Scenario::Idle);
    let row = scenario::run(&echo, &spec).await.expect("runs");
    assert_eq!((row.locks, row.errors), (Some(20), 0), "{row:?}");
    assert!(row.ops > 0, "{row:?}");
    // The echo server runs in this process: the idle sessions' cost is known.
    assert!(row.server_cpu_pct.is_some(), "{row:?}");
    let renewed = echo.renewals_echoed().expect("an in-process server");
    assert!(renewed >= 20, "{renewed} renewals from 20 idle connections");
}

/// A child process killed when the test ends, whether it passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_external_echo_server_is_driven_at_its_address_and_measured_by_its_pid() {
    // The echo-server binary, on any free port.
    let mut server = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("echo-server starts"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("echo-server prints its address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not an address line: {line:?}"));
    let echo = EchoBackend::external(addr, Duration::from_millis(60));
    assert_eq!(echo.renewals_echoed(), None);
    // Without its pid there is no server to measure: nothing in this process is one.
    let spec = short(Scenario::Uncontended);
    let row = scenario::run(&echo, &spec).await.expect("runs");
    assert!(row.ops > 0 && row.errors == 0, "{row:?}");
    assert_eq!(row.server_cpu_us_per_op, None, "{row:?}");
    // With it, the server's CPU and the idle sessions' RSS are the echo-server's.
    let idle = Spec {
        server_pid: Some(server.0.id()),
        ..short(Scenario::Idle)
    };
    let row = scenario::run(&echo, &idle).await.expect("runs");
    assert_eq!((row.locks, row.errors), (Some(20), 0), "{row:?}");
    assert!(row.server_cpu_pct.is_some(), "{row:?}");
    assert!(row.rss_held_kb.is_some_and(|kb| kb > 0), "{row:?}");
    // SIGTERM ends it cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert!(server.0.wait().expect("wait").success());
}
