//! Read-only queries (R66): everything an event says can be rebuilt from these.

use crate::engine::Core;
use crate::lock::{Lock, ResRef};
use crate::resource::Resource;
use crate::{
    LockInfo, ResourceInfo, SessionId, SessionInfo, SessionLease, SessionLockInfo, WaitsFor,
};

impl Core {
    fn lock_info(&self, l: &Lock) -> LockInfo {
        LockInfo {
            lock: l.id,
            session: l.session,
            session_name: self
                .sessions
                .get(&l.session)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            state: l.status.public(),
            token: l.status.token(),
            since_ms: l.since_ms,
        }
    }

    /// `res` and its queues, listing locks while the answer stays within about `budget`
    /// bytes ([`ResourceInfo::approx_size`]): the first locks of the grant queue (in the
    /// order they were granted, then listed by lock id), then of the convert queue, then of
    /// the wait queue, head first; the others are counted in
    /// [`omitted`](ResourceInfo::omitted). The work is proportional to what is listed, not
    /// to the resource's locks.
    fn resource_info(&self, res: &Resource, budget: usize) -> ResourceInfo {
        let (value, value_valid) = crate::lvb::read(res, self.config.lvb_len);
        let mut info = ResourceInfo {
            name: res.name.as_bytes().to_vec(),
            value,
            value_valid,
            granted: Vec::new(),
            converting: Vec::new(),
            waiting: Vec::new(),
            omitted: 0,
        };
        let mut used = info.approx_size();
        let mut total = u64::from(res.granted.len);
        let mut room = self.list_within(
            res.granted.iter(&self.locks),
            &mut used,
            budget,
            &mut info.granted,
        );
        info.granted.sort_by_key(|i| i.lock);
        if let Some(q) = res.queues.as_deref() {
            total += u64::from(q.convert.len) + u64::from(q.wait.len);
            if room {
                room = self.list_within(
                    q.convert.iter(&self.locks),
                    &mut used,
                    budget,
                    &mut info.converting,
                );
            }
            if room {
                self.list_within(
                    q.wait.iter(&self.locks),
                    &mut used,
                    budget,
                    &mut info.waiting,
                );
            }
        }
        let listed = info.granted.len() + info.converting.len() + info.waiting.len();
        info.omitted = total.saturating_sub(listed as u64);
        info
    }

    /// Appends the locks of `list` to `out` while `used` stays within `budget`; whether
    /// there was room for all of them.
    fn list_within<'a>(
        &self,
        list: impl Iterator<Item = (crate::lock::LockRef, &'a Lock)>,
        used: &mut usize,
        budget: usize,
        out: &mut Vec<LockInfo>,
    ) -> bool {
        for (_, l) in list {
            let info = self.lock_info(l);
            let size = info.approx_size();
            if used.saturating_add(size) > budget {
                return false;
            }
            *used += size;
            out.push(info);
        }
        true
    }

    fn res(&self, r: ResRef) -> Option<&Resource> {
        self.resources.get(r.0)
    }

    /// One resource and its queues (R66): the grant queue by lock id, the convert and wait
    /// queues head first.
    pub fn resource(&self, name: &[u8]) -> Option<ResourceInfo> {
        self.resource_within(name, usize::MAX)
    }

    /// [`resource`](Self::resource) for answers that must stay small: as many of its locks
    /// as fit in about `budget` bytes of encoded answer (see [`ResourceInfo::approx_size`]),
    /// the first of the grant queue, then of the convert queue, then of the wait queue; the
    /// others are counted in [`omitted`](ResourceInfo::omitted). The work done is
    /// proportional to what is listed, however many locks the resource has.
    pub fn resource_within(&self, name: &[u8], budget: usize) -> Option<ResourceInfo> {
        let r = *self.names.get(name)?;
        self.res(r).map(|res| self.resource_info(res, budget))
    }

