//! `chaos`: dlock's fault-injection runner.
//!
//! - `chaos [--duration 60s] [--clients 16] [--faults cut,blackhole,drop,pause,kill] ...`
//!   runs the workload against a server child while injecting faults, checks the history and
//!   exits non-zero on any violation (printing the counterexamples).
//! - `chaos --cluster [--duration 10m] [--faults ...]` does the same against a cluster of
//!   three server children, with leader kills, follower kills and partitions in the fault
//!   bag (`leader-kill,follower-kill,partition` next to the client faults), and checks the
//!   history merged from the members' audit logs.
//! - `chaos serve --listen ADDR --data-dir DIR --audit-log FILE [server flags]` runs a dlock
//!   server (the child the runner starts, kills and restarts); it prints
//!   `listening on ADDR` once it listens.
//! - `chaos fuzz [--inputs N]` sends seeded random and mutated frames to a live server child.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dlock_tests::chaos::CheckConfig;
use dlock_tests::chaos::faults::{FaultConfig, FaultKind};
use dlock_tests::chaos::fuzz::{FuzzConfig, run_fuzz};
use dlock_tests::chaos::run::{ChaosConfig, run_chaos};
use dlock_tests::chaos::server_proc::LISTENING;
use dlock_tests::chaos::workload::WorkloadConfig;
use tracing_subscriber::EnvFilter;

/// The allocator of the `dlock-server` binary, so that `chaos serve` measures as it does.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "dlock safety under faults: workload, faults, checker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a dlock server (used as the child process of a chaos run).
    Serve(Box<dlock_server::cli::Args>),
    /// Fuzz a live server (and the frame decoder) with random and mutated frames.
    Fuzz(FuzzArgs),
    /// Check a kept history again (`audit.jsonl` and `client.jsonl` in a run's directory).
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The run's directory.
    dir: PathBuf,
    /// Count the restart grace gap separately instead of as violations.
    #[arg(long)]
    allow_restart_gap: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// How long the workload runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Number of workload clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Number of hot resources.
    #[arg(long, default_value_t = 4)]
    resources: usize,
    /// Lease TTL of every client.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Fault kinds, comma separated (cut, blackhole, drop, pause, kill; against a cluster
    /// leader-kill, follower-kill, partition instead of kill), or "none". Default: every
    /// kind that applies.
    #[arg(long)]
    faults: Option<String>,
    /// Run against a cluster of three members (`chaos serve --node-id ...` children).
    #[arg(long)]
    cluster: bool,
    /// Shortest gap between faults.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    min_gap: Duration,
    /// Longest gap between faults.
    #[arg(long, default_value = "800ms", value_parser = humantime::parse_duration)]
    max_gap: Duration,
    /// Seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the history (audit log, server log, data) in this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Allowance beyond a lease for an expiry to happen (property 6).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    expiry_allowance: Duration,
    /// Count lost() reports that come after a restarted server granted the lock elsewhere as
    /// a known gap instead of violations (the server has no restart grace period yet).
    #[arg(long)]
    allow_restart_gap: bool,
    /// Print the report as JSON too.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FuzzArgs {
    /// Number of fuzz inputs (frames) to send to the live server.
    #[arg(long, default_value_t = 100_000)]
    inputs: u64,
    /// Seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.cmd {
        Some(Cmd::Serve(args)) => {
            // As the `dlock-server` binary does: freed memory goes back to the system.
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                eprintln!("cannot start the allocator's purging thread: {e}");
            }
            rt.block_on(serve(*args))
        }
        Some(Cmd::Fuzz(f)) => {
            init_logs("warn,dlock_client=error");
            let exe = std::env::current_exe()?;
            let seed = f.seed.unwrap_or_else(clock_seed);
            let report = rt.block_on(run_fuzz(FuzzConfig {
                exe,
                inputs: f.inputs,
                seed,
                ..FuzzConfig::default()
            }))?;
            println!("{report}");
            if !report.is_ok() {
                bail!("fuzzing found a problem");
            }
            Ok(())
        }
        Some(Cmd::Check(c)) => recheck(c),
        None => {
            // The member faults, each as it starts and ends, for a cluster run's timeline.
            init_logs("warn,dlock_client=error,dlock_tests::chaos::faults=info");
            rt.block_on(run(cli.run))
        }
    }
}

