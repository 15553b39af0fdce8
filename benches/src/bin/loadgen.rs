//! `loadgen`: drives dlock, Redis, etcd or a bare TCP echo floor through the same lock
//! scenarios and prints one row per point (also appended to `--csv FILE`).
//!
//! ```text
//! cargo run --release -p dlock-benches --bin loadgen -- \
//!     --backend dlock,echo --scenario uncontended,contended --clients 16,64 --duration 5s
//! # over TLS, next to plain TCP (two servers; see `compare.sh tls`):
//! cargo run --release -p dlock-benches --bin loadgen -- --backend dlock,dlock-tls \
//!     --dlock-tls-addr 127.0.0.1:7422 --tls-ca ca.pem --scenario uncontended --clients 64
//! ```
//! The Redis and etcd backends need `--features peers`. Only loopback addresses are accepted.
//! At start loadgen raises its soft open-file limit to the hard one, and refuses to run a
//! point that needs more sockets than it (or the server named by `--server-pid`) may open.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dlock_benches::backend::dlock::DlockBackend;
use dlock_benches::backend::echo::EchoBackend;
use dlock_benches::limits::{self, SPARE_FDS};
use dlock_benches::report::{Row, append_csv};
use dlock_benches::scenario::{self, Scenario, Spec};

/// A lock service to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    /// dlock through dlock-client.
    Dlock,
    /// dlock through dlock-client over TLS (`--dlock-tls-addr`, `--tls-ca`).
    DlockTls,
    /// Redis: SET NX PX + Lua compare-and-delete (feature `peers`).
    Redis,
    /// etcd: lease + Lock/Unlock (feature `peers`).
    Etcd,
    /// A bare TCP echo server started by loadgen, or the `echo-server` at `--echo-addr`:
    /// the floor (uncontended and idle).
    Echo,
}

/// Load generator for dlock and the lock services it is compared with.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Backends to run, comma-separated.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "dlock"
    )]
    backend: Vec<BackendKind>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "uncontended"
    )]
    scenario: Vec<Scenario>,
    /// Concurrent clients per point, comma-separated (not used by many-locks and idle).
    #[arg(long, short, value_delimiter = ',', default_value = "64")]
    clients: Vec<usize>,
    /// Measured window per point.
    #[arg(long, short, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before the window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// dlock server address, or the comma-separated client addresses of every member of a
    /// cluster (each client is given the whole list and finds the leader).
    #[arg(long, default_value = "127.0.0.1:7420")]
    dlock_addr: String,
    /// dlock server address for `-b dlock-tls` (a server started with --tls-cert).
    #[arg(long, default_value = "127.0.0.1:7422")]
    dlock_tls_addr: String,
    /// dlock-tls: the CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// dlock-tls: the name the server's certificate is checked for.
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
    /// `-b echo`: an `echo-server` already listening here, instead of the echo server loadgen
    /// otherwise runs inside itself (whose CPU it then measures on its own threads). Give the
    /// echo-server's pid with `--server-pid` for its CPU and RSS.
    #[arg(long)]
    echo_addr: Option<SocketAddr>,
    /// Redis address.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis_addr: String,
    /// etcd client address, or the comma-separated client addresses of every member of an
    /// etcd cluster (each client is given them all).
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd_addr: String,
    /// Session lease asked of dlock, and lease TTL granted by etcd.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Expiry of a Redis lock (PX).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lock_ttl: Duration,
    /// Redis: wait between attempts on a taken lock.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    redis_retry: Duration,
    /// readers-writers: share of shared (PR) locks.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// many-locks: locks to hold at once.
    #[arg(long, default_value_t = 1_000_000)]
    locks: u64,
    /// many-locks: sessions holding the locks [default: 1000]. idle: idle sessions, each
    /// holding one lock [default: 10000].
    #[arg(long)]
    sessions: Option<usize>,
    /// many-locks: acquisitions in flight per session.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// The server process whose CPU (every scenario) and RSS (many-locks, idle) are reported,
    /// read from /proc/PID. For a cluster, every member's pid, comma-separated: the CPU is
    /// their sum, the RSS the first one's.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Append every row to this CSV file (header written when the file is new).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The name put in the rows' backend column instead of the backend's own (e.g.
    /// `dlock-3` for a 3-node cluster next to a single `dlock`).
    #[arg(long)]
    backend_name: Option<String>,
    /// Free text put in the CSV's label column (e.g. the run number).
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