    /// Resources whose names start with `prefix`, in name order, at most `limit` of them.
    pub fn resources(&self, prefix: &[u8], limit: usize) -> Vec<ResourceInfo> {
        self.names
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.as_bytes().starts_with(prefix))
            .take(limit)
            .filter_map(|(_, &r)| self.res(r))
            .map(|res| self.resource_info(res, usize::MAX))
            .collect()
    }

    /// A page of [`resources`](Self::resources) for answers that must stay small: the
    /// resources starting with `prefix` whose names sort after `after` (all of them for
    /// `None`), in name order, at most `limit` of them and no more than about `budget` bytes
    /// of encoded answer (see [`ResourceInfo::approx_size`]). A resource whose locks do not
    /// all fit starts the next page, unless it is the first: then it lists as many as fit
    /// and counts the others in [`omitted`](ResourceInfo::omitted). The work done is
    /// proportional to the page, not to the table or to a resource's locks. The flag says
    /// whether more resources match: the next page starts after the last name returned.
    pub fn resources_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        budget: usize,
    ) -> (Vec<ResourceInfo>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut matching = self
            .names
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.as_bytes().starts_with(prefix))
            .filter_map(|(_, &r)| self.res(r));
        let mut page = Vec::new();
        let mut used = 0;
        while page.len() < limit {
            let Some(res) = matching.next() else {
                return (page, false);
            };
            let room = if page.is_empty() {
                budget
            } else {
                budget.saturating_sub(used)
            };
            let info = self.resource_info(res, room);
            used += info.approx_size();
            if (info.omitted > 0 || used > budget) && !page.is_empty() {
                return (page, true);
            }
            page.push(info);
        }
        let more = matching.next().is_some();
        (page, more)
    }

    /// One session and its locks, by lock id.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.session_page(session, None, usize::MAX, usize::MAX)
            .map(|(info, _)| info)
    }

    /// A page of [`session`](Self::session): the session with those of its locks whose ids
    /// are above `after` (all for `None`), in id order, at most `limit` of them and no more
    /// than about `budget` bytes of encoded answer (see [`SessionInfo::approx_size`]). The
    /// flag says whether the session has more locks: the next page starts after the last
    /// lock id returned. Skipping to `after` walks the session's lock list without copying.
    pub fn session_page(
        &self,
        session: SessionId,
        after: Option<crate::LockId>,
        limit: usize,
        budget: usize,
    ) -> Option<(SessionInfo, bool)> {
        let s = self.sessions.get(&session)?;
        let mut info = SessionInfo {
            session,
            name: s.name.clone(),
            ttl_ms: s.ttl_ms,
            expires_at_ms: s.expires_at,
            locks: Vec::new(),
        };
        let mut used = info.approx_size();
        // The session's list is in lock id order: locks are appended as they are created.
        let mut rest = s
            .locks
            .iter(&self.locks)
            .map(|(_, l)| l)
            .skip_while(|l| after.is_some_and(|a| l.id <= a));
        while info.locks.len() < limit {
            let Some(l) = rest.next() else {
                return Some((info, false));
            };
            let item = SessionLockInfo {
                lock: l.id,
                resource: self
                    .res(l.res)
                    .map(|r| r.name.as_bytes().to_vec())
                    .unwrap_or_default(),
                state: l.status.public(),
                token: l.status.token(),
            };
            used += item.approx_size();
            if used > budget && !info.locks.is_empty() {
                return Some((info, true));
            }
            info.locks.push(item);
        }
        let more = rest.next().is_some();
        Some((info, more))
    }

    /// A live session's lease length, without building its lock list as
    /// [`session`](Core::session) does.
    pub fn session_ttl_ms(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(&session).map(|s| s.ttl_ms)
    }

    /// How many locks a session owns (granted, converting or waiting); 0 if the session does
    /// not exist.
    pub fn session_lock_count(&self, session: SessionId) -> usize {
        self.sessions
            .get(&session)
            .map_or(0, |s| s.locks.len as usize)
    }

    /// A session's lease: its length and when it runs out unless renewed (its last renewal
    /// was `ttl_ms` before that); `None` if the session does not exist.
    pub fn session_lease(&self, session: SessionId) -> Option<SessionLease> {
        self.sessions.get(&session).map(|s| SessionLease {
            ttl_ms: s.ttl_ms,
            expires_at_ms: s.expires_at,
        })
    }

    /// The current wait-for edges between sessions (R39), sorted. A session waiting for
    /// itself through another of its locks appears as an edge to itself.
    pub fn waits_for(&self) -> Vec<WaitsFor> {
        self.all_edges()
            .into_iter()
            .map(|(waiter, holder)| WaitsFor { waiter, holder })
            .collect()
    }
}