fn init_logs(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Plain text: the tests read these logs from files.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn clock_seed() -> u64 {
    dlock_tests::chaos::history::now_us()
}

async fn run(args: RunArgs) -> Result<()> {
    let faults = args.faults.clone().unwrap_or_else(|| {
        let all: &[FaultKind] = if args.cluster {
            &FaultKind::CLUSTER
        } else {
            &FaultKind::ALL
        };
        all.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    });
    let kinds = if faults == "none" || faults.is_empty() {
        Vec::new()
    } else {
        faults
            .split(',')
            .map(|s| {
                FaultKind::parse(s.trim()).with_context(|| format!("unknown fault kind {s:?}"))
            })
            .collect::<Result<Vec<_>>>()?
    };
    let seed = args.seed.unwrap_or_else(clock_seed);
    let cfg = ChaosConfig {
        exe: std::env::current_exe()?,
        duration: args.duration,
        workload: WorkloadConfig {
            clients: args.clients,
            resources: args.resources,
            lease_ttl: args.lease_ttl,
            ..WorkloadConfig::default()
        },
        faults: FaultConfig {
            kinds,
            min_gap: args.min_gap,
            max_gap: args.max_gap,
            ..FaultConfig::default()
        },
        seed,
        dir: args.dir,
        check: CheckConfig {
            expiry_allowance_us: u64::try_from(args.expiry_allowance.as_micros())
                .unwrap_or(u64::MAX),
            restart_grace: !args.allow_restart_gap,
            ..CheckConfig::default()
        },
        cluster: args.cluster,
    };
    eprintln!(
        "chaos: seed {seed}, running for {:?}{}",
        cfg.duration,
        if cfg.cluster {
            " against a cluster of three"
        } else {
            ""
        }
    );
    let report = run_chaos(cfg).await?;
    println!("{report}");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !report.is_ok() {
        bail!("{} violation(s) found", report.check.violation_count());
    }
    Ok(())
}

/// Checks a kept history again.
fn recheck(args: CheckArgs) -> Result<()> {
    use std::io::BufRead;
    let mut checker = dlock_tests::chaos::Checker::new(CheckConfig {
        expect_quiescent: true,
        restart_grace: !args.allow_restart_gap,
        ..CheckConfig::default()
    });
    // A cluster run keeps one log per member: merged by index.
    let members: Vec<PathBuf> = (1..)
        .map(|i| args.dir.join(format!("audit-{i}.jsonl")))
        .take_while(|p| p.exists())
        .collect();
    let audit = if members.is_empty() {
        format!(
            "{:?}",
            dlock_tests::chaos::read_audit_log(&args.dir.join("audit.jsonl"), |l| checker.feed(l))?
        )
    } else {
        let merge = dlock_tests::chaos::cluster::merge_member_logs(&members, |l| checker.feed(l))?;
        if merge.mismatch_count > 0 {
            bail!("members disagree: {:?}", merge.mismatches);
        }
        format!("{merge:?}")
    };
    let file = std::fs::File::open(args.dir.join("client.jsonl")).context("client.jsonl")?;
    let mut records = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        records.push(serde_json::from_str(&line?)?);
    }
    let report = checker.finish(&records);
    println!("{audit}\n{report}");
    if let Some(e) = &report.min_lost_lead_example {
        println!("smallest lost() lead: {e}");
    }
    if !report.is_ok() {
        bail!("{} violation(s) found", report.violation_count());
    }
    Ok(())
}

/// Runs a server on `args.listen` (port 0: any), printing the bound address first; with
/// `--http-listen`, its HTTP listener is bound before that too.
async fn serve(args: dlock_server::cli::Args) -> Result<()> {
    let filter = match &args.log_level {
        Some(level) => EnvFilter::try_new(level).context("invalid --log-level")?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    // Plain text: the tests read these logs from files.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let config = args.to_config();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let http = match config.http_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--http-listen)"))?,
        ),
        None => None,
    };
    println!("{LISTENING}{}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match http {
        Some(http) => {
            let security = dlock_server::Security::load(&config)?;
            dlock_server::run_with_http(listener, http, config, security, shutdown).await?;
        }
        None => dlock_server::run(listener, config, shutdown).await?,
    }
    Ok(())
}
