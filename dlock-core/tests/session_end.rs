//! R50/R51 at scale: a session with many locks ends in steps of [`STEP_WORK`] locks,
//! the session itself gone at once, none of its queued requests granted or told anything
//! meanwhile.

mod common;

use common::*;
use dlock_core::{Command, Core, Input, LockFlags, LockId, Mode, Reject, STEP_WORK, SessionId};

/// Opens a session taking `n` EX locks on names of its own (`{prefix}{i}`), each granted.
fn holder(h: &mut H, name: &str, prefix: &str, n: usize) -> SessionId {
    let s = h.open(name);
    for i in 0..n {
        let (l, ev) = h.lock(s, i as u64 + 1, &format!("{prefix}{i}"), Mode::EX);
        assert_eq!(ev, vec![granted(s, i as u64 + 1, l, Mode::EX, l.0)]);
    }
    s
}

#[test]
fn a_session_with_many_locks_loses_them_in_steps_and_is_gone_at_once() {
    let mut h = H::new();
    let n = 2 * STEP_WORK + 10;
    let d = holder(&mut h, "d", "k", n);
    let w = h.open("w");
    let last = format!("k{}", n - 1);
    let (lw, ev) = h.lock(w, 1, &last, Mode::EX);
    assert_eq!(
        ev,
        vec![queued(w, 1, lw), blocking(d, LockId(lw.0 - 2), Mode::EX)]
    );

    // The close answers at once and removes one step's worth; the waiter's resource is in
    // the part left for the ticks.
    assert_eq!(h.close(d, 1), vec![closed(d, 1)]);
    assert_eq!(h.core.lock_count(), n - STEP_WORK + 1);
    assert_eq!(h.core.ending_sessions(), 1);
    assert_eq!(h.core.next_deadline(), Some(h.now));
    // The session is gone already: unknown to commands, queries and the census.
    let (_, ev) = h.lock(d, 99, "other", Mode::NL);
    assert_eq!(ev, vec![rejected(d, 99, None, Reject::UnknownSession)]);
    assert!(h.core.session(d).is_none());
    assert_eq!(h.core.census().sessions, 1);
    let info = h.core.resource(last.as_bytes()).expect("still held");
    assert_eq!(info.granted[0].session, d);
    assert_eq!(info.granted[0].session_name, "");

    // Each tick removes one more step; the waiter's turn comes with the last one.
    assert_eq!(h.tick_after(0), vec![]);
    assert_eq!(h.core.lock_count(), n - 2 * STEP_WORK + 1);
    let ev = h.tick_after(0);
    assert_eq!(ev, vec![granted(w, 1, lw, Mode::EX, h.index)]);
    assert_eq!(h.core.lock_count(), 1);
    assert_eq!(h.core.ending_sessions(), 0);
    // Only the waiter's lease is left to wait for.
    assert_eq!(
        h.core.next_deadline(),
        Some(h.core.session_lease(w).unwrap().expires_at_ms)
    );
}

#[test]
fn an_ended_sessions_queued_request_is_never_granted() {
    let mut h = H::new();
    let owner = h.open("owner");
    let (lx, _) = h.lock(owner, 1, "x", Mode::EX);
    let d = holder(&mut h, "d", "a", STEP_WORK);
    let (ld, ev) = h.lock(d, 10_000, "x", Mode::EX);
    assert_eq!(
        ev,
        vec![queued(d, 10_000, ld), blocking(owner, lx, Mode::EX)]
    );
    let w = h.open("w");
    let (lw, ev) = h.lock(w, 1, "x", Mode::PR);
    assert_eq!(ev, vec![queued(w, 1, lw)]);

    assert_eq!(h.close(d, 1), vec![closed(d, 1)]);
    assert_eq!(h.queues("x"), (vec![lx], vec![], vec![ld, lw]));
    // The unlock's grant pass meets the ended session's request first: it goes, unanswered,
    // and the next one is granted.
    let ev = h.unlock(owner, 2, lx);
    assert_eq!(
        ev,
        vec![unlocked(owner, 2, lx), granted(w, 1, lw, Mode::PR, h.index)]
    );
    assert_eq!(h.queues("x"), (vec![lw], vec![], vec![]));
    assert_eq!(h.core.ending_sessions(), 0);
    assert_eq!(h.core.lock_count(), 1);
}

