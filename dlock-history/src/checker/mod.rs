//! The streaming checker: it replays audit lines in order into its [model](crate::model) and
//! judges every input as it goes.
//!
//! The replay is split by what it judges:
//! - this file: the input loop, server lifetimes, leases (property 6) and the number of
//!   immediate answers (property 3);
//! - [`events`]: each event's effect on the model (queues, completions, session ends);
//! - [`grants`]: grants, their order (property 4 on arrival and in grant passes) and their
//!   tokens (property 2);
//! - [`invariants`]: what must hold after every input (property 1, and property 4's "no
//!   grantable head left waiting");
//! - [`records`]: the client records, judged against the replayed log (properties 2, 3, 5
//!   and 6 from the clients' side).

mod events;
mod grants;
mod invariants;
mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use dlock_core::{Event, EventKind, FencingToken, Input, LockId, Reject, SessionId};

use crate::line::AuditLine;
use crate::model::{GrantRec, LockHistory, LockModel, Pos, ResModel, SessionModel};
use crate::property::{CheckConfig, Location, Property, Violation};
use crate::records::ClientRecord;
use crate::report::CheckReport;
use crate::subject::Subject;
use crate::text;

/// The streaming checker: feed it every audit line in order ([`feed`](Self::feed), or
/// [`begin_file`](Self::begin_file) and [`feed_line`](Self::feed_line) to have
/// counterexamples cite `FILE:LINE`), then [`finish`](Self::finish) with the client records
/// (none when only the server's log is judged).
pub struct Checker {
    cfg: CheckConfig,
    /// The line being replayed.
    pos: Pos,
    /// Names of the files fed, indexed by [`Pos::file`]; index 0 is "no file named".
    files: Vec<Option<String>>,
    lifetime: u64,
    /// The current lifetime began before the history does (its first line is not a
    /// `Start`): ids below this input index may name sessions and locks the model never saw.
    unseen_below: Option<u64>,
    now_us: u64,
    /// The engine's clock: the largest `now_ms` applied in this lifetime.
    clock_ms: u64,
    /// Leases are judged in engine time (`now_ms`), not wall time: the history is a
    /// cluster's (it has [`AuditLine::Replica`] lines), whose time is the leader's stamp and
    /// stands still while there is no leader.
    engine_time: bool,
    last_index: u64,
    /// The current lifetime is a single server's, seen from its `Start` line: its inputs
    /// take consecutive indices, so an index skipped is a line missing from the log. (A
    /// cluster member's inputs skip the indices of log entries that carry no command, and a
    /// history that begins mid-lifetime may be a member's whose `Replica` line is in a file
    /// rotated away.)
    consecutive: bool,
    /// The index of the previous input when the next one must follow it (no `Gap` since).
    prev_index: Option<u64>,
    sessions: BTreeMap<SessionId, SessionModel>,
    locks: HashMap<LockId, LockModel>,
    resources: BTreeMap<Vec<u8>, ResModel>,
    /// Every resource a lock request named.
    seen: HashSet<Vec<u8>>,
    /// The last token granted on each resource, and where.
    tokens: HashMap<Vec<u8>, (FencingToken, Pos)>,
    grants: HashMap<Vec<u8>, Vec<GrantRec>>,
    history: HashMap<LockId, LockHistory>,
    /// When each session ended (expired, closed, or its server died).
    ended: HashMap<SessionId, u64>,
    report: CheckReport,
}

impl Checker {
    /// A checker with `cfg`.
    pub fn new(cfg: CheckConfig) -> Checker {
        Checker {
            cfg,
            pos: Pos::default(),
            files: vec![None],
            lifetime: 0,
            unseen_below: None,
            now_us: 0,
            clock_ms: 0,
            engine_time: false,
            last_index: 0,
            consecutive: false,
            prev_index: None,
            sessions: BTreeMap::new(),
            locks: HashMap::new(),
            resources: BTreeMap::new(),
            seen: HashSet::new(),
            tokens: HashMap::new(),
            grants: HashMap::new(),
            history: HashMap::new(),
            ended: HashMap::new(),
            report: CheckReport::default(),
        }
    }

