//! The engine: [`Core`], its state and the `apply` entry point.
//!
//! The work is split by concept: `ops.rs` (lock, convert, unlock, cancel), `grant.rs` (grants
//! and the grant pass), `session.rs` (leases and session end), `timers.rs`, `blocking.rs`,
//! `deadlock.rs`, `lvb.rs`, `validate.rs` and `inspect.rs` (queries).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::lock::{Lock, ResRef};
use crate::lock_index::LockIndex;
use crate::name::Name;
use crate::resource::{InSession, List, Resource};
use crate::session::Session;
use crate::slab::Slab;
use crate::timers::Timer;
use crate::{
    Command, Config, Event, EventKind, FencingToken, Input, LockId, Mode, Reject, RequestId,
    SessionId,
};

/// The deterministic lock engine. See the crate docs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) last_index: u64,
    pub(crate) clock_ms: u64,
    pub(crate) last_token: u64,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) locks: Slab<Lock>,
    pub(crate) lock_ids: LockIndex,
    pub(crate) resources: Slab<Resource>,
    pub(crate) names: BTreeMap<Name, ResRef>,
    /// Lease ends and request deadlines, ordered by time (timers.rs).
    pub(crate) timers: BTreeSet<(u64, Timer)>,
    /// Locks by state and mode, kept as locks change so that [`Core::census`] is O(1).
    /// Not part of a snapshot: [`Core::restore`] counts it again.
    #[serde(skip)]
    pub(crate) tally: crate::census::Tally,
    /// Lock entries examined by deadlock detection ([`Core::deadlock_search_steps`]): a
    /// measure of this engine's work, not part of its state or of a snapshot.
    #[serde(skip)]
    pub(crate) search_steps: crate::deadlock::StepCount,
    /// Sessions that have ended (R50) and still own locks, with those locks: a session with
    /// many locks loses them over several inputs, at most [`STEP_WORK`] an input
    /// (`session.rs`). The last field, so that a snapshot of an engine from before it
    /// ([`Snapshot::from_v2`]) differs only by its absence.
    pub(crate) ending: BTreeMap<SessionId, List<InSession>>,
}

/// The most cleanup one input does: locks of ended sessions removed plus due timers (lease
/// ends, request timeouts) handled. An ended session with more locks keeps them, still
/// blocking as before, and timers due beyond it stay due, until the following `Tick`s do
/// the rest; [`Core::next_deadline`] asks for those ticks at once. A removal or a timer
/// costs well under a microsecond, so no input spends more than about a millisecond on the
/// end of a session with a hundred thousand locks or on a hundred thousand leases ending
/// together, and other sessions' requests are applied between the steps.
pub const STEP_WORK: usize = 1024;

/// A serialisable copy of the whole engine state; see [`Core::snapshot`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot(Core);

/// A snapshot as an engine before sessions ended in steps serialised it: [`Snapshot`]
/// without the ended sessions still losing locks (there were none). Read it where data
/// written by such an engine may still be stored, and turn it into a [`Snapshot`] with
/// [`Snapshot::from_v2`].
#[derive(Debug, Deserialize)]
pub struct SnapshotV2 {
    config: Config,
    last_index: u64,
    clock_ms: u64,
    last_token: u64,
    sessions: BTreeMap<SessionId, Session>,
    locks: Slab<Lock>,
    lock_ids: LockIndex,
    resources: Slab<Resource>,
    names: BTreeMap<Name, ResRef>,
    timers: BTreeSet<(u64, Timer)>,
}

impl Snapshot {
    /// The snapshot an older engine's [`SnapshotV2`] stands for.
    pub fn from_v2(old: SnapshotV2) -> Snapshot {
        Snapshot(Core {
            config: old.config,
            last_index: old.last_index,
            clock_ms: old.clock_ms,
            last_token: old.last_token,
            sessions: old.sessions,
            locks: old.locks,
            lock_ids: old.lock_ids,
            resources: old.resources,
            names: old.names,
            timers: old.timers,
            tally: crate::census::Tally::default(),
            search_steps: crate::deadlock::StepCount::default(),
            ending: BTreeMap::new(),
        })
    }
}