#[test]
fn an_ended_session_gets_no_blocking_notification_and_no_timeout() {
    let mut h = H::new();
    let owner = h.open("owner");
    let (lz, _) = h.lock(owner, 1, "z", Mode::EX);
    let d = holder(&mut h, "d", "a", 2 * STEP_WORK);
    let flags = LockFlags::empty();
    let (ldz, ev) = h.lock_with(d, 10_000, "z", Mode::PR, flags, None, Some(100));
    assert_eq!(ev[0], queued(d, 10_000, ldz));
    let (ldx, _) = h.lock(d, 10_001, "x", Mode::EX);

    assert_eq!(h.close(d, 1), vec![closed(d, 1)]);
    // A request blocked by the ended session's lock waits, and nobody is notified.
    let w = h.open("w");
    let (lw, ev) = h.lock(w, 1, "x", Mode::PR);
    assert_eq!(ev, vec![queued(w, 1, lw)]);
    // At the timeout the tick's step removes the rest of the `a` locks; the timer stays due.
    let ev = h.tick_after(100);
    assert_eq!(ev, vec![]);
    assert_eq!(h.queues("z"), (vec![lz], vec![], vec![ldz]));
    assert_eq!(h.queues("x"), (vec![ldx], vec![], vec![lw]));
    // The next step removes the timed request before its timer is looked at: no TimedOut.
    let ev = h.tick_after(0);
    assert_eq!(ev, vec![granted(w, 1, lw, Mode::PR, h.index)]);
    assert_eq!(h.queues("z"), (vec![lz], vec![], vec![]));
    assert_eq!(h.core.ending_sessions(), 0);
}

#[test]
fn sessions_expiring_together_take_steps_and_a_shared_resource_costs_one_removal_each() {
    let mut h = H::new();
    let b = h.open_ttl("b", 100_000);
    // More sessions than a step, each with a PR on one shared resource: ending each costs
    // its own lock, never a walk of the shared resource's holders.
    let n = STEP_WORK + 200;
    let mut sessions = Vec::new();
    for i in 0..n {
        let s = h.open_ttl(&format!("s{i}"), 1_000);
        h.lock(s, 1, "shared", Mode::PR);
        sessions.push(s);
    }
    let (lb, _) = h.lock(b, 1, "shared", Mode::EX);
    // Every lease has run out. A session costs a step two units, its timer and its lock, so
    // each tick ends half a step of sessions, in lease order, until the last one grants the
    // waiter. A walk of the shared resource's holders per session would take many more.
    let per_tick = STEP_WORK / 2;
    let mut expired_in_order = Vec::new();
    let mut ticks = 0;
    let mut last = Vec::new();
    h.now += 1_000;
    while h.core.next_deadline().is_some_and(|d| d <= h.now) {
        let ev = h.tick_after(0);
        ticks += 1;
        let ended: Vec<_> = ev
            .iter()
            .filter(|e| e.kind == expired(e.session).kind)
            .collect();
        assert!(ended.len() <= per_tick, "{} in one tick", ended.len());
        expired_in_order.extend(ended.iter().map(|e| e.session));
        last = ev;
    }
    assert_eq!(expired_in_order, sessions);
    assert_eq!(ticks, n.div_ceil(per_tick));
    assert_eq!(last.last(), Some(&granted(b, 1, lb, Mode::EX, h.index)));
    assert_eq!(h.core.lock_count(), 1);
    assert_eq!(h.core.ending_sessions(), 0);
}

#[test]
fn an_engine_restored_in_the_middle_of_a_session_end_finishes_it_the_same_way() {
    let mut h = H::new();
    let d = holder(&mut h, "d", "k", 3 * STEP_WORK);
    let w = h.open("w");
    let (lw, _) = h.lock(w, 1, &format!("k{}", 3 * STEP_WORK - 1), Mode::PW);
    h.close(d, 1);
    let bytes = bincode::serde::encode_to_vec(h.core.snapshot(), bincode::config::standard())
        .expect("encodes");
    let (snap, _) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decodes");
    let mut restored = Core::restore(snap);
    assert_eq!(restored.ending_sessions(), 1);
    assert_eq!(restored.lock_count(), h.core.lock_count());
    for _ in 0..2 {
        let input = Input {
            index: h.index + 1,
            now_ms: h.now,
            command: Command::Tick,
        };
        assert_eq!(restored.apply(input), h.tick_after(0));
        assert_eq!(restored.lock_count(), h.core.lock_count());
    }
    assert_eq!(restored.ending_sessions(), 0);
    assert_eq!(restored.resource(b"k0"), None);
    assert_eq!(
        h.queues(&format!("k{}", 3 * STEP_WORK - 1)),
        (vec![lw], vec![], vec![])
    );
}

#[test]
fn a_snapshot_of_an_engine_from_before_stepped_ends_reads_as_one() {
    let mut h = H::new();
    let s = holder(&mut h, "s", "k", 3);
    let bytes = bincode::serde::encode_to_vec(h.core.snapshot(), bincode::config::standard())
        .expect("encodes");
    // Nothing ending: the older layout is this one without its last field, an empty map
    // (one byte).
    assert_eq!(bytes.last(), Some(&0));
    let old = &bytes[..bytes.len() - 1];
    let (v2, used): (dlock_core::SnapshotV2, usize) =
        bincode::serde::decode_from_slice(old, bincode::config::standard()).expect("decodes");
    assert_eq!(used, old.len());
    let core = Core::restore(dlock_core::Snapshot::from_v2(v2));
    assert_eq!(core.census(), h.core.census());
    assert_eq!(core.session(s), h.core.session(s));
    assert_eq!(core.last_token(), h.core.last_token());
}

