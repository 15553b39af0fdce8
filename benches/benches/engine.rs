//! Criterion benchmarks of the dlock engine (`dlock-core`), driven through `Core::apply` only.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dlock_core::{
    Command, Config, Core, Event, Input, LockFlags, LockId, Mode, RequestId, SessionId,
};
use dlock_core::{ConvertRequest, LockRequest, UnlockRequest};

/// A core plus the index and clock of the next input.
#[derive(Clone)]
struct Driver {
    core: Core,
    index: u64,
    now: u64,
}

impl Driver {
    fn new(config: Config) -> Driver {
        Driver {
            core: Core::new(config),
            index: 0,
            now: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Vec<Event> {
        self.index += 1;
        self.core.apply(Input {
            index: self.index,
            now_ms: self.now,
            command,
        })
    }

    /// Opens a session; panics if the engine refuses it (a bench of refusals measures
    /// nothing).
    fn open(&mut self, ttl_ms: u64) -> SessionId {
        let ev = self.apply(Command::OpenSession {
            name: String::new(),
            ttl_ms,
            secret: 0,
        });
        assert!(
            matches!(
                ev[..],
                [Event {
                    kind: dlock_core::EventKind::SessionOpened { .. },
                    ..
                }]
            ),
            "{ev:?}"
        );
        SessionId(self.index)
    }

    fn lock(&mut self, session: SessionId, name: &[u8], mode: Mode) -> (LockId, Vec<Event>) {
        let ev = self.apply(Command::Lock {
            session,
            request: RequestId(0),
            args: LockRequest {
                resource: name.to_vec(),
                mode,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            },
        });
        (LockId(self.index), ev)
    }

    fn convert(&mut self, session: SessionId, lock: LockId, mode: Mode) -> Vec<Event> {
        self.apply(Command::Convert {
            session,
            request: RequestId(0),
            args: ConvertRequest {
                lock,
                mode,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            },
        })
    }

    fn unlock(&mut self, session: SessionId, lock: LockId) -> Vec<Event> {
        self.apply(Command::Unlock {
            session,
            request: RequestId(0),
            args: UnlockRequest {
                lock,
                flags: LockFlags::empty(),
                value: None,
            },
        })
    }
}

fn big() -> Config {
    Config {
        max_sessions: 1_000_000,
        max_waiters_per_resource: 1_000_000,
        max_locks_per_session: 1_000_000,
        ..Config::default()
    }
}

/// The longest lease the default configuration allows: long enough that no bench's clock
/// reaches it.
const LONG: u64 = 300_000;

/// One lock and one unlock of a free resource (two inputs per iteration).
fn uncontended(c: &mut Criterion) {
    let mut d = Driver::new(Config::default());
    let s = d.open(LONG);
    c.bench_function("uncontended_lock_unlock", |b| {
        b.iter(|| {
            let (l, _) = d.lock(s, b"resource", Mode::EX);
            d.unlock(s, l)
        })
    });
}

/// An up and a down conversion of an uncontended lock (two inputs per iteration).
fn conversions(c: &mut Criterion) {
    let mut d = Driver::new(Config::default());
    let s = d.open(LONG);
    let other = d.open(LONG);
    let (l, _) = d.lock(s, b"resource", Mode::NL);
    d.lock(other, b"resource", Mode::CR);
    c.bench_function("convert_up_down", |b| {
        b.iter(|| {
            d.convert(s, l, Mode::PW);
            d.convert(s, l, Mode::NL)
        })
    });
}

/// A holder and 10,000 waiters of 10,000 sessions on one resource.
fn deep_queue(waiter_mode: Mode) -> (Driver, SessionId, LockId) {
    let mut d = Driver::new(big());
    let holder = d.open(LONG);
    let (l, _) = d.lock(holder, b"deep", Mode::EX);
    for _ in 0..10_000 {
        let s = d.open(LONG);
        d.lock(s, b"deep", waiter_mode);
    }
    (d, holder, l)
}

fn grant_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("grant_pass_10k_wait_queue");
    g.sample_size(20);
    // The unlock's grant pass grants all 10,000 PR waiters (iteration = one pass). The
    // engine is returned so that dropping it is not timed.
    let (d, holder, l) = deep_queue(Mode::PR);
    g.bench_function("grants_all_10k_pr", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                let ev = d.unlock(holder, l);
                (d, ev)
            },
            BatchSize::LargeInput,
        )
    });
    // The pass grants the head EX waiter and stops at the next one (iteration = one pass).
    let (d, holder, l) = deep_queue(Mode::EX);
    g.bench_function("grants_head_of_10k_ex", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                let ev = d.unlock(holder, l);
                (d, ev)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A wait-for chain s0 -> s1 -> ... -> s(n-1) over n resources; the last session asking for
/// r0 closes the cycle and is refused after a search along the whole chain. The refused
/// request changes nothing, so it can be repeated.
fn deadlock_chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("deadlock_search_chain");
    for n in [100usize, 1_000] {
        let mut d = Driver::new(big());
        let sessions: Vec<SessionId> = (0..n).map(|_| d.open(LONG)).collect();
        let name = |i: usize| format!("r{i}").into_bytes();
        for (i, &s) in sessions.iter().enumerate() {
            d.lock(s, &name(i), Mode::EX);
        }
        for (i, &s) in sessions.iter().enumerate().take(n - 1) {
            d.lock(s, &name(i + 1), Mode::EX);
        }
        let last = sessions[n - 1];
        let (_, ev) = d.lock(last, &name(0), Mode::EX);
        assert!(
            matches!(ev[0].kind, dlock_core::EventKind::Deadlock),
            "{n}: {ev:?}"
        );
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| d.lock(last, &name(0), Mode::EX))
        });
    }
    g.finish();
}

