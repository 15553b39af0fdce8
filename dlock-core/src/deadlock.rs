//! Deadlock detection (R38..R42).
//!
//! The wait-for relation is R39's, over sessions. A queued request X of mode `m` on
//! resource r waits for
//! - (a) the owner of every *other* lock on r (grant and convert queue) whose granted mode
//!   is incompatible with `m`, the owner's own other locks included;
//! - (b) for every request Y queued ahead of X (conversions before waiters, FIFO within
//!   each queue): Y's owner if Y's mode is incompatible with `m`, otherwise whatever Y waits
//!   for, recursively.
//!
//! [`Core::waits_of`] computes that set in one backward walk over X's predecessors and one
//! walk over the holders: it keeps the multiset of modes of the requests reached through
//! compatible predecessors (at most six distinct modes), adds the owner of a predecessor
//! incompatible with any of them, and reaches a predecessor compatible with any of them.
//! Cost: O(predecessors + holders) per request, with the holder walk skipped in O(1) when
//! no held mode conflicts. A yes/no search (a request about to be queued) also remembers
//! the walk states it has expanded in wait queues (see [`Search`]), so over a deep FIFO of
//! waiters it is linear in the queue, not quadratic.
//!
//! Detection runs when the graph gains edges (R40): when a request is about to be queued
//! (it then closes any new cycle and, being the youngest, is refused), and after a
//! conversion granted in place strengthened a mode while requests are queued (every new
//! edge then points at the converter, so a depth-first search from the converter's own
//! queued requests back to it finds every new cycle; the youngest request on the cycle
//! found is refused, and the search repeats until none is left).
//!
//! Bound: one search examines at most `Config::max_deadlock_search` lock entries
//! (predecessors and holders, counted across all the requests it expands); a queued
//! conversion runs two searches, and breaking the cycles a conversion granted in place
//! closed has one budget for all its searches, however many cycles it breaks. A search that
//! reaches the bound stops and reports no deadlock (the cycles left, after a conversion):
//! a documented false negative, never a false positive (R42).
//!
//! About 600 lines on purpose: the walk, the searches built on it and the breaking of cycles
//! share the search state and its one budget.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{Core, Effects};
use crate::lock::{LockRef, ResRef, Status};
use crate::{Event, EventKind, LockId, Mode, SessionId};

/// Where the predecessors of the request being examined start.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// A request about to join the tail of the wait queue.
    TailOfWait,
    /// A queued request: everything ahead of it.
    Before(LockRef),
    /// A conversion about to join the tail of the convert queue: every conversion queued,
    /// and no waiting request (they are behind it).
    TailOfConvert,
}

/// The request whose wait-for set is computed.
#[derive(Clone, Copy, Debug)]
struct Probe {
    res: ResRef,
    mode: Mode,
    /// Its own lock, left out of (a), if it has one.
    this: Option<LockRef>,
    start: Start,
}

/// A search ran out of budget.
struct Exhausted;

/// The state of one search: its remaining budget and, for a yes/no search, the walk states
/// already expanded. A detection search adds the entries it examined to the engine's count
/// when it ends ([`Core::deadlock_search_steps`]).
struct Search<'a> {
    budget: usize,
    /// The budget it started with.
    start: usize,
    /// Where a detection search counts its steps.
    steps: Option<&'a StepCount>,
    /// `(waiting request, mask of active modes)` pairs already walked past. While the walk
    /// is in the wait queue no converting lock has been reached yet, so the rest of the
    /// walk, holder check included, depends on nothing else: a second walk arriving at the
    /// same pair adds nothing new and stops. This keeps a search over a deep FIFO of
    /// incompatible waiters linear instead of quadratic. Only used when the question is
    /// whether a cycle exists, not which one is found first.
    seen: Option<BTreeSet<(LockRef, u8)>>,
}

impl Search<'_> {
    fn new(budget: usize, memo: bool) -> Search<'static> {
        Search {
            budget,
            start: budget,
            steps: None,
            seen: memo.then(BTreeSet::new),
        }
    }

    fn spend(&mut self) -> Result<(), Exhausted> {
        self.budget = self.budget.checked_sub(1).ok_or(Exhausted)?;
        Ok(())
    }
}

/// How a path search ended.
enum Found {
    /// The queued requests on the path found.
    Path(Vec<LockRef>),
    /// No path: the target is unreachable.
    Unreachable,
    /// The budget ran out first.
    Exhausted,
}

impl Drop for Search<'_> {
    fn drop(&mut self) {
        if let Some(steps) = self.steps {
            steps.add((self.start - self.budget) as u64);
        }
    }
}

