//! Read-only queries (R66): everything an event says can be rebuilt from these.

use crate::engine::Core;
use crate::lock::{Lock, ResRef};
use crate::resource::Resource;
use crate::{LockInfo, ResourceInfo, SessionId, SessionInfo, SessionLockInfo, WaitsFor};

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

    fn resource_info(&self, res: &Resource) -> ResourceInfo {
        let (value, value_valid) = crate::lvb::read(res, self.config.lvb_len);
        let mut granted: Vec<LockInfo> = res
            .granted
            .iter(&self.locks)
            .map(|(_, l)| self.lock_info(l))
            .collect();
        granted.sort_by_key(|i| i.lock);
        let (converting, waiting) = match res.queues.as_deref() {
            Some(q) => (
                q.convert
                    .iter(&self.locks)
                    .map(|(_, l)| self.lock_info(l))
                    .collect(),
                q.wait
                    .iter(&self.locks)
                    .map(|(_, l)| self.lock_info(l))
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        ResourceInfo {
            name: res.name.as_bytes().to_vec(),
            value,
            value_valid,
            granted,
            converting,
            waiting,
        }
    }

    fn res(&self, r: ResRef) -> Option<&Resource> {
        self.resources.get(r.0)
    }

    /// One resource and its queues (R66): the grant queue by lock id, the convert and wait
    /// queues head first.
    pub fn resource(&self, name: &[u8]) -> Option<ResourceInfo> {
        let r = *self.names.get(name)?;
        self.res(r).map(|res| self.resource_info(res))
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
            .map(|res| self.resource_info(res))
            .collect()
    }

    /// One session and its locks, by lock id.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&session)?;
        let locks = s
            .locks
            .iter(&self.locks)
            .map(|(_, l)| SessionLockInfo {
                lock: l.id,
                resource: self
                    .res(l.res)
                    .map(|r| r.name.as_bytes().to_vec())
                    .unwrap_or_default(),
                state: l.status.public(),
                token: l.status.token(),
            })
            .collect();
        Some(SessionInfo {
            session,
            name: s.name.clone(),
            ttl_ms: s.ttl_ms,
            expires_at_ms: s.expires_at,
            locks,
        })
    }

    /// A live session's lease length, without building its lock list as
    /// [`session`](Core::session) does.
    pub fn session_ttl_ms(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(&session).map(|s| s.ttl_ms)
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
