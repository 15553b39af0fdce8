//! R15..R22: conversions, QUECVT and NOQUEUE.

mod common;

use common::*;
use dlock_core::{Invalid, LockFlags, LockState, Mode, Reject};

fn state(h: &H, s: dlock_core::SessionId, l: dlock_core::LockId) -> LockState {
    let info = h.core.session(s).unwrap();
    info.locks.iter().find(|i| i.lock == l).unwrap().state
}

#[test]
fn r15_only_a_granted_lock_converts() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    assert_eq!(
        h.convert(a, 2, la, Mode::EX),
        vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]
    );
    // Converting: BUSY, nothing changes.
    assert_eq!(
        h.convert(a, 3, la, Mode::NL),
        vec![rejected(a, 3, Some(la), Reject::Busy)]
    );
    let (lw, ev) = h.lock(c, 2, "r", Mode::EX); // idx 8: waiting
    assert_eq!(ev, vec![queued(c, 2, lw)]);
    // Waiting: BUSY.
    assert_eq!(
        h.convert(c, 3, lw, Mode::NL),
        vec![rejected(c, 3, Some(lw), Reject::Busy)]
    );
    assert_eq!(
        state(&h, a, la),
        LockState::Converting {
            from: Mode::PR,
            to: Mode::EX
        }
    );
}

#[test]
fn r16_same_mode_conversion_is_granted_at_once_with_a_new_token() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::PR)]);
    // Granted in place; R35: a lock is notified again after a conversion of its own.
    assert_eq!(
        h.convert(a, 2, la, Mode::EX),
        vec![granted(a, 2, la, Mode::EX, 5), blocking(a, la, Mode::PR)]
    );
}

#[test]
fn r17_down_conversion_is_granted_and_runs_a_grant_pass() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(
        h.convert(a, 2, la, Mode::PR),
        vec![
            granted(a, 2, la, Mode::PR, 5),
            granted(b, 1, lb, Mode::PR, 6)
        ]
    );
}

#[test]
fn r18_queued_conversion_keeps_blocking_with_its_old_mode() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX),
        vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]
    );
    // a's PR->CW meets b's still-held PR (R18) and b's queued EX: a cycle, a is refused.
    assert_eq!(
        h.convert(a, 2, la, Mode::CW),
        vec![deadlock(a, 2, Some(la))]
    );
    assert_eq!(state(&h, a, la), LockState::Granted { mode: Mode::PR });
}

#[test]
fn r19_noqueue_conversion_fails_and_keeps_the_lock() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(b, 2, Some(lb))]);
    assert_eq!(state(&h, b, lb), LockState::Granted { mode: Mode::PR });
    // A NOQUEUE conversion that can be granted is granted.
    let ev = h.convert_with(a, 2, la, Mode::CR, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![granted(a, 2, la, Mode::CR, 6)]);
}

#[test]
fn r20_two_pr_holders_converting_to_ex_second_is_the_victim() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(
        h.convert(a, 2, la, Mode::EX),
        vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]
    );
    // No blocking notifications from the victim (R20).
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX),
        vec![deadlock(b, 2, Some(lb))]
    );
    assert_eq!(state(&h, b, lb), LockState::Granted { mode: Mode::PR });
    assert_eq!(h.queues("r"), (vec![lb], vec![la], vec![]));
    assert_eq!(
        h.unlock(b, 3, lb),
        vec![unlocked(b, 3, lb), granted(a, 2, la, Mode::EX, 7)]
    );
}

#[test]
fn r39_a_session_never_waits_for_itself() {
    let mut h = H::new();
    let a = h.open("a");
    let (l1, _) = h.lock(a, 1, "r", Mode::PR); // idx 2
    let (l2, _) = h.lock(a, 2, "r", Mode::PR); // idx 3
    // R39: the session would wait for itself through its other PR lock.
    assert_eq!(
        h.convert(a, 3, l1, Mode::EX),
        vec![deadlock(a, 3, Some(l1))]
    );
    let (l3, ev) = h.lock(a, 4, "r", Mode::EX);
    assert_eq!(ev, vec![deadlock(a, 4, None)]);
    assert_eq!(h.core.lock_count(), 2);
    let _ = (l2, l3);
}

#[test]
fn r20_quecvt_behind_a_conversion_that_waits_for_us_is_refused() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::NL); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(
        h.convert(a, 2, la, Mode::EX),
        vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]
    );
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::QUECVT, None, None);
    assert_eq!(ev, vec![deadlock(b, 2, Some(lb))]);
    // Without QUECVT, b's conversion is compatible with a's NL: granted in place (R11).
    assert_eq!(
        h.convert(b, 3, lb, Mode::EX),
        vec![granted(b, 3, lb, Mode::EX, 7), blocking(b, lb, Mode::EX)]
    );
}

