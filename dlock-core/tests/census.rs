//! R66 for monitoring: the census of locks by state and mode, pages of sessions, and the
//! cycle that made a request a deadlock victim.

mod common;

use common::*;
use dlock_core::{Census, EventKind, LockFlags, Mode, SessionId};

#[test]
fn census_counts_locks_by_state_and_mode() {
    let mut h = H::new();
    let (a, b, c, d) = (h.open("a"), h.open("b"), h.open("c"), h.open("d"));
    assert_eq!(
        h.core.census(),
        Census {
            sessions: 4,
            ..Census::default()
        }
    );
    let (la, _) = h.lock(a, 1, "db", Mode::PR);
    h.lock(b, 1, "db", Mode::PR);
    h.convert(a, 2, la, Mode::EX); // queued: b holds PR
    h.lock(c, 1, "db", Mode::CW); // waits behind the conversion
    h.lock(d, 1, "other", Mode::EX);
    h.lock(d, 2, "third", Mode::NL);
    let census = h.core.census();
    let mut granted = [0; 6];
    granted[Mode::PR.index()] = 1; // b; a's PR is counted as converting
    granted[Mode::EX.index()] = 1;
    granted[Mode::NL.index()] = 1;
    let mut converting = [0; 6];
    converting[Mode::EX.index()] = 1;
    let mut waiting = [0; 6];
    waiting[Mode::CW.index()] = 1;
    assert_eq!(
        census,
        Census {
            sessions: 4,
            resources: 3,
            granted,
            converting,
            waiting
        }
    );
    assert_eq!((census.locks(), census.queued()), (5, 2));
    assert_eq!(census, h.core.census_by_walking());
    // After the holder leaves, the conversion and then the waiter move on.
    h.close(b, 2);
    let census = h.core.census();
    assert_eq!(census.granted[Mode::EX.index()], 2);
    assert_eq!(census.queued(), 1, "CW still waits for a's EX");
    assert_eq!(census.sessions, 3);
    assert_eq!(census, h.core.census_by_walking());
    // A restored engine counts its locks again.
    let restored = dlock_core::Core::restore(h.core.snapshot());
    assert_eq!(restored.census(), census);
}

#[test]
fn sessions_page_in_id_order_with_more_flag() {
    let mut h = H::new();
    let ids: Vec<SessionId> = (0..5).map(|i| h.open(&format!("s{i}"))).collect();
    h.lock(ids[1], 1, "x", Mode::EX);
    h.lock(ids[2], 1, "x", Mode::EX); // waiting
    let (page, more) = h.core.sessions_page(None, 2);
    assert!(more);
    assert_eq!(page.iter().map(|s| s.session).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(
        (page[1].name.as_str(), page[1].locks, page[1].pending),
        ("s1", 1, 0)
    );
    let (page, more) = h.core.sessions_page(Some(ids[1]), 2);
    assert!(more);
    assert_eq!(
        (page[0].session, page[0].locks, page[0].pending),
        (ids[2], 1, 1)
    );
    let (page, more) = h.core.sessions_page(Some(ids[3]), 10);
    assert!(!more);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].ttl_ms, 10_000);
    assert_eq!(page[0].expires_at_ms, 10_000);
}

#[test]
fn r40_cycle_through_names_the_cycle_a_victim_closed() {
    let mut h = H::new();
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    h.lock(a, 1, "r1", Mode::EX);
    h.lock(b, 1, "r2", Mode::EX);
    h.lock(c, 1, "r3", Mode::EX);
    h.lock(a, 2, "r2", Mode::EX); // a waits for b
    h.lock(b, 2, "r3", Mode::EX); // b waits for c
    let (_, events) = h.lock(c, 2, "r1", Mode::EX); // c would wait for a: a cycle
    assert!(matches!(events[0].kind, EventKind::Deadlock));
    // After the refusal the rest of the cycle still waits: c -> a -> b -> c.
    assert_eq!(
        h.core.cycle_through(c, b"r1", Mode::EX),
        Some(vec![c, a, b])
    );
    // A request that would not close a cycle, or on an unknown resource, has none.
    assert_eq!(h.core.cycle_through(c, b"r1", Mode::NL), None);
    assert_eq!(h.core.cycle_through(c, b"nope", Mode::EX), None);
    assert_eq!(h.core.cycle_through(a, b"r3", Mode::EX), None);
}

