//! The client records judged against the replayed log: the tokens clients saw (property 2),
//! operations that hung or saw grants the server never made (property 3), `lost()` before
//! another grant (property 5) and dropped sessions released in time (property 6).

use dlock_core::SessionId;

use super::Checker;
use crate::model::show;
use crate::property::Property;
use crate::records::{LostKind, LostRecord, OpOutcome, OpRecord};

impl Checker {
    /// A violation found in the client records, at wall clock `ts_us`.
    fn record_violation(&mut self, property: Property, ts_us: u64, detail: String) {
        let v = self.make_violation(property, None, ts_us, detail, &[]);
        self.push_violation(v);
    }

    pub(super) fn client_op(&mut self, op: &OpRecord) {
        *self.report.ops.entry(format!("{:?}", op.kind)).or_default() += 1;
        let outcome = match &op.outcome {
            OpOutcome::Granted { .. } => "Granted".to_owned(),
            OpOutcome::Error(e) => format!("Error({e})"),
            other => format!("{other:?}"),
        };
        *self.report.outcomes.entry(outcome).or_default() += 1;
        match &op.outcome {
            OpOutcome::Hung => self.record_violation(
                Property::Completion,
                op.start_us,
                format!(
                    "client {} ({}) {:?} {} on {} started at {}us got no answer within the hang bound",
                    op.client,
                    op.session,
                    op.kind,
                    op.mode,
                    show(&op.resource),
                    op.start_us
                ),
            ),
            OpOutcome::Granted { lock, token } => match self.history.get(lock) {
                Some(h) if h.tokens.contains(token) => {}
                Some(h) => {
                    let detail = format!(
                        "client {} saw lock {lock} granted with token {token}, but the server granted it tokens {:?}",
                        op.client, h.tokens
                    );
                    self.record_violation(Property::Fencing, op.end_us, detail);
                }
                None => self.record_violation(
                    Property::Completion,
                    op.end_us,
                    format!(
                        "client {} saw lock {lock} granted ({:?} {} on {}) but the server's log has no such grant",
                        op.client,
                        op.kind,
                        op.mode,
                        show(&op.resource)
                    ),
                ),
            },
            _ => {}
        }
    }

    pub(super) fn client_lost(&mut self, lost: &LostRecord) {
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
        let start = grants.partition_point(|g| g.at.seq <= h.last_grant.seq);
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
                    "{lost:?}; lock granted at {} to {}; next incompatible grant: lock {} of {} ({}) at {}, {}us",
                    self.location(h.last_grant),
                    h.session,
                    g.lock,
                    g.session,
                    g.mode,
                    self.location(g.at),
                    g.ts_us
                ));
            }
        }
        let Some(g) = first.filter(|g| g.ts_us < lost.ts_us) else {
            return;
        };
        let across_restart = g.lifetime > h.lifetime;
        let restart = if across_restart {
            " (the competing grant was made by a server restarted after the lost lock was granted: the restarted server did not wait out the old leases)"
        } else {
            ""
        };
        let detail = format!(
            "client {} held lock {} ({} {} on {}, granted at {}) and saw lost() ({:?}) at {}us, but the server had granted lock {} ({} {}) {} ms earlier, at {}us{restart}",
            lost.client,
            lost.lock,
            h.session,
            lost.mode,
            show(&h.resource),
            self.location(h.last_grant),
            lost.reason,
            lost.ts_us,
            g.lock,
            g.session,
            g.mode,
            (lost.ts_us - g.ts_us) / 1000,
            g.ts_us
        );
        let v = self.make_violation(
            Property::LostBeforeGrant,
            Some(g.at),
            g.ts_us,
            detail,
            &[h.last_grant],
        );
        if across_restart && !self.cfg.restart_grace {
            self.report.restart_gaps += 1;
            if self.report.restart_gap_examples.len() < 5 {
                self.report.restart_gap_examples.push(v);
            }
        } else {
            self.push_violation(v);
        }
    }

    pub(super) fn client_dropped(&mut self, session: SessionId, ttl_ms: u64, ts_us: u64) {
        self.report.dropped_checked += 1;
        let due = ts_us + ttl_ms * 1000 + self.cfg.expiry_allowance_us;
        let end = self.ended.get(&session).copied();
        let late = match end {
            // A cluster's leases run in engine time, which stands still without a leader and
            // is extended by the grace of every fail-over: the session's own lease (judged
            // when it expires, see `session_expired_engine`) decides, not the client's clock.
            _ if self.engine_time => end.is_none() && self.cfg.expect_quiescent,
            Some(t) => t > due,
            // Still alive at the end of the log: late only if the log goes past the due time.
            None => self.now_us > due,
        };
        if late {
            self.record_violation(
                Property::DeadRelease,
                ts_us,
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
