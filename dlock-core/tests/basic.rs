//! Scenario tests: plain locking, queues, grant passes, conversions, sessions, tokens.

mod common;

use common::*;
use dlock_core::{LockFlags, LockState, Mode, Reject};

#[test]
fn uncontended_lock_and_unlock_destroy_the_resource_r1() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, ev) = h.lock(a, 1, "r", Mode::EX);
    assert_eq!(ev, vec![granted(a, 1, l, Mode::EX, 2)]);
    assert_eq!(h.core.resource_count(), 1);
    assert_eq!(h.core.lock_count(), 1);
    assert_eq!(h.unlock(a, 2, l), vec![unlocked(a, 2, l)]);
    assert_eq!(h.core.resource(b"r"), None);
    assert_eq!(h.core.resource_count(), 0);
    assert_eq!(h.core.lock_count(), 0);
    // R52: the id is gone.
    assert_eq!(
        h.unlock(a, 3, l),
        vec![rejected(a, 3, Some(l), Reject::NotFound)]
    );
}

#[test]
fn r10_no_queue_jumping_and_r34_no_notification_for_fifo_waiters() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, ev) = h.lock(a, 1, "r", Mode::PR);
    assert_eq!(ev, vec![granted(a, 1, la, Mode::PR, 4)]);
    let (lb, ev) = h.lock(b, 1, "r", Mode::EX);
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::EX)]);
    // Compatible with the holder, but the wait queue is not empty.
    let (lc, ev) = h.lock(c, 1, "r", Mode::PR);
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb, lc]));
    // R12: the unlock grants the head; c stays behind b's EX; b learns that PR waits.
    let ev = h.unlock(a, 2, la);
    assert_eq!(
        ev,
        vec![
            unlocked(a, 2, la),
            granted(b, 1, lb, Mode::EX, 7),
            blocking(b, lb, Mode::PR)
        ]
    );
    let ev = h.unlock(b, 2, lb);
    assert_eq!(ev, vec![unlocked(b, 2, lb), granted(c, 1, lc, Mode::PR, 8)]);
}

#[test]
fn r12_grant_pass_stops_at_first_blocked_head() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 5, token 5
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // queued
    let (lc, _) = h.lock(c, 1, "r", Mode::EX); // queued
    let (ld, _) = h.lock(d, 1, "r", Mode::PR); // queued behind c although compatible with b
    let ev = h.unlock(a, 2, la); // idx 9
    assert_eq!(
        ev,
        vec![
            unlocked(a, 2, la),
            granted(b, 1, lb, Mode::PR, 9),
            blocking(b, lb, Mode::EX)
        ]
    );
    assert_eq!(h.queues("r"), (vec![lb], vec![], vec![lc, ld]));
}

#[test]
fn r12_every_grant_of_a_pass_counts_before_the_next_head_and_tokens_increase() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 5
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 6
    let (lc, _) = h.lock(c, 1, "r", Mode::CR); // idx 7
    let (ld, _) = h.lock(d, 1, "r", Mode::PW); // idx 8: incompatible with b's PR
    let ev = h.unlock(a, 2, la); // idx 9: b gets 9, c gets 10
    assert_eq!(
        ev,
        vec![
            unlocked(a, 2, la),
            granted(b, 1, lb, Mode::PR, 9),
            granted(c, 1, lc, Mode::CR, 10),
            blocking(b, lb, Mode::PW),
        ]
    );
    assert_eq!(h.core.last_token().0, 10);
    // The next grant at index 10 gets max(10 + 1, 10) = 11.
    let (le, ev) = h.lock(a, 3, "other", Mode::EX);
    assert_eq!(ev, vec![granted(a, 3, le, Mode::EX, 11)]);
    assert_eq!(h.queues("r"), (vec![lb, lc], vec![], vec![ld]));
}

