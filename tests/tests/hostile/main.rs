//! The hostile-client suite: each numbered module reproduces one misbehaving client at a
//! size CI can afford (loopback only, every loop bounded in count and time) and asserts the
//! bound the server keeps. In every test a well-behaved client
//! ([`Bystander`](dlock_tests::hostile::Bystander)) works next to the attacker: its lock
//! cycles complete and the lock it holds is never taken away.
//!
//! Tests that measure a server's memory run it as a child process (the `chaos` binary's
//! `serve`) and read its resident set size from `/proc`; they print the measured figures
//! with `eprintln!` (`cargo test --test hostile -- --nocapture` shows them). The heavy ones
//! take [`one_at_a_time`] so that they do not share the two cores of a CI machine.
//!
//! Each attack runs at a size CI can afford; `DLOCK_HOSTILE_FULL=1` runs it at the size at
//! which it was first measured (see [`full_size`]).

mod h10_admission;
mod h11_memory_budget;
mod h12_replay_per_peer;
mod h13_rate_per_peer;
mod h14_fair_turns;
mod h15_bulk_release;
mod h16_crowded_resource;
mod h1_slow_reader;
mod h2_expensive_query;
mod h3_slowloris;
mod h4_session_exhaustion;
mod h5_many_locks;
mod h6_restart_grace;
mod h7_blocking_flood;
mod h8_audit_log;
mod h9_odd_names_and_ids;

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{
    ClientMessage, EventKind, Hello, LockId, PROTOCOL_VERSION, Reply, RequestError, ServerMessage,
};
use dlock_tests::RawClient;
use dlock_tests::chaos::server_proc::ServerProc;
use futures_util::SinkExt;
use tokio::sync::{Mutex, MutexGuard};

/// Whether the suite runs at full size (`DLOCK_HOSTILE_FULL=1`): the sizes at which each
/// attack was first measured against an unprotected server (20,000 unread queries from three
/// connections, 100,000 locks with 1 KiB names, 10,050 slowloris connections, ...), for the
/// figures in the README's operational notes. Minutes per test; run it in release:
/// `DLOCK_HOSTILE_FULL=1 cargo test --release -p dlock-tests --test hostile -- --nocapture`.
/// CI runs the small sizes.
pub(crate) fn full_size() -> bool {
    std::env::var_os("DLOCK_HOSTILE_FULL").is_some_and(|v| v != "0")
}

/// `ci` normally, `full` at full size (see [`full_size`]).
pub(crate) fn sized(ci: usize, full: usize) -> usize {
    if full_size() { full } else { ci }
}

/// A test server whose connections may send as fast as they can: a holder that fills its
/// table pipelined would go over the default rate (and the fills do not retry `Overloaded`).
pub(crate) async fn unrated_server() -> Result<dlock_tests::TestServer> {
    let mut config = dlock_tests::TestServer::config();
    config.max_request_rate = u64::MAX / 2;
    dlock_tests::TestServer::start_with(config).await
}

/// Held by the heavy test that runs; the others wait for it.
static HEAVY: Mutex<()> = Mutex::const_new(());

/// Waits until no other heavy test of this binary runs; the turn lasts while the guard lives.
pub(crate) async fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// A server child with its files in `dir` and further flags `args`.
pub(crate) async fn child(dir: &Path, args: &[&str]) -> Result<ServerProc> {
    child_with_env(dir, args, &[]).await
}

/// [`child`] with environment variables `env` set for the server.
pub(crate) async fn child_with_env(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<ServerProc> {
    let exe = Path::new(env!("CARGO_BIN_EXE_chaos"));
    dlock_tests::hostile::server_child(exe, dir, args, env).await
}

/// A `Hello` opening a session named `name` with a lease of `ttl_ms` (0: the default).
pub(crate) fn hello(name: &str, ttl_ms: u64) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: name.into(),
        lease_ttl_ms: ttl_ms,
        resume: None,
        token: None,
    })
}

/// Locks in flight at once while [`take_all`] fills a table: small enough that the grants
/// never pile up beyond what the socket buffers hold.
const FILL_CHUNK: usize = 250;

/// Reads the answers to `n` pipelined pings on `client`: how many passed (`Pong`) and how
/// many were refused `Overloaded`; any other answer, a second answer to one request or a
/// closed connection is an error.
pub(crate) async fn count_pongs(client: &mut RawClient, n: u64) -> Result<(u64, u64)> {
    let (mut pongs, mut overloaded) = (0u64, 0u64);
    let mut answered = std::collections::BTreeSet::new();
    while (answered.len() as u64) < n {
        match client.recv().await? {
            Some(ServerMessage::Reply { id, body }) => {
                ensure!(answered.insert(id.0), "request {id:?} answered twice");
                match body {
                    Reply::Pong { .. } => pongs += 1,
                    Reply::Error(RequestError::Overloaded) => overloaded += 1,
                    other => bail!("unexpected reply {other:?}"),
                }
            }
            Some(_) => {}
            None => bail!("connection closed after {} answers", answered.len()),
        }
    }
    Ok((pongs, overloaded))
}

/// Takes an EX lock on each of `names` through `client`, pipelined in chunks, acknowledging
/// the grants; returns the lock ids in order.
pub(crate) async fn take_all(client: &mut RawClient, names: &[String]) -> Result<Vec<LockId>> {
    let mut ids = Vec::with_capacity(names.len());
    for chunk in names.chunks(FILL_CHUNK) {
        let mut requests = Vec::with_capacity(chunk.len());
        for name in chunk {
            requests.push(client.feed_lock_ex(name.as_bytes()).await?);
        }
        client.framed.flush().await?;
        for id in requests {
            let event = client.event_for(id).await?;
            match (event.kind, event.lock) {
                (EventKind::Granted { .. }, Some(lock)) => ids.push(lock),
                (other, _) => bail!("expected a grant for {id}, got {other:?}"),
            }
        }
        client.ack().await?;
    }
    Ok(ids)
}

/// Prints how long a test took (its run time for the report).
pub(crate) fn took(test: &str, start: Instant) {
    eprintln!("{test}: run time {:.1} s", start.elapsed().as_secs_f64());
}
