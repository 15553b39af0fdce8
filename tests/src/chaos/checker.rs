//! The checker: replays a chaos history and reports every violation of dlock's safety and
//! liveness properties, each with a counterexample.
//!
//! It replays the server's audit log ([`AuditLine`]) in apply order. Inputs say which
//! resource, session and mode each lock id has (`LockId` = the index of the `Lock` input);
//! events say when locks are queued, granted, converted, released, cancelled and when sessions
//! end. From that it keeps its own model of every resource's holders and its convert and wait
//! queues, and judges:
//!
//! 1. [`Property::Compatibility`]: after every input, the granted modes on a resource are
//!    pairwise compatible (R7; a converting lock still holds its old mode, R9, R18).
//! 2. [`Property::Fencing`]: fencing tokens on a resource strictly increase from grant to
//!    grant, across server restarts; the tokens clients saw are the ones the server granted.
//! 3. [`Property::Completion`]: every request gets exactly one immediate answer; every queued
//!    request completes exactly once (granted, cancelled, timed out, deadlock victim) unless
//!    its session ends or the server restarts; completions only complete pending requests;
//!    no workload operation hangs; at the end of a quiescent run nothing is pending.
//! 4. [`Property::Fifo`]: grant order follows R10–R13: a new request is granted on arrival
//!    only with both queues empty; a queued request is granted only from the head of its
//!    queue, and waiters only when no conversion is queued; and after every input the head of
//!    the queue in charge is not grantable (no lost wake-up, R12).
//! 5. [`Property::LostBeforeGrant`]: a client whose lock was lost (lease lapsed locally,
//!    session expired) saw `lost()` before the server granted an incompatible lock on that
//!    resource to another session.
//! 6. [`Property::DeadRelease`]: a session that stops renewing is expired, and its locks
//!    released, within its lease TTL plus [`CheckConfig::expiry_allowance_us`] after its last
//!    renewal (and not before the lease ends); a session dropped abruptly by the workload is
//!    gone within TTL plus the allowance after the drop.
//!
//! **Clock assumption.** Properties 5 and 6 compare wall-clock times: the server stamps each
//! audit line with `SystemTime` when it applies the input, and the workload stamps `lost()`
//! and drops with `SystemTime`. Both processes run on one host and read the same clock, so
//! the stamps are comparable up to scheduling delays (microseconds to a few milliseconds).
//! The checker is only meaningful under that assumption; it is not for a multi-host run.
//!
//! The "tick" of property 6: the server has no fixed tick; it wakes at the engine's next
//! deadline. So the bound is TTL plus a scheduling allowance for the timer wake-up and the
//! batch in progress (default 250 ms on a loaded two-core machine).

use dlock_core::{ConvertRequest, LockRequest};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use dlock_core::{
    Command, Event, EventKind, FencingToken, Input, LockFlags, LockId, Mode, Reject, RequestId,
    SessionId,
};
use serde::{Deserialize, Serialize};

use super::history::{AuditLine, ClientRecord, LostKind, LostRecord, OpOutcome, OpRecord};

/// The properties the checker judges; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Property {
    /// 1: no two incompatible granted locks on one resource at once (R7).
    Compatibility,
    /// 2: fencing tokens strictly increase per resource, also across restarts.
    Fencing,
    /// 3: every accepted request completes exactly once; none hangs.
    Completion,
    /// 4: FIFO grant order and grant passes (R10–R13).
    Fifo,
    /// 5: `lost()` is seen before an incompatible lock is granted to another session.
    LostBeforeGrant,
    /// 6: a dead client's locks are released within its lease plus an allowance.
    DeadRelease,
    /// The history itself is complete: the audit log dropped no lines (a full disk).
    History,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::Compatibility => "1 compatibility (R7)",
            Property::Fencing => "2 fencing tokens",
            Property::Completion => "3 completion exactly once",
            Property::Fifo => "4 FIFO (R10-R13)",
            Property::LostBeforeGrant => "5 lost() before another grant",
            Property::DeadRelease => "6 dead client released within lease",
            Property::History => "complete history (no audit lines dropped)",
        })
    }
}

/// One violation, with its counterexample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// Audit line number (1-based, counting every line) where it was detected; 0 for a
    /// violation found in the workload's records.
    pub line: u64,
    /// Wall clock of the detection, microseconds since the epoch.
    pub ts_us: u64,
    /// The counterexample, in words.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] audit line {} (t={}us): {}",
            self.property, self.line, self.ts_us, self.detail
        )
    }
}

/// Settings of the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Property 6: how long after `last renewal + TTL` an expiry may come (timer wake-up and
    /// scheduling on a loaded host), in microseconds.
    pub expiry_allowance_us: u64,
    /// Property 6: how much before `last renewal + TTL` an expiry may come (millisecond
    /// rounding of the server's clock), in microseconds.
    pub early_tolerance_us: u64,
    /// Property 3: the run ended with every client closed or expired, so no request may be
    /// left pending at the end of the log.
    pub expect_quiescent: bool,
    /// How many counterexamples to keep (all violations are counted).
    pub max_examples: usize,
    /// Property 5 across a restart: the restarted server must not grant a lock that a
    /// client of the previous server lifetime may still believe it holds (it must wait out
    /// the old leases). With `false`, such cases are not violations but are counted in
    /// [`CheckReport::restart_gaps`], with counterexamples in
    /// [`CheckReport::restart_gap_examples`]: dlock-server has no restart grace period yet.
    pub restart_grace: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            expiry_allowance_us: 250_000,
            early_tolerance_us: 5_000,
            expect_quiescent: false,
            max_examples: 50,
            restart_grace: true,
        }
    }
}

/// What the checker checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Audit lines applied (inputs).
    pub inputs: u64,
    /// Server lifetimes seen (start lines).
    pub lifetimes: u64,
    /// Grants checked (new locks and conversions).
    pub grants: u64,
    /// Completions checked (grant, refusal, cancel, timeout, deadlock, unlock).
    pub completions: u64,
    /// Session expiries checked.
    pub expiries: u64,
    /// Workload operations checked, by kind.
    pub ops: BTreeMap<String, u64>,
    /// Workload operations by outcome (errors by name).
    pub outcomes: BTreeMap<String, u64>,
    /// Client-side `lost()` reports checked against the server's later grants.
    pub lost_checked: u64,
    /// Abruptly dropped sessions checked.
    pub dropped_checked: u64,
    /// Violations counted per property.
    pub violations: BTreeMap<Property, u64>,
    /// The first counterexamples.
    pub examples: Vec<Violation>,
    /// Property 5 cases where the competing grant came from a restarted server, counted
    /// here instead of as violations when [`CheckConfig::restart_grace`] is `false`.
    pub restart_gaps: u64,
    /// The first of those, as counterexamples.
    pub restart_gap_examples: Vec<Violation>,
    /// Property 6 margin: the latest expiry seen, in microseconds after `last renewal +
    /// TTL` (negative: before it).
    pub max_expiry_lateness_us: i64,
    /// Property 5 margin: the smallest time by which a `lost()` preceded the next
    /// incompatible grant to another session within one server lifetime, in microseconds.
    pub min_lost_lead_us: Option<i64>,
    /// The `lost()` report with that smallest lead, and the grant after it.
    pub min_lost_lead_example: Option<String>,
}

impl CheckReport {
    /// Whether no property was violated.
    pub fn is_ok(&self) -> bool {
        self.violations.values().all(|&n| n == 0)
    }

    /// Total number of violations.
    pub fn violation_count(&self) -> u64 {
        self.violations.values().sum()
    }

