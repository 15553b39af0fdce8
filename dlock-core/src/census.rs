//! Read-only summaries of the whole table for monitoring (R66): a census of locks by state
//! and mode, pages of sessions, and the wait-for path that made a request a deadlock victim.
//!
//! Each is a read of the current state, like the queries in `inspect`. The census reads
//! counts the engine keeps as locks change (a few additions per transition), so a scrape
//! costs O(1) however large the table; pages of sessions walk only their page.

use serde::{Deserialize, Serialize};

use crate::lock::{LockRef, Status};

use crate::deadlock::{convert_probe_path, tail_probe_path};
use crate::engine::Core;
use crate::{LockId, Mode, SessionId, WaitsFor};

/// How many locks are in each state and mode, and how many sessions and resources exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// Live sessions.
    pub sessions: u64,
    /// Resources (a resource lives while it has a lock).
    pub resources: u64,
    /// Granted locks by granted mode, indexed by [`Mode::index`].
    pub granted: [u64; 6],
    /// Converting locks by requested mode.
    pub converting: [u64; 6],
    /// Waiting locks by requested mode.
    pub waiting: [u64; 6],
}

impl Census {
    /// All locks counted, whatever their state.
    pub fn locks(&self) -> u64 {
        [&self.granted, &self.converting, &self.waiting]
            .iter()
            .flat_map(|a| a.iter())
            .sum()
    }

    /// Queued requests: converting plus waiting locks.
    pub fn queued(&self) -> u64 {
        self.converting.iter().chain(&self.waiting).sum()
    }
}

/// Locks by state (granted, converting, waiting) and mode, kept by the engine as locks
/// change: granted locks by granted mode, queued ones by requested mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally(pub(crate) [[u64; 6]; 3]);

impl Tally {
    /// Where a lock in `status` is counted.
    pub(crate) fn key(status: &Status) -> (usize, usize) {
        match status {
            Status::Granted { mode, .. } => (0, mode.index()),
            Status::Converting { to, .. } => (1, to.index()),
            Status::Waiting { mode, .. } => (2, mode.index()),
        }
    }

    /// Counts one more lock at `key`.
    pub(crate) fn add(&mut self, (state, mode): (usize, usize)) {
        self.0[state][mode] += 1;
    }

    /// Counts one lock less at `key`.
    pub(crate) fn sub(&mut self, (state, mode): (usize, usize)) {
        self.0[state][mode] = self.0[state][mode].saturating_sub(1);
    }
}

/// One session as a monitoring page lists it: no locks, only how many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session.
    pub session: SessionId,
    /// Its name, as the client gave it.
    pub name: String,
    /// Its lease length in milliseconds.
    pub ttl_ms: u64,
    /// Core clock (ms) at which the lease runs out unless renewed.
    pub expires_at_ms: u64,
    /// How many locks it owns (granted, converting or waiting).
    pub locks: u64,
    /// How many of them have a queued request.
    pub pending: u64,
}

impl Core {
    /// Counts every lock by state and mode, from counts kept as locks change: O(1), however
    /// large the table.
    pub fn census(&self) -> Census {
        let t = &self.tally.0;
        Census {
            sessions: self.sessions.len() as u64,
            resources: self.names.len() as u64,
            granted: t[0],
            converting: t[1],
            waiting: t[2],
        }
    }

    /// The counts of [`census`](Core::census) by walking every lock (for `restore` and to
    /// check the kept counts).
    pub(crate) fn count_locks(&self) -> Tally {
        let c = self.census_by_walking();
        Tally([c.granted, c.converting, c.waiting])
    }

    /// [`census`](Core::census) by walking each resource's three queues: what the kept
    /// counts must always equal.
    pub fn census_by_walking(&self) -> Census {
        let mut c = Census {
            sessions: self.sessions.len() as u64,
            resources: self.names.len() as u64,
            ..Census::default()
        };
        for &r in self.names.values() {
            let Some(res) = self.resources.get(r.0) else {
                continue;
            };
            for (_, l) in res.granted.iter(&self.locks) {
                if let Some(m) = l.status.public().granted_mode() {
                    c.granted[m.index()] += 1;
                }
            }
            if let Some(q) = res.queues.as_deref() {
                for (_, l) in q.convert.iter(&self.locks) {
                    if let Some(m) = l.status.requested_mode() {
                        c.converting[m.index()] += 1;
                    }
                }
                for (_, l) in q.wait.iter(&self.locks) {
                    if let Some(m) = l.status.requested_mode() {
                        c.waiting[m.index()] += 1;
                    }
                }
            }
        }
        c
    }

