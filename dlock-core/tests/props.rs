//! Property tests: random command sequences over a few sessions, resources and modes,
//! checked against a naive reference model of the grant decisions (R9..R13, R15..R22,
//! R39..R47, R50, R65) and against invariants.
//!
//! One file of about 1,100 lines on purpose (the exactly-once properties at its end share
//! its generator and state views): the reference model and the properties judged
//! against it read as one argument, and split apart each half would be meaningless.

use dlock_core::{ConvertRequest, LockRequest, UnlockRequest};
use std::collections::{BTreeMap, BTreeSet};

use dlock_core::{
    Command, Config, Core, Event, EventKind, Input, LockFlags, LockId, LockState, Mode, RequestId,
    SessionId,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Operations and their translation into inputs.

#[derive(Clone, Debug)]
enum Op {
    Lock(u8, u8, Mode, bool, Option<u16>),
    Convert(u8, u8, Mode, bool, bool, Option<u16>),
    Unlock(u8, u8),
    Cancel(u8, u8),
    Close(u8),
    Reopen(u8),
    Renew(u8),
    Advance(u16),
}

const SLOTS: u8 = 3;
const NAMES: [&str; 3] = ["r0", "r1", "r2"];
const TTL: u64 = 1_000;

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn timeout() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![4 => Just(None), 1 => (0u16..600).prop_map(Some)]
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..SLOTS;
    prop_oneof![
        8 => (s.clone(), 0u8..3, mode(), prop::bool::weighted(0.15), timeout())
            .prop_map(|(s, r, m, nq, t)| Op::Lock(s, r, m, nq, t)),
        6 => (s.clone(), any::<u8>(), mode(), prop::bool::weighted(0.15),
              prop::bool::weighted(0.2), timeout())
            .prop_map(|(s, p, m, nq, qc, t)| Op::Convert(s, p, m, nq, qc, t)),
        5 => (s.clone(), any::<u8>()).prop_map(|(s, p)| Op::Unlock(s, p)),
        2 => (s.clone(), any::<u8>()).prop_map(|(s, p)| Op::Cancel(s, p)),
        1 => s.clone().prop_map(Op::Close),
        2 => s.clone().prop_map(Op::Reopen),
        2 => s.prop_map(Op::Renew),
        3 => (0u16..300).prop_map(Op::Advance),
    ]
}

/// Turns operations into inputs. Three sessions are opened first; `Reopen` opens a new
/// session for a slot. A lock pick mostly chooses among the locks the slot's current
/// session requested, sometimes among every lock id ever requested (other sessions' locks,
/// ended locks: NOT_FOUND paths).
fn inputs(ops: &[Op]) -> Vec<Input> {
    let mut out = Vec::new();
    let mut index = 0u64;
    let mut now = 0u64;
    let mut slots = Vec::new();
    let mut locks: Vec<LockId> = Vec::new();
    let mut mine: Vec<Vec<LockId>> = vec![Vec::new(); SLOTS as usize];
    let mut push = |out: &mut Vec<Input>, now: u64, command: Command| {
        index += 1;
        out.push(Input {
            index,
            now_ms: now,
            command,
        });
        index
    };
    let open = |name: String| Command::OpenSession {
        name,
        ttl_ms: TTL,
        secret: 1,
    };
    for i in 0..SLOTS {
        slots.push(SessionId(push(&mut out, now, open(format!("s{i}")))));
    }
    for (n, op) in ops.iter().enumerate() {
        let req = RequestId(n as u64 + 100);
        let pick = |s: u8, p: u8| -> LockId {
            let own = &mine[s as usize];
            if p < 224 && !own.is_empty() {
                // Mostly one of the latest few, which are the likeliest to be alive.
                own[own.len() - 1 - (p as usize % own.len().min(4))]
            } else if !locks.is_empty() {
                locks[p as usize % locks.len()]
            } else {
                LockId(999_999)
            }
        };
        let command = match *op {
            Op::Lock(s, r, mode, nq, t) => {
                let mut flags = LockFlags::empty();
                flags.set(LockFlags::NOQUEUE, nq);
                Command::Lock {
                    session: slots[s as usize],
                    request: req,
                    args: LockRequest {
                        resource: NAMES[r as usize].as_bytes().to_vec(),
                        mode,
                        flags,
                        value: None,
                        timeout_ms: t.map(u64::from),
                    },
                }
            }
            Op::Convert(s, p, mode, nq, qc, t) => {
                let mut flags = LockFlags::empty();
                flags.set(LockFlags::NOQUEUE, nq);
                flags.set(LockFlags::QUECVT, qc);
                Command::Convert {
                    session: slots[s as usize],
                    request: req,
                    args: ConvertRequest {
                        lock: pick(s, p),
                        mode,
                        flags,
                        value: None,
                        timeout_ms: t.map(u64::from),
                    },
                }
            }
            Op::Unlock(s, p) => Command::Unlock {
                session: slots[s as usize],
                request: req,
                args: UnlockRequest {
                    lock: pick(s, p),
                    flags: LockFlags::empty(),
                    value: None,
                },
            },
            Op::Cancel(s, p) => Command::Cancel {
                session: slots[s as usize],
                request: req,
                lock: pick(s, p),
            },
            Op::Close(s) => {
                let close = Command::CloseSession {
                    session: slots[s as usize],
                    request: req,
                };
                push(&mut out, now, close);
                let id = push(&mut out, now, open(format!("re{n}")));
                slots[s as usize] = SessionId(id);
                mine[s as usize].clear();
                continue;
            }
            Op::Renew(s) => Command::Renew {
                session: slots[s as usize],
                request: req,
            },
            Op::Reopen(s) => {
                let id = push(&mut out, now, open(format!("re{n}")));
                slots[s as usize] = SessionId(id);
                mine[s as usize].clear();
                continue;
            }
            Op::Advance(ms) => {
                now += u64::from(ms);
                Command::Tick
            }
        };
        let slot = match *op {
            Op::Lock(s, ..) => Some(s as usize),
            _ => None,
        };
        let id = push(&mut out, now, command);
        if let Some(s) = slot {
            locks.push(LockId(id));
            mine[s].push(LockId(id));
        }
    }
    out
}

