//! The session: resume and retransmission, refused resume, renewals and the local lease,
//! acknowledgements, reconnect backoff, request timeouts, close.

use std::time::Duration;

use dlock_core::{EventKind, LockId, Mode, SessionId};
use dlock_proto::{ClientMessage, Refusal, Request, Resume};

use super::*;
use crate::lock_state::LostReason;
use crate::machine::conn_state::ConnState;
use crate::machine::renewal::ACK_WITH_RENEWAL;

#[test]
fn resume_retransmits_outstanding_requests_and_drops_replayed_duplicates() {
    let mut h = Harness::connected(Duration::from_secs(10));
    let (_, mut rx) = h.lock(b"r", Mode::EX);
    let (id, body) = h.request();
    assert!(matches!(&body, Request::Lock(r) if r.resource == b"r" && r.mode == Mode::EX));
    let lock = LockId(100);
    let queued_seq = h.event(Some(id), Some(lock), EventKind::Queued);

    // The client reconnects and resumes with the last sequence number it saw.
    let hello = h.reconnect();
    let resume = Resume {
        session: SESSION,
        secret: SECRET,
        last_seq: queued_seq,
    };
    assert_eq!(hello.resume, Some(resume));
    h.frame(welcome(true, SESSION, 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    // The outstanding request is re-sent with its id, then a renewal goes out at once,
    // without an Ack: the resume acknowledged everything received.
    let frames = h.frames();
    assert!(
        matches!(
            &frames[..],
            [
                ClientMessage::Request { id: again, body: Request::Lock(_) },
                ClientMessage::Request { body: Request::Renew, .. },
            ] if *again == id
        ),
        "{frames:?}"
    );

    // Replay (with a duplicate of the already seen Queued), then the grant twice.
    h.event_at(queued_seq, Some(id), Some(lock), EventKind::Queued);
    let grant_seq = h.event(Some(id), Some(lock), granted(Mode::EX, 5));
    h.event_at(grant_seq, Some(id), Some(lock), granted(Mode::EX, 5));
    let l = match answer(&mut rx) {
        Some(Ok(Outcome::Locked(l))) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!((l.shared.lock, l.shared.token()), (lock, FencingToken(5)));
    assert_eq!(h.view.session(), SESSION);

    // A replayed blocking notification (a sequence number already seen) is dropped.
    let blocking = |mode| EventKind::Blocking { mode };
    let s = h.event(None, Some(lock), blocking(Mode::PR));
    h.event_at(s, None, Some(lock), blocking(Mode::CR));
    h.event(None, Some(lock), blocking(Mode::EX));
    assert_eq!(l.shared.pop_blocking(), Some(Mode::PR));
    assert_eq!(
        l.shared.pop_blocking(),
        Some(Mode::EX),
        "the duplicate was delivered"
    );
    assert_eq!(l.shared.pop_blocking(), None);
}

#[test]
fn refused_resume_loses_locks_fails_pending_requests_and_opens_a_new_session() {
    let mut h = Harness::connected(Duration::from_secs(10));
    let held = h.grant(LockId(1));
    let (_, mut pending) = h.lock(b"waiting", Mode::EX);
    let (id, _) = h.request();
    h.event(Some(id), Some(LockId(2)), EventKind::Queued);

    assert!(h.reconnect().resume.is_some());
    h.frame(ServerMessage::Refused(Refusal::UnknownSession));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: false }]
    ));
    assert_eq!(held.shared.lost_reason(), Some(LostReason::SessionExpired));
    assert!(matches!(
        answer(&mut pending),
        Some(Err(Error::SessionLost))
    ));
    assert_eq!(h.view.session(), SessionId(0));

    // A fresh session at once, without resume.
    h.advance(Duration::ZERO);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert_eq!(h.up().resume, None);
    h.frame(welcome(false, SessionId(8), 10_000));
    assert_eq!(h.view.session(), SessionId(8));
    // The old guard's lock is refused locally: it belonged to the lost session.
    let mut rx = h.unlock(LockId(1), Origin::Guard(1));
    assert!(matches!(answer(&mut rx), Some(Err(Error::SessionLost))));
    assert_eq!(h.frames(), []);
}