#[test]
fn r21_quecvt_waits_behind_queued_conversions() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::NL); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    let (lc, _) = h.lock(c, 1, "r", Mode::NL); // idx 6
    assert_eq!(
        h.convert(a, 2, la, Mode::EX),
        vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]
    );
    // Compatible with every holder, but QUECVT queues it behind a's conversion.
    let ev = h.convert_with(c, 2, lc, Mode::CR, LockFlags::QUECVT, None, None);
    assert_eq!(ev, vec![queued(c, 2, lc)]);
    assert_eq!(h.queues("r"), (vec![lb], vec![la, lc], vec![]));
    // b leaves: a's EX is granted, c's CR stays behind it (strict FIFO among conversions).
    assert_eq!(
        h.unlock(b, 2, lb),
        vec![
            unlocked(b, 2, lb),
            granted(a, 2, la, Mode::EX, 9),
            blocking(a, la, Mode::CR)
        ]
    );
    assert_eq!(
        h.convert(a, 3, la, Mode::NL),
        vec![
            granted(a, 3, la, Mode::NL, 10),
            granted(c, 2, lc, Mode::CR, 11)
        ]
    );
}

#[test]
fn r21_quecvt_granted_at_once_when_nothing_is_queued() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::NL); // idx 2
    let ev = h.convert_with(a, 2, l, Mode::EX, LockFlags::QUECVT, None, None);
    assert_eq!(ev, vec![granted(a, 2, l, Mode::EX, 3)]);
}

#[test]
fn r21_quecvt_matrix_through_the_engine() {
    // '1': allowed (granted here, nothing else on the resource); '0': INVALID.
    let rows = ["011111", "001111", "000111", "001011", "000001", "000000"];
    for (from, row) in Mode::ALL.into_iter().zip(rows) {
        for (to, c) in Mode::ALL.into_iter().zip(row.chars()) {
            let mut h = H::new();
            let a = h.open("a");
            let (l, _) = h.lock(a, 1, "r", from); // idx 2
            let ev = h.convert_with(a, 2, l, to, LockFlags::QUECVT, None, None);
            if c == '1' {
                assert_eq!(ev, vec![granted(a, 2, l, to, 3)], "{from}->{to}");
            } else {
                let reason = Invalid::QuecvtNotAllowed { from, to };
                assert_eq!(ev, vec![rejected(a, 2, Some(l), reason)], "{from}->{to}");
            }
        }
    }
}

#[test]
fn r22_noqueue_new_request() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    // Incompatible: NOT_QUEUED, no lock, no notification.
    let (_, ev) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(b, 1, None)]);
    assert_eq!(h.core.lock_count(), 1);
    let (lb, _) = h.lock(b, 2, "r", Mode::EX); // idx 6: queued
    // Compatible with the holder, but the wait queue is not empty (R22, R10).
    let (_, ev) = h.lock_with(c, 1, "r", Mode::PR, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(c, 1, None)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]));
    // Granted when R10 grants it.
    let (lc, ev) = h.lock_with(c, 2, "s", Mode::PR, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![granted(c, 2, lc, Mode::PR, 8)]);
}

#[test]
fn r16_same_mode_conversion_of_every_mode_with_a_waiter_and_a_published_value() {
    for mode in Mode::ALL {
        let mut h = H::new();
        let (a, b) = (h.open("a"), h.open("b"));
        let (la, _) = h.lock(a, 1, "r", mode); // idx 3
        let (lb, ev) = h.lock(b, 1, "r", Mode::EX); // idx 4
        // With a value, PW->PW and EX->EX write it (R26); below PW it is not asked for.
        let (flags, value) = if mode >= Mode::PW {
            (LockFlags::VALBLK, Some(&b"pub"[..]))
        } else {
            (LockFlags::empty(), None)
        };
        if mode == Mode::NL {
            // EX is compatible with NL: nothing waits.
            assert_eq!(ev, vec![granted(b, 1, lb, Mode::EX, 4)]);
            let ev = h.convert_with(a, 2, la, mode, flags, value, None);
            assert_eq!(ev, vec![granted(a, 2, la, mode, 5)], "{mode}");
            continue;
        }
        assert_eq!(
            ev,
            vec![queued(b, 1, lb), blocking(a, la, Mode::EX)],
            "{mode}"
        );
        // Granted at once with a new token, and told again of the waiter (R35).
        let ev = h.convert_with(a, 2, la, mode, flags, value, None); // idx 5
        assert_eq!(
            ev,
            vec![granted(a, 2, la, mode, 5), blocking(a, la, Mode::EX)],
            "{mode}"
        );
        let info = h.core.resource(b"r").unwrap();
        if mode >= Mode::PW {
            let mut want = b"pub".to_vec();
            want.resize(64, 0);
            assert_eq!((info.value, info.value_valid), (want, true), "{mode}");
        }
        assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]), "{mode}");
    }
}

