//! What must hold after every input: granted modes pairwise compatible (property 1) and no
//! grantable request left at the head of its queue (property 4, no lost wake-up); and, for a
//! quiescent history, nothing left pending at its end (property 3).

use dlock_core::{LockId, Mode, SessionId};

use super::Checker;
use crate::model::{LockModel, Pos, State, show};
use crate::property::Property;
use crate::text;

impl Checker {
    /// Property 1 on one resource after an input: every pair of held modes is compatible
    /// (R7; a converting lock still holds its old mode, R9, R18).
    pub(super) fn check_compatible(&mut self, resource: &[u8]) {
        let Some(res) = self.resources.get(resource) else {
            return;
        };
        let held: Vec<(LockId, SessionId, Mode, Pos)> = res
            .holders
            .iter()
            .filter_map(|id| {
                let l = self.locks.get(id)?;
                Some((*id, l.session, l.state.held()?, l.since))
            })
            .collect();
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                if !a.2.is_compatible(b.2) {
                    let mut cites = vec![a.3, b.3];
                    cites.sort_by_key(|p| p.seq);
                    self.violation_citing(
                        Property::Compatibility,
                        format!(
                            "on {}: lock {} of {} holds {} (since {}) while lock {} of {} holds {} (since {})",
                            show(resource),
                            a.0,
                            a.1,
                            a.2,
                            self.location(a.3),
                            b.0,
                            b.1,
                            b.2,
                            self.location(b.3)
                        ),
                        &cites,
                    );
                }
            }
        }
    }

    /// R12 after an input: the head of the queue in charge is not grantable. Not judged in
    /// a lifetime that began before the history: a holder the model never saw may block it.
    pub(super) fn check_heads(&mut self, resource: &[u8]) {
        if self.unseen_below.is_some() {
            return;
        }
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
            let cites = self.since_of(res.holders.iter().chain([&head]));
            self.violation_citing(
                Property::Fifo,
                format!(
                    "on {}: the head of the {} queue, lock {head} ({}), wants {want}, compatible with every holder [{}], but was left queued (R12 grant pass)",
                    show(resource),
                    if conv { "convert" } else { "wait" },
                    self.describe(head),
                    text::list(&holders)
                ),
                &cites,
            );
        }
    }

    /// Property 3 at the end of a quiescent history: no request is still pending.
    pub(super) fn check_nothing_pending(&mut self) {
        let mut pending: Vec<(LockId, LockModel)> = self
            .locks
            .iter()
            .filter(|(_, l)| l.state.pending().is_some())
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        pending.sort_by_key(|(id, _)| *id);
        for (id, l) in pending {
            self.violation_citing(
                Property::Completion,
                format!(
                    "at the end of the run, lock {id} ({} of session {} on {}) never completed",
                    l.state,
                    l.session.0,
                    show(&l.resource)
                ),
                &[l.since],
            );
        }
    }

    /// A lock's owner, state and where it entered it, for counterexamples.
    pub(super) fn describe(&self, lock: LockId) -> String {
        match self.locks.get(&lock) {
            Some(l) => format!(
                "session {}, {} since {}",
                l.session.0,
                l.state,
                self.location(l.since)
            ),
            None => "gone".into(),
        }
    }

    /// [`describe`](Self::describe) for several locks.
    pub(super) fn describe_all<'a>(
        &self,
        locks: impl IntoIterator<Item = &'a LockId>,
    ) -> Vec<String> {
        locks
            .into_iter()
            .map(|l| format!("{l}: {}", self.describe(*l)))
            .collect()
    }
}
