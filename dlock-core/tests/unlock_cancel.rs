//! R44..R49 (unlock and cancel) and R6/R52 (ownership, unknown ids).

mod common;

use common::*;
use dlock_core::{LockState, Mode, Reject};

#[test]
fn r45_unlock_of_a_pending_lock_is_busy() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    h.convert(a, 2, la, Mode::EX); // idx 6: converting
    let (lc, _) = h.lock(c, 1, "r", Mode::EX); // idx 7: waiting
    assert_eq!(
        h.unlock(a, 3, la),
        vec![rejected(a, 3, Some(la), Reject::Busy)]
    );
    assert_eq!(
        h.unlock(c, 2, lc),
        vec![rejected(c, 2, Some(lc), Reject::Busy)]
    );
    assert_eq!(h.queues("r"), (vec![lb], vec![la], vec![lc]));
}

#[test]
fn r46_cancel_a_waiting_request() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 7, "r", Mode::EX); // idx 5
    let (lc, _) = h.lock(c, 1, "r", Mode::CR); // idx 6: behind b
    // The completion carries the original request id; the pass grants c.
    assert_eq!(
        h.cancel(b, 8, lb),
        vec![cancelled(b, 7, lb), granted(c, 1, lc, Mode::CR, 7)]
    );
    // The lock no longer exists.
    assert_eq!(
        h.cancel(b, 9, lb),
        vec![rejected(b, 9, Some(lb), Reject::NotFound)]
    );
    assert_eq!(h.queues("r"), (vec![la, lc], vec![], vec![]));
}

#[test]
fn r46_cancel_the_only_request_destroys_the_resource() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    h.unlock(a, 2, la); // b granted
    let (la2, _) = h.lock(a, 3, "r", Mode::EX); // idx 6 queued
    assert_eq!(h.cancel(a, 4, la2), vec![cancelled(a, 3, la2)]);
    h.unlock(b, 2, lb);
    assert_eq!(h.core.resource_count(), 0);
}

#[test]
fn r47_cancel_a_conversion_keeps_the_old_mode_and_lets_waiters_in() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    h.convert(a, 2, la, Mode::EX); // idx 6
    let (lc, ev) = h.lock(c, 1, "r", Mode::CR); // idx 7: waits only for the convert queue
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    assert_eq!(
        h.cancel(a, 3, la),
        vec![cancelled(a, 2, la), granted(c, 1, lc, Mode::CR, 8)]
    );
    let info = h.core.session(a).unwrap();
    assert_eq!(info.locks[0].state, LockState::Granted { mode: Mode::PR });
    // The token of the old grant is kept.
    assert_eq!(info.locks[0].token, Some(dlock_core::FencingToken(4)));
    let _ = lb;
}

#[test]
fn r48_cancel_with_nothing_pending() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 2
    assert_eq!(
        h.cancel(a, 2, l),
        vec![rejected(a, 2, Some(l), Reject::NotPending)]
    );
    assert_eq!(h.queues("r"), (vec![l], vec![], vec![]));
}

#[test]
fn r6_r52_another_sessions_lock_is_unknown() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let nf = |r| vec![rejected(b, r, Some(l), Reject::NotFound)];
    assert_eq!(h.convert(b, 1, l, Mode::NL), nf(1));
    assert_eq!(h.unlock(b, 2, l), nf(2));
    assert_eq!(h.cancel(b, 3, l), nf(3));
    // Never existed.
    let ghost = dlock_core::LockId(999);
    assert_eq!(
        h.unlock(a, 2, ghost),
        vec![rejected(a, 2, Some(ghost), Reject::NotFound)]
    );
    // Refused requests leave no lock: their index is not a lock id.
    let (_, ev) = h.lock_with(
        b,
        4,
        "r",
        Mode::EX,
        dlock_core::LockFlags::NOQUEUE,
        None,
        None,
    );
    assert_eq!(ev, vec![not_queued(b, 4, None)]);
    let gone = dlock_core::LockId(h.index);
    assert_eq!(
        h.cancel(b, 5, gone),
        vec![rejected(b, 5, Some(gone), Reject::NotFound)]
    );
}