#[test]
fn r11_r13_conversions_before_waiters() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    // a's PR->EX is blocked by b's PR: queued, b is told.
    let ev = h.convert(a, 2, la, Mode::EX); // idx 6
    assert_eq!(ev, vec![queued(a, 2, la), blocking(b, lb, Mode::EX)]);
    // A new PR request is compatible with b's PR and a's held PR, but a conversion is queued.
    let (lc, ev) = h.lock(c, 1, "r", Mode::PR); // idx 7
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    let info = h.core.resource(b"r").unwrap();
    assert_eq!(
        info.converting[0].state,
        LockState::Converting {
            from: Mode::PR,
            to: Mode::EX
        }
    );
    let ev = h.unlock(b, 2, lb); // idx 8
    assert_eq!(
        ev,
        vec![
            unlocked(b, 2, lb),
            granted(a, 2, la, Mode::EX, 8),
            blocking(a, la, Mode::PR)
        ]
    );
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lc]));
}

#[test]
fn r11_conversion_granted_in_place_ignores_queues() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::CR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4, queued, a not told (CR vs EX)
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb]));
    // CR->PR: compatible with every other holder (none): granted in place despite the waiter.
    let ev = h.convert(a, 2, la, Mode::PR); // idx 5
    assert_eq!(
        ev,
        vec![granted(a, 2, la, Mode::PR, 5), blocking(a, la, Mode::EX)]
    );
}

#[test]
fn sessions_open_renew_close_and_unknown() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    assert!(h.core.check_secret(a, 42));
    assert!(!h.core.check_secret(a, 43));
    assert_eq!(h.core.next_deadline(), Some(1_000));
    h.now = 500;
    assert_eq!(h.renew(a, 1), vec![renewed(a, 1, 1_000)]);
    assert_eq!(h.core.next_deadline(), Some(1_500));
    let info = h.core.session(a).unwrap();
    assert_eq!((info.name.as_str(), info.expires_at_ms), ("a", 1_500));
    assert_eq!(h.close(a, 2), vec![closed(a, 2)]);
    assert_eq!(h.core.session_count(), 0);
    assert_eq!(h.core.next_deadline(), None);
    assert_eq!(
        h.renew(a, 3),
        vec![rejected(a, 3, None, Reject::UnknownSession)]
    );
    let (l, ev) = h.lock(a, 4, "r", Mode::NL);
    let _ = l;
    assert_eq!(ev, vec![rejected(a, 4, None, Reject::UnknownSession)]);
}

#[test]
fn r50_expiry_releases_everything_and_grants_others() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    let b = h.open_ttl("b", 60_000);
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::EX); // idx 4 queued
    let (la2, _) = h.lock(a, 2, "q", Mode::PR); // idx 5
    let _ = (la, la2);
    assert_eq!(h.tick_after(999), vec![]);
    let ev = h.tick_after(1); // idx 7, clock 1000
    assert_eq!(ev, vec![expired(a), granted(b, 1, lb, Mode::EX, 7)]);
    assert_eq!(h.core.session_count(), 1);
    assert_eq!(h.core.resource(b"q"), None);
    assert_eq!(h.queues("r"), (vec![lb], vec![], vec![]));
    // A spurious tick does nothing.
    assert_eq!(h.tick_after(0), vec![]);
    assert_eq!(h.core.next_deadline(), Some(60_000));
}

#[test]
fn r50_close_session_removes_waiting_and_converting_locks_without_completions() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    h.convert(b, 2, lb, Mode::EX); // idx 6: queued (a's PR)
    let (lb2, _) = h.lock(b, 3, "s", Mode::EX); // idx 7
    let (lc, ev) = h.lock(c, 1, "s", Mode::EX); // idx 8 queued
    assert_eq!(ev, vec![queued(c, 1, lc), blocking(b, lb2, Mode::EX)]);
    let ev = h.close(b, 4); // idx 9
    assert_eq!(ev, vec![closed(b, 4), granted(c, 1, lc, Mode::EX, 9)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![]));
}

