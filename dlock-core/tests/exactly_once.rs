//! Exactly once across fail-over (HA rule 5): with `Config::exactly_once`, a request re-sent
//! with an id at or below its session's highest one changes nothing and is answered again
//! from what the engine remembers or from state.

mod common;

use common::*;
use dlock_core::{
    Command, Config, Core, FencingToken, Invalid, LockFlags, LockState, Mode, Reject, RequestId,
    SessionId, Snapshot,
};

fn once() -> H {
    H::with(Config {
        exactly_once: true,
        ..Config::default()
    })
}

/// Everything a retransmission must leave alone: queues, tokens and value blocks, sessions
/// with their leases and locks, timers, the lock counts.
fn fingerprint(h: &H) -> String {
    let sessions: Vec<_> = (0..=h.core.last_index())
        .filter_map(|i| h.core.session(SessionId(i)))
        .collect();
    format!(
        "{:?}\n{sessions:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        h.core.resources(b"", usize::MAX),
        h.core.waits_for(),
        h.core.next_deadline(),
        h.core.last_token(),
        h.core.census(),
    )
}

/// Applies `resend` (a retransmission) and checks that it changed nothing but the index
/// and the clock; returns what it returned.
fn resend<T>(h: &mut H, resend: impl FnOnce(&mut H) -> T) -> T {
    let before = fingerprint(h);
    let out = resend(h);
    assert_eq!(fingerprint(h), before, "a retransmission changed the state");
    out
}

fn through_snapshot(core: &Core) -> Core {
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(core.snapshot(), cfg).unwrap();
    let (snap, _): (Snapshot, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    Core::restore(snap)
}

// ---- Lock -----------------------------------------------------------------------------

#[test]
fn a_resent_granted_lock_gets_its_original_grant_and_token() {
    let mut h = once();
    let a = h.open("a");
    h.now = 10;
    let (la, ev) = h.lock(a, 1, "r", Mode::PR); // idx 2
    assert_eq!(ev, vec![granted(a, 1, la, Mode::PR, 2)]);
    h.now = 500;
    let (_, ev) = resend(&mut h, |h| h.lock(a, 1, "r", Mode::PR));
    assert_eq!(ev, vec![granted(a, 1, la, Mode::PR, 2)]);
    assert_eq!(h.core.lock_count(), 1);
    // Not even the lease moved: only the first send renewed it.
    assert_eq!(h.core.session(a).unwrap().expires_at_ms, 10_010);
}

#[test]
fn a_resent_lock_never_creates_a_second_queue_entry() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, ev) = h.lock(b, 5, "r", Mode::EX); // idx 4
    assert_eq!(ev, vec![queued(b, 5, lb), blocking(a, la, Mode::EX)]);
    for _ in 0..3 {
        let (_, ev) = resend(&mut h, |h| h.lock(b, 5, "r", Mode::EX));
        assert_eq!(ev, vec![queued(b, 5, lb)]);
    }
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]));
    // One grant when a lets go, to the original request.
    assert_eq!(
        h.unlock(a, 2, la), // idx 8
        vec![unlocked(a, 2, la), granted(b, 5, lb, Mode::EX, 8)]
    );
    let (_, ev) = resend(&mut h, |h| h.lock(b, 5, "r", Mode::EX));
    assert_eq!(ev, vec![granted(b, 5, lb, Mode::EX, 8)]);
    assert_eq!(h.core.lock_count(), 1);
}

#[test]
fn a_resent_lock_that_is_converting_reports_the_mode_it_holds() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    h.convert(a, 2, la, Mode::EX); // idx 5: queued behind b's PR
    let (_, ev) = resend(&mut h, |h| h.lock(a, 1, "r", Mode::PR));
    assert_eq!(ev, vec![granted(a, 1, la, Mode::PR, 3)]);
    let _ = lb;
}

#[test]
fn a_resent_lock_with_valblk_reads_the_value_block_as_it_is_now() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, ev) = h.lock_with(b, 1, "r", Mode::PR, LockFlags::VALBLK, None, None); // idx 4
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::PR)]);
    h.unlock_with(a, 2, la, LockFlags::VALBLK, Some(b"v1")); // idx 5: grants b
    let (_, ev) = resend(&mut h, |h| {
        h.lock_with(b, 1, "r", Mode::PR, LockFlags::VALBLK, None, None)
    });
    assert_eq!(ev, vec![granted_v(b, 1, lb, Mode::PR, 5, b"v1", true)]);
    // Without VALBLK the answer carries no value, as the first grant did not.
    let (_, ev) = resend(&mut h, |h| h.lock(b, 1, "r", Mode::PR));
    assert_eq!(ev, vec![granted(b, 1, lb, Mode::PR, 5)]);
}