/// Side effects collected while one input is applied and turned into blocking
/// notifications at its end, after the reply and the completions (see the crate docs).
#[derive(Debug)]
pub(crate) struct Effects {
    /// R32: (holder, blocked mode) pairs found when a request was queued.
    pub(crate) basts: Vec<(LockId, Mode)>,
    /// R35: locks that were granted, converted in place or reverted to the grant queue.
    pub(crate) touched: Vec<LockId>,
    /// Resources that lost a lock and need a grant pass (R12).
    pub(crate) dirty: BTreeSet<ResRef>,
    /// Resources a grant pass ran on (R35 re-checks their holders for one case).
    pub(crate) passed: Vec<ResRef>,
    /// Cleanup this input may still do ([`STEP_WORK`]).
    pub(crate) step_work: usize,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            basts: Vec::new(),
            touched: Vec::new(),
            dirty: BTreeSet::new(),
            passed: Vec::new(),
            step_work: STEP_WORK,
        }
    }
}

impl Core {
    /// A new, empty engine.
    pub fn new(config: Config) -> Core {
        Core {
            config,
            last_index: 0,
            clock_ms: 0,
            last_token: 0,
            sessions: BTreeMap::new(),
            locks: Slab::default(),
            lock_ids: LockIndex::default(),
            resources: Slab::default(),
            names: BTreeMap::new(),
            timers: BTreeSet::new(),
            tally: crate::census::Tally::default(),
            search_steps: crate::deadlock::StepCount::default(),
            ending: BTreeMap::new(),
        }
    }

    /// How many lock entries (queued requests and holders) deadlock detection has examined
    /// in this engine since it was created or restored: what detection cost, for a metric.
    /// Each search is bounded by [`Config::max_deadlock_search`](crate::Config); this adds
    /// them all up. Not part of the engine's state: a restored or replicated engine counts
    /// its own.
    pub fn deadlock_search_steps(&self) -> u64 {
        self.search_steps.get()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one input and returns the events it produced, in order.
    pub fn apply(&mut self, input: Input) -> Vec<Event> {
        let mut out = Vec::new();
        self.apply_into(input, &mut out);
        out
    }

    /// Applies one input, appending the events it produced to `out`.
    pub fn apply_into(&mut self, input: Input, out: &mut Vec<Event>) {
        if input.index <= self.last_index {
            return;
        }
        self.last_index = input.index;
        self.clock_ms = self.clock_ms.max(input.now_ms);
        // Exactly once (`once.rs`): one branch and nothing else without it.
        if self.config.exactly_once {
            self.execute_once(input.command, out);
        } else {
            self.execute(input.command, out);
        }
    }

    /// Executes one command of an input whose index and time are taken.
    pub(crate) fn execute(&mut self, command: Command, out: &mut Vec<Event>) {
        let mut fx = Effects::default();
        match command {
            Command::OpenSession {
                name,
                ttl_ms,
                secret,
            } => self.open_session(name, ttl_ms, secret, out),
            Command::Renew { session, request } => self.renew(session, request, out),
            Command::RenewMany { renewals } => {
                for (session, request) in renewals {
                    self.renew(session, request, out);
                }
            }
            Command::CloseSession { session, request } => {
                if self.sessions.contains_key(&session) {
                    out.push(reply(session, request, None, EventKind::SessionClosed));
                    self.end_session(session, &mut fx);
                } else {
                    out.push(reject(session, request, None, Reject::UnknownSession));
                }
            }
            Command::Lock {
                session,
                request,
                args,
            } => self.lock(session, request, args, &mut fx, out),
            Command::Convert {
                session,
                request,
                args,
            } => self.convert(session, request, args, &mut fx, out),
            Command::Unlock {
                session,
                request,
                args,
            } => self.unlock(session, request, args, &mut fx, out),
            Command::Cancel {
                session,
                request,
                lock,
            } => self.cancel(session, request, lock, &mut fx, out),
            Command::Tick => {
                self.continue_ending(&mut fx);
                self.tick(&mut fx, out);
            }
            Command::ExtendLeases { grace_ms } => self.extend_leases(grace_ms),
            Command::Configure { config } => self.config = *config,
        }
        self.run_grant_passes(&mut fx, out);
        self.flush_blocking(fx, out);
    }

    /// Renews `session`'s lease and answers `request`.
    fn renew(&mut self, session: SessionId, request: RequestId, out: &mut Vec<Event>) {
        if let Some(ttl_ms) = self.touch(session) {
            out.push(reply(session, request, None, EventKind::Renewed { ttl_ms }));
        } else {
            out.push(reject(session, request, None, Reject::UnknownSession));
        }
    }

    /// Runs the grant pass (R12) on every resource that lost a lock during this input.
    pub(crate) fn run_grant_passes(&mut self, fx: &mut Effects, out: &mut Vec<Event>) {
        while let Some(r) = fx.dirty.pop_first() {
            self.grant_pass(r, fx, out);
            fx.passed.push(r);
        }
    }

    /// The next fencing token: `max(last_token + 1, index)` (saturating at `u64::MAX`, which
    /// only a driver feeding indices near `u64::MAX` can reach).
    pub(crate) fn next_token(&mut self) -> FencingToken {
        let t = self.last_token.saturating_add(1).max(self.last_index);
        self.last_token = t;
        FencingToken(t)
    }

    /// The core clock time (ms) at which the driver should send the next `Tick`, if any:
    /// the engine's own clock (at once) while an ended session still has locks to remove
    /// ([`STEP_WORK`]).
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.ending.is_empty() {
            return Some(self.clock_ms);
        }
        self.timers.first().map(|&(at, _)| at)
    }

