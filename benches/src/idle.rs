//! The idle scenario: what sessions that only hold a lock cost the server, and the clients
//! that do work next to them.
//!
//! `sessions` sessions connect, at most [`CONNECT_AT_ONCE`] handshakes in flight so that the
//! server's accept backlog is never overrun, and each takes one lock on a key of its own.
//! They then do nothing but what their client does by itself (a dlock client renews its
//! lease about every third of the TTL, each wait drawn from TTL/3 ± a tenth). After the
//! warm-up, two windows of about `duration` each:
//! 1. **quiet**: nothing else happens; the server's CPU over this window, as a share of one
//!    core, is what the idle sessions cost (`server_cpu_pct`). The window is `duration`
//!    rounded up to whole renewal periods of the backend's client
//!    ([`Backend::renewal_period`]): sessions that connected together start renewing
//!    together, in a burst every period, and a window of another length holds one burst
//!    more or less depending on where it starts (5 s against a dlock client's 3.3 s: one
//!    burst or two, so 3.8 % in one run and 5.7 % in another of the same build, before a
//!    dlock client's renewals were drawn at random; they now drift apart over the periods,
//!    and the server takes more of them one wake-up each, which costs it more);
//! 2. **probe**: one more client locks and unlocks a key of its own as fast as it can; the
//!    row's cycle and acquire latencies are its, to be compared with `uncontended -c 1`
//!    on a server without idle sessions.
//!
//! The row also has the server's RSS before the sessions connected, with them idle, and
//! after they closed. The echo floor's idle connections ([`Backend::connect_idle`]) each make
//! a round trip per renewal instead: what the same traffic costs a server that keeps nothing.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::backend::{Access, Backend, Conn};
use crate::cpu::{CpuSample, percent_of_one_core};
use crate::report::{Latency, Row, new_histogram, record};
use crate::rss::vm_rss_kb;
use crate::spec::{Scenario, Spec};

/// Idle sessions connecting (and taking their lock) at the same time.
pub const CONNECT_AT_ONCE: usize = 256;

/// After this many failed cycles the measuring client stops.
const MAX_ERRORS: u64 = 100;

/// How long the measuring client of a backend that must not abandon a pending acquisition may
/// still finish one after the window (see [`Backend::abandon_safe`]).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the idle scenario (see the module docs).
pub(crate) async fn run<B: Backend>(backend: &B, spec: &Spec) -> Result<Row> {
    // A server inside this process (the echo floor) has no RSS of its own to report.
    let in_process = backend.in_process_server_cpu().is_some();
    let rss = |pid: Option<u32>| pid.filter(|_| !in_process).map(vm_rss_kb).transpose();
    let rss_base_kb = rss(spec.server_pid)?;
    let idle = hold_one_each(backend, spec).await?;
    let measuring = backend
        .connect(spec.sessions)
        .await
        .context("connecting the measuring client")?;

    // The quiet window: only the idle sessions' own traffic.
    tokio::time::sleep(spec.warmup).await;
    let (cpu_from, wall_from) = (sample(backend, spec), Instant::now());
    tokio::time::sleep(whole_periods(spec.duration, backend.renewal_period())).await;
    let (cpu_to, wall_to) = (sample(backend, spec), Instant::now());
    let rss_held_kb = rss(spec.server_pid)?;

    // The probe window.
    let measure_from = Instant::now();
    let end = measure_from + spec.duration;
    let give_up = if backend.abandon_safe() {
        end
    } else {
        end + DRAIN_LIMIT
    };
    let key = format!("{}idle-probe", spec.key_prefix);
    let cycles = tokio::spawn(cycles(measuring, key, measure_from, end, give_up));
    let lost = idle.iter().filter(|(c, h)| c.is_lost(h)).count() as u64;
    let c = cycles.await.context("the measuring client failed")?;

    let mut row = Row::new(backend.name(), Scenario::Idle, spec.sessions);
    row.ops = c.ops;
    row.duration_s = spec.duration.as_secs_f64();
    row.ops_per_s = row.ops as f64 / row.duration_s;
    row.cycle = Latency::of(&c.cycle);
    row.acquire = Latency::of(&c.acquire);
    row.errors = c.errors + lost;
    let mut notes = Vec::new();
    if let Some(e) = c.first_error {
        notes.push(format!("first error: {e}"));
    }
    if lost > 0 {
        notes.push(format!("{lost} idle locks lost during the run"));
    }
    row.server_cpu_pct = cpu_to
        .server_since(&cpu_from)
        .map(|cpu| percent_of_one_core(cpu, wall_to - wall_from));
    row.locks = Some(idle.len() as u64);
    row.rss_base_kb = rss_base_kb;
    row.rss_held_kb = rss_held_kb;

    let mut closes = vec![c.conn.close(Vec::new()).await];
    closes.extend(
        stream::iter(idle)
            .map(|(conn, held)| conn.close(vec![held]))
            .buffer_unordered(CONNECT_AT_ONCE)
            .collect::<Vec<_>>()
            .await,
    );
    if let Some(Err(e)) = closes.into_iter().find(Result::is_err) {
        notes.push(format!("close failed: {e:#}"));
    }
    row.rss_after_kb = rss(spec.server_pid)?;
    row.note = notes.join("; ");
    Ok(row)
}