    /// A page of sessions in id order: those with ids above `after` (all for `None`), at
    /// most `limit` of them. The flag says whether more follow the last one returned.
    pub fn sessions_page(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> (Vec<SessionSummary>, bool) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rest = self.sessions.range((start, Bound::Unbounded));
        let page = rest
            .by_ref()
            .take(limit)
            .map(|(&id, s)| SessionSummary {
                session: id,
                name: s.name.clone(),
                ttl_ms: s.ttl_ms,
                expires_at_ms: s.expires_at,
                locks: s.locks.len as u64,
                pending: s.pending.len() as u64,
            })
            .collect();
        (page, rest.next().is_some())
    }

    /// R39..R41, after the fact: the sessions of the cycle that a new request of `owner` for
    /// `mode` on `name` would close, `owner` first and then along the wait-for edges back
    /// to it; `None` if it would close none (or the search budget runs out). Used to show
    /// which cycle made a request a deadlock victim: the victim's request is gone, but the
    /// rest of the cycle still waits.
    pub fn cycle_through(
        &self,
        owner: SessionId,
        name: &[u8],
        mode: Mode,
    ) -> Option<Vec<SessionId>> {
        let r = *self.names.get(name)?;
        let path = tail_probe_path(self, r, owner, mode)?;
        self.cycle_of(owner, &path)
    }

    /// [`cycle_through`](Self::cycle_through) for a conversion of `owner`'s lock `lock` to
    /// `mode` (refused as a deadlock victim, so granted in its old mode again): the name of
    /// its resource, and the sessions of the cycle the conversion would close, `owner` first
    /// (`None` if it would close none). `None` if the lock is not `owner`'s granted lock.
    pub fn conversion_cycle_through(
        &self,
        owner: SessionId,
        lock: LockId,
        mode: Mode,
    ) -> Option<(Vec<u8>, Option<Vec<SessionId>>)> {
        let lr = *self.lock_ids.get(&lock)?;
        let l = self.locks.get(lr.0)?;
        if l.session != owner || !matches!(l.status, Status::Granted { .. }) {
            return None;
        }
        let name = self.resources.get(l.res.0)?.name.as_bytes().to_vec();
        let cycle =
            convert_probe_path(self, lr, owner, mode).and_then(|p| self.cycle_of(owner, &p));
        Some((name, cycle))
    }

    /// The sessions of a cycle: `owner`, then the owners of `path`'s requests (which lists
    /// them from the last step back to the first), each once.
    fn cycle_of(&self, owner: SessionId, path: &[LockRef]) -> Option<Vec<SessionId>> {
        let mut cycle = vec![owner];
        for l in path.iter().rev() {
            let s = self.locks.get(l.0)?.session;
            if !cycle.contains(&s) {
                cycle.push(s);
            }
        }
        Some(cycle)
    }

    /// The first `max_edges` wait-for edges (R39) in waiter order, sorted, and whether more
    /// may exist, found in at most `max_steps` steps of the wait-for walks (about ten
    /// nanoseconds each): [`waits_for`](Core::waits_for) for answers that must stay small
    /// and cheap whatever the table holds.
    pub fn waits_for_bounded(&self, max_edges: usize, max_steps: usize) -> (Vec<WaitsFor>, bool) {
        let (edges, more) = self.edges_bounded(max_edges, max_steps);
        let edges = edges
            .into_iter()
            .map(|(waiter, holder)| WaitsFor { waiter, holder })
            .collect();
        (edges, more)
    }

    /// A live session's name.
    pub fn session_name(&self, session: SessionId) -> Option<&str> {
        self.sessions.get(&session).map(|s| s.name.as_str())
    }
}
