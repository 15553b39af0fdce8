//! Blocking notifications (R32..R37).
//!
//! They are worked out at the end of each input, after the reply and the completions, so
//! a grant's completion always precedes a notification to the same lock (R37). Two sources:
//!
//! - R32: when a request is queued, every lock on the grant queue whose granted mode is
//!   incompatible with the queued mode (converting locks never, R33);
//! - R35: every lock that was granted, converted in place or returned to the grant queue
//!   during the input is checked against the strongest mode still queued on its resource
//!   (Linux `grant_pending_locks` with its PR/CW special case). Locks that were already on
//!   the grant queue when a queued request arrived were told at that moment by R32, and
//!   holders granted since were checked when they were granted, so re-checking only the
//!   touched locks sends the same notifications as a full scan minus repeats, which R37
//!   allows to drop, without walking every holder after every pass.
//!
//!   With one exception, which comes from PR and CW being unordered: a PW or EX holder
//!   granted while PR was the strongest queued mode was told PR, which does not cover a CW
//!   queued behind it. When the PR request goes (cancelled, timed out, refused as a
//!   deadlock victim, its session ended) and CW is left the strongest, nobody was told
//!   CW. So after a pass that leaves CW the strongest queued mode while a PW or EX lock is
//!   held, the holders are walked for it (at most one PW or EX lock is granted at a time,
//!   but NL and CR holders may be many: the walk is skipped unless the held counts say
//!   there is one).
//!
//! The walks of R32 cost what they send: a resource marks the modes every conflicting
//! holder has been told (`Resource::told`) and remembers the locks that joined the grant
//! queue since (`Resource::joined`), so a request for a marked mode tells only those. A
//! request queued and cancelled over and over on a resource with a million holders walked
//! them all each time, to send nothing, even with one holder joining in between.
//!
//! Deduplication (R37): per lock, the set of modes notified since its last grant is
//! remembered (`lock::Notified`); a notification for a mode that one of them covers (the same or
//! a weaker mode, PR and CW counting as unordered) is dropped. Linux keeps only the strongest
//! mode (`lkb_highbast`), which lets requests alternating between PR and CW notify a PW or EX
//! holder again and again; a set bounds the notifications per grant at one per mode.

use std::collections::BTreeSet;

use crate::engine::{Core, Effects};
use crate::lock::{ResRef, Status};
use crate::{Event, EventKind, LockId, Mode};

impl Core {
    /// R32: remembers the holders a request queued for `mode` on `rr` blocks.
    pub(crate) fn collect_basts(&mut self, rr: ResRef, mode: Mode, fx: &mut Effects) {
        let Some(res) = self.resources.get(rr.0) else {
            return;
        };
        // O(1) skip when no held mode conflicts (for instance many NL holders), and when
        // every holder that conflicts was told `mode` already (a request queued and
        // cancelled over and over on a resource with a million holders walked them all
        // each time, to send nothing).
        let conflicts = Mode::ALL
            .into_iter()
            .any(|h| res.held[h.index()] > 0 && !h.is_compatible(mode));
        if !conflicts {
            return;
        }
        // Told in lock id order, however they were found: a core restored from a snapshot
        // (which keeps no marks) walks where the original took the remembered ones, and
        // both must send the same events in the same order.
        let first = fx.basts.len();
        if res.told & (1u8 << mode.index()) != 0 {
            // Only the locks that joined since need telling (a repeat for any other).
            let joined = self
                .resources
                .get_mut(rr.0)
                .map(|res| res.take_joined(mode))
                .unwrap_or_default();
            fx.basts.extend(joined.into_iter().map(|id| (id, mode)));
            fx.basts[first..].sort_unstable();
            return;
        }
        for (_, l) in res.granted.iter(&self.locks) {
            if let Status::Granted { mode: g, .. } = l.status {
                if !g.is_compatible(mode) {
                    fx.basts.push((l.id, mode));
                }
            }
        }
        fx.basts[first..].sort_unstable();
        // Each of them is told `mode` at the end of this input (or leaves: an ended
        // session's lock is not told, and goes).
        if let Some(res) = self.resources.get_mut(rr.0) {
            res.told_all(mode);
        }
    }

