//! The scenarios, each run the same way against every backend.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::{Access, Backend, Conn};
use crate::cpu::CpuSample;
use crate::idle;
use crate::report::{Latency, Row, new_histogram, record};
use crate::rss::vm_rss_kb;
pub use crate::spec::{Scenario, Spec, default_prefix};

/// Runs one point. A backend that cannot run the scenario gives a row saying why.
pub async fn run<B: Backend>(backend: &B, spec: &Spec) -> Result<Row> {
    let clients = match spec.scenario {
        Scenario::ManyLocks | Scenario::Idle => spec.sessions,
        _ => spec.clients,
    };
    if let Some(reason) = backend.unsupported(spec.scenario) {
        let mut row = Row::new(backend.name(), spec.scenario, clients);
        row.note = format!("unsupported: {reason}");
        return Ok(row);
    }
    anyhow::ensure!(clients > 0, "need at least one client");
    match spec.scenario {
        Scenario::ManyLocks => many_locks(backend, spec).await,
        Scenario::Idle => idle::run(backend, spec).await,
        _ => timed(backend, spec).await,
    }
}

/// Opens `n` connections, a bounded number at a time.
async fn connect_all<B: Backend>(backend: &B, n: usize) -> Result<Vec<B::Conn>> {
    const AT_ONCE: usize = 32;
    let mut conns = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let batch = (next..n.min(next + AT_ONCE)).map(|id| backend.connect(id));
        for conn in join_all(batch).await {
            conns.push(conn.with_context(|| format!("connecting client {next}"))?);
        }
        next += AT_ONCE;
    }
    Ok(conns)
}

/// What one client of a timed scenario measured.
struct ClientResult<C> {
    conn: C,
    ops: u64,
    cycle: Histogram<u64>,
    acquire: Histogram<u64>,
    handoff: Histogram<u64>,
    handoffs: u64,
    errors: u64,
    first_error: Option<String>,
}

/// How long clients of a backend that must not abandon a pending acquisition may still wait
/// after the window (see [`Backend::abandon_safe`]).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// After this many failed operations a client stops.
const MAX_ERRORS_PER_CLIENT: u64 = 100;

/// The last release on the shared key: who released and when (contended and handoff).
type LastRelease = Arc<Mutex<Option<(usize, Instant)>>>;