    /// Total number of workload operations.
    pub fn op_count(&self) -> u64 {
        self.ops.values().sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} server inputs over {} server lifetime(s): {} grants, {} completions, {} lease expiries",
            self.inputs, self.lifetimes, self.grants, self.completions, self.expiries
        )?;
        writeln!(
            f,
            "checked {} workload operations {:?} with outcomes {:?}, {} lost() reports, {} dropped sessions",
            self.op_count(),
            self.ops,
            self.outcomes,
            self.lost_checked,
            self.dropped_checked
        )?;
        writeln!(
            f,
            "margins: latest expiry {} after its lease; smallest lead of lost() over the next incompatible grant {}",
            if self.expiries == 0 {
                "n/a".into()
            } else {
                format!("{:.1} ms", self.max_expiry_lateness_us as f64 / 1000.0)
            },
            match self.min_lost_lead_us {
                Some(us) => format!("{:.1} ms", us as f64 / 1000.0),
                None => "n/a".into(),
            }
        )?;
        if self.restart_gaps > 0 {
            writeln!(
                f,
                "known gap (not counted as violations): {} lost() reports came after a restarted server granted the lock to another session (no restart grace period)",
                self.restart_gaps
            )?;
            for v in &self.restart_gap_examples {
                writeln!(f, "  {v}")?;
            }
        }
        if self.is_ok() {
            writeln!(f, "violations: none")?;
        } else {
            writeln!(
                f,
                "violations: {} {:?}",
                self.violation_count(),
                self.violations
            )?;
            for v in &self.examples {
                writeln!(f, "  {v}")?;
            }
        }
        Ok(())
    }
}

/// A lock as the model sees it.
#[derive(Clone, Debug)]
struct LockModel {
    session: SessionId,
    resource: Vec<u8>,
    state: State,
    /// Audit line where it entered its current state (for counterexamples).
    since_line: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting {
        mode: Mode,
        request: RequestId,
    },
    Granted {
        mode: Mode,
    },
    Converting {
        from: Mode,
        to: Mode,
        request: RequestId,
    },
}

impl State {
    fn held(self) -> Option<Mode> {
        match self {
            State::Waiting { .. } => None,
            State::Granted { mode } => Some(mode),
            State::Converting { from, .. } => Some(from),
        }
    }

    fn pending(self) -> Option<RequestId> {
        match self {
            State::Waiting { request, .. } | State::Converting { request, .. } => Some(request),
            State::Granted { .. } => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct ResModel {
    /// Locks holding a mode (granted or converting).
    holders: BTreeSet<LockId>,
    convert: VecDeque<LockId>,
    wait: VecDeque<LockId>,
}

impl ResModel {
    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.convert.is_empty() && self.wait.is_empty()
    }
}

#[derive(Clone, Debug)]
struct SessionModel {
    ttl_ms: u64,
    last_touch_us: u64,
    /// A lateness violation was already reported for the current lease.
    late_reported: bool,
}

/// A grant, kept for property 5.
#[derive(Clone, Copy, Debug)]
struct GrantRec {
    line: u64,
    ts_us: u64,
    lifetime: u64,
    lock: LockId,
    session: SessionId,
    mode: Mode,
}

/// What is remembered of every lock ever granted, for the workload cross-checks.
#[derive(Clone, Debug)]
struct LockHistory {
    resource: Vec<u8>,
    session: SessionId,
    last_grant_line: u64,
    lifetime: u64,
    tokens: Vec<FencingToken>,
    /// The mode of its latest grant (what the server last gave it).
    mode: Mode,
    /// Its owner released it (UNLOCKED, or a Goodbye ending its session): from then on its
    /// owner asked not to hold it.
    released_by_owner: bool,
}

/// How a session ended, for the dropped-session check.
#[derive(Clone, Copy, Debug)]
struct SessionEnd {
    ts_us: u64,
}

/// The subject of an input: who asked for what.
#[derive(Clone, Debug)]
enum Subject {
    Open(SessionId),
    /// Renew, close: one answer to `(session, request)`.
    Simple(SessionId, RequestId),
    Lock {
        session: SessionId,
        request: RequestId,
        lock: LockId,
        resource: Vec<u8>,
        mode: Mode,
    },
    Convert {
        session: SessionId,
        request: RequestId,
        lock: LockId,
        mode: Mode,
        quecvt: bool,
    },
    Unlock(SessionId, RequestId),
    Cancel(SessionId, RequestId, LockId),
    Tick,
}

impl Subject {
    fn of(input: &Input) -> Subject {
        match &input.command {
            Command::OpenSession { .. } => Subject::Open(SessionId(input.index)),
            Command::Renew { session, request } | Command::CloseSession { session, request } => {
                Subject::Simple(*session, *request)
            }
            Command::Lock {
                session,
                request,
                args: LockRequest { resource, mode, .. },
                ..
            } => Subject::Lock {
                session: *session,
                request: *request,
                lock: LockId(input.index),
                resource: resource.clone(),
                mode: *mode,
            },
            Command::Convert {
                session,
                request,
                args: ConvertRequest {
                    lock, mode, flags, ..
                },
                ..
            } => Subject::Convert {
                session: *session,
                request: *request,
                lock: *lock,
                mode: *mode,
                quecvt: flags.contains(LockFlags::QUECVT),
            },
            Command::Unlock {
                session, request, ..
            } => Subject::Unlock(*session, *request),
            Command::Cancel {
                session,
                request,
                lock,
            } => Subject::Cancel(*session, *request, *lock),
            Command::Tick => Subject::Tick,
        }
    }

    fn session(&self) -> Option<SessionId> {
        match self {
            Subject::Open(_) | Subject::Tick => None,
            Subject::Simple(s, _) | Subject::Unlock(s, _) | Subject::Cancel(s, _, _) => Some(*s),
            Subject::Lock { session, .. } | Subject::Convert { session, .. } => Some(*session),
        }
    }

    fn request(&self) -> Option<RequestId> {
        match self {
            Subject::Open(_) | Subject::Tick => None,
            Subject::Simple(_, r) | Subject::Unlock(_, r) | Subject::Cancel(_, r, _) => Some(*r),
            Subject::Lock { request, .. } | Subject::Convert { request, .. } => Some(*request),
        }
    }
}

/// The streaming checker: feed it every audit line in order, then [`finish`](Self::finish)
/// with the workload's records.
pub struct Checker {
    cfg: CheckConfig,
    line: u64,
    lifetime: u64,
    now_us: u64,
    last_index: u64,
    sessions: BTreeMap<SessionId, SessionModel>,
    locks: HashMap<LockId, LockModel>,
    resources: BTreeMap<Vec<u8>, ResModel>,
    tokens: HashMap<Vec<u8>, (FencingToken, u64)>,
    grants: HashMap<Vec<u8>, Vec<GrantRec>>,
    history: HashMap<LockId, LockHistory>,
    ended: HashMap<SessionId, SessionEnd>,
    /// Sessions alive at a restart: ended by the restart at that time.
    report: CheckReport,
}

impl Checker {
    /// A checker with `cfg`.
    pub fn new(cfg: CheckConfig) -> Checker {
        Checker {
            cfg,
            line: 0,
            lifetime: 0,
            now_us: 0,
            last_index: 0,
            sessions: BTreeMap::new(),
            locks: HashMap::new(),
            resources: BTreeMap::new(),
            tokens: HashMap::new(),
            grants: HashMap::new(),
            history: HashMap::new(),
            ended: HashMap::new(),
            report: CheckReport::default(),
        }
    }

    fn violation(&mut self, property: Property, detail: String) {
        *self.report.violations.entry(property).or_default() += 1;
        if self.report.examples.len() < self.cfg.max_examples {
            self.report.examples.push(Violation {
                property,
                line: self.line,
                ts_us: self.now_us,
                detail,
            });
        }
    }

    /// Feeds one audit line.
    pub fn feed(&mut self, line: AuditLine) {
        self.line += 1;
        match line {
            AuditLine::Start { ts_us, .. } => self.start(ts_us),
            // The same server lifetime goes on in the next file.
            AuditLine::Rotated { .. } => {}
            AuditLine::Gap { dropped, .. } => self.violation(
                Property::History,
                format!("the server could not write {dropped} audit lines here; nothing after them can be judged soundly"),
            ),
            AuditLine::Apply {
                ts_us,
                input,
                events,
            } => self.apply(ts_us, &input, &events),
        }
    }

    /// A new server lifetime: every session and lock of the old one is gone (a client must
    /// learn this through a refused resume). Tokens carry over.
    fn start(&mut self, ts_us: u64) {
        // The old server died after its last line: its sessions ended then at the latest.
        let died_by = if self.lifetime == 0 {
            ts_us
        } else {
            self.now_us
        };
        self.now_us = self.now_us.max(ts_us);
        self.lifetime += 1;
        self.report.lifetimes += 1;
        for (s, _) in std::mem::take(&mut self.sessions) {
            self.ended.insert(s, SessionEnd { ts_us: died_by });
        }
        self.locks.clear();
        self.resources.clear();
    }

    fn apply(&mut self, ts_us: u64, input: &Input, events: &[Event]) {
        if self.lifetime == 0 {
            // A log without a start line: treat its beginning as one.
            self.lifetime = 1;
            self.report.lifetimes += 1;
        }
        self.now_us = ts_us;
        self.report.inputs += 1;
        if input.index <= self.last_index {
            self.violation(
                Property::Fencing,
                format!(
                    "input index {} applied after index {}: indices (and so lock ids and tokens) must grow, also across restarts",
                    input.index, self.last_index
                ),
            );
        }
        self.last_index = self.last_index.max(input.index);
        self.check_overdue_leases();
        let subject = Subject::of(input);
        if let Some(s) = subject.session()
            && let Some(m) = self.sessions.get_mut(&s)
            && !events.iter().any(|e| {
                e.session == s
                    && matches!(
                        e.kind,
                        EventKind::Rejected {
                            reason: Reject::UnknownSession
                        }
                    )
            })
        {
            m.last_touch_us = ts_us;
            m.late_reported = false;
        }
        let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut granted_on: BTreeSet<Vec<u8>> = BTreeSet::new();
        if let Subject::Lock { resource, .. } = &subject {
            touched.insert(resource.clone());
        }
        let mut answers = 0usize;
        for ev in events {
            if is_answer(&subject, ev) {
                answers += 1;
            }
            self.event(&subject, ev, &mut touched, &mut granted_on);
        }
        self.check_answers(&subject, events, answers);
        for r in &granted_on {
            self.check_compatible(r);
        }
        for r in &touched {
            self.check_heads(r);
        }
    }

    /// Property 6 (late side): a live session whose lease ended more than the allowance ago.
    fn check_overdue_leases(&mut self) {
        let now = self.now_us;
        let allowance = self.cfg.expiry_allowance_us;
        let mut late = Vec::new();
        for (s, m) in self.sessions.iter_mut() {
            let due = m.last_touch_us + m.ttl_ms * 1000 + allowance;
            if !m.late_reported && now > due {
                m.late_reported = true;
                late.push((*s, m.ttl_ms, m.last_touch_us));
            }
        }
        for (s, ttl_ms, last) in late {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {s} (lease {ttl_ms} ms) last renewed at {last}us is still alive {} ms after its lease ended",
                    (now - last - ttl_ms * 1000) / 1000
                ),
            );
        }
    }

