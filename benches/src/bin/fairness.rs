//! `fairness`: what one client address's flood of pipelined lock requests does to another
//! address's lock cycle (see `dlock_benches::fairness`).
//!
//! ```text
//! cargo build --release -p dlock-server -p dlock-benches --bin dlock-server --bin fairness
//! target/release/fairness --server-bin target/release/dlock-server --runs 3
//! # two builds side by side, alternating within each run:
//! target/release/fairness --server-bin /tmp/dlock-server-before,target/release/dlock-server
//! ```
//!
//! For every run and every server binary it starts a fresh server on 127.0.0.1 (a temporary
//! data directory, its HTTP listener on the port after `--port`, otherwise the defaults plus
//! `--extra-args`), measures the bystander alone and beside the attack, reads the server's
//! histogram of its lock engine's wake-ups (`dlock_core_wakeup_seconds`: how long the engine
//! kept everyone waiting at once, free of this process's own scheduling), and stops the
//! server. It prints one line per measurement and the medians per binary. Only loopback addresses are used; every wait is
//! bounded and the servers are killed when it ends.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dlock_benches::fairness::{self, FairRun, FairSpec};
use dlock_benches::limits::{self, SPARE_FDS};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Measures a bystander's lock cycle alone and beside another address's flood.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The dlock-server binaries to measure, comma-separated (each run measures each).
    #[arg(long, value_delimiter = ',', required = true)]
    server_bin: Vec<PathBuf>,
    /// Extra arguments for every server, whitespace-separated.
    #[arg(long, default_value = "")]
    extra_args: String,
    /// The port the servers listen on (127.0.0.1).
    #[arg(long, default_value_t = 17_460)]
    port: u16,
    /// The loopback address the attacker connects from.
    #[arg(long, default_value = "127.0.0.2")]
    attacker_ip: IpAddr,
    /// Attacking sessions (one connection each).
    #[arg(long, default_value_t = 1_000)]
    sessions: usize,
    /// Lock requests each attacking session pipelines.
    #[arg(long, default_value_t = 1_000)]
    locks: usize,
    /// How long the bystander is measured alone.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    quiet: Duration,
    /// Runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The longest one attack may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    limit: Duration,
}

/// How long a started server has to accept connections.
const START_WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fairness: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.sessions == 0 || args.sessions > 10_000 || args.locks == 0 || args.locks > 100_000 {
        bail!("--sessions must be between 1 and 10000 and --locks between 1 and 100000");
    }
    if args.runs == 0 || args.runs > 20 || args.quiet > Duration::from_secs(600) {
        bail!("--runs must be between 1 and 20 and --quiet at most 10 minutes");
    }
    if !args.attacker_ip.is_loopback() {
        bail!("--attacker-ip must be a loopback address");
    }
    let (soft, hard) = limits::raise_nofile()?;
    let need = args.sessions as u64 + SPARE_FDS;
    limits::ensure_nofile("fairness", soft, Some(hard), need, "the attacking sessions")?;
    let spec = FairSpec {
        addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
        attacker_ip: args.attacker_ip,
        sessions: args.sessions,
        locks: args.locks,
        quiet: args.quiet,
        limit: args.limit,
    };
    println!(
        "fairness: bystander on 127.0.0.1 alone for {:?}, then beside {} sessions x {} pipelined locks from {}",
        args.quiet, args.sessions, args.locks, args.attacker_ip
    );
    let mut results: Vec<Vec<FairRun>> = args.server_bin.iter().map(|_| Vec::new()).collect();
    for run in 1..=args.runs {
        for (i, bin) in args.server_bin.iter().enumerate() {
            let dir = tempdir(run, i)?;
            let mut server = start(bin, &args, &dir).await?;
            let measured = fairness::run(&spec).await;
            let wakeups = scrape_wakeups(http_port(&args)).await;
            let _ = server.kill().await;
            let _ = std::fs::remove_dir_all(&dir);
            let r = measured.with_context(|| format!("run {run}, {}", bin.display()))?;
            let wakeups =
                wakeups.with_context(|| format!("run {run}, {}: /metrics", bin.display()))?;
            println!(
                "run {run} {}: {}; server: {wakeups}",
                bin.display(),
                line(&r)
            );
            results[i].push(r);
        }
    }
    println!("medians of {} runs (cycle times in ms):", args.runs);
    for (bin, runs) in args.server_bin.iter().zip(&results) {
        println!("  {}: {}", bin.display(), medians(runs));
    }
    Ok(())
}