#[test]
fn a_resent_lock_gets_its_remembered_refusal() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (_, ev) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(b, 1, None)]);
    let (_, ev) = h.lock(b, 2, "", Mode::EX);
    assert_eq!(ev, vec![rejected(b, 2, None, Invalid::EmptyName)]);
    let (_, ev) = resend(&mut h, |h| {
        h.lock_with(b, 1, "r", Mode::EX, LockFlags::NOQUEUE, None, None)
    });
    assert_eq!(ev, vec![not_queued(b, 1, None)]);
    let (_, ev) = resend(&mut h, |h| h.lock(b, 2, "", Mode::EX));
    assert_eq!(ev, vec![rejected(b, 2, None, Invalid::EmptyName)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![]));
}

#[test]
fn a_resent_lock_that_was_cancelled_timed_out_or_refused_as_a_deadlock_gets_that_answer() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "x", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "y", Mode::EX); // idx 4
    // Cancelled.
    let (l1, _) = h.lock(b, 2, "x", Mode::EX); // idx 5
    assert_eq!(h.cancel(b, 3, l1), vec![cancelled(b, 2, l1)]);
    // Timed out.
    let (l2, _) = h.lock_with(b, 4, "x", Mode::EX, LockFlags::empty(), None, Some(100));
    assert_eq!(h.tick_after(100), vec![timed_out(b, 4, l2)]);
    // A deadlock victim: b waits for x (held by a), a's request for y closes the cycle.
    let (l3, _) = h.lock(b, 5, "x", Mode::EX);
    let (_, ev) = h.lock(a, 2, "y", Mode::EX);
    assert_eq!(ev, vec![deadlock(a, 2, None)]);

    let (_, ev) = resend(&mut h, |h| h.lock(b, 2, "x", Mode::EX));
    assert_eq!(ev, vec![cancelled(b, 2, l1)]);
    let (_, ev) = resend(&mut h, |h| {
        h.lock_with(b, 4, "x", Mode::EX, LockFlags::empty(), None, Some(100))
    });
    assert_eq!(ev, vec![timed_out(b, 4, l2)]);
    let (_, ev) = resend(&mut h, |h| h.lock(a, 2, "y", Mode::EX));
    assert_eq!(ev, vec![deadlock(a, 2, None)]);
    let (_, ev) = resend(&mut h, |h| h.lock(b, 5, "x", Mode::EX));
    assert_eq!(ev, vec![queued(b, 5, l3)]);
    assert_eq!(h.queues("x"), (vec![la], vec![], vec![l3]));
    assert_eq!(h.queues("y"), (vec![lb], vec![], vec![]));
}

#[test]
fn a_resent_lock_whose_lock_is_gone_after_a_grant_is_not_found() {
    let mut h = once();
    let a = h.open("a");
    let (la, _) = h.lock(a, 1, "r", Mode::EX);
    h.unlock(a, 2, la);
    // Grants are answered from the lock, which is gone: the answer is unknown.
    let (_, ev) = resend(&mut h, |h| h.lock(a, 1, "r", Mode::EX));
    assert_eq!(ev, vec![rejected(a, 1, None, Reject::NotFound)]);
}

#[test]
fn a_request_below_the_highest_id_is_never_applied_even_if_never_seen() {
    let mut h = once();
    let a = h.open("a");
    h.lock(a, 10, "r", Mode::EX);
    let (_, ev) = resend(&mut h, |h| h.lock(a, 7, "s", Mode::EX));
    assert_eq!(ev, vec![rejected(a, 7, None, Reject::NotFound)]);
    assert_eq!(h.core.resource(b"s"), None);
    assert_eq!(h.core.last_request(a), Some(RequestId(10)));
}

// ---- Convert --------------------------------------------------------------------------