#[test]
fn index_at_or_below_last_is_ignored() {
    let mut h = H::new();
    let a = h.open("a");
    let ev = h.core.apply(dlock_core::Input {
        index: 1,
        now_ms: 0,
        command: dlock_core::Command::Renew {
            session: a,
            request: dlock_core::RequestId(1),
        },
    });
    assert_eq!(ev, vec![]);
    assert_eq!(h.core.last_index(), 1);
}

#[test]
fn r7_noqueue_request_against_each_held_mode() {
    // Row: held mode; column: requested mode; '1': compatible (R7).
    let matrix = ["111111", "111110", "111000", "110100", "110000", "100000"];
    for (held, row) in Mode::ALL.into_iter().zip(matrix) {
        for (asked, bit) in Mode::ALL.into_iter().zip(row.chars()) {
            let mut h = H::new();
            let (a, b) = (h.open("a"), h.open("b"));
            let (la, _) = h.lock(a, 1, "r", held); // idx 3
            let (lb, ev) = h.lock_with(b, 1, "r", asked, LockFlags::NOQUEUE, None, None);
            let ctx = format!("{held} then {asked}");
            if bit == '1' {
                assert_eq!(ev, vec![granted(b, 1, lb, asked, 4)], "{ctx}");
                assert_eq!(h.queues("r"), (vec![la, lb], vec![], vec![]), "{ctx}");
                h.unlock(b, 2, lb);
            } else {
                assert_eq!(ev, vec![not_queued(b, 1, None)], "{ctx}");
                assert_eq!(h.queues("r"), (vec![la], vec![], vec![]), "{ctx}");
            }
            h.unlock(a, 2, la);
            assert_eq!(h.core.resource(b"r"), None, "{ctx}: R1");
        }
    }
}

#[test]
fn r10_nl_request_waits_behind_queued_request_and_one_pass_grants_both() {
    let mut h = H::new();
    let (a, b, d) = (h.open("a"), h.open("b"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 4
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR); // idx 5
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::PR)]);
    // NL is compatible with everything, but a request is queued ahead of it.
    let (ld, ev) = h.lock(d, 1, "r", Mode::NL); // idx 6
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![lb, ld]));
    assert_eq!(
        h.unlock(a, 2, la), // idx 7
        vec![
            unlocked(a, 2, la),
            granted(b, 1, lb, Mode::PR, 7),
            granted(d, 1, ld, Mode::NL, 8)
        ]
    );
}

#[test]
fn r10_r13_new_request_waits_until_the_convert_queue_is_empty() {
    let mut h = H::new();
    let (a, b, x, d) = (h.open("a"), h.open("b"), h.open("x"), h.open("d"));
    let (la, _) = h.lock(a, 1, "cq", Mode::PR); // idx 5
    let (lx, _) = h.lock(x, 1, "cq", Mode::PR); // idx 6
    let (lb, _) = h.lock(b, 1, "cq", Mode::PR); // idx 7
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX), // idx 8
        vec![
            queued(b, 2, lb),
            blocking(a, la, Mode::EX),
            blocking(x, lx, Mode::EX)
        ]
    );
    // CR is compatible with every holder (three PR), but a conversion is queued.
    let (ld, ev) = h.lock(d, 1, "cq", Mode::CR); // idx 9
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    // R13: a's unlock runs a pass; b's conversion is still blocked by x: CR stays queued.
    assert_eq!(h.unlock(a, 2, la), vec![unlocked(a, 2, la)]); // idx 10
    assert_eq!(h.queues("cq"), (vec![lx], vec![lb], vec![ld]));
    // x's unlock grants b's EX; CR is incompatible with it and keeps waiting.
    assert_eq!(
        h.unlock(x, 2, lx), // idx 11
        vec![
            unlocked(x, 2, lx),
            granted(b, 2, lb, Mode::EX, 11),
            blocking(b, lb, Mode::CR)
        ]
    );
    // b steps down to NL (R17): the pass grants the CR request.
    assert_eq!(
        h.convert(b, 3, lb, Mode::NL), // idx 12
        vec![
            granted(b, 3, lb, Mode::NL, 12),
            granted(d, 1, ld, Mode::CR, 13)
        ]
    );
    assert_eq!(h.queues("cq"), (vec![lb, ld], vec![], vec![]));
}

