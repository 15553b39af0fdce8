//! Answers to the HTTP listener's questions ([`StatusQuery`]): read-only, each bounded in
//! the work it does and the size it returns, so that a scrape or a status page never holds
//! the engine for long however large the table; and the tracing of deadlock cycles for the
//! status page.

use std::collections::BTreeMap;

use dlock_core::{LockId, Mode, RequestId, SessionId};
use dlock_proto::status::{
    DeadlockCycle, ResourcesView, ServerStatus, SessionView, SessionsView, WaitEdge, WaitsView,
    mode_counts,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::CoreTask;
use crate::msg::{CoreSnapshot, StatusAnswer, StatusQuery};

/// Most wait-for edges in one `/api/waits` answer.
pub(crate) const MAX_EDGES: usize = 2_000;
/// Most resources in one `/api/resources` page.
pub(crate) const MAX_RESOURCES: usize = 500;
/// Most sessions in one `/api/sessions` page.
pub(crate) const MAX_SESSIONS: usize = 1_000;
/// Bytes of resource views, by their wire size bound, in one `/api/resources` page: a sixth
/// of the 1 MiB the README promises for the JSON answer. JSON takes at most six bytes for one
/// of that bound (a control character in a name is `\u0001`; a name that is not UTF-8 is
/// written twice, as text and as hex; a lock's keys and quotes come to less than six times
/// its fixed part).
const RESOURCES_BUDGET: usize = (1 << 20) / 6;

/// Steps of the wait-for walks one `/api/waits` answer may take (a few milliseconds of the
/// engine): a client that queued tens of thousands of requests on a few resources made one
/// answer hold the engine for seconds, and other sessions' leases ran out meanwhile.
const WAITS_BUDGET: usize = 200_000;

impl CoreTask {
    /// Whether this server grants locks now: not in the restart grace and, in a cluster,
    /// the leader serving clients.
    fn serving(&self) -> bool {
        self.unready().is_none()
    }

    /// Why this server grants no locks now, if it does not.
    fn unready(&self) -> Option<&'static str> {
        unready_reason(
            self.grace.is_some(),
            self.cluster.as_ref().map(|c| c.leading()),
        )
    }

    /// Answers a question of the HTTP listener.
    pub(super) fn status(&mut self, query: StatusQuery, reply: oneshot::Sender<StatusAnswer>) {
        let core = self.engine.core();
        let now_ms = self.engine.now_ms().max(core.clock_ms());
        let answer = match query {
            StatusQuery::Metrics => StatusAnswer::Metrics(Box::new(CoreSnapshot {
                stats: self.sessions.monitor.stats.clone(),
                census: core.census(),
                unready: self.unready(),
                floor_write_failures: self.engine.floor_write_failures(),
                deadlock_search_steps: core.deadlock_search_steps(),
            })),
            StatusQuery::Status => {
                let census = core.census();
                StatusAnswer::Status(Box::new(ServerStatus {
                    version: crate::SERVER_VERSION.to_owned(),
                    now_ms,
                    ready: self.serving(),
                    grace_remaining_ms: self.grace.as_ref().map(|g| {
                        let left = g.until.saturating_duration_since(Instant::now());
                        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                    }),
                    connections: 0,
                    sessions: census.sessions,
                    resources: census.resources,
                    granted: mode_counts(&census.granted),
                    converting: mode_counts(&census.converting),
                    waiting: mode_counts(&census.waiting),
                    // The HTTP handler asks the sequencer, as it counts connections.
                    role: None,
                    membership: None,
                }))
            }
            StatusQuery::Resources {
                prefix,
                after,
                limit,
            } => {
                let limit = limit.clamp(1, MAX_RESOURCES);
                let (page, more) =
                    core.resources_page(&prefix, after.as_deref(), limit, RESOURCES_BUDGET);
                StatusAnswer::Resources(ResourcesView::page(&page, now_ms, more))
            }
            StatusQuery::Sessions { after, limit } => {
                let (page, more) = core.sessions_page(after, limit.clamp(1, MAX_SESSIONS));
                let next_cursor = more.then(|| page.last().map(|s| s.session.0)).flatten();
                let sessions = page
                    .into_iter()
                    .map(|s| SessionView {
                        session: s.session.0,
                        name: s.name,
                        ttl_ms: s.ttl_ms,
                        lease_remaining_ms: s.expires_at_ms.saturating_sub(now_ms),
                        locks: s.locks,
                        pending: s.pending,
                    })
                    .collect();
                StatusAnswer::Sessions(SessionsView {
                    sessions,
                    now_ms,
                    next_cursor,
                })
            }
            StatusQuery::Cluster => {
                StatusAnswer::Cluster(self.cluster.as_ref().map(super::cluster::ClusterSide::view))
            }
            StatusQuery::Waits => {
                let (edges, truncated) = core.waits_for_bounded(MAX_EDGES, WAITS_BUDGET);
                let cycles: Vec<DeadlockCycle> =
                    self.sessions.monitor.cycles.iter().cloned().collect();
                let mut names = BTreeMap::new();
                let ids = edges.iter().flat_map(|e| [e.waiter, e.holder]).chain(
                    cycles
                        .iter()
                        .flat_map(|c| c.sessions.iter().map(|&s| SessionId(s))),
                );
                for id in ids {
                    if let std::collections::btree_map::Entry::Vacant(v) = names.entry(id.0)
                        && let Some(name) = core.session_name(id)
                    {
                        v.insert(name.to_owned());
                    }
                }
                StatusAnswer::Waits(WaitsView {
                    now_ms,
                    edges: edges
                        .into_iter()
                        .map(|e| WaitEdge {
                            waiter: e.waiter.0,
                            holder: e.holder.0,
                        })
                        .collect(),
                    truncated,
                    names,
                    cycles,
                })
            }
        };
        // The asker may have given up (timed out); nothing to do then.
        let _ = reply.send(answer);
    }

    /// Traces the deadlock victims routing saw since the last call: the request `probe`
    /// names (a new lock request or a conversion) gets its cycle traced in the table as it is
    /// now; other victims are remembered without one.
    pub(super) fn trace_deadlocks(&mut self, probe: Option<Probe>) {
        if self.sessions.monitor.victims.is_empty() {
            return;
        }
        let at_ms = self.engine.now_ms();
        let victims = std::mem::take(&mut self.sessions.monitor.victims);
        for (victim, req, _lock) in victims {
            let traced = match &probe {
                Some(p) if victim == p.session && req == Some(p.request) => {
                    let core = self.engine.core();
                    let found = match &p.target {
                        Target::Resource(name) => {
                            Some((name.clone(), core.cycle_through(victim, name, p.mode)))
                        }
                        Target::Lock(lock) => core.conversion_cycle_through(victim, *lock, p.mode),
                    };
                    found.map(|(name, cycle)| {
                        (String::from_utf8_lossy(&name).into_owned(), p.mode, cycle)
                    })
                }
                _ => None,
            };
            let cycle = match traced {
                Some((resource, mode, cycle)) => DeadlockCycle {
                    at_ms,
                    victim: victim.0,
                    resource: Some(resource),
                    mode: Some(mode.to_string()),
                    sessions: cycle
                        .unwrap_or_else(|| vec![victim])
                        .into_iter()
                        .map(|s| s.0)
                        .collect(),
                },
                None => DeadlockCycle {
                    at_ms,
                    victim: victim.0,
                    resource: None,
                    mode: None,
                    sessions: vec![victim.0],
                },
            };
            self.sessions.monitor.cycle(cycle);
        }
    }
}

