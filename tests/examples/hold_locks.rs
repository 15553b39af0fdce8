//! Takes many locks against a running dlock server and reports the server's memory.
//!
//! ```text
//! cargo run --release --bin dlock-server &
//! cargo run --release -p dlock-tests --example hold_locks -- \
//!     --sessions 100 --locks 1000 --pid $(pgrep -n dlock-server)
//! ```
//!
//! Opens `--sessions` sessions on one connection each, takes `--locks` EX locks per session
//! on distinct resources (pipelined in chunks), checks they are all granted, prints the
//! server's RSS (`ps -o rss= -p PID`) if `--pid` is given, then says Goodbye on every
//! session. Bounded: every wait is limited, and it exits by itself.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dlock_proto::{EventKind, LockFlags, Mode, ServerMessage};
use dlock_tests::RawClient;

struct Args {
    addr: SocketAddr,
    sessions: usize,
    locks: usize,
    pid: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        addr: "127.0.0.1:7420".parse()?,
        sessions: 100,
        locks: 1000,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value.parse()?,
            "--sessions" => args.sessions = value.parse()?,
            "--locks" => args.locks = value.parse()?,
            "--pid" => args.pid = Some(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let out = std::process::Command::new("ps")
        .args(["-o", "rss=", "-p", &pid.to_string()])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Takes `locks` locks for one session, `CHUNK` requests in flight at a time.
async fn take_locks(client: &mut RawClient, session: usize, locks: usize) -> Result<()> {
    const CHUNK: usize = 250;
    let mut done = 0;
    while done < locks {
        let n = CHUNK.min(locks - done);
        for i in done..done + n {
            client
                .lock(
                    &format!("s{session:03}/r{i:06}"),
                    Mode::EX,
                    LockFlags::empty(),
                )
                .await?;
        }
        let mut granted = 0;
        while granted < n {
            match client.recv().await? {
                Some(ServerMessage::Event { event, .. }) => match event.kind {
                    EventKind::Granted { .. } => granted += 1,
                    other => bail!("session {session}: unexpected {other:?}"),
                },
                Some(other) => bail!("session {session}: unexpected {other:?}"),
                None => bail!("session {session}: connection closed"),
            }
        }
        // Acknowledge so the server can drop the events from its replay buffer.
        client.ack().await?;
        done += n;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(pid) = args.pid {
        println!("server RSS before: {} KiB", rss_kib(pid)?);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..args.sessions {
        let addr = args.addr;
        let locks = args.locks;
        tasks.spawn(async move {
            let mut c = RawClient::connect(addr, &format!("hold-{s}")).await?;
            take_locks(&mut c, s, locks).await?;
            anyhow::Ok(c)
        });
    }
    let mut clients = Vec::new();
    while let Some(r) = tasks.join_next().await {
        clients.push(r??);
    }
    let total = args.sessions * args.locks;
    println!(
        "{total} locks held by {} sessions (took {:.2?})",
        args.sessions,
        start.elapsed()
    );
    // Every session still answers: the locks are really held.
    for c in &mut clients {
        c.ping().await?;
    }
    if let Some(pid) = args.pid {
        println!("server RSS with {total} locks held: {} KiB", rss_kib(pid)?);
    }
    for c in &mut clients {
        c.goodbye().await?;
    }
    if let Some(pid) = args.pid {
        println!("server RSS after Goodbye: {} KiB", rss_kib(pid)?);
    }
    Ok(())
}