    /// Emits the blocking notifications collected while applying one input.
    pub(crate) fn flush_blocking(&mut self, fx: Effects, out: &mut Vec<Event>) {
        for (id, mode) in fx.basts {
            self.notify(id, mode, out);
        }
        let mut seen = BTreeSet::new();
        for id in fx.touched {
            if !seen.insert(id) {
                continue;
            }
            let Some(lock) = self.lock_ids.get(&id).and_then(|r| self.locks.get(r.0)) else {
                continue;
            };
            let Status::Granted { mode: g, .. } = lock.status else {
                continue;
            };
            let queues = self
                .resources
                .get(lock.res.0)
                .and_then(|r| r.queues.as_deref());
            let Some((Some(high), cw)) = queues.map(|q| q.strongest()) else {
                continue;
            };
            // Linux: a PR holder with CW queued (and nothing stronger than PR) is told CW.
            let m = if g == Mode::PR && cw && high == Mode::PR {
                Mode::CW
            } else {
                high
            };
            self.notify(id, m, out);
        }
        for rr in fx.passed {
            self.notify_cw_left_strongest(rr, out);
        }
    }

    /// R35's case the touched locks miss (see the module docs): CW is the strongest mode
    /// queued on `rr` after its grant pass, and a PW or EX lock is granted there.
    fn notify_cw_left_strongest(&mut self, rr: ResRef, out: &mut Vec<Event>) {
        let Some(res) = self.resources.get(rr.0) else {
            return;
        };
        let high = res.queues.as_deref().and_then(|q| q.strongest().0);
        let strong_held = res.held[Mode::PW.index()] + res.held[Mode::EX.index()];
        if high != Some(Mode::CW) || strong_held == 0 {
            return;
        }
        let walk = res.told & (1u8 << Mode::CW.index()) == 0;
        let mut holders: Vec<LockId> = if walk {
            res.granted
                .iter(&self.locks)
                .filter(
                    |(_, l)| matches!(l.status, Status::Granted { mode, .. } if mode >= Mode::PW),
                )
                .map(|(_, l)| l.id)
                .collect()
        } else {
            // Only the locks that joined since the holders were last told CW.
            self.resources
                .get_mut(rr.0)
                .map(|res| res.take_joined(Mode::CW))
                .unwrap_or_default()
        };
        // In lock id order, walked or remembered (see `collect_basts`).
        holders.sort_unstable();
        for id in holders {
            self.notify(id, Mode::CW, out);
        }
        // The holders in conflict with CW are PR, PW and EX ones, and no PR lock is granted
        // beside a PW or EX one: every one of them has been told CW now.
        if walk && let Some(res) = self.resources.get_mut(rr.0) {
            res.told_all(Mode::CW);
        }
    }

    /// Sends lock `id` a notification for `m` unless it is compatible or a repeat.
    fn notify(&mut self, id: LockId, m: Mode, out: &mut Vec<Event>) {
        let Some(&r) = self.lock_ids.get(&id) else {
            return;
        };
        // An ended session's lock is on its way out, and nobody would hear.
        if self
            .locks
            .get(r.0)
            .is_some_and(|l| self.is_ending(l.session))
        {
            return;
        }
        let Some(lock) = self.locks.get_mut(r.0) else {
            return;
        };
        let Status::Granted { mode: g, .. } = lock.status else {
            return;
        };
        if g.is_compatible(m) || lock.notified.covers(m) {
            return;
        }
        lock.notified.insert(m);
        out.push(Event {
            session: lock.session,
            request: None,
            lock: Some(id),
            kind: EventKind::Blocking { mode: m },
        });
    }
}