    /// The lines fed from now on come from the file `name` (it continues the history of the
    /// previous one): counterexamples cite them as `name:LINE`.
    pub fn begin_file(&mut self, name: impl Into<String>) {
        self.files.push(Some(name.into()));
        self.pos.file = self.files.len() - 1;
        self.pos.line = 0;
    }

    /// Feeds the next audit line, numbered one after the previous line fed.
    pub fn feed(&mut self, line: AuditLine) {
        self.feed_line(self.pos.line + 1, line);
    }

    /// Feeds the next audit line, which is line `number` (from 1) of the current file.
    pub fn feed_line(&mut self, number: u64, line: AuditLine) {
        self.pos.seq += 1;
        self.pos.line = number;
        match line {
            AuditLine::Start { ts_us, .. } => self.start(ts_us),
            // The same server lifetime goes on in the next file.
            AuditLine::Rotated { .. } => {}
            AuditLine::Gap { ts_us, dropped } => {
                // The hole is reported here: the next index may skip it.
                self.prev_index = None;
                self.violation_at(
                    Property::History,
                    ts_us,
                    format!(
                        "the server could not write {dropped} audit lines here; nothing after them can be judged soundly"
                    ),
                );
            }
            AuditLine::Apply {
                ts_us,
                input,
                events,
            } => self.apply(ts_us, &input, &events),
            AuditLine::Replica { ts_us, applied, .. } => self.replica(ts_us, applied),
            AuditLine::Snapshot {
                ts_us, after, upto, ..
            } => self.violation_at(
                Property::History,
                ts_us,
                format!(
                    "inputs {} to {upto} reached this cluster member in a snapshot and are not in its log; check the merge of every member's log",
                    after + 1
                ),
            ),
        }
    }

    /// A cluster member opened its log: the replicated history goes on (sessions and locks
    /// survive a node's restart), and leases are judged in engine time from now on.
    fn replica(&mut self, ts_us: u64, applied: u64) {
        self.engine_time = true;
        self.consecutive = false;
        self.prev_index = None;
        self.now_us = self.now_us.max(ts_us);
        if self.lifetime == 0 {
            self.lifetime = 1;
            self.report.lifetimes += 1;
            if applied > 0 {
                // The node's state already covered inputs this log does not hold.
                self.report.partial_start = true;
                self.unseen_below = Some(applied + 1);
            }
        }
    }

    /// Whether `id` (a session's or lock's id, the index of the input that created it) may
    /// name something created before the history begins: the model cannot judge it.
    fn unseen(&self, id: u64) -> bool {
        self.unseen_below.is_some_and(|first| id < first)
    }