/// A new request joining a 10,000-deep queue of EX waiters whose sessions each hold another
/// lock, so the deadlock search cannot be skipped; then it is cancelled (iteration = the
/// queued request and its cancel).
fn deadlock_deep_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("deadlock_search_deep_queue");
    let mut d = Driver::new(big());
    let holder = d.open(LONG);
    d.lock(holder, b"hot", Mode::EX);
    for i in 0..10_000u32 {
        let s = d.open(LONG);
        d.lock(s, format!("own{i}").as_bytes(), Mode::EX);
        d.lock(s, b"hot", Mode::EX);
    }
    let s = d.open(LONG);
    d.lock(s, b"mine", Mode::EX);
    g.bench_function("10k_waiters_holding_locks", |b| {
        b.iter(|| {
            let (l, ev) = d.lock(s, b"hot", Mode::EX);
            assert!(matches!(ev[0].kind, dlock_core::EventKind::Queued));
            d.apply(Command::Cancel {
                session: s,
                request: RequestId(0),
                lock: l,
            })
        })
    });
    g.finish();
}

/// 100,000 sessions whose leases end together, each holding one lock on its own resource,
/// plus one shared resource every session holds NL on: the first `Tick` (one step of
/// `STEP_WORK`, the longest any input spends on them) and every `Tick` until all are gone
/// (the whole work, which an engine without steps did in one tick).
fn expiry(c: &mut Criterion) {
    let mut g = c.benchmark_group("expire_100k_sessions");
    g.sample_size(10);
    let mut d = Driver::new(big());
    let survivor = d.open(LONG);
    for i in 0..100_000u32 {
        let s = d.open(1_000);
        d.lock(s, format!("own{i}").as_bytes(), Mode::EX);
        d.lock(s, b"shared", Mode::NL);
    }
    d.lock(survivor, b"shared", Mode::EX);
    d.now = 1_000;
    g.bench_function("first_tick", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                let ev = d.apply(Command::Tick);
                assert!(!ev.is_empty());
                (d, ev)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("every_tick", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                while d.core.next_deadline().is_some_and(|t| t <= d.now) {
                    d.apply(Command::Tick);
                }
                assert_eq!(d.core.session_count(), 1);
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// The end of one session holding 100,000 EX locks, each on its own resource: the
/// `CloseSession` input alone (one step of `STEP_WORK` locks, the longest any input
/// spends on it), and the close with every `Tick` until the last lock is gone (the whole
/// work, which an engine without steps did in the one input).
fn session_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("end_session_100k_locks");
    g.sample_size(10);
    let mut d = Driver::new(big());
    let s = d.open(LONG);
    for i in 0..100_000u32 {
        d.lock(s, format!("own{i}").as_bytes(), Mode::EX);
    }
    let close = Command::CloseSession {
        session: s,
        request: RequestId(1),
    };
    g.bench_function("close_input", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                let ev = d.apply(close.clone());
                assert_eq!(ev.len(), 1);
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("close_and_every_tick", |b| {
        b.iter_batched(
            || d.clone(),
            |mut d| {
                d.apply(close.clone());
                while d.core.next_deadline() == Some(d.now) {
                    d.apply(Command::Tick);
                }
                assert_eq!(d.core.lock_count(), 0);
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    uncontended,
    conversions,
    grant_pass,
    deadlock_chain,
    deadlock_deep_queue,
    expiry,
    session_end
);
criterion_main!(benches);
