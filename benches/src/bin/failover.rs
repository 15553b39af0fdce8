//! `failover`: fail-over time of a 3-node dlock cluster (and, with `--features peers`, of a
//! 3-member etcd cluster), measured over many leader kills.
//!
//! ```text
//! cargo build --release -p dlock-server -p dlock-benches --bin dlock-server --bin failover
//! target/release/failover --backend dlock --kills 20
//! ```
//! It starts the members itself (release `dlock-server` next to this binary unless
//! `--dlock-server` says otherwise; `etcd` from the `PATH`), all on 127.0.0.1, with data under
//! `--work-dir`. Each round SIGKILLs the leader and measures the time to the first grant by the
//! new leader, restarts the killed member from its data directory and waits until it has
//! caught up. Every member is killed when it ends, fails or gets SIGINT or SIGTERM; the pids
//! of the running members are kept in `--pid-file` for a script that wants to be sure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dlock_benches::failover::{self, Cluster, KillResult, Member, Summary, members};

/// A cluster to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// Three dlock-server processes in cluster mode.
    Dlock,
    /// Three etcd processes (feature `peers`).
    Etcd,
}

/// Fail-over time of 3-node clusters: leader SIGKILL to the first grant by the new leader.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Clusters to measure, comma-separated.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "dlock"
    )]
    backend: Vec<Which>,
    /// Leader kills per cluster.
    #[arg(long, short, default_value_t = 20)]
    kills: usize,
    /// The dlock-server binary [default: dlock-server next to this binary].
    #[arg(long)]
    dlock_server: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// dlock members listen on BASE+1..3 (clients) and BASE+11..13 (peers); etcd members on
    /// BASE+21..23 and BASE+31..33.
    #[arg(long, default_value_t = 17450)]
    base_port: u16,
    /// Where the members' data directories and logs go [default: a new directory under the
    /// system's temporary directory, removed at the end].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Session lease asked of dlock, and lease TTL of etcd's clients.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Append one summary row per cluster to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Free text put in the CSV's label column (e.g. the run number).
    #[arg(long, default_value = "")]
    label: String,
    /// Keep the pids of the running members in this file (rewritten on every change).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Print every round's figures.
    #[arg(long, short)]
    verbose: bool,
}

/// Bounds that keep a run bounded.
const MAX_KILLS: usize = 1_000;

async fn measure<C: Cluster>(cluster: &mut C, args: &Args) -> Result<Summary> {
    let name = cluster.name();
    let pid_file = args.pid_file.clone();
    let note_change = |members: &[Member]| {
        if let Some(path) = &pid_file
            && let Err(e) = members::write_pid_file(path, members)
        {
            eprintln!("failover: {e:#}");
        }
    };
    let formed = failover::form(cluster).await;
    note_change(cluster.members());
    formed.with_context(|| format!("{name}: forming the cluster"))?;
    let prefix = dlock_benches::spec::default_prefix();
    let verbose = args.verbose;
    let outcome = failover::run(cluster, args.kills, &prefix, |members, result| {
        note_change(members);
        if let (true, Some(r)) = (verbose, result) {
            print_round(name, r);
        }
    })
    .await;
    for m in cluster.members() {
        m.kill().await?;
    }
    note_change(cluster.members());
    match outcome.error {
        None => Summary::of(name, &args.label, &outcome.results).context("no kill measured"),
        Some(e) => {
            // What the completed rounds measured is still worth seeing.
            if let Some(partial) = Summary::of(name, &args.label, &outcome.results) {
                println!("(stopped early) {}", partial.to_text());
            }
            Err(e.context(format!(
                "{name}: stopped after {} of {} kills",
                outcome.results.len(),
                args.kills
            )))
        }
    }
}

fn print_round(name: &str, r: &KillResult) {
    println!(
        "{name} round {}: first grant {:.1} ms, connected client {:.1} ms, held lock {}, \
         caught up in {:.1} ms",
        r.round,
        r.first_grant.as_secs_f64() * 1000.0,
        r.cycler.as_secs_f64() * 1000.0,
        if r.holder_kept { "kept" } else { "LOST" },
        r.catch_up.as_secs_f64() * 1000.0,
    );
}

async fn run(args: Args, work_dir: PathBuf) -> Result<()> {
    if args.kills == 0 || args.kills > MAX_KILLS {
        bail!("--kills must be between 1 and {MAX_KILLS}");
    }
    if args.base_port > u16::MAX - 40 {
        bail!("--base-port must leave room for 40 ports above it");
    }
    let server = match &args.dlock_server {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("dlock-server"),
    };
    // A cluster that fails is reported, and the next one is still measured.
    let mut failed = Vec::new();
    for &which in &args.backend {
        let measured = match which {
            Which::Dlock => {
                let mut cluster = failover::dlock::DlockCluster::new(
                    &server,
                    &work_dir,
                    args.base_port,
                    args.lease_ttl,
                );
                measure(&mut cluster, &args).await
            }
            #[cfg(feature = "peers")]
            Which::Etcd => {
                let mut cluster = failover::etcd::EtcdCluster::new(
                    &args.etcd,
                    &work_dir,
                    args.base_port + 20,
                    args.lease_ttl,
                );
                measure(&mut cluster, &args).await
            }
            #[cfg(not(feature = "peers"))]
            Which::Etcd => return Err(dlock_benches::backend::peers_missing("etcd")),
        };
        let summary = match measured {
            Ok(summary) => summary,
            Err(e) => {
                eprintln!("failover: {e:#}");
                failed.push(format!("{which:?}").to_lowercase());
                continue;
            }
        };
        println!("{}", summary.to_text());
        if let Some(path) = &args.csv {
            summary.append_csv(path)?;
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (work_dir, remove) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dlock-failover-{}", std::process::id())),
            true,
        ),
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("failover: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a signal the measuring future is dropped, and with it every member (killed).
    let outcome = tokio::select! {
        res = run(args, work_dir.clone()) => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if remove {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover: {e:#}");
            ExitCode::FAILURE
        }
    }
}