/// A profile that makes conversions granted in place while others wait (the second
/// detection point of R40) frequent: two resources, modes NL/PR/EX, no time.
fn contended_op() -> impl Strategy<Value = Op> {
    let s = 0..SLOTS;
    let m = || prop::sample::select(vec![Mode::NL, Mode::CR, Mode::PR, Mode::EX]);
    prop_oneof![
        4 => (s.clone(), 0u8..2, m()).prop_map(|(s, r, m)| Op::Lock(s, r, m, false, None)),
        6 => (s.clone(), any::<u8>(), m()).prop_map(|(s, p, m)| Op::Convert(s, p, m, false, false, None)),
        1 => (s.clone(), any::<u8>()).prop_map(|(s, p)| Op::Unlock(s, p)),
        1 => (s, any::<u8>()).prop_map(|(s, p)| Op::Cancel(s, p)),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference model: plain vectors, full scans, R39 computed literally.

#[derive(Clone, Debug)]
struct MLock {
    session: u64,
    res: String,
    gr: Option<Mode>,
    rq: Option<Mode>,
    age: u64,
    deadline: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct MRes {
    grant: Vec<u64>,
    convert: Vec<u64>,
    wait: Vec<u64>,
}

#[derive(Default)]
struct Model {
    locks: BTreeMap<u64, MLock>,
    res: BTreeMap<String, MRes>,
    sessions: BTreeMap<u64, u64>, // id -> expires_at
    clock: u64,
    index: u64,
    dirty: BTreeSet<String>,
}

/// Where a request stands or would stand: the queue and its position.
#[derive(Clone, Copy, PartialEq)]
enum Q {
    Convert,
    Wait,
}

impl Model {
    fn live(&mut self, s: SessionId) -> bool {
        match self.sessions.get_mut(&s.0) {
            Some(e) => {
                *e = self.clock + TTL;
                true
            }
            None => false,
        }
    }

    fn holders(&self, r: &MRes) -> Vec<u64> {
        r.grant.iter().chain(&r.convert).copied().collect()
    }

    fn holders_allow(&self, name: &str, mode: Mode, exclude: Option<u64>) -> bool {
        let r = &self.res[name];
        self.holders(r)
            .into_iter()
            .filter(|&l| Some(l) != exclude)
            .all(|l| self.locks[&l].gr.unwrap().is_compatible(mode))
    }

    /// R39, literally: (a) incompatible other holders, (b) each request ahead.
    fn waits(&self, name: &str, x: Option<u64>, mode: Mode, q: Q, pos: usize) -> BTreeSet<u64> {
        let r = &self.res[name];
        let mut w = BTreeSet::new();
        for l in self.holders(r) {
            if Some(l) != x && !self.locks[&l].gr.unwrap().is_compatible(mode) {
                w.insert(self.locks[&l].session);
            }
        }
        let ahead: Vec<(u64, Q, usize)> = match q {
            Q::Convert => (0..pos).map(|i| (r.convert[i], Q::Convert, i)).collect(),
            Q::Wait => (0..r.convert.len())
                .map(|i| (r.convert[i], Q::Convert, i))
                .chain((0..pos).map(|i| (r.wait[i], Q::Wait, i)))
                .collect(),
        };
        for (y, yq, ypos) in ahead {
            let ym = self.locks[&y].rq.unwrap();
            if !ym.is_compatible(mode) {
                w.insert(self.locks[&y].session);
            } else {
                w.extend(self.waits(name, Some(y), ym, yq, ypos));
            }
        }
        w
    }

    fn waits_of(&self, x: u64) -> BTreeSet<u64> {
        let l = &self.locks[&x];
        let r = &self.res[&l.res];
        if let Some(p) = r.convert.iter().position(|&y| y == x) {
            self.waits(&l.res, Some(x), l.rq.unwrap(), Q::Convert, p)
        } else {
            let p = r.wait.iter().position(|&y| y == x).unwrap();
            self.waits(&l.res, Some(x), l.rq.unwrap(), Q::Wait, p)
        }
    }

    fn pending_of(&self, s: u64) -> Vec<u64> {
        self.locks
            .iter()
            .filter(|(_, l)| l.session == s && l.rq.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    fn reaches(&self, from: BTreeSet<u64>, target: u64) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<u64> = from.into_iter().collect();
        while let Some(s) = todo.pop() {
            if s == target {
                return true;
            }
            if seen.insert(s) {
                for x in self.pending_of(s) {
                    todo.extend(self.waits_of(x));
                }
            }
        }
        false
    }

    /// Whether the wait-for graph has a cycle anywhere (checked from every session).
    fn any_cycle(&self) -> bool {
        self.sessions.keys().any(|&s| {
            let w: BTreeSet<u64> = self
                .pending_of(s)
                .into_iter()
                .flat_map(|x| self.waits_of(x))
                .collect();
            self.reaches(w, s)
        })
    }

    /// The same depth-first search order the engine documents, over the literal relation.
    fn cycle_through(&self, owner: u64) -> Option<Vec<u64>> {
        let mut stack: Vec<(u64, Option<u64>, Option<u64>)> = Vec::new();
        for x in self.pending_of(owner) {
            stack.extend(self.waits_of(x).into_iter().map(|t| (t, None, Some(x))));
        }
        stack.reverse();
        let mut parent: BTreeMap<u64, (Option<u64>, Option<u64>)> = BTreeMap::new();
        while let Some((s, from, via)) = stack.pop() {
            if s == owner {
                let mut path: Vec<u64> = via.into_iter().collect();
                let mut cur = from;
                while let Some(p) = cur {
                    let (pp, pv) = parent[&p];
                    path.extend(pv);
                    cur = pp;
                }
                return Some(path);
            }
            if parent.contains_key(&s) {
                continue;
            }
            parent.insert(s, (from, via));
            let mut next = Vec::new();
            for x in self.pending_of(s) {
                next.extend(self.waits_of(x).into_iter().map(|t| (t, Some(s), Some(x))));
            }
            next.reverse();
            stack.extend(next);
        }
        None
    }

    fn remove(&mut self, id: u64) {
        let l = self.locks.remove(&id).unwrap();
        let r = self.res.get_mut(&l.res).unwrap();
        r.grant.retain(|&x| x != id);
        r.convert.retain(|&x| x != id);
        r.wait.retain(|&x| x != id);
        if r.grant.is_empty() && r.convert.is_empty() && r.wait.is_empty() {
            self.res.remove(&l.res);
            self.dirty.remove(&l.res);
        } else {
            self.dirty.insert(l.res);
        }
    }

    fn abort(&mut self, id: u64) {
        let l = self.locks.get_mut(&id).unwrap();
        if l.gr.is_none() {
            self.remove(id);
        } else {
            l.rq = None;
            l.deadline = None;
            let name = l.res.clone();
            let r = self.res.get_mut(&name).unwrap();
            r.convert.retain(|&x| x != id);
            r.grant.push(id);
            self.dirty.insert(name);
        }
    }

    fn grant(&mut self, id: u64) {
        let l = self.locks.get_mut(&id).unwrap();
        l.gr = l.rq.take();
        l.deadline = None;
    }

    fn pass(&mut self, name: &str) {
        loop {
            let Some(r) = self.res.get(name) else { return };
            if let Some(&h) = r.convert.first() {
                if !self.holders_allow(name, self.locks[&h].rq.unwrap(), Some(h)) {
                    return;
                }
                self.grant(h);
                let r = self.res.get_mut(name).unwrap();
                r.convert.remove(0);
                r.grant.push(h);
            } else if let Some(&h) = r.wait.first() {
                if !self.holders_allow(name, self.locks[&h].rq.unwrap(), None) {
                    return;
                }
                self.grant(h);
                let r = self.res.get_mut(name).unwrap();
                r.wait.remove(0);
                r.grant.push(h);
            } else {
                return;
            }
        }
    }

    fn passes(&mut self) {
        while let Some(n) = self.dirty.pop_first() {
            self.pass(&n);
        }
    }

    fn end_session(&mut self, s: u64) {
        self.sessions.remove(&s);
        let ids: Vec<u64> = self
            .locks
            .iter()
            .filter(|(_, l)| l.session == s)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }

    fn owned(&self, s: SessionId, l: LockId) -> bool {
        self.locks.get(&l.0).is_some_and(|x| x.session == s.0)
    }

    fn apply(&mut self, input: &Input) {
        if input.index <= self.index {
            return;
        }
        self.index = input.index;
        self.clock = self.clock.max(input.now_ms);
        match &input.command {
            Command::OpenSession { .. } => {
                self.sessions.insert(input.index, self.clock + TTL);
            }
            Command::Renew { session, .. } => {
                self.live(*session);
            }
            Command::RenewMany { renewals } => {
                for (session, _) in renewals {
                    self.live(*session);
                }
            }
            Command::CloseSession { session, .. } => {
                if self.live(*session) {
                    self.end_session(session.0);
                    self.passes();
                }
            }
            Command::Lock {
                session,
                args:
                    LockRequest {
                        resource,
                        mode,
                        flags,
                        timeout_ms,
                        ..
                    },
                ..
            } => {
                if !self.live(*session) || flags.contains(LockFlags::QUECVT) {
                    return;
                }
                let name = String::from_utf8(resource.clone()).unwrap();
                let exists = self.res.contains_key(&name);
                let grant = !exists || {
                    let r = &self.res[&name];
                    r.convert.is_empty()
                        && r.wait.is_empty()
                        && self.holders_allow(&name, *mode, None)
                };
                let mut lock = MLock {
                    session: session.0,
                    res: name.clone(),
                    gr: Some(*mode),
                    rq: None,
                    age: input.index,
                    deadline: None,
                };
                if grant {
                    self.res.entry(name).or_default().grant.push(input.index);
                    self.locks.insert(input.index, lock);
                    return;
                }
                if flags.contains(LockFlags::NOQUEUE) {
                    return;
                }
                // Queue it; refused if the graph now has a cycle (R40, R41).
                lock.gr = None;
                lock.rq = Some(*mode);
                lock.deadline = timeout_ms.map(|t| self.clock + t);
                self.res.get_mut(&name).unwrap().wait.push(input.index);
                self.locks.insert(input.index, lock);
                if self.any_cycle() {
                    self.res.get_mut(&name).unwrap().wait.pop();
                    self.locks.remove(&input.index);
                }
            }
            Command::Convert {
                session,
                args:
                    ConvertRequest {
                        lock,
                        mode,
                        flags,
                        timeout_ms,
                        ..
                    },
                ..
            } => {
                if !self.live(*session) || !self.owned(*session, *lock) {
                    return;
                }
                let l = &self.locks[&lock.0];
                let (Some(from), None) = (l.gr, l.rq) else {
                    return;
                };
                let to = *mode;
                let quecvt = flags.contains(LockFlags::QUECVT);
                if quecvt && !(from.is_up_conversion(to) || from.is_middle_conversion(to)) {
                    return;
                }
                let name = l.res.clone();
                let now = self.holders_allow(&name, to, Some(lock.0))
                    && (!quecvt || self.res[&name].convert.is_empty());
                if now {
                    self.locks.get_mut(&lock.0).unwrap().gr = Some(to);
                    self.dirty.insert(name);
                    self.passes();
                    if !from.is_down_conversion(to) && from != to {
                        while let Some(path) = self.cycle_through(session.0) {
                            let victim = *path.iter().max_by_key(|&&x| self.locks[&x].age).unwrap();
                            self.abort(victim);
                            self.passes();
                        }
                    }
                    return;
                }
                if flags.contains(LockFlags::NOQUEUE) {
                    return;
                }
                // Queue it; refused if the graph now has a cycle (R20, R40, R41).
                let clock = self.clock;
                let l = self.locks.get_mut(&lock.0).unwrap();
                let old_age = l.age;
                l.rq = Some(to);
                l.age = input.index;
                l.deadline = timeout_ms.map(|t| clock + t);
                let r = self.res.get_mut(&name).unwrap();
                r.grant.retain(|&x| x != lock.0);
                r.convert.push(lock.0);
                if self.any_cycle() {
                    let l = self.locks.get_mut(&lock.0).unwrap();
                    l.rq = None;
                    l.age = old_age;
                    l.deadline = None;
                    let r = self.res.get_mut(&name).unwrap();
                    r.convert.pop();
                    r.grant.push(lock.0);
                }
            }
            Command::Unlock {
                session,
                args: UnlockRequest { lock, .. },
                ..
            } => {
                if self.live(*session)
                    && self.owned(*session, *lock)
                    && self.locks[&lock.0].rq.is_none()
                {
                    self.remove(lock.0);
                    self.passes();
                }
            }
            Command::Cancel { session, lock, .. } => {
                if self.live(*session)
                    && self.owned(*session, *lock)
                    && self.locks[&lock.0].rq.is_some()
                {
                    self.abort(lock.0);
                    self.passes();
                }
            }
            // Not generated: the model keeps no limits.
            Command::Configure { .. } => {}
            Command::ExtendLeases { grace_ms } => {
                let floor = self.clock + grace_ms;
                for expires_at in self.sessions.values_mut() {
                    *expires_at = (*expires_at).max(floor);
                }
            }
            Command::Tick => {
                let mut due: Vec<(u64, u8, u64)> = Vec::new();
                due.extend(self.sessions.iter().map(|(&s, &e)| (e, 0, s)));
                due.extend(
                    self.locks
                        .iter()
                        .filter_map(|(&id, l)| l.deadline.map(|d| (d, 1, id))),
                );
                due.retain(|&(at, _, _)| at <= self.clock);
                due.sort();
                for (at, kind, id) in due {
                    if kind == 0 {
                        if self.sessions.get(&id) == Some(&at) {
                            self.end_session(id);
                        }
                    } else {
                        self.passes();
                        if self.locks.get(&id).is_some_and(|l| l.deadline == Some(at)) {
                            self.abort(id);
                        }
                    }
                }
                self.passes();
            }
        }
    }

    fn state(&self) -> State {
        self.res
            .iter()
            .map(|(name, r)| {
                let st = |id: &u64| {
                    let l = &self.locks[id];
                    let s = match (l.gr, l.rq) {
                        (Some(mode), None) => LockState::Granted { mode },
                        (Some(from), Some(to)) => LockState::Converting { from, to },
                        (None, Some(mode)) => LockState::Waiting { mode },
                        (None, None) => unreachable!(),
                    };
                    (*id, s)
                };
                let mut g: Vec<_> = r.grant.iter().map(st).collect();
                g.sort_by_key(|x| x.0);
                (
                    name.as_bytes().to_vec(),
                    (
                        g,
                        r.convert.iter().map(st).collect(),
                        r.wait.iter().map(st).collect(),
                    ),
                )
            })
            .collect()
    }
}

type Queues = (
    Vec<(u64, LockState)>,
    Vec<(u64, LockState)>,
    Vec<(u64, LockState)>,
);
type State = BTreeMap<Vec<u8>, Queues>;

fn engine_state(core: &Core) -> State {
    let q = |v: &[dlock_core::LockInfo]| v.iter().map(|l| (l.lock.0, l.state)).collect();
    core.resources(b"", usize::MAX)
        .into_iter()
        .map(|r| {
            (
                r.name.clone(),
                (q(&r.granted), q(&r.converting), q(&r.waiting)),
            )
        })
        .collect()
}

/// Everything observable: queues, value blocks, sessions with their locks and tokens.
fn full_state(core: &Core) -> String {
    let sessions: Vec<_> = (0..=core.last_index())
        .filter_map(|i| core.session(SessionId(i)))
        .collect();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        core.resources(b"", usize::MAX),
        sessions,
        core.waits_for(),
        core.next_deadline(),
        core.last_token(),
        (
            core.clock_ms(),
            core.lock_count(),
            core.resource_count(),
            core.session_count()
        ),
    ) + &format!("\n{:?}", core.census())
}

// ---------------------------------------------------------------------------------------
// Invariants checked over one run.

struct Checker {
    names: BTreeMap<LockId, Vec<u8>>,
    last_token: BTreeMap<Vec<u8>, u64>,
    outstanding: BTreeMap<LockId, (SessionId, RequestId)>,
}

impl Checker {
    fn step(&mut self, core: &Core, before: &State, input: &Input, events: &[Event]) {
        if let Command::Lock {
            args: LockRequest { resource, .. },
            ..
        } = &input.command
        {
            self.names.insert(LockId(input.index), resource.clone());
        }
        let is_request = matches!(
            input.command,
            Command::Lock { .. } | Command::Convert { .. }
        );
        let waiting_before: BTreeSet<u64> = before
            .values()
            .flat_map(|q| q.2.iter().map(|x| x.0))
            .collect();
        let mut wait_grants: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let reply = i == 0 && is_request;
            match &e.kind {
                EventKind::Queued => {
                    assert!(reply, "Queued is only a reply: {e:?}");
                    let prev = self
                        .outstanding
                        .insert(e.lock.unwrap(), (e.session, e.request.unwrap()));
                    assert!(prev.is_none());
                }
                EventKind::Granted { .. }
                | EventKind::Deadlock
                | EventKind::Cancelled
                | EventKind::TimedOut
                    if !reply =>
                {
                    let l = e.lock.expect("completion names its lock");
                    let (s, r) = self
                        .outstanding
                        .remove(&l)
                        .unwrap_or_else(|| panic!("completion of nothing: {e:?}"));
                    assert_eq!((s, Some(r)), (e.session, e.request), "{e:?}");
                    if matches!(e.kind, EventKind::Granted { .. }) && waiting_before.contains(&l.0)
                    {
                        wait_grants.push((l.0, self.names[&l].clone()));
                    }
                }
                EventKind::SessionClosed | EventKind::SessionExpired => {
                    self.outstanding.retain(|_, (s, _)| *s != e.session);
                }
                _ => {}
            }
            if let EventKind::Granted { token, .. } = e.kind {
                let name = self.names[&e.lock.unwrap()].clone();
                let last = self.last_token.entry(name).or_insert(0);
                assert!(token.0 > *last, "token {} after {}", token.0, last);
                assert!(token.0 >= input.index);
                *last = token.0;
            }
        }
        let after = engine_state(core);
        // Every accepted request completes exactly once: the outstanding ones are exactly
        // the pending locks.
        let pending: BTreeSet<u64> = after
            .values()
            .flat_map(|q| q.1.iter().chain(&q.2).map(|x| x.0))
            .collect();
        let open: BTreeSet<u64> = self.outstanding.keys().map(|l| l.0).collect();
        assert_eq!(pending, open);
        for (name, (g, c, w)) in &after {
            // Granted modes pairwise compatible (grant and convert queue holders, R9).
            let held: Vec<Mode> = g
                .iter()
                .chain(c)
                .filter_map(|(_, s)| s.granted_mode())
                .collect();
            for (i, a) in held.iter().enumerate() {
                for b in &held[i + 1..] {
                    assert!(a.is_compatible(*b), "{name:?}: {a} with {b}");
                }
            }
            // FIFO: a waiter granted in this step was ahead of every waiter still queued,
            // and never while a conversion is queued (R10, R12, R13).
            for (l, n) in &wait_grants {
                if n == name {
                    assert!(c.is_empty());
                    assert!(w.iter().all(|(x, _)| x > l), "{l} granted before {w:?}");
                }
            }
        }
    }
}

fn run(inputs: &[Input]) -> (Core, Vec<Vec<Event>>) {
    let mut core = Core::new(Config::default());
    let events = inputs.iter().map(|i| core.apply(i.clone())).collect();
    (core, events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let inputs = inputs(&ops);
        let mut core = Core::new(Config::default());
        let mut model = Model::default();
        let mut checker = Checker {
            names: BTreeMap::new(),
            last_token: BTreeMap::new(),
            outstanding: BTreeMap::new(),
        };
        for input in &inputs {
            let before = engine_state(&core);
            let events = core.apply(input.clone());
            model.apply(input);
            checker.step(&core, &before, input, &events);
            prop_assert_eq!(engine_state(&core), model.state(), "after {:?}", input);
            // The kept lock counts never drift from what the queues hold.
            prop_assert_eq!(core.census(), core.census_by_walking(), "after {:?}", input);
            prop_assert_eq!(core.session_count(), model.sessions.len());
        }
    }

    #[test]
    fn engine_agrees_with_the_reference_model_under_contention(
        ops in prop::collection::vec(contended_op(), 1..60),
    ) {
        let inputs = inputs(&ops);
        let mut core = Core::new(Config::default());
        let mut model = Model::default();
        for input in &inputs {
            core.apply(input.clone());
            model.apply(input);
            prop_assert_eq!(engine_state(&core), model.state(), "after {:?}", input);
            // The kept lock counts never drift from what the queues hold.
            prop_assert_eq!(core.census(), core.census_by_walking(), "after {:?}", input);
        }
    }

    #[test]
    fn snapshot_restore_and_replay_are_equivalent(
        ops in prop::collection::vec(op(), 1..50),
        cut in any::<prop::sample::Index>(),
    ) {
        let inputs = inputs(&ops);
        let k = cut.index(inputs.len() + 1);
        let (full, all_events) = run(&inputs);
        // Determinism: the same inputs give the same events and state.
        let (again, again_events) = run(&inputs);
        prop_assert_eq!(&all_events, &again_events);
        prop_assert_eq!(full_state(&full), full_state(&again));
        // restore(snapshot after k inputs) + the rest == everything.
        let (head, _) = run(&inputs[..k]);
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(head.snapshot(), cfg).unwrap();
        let (snap, _): (dlock_core::Snapshot, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        let mut restored = Core::restore(snap);
        let tail: Vec<Vec<Event>> = inputs[k..].iter().map(|i| restored.apply(i.clone())).collect();
        prop_assert_eq!(&tail[..], &all_events[k..]);
        prop_assert_eq!(full_state(&restored), full_state(&full));
        // Re-applying an input at or below the last index changes nothing.
        if let Some(last) = inputs.last() {
            prop_assert!(restored.apply(last.clone()).is_empty());
            prop_assert_eq!(full_state(&restored), full_state(&full));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Exactly once (HA rule 5): re-sent requests change nothing, and the switch off costs
// nothing in behaviour.

fn exactly_once() -> Config {
    Config {
        exactly_once: true,
        ..Config::default()
    }
}

/// Index and id spacing that leaves free indices between the inputs for retransmissions.
const SPREAD: u64 = 8;

/// `input` with its index and every session and lock id it names multiplied by [`SPREAD`]
/// (ids are indices), so that inputs can be slipped in between without renaming anything.
fn spread(input: &Input) -> Input {
    let s = |id: SessionId| SessionId(id.0 * SPREAD);
    let l = |id: LockId| LockId(id.0 * SPREAD);
    let command = match input.command.clone() {
        Command::Renew { session, request } => Command::Renew {
            session: s(session),
            request,
        },
        Command::CloseSession { session, request } => Command::CloseSession {
            session: s(session),
            request,
        },
        Command::Lock {
            session,
            request,
            args,
        } => Command::Lock {
            session: s(session),
            request,
            args,
        },
        Command::Convert {
            session,
            request,
            mut args,
        } => {
            args.lock = l(args.lock);
            Command::Convert {
                session: s(session),
                request,
                args,
            }
        }
        Command::Unlock {
            session,
            request,
            mut args,
        } => {
            args.lock = l(args.lock);
            Command::Unlock {
                session: s(session),
                request,
                args,
            }
        }
        Command::Cancel {
            session,
            request,
            lock,
        } => Command::Cancel {
            session: s(session),
            request,
            lock: l(lock),
        },
        other => other,
    };
    Input {
        index: input.index * SPREAD,
        now_ms: input.now_ms,
        command,
    }
}

/// The session and request id of a command a client may re-send.
fn resendable(command: &Command) -> Option<(SessionId, RequestId)> {
    match *command {
        Command::Lock {
            session, request, ..
        }
        | Command::Convert {
            session, request, ..
        }
        | Command::Unlock {
            session, request, ..
        }
        | Command::Cancel {
            session, request, ..
        } => Some((session, request)),
        _ => None,
    }
}

/// The spread inputs with retransmissions slipped in: after input `at`, a copy of an
/// earlier resendable command `which`, at the clock of the input before it. The flag says
/// which inputs are retransmissions.
fn with_resends(
    inputs: &[Input],
    picks: &[(prop::sample::Index, prop::sample::Index)],
) -> Vec<(Input, bool)> {
    let spread: Vec<Input> = inputs.iter().map(spread).collect();
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); spread.len()];
    for (at, which) in picks {
        let at = at.index(spread.len());
        let earlier: Vec<usize> = (0..=at)
            .filter(|&j| resendable(&spread[j].command).is_some())
            .collect();
        if !earlier.is_empty() && slots[at].len() < (SPREAD - 1) as usize {
            slots[at].push(earlier[which.index(earlier.len())]);
        }
    }
    let mut out = Vec::new();
    for (i, input) in spread.iter().enumerate() {
        out.push((input.clone(), false));
        for (k, &j) in slots[i].iter().enumerate() {
            let resend = Input {
                index: input.index + 1 + k as u64,
                now_ms: input.now_ms,
                command: spread[j].command.clone(),
            };
            out.push((resend, true));
        }
    }
    out
}

/// Final answers that are not grants, by the session and request id they answer, as a
/// re-sent request must get them again; a successful cancel under its own id too.
fn remember(
    answers: &mut BTreeMap<(SessionId, RequestId), Event>,
    input: &Input,
    events: &[Event],
) {
    for e in events {
        let last = matches!(
            e.kind,
            EventKind::NotQueued
                | EventKind::Deadlock
                | EventKind::Cancelled
                | EventKind::TimedOut
                | EventKind::Unlocked
                | EventKind::Rejected { .. }
        );
        if let (true, Some(r)) = (last, e.request) {
            answers.insert((e.session, r), e.clone());
        }
    }
    if let (
        Command::Cancel {
            session,
            request,
            lock,
        },
        Some(first),
    ) = (&input.command, events.first())
        && first.kind == EventKind::Cancelled
        && first.lock == Some(*lock)
    {
        let mut own = first.clone();
        own.request = Some(*request);
        answers.insert((*session, *request), own);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn exactly_once_on_and_off_agree_without_retransmissions(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let inputs = inputs(&ops);
        let mut off = Core::new(Config::default());
        let mut on = Core::new(exactly_once());
        for input in &inputs {
            let a = off.apply(input.clone());
            let b = on.apply(input.clone());
            prop_assert_eq!(a, b, "after {:?}", input);
        }
        prop_assert_eq!(full_state(&off), full_state(&on));
    }

    #[test]
    fn a_retransmission_changes_nothing_and_gets_the_answer_it_had(
        ops in prop::collection::vec(op(), 1..60),
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
    ) {
        let inputs = inputs(&ops);
        let mixed = with_resends(&inputs, &picks);
        let mut plain = Core::new(exactly_once());
        let mut core = Core::new(exactly_once());
        let mut answers = BTreeMap::new();
        let mut created = BTreeMap::new();
        for (input, resent) in &mixed {
            let events = core.apply(input.clone());
            if !*resent {
                // The same events as without any retransmission.
                prop_assert_eq!(&events, &plain.apply(input.clone()), "after {:?}", input);
                remember(&mut answers, input, &events);
                if let (Command::Lock { session, request, .. }, Some(first)) =
                    (&input.command, events.first())
                    && matches!(first.kind, EventKind::Granted { .. } | EventKind::Queued)
                {
                    created.insert((*session, *request), first.lock.unwrap());
                }
                continue;
            }
            let (session, request) = resendable(&input.command).unwrap();
            prop_assert_eq!(events.len(), 1, "{:?}: {:?}", input, events);
            prop_assert_eq!((events[0].session, events[0].request), (session, Some(request)));
            let Some(info) = core.session(session) else {
                let gone = EventKind::Rejected { reason: dlock_core::Reject::UnknownSession };
                prop_assert_eq!(&events[0].kind, &gone);
                continue;
            };
            prop_assert_eq!(core.last_request(session).map(|r| r >= request), Some(true));
            if let Some(first) = answers.get(&(session, request)) {
                prop_assert_eq!(&events[0], first, "re-sent {:?}", input);
            }
            // A re-sent Lock whose lock exists is answered from it: never a second entry.
            let lock = created.get(&(session, request)).copied();
            if let Some(l) = lock.and_then(|l| info.locks.into_iter().find(|x| x.lock == l)) {
                let want = match (l.state, l.token) {
                    (LockState::Waiting { .. }, _) => EventKind::Queued,
                    (state, Some(token)) => EventKind::Granted {
                        mode: state.granted_mode().unwrap(),
                        token,
                        value: None,
                        value_valid: true,
                    },
                    (state, None) => panic!("a held lock without a token: {state:?}"),
                };
                prop_assert_eq!(&events[0].kind, &want, "re-sent {:?}", input);
                prop_assert_eq!(events[0].lock, Some(l.lock));
            }
            prop_assert_eq!(full_state(&core), full_state(&plain), "after {:?}", input);
            prop_assert_eq!(core.census(), core.census_by_walking());
        }
        prop_assert_eq!(full_state(&core), full_state(&plain));
    }

    #[test]
    fn exactly_once_survives_snapshot_and_restore(
        ops in prop::collection::vec(op(), 1..50),
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let mixed: Vec<Input> = with_resends(&inputs(&ops), &picks)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let k = cut.index(mixed.len() + 1);
        let mut full = Core::new(exactly_once());
        let all: Vec<Vec<Event>> = mixed.iter().map(|i| full.apply(i.clone())).collect();
        let mut head = Core::new(exactly_once());
        for i in &mixed[..k] {
            head.apply(i.clone());
        }
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(head.snapshot(), cfg).unwrap();
        let (snap, _): (dlock_core::Snapshot, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        let mut restored = Core::restore(snap);
        let tail: Vec<Vec<Event>> = mixed[k..].iter().map(|i| restored.apply(i.clone())).collect();
        prop_assert_eq!(&tail[..], &all[k..]);
        prop_assert_eq!(full_state(&restored), full_state(&full));
    }
}
