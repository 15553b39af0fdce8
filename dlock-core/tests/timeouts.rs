//! R65: request timeouts.

mod common;

use common::*;
use dlock_core::{LockFlags, LockState, Mode};

#[test]
fn r65_waiting_request_times_out_like_a_cancel() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, ev) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::empty(), None, Some(500));
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::EX)]);
    let (lc, _) = h.lock(c, 1, "r", Mode::CR); // idx 6, behind b
    assert_eq!(h.core.next_deadline(), Some(500));
    assert_eq!(h.tick_after(499), vec![]);
    assert_eq!(
        h.tick_after(1), // idx 8
        vec![timed_out(b, 1, lb), granted(c, 1, lc, Mode::CR, 8)]
    );
    assert_eq!(h.queues("r"), (vec![la, lc], vec![], vec![]));
    assert_eq!(h.core.next_deadline(), Some(10_000));
}

#[test]
fn r65_converting_request_times_out_and_keeps_its_mode() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::empty(), None, Some(100));
    assert_eq!(ev, vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]);
    assert_eq!(h.tick_after(100), vec![timed_out(b, 2, lb)]);
    let info = h.core.session(b).unwrap();
    assert_eq!(info.locks[0].state, LockState::Granted { mode: Mode::PR });
}

#[test]
fn r65_granted_before_the_deadline_clears_the_timer() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::empty(), None, Some(100));
    assert_eq!(h.core.next_deadline(), Some(100));
    assert_eq!(
        h.unlock(a, 2, la),
        vec![unlocked(a, 2, la), granted(b, 1, lb, Mode::EX, 5)]
    );
    assert_eq!(h.core.next_deadline(), Some(10_000));
    assert_eq!(h.tick_after(200), vec![]);
}

#[test]
fn r65_a_grant_made_possible_earlier_in_the_same_tick_wins_over_the_timeout() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    let b = h.open_ttl("b", 100_000);
    h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, _) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::empty(), None, Some(2_000));
    // One late tick: the lease (t=1000) ran out before the timeout (t=2000).
    assert_eq!(
        h.tick_after(5_000),
        vec![expired(a), granted(b, 1, lb, Mode::EX, 5)]
    );
}

#[test]
fn r65_zero_timeout_expires_at_the_next_tick_and_granted_requests_ignore_it() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (l, ev) = h.lock_with(a, 1, "r", Mode::EX, LockFlags::empty(), None, Some(0));
    assert_eq!(ev, vec![granted(a, 1, l, Mode::EX, 3)]);
    let (lb, _) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::empty(), None, Some(0));
    assert_eq!(h.tick_after(0), vec![timed_out(b, 1, lb)]);
}

#[test]
fn r65_timed_out_conversion_lets_a_waiter_behind_the_convert_queue_in() {
    let mut h = H::new();
    let (a, b, d) = (h.open("a"), h.open("b"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::empty(), None, Some(1_000)); // idx 6
    assert_eq!(ev, vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]);
    // CR is compatible with both PR holders but waits for the convert queue (R13).
    let (ld, ev) = h.lock(d, 1, "r", Mode::CR); // idx 7
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    assert_eq!(
        h.tick_after(1_000), // idx 8
        vec![timed_out(b, 2, lb), granted(d, 1, ld, Mode::CR, 8)]
    );
    let info = h.core.session(b).unwrap();
    assert_eq!(info.locks[0].state, LockState::Granted { mode: Mode::PR });
    assert_eq!(info.locks[0].token, Some(dlock_core::FencingToken(5)));
    assert_eq!(h.queues("r"), (vec![la, lb, ld], vec![], vec![]));
}

#[test]
fn next_deadline_after_skips_what_a_tick_stamped_then_covers() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    let (la, _) = h.lock(a, 1, "r", Mode::EX);
    let b = h.open_ttl("b", 2_000);
    let (lb, _) = h.lock_with(b, 1, "r", Mode::EX, LockFlags::empty(), None, Some(500));
    let _ = (la, lb);
    // Deadlines: b's request at 500, a's lease at 1000, b's lease at 2000.
    assert_eq!(h.core.next_deadline(), Some(500));
    assert_eq!(h.core.next_deadline_after(0), Some(500));
    assert_eq!(h.core.next_deadline_after(499), Some(500));
    assert_eq!(h.core.next_deadline_after(500), Some(1_000));
    assert_eq!(h.core.next_deadline_after(1_000), Some(2_000));
    assert_eq!(h.core.next_deadline_after(2_000), None);
    assert_eq!(h.core.next_deadline_after(u64::MAX), None);
}
