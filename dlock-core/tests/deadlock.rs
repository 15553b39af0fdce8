//! R39..R42: deadlock detection across sessions and resources.

mod common;

use common::*;
use dlock_core::{Config, LockId, Mode, SessionId, WaitsFor};

fn edges(h: &H) -> Vec<(u64, u64)> {
    h.core
        .waits_for()
        .into_iter()
        .map(|WaitsFor { waiter, holder }| (waiter.0, holder.0))
        .collect()
}

#[test]
fn r39_r41_two_sessions_two_resources_arriving_request_is_the_victim() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (l1, _) = h.lock(a, 1, "r1", Mode::EX); // idx 3
    let (l2, _) = h.lock(b, 1, "r2", Mode::EX); // idx 4
    let (la, ev) = h.lock(a, 2, "r2", Mode::EX); // idx 5
    assert_eq!(ev, vec![queued(a, 2, la), blocking(b, l2, Mode::EX)]);
    assert_eq!(edges(&h), vec![(1, 2)]);
    // R41: refused, no lock left behind, no notifications.
    let (_, ev) = h.lock(b, 2, "r1", Mode::EX); // idx 6
    assert_eq!(ev, vec![deadlock(b, 2, None)]);
    assert_eq!(h.core.lock_count(), 3);
    assert_eq!(h.queues("r1"), (vec![l1], vec![], vec![]));
    // The other requests are untouched.
    assert_eq!(h.queues("r2"), (vec![l2], vec![], vec![la]));
}

#[test]
fn r39_three_sessions_three_resources() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    h.lock(a, 1, "r1", Mode::PW); // idx 4
    h.lock(b, 1, "r2", Mode::PW); // idx 5
    h.lock(c, 1, "r3", Mode::PW); // idx 6
    let (x, _) = h.lock(a, 2, "r2", Mode::PR); // idx 7: a -> b
    let (y, _) = h.lock(b, 2, "r3", Mode::CW); // idx 8: b -> c
    assert_eq!(edges(&h), vec![(1, 2), (2, 3)]);
    let (_, ev) = h.lock(c, 2, "r1", Mode::CR); // idx 9: CR is compatible with PW
    assert_eq!(ev[0], granted(c, 2, dlock_core::LockId(9), Mode::CR, 9));
    let (_, ev) = h.lock(c, 3, "r1", Mode::EX); // idx 10: c -> a closes the cycle
    assert_eq!(ev, vec![deadlock(c, 3, None)]);
    let _ = (x, y);
}

#[test]
fn r39b_waiting_behind_a_compatible_but_blocked_request() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r1", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "r2", Mode::EX); // idx 5
    let (lc, ev) = h.lock(c, 1, "r1", Mode::EX); // idx 6: waits for a
    assert_eq!(ev, vec![queued(c, 1, lc), blocking(a, la, Mode::EX)]);
    // b's NL is compatible with everything but waits behind c's EX (R10): through c it
    // waits for a (R39 b).
    let (lbn, ev) = h.lock(b, 2, "r1", Mode::NL); // idx 7
    assert_eq!(ev, vec![queued(b, 2, lbn)]);
    assert_eq!(edges(&h), vec![(2, 1), (3, 1)]);
    // a now asks for b's resource: a -> b -> (c) -> a.
    let (_, ev) = h.lock(a, 2, "r2", Mode::EX); // idx 8
    assert_eq!(ev, vec![deadlock(a, 2, None)]);
    let _ = lb;
}

#[test]
fn r39_self_deadlock_through_another_lock_of_the_same_session() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::EX); // idx 2
    let (_, ev) = h.lock(a, 2, "r", Mode::PR); // idx 3
    assert_eq!(ev, vec![deadlock(a, 2, None)]);
    // Compatible second lock of the same owner: fine (R2).
    let (l2, ev) = h.lock(a, 3, "r", Mode::NL); // idx 4
    assert_eq!(ev, vec![granted(a, 3, l2, Mode::NL, 4)]);
    let _ = l;
}

