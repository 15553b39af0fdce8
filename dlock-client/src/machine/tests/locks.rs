//! Locks: grants that race cancels, explicit cancels, refused unlocks and their plain
//! unlock, values refused before sending.

use std::time::Duration;

use dlock_core::{ConvertRequest, EventKind, Invalid, LockFlags, LockId, Mode, Reject};
use dlock_proto::{Query, Request, UnlockRequest};

use super::*;
use crate::convert::PendingConvert;
use crate::guard::LockGuard;
use crate::lock_state::LostReason;
use crate::op::Waiting;
use crate::options::{ConvertOptions, UnlockOptions};
use crate::pending::PendingLock;

const TTL: Duration = Duration::from_secs(10);

#[test]
fn a_grant_that_races_the_cancel_of_an_abandoned_lock_is_released() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(9);
    let (id, cid) = h.queued_then_abandoned(lock);
    // The grant was already on its way: granted, and the cancel finds nothing pending.
    h.event(Some(id), Some(lock), granted(Mode::EX, 11));
    h.event(Some(cid), Some(lock), rejected(Reject::NotPending));
    assert_eq!(h.requests(), [(RequestId(cid.0 + 1), plain(lock))]);
}

#[test]
fn a_lock_abandoned_before_its_first_answer_is_cancelled_when_queued() {
    let mut h = Harness::connected(TTL);
    let (key, _rx) = h.lock(b"r", Mode::EX);
    let (id, _) = h.request();
    h.op(Op::Abandon(key));
    assert_eq!(h.requests(), [], "no lock id to cancel yet");
    let lock = LockId(4);
    h.event(Some(id), Some(lock), EventKind::Queued);
    assert!(matches!(&h.requests()[..], [(_, Request::Cancel { lock: l })] if *l == lock));
}

#[tokio::test]
async fn a_grant_delivered_to_a_dropped_lock_future_is_released() {
    let mut h = Harness::connected(TTL);
    let (key, rx) = h.lock(b"r", Mode::EX);
    let waiting = Waiting::new(h.tx.clone(), key, rx);
    let (id, _) = h.request();
    let lock = LockId(5);
    h.event(Some(id), Some(lock), granted(Mode::EX, 3));
    // The caller's future is dropped with the grant in its channel.
    drop(waiting);
    assert_eq!(h.pump(), 1);
    assert_eq!(h.requests(), [(RequestId(id.0 + 1), plain(lock))]);
}

#[tokio::test]
async fn a_dropped_pending_lock_is_cancelled_and_a_racing_grant_released() {
    let mut h = Harness::connected(TTL);
    let key = Key::next();
    let (reply, rx) = oneshot::channel();
    let (queued, mut queued_rx) = oneshot::channel();
    let what = What::Lock {
        req: dlock_core::LockRequest {
            resource: b"r".to_vec(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        },
        key,
        queued: Some(queued),
    };
    h.op(Op::Call(Call::new(what, reply)));
    let (id, _) = h.request();
    let lock = LockId(9);
    h.event(Some(id), Some(lock), EventKind::Queued);
    assert_eq!(queued_rx.try_recv().ok(), Some(lock));
    let pending = PendingLock::queued(h.tx.clone(), lock, Waiting::new(h.tx.clone(), key, rx));
    assert!(!pending.is_granted());
    drop(pending);
    assert_eq!(h.pump(), 1);
    let (cid, body) = h.request();
    assert_eq!(body, Request::Cancel { lock });
    // The grant wins the race; the cancel finds nothing pending.
    h.event(Some(id), Some(lock), granted(Mode::EX, 2));
    h.event(Some(cid), Some(lock), rejected(Reject::NotPending));
    assert!(matches!(&h.requests()[..], [(_, r)] if *r == plain(lock)));
}

#[test]
fn a_cancel_succeeds_once_and_a_second_cancel_finds_nothing_pending() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(3);
    let l = h.grant_mode(lock, Mode::NL);
    let (_, what) = convert(lock, Mode::EX, Origin::Guard(1));
    let mut converting = h.call(what);
    let (convert_id, body) = h.request();
    assert!(matches!(
        body,
        Request::Convert(ConvertRequest { mode: Mode::EX, .. })
    ));
    h.event(Some(convert_id), Some(lock), EventKind::Queued);

    let cancel = What::Cancel {
        lock,
        origin: Origin::Guard(1),
    };
    let mut first = h.call(cancel);
    let (c1, _) = h.request();
    let cancel = What::Cancel {
        lock,
        origin: Origin::Guard(1),
    };
    let mut second = h.call(cancel);
    let (c2, body) = h.request();
    assert!(body == Request::Cancel { lock } && c2 > c1);

    // The first cancel succeeds: only the conversion's completion says so. The second
    // finds nothing pending and is refused with its own id.
    h.event(Some(convert_id), Some(lock), EventKind::Cancelled);
    h.event(Some(c2), Some(lock), rejected(Reject::NotPending));
    assert!(matches!(answer(&mut first), Some(Ok(Outcome::Cancelled))));
    assert!(matches!(answer(&mut second), Some(Err(Error::NotPending))));
    assert!(matches!(
        answer(&mut converting),
        Some(Err(Error::Cancelled))
    ));
    assert_eq!(l.shared.mode(), Mode::NL, "the lock keeps its old mode");
}