/// The count of lock entries deadlock detection examined (see
/// [`Core::deadlock_search_steps`]). An atomic only so that the engine stays `Sync` while
/// its searches (which read the engine) count; the engine is driven by one thread.
#[derive(Debug, Default)]
pub(crate) struct StepCount(AtomicU64);

impl StepCount {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Clone for StepCount {
    fn clone(&self) -> StepCount {
        StepCount(AtomicU64::new(self.get()))
    }
}

/// An edge the search follows: towards `to`, from `from` (`None` for the arriving request),
/// through the queued request `via` (`None` for the arriving request).
type Step = (SessionId, Option<SessionId>, Option<LockRef>);

impl Core {
    /// A search of deadlock detection (R40): its steps are counted.
    fn detection_search(&self, budget: usize, memo: bool) -> Search<'_> {
        Search {
            budget,
            start: budget,
            steps: Some(&self.search_steps),
            seen: memo.then(BTreeSet::new),
        }
    }

    /// Appends to `out` the sessions `p` waits for (R39), unsorted and possibly repeated.
    fn waits_of(
        &self,
        p: Probe,
        search: &mut Search<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Exhausted> {
        let Some(res) = self.resources.get(p.res.0) else {
            return Ok(());
        };
        let mut count = [0u32; 6];
        count[p.mode.index()] = 1;
        // Converting locks among the reached requests: holders whose own requested mode
        // must not count against their own granted mode ("every other lock", R39 a).
        let mut reached: BTreeMap<LockRef, Mode> = BTreeMap::new();
        if let Some(t) = p.this {
            // A waiting request holds nothing, so only a conversion needs leaving out.
            if self
                .locks
                .get(t.0)
                .is_some_and(|l| !matches!(l.status, Status::Waiting { .. }))
            {
                reached.insert(t, p.mode);
            }
        }
        if let Some(q) = res.queues.as_deref() {
            let (mut cur, mut then_convert) = match p.start {
                Start::TailOfWait => (q.wait.tail.get(), true),
                Start::TailOfConvert => (q.convert.tail.get(), false),
                Start::Before(x) => match self.locks.get(x.0) {
                    Some(l) => (l.prev.get(), matches!(l.status, Status::Waiting { .. })),
                    None => (None, false),
                },
            };
            loop {
                let Some(c) = cur else {
                    if then_convert {
                        then_convert = false;
                        cur = q.convert.tail.get();
                        continue;
                    }
                    break;
                };
                let Some(y) = self.locks.get(c.0) else { break };
                search.spend()?;
                if let (true, Some(seen)) = (then_convert, search.seen.as_mut()) {
                    let mask = Mode::ALL
                        .into_iter()
                        .filter(|m| count[m.index()] > 0)
                        .fold(0u8, |acc, m| acc | 1 << m.index());
                    if !seen.insert((c, mask)) {
                        return Ok(());
                    }
                }
                cur = y.prev.get();
                let Some(ym) = y.status.requested_mode() else {
                    continue;
                };
                let active = Mode::ALL.into_iter().filter(|m| count[m.index()] > 0);
                let (mut blocks, mut passes) = (false, false);
                for m in active {
                    if m.is_compatible(ym) {
                        passes = true;
                    } else {
                        blocks = true;
                    }
                }
                if blocks {
                    out.push(y.session);
                }
                if passes {
                    count[ym.index()] += 1;
                    if matches!(y.status, Status::Converting { .. }) {
                        reached.insert(c, ym);
                    }
                }
            }
        }
        let conflict = Mode::ALL.into_iter().any(|h| {
            res.held[h.index()] > 0
                && Mode::ALL
                    .into_iter()
                    .any(|m| count[m.index()] > 0 && !h.is_compatible(m))
        });
        if !conflict {
            return Ok(());
        }
        let holders = res.granted.iter(&self.locks);
        let converting = res
            .queues
            .as_deref()
            .map(|q| q.convert.iter(&self.locks))
            .into_iter()
            .flatten();
        for (lr, l) in holders.chain(converting) {
            search.spend()?;
            let Some(g) = l.status.granted_mode() else {
                continue;
            };
            let own = reached.get(&lr).copied();
            let blocked = Mode::ALL.into_iter().any(|m| {
                let n = count[m.index()] - u32::from(own == Some(m));
                n > 0 && !g.is_compatible(m)
            });
            if blocked {
                out.push(l.session);
            }
        }
        Ok(())
    }

    /// The sorted, deduplicated sessions the queued request of lock `x` waits for.
    fn waits_of_queued(
        &self,
        x: LockRef,
        search: &mut Search<'_>,
    ) -> Result<Vec<SessionId>, Exhausted> {
        let mut out = Vec::new();
        if let Some(l) = self.locks.get(x.0) {
            if let Some(mode) = l.status.requested_mode() {
                let p = Probe {
                    res: l.res,
                    mode,
                    this: Some(x),
                    start: Start::Before(x),
                };
                self.waits_of(p, search, &mut out)?;
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Depth-first search from `roots` for `target`. Returns the queued requests on the path
    /// found (the `via` of each step), or `None` when `target` is unreachable or the budget
    /// ran out. Sessions are expanded in id order and their queued requests in lock id
    /// order, so the result is deterministic.
    fn find_path(
        &self,
        roots: Vec<Step>,
        is_target: impl Fn(SessionId) -> bool,
        search: &mut Search<'_>,
    ) -> Option<Vec<LockRef>> {
        match self.find_path_skipping(roots, is_target, search, &mut BTreeSet::new()) {
            Found::Path(path) => Some(path),
            Found::Unreachable | Found::Exhausted => None,
        }
    }

    /// [`find_path`](Self::find_path), never entering a session of `dead` (known not to reach
    /// the target); when the target is unreachable, every session the search entered is
    /// added to `dead`. Skipping sessions that cannot reach the target does not change the
    /// path found: the search would have entered them, found nothing and gone on.
    fn find_path_skipping(
        &self,
        roots: Vec<Step>,
        is_target: impl Fn(SessionId) -> bool,
        search: &mut Search<'_>,
        dead: &mut BTreeSet<SessionId>,
    ) -> Found {
        let mut parent: BTreeMap<SessionId, (Option<SessionId>, Option<LockRef>)> = BTreeMap::new();
        let mut stack: Vec<Step> = roots;
        stack.reverse();
        while let Some((s, from, via)) = stack.pop() {
            if is_target(s) {
                let mut path: Vec<LockRef> = via.into_iter().collect();
                let mut cur = from;
                while let Some(p) = cur {
                    let (pp, pv) = parent.get(&p).copied().unwrap_or((None, None));
                    path.extend(pv);
                    cur = pp;
                }
                return Found::Path(path);
            }
            if parent.contains_key(&s) || dead.contains(&s) {
                continue;
            }
            parent.insert(s, (from, via));
            let Some(session) = self.sessions.get(&s) else {
                continue;
            };
            let mut next = Vec::new();
            for id in &session.pending {
                let Some(&x) = self.lock_ids.get(id) else {
                    continue;
                };
                let Ok(w) = self.waits_of_queued(x, search) else {
                    return Found::Exhausted;
                };
                next.extend(w.into_iter().map(|t| (t, Some(s), Some(x))));
            }
            next.reverse();
            stack.extend(next);
        }
        dead.extend(parent.into_keys());
        Found::Unreachable
    }

    /// R39..R41: whether the conversion of lock `c` of `owner`, already linked (tentatively)
    /// at the tail of the convert queue, is part of a new cycle.
    ///
    /// A queued conversion is ahead of every waiting request (R39), so it changes their edges
    /// too: a waiter incompatible with it now waits for `owner`, a compatible one inherits
    /// what the conversion waits for. Every new cycle therefore passes through the
    /// conversion itself (it is entered from `owner` or from a compatible waiter) or through
    /// `owner` (entered from an incompatible waiter). Two searches cover both:
    /// 1. from what the conversion waits for, towards `owner` or the owner of any waiter on
    ///    the resource (either leads back into the conversion);
    /// 2. from what `owner`'s other queued requests wait for, towards `owner` or the owner
    ///    of a waiter incompatible with the conversion (which leads back to `owner`).
    pub(crate) fn queued_conversion_closes_cycle(&self, c: LockRef, owner: SessionId) -> bool {
        let Some(lock) = self.locks.get(c.0) else {
            return false;
        };
        let Some(to) = lock.status.requested_mode() else {
            return false;
        };
        let mut waiters = BTreeSet::new();
        let mut blocked = BTreeSet::new();
        if let Some(q) = self
            .resources
            .get(lock.res.0)
            .and_then(|r| r.queues.as_deref())
        {
            for (_, w) in q.wait.iter(&self.locks) {
                // An ended session's request, still on its way out, waits for nothing (R42).
                if self.is_ending(w.session) {
                    continue;
                }
                waiters.insert(w.session);
                if w.status
                    .requested_mode()
                    .is_some_and(|m| !m.is_compatible(to))
                {
                    blocked.insert(w.session);
                }
            }
        }
        let mut search = self.detection_search(self.config.max_deadlock_search, true);
        let Ok(w) = self.waits_of_queued(c, &mut search) else {
            return false;
        };
        let roots = w.into_iter().map(|t| (t, None, None)).collect();
        let into_conversion = |s: SessionId| s == owner || waiters.contains(&s);
        if self
            .find_path(roots, into_conversion, &mut search)
            .is_some()
        {
            return true;
        }
        let mut search = self.detection_search(self.config.max_deadlock_search, true);
        let mut roots = Vec::new();
        if let Some(session) = self.sessions.get(&owner) {
            for id in &session.pending {
                let Some(&z) = self.lock_ids.get(id).filter(|&&z| z != c) else {
                    continue;
                };
                let Ok(w) = self.waits_of_queued(z, &mut search) else {
                    return false;
                };
                roots.extend(w.into_iter().map(|t| (t, None, None)));
            }
        }
        let into_owner = |s: SessionId| s == owner || blocked.contains(&s);
        self.find_path(roots, into_owner, &mut search).is_some()
    }

    /// R39..R41: whether a new request of `owner` for `mode` on `rr`, about to join the tail
    /// of the wait queue, closes a cycle. Nothing is queued behind it, so it only adds its
    /// own edges: a cycle exists when what it waits for reaches `owner`.
    pub(crate) fn closes_cycle(&self, rr: ResRef, owner: SessionId, mode: Mode) -> bool {
        // Every edge points at the owner of some lock; a session with no lock yet has no
        // incoming edge, so no cycle can pass through it (the common case: a client waiting
        // for its first lock, however deep the queue).
        if self.sessions.get(&owner).is_none_or(|s| s.locks.len == 0) {
            return false;
        }
        let mut search = self.detection_search(self.config.max_deadlock_search, true);
        let p = Probe {
            res: rr,
            mode,
            this: None,
            start: Start::TailOfWait,
        };
        let mut w = Vec::new();
        if self.waits_of(p, &mut search, &mut w).is_err() {
            return false;
        }
        w.sort_unstable();
        w.dedup();
        let roots = w.into_iter().map(|t| (t, None, None)).collect();
        self.find_path(roots, |s| s == owner, &mut search).is_some()
    }

    /// R40, R41: after `owner` converted a lock in place to a stronger mode, refuses the
    /// youngest queued request of each cycle through `owner`, one cycle at a time, with a
    /// grant pass on the victim's resource after each.
    ///
    /// The cycle broken each time is the first one a fresh depth-first search from `owner`'s
    /// queued requests would find, but the work is not repeated: breaking a cycle (an abort,
    /// then grants) only removes wait-for edges, never adds one (a grant turns a queued
    /// request into a holder that the requests behind it already waited for, and nothing
    /// queued is ahead of a request being granted), so a session that could not reach
    /// `owner` still cannot, and `owner`'s requests whose searches found nothing need no
    /// second search. The whole breaking examines at most one deadlock search budget
    /// (`Config::max_deadlock_search` entries): one conversion closing ten thousand cycles
    /// costs about what one arrival may, not ten thousand searches (and past the bound the
    /// cycles left are not reported, as for any search at its bound).
    pub(crate) fn break_cycles_through(
        &mut self,
        owner: SessionId,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        let mut dead = BTreeSet::new();
        let mut budget = self.config.max_deadlock_search;
        // `owner`'s queued requests below this id found no cycle.
        let mut cursor = None;
        loop {
            let Some(session) = self.sessions.get(&owner) else {
                return;
            };
            let next = match cursor {
                None => session.pending.iter().next(),
                Some(c) => session.pending.range(c..).next(),
            };
            let Some(&id) = next else {
                return;
            };
            cursor = Some(id);
            let Some(&x) = self.lock_ids.get(&id) else {
                // Not in the table (cannot happen for a pending request): go on past it.
                let Some(after) = id.0.checked_add(1) else {
                    return;
                };
                cursor = Some(LockId(after));
                continue;
            };
            let found = {
                let mut search = self.detection_search(budget, false);
                let found = match self.waits_of_queued(x, &mut search) {
                    Ok(w) => {
                        let roots = w.into_iter().map(|t| (t, None, Some(x))).collect();
                        self.find_path_skipping(roots, |s| s == owner, &mut search, &mut dead)
                    }
                    Err(Exhausted) => Found::Exhausted,
                };
                budget = search.budget;
                found
            };
            let path = match found {
                Found::Path(path) => path,
                Found::Unreachable => {
                    let Some(after) = id.0.checked_add(1) else {
                        return;
                    };
                    cursor = Some(LockId(after));
                    continue;
                }
                Found::Exhausted => return,
            };
            let age = |r: &LockRef| {
                self.locks
                    .get(r.0)
                    .and_then(|l| l.status.pending())
                    .map_or(0, |p| p.age)
            };
            let Some(victim) = path.iter().copied().max_by_key(age) else {
                return;
            };
            self.abort_pending(victim, EventKind::Deadlock, fx, out);
            self.run_grant_passes(fx, out);
        }
    }

    /// Every current wait-for edge (R39), sorted; for [`Core::waits_for`](crate::Core::waits_for).
    pub(crate) fn all_edges(&self) -> Vec<(SessionId, SessionId)> {
        let mut edges = Vec::new();
        for (&s, session) in &self.sessions {
            for id in &session.pending {
                let Some(&x) = self.lock_ids.get(id) else {
                    continue;
                };
                let mut search = Search::new(usize::MAX, false);
                if let Ok(w) = self.waits_of_queued(x, &mut search) {
                    edges.extend(w.into_iter().map(|t| (s, t)));
                }
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
    }
}

/// The wait-for path that a new request of `owner` for `mode` on `rr` (at the tail of the
/// wait queue) would close back to `owner`: the queued requests on it, from the last step
/// back to the first; `None` if there is none. For [`Core::cycle_through`].
pub(crate) fn tail_probe_path(
    core: &Core,
    rr: ResRef,
    owner: SessionId,
    mode: Mode,
) -> Option<Vec<LockRef>> {
    let p = Probe {
        res: rr,
        mode,
        this: None,
        start: Start::TailOfWait,
    };
    probe_path(core, p, owner)
}

/// [`tail_probe_path`] for a conversion of `owner`'s granted lock `lr` to `mode`, as if it
/// joined the tail of the convert queue (where a refused conversion was). For
/// [`Core::conversion_cycle_through`].
pub(crate) fn convert_probe_path(
    core: &Core,
    lr: LockRef,
    owner: SessionId,
    mode: Mode,
) -> Option<Vec<LockRef>> {
    let p = Probe {
        res: core.locks.get(lr.0)?.res,
        mode,
        this: Some(lr),
        start: Start::TailOfConvert,
    };
    probe_path(core, p, owner)
}

/// The path from what `p` waits for back to `owner`, within one search budget.
fn probe_path(core: &Core, p: Probe, owner: SessionId) -> Option<Vec<LockRef>> {
    let mut search = Search::new(core.config.max_deadlock_search, false);
    let mut w = Vec::new();
    core.waits_of(p, &mut search, &mut w).ok()?;
    w.sort_unstable();
    w.dedup();
    w.retain(|&s| s != owner);
    let roots = w.into_iter().map(|t| (t, None, None)).collect();
    core.find_path(roots, |s| s == owner, &mut search)
}

impl Core {
    /// The first wait-for edges (R39) in waiter order, at most `max_edges` distinct ones, and
    /// whether more may exist. The walks of all queued requests together take at most
    /// `max_steps` steps (each also at most the deadlock search budget), so the work is
    /// bounded whatever the table holds: ten thousand requests queued on one resource would
    /// otherwise take a walk each past everything queued ahead of them.
    pub(crate) fn edges_bounded(
        &self,
        max_edges: usize,
        max_steps: usize,
    ) -> (Vec<(SessionId, SessionId)>, bool) {
        let mut edges: BTreeSet<(SessionId, SessionId)> = BTreeSet::new();
        let mut steps = max_steps;
        for (&s, session) in &self.sessions {
            for id in &session.pending {
                let Some(&x) = self.lock_ids.get(id) else {
                    continue;
                };
                let budget = self.config.max_deadlock_search.min(steps);
                let mut search = Search::new(budget, false);
                let walked = self.waits_of_queued(x, &mut search);
                steps -= budget - search.budget;
                match walked {
                    Ok(w) => edges.extend(w.into_iter().map(|t| (s, t))),
                    // Out of steps for the whole answer: what was found so far, cut.
                    Err(Exhausted) if steps == 0 => return (edges.into_iter().collect(), true),
                    Err(Exhausted) => {}
                }
                if edges.len() > max_edges {
                    let mut edges: Vec<_> = edges.into_iter().collect();
                    edges.truncate(max_edges);
                    return (edges, true);
                }
            }
        }
        (edges.into_iter().collect(), false)
    }
}