/// The timed scenarios: every client cycles acquire + release until the window ends.
async fn timed<B: Backend>(backend: &B, spec: &Spec) -> Result<Row> {
    let conns = connect_all(backend, spec.clients).await?;
    // Everyone starts at the same instant, after every connection is up.
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let last_release: LastRelease = Arc::new(Mutex::new(None));
    let abandon_safe = backend.abandon_safe();

    let mut tasks = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let key = match spec.scenario {
            Scenario::Uncontended => format!("{}u{id}", spec.key_prefix),
            _ => format!("{}hot", spec.key_prefix),
        };
        let read_ratio = match spec.scenario {
            Scenario::ReadersWriters => spec.read_ratio,
            _ => 0.0,
        };
        // On one key with exclusive locks only, every grant either hands the lock to another
        // client (a handoff) or gives it back to the client that just released it.
        let handoff = matches!(spec.scenario, Scenario::Contended | Scenario::Handoff)
            .then(|| last_release.clone());
        // How long a client still waiting at the end may take to get the lock, when the
        // backend must not have its pending acquisition abandoned.
        let give_up = if abandon_safe { end } else { end + DRAIN_LIMIT };
        let mut rng = SplitMix64(spec.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut r = ClientResult {
                conn,
                ops: 0,
                cycle: new_histogram(),
                acquire: new_histogram(),
                handoff: new_histogram(),
                handoffs: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                let t0 = Instant::now();
                if t0 >= end || r.errors >= MAX_ERRORS_PER_CLIENT {
                    break;
                }
                let access = if rng.next_f64() < read_ratio {
                    Access::Shared
                } else {
                    Access::Exclusive
                };
                let held =
                    match tokio::time::timeout_at(give_up, r.conn.acquire(&key, access)).await {
                        Err(_) => break, // the window closed while waiting
                        Ok(Ok(held)) => held,
                        Ok(Err(e)) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| format!("{e:#}"));
                            continue;
                        }
                    };
                let t1 = Instant::now();
                // A cycle counts when its acquisition falls inside the window.
                let counted = t0 >= measure_from && t1 <= end;
                if let Some(last) = &handoff {
                    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                    // Only a grant to another client is a handoff; re-taking one's own
                    // released lock is not.
                    if let Some((who, at)) = last.take()
                        && who != id
                        && counted
                    {
                        r.handoffs += 1;
                        record(&mut r.handoff, t1.saturating_duration_since(at));
                    }
                    *last = Some((id, Instant::now()));
                }
                if let Err(e) = r.conn.release(held).await {
                    r.errors += 1;
                    r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    continue;
                }
                let t2 = Instant::now();
                if counted {
                    r.ops += 1;
                    record(&mut r.cycle, t2 - t0);
                    record(&mut r.acquire, t1 - t0);
                }
            }
            r
        });
    }

    // CPU used by the server and by this process (the clients) during the window.
    tokio::time::sleep_until(measure_from).await;
    let cpu_from = CpuSample::take(backend.in_process_server_cpu(), &spec.server_pids());
    tokio::time::sleep_until(end).await;
    let cpu_to = CpuSample::take(backend.in_process_server_cpu(), &spec.server_pids());

    let mut row = Row::new(backend.name(), spec.scenario, spec.clients);
    let handoffs_counted = matches!(spec.scenario, Scenario::Contended | Scenario::Handoff);
    let (mut cycle, mut acquire, mut handoff) = (new_histogram(), new_histogram(), new_histogram());
    let mut per_client = Vec::with_capacity(spec.clients);
    let mut conns = Vec::with_capacity(spec.clients);
    while let Some(res) = tasks.join_next().await {
        let r = res.context("a client task failed")?;
        per_client.push(r.ops);
        row.ops += r.ops;
        if handoffs_counted {
            *row.handoffs.get_or_insert(0) += r.handoffs;
        }
        row.errors += r.errors;
        if row.note.is_empty()
            && let Some(e) = r.first_error
        {
            row.note = format!("first error: {e}");
        }
        cycle.add(&r.cycle).context("merging histograms")?;
        acquire.add(&r.acquire).context("merging histograms")?;
        handoff.add(&r.handoff).context("merging histograms")?;
        conns.push(r.conn);
    }
    let closes = join_all(conns.into_iter().map(|c| c.close(Vec::new()))).await;
    if let Some(Err(e)) = closes.into_iter().find(Result::is_err) {
        let sep = if row.note.is_empty() { "" } else { "; " };
        row.note = format!("{}{sep}close failed: {e:#}", row.note);
    }

    row.duration_s = spec.duration.as_secs_f64();
    row.ops_per_s = row.ops as f64 / row.duration_s;
    if row.ops > 0 {
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / row.ops as f64;
        row.server_cpu_us_per_op = cpu_to.server_since(&cpu_from).map(per_op);
        row.client_cpu_us_per_op = cpu_to.clients_since(&cpu_from).map(per_op);
    }
    row.cycle = Latency::of(&cycle);
    row.acquire = Latency::of(&acquire);
    row.handoff = Latency::of(&handoff);
    row.client_min = per_client.iter().copied().min().unwrap_or(0);
    row.client_max = per_client.iter().copied().max().unwrap_or(0);
    Ok(row)
}