/// Upper bounds that keep a run bounded in count and time.
const MAX_CLIENTS: usize = 10_000;
const MAX_SESSIONS: usize = 100_000;
const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_LOCKS: u64 = 10_000_000;

impl Args {
    fn validate(&self) -> Result<()> {
        if let Some(c) = self.clients.iter().find(|&&c| c == 0 || c > MAX_CLIENTS) {
            bail!("--clients {c}: must be between 1 and {MAX_CLIENTS}");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("--duration must be between 1ms and {MAX_DURATION:?}");
        }
        if self.warmup > MAX_DURATION {
            bail!("--warmup must be at most {MAX_DURATION:?}");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be between 0 and 1");
        }
        if self.locks == 0 || self.locks > MAX_LOCKS {
            bail!("--locks must be between 1 and {MAX_LOCKS}");
        }
        if self.sessions.is_some_and(|s| s == 0 || s > MAX_SESSIONS) {
            bail!("--sessions must be between 1 and {MAX_SESSIONS}");
        }
        if self.inflight == 0 || self.inflight > 1_000 {
            bail!("--inflight must be between 1 and 1000");
        }
        if self.backend.contains(&BackendKind::DlockTls) && self.tls_ca.is_none() {
            bail!("-b dlock-tls needs --tls-ca");
        }
        if self.redis_retry.is_zero() {
            bail!("--redis-retry must be positive");
        }
        if !cfg!(feature = "peers")
            && let Some(b) = self
                .backend
                .iter()
                .find(|b| matches!(b, BackendKind::Redis | BackendKind::Etcd))
        {
            return Err(dlock_benches::backend::peers_missing(
                &format!("{b:?}").to_lowercase(),
            ));
        }
        Ok(())
    }

    fn spec(&self, scenario: Scenario, clients: usize) -> Spec {
        Spec {
            scenario,
            clients,
            duration: self.duration,
            warmup: self.warmup,
            read_ratio: self.read_ratio,
            locks: self.locks,
            sessions: self.sessions.unwrap_or(Spec::new(scenario).sessions),
            inflight: self.inflight,
            server_pid: self.server_pid.first().copied(),
            more_server_pids: self.server_pid.iter().skip(1).copied().collect(),
            seed: self.seed,
            ..Spec::new(scenario)
        }
    }

    /// The most files one point makes loadgen open (one per connection: sessions for
    /// many-locks and idle, clients otherwise; two for the in-process echo floor, which holds
    /// the other ends too), the connections that point makes the server accept, and which
    /// point that is.
    fn most_connections(&self) -> (u64, u64, String) {
        let max_clients = self.clients.iter().copied().max().unwrap_or(0);
        let echo = self.backend.contains(&BackendKind::Echo);
        let mut most = (0, 0, String::new());
        for &s in &self.scenario {
            let sessions = self.spec(s, max_clients).sessions;
            let (conns, what) = match s {
                Scenario::ManyLocks => (sessions, format!("{s} with {sessions} sessions")),
                Scenario::Idle => (
                    sessions + 1,
                    format!("{s} with {sessions} sessions and a measuring client"),
                ),
                _ => (max_clients, format!("{s} with {max_clients} clients")),
            };
            let conns = conns as u64;
            // The echo floor runs uncontended and idle, with both ends in loadgen unless its
            // server is a process of its own.
            let own = if echo
                && self.echo_addr.is_none()
                && matches!(s, Scenario::Uncontended | Scenario::Idle)
            {
                2 * conns
            } else {
                conns
            };
            if own > most.0 {
                most = (own, conns, what);
            }
        }
        most
    }

    /// Fails when loadgen, or the server of `--server-pid`, may not open enough files for the
    /// largest point. `own` is loadgen's limit, `(soft, hard)`.
    fn check_open_files(&self, own: (u64, u64)) -> Result<()> {
        let (files, conns, what) = self.most_connections();
        limits::ensure_nofile("loadgen", own.0, Some(own.1), files + SPARE_FDS, &what)?;
        for &pid in &self.server_pid {
            let soft = limits::process_nofile(pid)?;
            let who = format!("the server (pid {pid})");
            limits::ensure_nofile(&who, soft, None, conns + SPARE_FDS, &what)?;
        }
        Ok(())
    }
}

/// Refuses any address that is not on this machine's loopback; `addrs` may be a
/// comma-separated list (the members of a cluster), each of which is checked.
async fn ensure_loopback(what: &str, addrs: &str) -> Result<()> {
    for addr in addrs.split(',').map(str::trim) {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .with_context(|| format!("{what}: cannot resolve {addr}"))?
            .collect();
        if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
            bail!("{what}: {addr} is not a loopback address; loadgen only targets this machine");
        }
    }
    Ok(())
}

