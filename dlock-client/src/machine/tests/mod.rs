//! Scenario tests of the session machine on virtual time: feed frames and ops, move `now`,
//! assert the exact frames transmitted, the actions and the answers.

mod endpoints;
mod given_up;
mod locks;
mod session;

use std::sync::Arc;
use std::time::Duration;

use dlock_core::{
    ConvertRequest, Event, EventKind, FencingToken, LockFlags, LockId, LockRequest, Mode, Reject,
    RequestId, SessionId,
};
use dlock_proto::{ClientMessage, Hello, PROTOCOL_VERSION, Request, ServerMessage, Welcome};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Action, SessionMachine};
use crate::error::{Error, Result};
use crate::op::{Answer, Call, Key, NewLock, Op, OpSender, Origin, Outcome, What, plain_unlock};
use crate::settings::Settings;
use crate::view::SessionView;

pub(super) const SESSION: SessionId = SessionId(7);
pub(super) const SECRET: u128 = 42;
pub(super) const MS: Duration = Duration::from_millis(1);

/// Asserts that a renewal at `at` comes a third of `ttl` after `from`, give or take its jitter
/// (a tenth of that third).
#[track_caller]
pub(super) fn assert_renewal_due(at: Instant, from: Instant, ttl: Duration) {
    let range = super::renewal::renewal_wait_range(ttl);
    assert!(
        at >= from && range.contains(&(at - from)),
        "a renewal {:?} after the last, expected one in {range:?}",
        at.saturating_duration_since(from)
    );
}

/// A machine, its virtual clock and the server's event numbering.
pub(super) struct Harness {
    pub(super) m: SessionMachine,
    pub(super) now: Instant,
    pub(super) view: Arc<SessionView>,
    /// The next event sequence number the scripted server uses.
    pub(super) seq: u64,
    /// The op channel guards built in a test send to.
    pub(super) tx: OpSender,
    pub(super) ops: mpsc::UnboundedReceiver<Op>,
}

pub(super) fn settings(ttl: Duration) -> Settings {
    Settings {
        token: None,
        endpoints: vec!["127.0.0.1:1".into()],
        name: "scripted".into(),
        lease_ttl: Some(ttl),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(30)),
        backoff_min: MS * 100,
        backoff_max: MS * 800,
        safety_margin: None,
    }
}

/// A machine with session [`SESSION`] open and nothing left to send (for the driver's tests).
pub(crate) fn connected_machine(ttl: Duration) -> SessionMachine {
    Harness::connected(ttl).m
}

impl Harness {
    /// A machine that has asked to connect, nothing more.
    pub(super) fn with(settings: Settings) -> Harness {
        let view = Arc::new(SessionView::default());
        let now = Instant::now();
        let (tx, ops) = mpsc::unbounded_channel();
        let tx = OpSender::new(tx, None);
        let mut h = Harness {
            m: SessionMachine::new(settings, view.clone(), 1, now),
            now,
            view,
            seq: 1,
            tx,
            ops,
        };
        assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
        h
    }

    /// A machine with session [`SESSION`] open.
    pub(super) fn connected(ttl: Duration) -> Harness {
        Harness::connected_with(settings(ttl))
    }

    pub(super) fn connected_with(settings: Settings) -> Harness {
        let ttl_ms = settings.lease_ttl.map_or(10_000, |t| t.as_millis() as u64);
        let mut h = Harness::with(settings);
        let hello = h.up();
        assert_eq!(hello.resume, None);
        assert_eq!(hello.client_name, "scripted");
        assert_eq!(hello.lease_ttl_ms, ttl_ms);
        h.frame(welcome(false, SESSION, ttl_ms));
        assert!(matches!(h.actions()[..], [Action::Established]));
        assert_eq!(h.view.session(), SESSION);
        assert_eq!(h.frames(), []);
        h
    }

    pub(super) fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    pub(super) fn frames(&mut self) -> Vec<ClientMessage> {
        std::iter::from_fn(|| self.m.poll_transmit()).collect()
    }