/// What one session of many-locks did.
struct SessionResult<C: Conn> {
    conn: C,
    held: Vec<C::Held>,
    acquire: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Many-locks: take `locks` locks over `sessions` sessions, hold them, read the server's RSS,
/// then close every session.
async fn many_locks<B: Backend>(backend: &B, spec: &Spec) -> Result<Row> {
    let sessions = spec.sessions;
    let rss = |pid: Option<u32>| pid.map(vm_rss_kb).transpose();
    let conns = connect_all(backend, sessions).await?;
    let rss_base_kb = rss(spec.server_pid)?;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let per = spec.locks / sessions as u64;
    let extra = spec.locks % sessions as u64;
    let inflight = spec.inflight.max(1);
    for (s, conn) in conns.into_iter().enumerate() {
        let count = per + u64::from((s as u64) < extra);
        let prefix = format!("{}m{s}/", spec.key_prefix);
        tasks.spawn(async move {
            let conn = Arc::new(conn);
            let mut workers = JoinSet::new();
            for w in 0..inflight as u64 {
                let conn = conn.clone();
                let prefix = prefix.clone();
                workers.spawn(async move {
                    let mut held = Vec::new();
                    let mut acquire = new_histogram();
                    let mut errors = 0;
                    let mut first_error = None;
                    let mut i = w;
                    while i < count && errors < MAX_ERRORS_PER_CLIENT {
                        let key = format!("{prefix}{i}");
                        let t0 = Instant::now();
                        match conn.acquire(&key, Access::Exclusive).await {
                            Ok(h) => {
                                record(&mut acquire, t0.elapsed());
                                held.push(h);
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                        i += inflight as u64;
                    }
                    (held, acquire, errors, first_error)
                });
            }
            let mut held = Vec::with_capacity(count as usize);
            let mut acquire = new_histogram();
            let mut errors = 0;
            let mut first_error = None;
            while let Some(res) = workers.join_next().await {
                let (h, a, e, fe) = res.context("a many-locks worker failed")?;
                held.extend(h);
                acquire.add(&a).context("merging histograms")?;
                errors += e;
                if first_error.is_none() {
                    first_error = fe;
                }
            }
            let conn = Arc::into_inner(conn).context("workers still hold the connection")?;
            anyhow::Ok(SessionResult {
                conn,
                held,
                acquire,
                errors,
                first_error,
            })
        });
    }

    let mut row = Row::new(backend.name(), spec.scenario, sessions);
    let mut acquire = new_histogram();
    let mut results = Vec::with_capacity(sessions);
    while let Some(res) = tasks.join_next().await {
        let r = res.context("a many-locks session failed")??;
        row.errors += r.errors;
        if row.note.is_empty()
            && let Some(e) = &r.first_error
        {
            row.note = format!("first error: {e}");
        }
        acquire.add(&r.acquire).context("merging histograms")?;
        results.push(r);
    }
    let elapsed = started.elapsed();
    let held: u64 = results.iter().map(|r| r.held.len() as u64).sum();
    row.client_min = results
        .iter()
        .map(|r| r.held.len() as u64)
        .min()
        .unwrap_or(0);
    row.client_max = results
        .iter()
        .map(|r| r.held.len() as u64)
        .max()
        .unwrap_or(0);
    row.rss_base_kb = rss_base_kb;
    row.rss_held_kb = rss(spec.server_pid)?;

    let closes = join_all(results.into_iter().map(|r| r.conn.close(r.held))).await;
    if let Some(Err(e)) = closes.into_iter().find(Result::is_err) {
        let sep = if row.note.is_empty() { "" } else { "; " };
        row.note = format!("{}{sep}close failed: {e:#}", row.note);
    }
    row.rss_after_kb = rss(spec.server_pid)?;

    row.ops = held;
    row.locks = Some(held);
    row.duration_s = elapsed.as_secs_f64();
    row.ops_per_s = held as f64 / row.duration_s.max(1e-9);
    row.acquire = Latency::of(&acquire);
    row.cycle = row.acquire;
    Ok(row)
}

/// A small deterministic random generator (SplitMix64), enough to pick read or write.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_mix_reads_are_about_the_ratio() {
        let mut rng = SplitMix64(1);
        let reads = (0..10_000).filter(|_| rng.next_f64() < 0.9).count();
        assert!((8_800..9_200).contains(&reads), "{reads}");
    }
}
