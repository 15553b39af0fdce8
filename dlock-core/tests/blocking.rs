//! R32..R37: blocking notifications.

mod common;

use common::*;
use dlock_core::{LockState, Mode};

#[test]
fn r32_r33_r34_r37_who_is_notified_when_a_request_is_queued() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 5
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 6
    // R32: the grant-queue holder incompatible with EX is told; the converter is not.
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX),
        vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]
    );
    // R33: b's converting PR blocks PW but b is not told; R37: a was already told EX.
    let (ld, ev) = h.lock(d, 1, "r", Mode::PW); // idx 8
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    // R34: queued only by FIFO order, compatible with every holder: nobody is told.
    let (lc, ev) = h.lock(c, 1, "r", Mode::CR); // idx 9
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    // R36: advice only; nothing was revoked.
    let info = h.core.resource(b"r").unwrap();
    assert_eq!(info.granted[0].state, LockState::Granted { mode: Mode::PR });
}

#[test]
fn r34_nothing_for_immediate_grants_noqueue_failures_or_deadlock_victims() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, ev) = h.lock(a, 1, "r", Mode::PR); // idx 3
    assert_eq!(ev, vec![granted(a, 1, la, Mode::PR, 3)]);
    let (_, ev) = h.lock_with(
        b,
        1,
        "r",
        Mode::EX,
        dlock_core::LockFlags::NOQUEUE,
        None,
        None,
    );
    assert_eq!(ev, vec![not_queued(b, 1, None)]);
    let (lb, _) = h.lock(b, 2, "s", Mode::EX); // idx 5
    let (la2, ev) = h.lock(a, 2, "s", Mode::EX); // idx 6: a waits for b
    assert_eq!(ev, vec![queued(a, 2, la2), blocking(b, lb, Mode::EX)]);
    let (_, ev) = h.lock(b, 3, "r", Mode::EX); // idx 7: closes the cycle
    assert_eq!(ev, vec![deadlock(b, 3, None)]);
}

#[test]
fn r35_after_a_grant_pass_new_holders_are_told_of_the_strongest_queued_mode() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 5
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR); // idx 6
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::PR)]);
    let (lc, ev) = h.lock(c, 1, "r", Mode::CW); // idx 7: PR and CW are unordered (R37)
    assert_eq!(ev, vec![queued(c, 1, lc), blocking(a, la, Mode::CW)]);
    let (ld, ev) = h.lock(d, 1, "r", Mode::PR); // idx 8: a already told PR
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    // b's PR is granted; CW and PR remain queued. The strongest is PR, compatible with
    // b's PR, but CW is queued too: Linux's special case tells b CW.
    assert_eq!(
        h.unlock(a, 2, la),
        vec![
            unlocked(a, 2, la),
            granted(b, 1, lb, Mode::PR, 9),
            blocking(b, lb, Mode::CW)
        ]
    );
}

#[test]
fn r35_r37_notified_again_after_each_grant_of_its_own() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX); // idx 3
    let (lb, ev) = h.lock(b, 1, "r", Mode::EX); // idx 4
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(a, la, Mode::EX)]);
    // Down to PW (still incompatible): granted, and told again.
    assert_eq!(
        h.convert(a, 2, la, Mode::PW),
        vec![granted(a, 2, la, Mode::PW, 5), blocking(a, la, Mode::EX)]
    );
    // Down to NL: compatible now, nobody is told, and b is granted.
    assert_eq!(
        h.convert(a, 3, la, Mode::NL),
        vec![
            granted(a, 3, la, Mode::NL, 6),
            granted(b, 1, lb, Mode::EX, 7)
        ]
    );
}

#[test]
fn r35_cancelled_conversion_returns_to_the_grant_queue_and_is_told() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 5
    h.convert(a, 2, la, Mode::EX); // idx 6: queued, b told EX
    let (lc, ev) = h.lock(c, 1, "r", Mode::PW); // idx 7: b already told EX
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    // a's conversion is cancelled: a is back on the grant queue, PR blocks c's PW.
    assert_eq!(
        h.cancel(a, 3, la),
        vec![cancelled(a, 2, la), blocking(a, la, Mode::PW)]
    );
    let _ = lb;
}