#[test]
fn r17_every_down_conversion_is_granted_at_once_and_runs_a_grant_pass() {
    let mut n = 0;
    for from in Mode::ALL {
        for to in Mode::ALL {
            if !from.is_down_conversion(to) {
                continue;
            }
            n += 1;
            let mut h = H::new();
            let (a, b) = (h.open("a"), h.open("b"));
            let (la, _) = h.lock(a, 1, "r", from); // idx 3
            // An EX waiter, blocked by every mode but NL.
            let (lb, ev) = h.lock(b, 1, "r", Mode::EX); // idx 4
            assert_eq!(ev[0], queued(b, 1, lb));
            let ev = h.convert(a, 2, la, to); // idx 5
            let ctx = format!("{from}->{to}");
            if to == Mode::NL {
                let want = vec![granted(a, 2, la, to, 5), granted(b, 1, lb, Mode::EX, 6)];
                assert_eq!(ev, want, "{ctx}");
            } else {
                let want = vec![granted(a, 2, la, to, 5), blocking(a, la, Mode::EX)];
                assert_eq!(ev, want, "{ctx}");
                assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]), "{ctx}");
            }
        }
    }
    assert_eq!(n, 14);
    // A waiter that only the new mode admits is granted by the conversion's pass.
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    assert_eq!(
        h.convert(a, 2, la, Mode::CR), // idx 5
        vec![
            granted(a, 2, la, Mode::CR, 5),
            granted(b, 1, lb, Mode::PR, 6)
        ]
    );
}

#[test]
fn r8_middle_conversions_are_granted_when_compatible() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::PR); // idx 2
    assert_eq!(
        h.convert(a, 2, l, Mode::CW),
        vec![granted(a, 2, l, Mode::CW, 3)]
    );
    assert_eq!(
        h.convert(a, 3, l, Mode::PR),
        vec![granted(a, 3, l, Mode::PR, 4)]
    );
}

#[test]
fn r18_queued_conversion_blocks_later_conversions_and_requests_with_its_old_mode() {
    let mut h = H::new();
    let (a, b, x) = (h.open("a"), h.open("b"), h.open("x"));
    let (la, _) = h.lock(a, 1, "r", Mode::NL); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    let (lx, _) = h.lock(x, 1, "r", Mode::CR); // idx 6
    // b: PR->EX, blocked by x's CR (a's NL blocks nothing).
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX), // idx 7
        vec![queued(b, 2, lb), blocking(x, lx, Mode::EX)]
    );
    // a: NL->PW is compatible with x's CR but not with b's still-held PR: queued.
    assert_eq!(h.convert(a, 2, la, Mode::PW), vec![queued(a, 2, la)]); // idx 8
    assert_eq!(h.queues("r"), (vec![lx], vec![lb, la], vec![]));
    // A new CW request meets the same old PR (and the queued conversions, R22).
    let (_, ev) = h.lock_with(x, 2, "r", Mode::CW, LockFlags::NOQUEUE, None, None); // idx 9
    assert_eq!(ev, vec![not_queued(x, 2, None)]);
    assert_eq!(
        h.unlock(x, 3, lx), // idx 10
        vec![
            unlocked(x, 3, lx),
            granted(b, 2, lb, Mode::EX, 10),
            blocking(b, lb, Mode::PW)
        ]
    );
    assert_eq!(
        h.unlock(b, 3, lb), // idx 11
        vec![unlocked(b, 3, lb), granted(a, 2, la, Mode::PW, 11)]
    );
}

#[test]
fn r19_noqueue_conversion_is_never_a_deadlock_and_notifies_nobody() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    // No blocking notification to a, no state change.
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::NOQUEUE, None, None); // idx 5
    assert_eq!(ev, vec![not_queued(b, 2, Some(lb))]);
    assert_eq!(h.queues("r"), (vec![la, lb], vec![], vec![]));
    assert_eq!(
        h.convert(a, 2, la, Mode::EX), // idx 6
        vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]
    );
    // The same conversion without NOQUEUE would be a conversion deadlock (R20); NOQUEUE is
    // never checked for deadlock.
    let ev = h.convert_with(b, 3, lb, Mode::EX, LockFlags::NOQUEUE, None, None); // idx 7
    assert_eq!(ev, vec![not_queued(b, 3, Some(lb))]);
    assert_eq!(state(&h, b, lb), LockState::Granted { mode: Mode::PR });
    assert_eq!(
        h.unlock(b, 4, lb), // idx 8
        vec![unlocked(b, 4, lb), granted(a, 2, la, Mode::EX, 8)]
    );
}

