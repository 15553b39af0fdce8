//! Combinations of rules that are easy to get wrong: grant passes after a cancel, a timeout or
//! a session end at the head of the convert queue; a session queued behind its own request;
//! value block reads by queued conversions; notifications after a cancel's grant pass.

mod common;

use common::*;
use dlock_core::{LockFlags, LockId, Mode, SessionId};

/// A PR holder `a` and two NL holders `b`, `d` on "r"; `b`'s NL->EX is queued (blocked by the
/// PR), then `d`'s NL->CR with QUECVT (compatible with every holder) queued behind it. `b`'s
/// conversion has a timeout of `b_timeout_ms` if given. Returns (h, [a, b, d], [la, lb, ld]).
fn two_converters(b_timeout_ms: Option<u64>) -> (H, [SessionId; 3], [LockId; 3]) {
    let mut h = H::new();
    let (a, b, d) = (
        h.open_ttl("a", 60_000),
        h.open("b"),
        h.open_ttl("d", 60_000),
    );
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::NL); // idx 5
    let (ld, _) = h.lock(d, 1, "r", Mode::NL); // idx 6
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::empty(), None, b_timeout_ms); // idx 7
    assert_eq!(ev, vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]);
    let ev = h.convert_with(d, 2, ld, Mode::CR, LockFlags::QUECVT, None, None); // idx 8
    assert_eq!(ev, vec![queued(d, 2, ld)]);
    assert_eq!(h.queues("r"), (vec![la], vec![lb, ld], vec![]));
    (h, [a, b, d], [la, lb, ld])
}

#[test]
fn r47_r12_cancelling_the_convert_queue_head_grants_the_conversion_behind_it() {
    let (mut h, [_, b, d], [la, lb, ld]) = two_converters(None);
    assert_eq!(
        h.cancel(b, 3, lb), // idx 9
        vec![cancelled(b, 2, lb), granted(d, 2, ld, Mode::CR, 9)]
    );
    assert_eq!(h.queues("r"), (vec![la, lb, ld], vec![], vec![]));
}

#[test]
fn r65_r12_a_timed_out_convert_queue_head_lets_the_conversion_behind_it_through() {
    let (mut h, [_, b, d], [la, lb, ld]) = two_converters(Some(1_000));
    assert_eq!(
        h.tick_after(1_000), // idx 9
        vec![timed_out(b, 2, lb), granted(d, 2, ld, Mode::CR, 9)]
    );
    assert_eq!(h.queues("r"), (vec![la, lb, ld], vec![], vec![]));
}

#[test]
fn r50_r12_the_end_of_the_convert_queue_heads_session_lets_the_next_through() {
    let (mut h, [_, b, d], [la, _, ld]) = two_converters(None);
    // The closed session's pending conversion gets no completion.
    assert_eq!(
        h.close(b, 3), // idx 9
        vec![closed(b, 3), granted(d, 2, ld, Mode::CR, 9)]
    );
    assert_eq!(h.queues("r"), (vec![la, ld], vec![], vec![]));
}

#[test]
fn r39b_r10_a_request_behind_its_own_sessions_queued_request() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (lb, _) = h.lock(b, 1, "own", Mode::EX); // idx 3
    let (l1, ev) = h.lock(a, 1, "own", Mode::PR); // idx 4
    assert_eq!(ev, vec![queued(a, 1, l1), blocking(b, lb, Mode::PR)]);
    // PR behind a's own PR: compatible, so it waits for what that one waits for (b).
    let (l2, ev) = h.lock(a, 2, "own", Mode::PR); // idx 5
    assert_eq!(ev, vec![queued(a, 2, l2)]);
    // EX behind a's own PR: a would wait for itself.
    let (_, ev) = h.lock(a, 3, "own", Mode::EX); // idx 6
    assert_eq!(ev, vec![deadlock(a, 3, None)]);
    assert_eq!(
        h.unlock(b, 2, lb), // idx 7
        vec![
            unlocked(b, 2, lb),
            granted(a, 1, l1, Mode::PR, 7),
            granted(a, 2, l2, Mode::PR, 8)
        ]
    );
}

#[test]
fn r27_r30_a_queued_conversion_reads_the_value_block_when_granted() {
    let mut h = H::new();
    let (a, w) = (h.open("a"), h.open("w"));
    let (la, _) = h.lock(a, 1, "cr", Mode::NL); // idx 3
    let (lw, _) = h.lock(w, 1, "cr", Mode::EX); // idx 4
    let ev = h.convert_with(a, 2, la, Mode::PR, LockFlags::VALBLK, None, None); // idx 5
    assert_eq!(ev, vec![queued(a, 2, la), blocking(w, lw, Mode::PR)]);
    assert_eq!(
        h.unlock_with(w, 2, lw, LockFlags::VALBLK, Some(b"fresh")), // idx 6
        vec![
            unlocked(w, 2, lw),
            granted_v(a, 2, la, Mode::PR, 6, b"fresh", true)
        ]
    );
    // An EX holder invalidates; a queued read then sees VALNOTVALID with the contents.
    h.convert(a, 3, la, Mode::NL); // idx 7
    let (lw, _) = h.lock(w, 3, "cr", Mode::EX); // idx 8
    let (lr, ev) = h.lock_with(a, 4, "cr", Mode::PR, LockFlags::VALBLK, None, None); // idx 9
    assert_eq!(ev, vec![queued(a, 4, lr), blocking(w, lw, Mode::PR)]);
    assert_eq!(
        h.unlock_with(w, 4, lw, LockFlags::IVVALBLK, None), // idx 10
        vec![
            unlocked(w, 4, lw),
            granted_v(a, 4, lr, Mode::PR, 10, b"fresh", false)
        ]
    );
}

#[test]
fn r29b_a_dead_sessions_waiting_ex_request_leaves_the_value_block_valid() {
    let mut h = H::new();
    let (a, d) = (h.open("a"), h.open("d"));
    let (la, _) = h.lock(a, 1, "wv", Mode::PR); // idx 3
    let (ld, ev) = h.lock(d, 1, "wv", Mode::EX); // idx 4
    assert_eq!(ev, vec![queued(d, 1, ld), blocking(a, la, Mode::EX)]);
    assert_eq!(h.close(d, 2), vec![closed(d, 2)]);
    let info = h.core.resource(b"wv").unwrap();
    assert!(info.value_valid);
    assert_eq!(h.queues("wv"), (vec![la], vec![], vec![]));
}

#[test]
fn r35_the_pass_after_a_cancel_tells_the_lock_it_granted_of_what_still_waits() {
    let mut h = H::new();
    let (k, b, d, e) = (h.open("k"), h.open("b"), h.open("d"), h.open("e"));
    let (lk, _) = h.lock(k, 1, "nc", Mode::CR); // idx 5
    let (lb, ev) = h.lock(b, 1, "nc", Mode::EX); // idx 6
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(k, lk, Mode::EX)]);
    // PR and CW are both compatible with CR, queued only behind EX.
    let (ld, _) = h.lock(d, 1, "nc", Mode::PR); // idx 7
    let (le, _) = h.lock(e, 1, "nc", Mode::CW); // idx 8
    // The pass after the cancel grants PR; CW is blocked by it and stays, so PR is told.
    assert_eq!(
        h.cancel(b, 2, lb), // idx 9
        vec![
            cancelled(b, 1, lb),
            granted(d, 1, ld, Mode::PR, 9),
            blocking(d, ld, Mode::CW)
        ]
    );
    assert_eq!(h.queues("nc"), (vec![lk, ld], vec![], vec![le]));
}