async fn run_point(
    kind: BackendKind,
    args: &Args,
    spec: &Spec,
    echo: Option<&EchoBackend>,
) -> Result<Row> {
    match kind {
        BackendKind::Dlock => {
            scenario::run(&DlockBackend::new(&args.dlock_addr, args.lease_ttl), spec).await
        }
        BackendKind::DlockTls => {
            let ca = args
                .tls_ca
                .as_ref()
                .context("-b dlock-tls needs --tls-ca")?;
            let tls = dlock_client::TlsOptions::new()
                .ca_file(ca)
                .server_name(&args.tls_server_name);
            let backend = DlockBackend::new(&args.dlock_tls_addr, args.lease_ttl).with_tls(tls);
            scenario::run(&backend, spec).await
        }
        BackendKind::Echo => scenario::run(echo.context("echo server not started")?, spec).await,
        #[cfg(feature = "peers")]
        BackendKind::Redis => {
            use dlock_benches::backend::redis::RedisBackend;
            let rw = spec.scenario == Scenario::ReadersWriters;
            let backend = RedisBackend::new(&args.redis_addr, args.lock_ttl, args.redis_retry, rw)?;
            scenario::run(&backend, spec).await
        }
        #[cfg(feature = "peers")]
        BackendKind::Etcd => {
            use dlock_benches::backend::etcd::EtcdBackend;
            scenario::run(&EtcdBackend::new(&args.etcd_addr, args.lease_ttl), spec).await
        }
        #[cfg(not(feature = "peers"))]
        BackendKind::Redis | BackendKind::Etcd => Err(dlock_benches::backend::peers_missing(
            &format!("{kind:?}").to_lowercase(),
        )),
    }
}

fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Dlock => "dlock",
        BackendKind::DlockTls => "dlock-tls",
        BackendKind::Redis => "redis",
        BackendKind::Etcd => "etcd",
        BackendKind::Echo => "echo",
    }
}

async fn run(args: Args, open_files: (u64, u64)) -> Result<bool> {
    args.validate()?;
    args.check_open_files(open_files)?;
    for &kind in &args.backend {
        match kind {
            BackendKind::Dlock => ensure_loopback("--dlock-addr", &args.dlock_addr).await?,
            BackendKind::DlockTls => {
                ensure_loopback("--dlock-tls-addr", &args.dlock_tls_addr).await?
            }
            BackendKind::Redis => ensure_loopback("--redis-addr", &args.redis_addr).await?,
            BackendKind::Etcd => ensure_loopback("--etcd-addr", &args.etcd_addr).await?,
            BackendKind::Echo => {
                if let Some(addr) = args.echo_addr {
                    ensure_loopback("--echo-addr", &addr.to_string()).await?;
                }
            }
        }
    }
    let echo = match (args.backend.contains(&BackendKind::Echo), args.echo_addr) {
        (false, _) => None,
        (true, Some(addr)) => Some(EchoBackend::external(addr, args.lease_ttl)),
        (true, None) => Some(EchoBackend::start(args.lease_ttl).await?),
    };

    println!("{}", Row::text_header());
    let mut all_ok = true;
    for &kind in &args.backend {
        for &scenario in &args.scenario {
            // many-locks and idle have their own session count: one point, whatever
            // --clients says.
            let client_counts = match scenario {
                Scenario::ManyLocks | Scenario::Idle => &args.clients[..1],
                _ => &args.clients[..],
            };
            for &clients in client_counts {
                let spec = args.spec(scenario, clients);
                let mut row = match run_point(kind, &args, &spec, echo.as_ref()).await {
                    Ok(row) => row,
                    Err(e) => {
                        all_ok = false;
                        let shown = match scenario {
                            Scenario::ManyLocks | Scenario::Idle => spec.sessions,
                            _ => clients,
                        };
                        let mut row = Row::new(backend_name(kind), scenario, shown);
                        row.note = format!("failed: {e:#}");
                        row
                    }
                };
                row.label = args.label.clone();
                if let Some(name) = &args.backend_name {
                    row.backend = name.clone();
                }
                println!("{}", row.to_text());
                if let Some(path) = &args.csv {
                    append_csv(path, std::slice::from_ref(&row))?;
                }
            }
        }
    }
    Ok(all_ok)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Before any socket is opened: thousands of sessions need more than the default 1024.
    let open_files = match limits::raise_nofile() {
        Ok(limits) => limits,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(args, open_files).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
