//! Lock/unlock cycles pipelined over ONE client (one session, one connection), against an
//! in-process server on 127.0.0.1:0 or an existing one.
//!
//! ```text
//! cargo run --release -p dlock-client --example pipeline -- [TASKS] [SECONDS] [ADDR]
//! ```
//!
//! Each of TASKS tasks locks its own key (EX) and unlocks it, in a loop, for SECONDS; prints
//! cycles per second and latency percentiles of one cycle (lock + unlock round trips).

use std::time::{Duration, Instant};

use dlock_client::{Client, Mode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let addr = args.next();

    let dir = tempfile::tempdir()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = match addr {
        Some(a) => (a, None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let config = dlock_server::Config {
                data_dir: dir.path().into(),
                ..Default::default()
            };
            let server = tokio::spawn(dlock_server::run(listener, config, async {
                let _ = stopped.await;
            }));
            (addr, Some(server))
        }
    };

    let client = Client::builder(addr).name("pipeline").connect().await?;
    let window = Duration::from_secs(secs);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let key = format!("pipeline/{t}");
            let mut lat = Vec::new();
            while start.elapsed() < window {
                let t0 = Instant::now();
                let g = client.lock(&key, Mode::EX).await?;
                g.unlock().await?;
                lat.push(t0.elapsed());
            }
            Ok::<_, dlock_client::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1));
        all.get(i).copied().unwrap_or_default()
    };
    println!(
        "tasks={tasks} cycles={} rate={:.0}/s p50={:?} p99={:?} max={:?}",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or_default()
    );
    client.close().await?;
    let _ = stop.send(());
    if let Some(server) = server {
        server.await??;
    }
    Ok(())
}