#[test]
fn a_resent_conversion_is_granted_queued_or_refused_as_it_was() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    // Granted in place.
    assert_eq!(
        h.convert(a, 2, la, Mode::CR), // idx 5
        vec![granted(a, 2, la, Mode::CR, 5)]
    );
    let ev = resend(&mut h, |h| h.convert(a, 2, la, Mode::CR));
    assert_eq!(ev, vec![granted(a, 2, la, Mode::CR, 5)]);
    // Refused with NOQUEUE: remembered.
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(b, 2, Some(lb))]);
    let ev = resend(&mut h, |h| {
        h.convert_with(b, 2, lb, Mode::EX, LockFlags::NOQUEUE, None, None)
    });
    assert_eq!(ev, vec![not_queued(b, 2, Some(lb))]);
    // Queued: Queued again, once on the convert queue.
    let ev = h.convert(b, 3, lb, Mode::EX); // idx 9
    assert_eq!(ev, vec![queued(b, 3, lb), blocking(a, la, Mode::EX)]);
    let ev = resend(&mut h, |h| h.convert(b, 3, lb, Mode::EX));
    assert_eq!(ev, vec![queued(b, 3, lb)]);
    assert_eq!(h.queues("r"), (vec![la], vec![lb], vec![]));
    // Granted later: the grant, from state.
    assert_eq!(
        h.unlock(a, 3, la), // idx 11
        vec![unlocked(a, 3, la), granted(b, 3, lb, Mode::EX, 11)]
    );
    let ev = resend(&mut h, |h| h.convert(b, 3, lb, Mode::EX));
    assert_eq!(ev, vec![granted(b, 3, lb, Mode::EX, 11)]);
    // Converted again since: the first conversion's outcome is no longer in state.
    h.convert(b, 4, lb, Mode::NL);
    let ev = resend(&mut h, |h| h.convert(b, 3, lb, Mode::EX));
    assert_eq!(ev, vec![rejected(b, 3, Some(lb), Reject::NotFound)]);
}

#[test]
fn a_resent_conversion_that_was_cancelled_gets_cancelled() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    h.convert(b, 2, lb, Mode::EX); // idx 5
    assert_eq!(h.cancel(b, 3, lb), vec![cancelled(b, 2, lb)]);
    let ev = resend(&mut h, |h| h.convert(b, 2, lb, Mode::EX));
    assert_eq!(ev, vec![cancelled(b, 2, lb)]);
    let _ = la;
}

// ---- Unlock and Cancel ----------------------------------------------------------------

#[test]
fn a_resent_unlock_is_unlocked_once() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    assert_eq!(
        h.unlock(a, 2, la), // idx 5
        vec![unlocked(a, 2, la), granted(b, 1, lb, Mode::EX, 5)]
    );
    let ev = resend(&mut h, |h| h.unlock(a, 2, la));
    assert_eq!(ev, vec![unlocked(a, 2, la)]);
    // A refused unlock stays refused, although the lock is there.
    h.convert(b, 2, lb, Mode::PR);
    let (lc, _) = h.lock(a, 3, "r", Mode::PR); // granted beside b
    let ev = h.unlock_with(a, 4, lc, LockFlags::IVVALBLK | LockFlags::NOQUEUE, None);
    let refusal = rejected(
        a,
        4,
        Some(lc),
        Invalid::FlagNotApplicable(LockFlags::NOQUEUE.bits()),
    );
    assert_eq!(ev, vec![refusal.clone()]);
    let ev = resend(&mut h, |h| {
        h.unlock_with(a, 4, lc, LockFlags::IVVALBLK | LockFlags::NOQUEUE, None)
    });
    assert_eq!(ev, vec![refusal]);
}

#[test]
fn a_resent_cancel_gets_its_answer_under_its_own_id() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4
    assert_eq!(h.cancel(b, 2, lb), vec![cancelled(b, 1, lb)]);
    let ev = resend(&mut h, |h| h.cancel(b, 2, lb));
    assert_eq!(ev, vec![cancelled(b, 2, lb)]);
    // A cancel that found nothing pending.
    let ev = h.cancel(a, 2, la);
    assert_eq!(ev, vec![rejected(a, 2, Some(la), Reject::NotPending)]);
    let ev = resend(&mut h, |h| h.cancel(a, 2, la));
    assert_eq!(ev, vec![rejected(a, 2, Some(la), Reject::NotPending)]);
}

// ---- Renew, CloseSession, unknown sessions, the driver's id ---------------------------

#[test]
fn a_resent_renew_renews_again() {
    let mut h = once();
    let a = h.open("a");
    h.now = 100;
    assert_eq!(h.renew(a, 3), vec![renewed(a, 3, 10_000)]);
    h.now = 900;
    assert_eq!(h.renew(a, 3), vec![renewed(a, 3, 10_000)]);
    assert_eq!(h.core.session(a).unwrap().expires_at_ms, 10_900);
}