    /// The first deadline later than `after` (core clock ms), if any: what a `Tick` stamped
    /// later would act on that one stamped `after` does not. A replicated driver whose ticks
    /// are slow to apply proposes another only when one of these has come due.
    pub fn next_deadline_after(&self, after: u64) -> Option<u64> {
        let from = (after.checked_add(1)?, crate::timers::Timer::FIRST);
        self.timers.range(from..).next().map(|&(at, _)| at)
    }

    /// How many ended sessions still have locks to remove ([`STEP_WORK`]); 0 almost
    /// always.
    pub fn ending_sessions(&self) -> usize {
        self.ending.len()
    }

    /// The core's clock: the largest `now_ms` applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The index of the last applied input (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The highest fencing token granted so far (0 before any). Tokens are
    /// `max(last_token + 1, input.index)`, so a driver that starts indices above every token
    /// it ever handed out keeps tokens monotonic across restarts.
    pub fn last_token(&self) -> FencingToken {
        FencingToken(self.last_token)
    }

    /// Whether `secret` is the secret the session was opened with.
    pub fn check_secret(&self, session: SessionId, secret: u128) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.secret == secret)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of live resources.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Number of locks (granted, converting and waiting).
    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.clone())
    }

    /// The engine a snapshot was taken of.
    pub fn restore(snapshot: Snapshot) -> Core {
        let mut core = snapshot.0;
        core.tally = core.count_locks();
        core
    }
}

/// An event answering `request`.
pub(crate) fn reply(
    session: SessionId,
    request: RequestId,
    lock: Option<LockId>,
    kind: EventKind,
) -> Event {
    Event {
        session,
        request: Some(request),
        lock,
        kind,
    }
}

/// A rejection of `request`.
pub(crate) fn reject(
    session: SessionId,
    request: RequestId,
    lock: Option<LockId>,
    reason: Reject,
) -> Event {
    reply(session, request, lock, EventKind::Rejected { reason })
}
