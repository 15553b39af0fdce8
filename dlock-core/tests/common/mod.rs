//! A small harness for scenario tests: one core, a virtual clock, auto-incrementing input
//! indices, and constructors for the exact events the tests expect.
#![allow(dead_code)]

use dlock_core::{
    Command, Config, Core, Event, EventKind, FencingToken, Input, LockFlags, LockId, Mode, Reject,
    RequestId, SessionId,
};
use dlock_core::{ConvertRequest, LockRequest, UnlockRequest};

/// The harness: `index` is the index of the last input applied.
pub struct H {
    pub core: Core,
    pub index: u64,
    pub now: u64,
}

impl Default for H {
    fn default() -> Self {
        H::new()
    }
}

impl H {
    pub fn new() -> H {
        H::with(Config::default())
    }

    pub fn with(config: Config) -> H {
        H {
            core: Core::new(config),
            index: 0,
            now: 0,
        }
    }

    /// Applies `command` with the next index at the current virtual time.
    pub fn apply(&mut self, command: Command) -> Vec<Event> {
        self.index += 1;
        self.core.apply(Input {
            index: self.index,
            now_ms: self.now,
            command,
        })
    }

    /// The index (and so the lock id) the next input gets.
    pub fn next(&self) -> u64 {
        self.index + 1
    }

    /// Opens a session with a 10 s lease.
    pub fn open(&mut self, name: &str) -> SessionId {
        self.open_ttl(name, 10_000)
    }

    pub fn open_ttl(&mut self, name: &str, ttl_ms: u64) -> SessionId {
        let ev = self.apply(Command::OpenSession {
            name: name.into(),
            ttl_ms,
            secret: 42,
        });
        let id = SessionId(self.index);
        assert_eq!(ev, vec![ev_open(id, ttl_ms)]);
        id
    }