/// A request that may be refused as a deadlock victim, named so that its cycle can be traced
/// after the refusal (see [`CoreTask::trace_deadlocks`]).
pub(super) struct Probe {
    pub(super) session: SessionId,
    pub(super) request: RequestId,
    pub(super) target: Target,
    /// The requested mode.
    pub(super) mode: Mode,
}

/// What a [`Probe`]'s request is for.
pub(super) enum Target {
    /// A new lock on the resource of this name.
    Resource(Vec<u8>),
    /// A conversion of this lock.
    Lock(LockId),
}

/// Why a server grants no locks: in its restart grace, or (`leading` is `Some` in a cluster)
/// a member that is not the serving leader. `None`: it grants.
fn unready_reason(in_grace: bool, leading: Option<bool>) -> Option<&'static str> {
    if in_grace {
        Some("restart grace")
    } else if leading == Some(false) {
        Some("not the cluster's serving leader")
    } else {
        None
    }
}

#[cfg(test)]
mod unready_tests {
    use super::unready_reason;

    #[test]
    fn a_follower_is_unready_for_its_own_reason() {
        assert_eq!(unready_reason(false, None), None);
        assert_eq!(unready_reason(false, Some(true)), None);
        assert_eq!(unready_reason(true, None), Some("restart grace"));
        assert_eq!(
            unready_reason(false, Some(false)),
            Some("not the cluster's serving leader")
        );
    }
}