/// A fresh directory for the data of run `run`'s server `i`.
fn tempdir(run: usize, i: usize) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("dlock-fairness-{}-{run}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Starts `bin` on `args.port` and waits until it accepts connections.
async fn start(bin: &PathBuf, args: &Args, dir: &std::path::Path) -> Result<Child> {
    let mut child = Command::new(bin)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", args.port))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", http_port(args)))
        .arg("--data-dir")
        .arg(dir)
        .args(args.extra_args.split_whitespace())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", args.port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("{} exited at start: {status}", bin.display());
        }
        if Instant::now() >= deadline {
            bail!("{} did not listen within {START_WAIT:?}", bin.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of the server's HTTP listener: the one after `--port`.
fn http_port(args: &Args) -> u16 {
    args.port.wrapping_add(1)
}

/// The server's `dlock_core_wakeup_seconds` histogram over a run, as a line: how many
/// wake-ups of the lock engine's task there were, how many took longer than 5, 25 and
/// 100 ms, and the bucket of the longest.
async fn scrape_wakeups(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(START_WAIT, stream.read_to_string(&mut text))
        .await
        .context("reading /metrics")??;
    // `..._bucket{le="0.005"} 12`: cumulative counts by upper bound.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("dlock_core_wakeup_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count.trim().parse()?));
    }
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        bail!("no dlock_core_wakeup_seconds buckets in /metrics");
    }
    let over = |bound: f64| {
        total
            - buckets
                .iter()
                .filter(|b| b.0 >= bound)
                .map(|b| b.1)
                .next()
                .unwrap_or(total)
    };
    let longest = buckets
        .iter()
        .find(|b| b.1 == total)
        .map_or(f64::INFINITY, |b| b.0);
    Ok(format!(
        "{total} engine wake-ups, {} over 5 ms, {} over 25 ms, {} over 100 ms, longest <= {} ms",
        over(0.005),
        over(0.025),
        over(0.1),
        longest * 1e3
    ))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One run as a line.
fn line(r: &FairRun) -> String {
    let (a50, a99, amax) = r.alone.percentiles();
    let (b50, b99, bmax) = r.attacked.percentiles();
    let phase = |c: &fairness::Cycles| {
        let (p50, p99, max) = c.percentiles();
        let max_at = c
            .samples
            .iter()
            .max_by_key(|s| s.1)
            .map_or(0.0, |s| (s.0 - r.attack.began).as_secs_f64());
        format!(
            "{} in {:.1} s p50 {:.2} p99 {:.2} max {:.2} (at +{max_at:.2} s)",
            c.count,
            c.window.as_secs_f64(),
            ms(p50),
            ms(p99),
            ms(max)
        )
    };
    let a = &r.attack;
    format!(
        "alone {} cycles p50 {:.2} p99 {:.2} max {:.2} ms; attacked {} cycles in {:.1} s p50 {:.2} p99 {:.2} max {:.2} ms ({} errors) [taking: {}; releasing: {}]; attacker {} granted, {} overloaded, {:.0} locks/s; load {}",
        r.alone.count,
        ms(a50),
        ms(a99),
        ms(amax),
        r.attacked.count,
        r.attacked.window.as_secs_f64(),
        ms(b50),
        ms(b99),
        ms(bmax),
        r.alone.errors + r.attacked.errors,
        phase(&r.attacked.between(a.began, a.all_granted)),
        phase(&r.attacked.between(a.all_granted, a.ended)),
        r.attack.granted,
        r.attack.overloaded,
        r.attack.granted as f64 / (a.all_granted - a.began).as_secs_f64(),
        load()
    )
}

/// The median of `values` (the lower of the two middle ones).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get((values.len().saturating_sub(1)) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// The medians of some runs as a line.
fn medians(runs: &[FairRun]) -> String {
    let pick = |f: &dyn Fn(&FairRun) -> f64| median(runs.iter().map(f).collect());
    let alone = |i: usize| move |r: &FairRun| ms(pct(r.alone.percentiles(), i));
    let attacked = |i: usize| move |r: &FairRun| ms(pct(r.attacked.percentiles(), i));
    let ratio = |i: usize| {
        move |r: &FairRun| {
            pct(r.attacked.percentiles(), i) as f64 / pct(r.alone.percentiles(), i).max(1) as f64
        }
    };
    format!(
        "alone p50 {:.2} p99 {:.2} max {:.2}; attacked p50 {:.2} p99 {:.2} max {:.2}; attacked/alone (per run) p50 x{:.2} p99 x{:.2}; attacker {:.0} locks/s",
        pick(&alone(0)),
        pick(&alone(1)),
        pick(&alone(2)),
        pick(&attacked(0)),
        pick(&attacked(1)),
        pick(&attacked(2)),
        pick(&ratio(0)),
        pick(&ratio(1)),
        pick(&|r| r.attack.granted as f64 / r.attack.took.as_secs_f64()),
    )
}

fn pct(p: (u64, u64, u64), i: usize) -> u64 {
    match i {
        0 => p.0,
        1 => p.1,
        _ => p.2,
    }
}

/// The load average (1, 5, 15 minutes), as `uptime` shows it.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