#[test]
fn r40_in_place_conversion_closing_a_cycle_refuses_the_youngest_request() {
    let mut h = H::new();
    let (x, a, b, c) = (h.open("x"), h.open("a"), h.open("b"), h.open("c"));
    let (la, _) = h.lock(a, 1, "r1", Mode::NL); // idx 5
    let (lx, _) = h.lock(x, 1, "r1", Mode::PR); // idx 6
    let (lb2, _) = h.lock(b, 1, "r2", Mode::EX); // idx 7
    let (la2, ev) = h.lock(a, 2, "r2", Mode::EX); // idx 8: a -> b
    assert_eq!(ev, vec![queued(a, 2, la2), blocking(b, lb2, Mode::EX)]);
    let (lb1, ev) = h.lock(b, 2, "r1", Mode::EX); // idx 9: b -> x
    assert_eq!(ev, vec![queued(b, 2, lb1), blocking(x, lx, Mode::EX)]);
    let (lc, ev) = h.lock(c, 1, "r1", Mode::CR); // idx 10: behind b's EX
    assert_eq!(ev, vec![queued(c, 1, lc)]);
    assert_eq!(edges(&h), vec![(2, 3), (3, 1), (4, 3)]);
    // a's NL->PR is compatible with x's PR: granted in place. b's EX now also waits for a:
    // a -> b -> a. The youngest request on the cycle is b's (idx 9): refused; the grant
    // pass on r1 then grants c's CR.
    let ev = h.convert(a, 3, la, Mode::PR); // idx 11
    assert_eq!(
        ev,
        vec![
            granted(a, 3, la, Mode::PR, 11),
            deadlock(b, 2, Some(lb1)),
            granted(c, 1, lc, Mode::CR, 12),
        ]
    );
    assert_eq!(h.queues("r1"), (vec![la, lx, lc], vec![], vec![]));
    assert_eq!(edges(&h), vec![(2, 3)]);
}

#[test]
fn r40_in_place_conversion_victim_can_be_the_converters_own_request() {
    let mut h = H::new();
    let (x, a, b) = (h.open("x"), h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r1", Mode::NL); // idx 4
    let (lx, _) = h.lock(x, 1, "r1", Mode::PR); // idx 5
    h.lock(b, 1, "r2", Mode::EX); // idx 6
    let (lb1, _) = h.lock(b, 2, "r1", Mode::EX); // idx 7: b -> x (older)
    let (la2, _) = h.lock(a, 2, "r2", Mode::EX); // idx 8: a -> b (younger)
    let ev = h.convert(a, 3, la, Mode::PR); // idx 9
    assert_eq!(
        ev,
        vec![
            granted(a, 3, la, Mode::PR, 9),
            deadlock(a, 2, Some(la2)),
            blocking(a, la, Mode::EX)
        ]
    );
    assert_eq!(h.queues("r1"), (vec![la, lx], vec![], vec![lb1]));
}

#[test]
fn r42_no_false_positives() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    // Compatible co-holders create no edge.
    h.lock(a, 1, "r1", Mode::PR); // idx 3
    h.lock(b, 1, "r1", Mode::PR); // idx 4
    let (lb2, _) = h.lock(b, 2, "r2", Mode::EX); // idx 5
    let (la2, ev) = h.lock(a, 2, "r2", Mode::EX); // idx 6
    assert_eq!(ev, vec![queued(a, 2, la2), blocking(b, lb2, Mode::EX)]);
    let (lb3, ev) = h.lock(b, 3, "r1", Mode::CR); // idx 7
    assert_eq!(ev, vec![granted(b, 3, lb3, Mode::CR, 7)]);
    // A cycle broken by an unlock before it forms is not reported.
    assert_eq!(
        h.unlock(b, 4, lb2),
        vec![unlocked(b, 4, lb2), granted(a, 2, la2, Mode::EX, 8)]
    );
    let (lb4, ev) = h.lock(b, 5, "r2", Mode::EX); // idx 9: waits for a, a waits for nobody
    assert_eq!(ev, vec![queued(b, 5, lb4), blocking(a, la2, Mode::EX)]);
    assert_eq!(edges(&h), vec![(2, 1)]);
}