/// `window` rounded up to a whole number of `period`s (at least one); `window` itself
/// without a period.
fn whole_periods(window: Duration, period: Option<Duration>) -> Duration {
    match period.filter(|p| !p.is_zero()) {
        Some(p) => p * (window.as_nanos().div_ceil(p.as_nanos()).max(1) as u32),
        None => window,
    }
}

fn sample<B: Backend>(backend: &B, spec: &Spec) -> CpuSample {
    CpuSample::take(backend.in_process_server_cpu(), &spec.server_pids())
}

/// An idle session and the lock it holds.
type IdleSession<B> = (<B as Backend>::Conn, <<B as Backend>::Conn as Conn>::Held);

/// Connects `spec.sessions` sessions, [`CONNECT_AT_ONCE`] at a time, each holding one lock
/// on a key of its own.
async fn hold_one_each<B: Backend>(backend: &B, spec: &Spec) -> Result<Vec<IdleSession<B>>> {
    stream::iter(0..spec.sessions)
        .map(|id| async move {
            let conn = backend
                .connect_idle(id)
                .await
                .with_context(|| format!("connecting idle session {id}"))?;
            let key = format!("{}idle-{id}", spec.key_prefix);
            let held = conn
                .acquire(&key, Access::Exclusive)
                .await
                .with_context(|| format!("idle session {id} taking its lock"))?;
            anyhow::Ok((conn, held))
        })
        .buffer_unordered(CONNECT_AT_ONCE)
        .try_collect()
        .await
}

/// What the measuring client did.
struct Cycles<C> {
    conn: C,
    ops: u64,
    cycle: Histogram<u64>,
    acquire: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Locks and unlocks `key` until `end`; a cycle counts when its acquisition falls inside
/// `measure_from..end`.
async fn cycles<C: Conn>(
    conn: C,
    key: String,
    measure_from: Instant,
    end: Instant,
    give_up: Instant,
) -> Cycles<C> {
    let mut r = Cycles {
        conn,
        ops: 0,
        cycle: new_histogram(),
        acquire: new_histogram(),
        errors: 0,
        first_error: None,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end || r.errors >= MAX_ERRORS {
            break;
        }
        let held =
            match tokio::time::timeout_at(give_up, r.conn.acquire(&key, Access::Exclusive)).await {
                Err(_) => break,
                Ok(Ok(held)) => held,
                Ok(Err(e)) => {
                    r.errors += 1;
                    r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    continue;
                }
            };
        let t1 = Instant::now();
        if let Err(e) = r.conn.release(held).await {
            r.errors += 1;
            r.first_error.get_or_insert_with(|| format!("{e:#}"));
            continue;
        }
        let t2 = Instant::now();
        if t0 >= measure_from && t1 <= end {
            r.ops += 1;
            record(&mut r.cycle, t2 - t0);
            record(&mut r.acquire, t1 - t0);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_window_spans_whole_renewal_periods() {
        let s = Duration::from_secs;
        let third = s(10) / 3;
        assert_eq!(whole_periods(s(5), Some(third)), third * 2);
        assert_eq!(whole_periods(third * 2, Some(third)), third * 2);
        assert_eq!(whole_periods(s(1), Some(third)), third);
        assert_eq!(whole_periods(s(5), None), s(5));
        assert_eq!(whole_periods(s(5), Some(Duration::ZERO)), s(5));
    }
}