#[test]
fn a_granted_conversion_updates_the_lock() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(3);
    let l = h.grant_mode(lock, Mode::NL);
    let (_, what) = convert(lock, Mode::PR, Origin::ById);
    let mut rx = h.call(what);
    let (id, _) = h.request();
    h.event(Some(id), Some(lock), granted(Mode::PR, 12));
    assert!(matches!(answer(&mut rx), Some(Ok(Outcome::Converted(g))) if g.mode == Mode::PR));
    assert_eq!(
        (l.shared.mode(), l.shared.token()),
        (Mode::PR, FencingToken(12))
    );
}

#[test]
fn a_guards_unlock_the_server_refuses_changes_nothing() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(3);
    let l = h.grant(lock);
    // The value fits the block length the client was told, yet the server refuses it.
    let req = UnlockRequest {
        lock,
        flags: LockFlags::VALBLK,
        value: Some(b"v".to_vec()),
    };
    let origin = Origin::Guard(1);
    let mut rx = h.call(What::Unlock { req, origin });
    let (id, body) = h.request();
    assert!(matches!(&body, Request::Unlock(UnlockRequest { value: Some(v), .. }) if v == b"v"));
    let too_long = Invalid::ValueTooLong { len: 1, max: 0 };
    h.event(
        Some(id),
        Some(lock),
        rejected(Reject::Invalid(too_long.clone())),
    );
    assert!(matches!(answer(&mut rx), Some(Err(Error::Invalid(i))) if i == too_long));

    // R5, R54: the refused request changed nothing, and the client sends nothing in its
    // place: the lock is still held (its caller can release it by id).
    assert_eq!(h.requests(), []);
    assert_eq!(l.shared.lost_reason(), None);
    assert_eq!(l.shared.mode(), Mode::EX);
}

#[test]
fn a_guards_unlock_refused_as_busy_cancels_nothing() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(8);
    let (l, mut rx, id) = h.grant_then_unlock(lock);
    h.event(Some(id), Some(lock), rejected(Reject::Busy));
    assert!(matches!(answer(&mut rx), Some(Err(Error::Busy))));
    // R45: BUSY changes nothing; the pending conversion is the caller's to cancel.
    assert_eq!(h.requests(), []);
    assert_eq!(l.shared.lost_reason(), None);
}

#[test]
fn a_busy_unlock_whose_caller_stopped_waiting_is_followed_up_like_a_dropped_guards() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(8);
    let (l, rx, id) = h.grant_then_unlock(lock);
    // The unlock's future is dropped after it was sent (a timeout around it, say).
    drop(rx);
    h.event(Some(id), Some(lock), rejected(Reject::Busy));
    let sent = h.requests();
    assert!(
        matches!(&sent[..], [(_, Request::Cancel { lock: l1 }), (_, r)] if *l1 == lock && *r == plain(lock)),
        "{sent:?}"
    );
    assert_eq!(l.shared.lost_reason(), None, "until the server says so");
}

#[test]
fn a_busy_unlock_of_a_dropped_guard_cancels_then_unlocks_once() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(4);
    let l = h.grant(lock);
    // What a dropped guard sends: a plain unlock nobody waits for.
    let req = plain_unlock(lock);
    let origin = Origin::Guard(1);
    h.op(Op::Call(Call::silent(What::Unlock { req, origin })));
    let (id, _) = h.request();
    h.event(Some(id), Some(lock), rejected(Reject::Busy));
    // R45: whatever is pending on the lock is cancelled first, then it is unlocked.
    let sent = h.requests();
    let (cid, uid) = match &sent[..] {
        [(c, Request::Cancel { lock: l1 }), (u, r)] if *l1 == lock && *r == plain(lock) => (*c, *u),
        other => panic!("{other:?}"),
    };
    assert!(cid < uid);
    // Refused again: the client gives up rather than loop.
    h.event(Some(cid), Some(lock), rejected(Reject::NotPending));
    h.event(Some(uid), Some(lock), rejected(Reject::Busy));
    assert_eq!(h.requests(), []);
    assert_eq!(l.shared.lost_reason(), None);
    // Until the session ends, which ends the lock too.
    h.event(None, None, EventKind::SessionExpired);
    assert_eq!(l.shared.lost_reason(), Some(LostReason::SessionExpired));
}