#[test]
fn deadlock_search_bound_gives_a_documented_false_negative() {
    let mut h = H::with(Config {
        max_deadlock_search: 1,
        ..Config::default()
    });
    let (a, b) = (h.open("a"), h.open("b"));
    h.lock(a, 1, "r1", Mode::EX);
    h.lock(b, 1, "r2", Mode::EX);
    h.lock(a, 2, "r2", Mode::EX);
    let (l, ev) = h.lock(b, 2, "r1", Mode::EX);
    assert_eq!(ev[0], queued(b, 2, l));
    assert_eq!(edges(&h), vec![(1, 2), (2, 1)]);
    let _ = SessionId(0);
}

#[test]
fn deep_fifo_search_stays_linear_and_finds_the_cycle_within_the_bound() {
    // 2,000 sessions queued for EX on a hot resource; only the last of them also waits for
    // the newcomer. A quadratic search would need about 2,000,000 steps and stop at the
    // bound of 10,000 with a false negative; the search over walk states needs ~4,000.
    let mut h = H::with(Config {
        max_deadlock_search: 10_000,
        ..Config::default()
    });
    let n = h.open("n");
    let (mine, _) = h.lock(n, 1, "mine", Mode::EX);
    let holder = h.open("holder");
    h.lock(holder, 1, "hot", Mode::EX);
    let mut last = n;
    for _ in 0..2_000 {
        last = h.open("s");
        let (l, ev) = h.lock(last, 1, "hot", Mode::EX);
        assert_eq!(ev[0], queued(last, 1, l));
    }
    let (lw, ev) = h.lock(last, 2, "mine", Mode::EX);
    assert_eq!(ev, vec![queued(last, 2, lw), blocking(n, mine, Mode::EX)]);
    let (_, ev) = h.lock(n, 2, "hot", Mode::EX);
    assert_eq!(ev, vec![deadlock(n, 2, None)]);
}

#[test]
fn r39_r40_queued_conversion_closes_a_cycle_through_a_waiter_behind_it() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    let (la, _) = h.lock(a, 1, "cq", Mode::PR); // idx 5
    let (lc, _) = h.lock(c, 1, "cq", Mode::CR); // idx 6
    let (lb, _) = h.lock(b, 1, "cq", Mode::NL); // idx 7
    let (ld, _) = h.lock(d, 1, "cq", Mode::NL); // idx 8
    // b: NL->PW waits for a's PR and keeps the convert queue non-empty.
    assert_eq!(
        h.convert(b, 2, lb, Mode::PW),
        vec![queued(b, 2, lb), blocking(a, la, Mode::PW)]
    );
    // c: a second CR lock, compatible with every holder, waits behind the conversion.
    let (lc2, ev) = h.lock(c, 2, "cq", Mode::CR); // idx 10
    assert_eq!(ev, vec![queued(c, 2, lc2)]);
    // d: NL->EX waits for a's PR and c's CR; queued, it would be ahead of c's CR request,
    // which would then wait for d: a cycle d -> c -> d, so d's conversion is refused.
    assert_eq!(
        h.convert(d, 2, ld, Mode::EX),
        vec![deadlock(d, 2, Some(ld))]
    );
    assert_eq!(
        h.queues("cq"),
        (
            vec![la, lc, lb, ld]
                .into_iter()
                .filter(|&l| l != lb)
                .collect(),
            vec![lb],
            vec![lc2]
        )
    );
    assert_eq!(edges(&h), vec![(2, 1), (3, 1)]);
}

#[test]
fn r39_r40_queued_conversion_closes_a_cycle_not_through_its_owner() {
    let mut h = H::new();
    let (d, e, f, g, k) = (
        h.open("d"),
        h.open("e"),
        h.open("f"),
        h.open("g"),
        h.open("k"),
    );
    let (lk, _) = h.lock(k, 1, "r", Mode::PR); // idx 6
    let (lf, _) = h.lock(f, 1, "r", Mode::CR); // idx 7
    let (lg, _) = h.lock(g, 1, "r", Mode::NL); // idx 8
    let (ld, _) = h.lock(d, 1, "r", Mode::NL); // idx 9
    // g: NL->PW waits for k's PR.
    assert_eq!(
        h.convert(g, 2, lg, Mode::PW),
        vec![queued(g, 2, lg), blocking(k, lk, Mode::PW)]
    );
    // f waits for e on "s".
    let (les, _) = h.lock(e, 1, "s", Mode::EX); // idx 11
    let (lfs, ev) = h.lock(f, 2, "s", Mode::EX); // idx 12
    assert_eq!(ev, vec![queued(f, 2, lfs), blocking(e, les, Mode::EX)]);
    // e's NL on "r" waits behind g's conversion and, through it (R39 b), for k only.
    let (le, ev) = h.lock(e, 2, "r", Mode::NL); // idx 13
    assert_eq!(ev, vec![queued(e, 2, le)]);
    assert_eq!(edges(&h), vec![(2, 5), (3, 2), (4, 5)]);
    // d's NL->EX would be queued ahead of e's NL, which would then inherit what it waits
    // for, f's CR among it: e -> f -> e, a cycle that does not pass through d. Refused.
    assert_eq!(
        h.convert(d, 2, ld, Mode::EX),
        vec![deadlock(d, 2, Some(ld))]
    );
    assert_eq!(h.queues("r"), (vec![lk, lf, ld], vec![lg], vec![le]));
    assert_eq!(edges(&h), vec![(2, 5), (3, 2), (4, 5)]);
}