    fn check_answers(&mut self, subject: &Subject, events: &[Event], answers: usize) {
        let expected = match subject {
            Subject::Tick => return,
            Subject::Open(s) => {
                let n = events
                    .iter()
                    .filter(|e| {
                        e.session == *s
                            && matches!(
                                e.kind,
                                EventKind::SessionOpened { .. } | EventKind::Rejected { .. }
                            )
                    })
                    .count();
                if n != 1 {
                    self.violation(
                        Property::Completion,
                        format!("opening session {s} got {n} answers: {events:?}"),
                    );
                }
                return;
            }
            Subject::Cancel(_, _, lock) => {
                // Either the cancel is refused, or the pending request completes CANCELLED.
                let cancelled = events
                    .iter()
                    .filter(|e| e.lock == Some(*lock) && matches!(e.kind, EventKind::Cancelled))
                    .count();
                answers + cancelled
            }
            _ => answers,
        };
        if expected != 1 {
            let (s, r) = (subject.session(), subject.request());
            self.violation(
                Property::Completion,
                format!(
                    "request {r:?} of session {s:?} ({subject:?}) got {expected} immediate answers (expected exactly 1): {events:?}"
                ),
            );
        }
    }

    fn event(
        &mut self,
        subject: &Subject,
        ev: &Event,
        touched: &mut BTreeSet<Vec<u8>>,
        granted_on: &mut BTreeSet<Vec<u8>>,
    ) {
        if let Some(lock) = ev.lock
            && let Some(l) = self.locks.get(&lock)
        {
            touched.insert(l.resource.clone());
        }
        match &ev.kind {
            EventKind::SessionOpened { ttl_ms } => {
                self.sessions.insert(
                    ev.session,
                    SessionModel {
                        ttl_ms: *ttl_ms,
                        last_touch_us: self.now_us,
                        late_reported: false,
                    },
                );
            }
            EventKind::SessionExpired => {
                self.report.expiries += 1;
                match self.sessions.get(&ev.session).cloned() {
                    None => self.violation(
                        Property::Completion,
                        format!("session {} expired but was not alive", ev.session),
                    ),
                    Some(m) => {
                        let lived = self.now_us.saturating_sub(m.last_touch_us);
                        let ttl_us = m.ttl_ms * 1000;
                        let late = i64::try_from(lived).unwrap_or(i64::MAX)
                            - i64::try_from(ttl_us).unwrap_or(i64::MAX);
                        if self.report.expiries == 1 || late > self.report.max_expiry_lateness_us {
                            self.report.max_expiry_lateness_us = late;
                        }
                        if lived + self.cfg.early_tolerance_us < ttl_us {
                            self.violation(
                                Property::DeadRelease,
                                format!(
                                    "session {} expired {} us after its last renewal, before its lease of {} ms",
                                    ev.session, lived, m.ttl_ms
                                ),
                            );
                        } else if lived > ttl_us + self.cfg.expiry_allowance_us && !m.late_reported
                        {
                            self.violation(
                                Property::DeadRelease,
                                format!(
                                    "session {} expired {} ms after its last renewal: lease {} ms + allowance {} ms",
                                    ev.session,
                                    lived / 1000,
                                    m.ttl_ms,
                                    self.cfg.expiry_allowance_us / 1000
                                ),
                            );
                        }
                    }
                }
                self.end_session(ev.session, touched);
            }
            EventKind::SessionClosed => {
                // The owner's own Goodbye (a client also sends one once its local lease
                // lapsed): its locks were given up by their owner.
                for (id, l) in &self.locks {
                    if l.session == ev.session
                        && let Some(h) = self.history.get_mut(id)
                    {
                        h.released_by_owner = true;
                    }
                }
                self.end_session(ev.session, touched);
            }
            EventKind::Renewed { .. } | EventKind::Blocking { .. } => {}
            EventKind::Rejected { reason } => {
                if matches!(reason, Reject::UnknownSession)
                    && self.sessions.contains_key(&ev.session)
                {
                    self.violation(
                        Property::Completion,
                        format!(
                            "the server calls session {} unknown, but it never expired or closed",
                            ev.session
                        ),
                    );
                }
            }
            EventKind::Queued => self.queued(subject, ev),
            EventKind::Granted { mode, token, .. } => {
                self.report.completions += 1;
                if let Some(r) = self.granted(subject, ev, *mode, *token) {
                    touched.insert(r.clone());
                    granted_on.insert(r);
                }
            }
            EventKind::NotQueued | EventKind::Deadlock => {
                self.report.completions += 1;
                // Immediate refusals leave no trace; a later DEADLOCK ends a queued request.
                if let Some(lock) = ev.lock
                    && let Some(l) = self.locks.get(&lock)
                    && l.state.pending().is_some()
                    && !is_answer(subject, ev)
                {
                    self.end_pending(ev, touched);
                }
            }
            EventKind::Cancelled | EventKind::TimedOut => {
                self.report.completions += 1;
                self.end_pending(ev, touched);
            }
            EventKind::Unlocked => {
                self.report.completions += 1;
                let Some(lock) = ev.lock else {
                    self.violation(
                        Property::Completion,
                        format!("UNLOCKED without a lock id: {ev:?}"),
                    );
                    return;
                };
                match self.locks.get(&lock).map(|l| l.state) {
                    Some(State::Granted { .. }) => {
                        if let Some(h) = self.history.get_mut(&lock) {
                            h.released_by_owner = true;
                        }
                        self.remove_lock(lock);
                    }
                    other => self.violation(
                        Property::Completion,
                        format!(
                            "UNLOCKED for lock {lock} in state {other:?} (must be granted, R44/R45)"
                        ),
                    ),
                }
            }
        }
    }

