//! R66: queries rebuild what events said: queues with modes, owners, tokens; sessions.

mod common;

use common::*;
use dlock_core::{Core, FencingToken, LockState, Mode};

#[test]
fn core_is_send_and_sync_for_the_server_task() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Core>();
    check::<dlock_core::Snapshot>();
}

#[test]
fn r66_resource_queues_with_owners_tokens_and_times() {
    let mut h = H::new();
    let (a, b, c) = (h.open("alice"), h.open("bob"), h.open("carol"));
    h.now = 10;
    let (lb, _) = h.lock(b, 1, "db", Mode::PR); // idx 4
    let (la, _) = h.lock(a, 1, "db", Mode::PR); // idx 5
    h.now = 20;
    h.convert(b, 2, lb, Mode::EX); // idx 6: queued
    let (lc, _) = h.lock(c, 1, "db", Mode::CR); // idx 7: waiting
    let info = h.core.resource(b"db").unwrap();
    assert_eq!(info.name, b"db");
    assert_eq!((info.value.len(), info.value_valid), (64, true));
    // The grant queue by lock id; a converting lock appears only on the convert queue.
    let g: Vec<_> = info
        .granted
        .iter()
        .map(|l| (l.lock, l.session, l.state))
        .collect();
    assert_eq!(g, vec![(la, a, LockState::Granted { mode: Mode::PR })]);
    assert_eq!(info.granted[0].token, Some(FencingToken(5)));
    assert_eq!(info.granted[0].session_name, "alice");
    assert_eq!(info.granted[0].since_ms, 10);
    let conv = &info.converting[0];
    assert_eq!(
        (conv.lock, conv.state, conv.token, conv.since_ms),
        (
            lb,
            LockState::Converting {
                from: Mode::PR,
                to: Mode::EX
            },
            Some(FencingToken(4)),
            20
        )
    );
    let wait = &info.waiting[0];
    assert_eq!(
        (wait.lock, wait.state, wait.token),
        (lc, LockState::Waiting { mode: Mode::CR }, None)
    );
    assert_eq!(LockState::Waiting { mode: Mode::CR }.granted_mode(), None);
    assert_eq!(conv.state.requested_mode(), Some(Mode::EX));
}

#[test]
fn r66_resources_by_prefix_in_name_order_with_a_limit() {
    let mut h = H::new();
    let a = h.open("a");
    for name in ["b/2", "a/1", "b/1", "c", "b/3"] {
        h.lock(a, 1, name, Mode::NL);
    }
    let names = |v: Vec<dlock_core::ResourceInfo>| -> Vec<String> {
        v.into_iter()
            .map(|r| String::from_utf8(r.name).unwrap())
            .collect()
    };
    assert_eq!(names(h.core.resources(b"b/", 10)), ["b/1", "b/2", "b/3"]);
    assert_eq!(names(h.core.resources(b"b/", 2)), ["b/1", "b/2"]);
    assert_eq!(names(h.core.resources(b"", 100)).len(), 5);
    assert!(h.core.resources(b"z", 10).is_empty());
    assert!(h.core.resource(b"b/").is_none());
}

#[test]
fn r66_session_lists_its_locks_by_id() {
    let mut h = H::new();
    let (a, b) = (h.open_ttl("a", 5_000), h.open("b"));
    let (l1, _) = h.lock(a, 1, "x", Mode::EX); // idx 3
    let (lb, _) = h.lock(b, 1, "y", Mode::EX); // idx 4
    let (l2, _) = h.lock(a, 2, "y", Mode::PR); // idx 5: waiting
    let info = h.core.session(a).unwrap();
    assert_eq!(
        (info.session, info.ttl_ms, info.expires_at_ms),
        (a, 5_000, 5_000)
    );
    let locks: Vec<_> = info
        .locks
        .iter()
        .map(|l| (l.lock, l.resource.clone(), l.state, l.token))
        .collect();
    assert_eq!(
        locks,
        vec![
            (
                l1,
                b"x".to_vec(),
                LockState::Granted { mode: Mode::EX },
                Some(FencingToken(3))
            ),
            (
                l2,
                b"y".to_vec(),
                LockState::Waiting { mode: Mode::PR },
                None
            ),
        ]
    );
    assert!(h.core.session(dlock_core::SessionId(99)).is_none());
    let _ = lb;
}

#[test]
fn r1_r2_each_request_is_its_own_lock_and_the_resource_ends_with_the_last() {
    let mut h = H::new();
    let a = h.open("a");
    let (l1, ev) = h.lock(a, 1, "life", Mode::PR); // idx 2
    assert_eq!(ev, vec![granted(a, 1, l1, Mode::PR, 2)]);
    let (l2, ev) = h.lock(a, 2, "life", Mode::CR); // idx 3
    assert_eq!(ev, vec![granted(a, 2, l2, Mode::CR, 3)]);
    assert_eq!(h.queues("life"), (vec![l1, l2], vec![], vec![]));
    h.unlock(a, 3, l1);
    assert_eq!(h.queues("life"), (vec![l2], vec![], vec![]));
    h.unlock(a, 4, l2);
    assert!(h.core.resource(b"life").is_none());
}

#[test]
fn tokens_grow_with_every_grant_new_by_a_pass_and_by_each_conversion() {
    let mut h = H::new();
    let (a, b, d) = (h.open("a"), h.open("b"), h.open("d"));
    let token = |h: &H, l| {
        let r = h.core.resource(b"tok").unwrap();
        r.granted.iter().find(|i| i.lock == l).unwrap().token
    };
    let (la, ev) = h.lock(a, 1, "tok", Mode::EX); // idx 4
    assert_eq!(ev, vec![granted(a, 1, la, Mode::EX, 4)]);
    // Up, down, same-mode and middle conversions: each a new, higher token.
    let modes = [
        Mode::EX,
        Mode::PW,
        Mode::PR,
        Mode::CW,
        Mode::PR,
        Mode::NL,
        Mode::EX,
    ];
    for (i, to) in modes.into_iter().enumerate() {
        let r = 2 + i as u64;
        let t = h.next();
        assert_eq!(
            h.convert(a, r, la, to),
            vec![granted(a, r, la, to, t)],
            "{to}"
        );
        assert_eq!(token(&h, la), Some(FencingToken(t)));
    }
    // Two requests granted by one pass get two tokens, in queue order.
    let (lb, _) = h.lock(b, 1, "tok", Mode::PR); // idx 12
    let (ld, _) = h.lock(d, 1, "tok", Mode::PR); // idx 13
    assert_eq!(
        h.unlock(a, 9, la), // idx 14
        vec![
            unlocked(a, 9, la),
            granted(b, 1, lb, Mode::PR, 14),
            granted(d, 1, ld, Mode::PR, 15)
        ]
    );
    // A conversion granted by a pass.
    assert_eq!(h.convert(b, 2, lb, Mode::EX)[0], queued(b, 2, lb)); // idx 15
    assert_eq!(
        h.unlock(d, 2, ld), // idx 16
        vec![unlocked(d, 2, ld), granted(b, 2, lb, Mode::EX, 16)]
    );
}