    /// Where `pos` is, for a counterexample.
    fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.files.get(pos.file).cloned().flatten(),
            line: pos.line,
        }
    }

    /// A violation detected at the line being replayed.
    fn violation(&mut self, property: Property, detail: String) {
        self.violation_citing(property, detail, &[]);
    }

    /// A violation detected at the line being replayed, which was written at `ts_us` (a line
    /// that, unlike an input, does not move the checker's clock).
    fn violation_at(&mut self, property: Property, ts_us: u64, detail: String) {
        let v = self.make_violation(property, Some(self.pos), ts_us, detail, &[]);
        self.push_violation(v);
    }

    /// A violation detected at the line being replayed that rests on the earlier lines
    /// `cites`.
    fn violation_citing(&mut self, property: Property, detail: String, cites: &[Pos]) {
        let v = self.make_violation(property, Some(self.pos), self.now_us, detail, cites);
        self.push_violation(v);
    }

    fn make_violation(
        &self,
        property: Property,
        at: Option<Pos>,
        ts_us: u64,
        detail: String,
        cites: &[Pos],
    ) -> Violation {
        Violation {
            property,
            at: at.map(|p| self.location(p)),
            ts_us,
            detail,
            cites: cites.iter().map(|p| self.location(*p)).collect(),
        }
    }

    fn push_violation(&mut self, v: Violation) {
        *self.report.violations.entry(v.property).or_default() += 1;
        if self.report.examples.len() < self.cfg.max_examples {
            self.report.examples.push(v);
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
        self.unseen_below = None;
        // A new server numbers its inputs on from its persisted floor, one by one.
        self.consecutive = true;
        self.prev_index = None;
        // A new server's engine starts its clock anew.
        self.clock_ms = 0;
        for (s, _) in std::mem::take(&mut self.sessions) {
            self.ended.insert(s, died_by);
        }
        self.locks.clear();
        self.resources.clear();
    }

    fn apply(&mut self, ts_us: u64, input: &Input, events: &[Event]) {
        if self.lifetime == 0 {
            // A history without a start line (its first files rotated away): a lifetime
            // that began earlier, with sessions and locks the model does not know.
            self.lifetime = 1;
            self.report.lifetimes += 1;
            self.report.partial_start = true;
            self.unseen_below = Some(input.index);
        }
        self.now_us = ts_us;
        self.clock_ms = self.clock_ms.max(input.now_ms);
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
        self.check_consecutive(input.index);
        self.check_overdue_leases();
        let subject = Subject::of(input);
        if self.engine_time && self.retransmission(input) {
            // Answered again from what the engine remembers; nothing changes, not even the
            // lease, so nothing is judged.
            self.report.retransmissions += 1;
            return;
        }
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
            m.expires_ms = self.clock_ms.saturating_add(m.ttl_ms);
            m.late_reported = false;
        }
        if let dlock_core::Command::RenewMany { renewals } = &input.command {
            for (s, _) in renewals {
                let gone = events.iter().any(|e| {
                    e.session == *s
                        && matches!(
                            e.kind,
                            EventKind::Rejected {
                                reason: Reject::UnknownSession
                            }
                        )
                });
                if let Some(m) = self.sessions.get_mut(s)
                    && !gone
                {
                    m.last_touch_us = ts_us;
                    m.expires_ms = self.clock_ms.saturating_add(m.ttl_ms);
                    m.late_reported = false;
                }
            }
        }
        if let dlock_core::Command::ExtendLeases { grace_ms } = input.command {
            self.extend_leases(ts_us, grace_ms);
        }
        let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut granted_on: BTreeSet<Vec<u8>> = BTreeSet::new();
        if let Subject::Lock { resource, .. } = &subject {
            if !self.seen.contains(resource) {
                self.seen.insert(resource.clone());
            }
            touched.insert(resource.clone());
        }
        let mut answers = 0usize;
        for ev in events {
            if subject.is_answered_by(ev) {
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
        if self.engine_time && matches!(input.command, dlock_core::Command::Tick) {
            self.check_tick_expired_all();
        }
    }

    /// A single server's inputs take consecutive indices: one skipped without a `Gap` line
    /// is a line lost or removed, a hole as unsound as a gap.
    fn check_consecutive(&mut self, index: u64) {
        if !self.consecutive {
            return;
        }
        if let Some(prev) = self.prev_index.replace(index)
            && index > prev.saturating_add(1)
        {
            let missing = if index - prev == 2 {
                format!("input {} is", prev + 1)
            } else {
                format!("inputs {} to {} are", prev + 1, index - 1)
            };
            self.violation(
                Property::History,
                format!(
                    "{missing} missing: input {index} follows input {prev} with no Gap line (a line lost or removed); nothing after them can be judged soundly"
                ),
            );
        }
    }

    /// Whether `input` re-sends a request the engine already applied (a cluster's engine
    /// keeps exactly once across fail-over: `Lock`, `Convert`, `Unlock` and `Cancel` at or
    /// below the highest such request id applied for their session are answered again and
    /// change nothing). Notes their request ids, as the engine does; renewals never count
    /// (a server applies them on their own path, out of order with the rest). A single
    /// server never passes a retransmission to its engine.
    fn retransmission(&mut self, input: &Input) -> bool {
        use dlock_core::Command as C;
        let (session, request) = match &input.command {
            C::Lock {
                session, request, ..
            }
            | C::Convert {
                session, request, ..
            }
            | C::Unlock {
                session, request, ..
            }
            | C::Cancel {
                session, request, ..
            } => (*session, *request),
            _ => return false,
        };
        if request == dlock_core::RequestId::DRIVER {
            return false;
        }
        let Some(m) = self.sessions.get_mut(&session) else {
            return false;
        };
        if request.0 > m.max_request {
            m.max_request = request.0;
            false
        } else {
            true
        }
    }

    /// A new leader's grace (R2 of the cluster design): every lease ends no earlier than
    /// `clock + grace_ms`, in engine time and (for the wall-clock judgement) `ts_us + grace`.
    fn extend_leases(&mut self, ts_us: u64, grace_ms: u64) {
        let floor_ms = self.clock_ms.saturating_add(grace_ms);
        let floor_us = ts_us.saturating_add(grace_ms.saturating_mul(1000));
        for m in self.sessions.values_mut() {
            m.expires_ms = m.expires_ms.max(floor_ms);
            let wall_end = m
                .last_touch_us
                .saturating_add(m.ttl_ms.saturating_mul(1000));
            if wall_end < floor_us {
                m.last_touch_us = floor_us - m.ttl_ms.saturating_mul(1000).min(floor_us);
            }
            m.late_reported = false;
        }
    }

    /// Property 6 in engine time: a `Tick` stamped at the engine's clock expires every
    /// session whose lease ended by then (the engine expires on ticks only, so no other
    /// input is judged; how late the tick came is judged by each expiry).
    fn check_tick_expired_all(&mut self) {
        let now = self.clock_ms;
        let mut left = Vec::new();
        for (s, m) in self.sessions.iter_mut() {
            if m.expires_ms <= now && !m.late_reported {
                m.late_reported = true;
                left.push((*s, m.ttl_ms, m.expires_ms));
            }
        }
        for (s, ttl_ms, expires_ms) in left {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {s} (lease {ttl_ms} ms) outlived a tick at engine time {now} ms: its lease ended at {expires_ms} ms"
                ),
            );
        }
    }

    /// Property 6 (late side): a live session whose lease ended more than the allowance ago.
    /// In engine time this is judged at the end of the history only (and at every tick, see
    /// [`check_tick_expired_all`](Self::check_tick_expired_all)): the engine expires on
    /// ticks, and a leader's clock may jump after a pause with no tick yet proposed.
    fn check_overdue_leases(&mut self) {
        if self.engine_time {
            return;
        }
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

    /// Property 6 (late side) in engine time, at the end of the history: no live session's
    /// lease ended more than the allowance before the engine's last clock.
    fn check_overdue_leases_engine(&mut self) {
        if !self.engine_time {
            return;
        }
        let now = self.clock_ms;
        let allowance_ms = self.cfg.expiry_allowance_us / 1000;
        let late: Vec<(SessionId, u64, u64)> = self
            .sessions
            .iter()
            .filter(|(_, m)| !m.late_reported && now > m.expires_ms.saturating_add(allowance_ms))
            .map(|(s, m)| (*s, m.ttl_ms, m.expires_ms))
            .collect();
        for (s, ttl_ms, expires_ms) in late {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {s} (lease {ttl_ms} ms) is still alive at engine time {now} ms, {} ms after its lease ended",
                    now - expires_ms
                ),
            );
        }
    }

    /// Property 3: every request gets exactly one immediate answer.
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
                        format!(
                            "opening session {s} got {n} answers: {}",
                            text::events(events)
                        ),
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
            let who = match (subject.session(), subject.request()) {
                (Some(s), Some(r)) => format!("request {} of session {}", r.0, s.0),
                _ => "the input".to_owned(),
            };
            self.violation(
                Property::Completion,
                format!(
                    "{who} ({subject}) got {expected} immediate answers (expected exactly 1): {}",
                    text::events(events)
                ),
            );
        }
    }

    /// Ends the audit log and judges the client records against it (pass none to judge
    /// the server's log alone).
    pub fn finish(mut self, records: &[ClientRecord]) -> CheckReport {
        self.check_overdue_leases();
        self.check_overdue_leases_engine();
        if self.cfg.expect_quiescent {
            self.check_nothing_pending();
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
        self.report.resources = self.seen.len() as u64;
        self.report
    }
}

/// Checks a whole history at once: the audit lines in order, then the client records.
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