    fn queued(&mut self, subject: &Subject, ev: &Event) {
        let line = self.line;
        match subject {
            Subject::Lock {
                session,
                request,
                lock,
                resource,
                mode,
            } if ev.lock == Some(*lock) && ev.request == Some(*request) => {
                self.locks.insert(
                    *lock,
                    LockModel {
                        session: *session,
                        resource: resource.clone(),
                        state: State::Waiting {
                            mode: *mode,
                            request: *request,
                        },
                        since_line: line,
                    },
                );
                self.resources
                    .entry(resource.clone())
                    .or_default()
                    .wait
                    .push_back(*lock);
            }
            Subject::Convert {
                request,
                lock,
                mode,
                ..
            } if ev.lock == Some(*lock) && ev.request == Some(*request) => {
                let Some(l) = self.locks.get_mut(lock) else {
                    self.violation(
                        Property::Completion,
                        format!("conversion of unknown lock {lock} queued"),
                    );
                    return;
                };
                let State::Granted { mode: from } = l.state else {
                    let state = l.state;
                    self.violation(
                        Property::Completion,
                        format!("conversion of lock {lock} queued while {state:?} (R15)"),
                    );
                    return;
                };
                l.state = State::Converting {
                    from,
                    to: *mode,
                    request: *request,
                };
                l.since_line = line;
                let r = l.resource.clone();
                self.resources
                    .entry(r)
                    .or_default()
                    .convert
                    .push_back(*lock);
            }
            _ => self.violation(
                Property::Completion,
                format!("QUEUED that answers no request of this input: {ev:?}"),
            ),
        }
    }