#[test]
fn a_resent_close_of_a_gone_session_is_an_unknown_session_as_always() {
    let mut h = once();
    let a = h.open("a");
    h.lock(a, 1, "r", Mode::EX);
    assert_eq!(h.close(a, 2), vec![closed(a, 2)]);
    assert_eq!(
        h.close(a, 2),
        vec![rejected(a, 2, None, Reject::UnknownSession)]
    );
    let (_, ev) = h.lock(a, 1, "r", Mode::EX);
    assert_eq!(ev, vec![rejected(a, 1, None, Reject::UnknownSession)]);
    assert_eq!(h.core.lock_count(), 0);
}

#[test]
fn the_drivers_request_id_never_counts() {
    let mut h = once();
    let a = h.open("a");
    assert_eq!(h.core.last_request(a), None);
    h.renew(a, 0);
    h.unlock(a, 0, dlock_core::LockId(99));
    assert_eq!(h.core.last_request(a), None);
    h.unlock(a, 4, dlock_core::LockId(99));
    h.unlock(a, 0, dlock_core::LockId(99));
    assert_eq!(h.core.last_request(a), Some(RequestId(4)));
    // A command with id 0 is applied each time, as without exactly_once.
    let (l1, _) = h.lock(a, 0, "r", Mode::PR);
    let (l2, _) = h.lock(a, 0, "r", Mode::PR);
    assert_eq!(h.queues("r"), (vec![l1, l2], vec![], vec![]));
    assert_eq!(RequestId::DRIVER, RequestId(0));
}

#[test]
fn renewals_never_count_so_a_resent_request_applied_after_a_later_renewal_is_applied() {
    // A server applies a connection's renewals on their own path (batched): after a
    // fail-over, the renewal a client sent after re-sending its outstanding requests can be
    // applied before them. Those requests were never applied and must be now.
    let mut h = once();
    let a = h.open("a");
    let (held, _) = h.lock(a, 1, "held", Mode::EX);
    let ev = h.apply(Command::RenewMany {
        renewals: vec![(a, RequestId(9))],
    });
    assert_eq!(ev, vec![renewed(a, 9, 10_000)]);
    h.renew(a, 10);
    assert_eq!(h.core.last_request(a), Some(RequestId(1)));
    // The re-sent requests 2..=4, sent before the renewals, are applied, not answered from
    // state.
    let (l2, ev) = h.lock(a, 2, "r", Mode::EX);
    assert_eq!(ev, vec![granted(a, 2, l2, Mode::EX, l2.0)]);
    assert_eq!(h.unlock(a, 3, held), vec![unlocked(a, 3, held)]);
    assert_eq!(h.unlock(a, 4, l2), vec![unlocked(a, 4, l2)]);
    assert_eq!(h.core.lock_count(), 0);
    // And they count: sent once more, each is a retransmission.
    let ev = resend(&mut h, |h| h.unlock(a, 4, l2));
    assert_eq!(ev, vec![unlocked(a, 4, l2)]);
}

#[test]
fn without_exactly_once_a_repeated_id_is_applied_again() {
    let mut h = H::new();
    let b = h.open("b");
    let (l1, ev) = h.lock(b, 1, "r", Mode::PR); // idx 2
    assert_eq!(ev, vec![granted(b, 1, l1, Mode::PR, 2)]);
    let (l2, ev) = h.lock(b, 1, "r", Mode::PR); // idx 3
    assert_eq!(ev, vec![granted(b, 1, l2, Mode::PR, 3)]);
    assert_eq!(h.queues("r"), (vec![l1, l2], vec![], vec![]));
    assert_eq!(h.core.last_request(b), None);
}

// ---- Memory and snapshots -------------------------------------------------------------