#[test]
fn r11_r21_quecvt_queues_where_a_plain_conversion_is_granted_in_place() {
    let mut h = H::new();
    let (a, b, d) = (h.open("a"), h.open("b"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::NL); // idx 5
    let (ld, _) = h.lock(d, 1, "r", Mode::NL); // idx 6
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX), // idx 7
        vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]
    );
    let ev = h.convert_with(d, 2, ld, Mode::CR, LockFlags::QUECVT, None, None); // idx 8
    assert_eq!(ev, vec![queued(d, 2, ld)]);
    assert_eq!(h.queues("r"), (vec![la], vec![lb, ld], vec![]));
    assert_eq!(h.cancel(d, 3, ld), vec![cancelled(d, 2, ld)]); // idx 9
    // R11: without QUECVT the same conversion is granted in place, past b's; its CR now
    // blocks b's EX too (R35).
    assert_eq!(
        h.convert(d, 4, ld, Mode::CR), // idx 10
        vec![granted(d, 4, ld, Mode::CR, 10), blocking(d, ld, Mode::EX)]
    );
    assert_eq!(h.queues("r"), (vec![la, ld], vec![lb], vec![]));
    // EX is blocked by d's CR now.
    assert_eq!(h.unlock(a, 2, la), vec![unlocked(a, 2, la)]); // idx 11
    assert_eq!(
        h.unlock(d, 5, ld), // idx 12
        vec![unlocked(d, 5, ld), granted(b, 2, lb, Mode::EX, 12)]
    );
}

#[test]
fn r20_conversion_deadlock_with_a_conversion_behind_the_head() {
    let mut h = H::new();
    let (a, b, x, d) = (h.open("a"), h.open("b"), h.open("x"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::PW); // idx 5
    let (ld, _) = h.lock(d, 1, "r", Mode::CR); // idx 6
    let (lb, _) = h.lock(b, 1, "r", Mode::NL); // idx 7
    let (lx, _) = h.lock(x, 1, "r", Mode::NL); // idx 8
    // Head: b NL->PR (blocked by PW). Second: x NL->EX.
    assert_eq!(
        h.convert(b, 2, lb, Mode::PR), // idx 9
        vec![queued(b, 2, lb), blocking(a, la, Mode::PR)]
    );
    assert_eq!(
        h.convert(x, 2, lx, Mode::EX), // idx 10
        vec![
            queued(x, 2, lx),
            blocking(a, la, Mode::EX),
            blocking(d, ld, Mode::EX)
        ]
    );
    // d: CR->PW is blocked by a's PW; its CR is compatible with the head's PR but blocks
    // the second conversion's EX, which waits for it: DEADLOCK, d keeps CR.
    assert_eq!(
        h.convert(d, 2, ld, Mode::PW), // idx 11
        vec![deadlock(d, 2, Some(ld))]
    );
    assert_eq!(state(&h, d, ld), LockState::Granted { mode: Mode::CR });
    assert_eq!(h.queues("r"), (vec![la, ld], vec![lb, lx], vec![]));
}

#[test]
fn r22_r23_noqueue_fails_behind_a_queued_conversion_and_is_decided_at_its_place() {
    let mut h = H::new();
    let (a, b, d) = (h.open("a"), h.open("b"), h.open("d"));
    let (la, _) = h.lock(a, 1, "nq", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "nq", Mode::PR); // idx 5
    assert_eq!(h.convert(b, 2, lb, Mode::EX)[0], queued(b, 2, lb)); // idx 6
    // CR is compatible with both PR holders, but the convert queue is not empty.
    let (_, ev) = h.lock_with(d, 1, "nq", Mode::CR, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(d, 1, None)]);
    assert_eq!(h.queues("nq"), (vec![la], vec![lb], vec![]));
    assert!(h.core.session(d).unwrap().locks.is_empty());
    // R23: decided where it stands in the order: just before the unlock it fails, just
    // after it succeeds.
    let (lx, _) = h.lock(a, 2, "ord", Mode::EX); // idx 8
    let (_, ev) = h.lock_with(a, 3, "ord", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(a, 3, None)]);
    h.unlock(a, 4, lx); // idx 10
    let (ly, ev) = h.lock_with(a, 5, "ord", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![granted(a, 5, ly, Mode::EX, 11)]);
}