#[test]
fn r20_conversion_cycle_through_names_the_cycle_a_refused_conversion_closed() {
    // Two PR holders converting to EX: the second is refused (R20), and a's conversion still
    // waits for b's PR.
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "x", Mode::PR);
    let (lb, _) = h.lock(b, 1, "x", Mode::PR);
    h.convert(a, 2, la, Mode::EX);
    assert_eq!(
        h.convert(b, 2, lb, Mode::EX),
        vec![deadlock(b, 2, Some(lb))]
    );
    assert_eq!(
        h.core.conversion_cycle_through(b, lb, Mode::EX),
        Some((b"x".to_vec(), Some(vec![b, a])))
    );
    // A lock that is not granted (a's is converting), another session's lock.
    assert_eq!(h.core.conversion_cycle_through(a, la, Mode::EX), None);
    assert_eq!(h.core.conversion_cycle_through(a, lb, Mode::EX), None);
    // Once a's conversion is cancelled, b's would wait for a, who waits for nothing.
    assert_eq!(h.cancel(a, 3, la), vec![cancelled(a, 2, la)]);
    assert_eq!(
        h.core.conversion_cycle_through(b, lb, Mode::EX),
        Some((b"x".to_vec(), None))
    );

    // QUECVT behind a conversion that waits for the converter (R20, R21).
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::NL);
    let (lb, _) = h.lock(b, 1, "r", Mode::PR);
    h.convert(a, 2, la, Mode::EX);
    let ev = h.convert_with(b, 2, lb, Mode::EX, LockFlags::QUECVT, None, None);
    assert_eq!(ev, vec![deadlock(b, 2, Some(lb))]);
    assert_eq!(
        h.core.conversion_cycle_through(b, lb, Mode::EX),
        Some((b"r".to_vec(), Some(vec![b, a])))
    );
}

#[test]
fn r39_waits_for_bounded_lists_a_prefix_of_the_edges() {
    let mut h = H::new();
    let ids: Vec<SessionId> = (0..4).map(|i| h.open(&format!("s{i}"))).collect();
    h.lock(ids[0], 1, "x", Mode::PR);
    h.lock(ids[1], 1, "x", Mode::PR);
    h.lock(ids[2], 1, "x", Mode::EX); // waits for 0 and 1
    h.lock(ids[3], 1, "x", Mode::EX); // waits for 0, 1 and 2
    let all = h.core.waits_for();
    assert_eq!(all.len(), 5);
    let steps = usize::MAX;
    assert_eq!(h.core.waits_for_bounded(10, steps), (all.clone(), false));
    assert_eq!(h.core.waits_for_bounded(5, steps), (all.clone(), false));
    assert_eq!(
        h.core.waits_for_bounded(3, steps),
        (all[..3].to_vec(), true)
    );
}

#[test]
fn r39_waits_for_bounded_stops_at_its_step_budget_however_long_the_queue() {
    let mut h = H::new();
    let holder = h.open("holder");
    h.lock(holder, 1, "hot", Mode::EX);
    // One session queues many requests: each one's walk passes all queued ahead of it.
    let waiter = h.open("waiter");
    for i in 0..400 {
        h.lock(waiter, 10 + i, "hot", Mode::PR);
    }
    let edge = dlock_core::WaitsFor { waiter, holder };
    // Enough steps: the one distinct edge, complete (the waiter's own queue is no edge).
    let (edges, more) = h.core.waits_for_bounded(10, usize::MAX);
    assert_eq!((edges, more), (vec![edge], false));
    // A budget far below the queue's quadratic walk: cut, and said so.
    let (edges, more) = h.core.waits_for_bounded(10, 1_000);
    assert!(more, "the answer is marked incomplete");
    assert!(edges.iter().all(|e| *e == edge), "{edges:?}");
}