    /// A grant: returns the resource.
    fn granted(
        &mut self,
        subject: &Subject,
        ev: &Event,
        mode: Mode,
        token: FencingToken,
    ) -> Option<Vec<u8>> {
        let Some(lock) = ev.lock else {
            self.violation(
                Property::Completion,
                format!("GRANTED without a lock id: {ev:?}"),
            );
            return None;
        };
        let line = self.line;
        let resource = match (self.locks.get(&lock).cloned(), subject) {
            // R10: a new request granted on arrival.
            (
                None,
                Subject::Lock {
                    session,
                    request,
                    lock: new,
                    resource,
                    mode: asked,
                },
            ) if *new == lock && ev.request == Some(*request) => {
                if let Some(res) = self.resources.get(resource)
                    && (!res.convert.is_empty() || !res.wait.is_empty())
                {
                    let (c, w) = (res.convert.clone(), res.wait.clone());
                    self.violation(
                        Property::Fifo,
                        format!(
                            "new lock {lock} ({mode}) granted on arrival while {} conversion(s) {:?} and {} waiter(s) {:?} are queued on {} (R10)",
                            c.len(),
                            self.describe_all(&c),
                            w.len(),
                            self.describe_all(&w),
                            show(resource)
                        ),
                    );
                }
                if mode != *asked {
                    self.violation(
                        Property::Completion,
                        format!("lock {lock} asked for {asked} but was granted {mode}"),
                    );
                }
                self.locks.insert(
                    lock,
                    LockModel {
                        session: *session,
                        resource: resource.clone(),
                        state: State::Granted { mode },
                        since_line: line,
                    },
                );
                let res = self.resources.entry(resource.clone()).or_default();
                res.holders.insert(lock);
                resource.clone()
            }
            // R11: a conversion granted on arrival.
            (
                Some(l),
                Subject::Convert {
                    request,
                    lock: conv,
                    mode: asked,
                    quecvt,
                    ..
                },
            ) if *conv == lock
                && ev.request == Some(*request)
                && matches!(l.state, State::Granted { .. }) =>
            {
                if *quecvt
                    && let Some(res) = self.resources.get(&l.resource)
                    && !res.convert.is_empty()
                {
                    let c = res.convert.clone();
                    self.violation(
                        Property::Fifo,
                        format!(
                            "QUECVT conversion of lock {lock} granted on arrival ahead of queued conversions {:?} (R21)",
                            self.describe_all(&c)
                        ),
                    );
                }
                if mode != *asked {
                    self.violation(
                        Property::Completion,
                        format!(
                            "conversion of lock {lock} asked for {asked} but was granted {mode}"
                        ),
                    );
                }
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode };
                    m.since_line = line;
                }
                l.resource
            }
            // R12: a queued request granted by a grant pass.
            (Some(l), _) if l.state.pending().is_some() => {
                if ev.request != l.state.pending() || ev.session != l.session {
                    self.violation(
                        Property::Completion,
                        format!(
                            "grant of lock {lock} carries request {:?} of {} but its pending request is {:?} of {}",
                            ev.request, ev.session, l.state.pending(), l.session
                        ),
                    );
                }
                self.fifo_check_pass_grant(lock, &l, mode);
                let res = self.resources.entry(l.resource.clone()).or_default();
                res.wait.retain(|x| *x != lock);
                res.convert.retain(|x| *x != lock);
                res.holders.insert(lock);
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode };
                    m.since_line = line;
                }
                l.resource
            }
            (l, _) => {
                self.violation(
                    Property::Completion,
                    format!(
                        "GRANTED {mode} to lock {lock} which has no pending request (state {:?}): {ev:?}",
                        l.map(|l| l.state)
                    ),
                );
                return None;
            }
        };
        self.report.grants += 1;
        // Property 2.
        if let Some((last, last_line)) = self.tokens.get(&resource).copied()
            && token <= last
        {
            self.violation(
                Property::Fencing,
                format!(
                    "lock {lock} on {} granted token {token}, not above token {last} granted at audit line {last_line}",
                    show(&resource)
                ),
            );
        }
        self.tokens.insert(resource.clone(), (token, line));
        let session = ev.session;
        self.grants
            .entry(resource.clone())
            .or_default()
            .push(GrantRec {
                line,
                ts_us: self.now_us,
                lifetime: self.lifetime,
                lock,
                session,
                mode,
            });
        let lifetime = self.lifetime;
        let h = self.history.entry(lock).or_insert_with(|| LockHistory {
            resource: resource.clone(),
            session,
            last_grant_line: line,
            lifetime,
            tokens: Vec::new(),
            mode,
            released_by_owner: false,
        });
        h.last_grant_line = line;
        h.mode = mode;
        h.tokens.push(token);
        Some(resource)
    }

    /// R12, R13: a queued request is granted only from the head of its queue, and a waiter
    /// only when no conversion is queued.
    fn fifo_check_pass_grant(&mut self, lock: LockId, l: &LockModel, mode: Mode) {
        let Some(res) = self.resources.get(&l.resource) else {
            return;
        };
        let (queue, name) = match l.state {
            State::Waiting { .. } => (&res.wait, "wait"),
            _ => (&res.convert, "convert"),
        };
        let ahead: Vec<LockId> = queue.iter().take_while(|x| **x != lock).copied().collect();
        let converting: Vec<LockId> = match l.state {
            State::Waiting { .. } => res.convert.iter().copied().collect(),
            _ => Vec::new(),
        };
        if !ahead.is_empty() {
            self.violation(
                Property::Fifo,
                format!(
                    "queued lock {lock} ({}) on {} granted {mode} while earlier request(s) {:?} still wait ahead of it on the {name} queue (R12)",
                    self.describe(lock),
                    show(&l.resource),
                    self.describe_all(&ahead)
                ),
            );
        }
        if !converting.is_empty() {
            self.violation(
                Property::Fifo,
                format!(
                    "waiting lock {lock} ({}) on {} granted while conversion(s) {:?} are queued (R13)",
                    self.describe(lock),
                    show(&l.resource),
                    self.describe_all(&converting)
                ),
            );
        }
    }

    /// CANCELLED, TIMEDOUT or a later DEADLOCK of a queued request.
    fn end_pending(&mut self, ev: &Event, touched: &mut BTreeSet<Vec<u8>>) {
        let Some(lock) = ev.lock else {
            self.violation(
                Property::Completion,
                format!("completion without a lock id: {ev:?}"),
            );
            return;
        };
        let Some(l) = self.locks.get(&lock).cloned() else {
            self.violation(
                Property::Completion,
                format!(
                    "{:?} for lock {lock}, which does not exist (a second completion?)",
                    ev.kind
                ),
            );
            return;
        };
        if l.state.pending().is_none() || ev.request != l.state.pending() {
            self.violation(
                Property::Completion,
                format!(
                    "{:?} of request {:?} for lock {lock} whose pending request is {:?} (a completion of nothing, or a second one)",
                    ev.kind,
                    ev.request,
                    l.state.pending()
                ),
            );
            return;
        }
        touched.insert(l.resource.clone());
        match l.state {
            State::Waiting { .. } => self.remove_lock(lock),
            State::Converting { from, .. } => {
                if let Some(res) = self.resources.get_mut(&l.resource) {
                    res.convert.retain(|x| *x != lock);
                }
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode: from };
                    m.since_line = self.line;
                }
            }
            State::Granted { .. } => {}
        }
    }

    fn remove_lock(&mut self, lock: LockId) {
        let Some(l) = self.locks.remove(&lock) else {
            return;
        };
        if let Some(res) = self.resources.get_mut(&l.resource) {
            res.holders.remove(&lock);
            res.convert.retain(|x| *x != lock);
            res.wait.retain(|x| *x != lock);
            if res.is_empty() {
                self.resources.remove(&l.resource);
            }
        }
    }

    fn end_session(&mut self, s: SessionId, touched: &mut BTreeSet<Vec<u8>>) {
        self.sessions.remove(&s);
        self.ended.insert(s, SessionEnd { ts_us: self.now_us });
        let mine: Vec<LockId> = self
            .locks
            .iter()
            .filter(|(_, l)| l.session == s)
            .map(|(id, _)| *id)
            .collect();
        for lock in mine {
            if let Some(l) = self.locks.get(&lock) {
                touched.insert(l.resource.clone());
            }
            self.remove_lock(lock);
        }
    }

    /// Property 1 on one resource after an input.
    fn check_compatible(&mut self, resource: &[u8]) {
        let Some(res) = self.resources.get(resource) else {
            return;
        };
        let held: Vec<(LockId, SessionId, Mode, u64)> = res
            .holders
            .iter()
            .filter_map(|id| {
                let l = self.locks.get(id)?;
                Some((*id, l.session, l.state.held()?, l.since_line))
            })
            .collect();
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                if !a.2.is_compatible(b.2) {
                    self.violation(
                        Property::Compatibility,
                        format!(
                            "on {}: lock {} of {} holds {} (since audit line {}) while lock {} of {} holds {} (since audit line {})",
                            show(resource),
                            a.0,
                            a.1,
                            a.2,
                            a.3,
                            b.0,
                            b.1,
                            b.2,
                            b.3
                        ),
                    );
                }
            }
        }
    }

    /// R12 after an input: the head of the queue in charge is not grantable.
    fn check_heads(&mut self, resource: &[u8]) {
        let Some(res) = self.resources.get(resource) else {
            return;
        };
        let (head, want, conv) = if let Some(&h) = res.convert.front() {
            match self.locks.get(&h).map(|l| l.state) {
                Some(State::Converting { to, .. }) => (h, to, true),
                _ => return,
            }
        } else if let Some(&h) = res.wait.front() {
            match self.locks.get(&h).map(|l| l.state) {
                Some(State::Waiting { mode, .. }) => (h, mode, false),
                _ => return,
            }
        } else {
            return;
        };
        let blockers: Vec<(LockId, Mode)> = res
            .holders
            .iter()
            .filter(|id| **id != head)
            .filter_map(|id| Some((*id, self.locks.get(id)?.state.held()?)))
            .filter(|(_, m)| !m.is_compatible(want))
            .collect();
        if blockers.is_empty() {
            let holders: Vec<String> = res.holders.iter().map(|id| self.describe(*id)).collect();
            self.violation(
                Property::Fifo,
                format!(
                    "on {}: the head of the {} queue, lock {head} ({}), wants {want}, compatible with every holder {holders:?}, but was left queued (R12 grant pass)",
                    show(resource),
                    if conv { "convert" } else { "wait" },
                    self.describe(head)
                ),
            );
        }
    }

    fn describe(&self, lock: LockId) -> String {
        match self.locks.get(&lock) {
            Some(l) => format!("{} {:?} since line {}", l.session, l.state, l.since_line),
            None => "gone".into(),
        }
    }

    fn describe_all<'a>(&self, locks: impl IntoIterator<Item = &'a LockId>) -> Vec<String> {
        locks
            .into_iter()
            .map(|l| format!("{l}: {}", self.describe(*l)))
            .collect()
    }

    /// Ends the audit log and judges the workload's records against it.
    pub fn finish(mut self, records: &[ClientRecord]) -> CheckReport {
        self.check_overdue_leases();
        if self.cfg.expect_quiescent {
            let pending: Vec<(LockId, LockModel)> = self
                .locks
                .iter()
                .filter(|(_, l)| l.state.pending().is_some())
                .map(|(id, l)| (*id, l.clone()))
                .collect();
            for (id, l) in pending {
                self.violation(
                    Property::Completion,
                    format!(
                        "at the end of the run, request {:?} of lock {id} ({} on {}) never completed",
                        l.state,
                        l.session,
                        show(&l.resource)
                    ),
                );
            }
        }
        for rec in records {
            match rec {
                ClientRecord::Op(op) => self.client_op(op),
                ClientRecord::Lost(lost) => self.client_lost(lost),
                ClientRecord::Dropped {
                    session,
                    ttl_ms,
                    ts_us,
                } => self.client_dropped(*session, *ttl_ms, *ts_us),
            }
        }
        self.report
    }

    fn client_op(&mut self, op: &OpRecord) {
        *self.report.ops.entry(format!("{:?}", op.kind)).or_default() += 1;
        let outcome = match &op.outcome {
            OpOutcome::Granted { .. } => "Granted".to_owned(),
            OpOutcome::Error(e) => format!("Error({e})"),
            other => format!("{other:?}"),
        };
        *self.report.outcomes.entry(outcome).or_default() += 1;
        match &op.outcome {
            OpOutcome::Hung => {
                self.line = 0;
                self.now_us = op.start_us;
                self.violation(
                    Property::Completion,
                    format!(
                        "client {} ({}) {:?} {} on {} started at {}us got no answer within the hang bound",
                        op.client,
                        op.session,
                        op.kind,
                        op.mode,
                        show(&op.resource),
                        op.start_us
                    ),
                );
            }
            OpOutcome::Granted { lock, token } => {
                let known = self.history.get(lock).map(|h| h.tokens.contains(token));
                match known {
                    Some(true) => {}
                    Some(false) => {
                        self.line = 0;
                        self.now_us = op.end_us;
                        let tokens = self.history[lock].tokens.clone();
                        self.violation(
                            Property::Fencing,
                            format!(
                                "client {} saw lock {lock} granted with token {token}, but the server granted it tokens {tokens:?}",
                                op.client
                            ),
                        );
                    }
                    None => {
                        self.line = 0;
                        self.now_us = op.end_us;
                        self.violation(
                            Property::Completion,
                            format!(
                                "client {} saw lock {lock} granted ({:?} {} on {}) but the server's log has no such grant",
                                op.client,
                                op.kind,
                                op.mode,
                                show(&op.resource)
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn client_lost(&mut self, lost: &LostRecord) {
        if matches!(lost.reason, LostKind::Released | LostKind::Closed) {
            return;
        }
        let Some(h) = self.history.get(&lost.lock).cloned() else {
            return;
        };
        self.report.lost_checked += 1;
        if h.released_by_owner {
            // The owner's own unlock or Goodbye was applied first (for example a Goodbye the
            // client sends after its local lease lapsed, or an unlock whose answer was lost).
            return;
        }
        let Some(grants) = self.grants.get(&h.resource) else {
            return;
        };
        let start = grants.partition_point(|g| g.line <= h.last_grant_line);
        let first = grants[start..]
            .iter()
            // A conversion in flight when the lock was lost: the client may believe the
            // old mode, the server may have granted the new one; judge by the weaker.
            .find(|g| {
                g.session != h.session
                    && !g.mode.is_compatible(lost.mode)
                    && !g.mode.is_compatible(h.mode)
            })
            .copied();
        if let Some(g) = first
            && g.lifetime == h.lifetime
        {
            let lead = i64::try_from(g.ts_us).unwrap_or(i64::MAX)
                - i64::try_from(lost.ts_us).unwrap_or(i64::MAX);
            if self.report.min_lost_lead_us.is_none_or(|m| lead < m) {
                self.report.min_lost_lead_us = Some(lead);
                self.report.min_lost_lead_example = Some(format!(
                    "{lost:?}; lock granted at line {} to {}; next incompatible grant: lock {} of {} ({}) at line {}, {}us",
                    h.last_grant_line, h.session, g.lock, g.session, g.mode, g.line, g.ts_us
                ));
            }
        }
        if let Some(g) = first
            && g.ts_us < lost.ts_us
        {
            self.line = g.line;
            self.now_us = g.ts_us;
            let across_restart = g.lifetime > h.lifetime;
            let restart = if across_restart {
                " (the competing grant was made by a server restarted after the lost lock was granted: the restarted server did not wait out the old leases)"
            } else {
                ""
            };
            let detail = format!(
                "client {} held lock {} ({} {} on {}) and saw lost() ({:?}) at {}us, but the server had granted lock {} ({} {}) {} ms earlier, at {}us{restart}",
                lost.client,
                lost.lock,
                h.session,
                lost.mode,
                show(&h.resource),
                lost.reason,
                lost.ts_us,
                g.lock,
                g.session,
                g.mode,
                (lost.ts_us - g.ts_us) / 1000,
                g.ts_us
            );
            if across_restart && !self.cfg.restart_grace {
                self.report.restart_gaps += 1;
                if self.report.restart_gap_examples.len() < 5 {
                    self.report.restart_gap_examples.push(Violation {
                        property: Property::LostBeforeGrant,
                        line: self.line,
                        ts_us: self.now_us,
                        detail,
                    });
                }
            } else {
                self.violation(Property::LostBeforeGrant, detail);
            }
        }
    }

    fn client_dropped(&mut self, session: SessionId, ttl_ms: u64, ts_us: u64) {
        self.report.dropped_checked += 1;
        let due = ts_us + ttl_ms * 1000 + self.cfg.expiry_allowance_us;
        let end = self.ended.get(&session).map(|e| e.ts_us);
        let late = match end {
            Some(t) => t > due,
            // Still alive at the end of the log: late only if the log goes past the due time.
            None => self.now_us > due,
        };
        if late {
            self.line = 0;
            self.now_us = ts_us;
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {session} (lease {ttl_ms} ms) dropped at {ts_us}us was released {}",
                    match end {
                        Some(t) => format!("only {} ms later", (t - ts_us) / 1000),
                        None => "never".into(),
                    }
                ),
            );
        }
    }
}

/// Whether `ev` is the immediate answer to the input's own request.
fn is_answer(subject: &Subject, ev: &Event) -> bool {
    let (Some(s), Some(r)) = (subject.session(), subject.request()) else {
        return false;
    };
    if ev.session != s || ev.request != Some(r) {
        return false;
    }
    match subject {
        Subject::Lock { .. } | Subject::Convert { .. } => matches!(
            ev.kind,
            EventKind::Granted { .. }
                | EventKind::Queued
                | EventKind::NotQueued
                | EventKind::Deadlock
                | EventKind::Rejected { .. }
        ),
        Subject::Unlock(..) => matches!(ev.kind, EventKind::Unlocked | EventKind::Rejected { .. }),
        Subject::Cancel(..) => matches!(ev.kind, EventKind::Rejected { .. }),
        Subject::Simple(..) => matches!(
            ev.kind,
            EventKind::Renewed { .. } | EventKind::SessionClosed | EventKind::Rejected { .. }
        ),
        Subject::Open(_) | Subject::Tick => false,
    }
}

/// A resource name for messages.
fn show(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

/// Checks a whole history at once: the audit lines in order, then the workload's records.
pub fn check(
    cfg: CheckConfig,
    audit: impl IntoIterator<Item = AuditLine>,
    records: &[ClientRecord],
) -> CheckReport {
    let mut c = Checker::new(cfg);
    for line in audit {
        c.feed(line);
    }
    c.finish(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::LostRecord;

    const T0: u64 = 1_700_000_000_000_000;

    /// A synthetic history: inputs with the events a correct (or a broken) server would log.
    struct H {
        lines: Vec<AuditLine>,
        index: u64,
        ts: u64,
    }

    fn ev(
        session: SessionId,
        request: Option<u64>,
        lock: Option<LockId>,
        kind: EventKind,
    ) -> Event {
        Event {
            session,
            request: request.map(RequestId),
            lock,
            kind,
        }
    }

    fn granted(mode: Mode, token: u64) -> EventKind {
        EventKind::Granted {
            mode,
            token: FencingToken(token),
            value: None,
            value_valid: true,
        }
    }

    impl H {
        fn new() -> H {
            H {
                lines: vec![AuditLine::Start { ts_us: T0, pid: 1 }],
                index: 0,
                ts: T0,
            }
        }

        fn restart(&mut self, index_floor: u64) {
            self.index = index_floor;
            self.lines.push(AuditLine::Start {
                ts_us: self.ts,
                pid: 2,
            });
        }

        /// Applies `command` `dt_ms` after the previous input; `events` gets the input index.
        fn apply(
            &mut self,
            dt_ms: u64,
            command: Command,
            events: impl FnOnce(u64) -> Vec<Event>,
        ) -> u64 {
            self.index += 1;
            self.ts += dt_ms * 1000;
            let index = self.index;
            self.lines.push(AuditLine::Apply {
                ts_us: self.ts,
                input: Input {
                    index,
                    now_ms: 0,
                    command,
                },
                events: events(index),
            });
            index
        }

        fn open(&mut self, ttl_ms: u64) -> SessionId {
            let cmd = Command::OpenSession {
                name: "s".into(),
                ttl_ms,
                secret: 1,
            };
            SessionId(self.apply(0, cmd, |i| {
                vec![ev(
                    SessionId(i),
                    None,
                    None,
                    EventKind::SessionOpened { ttl_ms },
                )]
            }))
        }

        fn lock_cmd(s: SessionId, req: u64, res: &str, mode: Mode) -> Command {
            Command::Lock {
                session: s,
                request: RequestId(req),
                args: LockRequest {
                    resource: res.as_bytes().to_vec(),
                    mode,
                    flags: LockFlags::empty(),
                    value: None,
                    timeout_ms: None,
                },
            }
        }

        /// A lock granted on arrival with token = index.
        fn lock_granted(&mut self, s: SessionId, req: u64, res: &str, mode: Mode) -> LockId {
            LockId(self.apply(1, H::lock_cmd(s, req, res, mode), |i| {
                vec![ev(s, Some(req), Some(LockId(i)), granted(mode, i))]
            }))
        }

        fn lock_queued(&mut self, s: SessionId, req: u64, res: &str, mode: Mode) -> LockId {
            LockId(self.apply(1, H::lock_cmd(s, req, res, mode), |i| {
                vec![ev(s, Some(req), Some(LockId(i)), EventKind::Queued)]
            }))
        }

        fn unlock_cmd(s: SessionId, req: u64, lock: LockId) -> Command {
            Command::Unlock {
                session: s,
                request: RequestId(req),
                args: dlock_core::UnlockRequest {
                    lock,
                    flags: LockFlags::empty(),
                    value: None,
                },
            }
        }

        fn check(self, records: &[ClientRecord]) -> CheckReport {
            check(
                CheckConfig {
                    expect_quiescent: true,
                    ..CheckConfig::default()
                },
                self.lines,
                records,
            )
        }
    }

    fn only(report: &CheckReport, p: Property) {
        assert!(
            report.violations.get(&p).copied().unwrap_or(0) > 0,
            "expected a {p} violation: {report}"
        );
        let others: Vec<_> = report.violations.keys().filter(|k| **k != p).collect();
        assert!(others.is_empty(), "unexpected other violations: {report}");
    }

    /// A correct history: EX held, EX queued, unlock hands it over, then both end.
    fn clean() -> H {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        let lb = h.lock_queued(b, 1, "r", Mode::EX);
        h.apply(1, H::unlock_cmd(a, 2, la), |i| {
            vec![
                ev(a, Some(2), Some(la), EventKind::Unlocked),
                ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
            ]
        });
        h.apply(1, H::unlock_cmd(b, 2, lb), |_| {
            vec![ev(b, Some(2), Some(lb), EventKind::Unlocked)]
        });
        for s in [a, b] {
            h.apply(
                1,
                Command::CloseSession {
                    session: s,
                    request: RequestId(9),
                },
                |_| vec![ev(s, Some(9), None, EventKind::SessionClosed)],
            );
        }
        h
    }

    #[test]
    fn a_correct_history_passes() {
        let report = clean().check(&[]);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.grants, 2);
        assert_eq!(report.inputs, 8);
    }

    #[test]
    fn two_incompatible_grants_violate_compatibility() {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        h.lock_granted(a, 1, "r", Mode::PR);
        h.lock_granted(b, 1, "r", Mode::PW);
        let report = h.check(&[]);
        only(&report, Property::Compatibility);
        assert!(report.examples[0].detail.contains("PW"), "{report}");
    }

    #[test]
    fn compatible_grants_and_a_converting_holder_are_judged_by_held_modes() {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::PR);
        h.lock_granted(b, 1, "r", Mode::CR);
        // a converts PR -> EX: queued behind b's CR, still holding PR.
        h.apply(
            1,
            Command::Convert {
                session: a,
                request: RequestId(2),
                args: ConvertRequest {
                    lock: la,
                    mode: Mode::EX,
                    flags: LockFlags::empty(),
                    value: None,
                    timeout_ms: None,
                },
            },
            |_| vec![ev(a, Some(2), Some(la), EventKind::Queued)],
        );
        // A new CW (incompatible with the held PR) granted: a violation.
        h.lock_granted(b, 2, "r", Mode::CW);
        let report = h.check(&[]);
        assert!(
            report.violations.contains_key(&Property::Compatibility),
            "{report}"
        );
    }

    #[test]
    fn a_token_that_does_not_grow_violates_fencing_also_across_restarts() {
        let mut h = H::new();
        let a = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        h.apply(1, H::unlock_cmd(a, 2, la), |_| {
            vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
        });
        // A restarted server that forgot its floor starts its indices, and so its tokens, over.
        h.restart(0);
        let b = h.open(1000);
        h.lock_granted(b, 1, "r", Mode::EX);
        let report = h.check(&[]);
        assert!(
            report.violations.contains_key(&Property::Fencing),
            "{report}"
        );
        assert!(
            report
                .examples
                .iter()
                .any(|v| v.detail.contains("must grow")),
            "{report}"
        );
    }

    #[test]
    fn a_client_seeing_a_token_the_server_never_granted_is_a_fencing_violation() {
        let h = clean();
        let record = ClientRecord::Op(OpRecord {
            client: 0,
            session: SessionId(1),
            kind: crate::chaos::history::OpKind::Lock,
            resource: b"r".to_vec(),
            mode: Mode::EX,
            start_us: T0,
            end_us: T0,
            outcome: OpOutcome::Granted {
                lock: LockId(3),
                token: FencingToken(99),
            },
        });
        only(&h.check(&[record]), Property::Fencing);
    }

    #[test]
    fn a_double_completion_violates_completion() {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        let lb = h.lock_queued(b, 1, "r", Mode::EX);
        // b's request is cancelled, and then granted anyway.
        h.apply(
            1,
            Command::Cancel {
                session: b,
                request: RequestId(2),
                lock: lb,
            },
            |_| vec![ev(b, Some(1), Some(lb), EventKind::Cancelled)],
        );
        h.apply(1, H::unlock_cmd(a, 2, la), |i| {
            vec![
                ev(a, Some(2), Some(la), EventKind::Unlocked),
                ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
            ]
        });
        only(&h.check(&[]), Property::Completion);
    }

    #[test]
    fn a_request_without_an_answer_or_left_pending_violates_completion() {
        let mut h = H::new();
        let a = h.open(1000);
        h.apply(1, H::lock_cmd(a, 1, "r", Mode::EX), |_| Vec::new());
        only(&h.check(&[]), Property::Completion);

        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        h.lock_granted(a, 1, "r", Mode::EX);
        h.lock_queued(b, 1, "r", Mode::EX);
        let report = h.check(&[]);
        only(&report, Property::Completion);
        assert!(
            report.examples[0].detail.contains("never completed"),
            "{report}"
        );
    }

    #[test]
    fn a_hung_operation_violates_completion() {
        let h = clean();
        let record = ClientRecord::Op(OpRecord {
            client: 3,
            session: SessionId(1),
            kind: crate::chaos::history::OpKind::Lock,
            resource: b"r".to_vec(),
            mode: Mode::EX,
            start_us: T0,
            end_us: T0 + 1,
            outcome: OpOutcome::Hung,
        });
        only(&h.check(&[record]), Property::Completion);
    }

    #[test]
    fn queue_jumping_violates_fifo() {
        // R10: a PR arrives while an EX waits behind a PR holder; it must queue.
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let c = h.open(1000);
        h.lock_granted(a, 1, "r", Mode::PR);
        h.lock_queued(b, 1, "r", Mode::EX);
        h.lock_granted(c, 1, "r", Mode::PR);
        let report = h.check(&[]);
        assert_eq!(report.violations.get(&Property::Fifo), Some(&1), "{report}");
        assert!(report.examples[0].detail.contains("R10"), "{report}");

        // R12: a grant pass grants the second waiter before the first.
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let c = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        let _lb = h.lock_queued(b, 1, "r", Mode::EX);
        let lc = h.lock_queued(c, 1, "r", Mode::EX);
        h.apply(1, H::unlock_cmd(a, 2, la), |i| {
            vec![
                ev(a, Some(2), Some(la), EventKind::Unlocked),
                ev(c, Some(1), Some(lc), granted(Mode::EX, i)),
            ]
        });
        let report = h.check(&[]);
        assert!(report.violations.contains_key(&Property::Fifo), "{report}");
        assert!(
            report.examples.iter().any(|v| v.detail.contains("R12")),
            "{report}"
        );
    }

    #[test]
    fn a_grantable_head_left_waiting_violates_fifo() {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        h.lock_queued(b, 1, "r", Mode::PR);
        // The unlock runs no grant pass: b's PR stays queued on a free resource.
        h.apply(1, H::unlock_cmd(a, 2, la), |_| {
            vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
        });
        let report = check(CheckConfig::default(), h.lines, &[]);
        only(&report, Property::Fifo);
        assert!(
            report.examples[0].detail.contains("left queued"),
            "{report}"
        );
    }

    /// a (lease 1 s) holds EX on "r", last renewed 1 ms after T0; its session expires at
    /// T0 + `expire_ms` and the same grant pass gives b the lock; a's client saw lost() at
    /// T0 + `lost_ms`.
    fn lease_story(expire_ms: u64, lost_ms: u64) -> CheckReport {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(100_000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        let lb = h.lock_queued(b, 1, "r", Mode::EX);
        h.apply(expire_ms - 2, Command::Tick, |i| {
            vec![
                ev(a, None, None, EventKind::SessionExpired),
                ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
            ]
        });
        let lost = ClientRecord::Lost(LostRecord {
            client: 0,
            lock: la,
            resource: b"r".to_vec(),
            mode: Mode::EX,
            reason: LostKind::LocalLeaseLapsed,
            ts_us: T0 + lost_ms * 1000,
        });
        check(CheckConfig::default(), h.lines, &[lost])
    }

    #[test]
    fn lost_after_an_incompatible_grant_violates_property_5() {
        let ok = lease_story(1003, 950);
        assert!(ok.is_ok(), "{ok}");
        assert_eq!(ok.lost_checked, 1);
        let bad = lease_story(1003, 1100);
        only(&bad, Property::LostBeforeGrant);
        assert!(bad.examples[0].detail.contains("lost()"), "{bad}");
    }

    #[test]
    fn a_grant_by_a_restarted_server_before_lost_is_a_violation_or_a_counted_gap() {
        let story = || {
            let mut h = H::new();
            let a = h.open(1000);
            let la = h.lock_granted(a, 1, "r", Mode::EX);
            h.restart(1000);
            let b = h.open(1000);
            h.lock_granted(b, 1, "r", Mode::EX);
            let lost = ClientRecord::Lost(LostRecord {
                client: 0,
                lock: la,
                resource: b"r".to_vec(),
                mode: Mode::EX,
                reason: LostKind::SessionExpired,
                ts_us: h.ts + 20_000,
            });
            (h.lines, lost)
        };
        let (lines, lost) = story();
        let strict = check(CheckConfig::default(), lines, &[lost]);
        only(&strict, Property::LostBeforeGrant);
        assert!(strict.examples[0].detail.contains("restarted"), "{strict}");
        let (lines, lost) = story();
        let lenient = CheckConfig {
            restart_grace: false,
            ..CheckConfig::default()
        };
        let report = check(lenient, lines, &[lost]);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.restart_gaps, 1);
        assert_eq!(report.restart_gap_examples.len(), 1);
    }

    #[test]
    fn a_lost_report_after_the_owners_own_unlock_is_not_a_violation() {
        // The unlock was applied and handed the lock on; its answer never reached the client,
        // whose local lease then lapsed.
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        let lb = h.lock_queued(b, 1, "r", Mode::EX);
        h.apply(1, H::unlock_cmd(a, 2, la), |i| {
            vec![
                ev(a, Some(2), Some(la), EventKind::Unlocked),
                ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
            ]
        });
        let lost = ClientRecord::Lost(LostRecord {
            client: 0,
            lock: la,
            resource: b"r".to_vec(),
            mode: Mode::EX,
            reason: LostKind::LocalLeaseLapsed,
            ts_us: h.ts + 900_000,
        });
        let report = check(CheckConfig::default(), h.lines, &[lost]);
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn late_or_early_expiry_violates_property_6() {
        let ok = lease_story(1003, 950);
        assert!(ok.is_ok(), "{ok}");
        // Expired 2 s after a 1 s lease: too late.
        let late = lease_story(2003, 950);
        assert!(
            late.violations.contains_key(&Property::DeadRelease),
            "{late}"
        );
        // Expired after 0.5 s of a 1 s lease: too early.
        let early = lease_story(503, 400);
        only(&early, Property::DeadRelease);
        assert!(
            early.examples[0].detail.contains("before its lease"),
            "{early}"
        );
    }

    #[test]
    fn a_dropped_session_never_released_violates_property_6() {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(100_000);
        h.lock_granted(a, 1, "r", Mode::EX);
        // b keeps working for 3 s; a is never expired.
        for i in 0..30 {
            h.apply(
                100,
                Command::Renew {
                    session: b,
                    request: RequestId(10 + i),
                },
                |_| {
                    vec![ev(
                        b,
                        Some(10 + i),
                        None,
                        EventKind::Renewed { ttl_ms: 100_000 },
                    )]
                },
            );
        }
        let dropped = ClientRecord::Dropped {
            session: a,
            ttl_ms: 1000,
            ts_us: T0 + 3000,
        };
        let report = check(CheckConfig::default(), h.lines, &[dropped]);
        only(&report, Property::DeadRelease);
        assert_eq!(report.dropped_checked, 1);
    }

    #[test]
    fn a_dropped_session_ends_when_its_server_dies_not_when_it_restarts() {
        // Dropped at T0; the server's last line is 0.5 s later, then it is killed and comes
        // back only 1.5 s after the drop (more than lease + allowance).
        let mut h = H::new();
        let a = h.open(1000);
        h.apply(500, Command::Tick, |_| Vec::new());
        h.ts += 1000 * 1000;
        h.restart(100);
        let dropped = ClientRecord::Dropped {
            session: a,
            ttl_ms: 1000,
            ts_us: T0,
        };
        let report = check(CheckConfig::default(), h.lines, &[dropped]);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.dropped_checked, 1);
    }

    #[test]
    fn torn_lines_are_tolerated_only_where_a_crash_leaves_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lines = clean().lines;
        let text: Vec<String> = lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap())
            .collect();
        let torn = format!(
            "{}\n{{\"Apply\":{{\"ts_\n{}\n{}\n{{\"Ap",
            text[..4].join("\n"),
            serde_json::to_string(&AuditLine::Start { ts_us: T0, pid: 3 }).unwrap(),
            text[4..].join("\n")
        );
        std::fs::write(&path, torn).unwrap();
        let mut n = 0;
        let stats = crate::chaos::history::read_audit_log(&path, |_| n += 1).unwrap();
        assert_eq!(stats.torn, 2);
        assert_eq!(stats.starts, 2);
        assert_eq!(n, lines.len() + 1);

        let bad = format!(
            "{}\nnot json\n{}",
            text[..2].join("\n"),
            text[2..].join("\n")
        );
        std::fs::write(&path, bad).unwrap();
        assert!(crate::chaos::history::read_audit_log(&path, |_| {}).is_err());
    }

    #[test]
    fn a_rotated_log_is_one_history_and_a_gap_is_reported() {
        let lines = clean().lines;
        let report = check(CheckConfig::default(), lines.clone(), &[]);
        assert!(report.is_ok(), "{report}");
        // Rotation markers anywhere in the same lifetime change nothing.
        let mut rotated = lines.clone();
        rotated.insert(3, AuditLine::Rotated { ts_us: T0, pid: 1 });
        let report = check(CheckConfig::default(), rotated, &[]);
        assert!(report.is_ok(), "{report}");
        // Dropped lines make the history unsound, and the report says so.
        let mut gapped = lines;
        gapped.insert(
            3,
            AuditLine::Gap {
                ts_us: T0,
                dropped: 2,
            },
        );
        let report = check(CheckConfig::default(), gapped, &[]);
        assert_eq!(report.violations.get(&Property::History), Some(&1));
    }
}