#[test]
fn local_lease_lapses_before_the_server_could_expire_the_session() {
    // Short enough that the lease lapses before an unanswered renewal drops the connection
    // (see the next test).
    let ttl = Duration::from_secs(1);
    let mut h = Harness::connected(ttl);
    let l = h.grant(LockId(1));

    // Renewals about every TTL/3, with an Ack of every event received so far once
    // ACK_WITH_RENEWAL of them wait for one (each renewal's answer is an event too); the
    // server confirms them for a while.
    let mut last_confirmed_send = h.now;
    let mut acked = 0;
    let mut with_ack = 0;
    for _ in 0..10 {
        let sent = h.next_deadline();
        assert_renewal_due(sent, last_confirmed_send, ttl);
        let frames = h.frames();
        let received = h.seq - 1;
        let ack_due = received >= acked + ACK_WITH_RENEWAL;
        let id = match &frames[..] {
            [
                ClientMessage::Request {
                    id,
                    body: Request::Renew,
                },
            ] if !ack_due => *id,
            [
                ClientMessage::Request {
                    id,
                    body: Request::Renew,
                },
                ClientMessage::Ack { seq },
            ] if ack_due && *seq == received => {
                acked = received;
                with_ack += 1;
                *id
            }
            other => panic!("expected Renew (and Ack: {ack_due}), got {other:?}"),
        };
        last_confirmed_send = sent;
        h.event(Some(id), None, EventKind::Renewed { ttl_ms: 1000 });
    }
    // The grant and ten answers: acknowledged with the 4th and the 8th renewal.
    assert_eq!(with_ack, 2);
    assert_eq!(l.shared.lost_reason(), None);

    // Then it goes silent: renewals still go out, and the lease lapses exactly at the last
    // confirmed send + TTL − margin (default max(TTL/10, 100 ms) = 100 ms).
    let lapse = last_confirmed_send + ttl - MS * 100;
    while l.shared.lost_reason().is_none() {
        assert!(h.next_deadline() <= lapse);
    }
    assert_eq!(h.now, lapse);
    assert_eq!(l.shared.lost_reason(), Some(LostReason::LocalLeaseLapsed));
    assert_eq!(h.view.session(), SessionId(0));
    // Best effort: Goodbye on the old connection, written before it is closed.
    let frames = h.frames();
    assert!(
        matches!(
            frames.last(),
            Some(ClientMessage::Request {
                body: Request::Goodbye,
                ..
            })
        ),
        "{frames:?}"
    );
    // And a fresh session is asked for at once.
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: true },
            Action::Connect { .. }
        ]
    ));
    assert_eq!(h.up().resume, None);
}