    /// The requests sent since the last look (acks left out).
    pub(super) fn requests(&mut self) -> Vec<(RequestId, Request)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                ClientMessage::Request { id, body } => Some((id, body)),
                _ => None,
            })
            .collect()
    }

    /// The one request sent since the last look.
    pub(super) fn request(&mut self) -> (RequestId, Request) {
        let mut r = self.requests();
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    /// The TCP connection comes up: returns the `Hello` sent on it.
    pub(super) fn up(&mut self) -> Hello {
        self.m.handle_connection_up(self.now);
        match &self.frames()[..] {
            [ClientMessage::Hello(h)] => h.clone(),
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    pub(super) fn frame(&mut self, msg: ServerMessage) {
        self.m.handle_frame(msg, self.now);
    }

    /// Moves the clock by `d`, handling every deadline on the way at its instant.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..10_000 {
            match self.m.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.m.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("deadlines do not move on");
    }

    /// Moves the clock to the machine's next deadline and handles it.
    pub(super) fn next_deadline(&mut self) -> Instant {
        let t = self.m.poll_timeout().expect("a deadline");
        self.now = self.now.max(t);
        self.m.handle_timeout(self.now);
        t
    }

    /// An event of [`SESSION`] with the next sequence number; returns that number.
    pub(super) fn event(
        &mut self,
        request: Option<RequestId>,
        lock: Option<LockId>,
        kind: EventKind,
    ) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        self.event_at(seq, request, lock, kind);
        seq
    }

    pub(super) fn event_at(
        &mut self,
        seq: u64,
        request: Option<RequestId>,
        lock: Option<LockId>,
        kind: EventKind,
    ) {
        let event = Event {
            session: SESSION,
            request,
            lock,
            kind,
        };
        self.frame(ServerMessage::Event { seq, event });
    }

    pub(super) fn op(&mut self, op: Op) {
        self.m.handle_op(op, self.now);
    }

    /// Hands every op the test's guards sent to the machine.
    pub(super) fn pump(&mut self) -> usize {
        let mut n = 0;
        while let Ok(op) = self.ops.try_recv() {
            self.op(op);
            n += 1;
        }
        n
    }

    pub(super) fn call(&mut self, what: What) -> Answer {
        let (reply, rx) = oneshot::channel();
        self.op(Op::Call(Call::new(what, reply)));
        rx
    }

    /// A lock call on `resource`; returns its key and answer.
    pub(super) fn lock(&mut self, resource: &[u8], mode: Mode) -> (Key, Answer) {
        let key = Key::next();
        let what = What::Lock {
            req: LockRequest {
                resource: resource.to_vec(),
                mode,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            },
            key,
            queued: None,
        };
        (key, self.call(what))
    }

    /// A lock call on `r` in EX, queued as `lock`, then abandoned by its caller: the ids of
    /// the lock request and of the cancel sent for it.
    pub(super) fn queued_then_abandoned(&mut self, lock: LockId) -> (RequestId, RequestId) {
        let (key, _rx) = self.lock(b"r", Mode::EX);
        let (id, _) = self.request();
        self.event(Some(id), Some(lock), EventKind::Queued);
        self.op(Op::Abandon(key));
        let (cancel, body) = self.request();
        assert_eq!(body, Request::Cancel { lock });
        (id, cancel)
    }

    /// A lock granted at once as `lock` in EX, and its guard's unlock sent: the lock, the
    /// unlock's answer and its request id.
    pub(super) fn grant_then_unlock(&mut self, lock: LockId) -> (NewLock, Answer, RequestId) {
        let l = self.grant(lock);
        let rx = self.unlock(lock, Origin::Guard(1));
        let (id, _) = self.request();
        (l, rx, id)
    }

    /// An unlock of `lock` from a guard of the first session.
    pub(super) fn unlock(&mut self, lock: LockId, origin: Origin) -> Answer {
        self.call(What::Unlock {
            req: plain_unlock(lock),
            origin,
        })
    }

    /// A lock granted at once as `lock` with `mode`.
    pub(super) fn grant_mode(&mut self, lock: LockId, mode: Mode) -> NewLock {
        let (_, mut rx) = self.lock(b"r", mode);
        let (id, body) = self.request();
        assert!(matches!(body, Request::Lock(_)), "{body:?}");
        self.event(Some(id), Some(lock), granted(mode, 1));
        match answer(&mut rx) {
            Some(Ok(Outcome::Locked(l))) => l,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    pub(super) fn grant(&mut self, lock: LockId) -> NewLock {
        self.grant_mode(lock, Mode::EX)
    }

    /// The connection breaks and the machine connects again after its backoff; returns the
    /// new connection's `Hello`.
    pub(super) fn reconnect(&mut self) -> Hello {
        self.lose_connection();
        self.advance(MS * 800);
        assert!(matches!(self.actions()[..], [Action::Connect { .. }]));
        self.up()
    }

    pub(super) fn lose_connection(&mut self) {
        let err = Error::Protocol("test".into());
        self.m.handle_connection_lost(err, self.now);
        assert!(matches!(
            self.actions()[..],
            [Action::Disconnect { graceful: false }]
        ));
    }
}

pub(super) fn welcome(resumed: bool, session: SessionId, ttl_ms: u64) -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        session,
        secret: SECRET,
        lease_ttl_ms: ttl_ms,
        server_version: "scripted".into(),
        protocol_version: PROTOCOL_VERSION,
        resumed,
        lvb_len: 32,
        max_frame_len: 64 * 1024,
        now_ms: 5_000,
    })
}

pub(super) fn granted(mode: Mode, token: u64) -> EventKind {
    EventKind::Granted {
        mode,
        token: FencingToken(token),
        value: None,
        value_valid: true,
    }
}

pub(super) fn rejected(reason: Reject) -> EventKind {
    EventKind::Rejected { reason }
}

/// A conversion of `lock` to `mode` (no flags, no value) from `origin`: its key and the call.
pub(super) fn convert(lock: LockId, mode: Mode, origin: Origin) -> (Key, What) {
    let key = Key::next();
    let what = What::Convert {
        req: ConvertRequest {
            lock,
            mode,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        },
        origin,
        key,
        queued: None,
    };
    (key, what)
}

/// The answer if it has arrived.
pub(super) fn answer(rx: &mut Answer) -> Option<Result<Outcome>> {
    rx.try_recv().ok()
}

/// A plain unlock request of `lock`, as a dropped guard sends it.
pub(super) fn plain(lock: LockId) -> Request {
    Request::Unlock(plain_unlock(lock))
}
