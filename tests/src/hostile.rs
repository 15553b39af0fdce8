//! Helpers of the hostile-client suite (`tests/hostile`): a well-behaved [`Bystander`] that
//! keeps working next to an attacker, and a server child ([`server_child`]) whose memory can
//! be measured from outside.
//!
//! The bystander proves two things about the server under attack: it keeps serving others
//! (lock cycles complete, each bounded by [`CYCLE_LIMIT`], a hang detector and not a latency
//! target) and it never takes away a lock a well-behaved session holds.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, ClientBuilder, LockGuard, LockState, Mode};
use tokio_util::sync::CancellationToken;

use crate::chaos::server_proc::{ServerProc, ServerSpec};

/// Bound on one lock cycle of the bystander (lock, then unlock): long enough that only a
/// hang exceeds it.
pub const CYCLE_LIMIT: Duration = Duration::from_secs(10);

/// Pause between the bystander's cycles while an attack runs, so that it does not compete
/// with the attacker for the two cores of a CI machine.
const CYCLE_PAUSE: Duration = Duration::from_millis(20);

/// A well-behaved client: one session holding an EX lock for the whole test, and cycling
/// (lock, unlock) another resource on demand.
pub struct Bystander {
    client: Client,
    held: LockGuard,
    held_name: String,
    cycle_name: String,
    /// How long each cycle took, in order.
    took: Mutex<Vec<Duration>>,
}

/// How long a [`Bystander`]'s lock cycles took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleTimes {
    /// Cycles measured.
    pub count: usize,
    /// The median cycle.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest cycle.
    pub max: Duration,
}

impl std::fmt::Display for CycleTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cycles, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

impl Bystander {
    /// Connects to `addr` with the server's default lease and takes its held lock.
    pub async fn start(addr: SocketAddr, name: &str) -> Result<Bystander> {
        Bystander::start_with(Client::builder(addr.to_string()), name).await
    }

    /// Connects with `builder` (for a lease of its own) and takes its held lock.
    pub async fn start_with(builder: ClientBuilder, name: &str) -> Result<Bystander> {
        let client = tokio::time::timeout(CYCLE_LIMIT, builder.name(name).connect())
            .await
            .context("bystander: connect timed out")?
            .context("bystander: connect")?;
        let held_name = format!("bystander/{name}/held");
        let held = tokio::time::timeout(CYCLE_LIMIT, client.lock(&held_name, Mode::EX))
            .await
            .context("bystander: taking its held lock timed out")?
            .context("bystander: taking its held lock")?;
        Ok(Bystander {
            client,
            held,
            held_name,
            cycle_name: format!("bystander/{name}/cycle"),
            took: Mutex::new(Vec::new()),
        })
    }

    /// The bystander's client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One cycle: takes the cycling lock in EX and releases it, within [`CYCLE_LIMIT`].
    /// Each cycle's duration is recorded for [`times`](Self::times).
    pub async fn cycle(&self) -> Result<()> {
        let start = Instant::now();
        tokio::time::timeout(CYCLE_LIMIT, async {
            let guard = self.client.lock(&self.cycle_name, Mode::EX).await?;
            guard.unlock().await
        })
        .await
        .context("bystander: a lock cycle hung")?
        .context("bystander: a lock cycle failed")?;
        let took = start.elapsed();
        self.took
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(took);
        Ok(())
    }

    /// How long the cycles so far took (zero durations before the first cycle).
    pub fn times(&self) -> CycleTimes {
        let mut took = self.took.lock().unwrap_or_else(|e| e.into_inner()).clone();
        took.sort_unstable();
        let at = |q: f64| {
            let i = ((took.len() as f64 - 1.0) * q).round() as usize;
            took.get(i).copied().unwrap_or_default()
        };
        CycleTimes {
            count: took.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: took.last().copied().unwrap_or_default(),
        }
    }

    /// `n` cycles one after the other.
    pub async fn cycles(&self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.cycle().await?;
        }
        Ok(())
    }

    /// Cycles until `stop` is cancelled (at least once); returns the number of cycles.
    pub async fn cycle_until(&self, stop: &CancellationToken) -> Result<u64> {
        let mut n = 0;
        loop {
            self.cycle().await?;
            n += 1;
            tokio::select! {
                _ = stop.cancelled() => return Ok(n),
                () = tokio::time::sleep(CYCLE_PAUSE) => {}
            }
        }
    }

    /// Runs `attack` while cycling; returns the attack's result and the number of cycles
    /// completed meanwhile (at least one). Fails if a cycle fails or hangs.
    pub async fn alongside<T>(&self, attack: impl Future<Output = Result<T>>) -> Result<(T, u64)> {
        let stop = CancellationToken::new();
        let (attacked, cycled) = tokio::join!(
            async {
                let r = attack.await;
                stop.cancel();
                r
            },
            self.cycle_until(&stop)
        );
        Ok((attacked?, cycled?))
    }

    /// Checks that the held lock is still this session's: the guard reports no loss and the
    /// server shows it granted in EX to this session.
    pub async fn check_held(&self) -> Result<()> {
        ensure!(!self.held.is_lost(), "bystander: its held lock was lost");
        let info = tokio::time::timeout(CYCLE_LIMIT, self.client.query_resource(&self.held_name))
            .await
            .context("bystander: query timed out")??
            .context("bystander: its held resource is gone")?;
        let me = self.client.session_id();
        let held = info
            .granted
            .iter()
            .any(|l| l.session == me && l.state == LockState::Granted { mode: Mode::EX });
        ensure!(
            held,
            "bystander: its lock is not granted any more: {info:?}"
        );
        Ok(())
    }
}

/// The audit log of a [`server_child`], in its directory.
pub const AUDIT_LOG: &str = "audit.jsonl";

/// The data directory of a [`server_child`], in its directory (created by the server).
pub const DATA_DIR: &str = "data";

/// Starts a server child (`exe serve`, the `chaos` binary) with its data directory, audit
/// log and log file in `dir`, further server flags `args` and environment variables `env`.
/// Unless `args` set the audit log's rotation, the log is kept to 1 MiB (no rotated files),
/// so a long run does not fill the disk.
pub async fn server_child(
    exe: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<ServerProc> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if !args.contains(&"--audit-log-max-size") {
        all.extend(["--audit-log-max-size", "1MiB", "--audit-log-keep", "0"].map(String::from));
    }
    let spec = ServerSpec {
        exe: exe.to_owned(),
        data_dir: dir.join(DATA_DIR),
        audit_log: dir.join(AUDIT_LOG),
        log_file: dir.join("server.log"),
        args: all,
    };
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ServerProc::start_with_env(spec, env).await
}

/// The resident set size of a server child in KiB.
pub fn rss_kib(server: &ServerProc) -> Result<u64> {
    server.rss_kib().context("reading the server's RSS")
}

/// The peak resident set size of a server child in KiB, since it started.
pub fn peak_rss_kib(server: &ServerProc) -> Result<u64> {
    server
        .peak_rss_kib()
        .context("reading the server's peak RSS")
}

/// KiB as MiB with one decimal, for reports.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