#[test]
fn a_renewal_unanswered_for_a_sixth_of_the_ttl_drops_the_connection_and_resumes() {
    let ttl = Duration::from_secs(12);
    let mut h = Harness::connected(ttl);
    let l = h.grant(LockId(1));
    let opened = h.now;
    let renewal = |frames: &[ClientMessage]| match frames {
        [
            ClientMessage::Request {
                id,
                body: Request::Renew,
            },
            ..,
        ] if frames[1..]
            .iter()
            .all(|f| matches!(f, ClientMessage::Ack { .. })) =>
        {
            *id
        }
        other => panic!("expected a Renew, got {other:?}"),
    };

    // A renewal at about TTL/3 that the server never answers, on a connection that never
    // says it broke (the server's machine gone, a partition).
    let sent = h.next_deadline();
    assert_renewal_due(sent, opened, ttl);
    let unanswered = renewal(&h.frames());
    h.advance(ttl / 6 - MS);
    assert!(h.actions().is_empty(), "still waiting for the answer");
    assert_eq!(h.next_deadline(), sent + ttl / 6);
    // With one endpoint, that is a failed round (the driver reports it only for the first
    // connection); with several, the next one is tried at once (see the endpoint tests).
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: false },
            Action::ConnectFailed(_)
        ]
    ));
    // The client reconnects while the lease has time left, and resumes.
    h.advance(MS * 800);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert!(h.up().resume.is_some());
    h.frame(welcome(true, SESSION, 12_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    // The unanswered renewal goes again with its id, and a new one after it.
    let frames = h.frames();
    let again = match &frames[..] {
        [
            ClientMessage::Request {
                id,
                body: Request::Renew,
            },
            rest @ ..,
        ] => {
            assert_eq!(*id, unanswered);
            renewal(rest)
        }
        other => panic!("{other:?}"),
    };
    h.event(
        Some(unanswered),
        None,
        EventKind::Renewed { ttl_ms: 12_000 },
    );
    h.event(Some(again), None, EventKind::Renewed { ttl_ms: 12_000 });
    assert_eq!(l.shared.lost_reason(), None);
    // Answered renewals hold nothing against the connection: the next deadline is the
    // next renewal, and the lock is held past the first session lease.
    let resumed = h.now;
    let next = h.next_deadline();
    assert_renewal_due(next, resumed, ttl);
    let id = renewal(&h.frames());
    h.event(Some(id), None, EventKind::Renewed { ttl_ms: 12_000 });
    h.advance(ttl / 3 - MS);
    assert!(h.actions().is_empty());
    assert!(h.now > opened + ttl && l.shared.lost_reason().is_none());
}

#[test]
fn a_lease_that_lapses_while_reconnecting_is_not_resumed_afterwards() {
    // Short enough that the attempt is not cut before the lease lapses (it is cut at
    // max(TTL/6, 1 s)).
    let ttl = Duration::from_secs(1);
    let mut h = Harness::connected(ttl);
    let l = h.grant(LockId(1));
    let opened = h.now;

    // The server stops answering handshakes: the resume hangs past the local lease.
    assert!(h.reconnect().resume.is_some());
    while l.shared.lost_reason().is_none() {
        h.next_deadline();
    }
    assert_eq!(h.now, opened + ttl - MS * 100);
    assert_eq!(l.shared.lost_reason(), Some(LostReason::LocalLeaseLapsed));
    // The hanging resume attempt is given up, and the next one opens a fresh session.
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: false },
            Action::Connect { .. }
        ]
    ));
    assert_eq!(h.up().resume, None);
    // Even if a server resumed a session for it, the client does not take it back: it
    // ends that session and starts over.
    h.frame(welcome(true, SESSION, 1000));
    assert!(matches!(h.requests()[..], [(_, Request::Goodbye)]));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: true }]
    ));
    h.advance(Duration::ZERO);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    assert_eq!(h.up().resume, None);
    h.frame(welcome(false, SessionId(9), 1000));
    assert_eq!(h.view.session(), SessionId(9));
    assert!(l.shared.lost_reason().is_some());
}

#[test]
fn many_unacknowledged_events_are_acknowledged_without_waiting_for_a_renewal() {
    let mut h = Harness::connected(Duration::from_secs(600));
    let lock = LockId(1);
    h.grant(lock);
    for _ in 0..200 {
        h.event(None, Some(lock), EventKind::Blocking { mode: Mode::PR });
    }
    // Events 1..=201 (the grant, then 200 notifications): an Ack every 64.
    let acks = [64, 128, 192].map(|seq| ClientMessage::Ack { seq });
    assert_eq!(h.frames(), acks);
}

#[test]
fn reconnects_back_off_exponentially_with_full_jitter() {
    let mut h = Harness::connected(Duration::from_secs(600));
    h.lose_connection();
    let mut gaps = Vec::new();
    for k in 0..7u32 {
        let ConnState::Backoff { retry_at } = h.m.state else {
            panic!("not backing off: {:?}", h.m.state);
        };
        let gap = retry_at - h.now;
        // Attempt k waits in [0, d] with d = min(100 ms · 2^k, 800 ms).
        let d = (MS * 100 * 2u32.pow(k)).min(MS * 800);
        assert!(gap <= d, "gap {k} = {gap:?} > {d:?}");
        gaps.push(gap);
        h.advance(gap);
        assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        h.m.handle_connect_failed(refused, h.now);
        assert!(matches!(
            h.actions()[..],
            [
                Action::Disconnect { graceful: false },
                Action::ConnectFailed(Error::Connect(_))
            ]
        ));
    }
    let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 1, "no jitter: {gaps:?}");

    // A success starts the windows over.
    h.advance(MS * 800);
    assert!(matches!(h.actions()[..], [Action::Connect { .. }]));
    h.up();
    h.frame(welcome(true, SESSION, 600_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    h.lose_connection();
    let ConnState::Backoff { retry_at } = h.m.state else {
        panic!("not backing off");
    };
    assert!(retry_at - h.now <= MS * 100);
}

#[test]
fn a_connection_attempt_that_takes_too_long_is_given_up() {
    let mut h = Harness::with(settings(Duration::from_secs(10)));
    h.up();
    // No Welcome within the connect timeout (5 s).
    h.advance(Duration::from_secs(5));
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: false },
            Action::ConnectFailed(Error::Connect(_))
        ]
    ));
    assert!(matches!(h.m.state, ConnState::Backoff { .. }));
}