#[test]
fn an_unlock_answered_not_found_forgets_the_lock_without_retrying() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(7);
    let (l, mut rx, id) = h.grant_then_unlock(lock);
    h.event(Some(id), Some(lock), rejected(Reject::NotFound));
    assert!(matches!(answer(&mut rx), Some(Err(Error::NotFound))));
    // The server holds no such lock: nothing is held, nothing more is sent.
    assert_eq!(l.shared.lost_reason(), Some(LostReason::Released));
    assert_eq!(h.requests(), []);
}

#[test]
fn a_refused_unlock_by_id_sends_nothing_in_its_place() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(3);
    let l = h.grant(lock);
    let mut rx = h.unlock(lock, Origin::ById);
    let (id, _) = h.request();
    h.event(Some(id), Some(lock), rejected(Reject::Busy));
    assert!(matches!(answer(&mut rx), Some(Err(Error::Busy))));
    // No cancel and no plain unlock follow.
    assert_eq!(h.requests(), []);
    assert_eq!(l.shared.lost_reason(), None);
    assert_eq!(l.shared.mode(), Mode::EX);
}

#[tokio::test]
async fn values_longer_than_the_value_block_are_refused_before_sending() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(6);
    let len = h.view.lvb_len();
    assert_eq!(len, 32, "the script announces 32");
    let granted = h.grant(lock);
    let shared = granted.shared.clone();
    let mut guard = LockGuard::new(granted, h.tx.clone());

    // A conversion keeps its guard: refused, nothing sent, the lock unchanged.
    let res = guard
        .convert_with(Mode::NL, ConvertOptions::new().value(vec![1u8; len + 1]))
        .await;
    assert!(
        matches!(res, Err(Error::Invalid(Invalid::ValueTooLong { len: l, max: 32 })) if l == len + 1),
        "{res:?}"
    );
    assert_eq!(guard.mode(), Mode::EX);
    assert_eq!(h.pump(), 0);
    let res: std::result::Result<PendingConvert, _> = guard
        .start_convert(Mode::NL, ConvertOptions::new().value(vec![1u8; len + 1]))
        .await;
    assert!(matches!(res, Err(Error::Invalid(_))));
    assert_eq!(h.pump(), 0);

    // An unlock consumes its guard: refused, nothing sent, and the lock still held (R54),
    // not released by the consumed guard either.
    let res = guard
        .unlock_with(UnlockOptions::new().value(vec![1u8; len + 1]))
        .await;
    assert!(
        matches!(res, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
        "{res:?}"
    );
    assert_eq!(h.pump(), 0);
    assert_eq!(shared.lost_reason(), None);
    assert_eq!(shared.mode(), Mode::EX);
}

#[test]
fn a_request_too_large_for_a_frame_is_refused_before_sending() {
    let mut h = Harness::connected(TTL);
    let lock = LockId(8);
    h.grant(lock);
    let (_, mut rx) = h.lock(&vec![b'x'; 70 * 1024], Mode::EX);
    assert!(matches!(answer(&mut rx), Some(Err(Error::TooLarge { .. }))));
    // A guard's unlock that does not fit still releases the lock, plainly.
    let req = UnlockRequest {
        lock,
        flags: LockFlags::VALBLK,
        value: Some(vec![0; 70 * 1024]),
    };
    let mut rx = h.call(What::Unlock {
        req,
        origin: Origin::Guard(1),
    });
    assert!(matches!(answer(&mut rx), Some(Err(Error::TooLarge { .. }))));
    assert!(matches!(&h.requests()[..], [(_, r)] if *r == plain(lock)));

    // Queries name resources too: one that does not fit is refused here, and nothing is
    // sent (sent, it would break the connection and stall every other request on it).
    let huge = vec![b'q'; 70 * 1024];
    let queries = [
        Query::Resource(huge.clone()),
        Query::Prefix {
            prefix: huge.clone(),
            limit: 10,
            after: None,
        },
        Query::Prefix {
            prefix: Vec::new(),
            limit: 10,
            after: Some(huge),
        },
    ];
    for query in queries {
        let mut rx = h.call(What::Query(query));
        assert!(matches!(answer(&mut rx), Some(Err(Error::TooLarge { .. }))));
        assert_eq!(h.frames(), []);
    }
    let mut rx = h.call(What::Query(Query::Resource(b"small".to_vec())));
    assert!(
        matches!(&h.requests()[..], [(_, Request::Query(Query::Resource(r)))] if r == b"small")
    );
    assert!(answer(&mut rx).is_none(), "sent, waiting for its answer");
}