#[test]
fn r12_wait_queue_fifo_stops_at_the_first_blocked_then_grants_the_rest_in_one_pass() {
    let mut h = H::new();
    let ids: Vec<_> = (0..5).map(|i| h.open(&format!("c{i}"))).collect();
    let (l0, _) = h.lock(ids[0], 1, "fifo", Mode::EX); // idx 6
    let (l1, _) = h.lock(ids[1], 1, "fifo", Mode::PR); // idx 7
    let (l2, _) = h.lock(ids[2], 1, "fifo", Mode::PR); // idx 8
    let (l3, _) = h.lock(ids[3], 1, "fifo", Mode::PW); // idx 9
    let (l4, ev) = h.lock(ids[4], 1, "fifo", Mode::CR); // idx 10
    assert_eq!(ev, vec![queued(ids[4], 1, l4)]);
    // PW is blocked by the PR locks granted earlier in the same pass; CR stays behind it.
    assert_eq!(
        h.unlock(ids[0], 2, l0), // idx 11
        vec![
            unlocked(ids[0], 2, l0),
            granted(ids[1], 1, l1, Mode::PR, 11),
            granted(ids[2], 1, l2, Mode::PR, 12),
            blocking(ids[1], l1, Mode::PW),
            blocking(ids[2], l2, Mode::PW),
        ]
    );
    assert_eq!(h.queues("fifo"), (vec![l1, l2], vec![], vec![l3, l4]));
    assert_eq!(h.unlock(ids[1], 2, l1), vec![unlocked(ids[1], 2, l1)]); // idx 12
    // PW, then CR (compatible with PW) in one pass.
    assert_eq!(
        h.unlock(ids[2], 2, l2), // idx 13
        vec![
            unlocked(ids[2], 2, l2),
            granted(ids[3], 1, l3, Mode::PW, 13),
            granted(ids[4], 1, l4, Mode::CR, 14),
        ]
    );
}

#[test]
fn r12_convert_queue_head_first_and_nothing_passes_a_blocked_head() {
    let mut h = H::new();
    let (a, b, d, e) = (h.open("a"), h.open("b"), h.open("d"), h.open("e"));
    let (la, _) = h.lock(a, 1, "cvq", Mode::PR); // idx 5
    let (lb, _) = h.lock(b, 1, "cvq", Mode::NL); // idx 6
    let (ld, _) = h.lock(d, 1, "cvq", Mode::NL); // idx 7
    let (le, _) = h.lock(e, 1, "cvq", Mode::NL); // idx 8
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX), // idx 9
        vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]
    );
    // QUECVT queues d's compatible NL->CR behind b's conversion (R21).
    let ev = h.convert_with(d, 2, ld, Mode::CR, LockFlags::QUECVT, None, None); // idx 10
    assert_eq!(ev, vec![queued(d, 2, ld)]);
    // A pass with the head still blocked by a's PR leaves d's conversion queued.
    assert_eq!(h.unlock(e, 2, le), vec![unlocked(e, 2, le)]); // idx 11
    assert_eq!(h.queues("cvq"), (vec![la], vec![lb, ld], vec![]));
    // a's unlock grants the head; d's CR is then blocked by that EX.
    assert_eq!(
        h.unlock(a, 2, la), // idx 12
        vec![
            unlocked(a, 2, la),
            granted(b, 2, lb, Mode::EX, 12),
            blocking(b, lb, Mode::CR)
        ]
    );
    assert_eq!(h.queues("cvq"), (vec![lb], vec![ld], vec![]));
    assert_eq!(
        h.convert(b, 3, lb, Mode::NL), // idx 13
        vec![
            granted(b, 3, lb, Mode::NL, 13),
            granted(d, 2, ld, Mode::CR, 14)
        ]
    );
}