#[test]
fn r39_r40_queued_conversion_ahead_of_its_own_sessions_waiting_request() {
    let mut h = H::new();
    let (a, b, s) = (h.open("a"), h.open("b"), h.open("s"));
    let (la, _) = h.lock(a, 1, "own", Mode::PR); // idx 4
    let (lb, _) = h.lock(b, 1, "own", Mode::NL); // idx 5
    let (ls, _) = h.lock(s, 1, "own", Mode::NL); // idx 6
    assert_eq!(
        h.convert(b, 2, lb, Mode::PW),
        vec![queued(b, 2, lb), blocking(a, la, Mode::PW)]
    );
    let (lw, ev) = h.lock(s, 2, "own", Mode::CR); // idx 8
    assert_eq!(ev, vec![queued(s, 2, lw)]);
    // NL->EX would go ahead of s's own CR request, which EX blocks: s would wait for s.
    assert_eq!(
        h.convert(s, 3, ls, Mode::EX),
        vec![deadlock(s, 3, Some(ls))]
    );
    assert_eq!(h.queues("own"), (vec![la, ls], vec![lb], vec![lw]));
}

#[test]
fn r41_conversion_victim_on_another_resource_keeps_its_old_mode_and_token() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la1, _) = h.lock(a, 1, "v1", Mode::EX); // idx 3
    let (lb2, _) = h.lock(b, 1, "v2", Mode::PR); // idx 4
    let (lb1, _) = h.lock(b, 2, "v1", Mode::NL); // idx 5
    let (la2, ev) = h.lock(a, 2, "v2", Mode::EX); // idx 6: a -> b
    assert_eq!(ev, vec![queued(a, 2, la2), blocking(b, lb2, Mode::EX)]);
    // b's NL->EX on v1 would wait for a: refused, NL kept with its token.
    assert_eq!(
        h.convert(b, 3, lb1, Mode::EX),
        vec![deadlock(b, 3, Some(lb1))]
    );
    let info = h.core.resource(b"v1").unwrap();
    assert_eq!(
        info.granted[1].state,
        dlock_core::LockState::Granted { mode: Mode::NL }
    );
    assert_eq!(info.granted[1].token, Some(dlock_core::FencingToken(5)));
    assert_eq!(h.queues("v1"), (vec![la1, lb1], vec![], vec![]));
    assert_eq!(h.queues("v2"), (vec![lb2], vec![], vec![la2]));
}

