//! What the server did not take (refused as overloaded) and nobody waits for, which is sent
//! again until it is taken; what its caller gave up on before it was sent, which is never
//! sent; and new requests not sent when the session is lost, which go in the next one.

use std::time::Duration;

use dlock_core::{EventKind, LockId, LockRequest, Mode, SessionId};
use dlock_proto::codec::MalformedFrame;
use dlock_proto::{Refusal, Reply, Request, RequestError};

use super::*;
use crate::lock_state::LostReason;
use crate::machine::retries::FIRST_DELAY;

const TTL: Duration = Duration::from_secs(10);

/// The server does not take request `id`: it is over its rate.
fn overloaded(h: &mut Harness, id: RequestId) {
    h.frame(ServerMessage::Reply {
        id,
        body: Reply::Error(RequestError::Overloaded),
    });
}

/// Advances to just before `delay` from now, checking nothing is sent, then to `delay`:
/// the one request sent then.
fn sent_after(h: &mut Harness, delay: Duration) -> (RequestId, Request) {
    h.advance(delay - MS);
    assert_eq!(h.requests(), [], "sent before {delay:?}");
    h.advance(MS);
    h.request()
}

/// A lock call on `resource` in EX, sent, then dropped by its caller before any answer:
/// the request's id.
fn given_up_before_an_answer(h: &mut Harness, resource: &[u8]) -> RequestId {
    let (key, _dropped) = h.lock(resource, Mode::EX);
    let (id, _) = h.request();
    h.op(Op::Abandon(key));
    id
}

/// The connection is back after the backoff, and the server refuses to resume the session.
fn resume_refused(h: &mut Harness) {
    h.advance(MS * 800);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert!(h.up().resume.is_some());
    h.frame(ServerMessage::Refused(Refusal::UnknownSession));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: false }]
    ));
}

/// After [`resume_refused`]: the client connects at once and opens session `session`.
fn new_session(h: &mut Harness, session: SessionId) {
    h.advance(Duration::ZERO);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert_eq!(h.up().resume, None);
    h.frame(welcome(false, session, 10_000));
}

#[test]
fn an_unlock_the_server_did_not_take_is_sent_again_later_until_it_is_taken() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(5);
    let (l, mut rx, id) = h.grant_then_unlock(lock);
    overloaded(&mut h, id);
    assert!(matches!(answer(&mut rx), Some(Err(Error::Overloaded))));
    // Not at once into the same overload, and not given up after one more refusal: again
    // after the first delay, then after twice that, as long as it is refused.
    let mut delay = FIRST_DELAY;
    for _ in 0..4 {
        let (id, body) = sent_after(&mut h, delay);
        assert_eq!(body, plain(lock));
        overloaded(&mut h, id);
        assert_eq!(l.shared.lost_reason(), None, "still held");
        delay *= 2;
    }
    let (id, body) = sent_after(&mut h, delay);
    assert_eq!(body, plain(lock));
    h.event(Some(id), Some(lock), EventKind::Unlocked);
    assert_eq!(l.shared.lost_reason(), Some(LostReason::Released));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.requests(), [], "nothing more once released");
}

#[test]
fn once_the_server_takes_requests_again_a_refusal_waits_the_first_delay() {
    let mut h = Harness::connected(TTL);
    let (a, b) = (LockId(1), LockId(2));
    let (la, lb) = (h.grant(a), h.grant(b));
    h.unlock(a, Origin::Release);
    let (id, _) = h.request();
    overloaded(&mut h, id);
    let (id, _) = sent_after(&mut h, FIRST_DELAY);
    overloaded(&mut h, id);
    let (id, _) = sent_after(&mut h, FIRST_DELAY * 2);
    h.event(Some(id), Some(a), EventKind::Unlocked);
    assert_eq!(la.shared.lost_reason(), Some(LostReason::Released));
    h.unlock(b, Origin::Release);
    let (id, _) = h.request();
    overloaded(&mut h, id);
    let (_, body) = sent_after(&mut h, FIRST_DELAY);
    assert_eq!(body, plain(b));
    assert_eq!(lb.shared.lost_reason(), None);
}

#[test]
fn a_cancel_nobody_waits_for_is_sent_again_until_it_is_taken() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(4);
    let (lock_id, id) = h.queued_then_abandoned(lock);
    overloaded(&mut h, id);
    let (id, body) = sent_after(&mut h, FIRST_DELAY);
    assert_eq!(body, Request::Cancel { lock });
    // Taken: the lock request's completion answers it; nothing more is sent.
    h.event(Some(lock_id), Some(lock), EventKind::Cancelled);
    h.event(Some(id), Some(lock), EventKind::Cancelled);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.requests(), []);
}