#[test]
fn r37_a_holder_is_told_each_blocked_mode_once_however_many_requests_queue() {
    // PR and CW are unordered (R37), so a PW holder blocks both. Requests alternating between
    // them, queued and cancelled over and over, must not send the holder one notification
    // each: that would let any session fill another's event stream.
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PW);
    let mut told = Vec::new();
    for i in 0..20u64 {
        let mode = if i % 2 == 0 { Mode::CW } else { Mode::PR };
        let (lb, ev) = h.lock(b, 2 * i + 1, "r", mode);
        assert_eq!(ev[0], queued(b, 2 * i + 1, lb));
        told.extend(ev.into_iter().skip(1));
        assert_eq!(
            h.cancel(b, 2 * i + 2, lb),
            vec![cancelled(b, 2 * i + 1, lb)]
        );
    }
    assert_eq!(
        told,
        vec![blocking(a, la, Mode::CW), blocking(a, la, Mode::PR)]
    );
    // A stronger mode is still news; after that, nothing is.
    let (lb, ev) = h.lock(b, 100, "r", Mode::EX);
    assert_eq!(ev, vec![queued(b, 100, lb), blocking(a, la, Mode::EX)]);
    h.cancel(b, 101, lb);
    let (lb, ev) = h.lock(b, 102, "r", Mode::CW);
    assert_eq!(ev, vec![queued(b, 102, lb)]);
    h.cancel(b, 103, lb);
}

#[test]
fn r32_every_incompatible_holder_is_told_of_a_queued_request() {
    let mut h = H::new();
    let (a, x, b) = (h.open("a"), h.open("x"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 4
    let (lx, _) = h.lock(x, 1, "r", Mode::CR); // idx 5
    let (lb, ev) = h.lock(b, 1, "r", Mode::EX); // idx 6
    assert_eq!(
        ev,
        vec![
            queued(b, 1, lb),
            blocking(a, la, Mode::EX),
            blocking(x, lx, Mode::EX)
        ]
    );
}

#[test]
fn r34_compatible_holders_are_not_told() {
    let mut h = H::new();
    let (a, x, k, b) = (h.open("a"), h.open("x"), h.open("k"), h.open("b"));
    h.lock(a, 1, "r", Mode::NL); // idx 5
    h.lock(x, 1, "r", Mode::CR); // idx 6
    let (lk, _) = h.lock(k, 1, "r", Mode::PW); // idx 7
    // PR is blocked by PW only.
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR); // idx 8
    assert_eq!(ev, vec![queued(b, 1, lb), blocking(k, lk, Mode::PR)]);
}

#[test]
fn r35_told_again_after_a_down_and_an_up_conversion_in_place() {
    let mut h = H::new();
    let (a, d) = (h.open("a"), h.open("d"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (ld, ev) = h.lock(d, 1, "r", Mode::EX); // idx 4
    assert_eq!(ev, vec![queued(d, 1, ld), blocking(a, la, Mode::EX)]);
    assert_eq!(
        h.convert(a, 2, la, Mode::CR),
        vec![granted(a, 2, la, Mode::CR, 5), blocking(a, la, Mode::EX)]
    );
    assert_eq!(
        h.convert(a, 3, la, Mode::PR),
        vec![granted(a, 3, la, Mode::PR, 6), blocking(a, la, Mode::EX)]
    );
    assert_eq!(h.queues("r"), (vec![la], vec![], vec![ld]));
}

/// A holds EX; B's queued conversion to PR goes ahead of C's waiting CW; A converts down to
/// PW in place, which is a grant of its own: told PR again (the strongest), not CW.
fn pw_holder_told_pr_with_cw_queued_behind()
-> (H, [dlock_core::SessionId; 3], [dlock_core::LockId; 3]) {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::EX);
    let (lb, _) = h.lock(b, 1, "r", Mode::NL);
    assert_eq!(
        h.convert(b, 2, lb, Mode::PR),
        vec![queued(b, 2, lb), blocking(a, la, Mode::PR)]
    );
    let (lc, ev) = h.lock(c, 1, "r", Mode::CW);
    assert_eq!(ev, vec![queued(c, 1, lc), blocking(a, la, Mode::CW)]);
    let ev = h.convert(a, 2, la, Mode::PW);
    assert_eq!(ev[1..], [blocking(a, la, Mode::PR)]);
    (h, [a, b, c], [la, lb, lc])
}

#[test]
fn r35_when_the_queued_pr_goes_a_pw_holder_is_told_the_cw_left_behind() {
    // Cancelled.
    let (mut h, [a, b, _], [la, lb, _]) = pw_holder_told_pr_with_cw_queued_behind();
    assert_eq!(
        h.cancel(b, 3, lb),
        vec![cancelled(b, 2, lb), blocking(a, la, Mode::CW)]
    );
    // Its session ended.
    let (mut h, [a, b, _], [la, _, _]) = pw_holder_told_pr_with_cw_queued_behind();
    assert_eq!(h.close(b, 3), vec![closed(b, 3), blocking(a, la, Mode::CW)]);
    // Told once: another CW queued is a repeat R37 drops.
    let d = h.open("d");
    let (ld, ev) = h.lock(d, 1, "r", Mode::CW);
    assert_eq!(ev, vec![queued(d, 1, ld)]);
}

/// The blocking notifications among `events`: (lock, mode).
fn told(events: &[dlock_core::Event]) -> Vec<(dlock_core::LockId, Mode)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            dlock_core::EventKind::Blocking { mode } => Some((e.lock.unwrap(), mode)),
            _ => None,
        })
        .collect()
}

