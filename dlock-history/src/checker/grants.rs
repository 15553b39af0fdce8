//! Grants: which request a GRANTED answers, whether it was its turn (property 4: R10 on
//! arrival, R11/R21 for conversions, R12/R13 in grant passes) and whether its token grows
//! (property 2).

use dlock_core::{Event, FencingToken, LockId, Mode};

use super::Checker;
use crate::model::{GrantRec, LockHistory, LockModel, Pos, State, show};
use crate::property::Property;
use crate::subject::Subject;
use crate::text;

impl Checker {
    /// A grant: returns the resource.
    pub(super) fn granted(
        &mut self,
        subject: &Subject,
        ev: &Event,
        mode: Mode,
        token: FencingToken,
    ) -> Option<Vec<u8>> {
        let Some(lock) = ev.lock else {
            self.violation(
                Property::Completion,
                format!("GRANTED without a lock id: {}", text::event(ev)),
            );
            return None;
        };
        let pos = self.pos;
        let resource = match (self.locks.get(&lock).cloned(), subject) {
            // R10: a new request granted on arrival.
            (
                None,
                Subject::Lock {
                    session,
                    request,
                    lock: new,
                    resource,
                    mode: asked,
                },
            ) if *new == lock && ev.request == Some(*request) => {
                if let Some(res) = self.resources.get(resource)
                    && (!res.convert.is_empty() || !res.wait.is_empty())
                {
                    let (c, w) = (res.convert.clone(), res.wait.clone());
                    let cites = self.since_of(c.iter().chain(&w));
                    self.violation_citing(
                        Property::Fifo,
                        format!(
                            "new lock {lock} ({mode}) granted on arrival while {} conversion(s) [{}] and {} waiter(s) [{}] are queued on {} (R10)",
                            c.len(),
                            text::list(&self.describe_all(&c)),
                            w.len(),
                            text::list(&self.describe_all(&w)),
                            show(resource)
                        ),
                        &cites,
                    );
                }
                if mode != *asked {
                    self.violation(
                        Property::Completion,
                        format!("lock {lock} asked for {asked} but was granted {mode}"),
                    );
                }
                self.locks.insert(
                    lock,
                    LockModel {
                        session: *session,
                        resource: resource.clone(),
                        state: State::Granted { mode },
                        since: pos,
                    },
                );
                let res = self.resources.entry(resource.clone()).or_default();
                res.holders.insert(lock);
                resource.clone()
            }
            // R11: a conversion granted on arrival.
            (
                Some(l),
                Subject::Convert {
                    request,
                    lock: conv,
                    mode: asked,
                    quecvt,
                    ..
                },
            ) if *conv == lock
                && ev.request == Some(*request)
                && matches!(l.state, State::Granted { .. }) =>
            {
                if *quecvt
                    && let Some(res) = self.resources.get(&l.resource)
                    && !res.convert.is_empty()
                {
                    let c = res.convert.clone();
                    let cites = self.since_of(&c);
                    self.violation_citing(
                        Property::Fifo,
                        format!(
                            "QUECVT conversion of lock {lock} granted on arrival ahead of queued conversions [{}] (R21)",
                            text::list(&self.describe_all(&c))
                        ),
                        &cites,
                    );
                }
                if mode != *asked {
                    self.violation(
                        Property::Completion,
                        format!(
                            "conversion of lock {lock} asked for {asked} but was granted {mode}"
                        ),
                    );
                }
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode };
                    m.since = pos;
                }
                l.resource
            }
            // R12: a queued request granted by a grant pass.
            (Some(l), _) if l.state.pending().is_some() => {
                if ev.request != l.state.pending() || ev.session != l.session {
                    self.violation_citing(
                        Property::Completion,
                        format!(
                            "grant of lock {lock} carries {} of session {} but its pending request is {} of session {}",
                            text::request(ev.request),
                            ev.session.0,
                            text::request(l.state.pending()),
                            l.session.0
                        ),
                        &[l.since],
                    );
                }
                self.fifo_check_pass_grant(lock, &l, mode);
                let res = self.resources.entry(l.resource.clone()).or_default();
                res.wait.retain(|x| *x != lock);
                res.convert.retain(|x| *x != lock);
                res.holders.insert(lock);
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode };
                    m.since = pos;
                }
                l.resource
            }
            // Queued before the history begins: its resource is unknown.
            (None, _) if self.unseen(lock.0) => return None,
            (l, _) => {
                let since = l.as_ref().map(|l| l.since);
                self.violation_citing(
                    Property::Completion,
                    format!(
                        "GRANTED {mode} to lock {lock} which has no pending request ({}{}): {}",
                        match &l {
                            Some(l) => l.state.to_string(),
                            None => "unknown lock".to_owned(),
                        },
                        match since {
                            Some(p) => format!(" since {}", self.location(p)),
                            None => String::new(),
                        },
                        text::event(ev)
                    ),
                    since.as_slice(),
                );
                return None;
            }
        };
        self.report.grants += 1;
        self.check_token(lock, &resource, token);
        self.remember_grant(lock, ev, &resource, mode, token);
        Some(resource)
    }

    /// Property 2: the token of a grant on `resource` is above every earlier one.
    fn check_token(&mut self, lock: LockId, resource: &[u8], token: FencingToken) {
        if let Some((last, last_at)) = self.tokens.get(resource).copied()
            && token <= last
        {
            self.violation_citing(
                Property::Fencing,
                format!(
                    "lock {lock} on {} granted token {token}, not above token {last} granted at {}",
                    show(resource),
                    self.location(last_at)
                ),
                &[last_at],
            );
        }
        self.tokens.insert(resource.to_vec(), (token, self.pos));
    }

    /// Keeps what the client-record checks need of a grant.
    fn remember_grant(
        &mut self,
        lock: LockId,
        ev: &Event,
        resource: &[u8],
        mode: Mode,
        token: FencingToken,
    ) {
        let (pos, lifetime, session) = (self.pos, self.lifetime, ev.session);
        self.grants
            .entry(resource.to_vec())
            .or_default()
            .push(GrantRec {
                at: pos,
                ts_us: self.now_us,
                lifetime,
                lock,
                session,
                mode,
            });
        let h = self.history.entry(lock).or_insert_with(|| LockHistory {
            resource: resource.to_vec(),
            session,
            last_grant: pos,
            lifetime,
            tokens: Vec::new(),
            mode,
            released_by_owner: false,
        });
        h.last_grant = pos;
        h.mode = mode;
        h.tokens.push(token);
    }

    /// R12, R13: a queued request is granted only from the head of its queue, and a waiter
    /// only when no conversion is queued.
    fn fifo_check_pass_grant(&mut self, lock: LockId, l: &LockModel, mode: Mode) {
        let Some(res) = self.resources.get(&l.resource) else {
            return;
        };
        let (queue, name) = match l.state {
            State::Waiting { .. } => (&res.wait, "wait"),
            _ => (&res.convert, "convert"),
        };
        let ahead: Vec<LockId> = queue.iter().take_while(|x| **x != lock).copied().collect();
        let converting: Vec<LockId> = match l.state {
            State::Waiting { .. } => res.convert.iter().copied().collect(),
            _ => Vec::new(),
        };
        if !ahead.is_empty() {
            let cites = self.since_of(ahead.iter().chain([&lock]));
            self.violation_citing(
                Property::Fifo,
                format!(
                    "queued lock {lock} ({}) on {} granted {mode} while earlier request(s) [{}] still wait ahead of it on the {name} queue (R12)",
                    self.describe(lock),
                    show(&l.resource),
                    text::list(&self.describe_all(&ahead))
                ),
                &cites,
            );
        }
        if !converting.is_empty() {
            let cites = self.since_of(converting.iter().chain([&lock]));
            self.violation_citing(
                Property::Fifo,
                format!(
                    "waiting lock {lock} ({}) on {} granted while conversion(s) [{}] are queued (R13)",
                    self.describe(lock),
                    show(&l.resource),
                    text::list(&self.describe_all(&converting))
                ),
                &cites,
            );
        }
    }

    /// Where each of `locks` entered its current state, oldest first.
    pub(super) fn since_of<'a>(&self, locks: impl IntoIterator<Item = &'a LockId>) -> Vec<Pos> {
        let mut at: Vec<Pos> = locks
            .into_iter()
            .filter_map(|l| self.locks.get(l).map(|m| m.since))
            .collect();
        at.sort_by_key(|p| p.seq);
        at.dedup();
        at
    }
}