#[test]
fn a_renewal_the_server_did_not_take_is_sent_again_soon_not_a_third_of_the_ttl_later() {
    let mut h = Harness::connected(TTL);
    h.next_deadline();
    let (id, body) = h.request();
    assert_eq!(body, Request::Renew);
    overloaded(&mut h, id);
    let (_, body) = sent_after(&mut h, FIRST_DELAY);
    assert_eq!(body, Request::Renew);
}

#[test]
fn a_lock_or_conversion_given_up_before_it_was_sent_is_never_sent() {
    let mut s = settings(TTL);
    s.request_timeout = Some(MS * 500);
    let mut h = Harness::connected_with(s);
    let lock = LockId(3);
    let l = h.grant_mode(lock, Mode::EX);
    h.lose_connection();

    // While disconnected: a conversion and a lock time out, another conversion and lock
    // are dropped by their callers.
    let (_, what) = convert(lock, Mode::NL, Origin::Guard(1));
    let mut timed_out_convert = h.call(what);
    let (_, mut timed_out_lock) = h.lock(b"x", Mode::EX);
    let (key, what) = convert(lock, Mode::PR, Origin::Guard(1));
    let _dropped_convert = h.call(what);
    h.op(Op::Abandon(key));
    let (key, _dropped_lock) = h.lock(b"y", Mode::EX);
    h.op(Op::Abandon(key));
    h.advance(MS * 500);
    assert!(matches!(
        answer(&mut timed_out_convert),
        Some(Err(Error::Disconnected))
    ));
    assert!(matches!(
        answer(&mut timed_out_lock),
        Some(Err(Error::Disconnected))
    ));

    // Reconnected and resumed: only the renewal goes out.
    h.advance(MS * 300);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert!(h.up().resume.is_some());
    h.frame(welcome(true, SESSION, 10_000));
    let requests = h.requests();
    assert!(
        matches!(&requests[..], [(_, Request::Renew)]),
        "{requests:?}"
    );
    assert_eq!(
        l.shared.mode(),
        Mode::EX,
        "the guard's mode is as its caller was told"
    );
}

#[test]
fn new_requests_not_sent_when_the_session_is_lost_go_in_the_next_session() {
    let mut h = Harness::connected(TTL);
    let (_, mut sent) = h.lock(b"a", Mode::EX);
    let (id, _) = h.request();
    h.event(Some(id), Some(LockId(2)), EventKind::Queued);
    h.lose_connection();
    let (_, mut unsent) = h.lock(b"b", Mode::PR);
    let mut ping = h.call(What::Ping);

    // The resume is refused: the queued request fails with the session, the new ones wait.
    resume_refused(&mut h);
    assert!(matches!(answer(&mut sent), Some(Err(Error::SessionLost))));
    assert!(answer(&mut unsent).is_none());
    assert!(answer(&mut ping).is_none());

    // They go in the new session, in their order.
    new_session(&mut h, SessionId(8));
    let requests = h.requests();
    let [(lock_id, Request::Lock(req)), (ping_id, Request::Ping)] = &requests[..] else {
        panic!("{requests:?}");
    };
    assert_eq!((req.resource.as_slice(), req.mode), (&b"b"[..], Mode::PR));
    assert!(lock_id < ping_id);
    let new_session = |kind| dlock_core::Event {
        session: SessionId(8),
        request: Some(*lock_id),
        lock: Some(LockId(1)),
        kind,
    };
    h.frame(ServerMessage::Event {
        seq: 1,
        event: new_session(granted(Mode::PR, 9)),
    });
    assert!(
        matches!(answer(&mut unsent), Some(Ok(Outcome::Locked(l))) if l.shared.mode() == Mode::PR)
    );
}

#[test]
fn a_malformed_answer_to_the_handshake_asks_whether_this_is_the_lock_port() {
    let mut h = Harness::with(settings(TTL));
    h.up();
    let malformed = MalformedFrame("UnexpectedEnd".into());
    let text = h.m.malformed(&malformed).to_string();
    assert!(text.contains("UnexpectedEnd"), "{text}");
    assert!(
        text.contains("handshake with 127.0.0.1:1: is this a dlock server's lock port?"),
        "{text}"
    );
    // Once the session is up, the frame is just malformed.
    h.frame(welcome(false, SESSION, 10_000));
    let text = h.m.malformed(&malformed).to_string();
    assert!(!text.contains("lock port"), "{text}");
}

/// The lock request on `resource` among `requests`, if that is all there is.
fn only_lock_on<'a>(requests: &'a [(RequestId, Request)], resource: &[u8]) -> &'a LockRequest {
    match requests {
        [(_, Request::Lock(req))] if req.resource == resource => req,
        other => panic!("expected one lock request on {resource:?}, got {other:?}"),
    }
}

