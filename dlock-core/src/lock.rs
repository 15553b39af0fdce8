//! A lock as the engine stores it (R2): one state out of granted, converting or waiting.

use serde::{Deserialize, Serialize};

use crate::{FencingToken, LockId, LockState, Mode, RequestId, SessionId};

/// Slot of a lock in the engine's lock slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct LockRef(pub(crate) u32);

/// An optional [`LockRef`] in four bytes (`u32::MAX` is none): queue links are the bulk of
/// a lock's and a resource's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Link(u32);

impl Link {
    pub(crate) const NONE: Link = Link(u32::MAX);

    pub(crate) fn get(self) -> Option<LockRef> {
        (self.0 != u32::MAX).then_some(LockRef(self.0))
    }
}

impl From<Option<LockRef>> for Link {
    fn from(r: Option<LockRef>) -> Link {
        r.map_or(Link::NONE, |r| Link(r.0))
    }
}

/// Slot of a resource in the engine's resource slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct ResRef(pub(crate) u32);

/// What a queued request remembers until it completes. Boxed inside [`Status`] so that the
/// far more numerous granted locks do not pay for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The client's request id; the completion carries it (R5).
    pub(crate) request: RequestId,
    /// VALBLK: the grant reads the value block (queued requests never write it, see lvb.rs).
    pub(crate) valblk: bool,
    /// Input index at which the request arrived: its age for the deadlock victim rule (R41).
    pub(crate) age: u64,
    /// R65: core-clock deadline, if the request has a timeout.
    pub(crate) deadline: Option<u64>,
}

/// A queued conversion: its request and the token of the mode it still holds. Boxed inside
/// [`Status`] so that the token does not widen every lock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Conversion {
    /// The fencing token of the granted mode held while converting (R18).
    pub(crate) token: FencingToken,
    pub(crate) pending: Pending,
}

/// The state of a lock. Exactly one of the three of R2; which queue the lock is linked
/// into follows from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Status {
    /// On the grant queue.
    Granted { mode: Mode, token: FencingToken },
    /// On the convert queue, still holding `from` (R18).
    Converting {
        from: Mode,
        to: Mode,
        conv: Box<Conversion>,
    },
    /// On the wait queue, holding nothing.
    Waiting { mode: Mode, pending: Box<Pending> },
}

impl Status {
    pub(crate) fn granted_mode(&self) -> Option<Mode> {
        match *self {
            Status::Granted { mode, .. } => Some(mode),
            Status::Converting { from, .. } => Some(from),
            Status::Waiting { .. } => None,
        }
    }

    pub(crate) fn requested_mode(&self) -> Option<Mode> {
        match *self {
            Status::Granted { .. } => None,
            Status::Converting { to, .. } => Some(to),
            Status::Waiting { mode, .. } => Some(mode),
        }
    }

    pub(crate) fn pending(&self) -> Option<&Pending> {
        match self {
            Status::Granted { .. } => None,
            Status::Converting { conv, .. } => Some(&conv.pending),
            Status::Waiting { pending, .. } => Some(pending),
        }
    }

    pub(crate) fn token(&self) -> Option<FencingToken> {
        match *self {
            Status::Granted { token, .. } => Some(token),
            Status::Converting { ref conv, .. } => Some(conv.token),
            Status::Waiting { .. } => None,
        }
    }

    pub(crate) fn public(&self) -> LockState {
        match *self {
            Status::Granted { mode, .. } => LockState::Granted { mode },
            Status::Converting { from, to, .. } => LockState::Converting { from, to },
            Status::Waiting { mode, .. } => LockState::Waiting { mode },
        }
    }
}

/// One lock. `prev`/`next` link it into exactly one of its resource's three queues, so a
/// removal from the middle of a queue (cancel, timeout, session end) is O(1) plus the
/// id lookup, and expiring many sessions never becomes quadratic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Lock {
    pub(crate) id: LockId,
    pub(crate) session: SessionId,
    pub(crate) res: ResRef,
    pub(crate) status: Status,
    /// The request id of the `Lock` command that created it: a re-sent request finds its
    /// lock by it, however long ago it was granted (exactly once, `once.rs`).
    pub(crate) origin: RequestId,
    /// Core clock when the lock entered its current state.
    pub(crate) since_ms: u64,
    pub(crate) prev: Link,
    pub(crate) next: Link,
    /// Links of its session's list of locks, which is in lock id order (ids only grow).
    pub(crate) sprev: Link,
    pub(crate) snext: Link,
    /// R37: the modes this lock was notified of since its last grant.
    pub(crate) notified: Notified,
}

/// R37: whether a notification for `m` is already covered by one for `h`.
fn covered(h: Mode, m: Mode) -> bool {
    h == m || (h.index() > m.index() && !(h == Mode::PR && m == Mode::CW))
}

/// R37: the modes a lock was notified of since its last grant, one bit per mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notified(u8);

impl Notified {
    /// Nothing notified yet (a new grant starts here).
    pub(crate) const NONE: Notified = Notified(0);

    /// Whether a notification for `m` would repeat one already sent.
    pub(crate) fn covers(self, m: Mode) -> bool {
        Mode::ALL
            .into_iter()
            .any(|h| self.0 & (1 << h.index()) != 0 && covered(h, m))
    }

    pub(crate) fn insert(&mut self, m: Mode) {
        self.0 |= 1 << m.index();
    }
}

#[cfg(test)]
mod tests {
    use super::{Notified, covered};
    use crate::Mode;

    #[test]
    fn r37_a_set_of_notified_modes_covers_each_and_what_is_weaker() {
        let mut n = Notified::NONE;
        assert!(Mode::ALL.into_iter().all(|m| !n.covers(m)));
        n.insert(Mode::PR);
        assert!(n.covers(Mode::CR) && n.covers(Mode::PR) && !n.covers(Mode::CW));
        n.insert(Mode::CW);
        assert!(n.covers(Mode::CW) && n.covers(Mode::PR) && !n.covers(Mode::PW));
        n.insert(Mode::EX);
        assert!(Mode::ALL.into_iter().all(|m| n.covers(m)));
    }

    #[test]
    fn r37_pr_and_cw_are_unordered() {
        assert!(covered(Mode::EX, Mode::PR));
        assert!(covered(Mode::PR, Mode::PR));
        assert!(!covered(Mode::PR, Mode::CW));
        assert!(!covered(Mode::CW, Mode::PR));
        assert!(covered(Mode::PW, Mode::CW));
        assert!(!covered(Mode::PR, Mode::EX));
    }
}
