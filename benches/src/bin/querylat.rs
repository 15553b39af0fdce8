//! `querylat`: the latency of `Query::Resource` against a running dlock server or cluster.
//!
//! One client holds a lock on the resource; then, for each client count, that many clients
//! ask for the resource in a closed loop for `--duration` and the rate and latency
//! percentiles of the answers are printed, one line per point. In a cluster every query is
//! answered after a read index (a heartbeat round to a majority, shared by the queries that
//! arrive meanwhile), which is what this measures.
//!
//! ```text
//! cargo run --release -p dlock-benches --bin querylat -- \
//!     --server 127.0.0.1:7420,127.0.0.1:7430,127.0.0.1:7440 --clients 1,16 --duration 5s
//! ```
//! Only loopback addresses are accepted.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use dlock_client::{Client, Mode};
use hdrhistogram::Histogram;

/// Query latency against a dlock server or cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's endpoints, comma-separated (every member of a cluster).
    #[arg(long, default_value = "127.0.0.1:7420")]
    server: String,
    /// Client counts to run, comma-separated; each client queries in a closed loop.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// How long each point runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The resource queried (a lock on it is held meanwhile).
    #[arg(long, default_value = "querylat")]
    resource: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("querylat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(server: &str, name: &str) -> Result<Client> {
    Client::builder(server)
        .name(name)
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))
}

async fn run(args: Args) -> Result<()> {
    for endpoint in args.server.split(',') {
        let addr: SocketAddr = endpoint
            .trim()
            .parse()
            .with_context(|| format!("{endpoint:?} is not IP:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address");
        }
    }
    let holder = connect(&args.server, "querylat-holder").await?;
    let _held = holder.lock(args.resource.as_str(), Mode::EX).await?;
    for &n in &args.clients {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(connect(&args.server, &format!("querylat-{i}")).await?);
        }
        let until = Instant::now() + args.duration;
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|client| {
                let resource = args.resource.clone();
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                    while Instant::now() < until {
                        let start = Instant::now();
                        let info = client.query_resource(resource.as_str()).await?;
                        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                        if info.is_none_or(|r| r.granted.is_empty()) {
                            bail!("the held lock on {resource} is missing from a query's answer");
                        }
                    }
                    client.close().await?;
                    Ok::<_, anyhow::Error>(hist)
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for task in tasks {
            all.add(task.await??)?;
        }
        let rate = all.len() as f64 / args.duration.as_secs_f64();
        println!(
            "clients={n} queries={} queries/s={rate:.0} p50_us={} p99_us={} max_us={}",
            all.len(),
            all.value_at_quantile(0.5),
            all.value_at_quantile(0.99),
            all.max()
        );
    }
    holder.close().await?;
    Ok(())
}