#[test]
fn r51_locks_of_a_silent_session_keep_blocking_until_its_lease_ends() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    let b = h.open_ttl("b", 100_000);
    h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    assert_eq!(h.tick_after(999), vec![]);
    assert_eq!(h.queues("r").2, vec![lb]);
    assert_eq!(
        h.tick_after(1),
        vec![expired(a), granted(b, 1, lb, Mode::EX, 6)]
    );
    // After expiry the session and its ids are gone.
    assert_eq!(
        h.renew(a, 2),
        vec![rejected(a, 2, None, Reject::UnknownSession)]
    );
    assert_eq!(
        h.unlock(a, 3, dlock_core::LockId(3)),
        vec![rejected(
            a,
            3,
            Some(dlock_core::LockId(3)),
            Reject::UnknownSession
        )]
    );
}

#[test]
fn any_command_renews_the_lease() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    h.now = 900;
    let (l, _) = h.lock(a, 1, "r", Mode::EX);
    assert_eq!(h.core.next_deadline(), Some(1_900));
    h.now = 1_800;
    h.cancel(a, 2, l); // rejected NOT_PENDING, still renews
    assert_eq!(h.core.next_deadline(), Some(2_800));
    assert_eq!(h.tick_after(999), vec![]);
    assert_eq!(h.tick_after(1), vec![expired(a)]);
    assert_eq!(h.core.lock_count(), 0);
}

#[test]
fn r50_expiry_of_many_sessions_in_one_tick() {
    let mut h = H::new();
    let b = h.open_ttl("b", 100_000);
    let mut sessions = Vec::new();
    for i in 0..50 {
        let s = h.open_ttl(&format!("s{i}"), 1_000);
        h.lock(s, 1, "shared", Mode::PR);
        h.lock(s, 2, &format!("own{i}"), Mode::EX);
        sessions.push(s);
    }
    let (lb, _) = h.lock(b, 1, "shared", Mode::EX);
    let ev = h.tick_after(1_000);
    let mut want: Vec<_> = sessions.iter().map(|&s| expired(s)).collect();
    want.push(granted(b, 1, lb, Mode::EX, h.index));
    assert_eq!(ev, want);
    assert_eq!(h.core.resource_count(), 1);
    assert_eq!(h.core.lock_count(), 1);
}

#[test]
fn r44_unlock_grants_the_waiter_and_the_last_unlock_ends_the_resource() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    assert_eq!(
        h.unlock(a, 2, la),
        vec![unlocked(a, 2, la), granted(b, 1, lb, Mode::EX, 5)]
    );
    assert_eq!(h.queues("r"), (vec![lb], vec![], vec![]));
    assert_eq!(h.unlock(b, 2, lb), vec![unlocked(b, 2, lb)]);
    assert_eq!(h.core.resource(b"r"), None);
}

#[test]
fn r46_r52_a_cancelled_requests_id_is_unknown_to_every_command() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    // The successful cancel has no event of its own: only the request's completion.
    assert_eq!(h.cancel(b, 2, lb), vec![cancelled(b, 1, lb)]);
    let nf = |r| vec![rejected(b, r, Some(lb), Reject::NotFound)];
    assert_eq!(h.unlock(b, 3, lb), nf(3));
    assert_eq!(h.cancel(b, 4, lb), nf(4));
    assert_eq!(h.convert(b, 5, lb, Mode::PR), nf(5));
    assert_eq!(h.core.resource(b"r").unwrap().waiting, vec![]);
}

#[test]
fn r48_a_cancel_after_the_conversion_was_granted_finds_nothing_pending() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::PR); // idx 2
    assert_eq!(
        h.convert(a, 2, l, Mode::EX),
        vec![granted(a, 2, l, Mode::EX, 3)]
    );
    assert_eq!(
        h.cancel(a, 3, l),
        vec![rejected(a, 3, Some(l), Reject::NotPending)]
    );
    let info = h.core.session(a).unwrap();
    assert_eq!(info.locks[0].state, LockState::Granted { mode: Mode::EX });
}