#[test]
fn leases_ending_together_are_handled_a_step_at_a_time_and_live_until_then() {
    let mut h = H::new();
    let n = STEP_WORK + 100;
    let sessions: Vec<SessionId> = (0..n)
        .map(|i| h.open_ttl(&format!("s{i}"), 1_000))
        .collect();
    // Every lease has run out; one tick handles a step's worth of them, in deadline order.
    let ev = h.tick_after(1_000);
    let want: Vec<_> = sessions[..STEP_WORK].iter().map(|&s| expired(s)).collect();
    assert_eq!(ev, want);
    assert_eq!(h.core.session_count(), 100);
    // The rest are still due: the next tick is wanted at once.
    assert!(h.core.next_deadline().is_some_and(|d| d <= h.now));
    // Until a tick gets to it, a session is live, and a renewal keeps it.
    let kept = sessions[n - 1];
    assert_eq!(h.renew(kept, 1), vec![renewed(kept, 1, 1_000)]);
    let ev = h.tick_after(0);
    let want: Vec<_> = sessions[STEP_WORK..n - 1]
        .iter()
        .map(|&s| expired(s))
        .collect();
    assert_eq!(ev, want);
    assert_eq!(h.core.session_count(), 1);
    assert_eq!(h.core.next_deadline(), Some(h.now + 1_000));
}

/// a with NL and d with CW on `r`: a's conversion to EX waits for d (and whoever else holds
/// `r`), and a PR request on `r` waits behind d.
fn nl_and_cw_on_r(h: &mut H) -> ((SessionId, LockId), (SessionId, LockId)) {
    let a = h.open("a");
    let (la, _) = h.lock(a, 1, "r", Mode::NL);
    let d = h.open("d");
    let (ld, _) = h.lock(d, 1, "r", Mode::CW);
    ((a, la), (d, ld))
}

/// `e` queues PR on `r` (behind d's CW) with request `req` and closes with the next one,
/// its locks still being removed; then a's conversion to EX is queued, not a deadlock (R42).
fn ended_pr_then_conversion(
    h: &mut H,
    e: SessionId,
    req: u64,
    a: (SessionId, LockId),
    d: (SessionId, LockId),
) {
    let (le, ev) = h.lock(e, req, "r", Mode::PR);
    assert_eq!(ev, vec![queued(e, req, le), blocking(d.0, d.1, Mode::PR)]);
    assert_eq!(h.close(e, req + 1), vec![closed(e, req + 1)]);
    assert_eq!(
        h.core.ending_sessions(),
        1,
        "e's locks are still being removed"
    );
    let ev = h.convert(a.0, 100, a.1, Mode::EX);
    assert_eq!(
        ev,
        vec![queued(a.0, 100, a.1), blocking(d.0, d.1, Mode::EX)]
    );
}

/// R42: a session that has ended waits for nothing, even while its queued requests are still
/// on their way out: a conversion that would close a cycle only through them is queued, not
/// refused as a deadlock. Here the conversion waits for the ended session's CR on `r`, and
/// its PR would wait behind the conversion.
#[test]
fn r42_an_ended_sessions_queued_request_closes_no_cycle_for_a_conversion() {
    let mut h = H::new();
    let (a, d) = nl_and_cw_on_r(&mut h);
    let e = holder(&mut h, "e", "x", STEP_WORK);
    let (le_cr, ev) = h.lock(e, 10_000, "r", Mode::CR);
    assert_eq!(ev, vec![granted(e, 10_000, le_cr, Mode::CR, le_cr.0)]);
    ended_pr_then_conversion(&mut h, e, 10_001, a, d);
}

/// R42, the other way into a cycle: the converting session's other queued request waits for
/// the ended session, whose PR would wait behind the conversion.
#[test]
fn r42_a_conversion_waiting_through_an_ended_session_closes_no_cycle() {
    let mut h = H::new();
    let (a, d) = nl_and_cw_on_r(&mut h);
    let n = 2 * STEP_WORK;
    let e = holder(&mut h, "e", "x", n);
    let last = format!("x{}", n - 1);
    let (lx, ev) = h.lock(a.0, 2, &last, Mode::EX);
    assert_eq!(ev[0], queued(a.0, 2, lx));
    ended_pr_then_conversion(&mut h, e, 10_000, a, d);
    let (_, _, waiting) = h.queues(&last);
    assert_eq!(waiting, vec![lx], "a still waits for e's lock");
}