#[test]
fn a_lock_waits_for_the_outcome_of_a_request_on_its_resource_given_up_before_an_answer() {
    let mut h = Harness::connected(TTL);
    let first = given_up_before_an_answer(&mut h, b"r");
    assert_eq!(
        h.requests(),
        [],
        "its lock id is not known: nothing to cancel yet"
    );

    // Sent now, the server would judge it against the first (a deadlock with itself, R39):
    // it waits. A lock on another resource goes at once.
    let (_, mut next) = h.lock(b"r", Mode::EX);
    let (_, _other) = h.lock(b"s", Mode::EX);
    only_lock_on(&h.requests(), b"s");

    // The first is granted after all: released first, then the waiting lock goes.
    h.event(Some(first), Some(LockId(1)), granted(Mode::EX, 1));
    let requests = h.requests();
    let [(unlock, body), (lock, Request::Lock(req))] = &requests[..] else {
        panic!("{requests:?}");
    };
    assert_eq!(*body, plain(LockId(1)));
    assert_eq!((req.resource.as_slice(), unlock < lock), (&b"r"[..], true));
    h.event(Some(*lock), Some(LockId(2)), granted(Mode::EX, 2));
    assert!(matches!(answer(&mut next), Some(Ok(Outcome::Locked(_)))));
}

#[test]
fn a_lock_waits_until_a_queued_request_given_up_is_cancelled_or_released() {
    // Cancelled: the waiting lock goes after the cancel's outcome.
    let mut h = Harness::connected(TTL);
    let (first, _cancel) = h.queued_then_abandoned(LockId(4));
    let (_, _next) = h.lock(b"r", Mode::PR);
    assert_eq!(
        h.requests(),
        [],
        "the cancel may still lose the race to a grant"
    );
    h.event(Some(first), Some(LockId(4)), EventKind::Cancelled);
    assert_eq!(only_lock_on(&h.requests(), b"r").mode, Mode::PR);

    // Granted before the cancel arrived: released, then the waiting lock goes.
    let mut h = Harness::connected(TTL);
    let (first, _cancel) = h.queued_then_abandoned(LockId(4));
    let (_, _next) = h.lock(b"r", Mode::PR);
    assert_eq!(h.requests(), []);
    h.event(Some(first), Some(LockId(4)), granted(Mode::EX, 3));
    let requests = h.requests();
    assert!(
        matches!(&requests[..], [(_, u), (_, Request::Lock(req))] if *u == plain(LockId(4)) && req.mode == Mode::PR),
        "{requests:?}"
    );
}

#[test]
fn a_lock_waits_for_a_request_on_its_resource_that_timed_out() {
    let mut s = settings(TTL);
    s.request_timeout = Some(MS * 500);
    let mut h = Harness::connected_with(s);
    let (_, mut timed_out) = h.lock(b"r", Mode::EX);
    let (first, _) = h.request();
    h.advance(MS * 500);
    assert!(matches!(
        answer(&mut timed_out),
        Some(Err(Error::RequestTimeout))
    ));
    let (_, _next) = h.lock(b"r", Mode::EX);
    assert_eq!(h.requests(), []);
    h.event(Some(first), None, EventKind::NotQueued);
    only_lock_on(&h.requests(), b"r");
}

#[test]
fn a_waiting_lock_given_up_is_never_sent_and_one_lost_with_its_session_goes_in_the_next() {
    let mut h = Harness::connected(TTL);
    let first = given_up_before_an_answer(&mut h, b"r");
    let (key, _also_dropped) = h.lock(b"r", Mode::EX);
    h.op(Op::Abandon(key));
    h.event(Some(first), None, EventKind::NotQueued);
    assert_eq!(h.requests(), [], "nobody waits for the second");

    // A lock waiting when the session is lost goes in the next session.
    given_up_before_an_answer(&mut h, b"r");
    let (_, mut waiting) = h.lock(b"r", Mode::CR);
    h.lose_connection();
    resume_refused(&mut h);
    assert!(answer(&mut waiting).is_none());
    new_session(&mut h, SessionId(8));
    assert_eq!(only_lock_on(&h.requests(), b"r").mode, Mode::CR);
}

#[test]
fn a_waiting_lock_fails_with_the_session_when_the_client_closes() {
    let mut h = Harness::connected(TTL);
    given_up_before_an_answer(&mut h, b"r");
    let (_, mut waiting) = h.lock(b"r", Mode::EX);
    let (reply, _closed) = oneshot::channel();
    h.op(Op::Close(reply));
    let (goodbye, body) = h.request();
    assert_eq!(body, Request::Goodbye);
    h.event(Some(goodbye), None, EventKind::SessionClosed);
    assert!(matches!(answer(&mut waiting), Some(Err(Error::Closed))));
}