#[test]
fn unanswered_requests_time_out_and_say_whether_the_client_was_connected() {
    let mut s = settings(Duration::from_secs(600));
    s.request_timeout = Some(MS * 500);
    let mut h = Harness::connected_with(s);

    // Connected, but the server never answers.
    let mut ping = h.call(What::Ping);
    assert_eq!(h.requests().len(), 1);
    h.advance(MS * 499);
    assert!(answer(&mut ping).is_none());
    h.advance(MS);
    assert!(matches!(
        answer(&mut ping),
        Some(Err(Error::RequestTimeout))
    ));

    // Disconnected: the ping waits for a connection that does not come.
    h.lose_connection();
    let mut ping = h.call(What::Ping);
    h.advance(MS * 500);
    assert!(matches!(answer(&mut ping), Some(Err(Error::Disconnected))));
}

#[test]
fn close_says_goodbye_and_stops_once_the_server_confirms() {
    let mut h = Harness::connected(Duration::from_secs(10));
    let l = h.grant(LockId(1));
    let (reply, mut closed) = oneshot::channel();
    h.op(Op::Close(reply));
    let (id, body) = h.request();
    assert_eq!(body, Request::Goodbye);
    // New work is refused while closing.
    let mut ping = h.call(What::Ping);
    assert!(matches!(answer(&mut ping), Some(Err(Error::Closed))));
    h.event(Some(id), None, EventKind::SessionClosed);
    assert!(matches!(answer(&mut closed), Some(Ok(Outcome::Closed))));
    assert_eq!(l.shared.lost_reason(), Some(LostReason::Closed));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: true }, Action::Stop]
    ));
    assert_eq!(h.m.poll_timeout(), None);
}

#[test]
fn when_every_handle_is_gone_the_session_ends_with_goodbye() {
    let mut h = Harness::connected(Duration::from_secs(10));
    h.m.handle_handles_gone(h.now);
    assert!(matches!(h.requests()[..], [(_, Request::Goodbye)]));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: true }, Action::Stop]
    ));
    assert_eq!(h.view.session(), SessionId(0));
}

#[test]
fn a_server_shutdown_loses_the_session_and_reconnects_after_a_backoff() {
    let mut h = Harness::connected(Duration::from_secs(10));
    let l = h.grant(LockId(1));
    h.frame(ServerMessage::ShuttingDown);
    assert_eq!(l.shared.lost_reason(), Some(LostReason::ServerShutdown));
    assert!(matches!(
        h.actions()[..],
        [Action::Disconnect { graceful: false }]
    ));
    assert!(matches!(h.m.state, ConnState::Backoff { .. }));
}

#[test]
fn a_zero_lease_is_not_asked_for_as_the_servers_default() {
    let mut h = Harness::with(settings(Duration::ZERO));
    assert_eq!(
        h.up().lease_ttl_ms,
        1,
        "0 on the wire would mean the default"
    );
    let mut h = Harness::with(settings(Duration::from_micros(1)));
    assert_eq!(h.up().lease_ttl_ms, 1);
}

#[test]
fn a_first_connect_that_times_out_says_whether_anything_answered() {
    let reason = |actions: &[Action]| match actions {
        [.., Action::ConnectFailed(e)] => e.to_string(),
        other => panic!("expected a failed attempt, got {other:?}"),
    };
    // Nothing accepts the connection within the connect timeout.
    let mut h = Harness::with(settings(Duration::from_secs(10)));
    h.advance(Duration::from_secs(5));
    let e = reason(&h.actions());
    assert!(e.contains("connect timed out"), "{e}");
    // Something accepts it and never answers the Hello: another service on that port.
    let mut h = Harness::with(settings(Duration::from_secs(10)));
    h.up();
    h.advance(Duration::from_secs(5));
    let e = reason(&h.actions());
    assert!(e.contains("no dlock handshake answer"), "{e}");
}