    /// A plain lock request; returns the new lock's id and the events.
    pub fn lock(&mut self, s: SessionId, r: u64, name: &str, mode: Mode) -> (LockId, Vec<Event>) {
        self.lock_with(s, r, name, mode, LockFlags::empty(), None, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn lock_with(
        &mut self,
        s: SessionId,
        r: u64,
        name: &str,
        mode: Mode,
        flags: LockFlags,
        value: Option<&[u8]>,
        timeout_ms: Option<u64>,
    ) -> (LockId, Vec<Event>) {
        let ev = self.apply(Command::Lock {
            session: s,
            request: RequestId(r),
            args: LockRequest {
                resource: name.as_bytes().to_vec(),
                mode,
                flags,
                value: value.map(<[u8]>::to_vec),
                timeout_ms,
            },
        });
        (LockId(self.index), ev)
    }

    pub fn convert(&mut self, s: SessionId, r: u64, l: LockId, mode: Mode) -> Vec<Event> {
        self.convert_with(s, r, l, mode, LockFlags::empty(), None, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn convert_with(
        &mut self,
        s: SessionId,
        r: u64,
        l: LockId,
        mode: Mode,
        flags: LockFlags,
        value: Option<&[u8]>,
        timeout_ms: Option<u64>,
    ) -> Vec<Event> {
        self.apply(Command::Convert {
            session: s,
            request: RequestId(r),
            args: ConvertRequest {
                lock: l,
                mode,
                flags,
                value: value.map(<[u8]>::to_vec),
                timeout_ms,
            },
        })
    }

    pub fn unlock(&mut self, s: SessionId, r: u64, l: LockId) -> Vec<Event> {
        self.unlock_with(s, r, l, LockFlags::empty(), None)
    }

    pub fn unlock_with(
        &mut self,
        s: SessionId,
        r: u64,
        l: LockId,
        flags: LockFlags,
        value: Option<&[u8]>,
    ) -> Vec<Event> {
        self.apply(Command::Unlock {
            session: s,
            request: RequestId(r),
            args: UnlockRequest {
                lock: l,
                flags,
                value: value.map(<[u8]>::to_vec),
            },
        })
    }

    pub fn cancel(&mut self, s: SessionId, r: u64, l: LockId) -> Vec<Event> {
        self.apply(Command::Cancel {
            session: s,
            request: RequestId(r),
            lock: l,
        })
    }

    pub fn close(&mut self, s: SessionId, r: u64) -> Vec<Event> {
        self.apply(Command::CloseSession {
            session: s,
            request: RequestId(r),
        })
    }

    pub fn renew(&mut self, s: SessionId, r: u64) -> Vec<Event> {
        self.apply(Command::Renew {
            session: s,
            request: RequestId(r),
        })
    }

    /// Advances the virtual clock by `ms` and sends a tick.
    pub fn tick_after(&mut self, ms: u64) -> Vec<Event> {
        self.now += ms;
        self.apply(Command::Tick)
    }

    /// Granted modes of a resource's grant, convert and wait queues, as (lock, state).
    pub fn queues(&self, name: &str) -> (Vec<LockId>, Vec<LockId>, Vec<LockId>) {
        match self.core.resource(name.as_bytes()) {
            Some(r) => (
                r.granted.iter().map(|l| l.lock).collect(),
                r.converting.iter().map(|l| l.lock).collect(),
                r.waiting.iter().map(|l| l.lock).collect(),
            ),
            None => (vec![], vec![], vec![]),
        }
    }
}

fn ev(s: SessionId, r: Option<u64>, l: Option<LockId>, kind: EventKind) -> Event {
    Event {
        session: s,
        request: r.map(RequestId),
        lock: l,
        kind,
    }
}

pub fn ev_open(s: SessionId, ttl_ms: u64) -> Event {
    ev(s, None, None, EventKind::SessionOpened { ttl_ms })
}

/// A grant without a value block read.
pub fn granted(s: SessionId, r: u64, l: LockId, mode: Mode, token: u64) -> Event {
    ev(
        s,
        Some(r),
        Some(l),
        EventKind::Granted {
            mode,
            token: FencingToken(token),
            value: None,
            value_valid: true,
        },
    )
}

/// A grant that read the value block.
pub fn granted_v(
    s: SessionId,
    r: u64,
    l: LockId,
    mode: Mode,
    token: u64,
    value: &[u8],
    valid: bool,
) -> Event {
    let mut v = value.to_vec();
    v.resize(64, 0);
    ev(
        s,
        Some(r),
        Some(l),
        EventKind::Granted {
            mode,
            token: FencingToken(token),
            value: Some(v),
            value_valid: valid,
        },
    )
}

pub fn queued(s: SessionId, r: u64, l: LockId) -> Event {
    ev(s, Some(r), Some(l), EventKind::Queued)
}

pub fn not_queued(s: SessionId, r: u64, l: Option<LockId>) -> Event {
    ev(s, Some(r), l, EventKind::NotQueued)
}

pub fn deadlock(s: SessionId, r: u64, l: Option<LockId>) -> Event {
    ev(s, Some(r), l, EventKind::Deadlock)
}

pub fn cancelled(s: SessionId, r: u64, l: LockId) -> Event {
    ev(s, Some(r), Some(l), EventKind::Cancelled)
}

pub fn timed_out(s: SessionId, r: u64, l: LockId) -> Event {
    ev(s, Some(r), Some(l), EventKind::TimedOut)
}

pub fn unlocked(s: SessionId, r: u64, l: LockId) -> Event {
    ev(s, Some(r), Some(l), EventKind::Unlocked)
}

pub fn blocking(s: SessionId, l: LockId, mode: Mode) -> Event {
    ev(s, None, Some(l), EventKind::Blocking { mode })
}

pub fn rejected(s: SessionId, r: u64, l: Option<LockId>, reason: impl Into<Reject>) -> Event {
    ev(
        s,
        Some(r),
        l,
        EventKind::Rejected {
            reason: reason.into(),
        },
    )
}

pub fn expired(s: SessionId) -> Event {
    ev(s, None, None, EventKind::SessionExpired)
}

pub fn closed(s: SessionId, r: u64) -> Event {
    ev(s, Some(r), None, EventKind::SessionClosed)
}

pub fn renewed(s: SessionId, r: u64, ttl_ms: u64) -> Event {
    ev(s, Some(r), None, EventKind::Renewed { ttl_ms })
}