#[test]
fn r32_a_holder_that_joined_or_changed_since_the_last_request_is_told_the_next() {
    let mut h = H::new();
    let (a, b, c, x) = (h.open("a"), h.open("b"), h.open("c"), h.open("x"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR);
    let (lx, ev) = h.lock(x, 1, "r", Mode::EX);
    assert_eq!(told(&ev), [(la, Mode::EX)]);
    // Behind the EX, a PR waits (FIFO, R10), and is granted by the cancel's grant pass.
    let (lc, _) = h.lock(c, 1, "r", Mode::PR);
    h.cancel(x, 2, lx);
    let (lx, ev) = h.lock(x, 3, "r", Mode::EX);
    // a was told EX already (R37); c joined the grant queue since.
    assert_eq!(told(&ev), [(lc, Mode::EX)]);
    h.cancel(x, 4, lx);
    // Granted at once: b joins the grant queue.
    let (lb, _) = h.lock(b, 1, "r", Mode::PR);
    let (lx, ev) = h.lock(x, 5, "r", Mode::EX);
    assert_eq!(told(&ev), [(lb, Mode::EX)]);
    h.cancel(x, 6, lx);
    // a converts down in place: its own notifications start over.
    h.convert(a, 2, la, Mode::CR);
    let (_, ev) = h.lock(x, 7, "r", Mode::EX);
    assert_eq!(told(&ev), [(la, Mode::EX)]);
}

#[test]
fn r32_a_conversion_cancelled_back_to_the_grant_queue_is_told_the_next_request() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR);
    let (lb, _) = h.lock(b, 1, "r", Mode::PR);
    let ev = h.convert(b, 2, lb, Mode::EX);
    assert_eq!(told(&ev), [(la, Mode::EX)]);
    // While b converts (and is told nothing, R33), a PW comes and goes.
    let (lc, _) = h.lock(c, 1, "r", Mode::PW);
    h.cancel(c, 2, lc);
    h.cancel(b, 3, lb);
    // b is back on the grant queue in PR: the next PW is told to it (a's EX covers PW).
    let (_, ev) = h.lock(c, 3, "r", Mode::PW);
    assert_eq!(told(&ev), [(lb, Mode::PW)]);
}

#[test]
fn r32_holders_that_joined_since_are_told_and_the_others_not_again_however_many_joined() {
    let mut h = H::new();
    let (a, b, j, x) = (h.open("a"), h.open("b"), h.open("j"), h.open("x"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR);
    let (lx, ev) = h.lock(x, 1, "r", Mode::EX);
    assert_eq!(told(&ev), [(la, Mode::EX)]);
    h.cancel(x, 2, lx);
    // A CR holder joins (CR conflicts with EX): the next EX tells it, and only it.
    let (lb, _) = h.lock(b, 1, "r", Mode::CR);
    let (lx, ev) = h.lock(x, 3, "r", Mode::EX);
    assert_eq!(told(&ev), [(lb, Mode::EX)]);
    h.cancel(x, 4, lx);
    // More join than the resource remembers (1,024): each is still told once, a and b
    // not again.
    let joined: Vec<_> = (0..1_100)
        .map(|i| h.lock(j, i + 1, "r", Mode::CR).0)
        .collect();
    let (_, ev) = h.lock(x, 5, "r", Mode::EX);
    let mut got = told(&ev);
    got.sort();
    let want: Vec<_> = joined.iter().map(|&l| (l, Mode::EX)).collect();
    assert_eq!(got, want);
}