#[test]
fn r40_in_place_conversion_refuses_the_converters_own_request_and_grants_behind_it() {
    let mut h = H::new();
    let (a, b, x, d) = (h.open("a"), h.open("b"), h.open("x"), h.open("d"));
    let (la1, _) = h.lock(a, 1, "w1", Mode::NL); // idx 5
    let (lx, _) = h.lock(x, 1, "w1", Mode::PR); // idx 6
    let (lb2, _) = h.lock(b, 1, "w2", Mode::EX); // idx 7
    let (lb1, ev) = h.lock(b, 2, "w1", Mode::PW); // idx 8: b -> x
    assert_eq!(ev, vec![queued(b, 2, lb1), blocking(x, lx, Mode::PW)]);
    let (la2, ev) = h.lock(a, 2, "w2", Mode::EX); // idx 9: a -> b
    assert_eq!(ev, vec![queued(a, 2, la2), blocking(b, lb2, Mode::EX)]);
    let (ld, ev) = h.lock(d, 1, "w2", Mode::NL); // idx 10: FIFO behind a
    assert_eq!(ev, vec![queued(d, 1, ld)]);
    // a's NL->PR in place: b's PW now waits for a too. The youngest request on a -> b -> a
    // is a's own EX on w2; the pass on w2 then grants d's NL.
    assert_eq!(
        h.convert(a, 3, la1, Mode::PR), // idx 11
        vec![
            granted(a, 3, la1, Mode::PR, 11),
            deadlock(a, 2, Some(la2)),
            granted(d, 1, ld, Mode::NL, 12),
            blocking(a, la1, Mode::PW),
        ]
    );
    assert_eq!(h.queues("w1"), (vec![la1, lx], vec![], vec![lb1]));
    assert_eq!(h.queues("w2"), (vec![lb2, ld], vec![], vec![]));
}

#[test]
fn r42_a_chain_ending_at_an_owner_who_does_not_wait_is_no_deadlock() {
    let mut h = H::new();
    let (a, b, d, e) = (h.open("a"), h.open("b"), h.open("d"), h.open("e"));
    let (la, _) = h.lock(a, 1, "c1", Mode::EX); // idx 5
    let (lb, _) = h.lock(b, 1, "c2", Mode::EX); // idx 6
    let (ld, _) = h.lock(d, 1, "c3", Mode::EX); // idx 7
    let (la2, ev) = h.lock(a, 2, "c2", Mode::EX); // idx 8: a -> b
    assert_eq!(ev[0], queued(a, 2, la2));
    let (lb2, ev) = h.lock(b, 2, "c3", Mode::EX); // idx 9: b -> d
    assert_eq!(ev[0], queued(b, 2, lb2));
    let (le, ev) = h.lock(e, 1, "c1", Mode::PR); // idx 10: e -> a
    assert_eq!(ev, vec![queued(e, 1, le), blocking(a, la, Mode::PR)]);
    assert_eq!(edges(&h), vec![(1, 2), (2, 3), (4, 1)]);
    // The chain unwinds from d.
    assert_eq!(
        h.unlock(d, 2, ld),
        vec![unlocked(d, 2, ld), granted(b, 2, lb2, Mode::EX, 11)]
    );
    assert_eq!(
        h.unlock(b, 3, lb),
        vec![unlocked(b, 3, lb), granted(a, 2, la2, Mode::EX, 12)]
    );
    assert_eq!(
        h.unlock(a, 3, la),
        vec![unlocked(a, 3, la), granted(e, 1, le, Mode::PR, 13)]
    );
}

#[test]
fn r42_a_cycle_broken_by_a_cancel_or_a_session_end_is_not_reported() {
    // Broken by a cancel.
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "k1", Mode::EX); // idx 3
    h.lock(b, 1, "k2", Mode::EX); // idx 4
    let (la2, _) = h.lock(a, 2, "k2", Mode::EX); // idx 5
    assert_eq!(h.cancel(a, 3, la2), vec![cancelled(a, 2, la2)]); // idx 6
    let (lb, ev) = h.lock(b, 2, "k1", Mode::EX); // idx 7
    assert_eq!(ev, vec![queued(b, 2, lb), blocking(a, la, Mode::EX)]);
    // Broken by a session's end.
    let mut h = H::new();
    let (e, b) = (h.open("e"), h.open("b"));
    h.lock(e, 1, "e1", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "e2", Mode::EX); // idx 4
    h.lock(e, 2, "e2", Mode::EX); // idx 5: e -> b
    assert_eq!(h.close(e, 3), vec![closed(e, 3)]); // idx 6
    let (lb1, ev) = h.lock(b, 2, "e1", Mode::EX); // idx 7
    assert_eq!(ev, vec![granted(b, 2, lb1, Mode::EX, 7)]);
    assert_eq!(h.queues("e2"), (vec![lb], vec![], vec![]));
}

/// What [`cycles_through_o`] built: o, o's lock on A, the w's and their CRs on A (in the
/// w's order), and y's request.
struct Cycles {
    o: SessionId,
    oa: LockId,
    ws: Vec<SessionId>,
    cr: Vec<LockId>,
    y: LockId,
}

