//! `echo-server`: the echo floor's server as a process of its own, for `loadgen -b echo
//! --echo-addr ADDR`.
//!
//! ```text
//! cargo run --release -p dlock-benches --bin echo-server -- --listen 127.0.0.1:7499
//! ```
//! It echoes every 48-byte message it is sent, on a two-worker runtime (as a dlock server has
//! on a two-core machine), prints `listening on ADDR` once it listens, and runs until it is
//! interrupted or terminated. It is the server `loadgen -b echo` otherwise runs inside
//! itself; in a process of its own, its CPU and RSS are measured through `--server-pid` like
//! a dlock server's, and loadgen holds only the client end of each connection (10,000 idle
//! sessions then fit an open-file limit of 20,000). Only loopback addresses are accepted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dlock_benches::backend::echo;
use dlock_benches::limits;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The echo floor's server, as a process of its own.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The loopback address to listen on (port 0: any free port; the line printed at the
    /// start says which).
    #[arg(long, default_value = "127.0.0.1:7499")]
    listen: SocketAddr,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: not a loopback address; the echo floor only serves this machine",
            args.listen
        );
    }
    // As many connections as the hard limit allows, as loadgen does.
    limits::raise_nofile()?;
    echo::runtime("echo-server")?.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let mut out = std::io::stdout();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
        let mut terminate = signal(SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        echo::serve(listener, stop, Arc::new(AtomicU64::new(0))).await;
        Ok(())
    })
}