#[test]
fn only_the_last_answers_are_remembered_and_older_ones_come_from_state() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX);
    let (lb, _) = h.lock(b, 1, "r", Mode::EX);
    assert_eq!(h.cancel(b, 2, lb), vec![cancelled(b, 1, lb)]);
    let ev = h.cancel(a, 3, la);
    assert_eq!(ev, vec![rejected(a, 3, Some(la), Reject::NotPending)]);
    // b's cancel is remembered twice (under 1 and 2): REMEMBERED_ANSWERS refusals later
    // both are forgotten.
    for r in 0..dlock_core::REMEMBERED_ANSWERS as u64 {
        let (_, ev) = h.lock_with(b, 10 + r, "r", Mode::EX, LockFlags::NOQUEUE, None, None);
        assert_eq!(ev, vec![not_queued(b, 10 + r, None)]);
    }
    // From state: the lock is gone, so the cancel reads as done, and the request unknown.
    let ev = resend(&mut h, |h| h.cancel(b, 2, lb));
    assert_eq!(ev, vec![cancelled(b, 2, lb)]);
    let (_, ev) = resend(&mut h, |h| h.lock(b, 1, "r", Mode::EX));
    assert_eq!(ev, vec![rejected(b, 1, None, Reject::NotFound)]);
    // a's ring is its own: still remembered.
    let ev = resend(&mut h, |h| h.cancel(a, 3, la));
    assert_eq!(ev, vec![rejected(a, 3, Some(la), Reject::NotPending)]);
    // The newest answer is still there.
    let last = 10 + dlock_core::REMEMBERED_ANSWERS as u64 - 1;
    let (_, ev) = resend(&mut h, |h| {
        h.lock_with(b, last, "r", Mode::EX, LockFlags::NOQUEUE, None, None)
    });
    assert_eq!(ev, vec![not_queued(b, last, None)]);
}

#[test]
fn a_lock_is_found_by_its_request_however_many_answers_ago_it_was_granted() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4: waits
    let (lq, _) = h.lock(a, 2, "q", Mode::EX); // idx 5: granted
    for r in 0..2 * dlock_core::REMEMBERED_ANSWERS as u64 {
        h.lock_with(a, 10 + r, "r", Mode::EX, LockFlags::NOQUEUE, None, None);
    }
    // Far more answers than the ring holds since, yet both are found by their request.
    let (_, ev) = resend(&mut h, |h| h.lock(b, 1, "r", Mode::EX));
    assert_eq!(ev, vec![queued(b, 1, lb)]);
    let (_, ev) = resend(&mut h, |h| h.lock(a, 2, "q", Mode::EX));
    assert_eq!(ev, vec![granted(a, 2, lq, Mode::EX, 5)]);
    assert_eq!(h.queues("q"), (vec![lq], vec![], vec![]));
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]));
}

#[test]
fn a_resent_request_after_snapshot_and_restore_is_still_recognised() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4, queued
    let (_, ev) = h.lock_with(b, 2, "r", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(b, 2, None)]);
    h.core = through_snapshot(&h.core);
    assert!(h.core.config().exactly_once);
    assert_eq!(h.core.last_request(b), Some(RequestId(2)));
    let (_, ev) = resend(&mut h, |h| h.lock(a, 1, "r", Mode::EX));
    assert_eq!(ev, vec![granted(a, 1, la, Mode::EX, 3)]);
    let (_, ev) = resend(&mut h, |h| h.lock(b, 1, "r", Mode::EX));
    assert_eq!(ev, vec![queued(b, 1, lb)]);
    let (_, ev) = resend(&mut h, |h| {
        h.lock_with(b, 2, "r", Mode::EX, LockFlags::NOQUEUE, None, None)
    });
    assert_eq!(ev, vec![not_queued(b, 2, None)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]));
    // New requests go on as before.
    assert_eq!(
        h.unlock(a, 2, la),
        vec![unlocked(a, 2, la), granted(b, 1, lb, Mode::EX, h.index)]
    );
    let info = h.core.session(b).unwrap();
    assert_eq!(info.locks[0].state, LockState::Granted { mode: Mode::EX });
    assert_eq!(info.locks[0].token, Some(FencingToken(h.index)));
}

#[test]
fn each_session_counts_its_own_ids_and_unknown_sessions_are_refused_as_always() {
    let mut h = once();
    let (a, b) = (h.open("a"), h.open("b"));
    h.lock(a, 50, "r", Mode::PR);
    // b's ids are its own.
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR);
    assert_eq!(ev, vec![granted(b, 1, lb, Mode::PR, h.index)]);
    assert_eq!(h.core.last_request(b), Some(RequestId(1)));
    // A command for a session that does not exist is refused as always.
    let ghost = SessionId(999);
    let ev = h.apply(Command::Renew {
        session: ghost,
        request: RequestId(1),
    });
    assert_eq!(ev, vec![rejected(ghost, 1, None, Reject::UnknownSession)]);
}