/// A table in which one conversion closes `k` cycles at once: g holds CW and o CR on A; each
/// w holds EX on a B of its own that o waits for; y's PR waits on A for g, and every w's CR
/// waits behind y (R10), so for g too (queued in reverse order of the w's with `reverse`).
fn cycles_through_o(h: &mut H, k: usize, reverse: bool) -> Cycles {
    let (g, o, y) = (h.open("g"), h.open("o"), h.open("y"));
    h.lock(g, 1, "A", Mode::CW);
    let (oa, _) = h.lock(o, 1, "A", Mode::CR);
    let ws: Vec<SessionId> = (0..k).map(|i| h.open(&format!("w{i}"))).collect();
    for (i, &w) in ws.iter().enumerate() {
        h.lock(w, 1, &format!("B{i}"), Mode::EX);
    }
    for i in 0..k {
        let (l, ev) = h.lock(o, 2 + i as u64, &format!("B{i}"), Mode::EX);
        assert_eq!(ev[0], queued(o, 2 + i as u64, l));
    }
    let (ly, _) = h.lock(y, 1, "A", Mode::PR);
    let mut order: Vec<usize> = (0..k).collect();
    if reverse {
        order.reverse();
    }
    let mut cr = vec![LockId(0); k];
    for i in order {
        let (l, ev) = h.lock(ws[i], 2, "A", Mode::CR);
        assert_eq!(ev, vec![queued(ws[i], 2, l)]);
        cr[i] = l;
    }
    Cycles {
        o,
        oa,
        ws,
        cr,
        y: ly,
    }
}

/// R40, R41 at scale, as a hostile client can arrange it: one conversion granted in place
/// closes `K` cycles at once. Each is broken (its youngest request refused), and the work
/// grows with `K`: searching afresh after every broken cycle cost `K²` steps, and with ten
/// thousand cycles held the engine (and every other client) for seconds.
#[test]
fn r41_a_conversion_closing_thousands_of_cycles_breaks_each_at_linear_cost() {
    const K: usize = 1_000;
    let mut h = H::new();
    let c = cycles_through_o(&mut h, K, false);
    let before = h.core.deadlock_search_steps();
    // CW is compatible with g's CW: granted in place. Now y waits for o, every w through y
    // waits for o, and o waits for every w: K cycles, each broken at its youngest request,
    // the w's CR.
    let ev = h.convert(c.o, 2 + K as u64, c.oa, Mode::CW);
    let victims: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == dlock_core::EventKind::Deadlock)
        .map(|e| (e.session, e.lock))
        .collect();
    let expected: Vec<_> =
        c.ws.iter()
            .zip(&c.cr)
            .map(|(&w, &l)| (w, Some(l)))
            .collect();
    assert_eq!(victims, expected);
    assert_eq!(h.queues("A").2, vec![c.y], "only y is left waiting on A");
    let steps = h.core.deadlock_search_steps() - before;
    assert!(
        steps <= 10 * K as u64,
        "{steps} entries examined to break {K} cycles"
    );
}

/// The bound of R41's cycle breaking after an in-place conversion: all its searches share
/// one deadlock search budget, so a table shaped to make each cycle expensive (every w's
/// request deep in a long queue) stops the breaking at the budget instead of holding the
/// engine; the cycles broken before that are broken as usual.
#[test]
fn r41_breaking_cycles_after_a_conversion_stays_within_one_search_budget() {
    const K: usize = 500;
    const BUDGET: usize = 5_000;
    let mut h = H::with(Config {
        max_deadlock_search: BUDGET,
        ..Config::default()
    });
    // In reverse: the request of the w that o's first request waits for is last on A.
    let c = cycles_through_o(&mut h, K, true);
    let before = h.core.deadlock_search_steps();
    let ev = h.convert(c.o, 2 + K as u64, c.oa, Mode::CW);
    let steps = h.core.deadlock_search_steps() - before;
    let victims = ev
        .iter()
        .filter(|e| e.kind == dlock_core::EventKind::Deadlock)
        .count();
    assert!(steps <= BUDGET as u64, "{steps} entries examined");
    assert!(
        (1..K).contains(&victims),
        "{victims} of {K} cycles broken within the budget"
    );
}
