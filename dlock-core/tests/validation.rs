//! R54..R56: validation and its order; configured limits.

mod common;

use common::*;
use dlock_core::{
    Command, Config, Invalid, Limit, LockFlags, LockId, Mode, Reject, RequestId, SessionId,
};

#[test]
fn r55_unknown_session_comes_first() {
    let mut h = H::new();
    let ghost = SessionId(77);
    let (_, ev) = h.lock_with(ghost, 1, "", Mode::EX, LockFlags::EXPEDITE, None, None);
    assert_eq!(ev, vec![rejected(ghost, 1, None, Reject::UnknownSession)]);
}

#[test]
fn r54_static_checks_in_order() {
    let mut h = H::new();
    let a = h.open("a");
    let bad = LockFlags::from_bits_retain(1 << 30);
    let long = "x".repeat(1025);
    type Case<'a> = (&'a str, Mode, LockFlags, Option<&'a [u8]>, Invalid);
    let cases: Vec<Case<'_>> = vec![
        ("", Mode::EX, bad, Some(&[0; 65]), Invalid::EmptyName),
        (
            &long,
            Mode::EX,
            bad,
            None,
            Invalid::NameTooLong {
                len: 1025,
                max: 1024,
            },
        ),
        (
            "r",
            Mode::EX,
            bad,
            Some(&[0; 65]),
            Invalid::ValueTooLong { len: 65, max: 64 },
        ),
        (
            "r",
            Mode::EX,
            bad | LockFlags::EXPEDITE,
            None,
            Invalid::UnknownFlags(1 << 30),
        ),
        (
            "r",
            Mode::EX,
            LockFlags::EXPEDITE | LockFlags::QUECVT,
            None,
            Invalid::UnsupportedFlags(LockFlags::EXPEDITE.bits()),
        ),
        (
            "r",
            Mode::EX,
            LockFlags::QUECVT,
            None,
            Invalid::QuecvtOnNewLock,
        ),
    ];
    for (i, (name, mode, flags, value, want)) in cases.into_iter().enumerate() {
        let r = i as u64;
        let (_, ev) = h.lock_with(a, r, name, mode, flags, value, None);
        assert_eq!(ev, vec![rejected(a, r, None, want)], "case {i}");
    }
    assert_eq!(h.core.lock_count(), 0);
    assert_eq!(h.core.resource_count(), 0);
}

#[test]
fn r56_every_optional_flag_is_rejected_on_every_command() {
    let optional = [
        LockFlags::NOQUEUEBAST,
        LockFlags::CONVDEADLK,
        LockFlags::EXPEDITE,
        LockFlags::HEADQUE,
        LockFlags::NOORDER,
        LockFlags::ALTPR,
        LockFlags::ALTCW,
        LockFlags::PERSISTENT,
        LockFlags::NODLCKWT,
        LockFlags::FORCEUNLOCK,
    ];
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 0, "r", Mode::EX);
    for f in optional {
        let want = Invalid::UnsupportedFlags(f.bits());
        let (_, ev) = h.lock_with(a, 1, "r", Mode::NL, f, None, None);
        assert_eq!(ev, vec![rejected(a, 1, None, want.clone())], "{f:?}");
        let ev = h.convert_with(a, 2, l, Mode::NL, f, None, None);
        assert_eq!(ev, vec![rejected(a, 2, Some(l), want.clone())], "{f:?}");
        let ev = h.unlock_with(a, 3, l, f, None);
        assert_eq!(ev, vec![rejected(a, 3, Some(l), want)], "{f:?}");
    }
    assert_eq!(h.core.lock_count(), 1);
}

#[test]
fn r55_flags_not_applicable_to_unlock() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 1, "r", Mode::EX);
    let ev = h.unlock_with(a, 2, l, LockFlags::NOQUEUE | LockFlags::QUECVT, None);
    let bits = (LockFlags::NOQUEUE | LockFlags::QUECVT).bits();
    assert_eq!(
        ev,
        vec![rejected(a, 2, Some(l), Invalid::FlagNotApplicable(bits))]
    );
}

#[test]
fn r55_arguments_then_lookup_then_granted_mode_checks_then_state() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r", Mode::PR); // idx 3
    let (lb, _) = h.lock(b, 1, "r", Mode::PR); // idx 4
    h.convert(a, 2, la, Mode::EX); // idx 5: a is converting
    let ghost = LockId(999);
    // Argument checks before the lookup.
    let ev = h.convert_with(a, 3, ghost, Mode::NL, LockFlags::HEADQUE, None, None);
    let want = Invalid::UnsupportedFlags(LockFlags::HEADQUE.bits());
    assert_eq!(ev, vec![rejected(a, 3, Some(ghost), want)]);
    // The lookup before the granted-mode checks.
    let ev = h.convert_with(a, 4, ghost, Mode::NL, LockFlags::QUECVT, None, None);
    assert_eq!(ev, vec![rejected(a, 4, Some(ghost), Reject::NotFound)]);
    // Granted-mode checks before BUSY: a converting PR lock, QUECVT PR->NL.
    let ev = h.convert_with(a, 5, la, Mode::NL, LockFlags::QUECVT, None, None);
    let want = Invalid::QuecvtNotAllowed {
        from: Mode::PR,
        to: Mode::NL,
    };
    assert_eq!(ev, vec![rejected(a, 5, Some(la), want)]);
    // A valid conversion of a converting lock: BUSY.
    let ev = h.convert(a, 6, la, Mode::CR);
    assert_eq!(ev, vec![rejected(a, 6, Some(la), Reject::Busy)]);
    // VALBLK on a down-conversion from PW/EX without a value.
    let (lx, _) = h.lock(b, 2, "x", Mode::EX);
    let ev = h.convert_with(b, 3, lx, Mode::PR, LockFlags::VALBLK, None, None);
    assert_eq!(ev, vec![rejected(b, 3, Some(lx), Invalid::MissingValue)]);
    // ... but not on a read path.
    let ev = h.convert_with(b, 4, lb, Mode::PR, LockFlags::VALBLK, None, None);
    assert!(matches!(
        ev[0].kind,
        dlock_core::EventKind::Granted { value: Some(_), .. }
    ));
}

#[test]
fn r55_quecvt_on_a_waiting_lock_is_invalid_before_busy() {
    let mut h = H::new();
    let (a, b) = (h.open("a"), h.open("b"));
    h.lock(a, 1, "r", Mode::EX);
    let (lb, ev) = h.lock(b, 1, "r", Mode::PR);
    assert!(
        matches!(ev[0].kind, dlock_core::EventKind::Queued),
        "{ev:?}"
    );
    // No granted mode, so no QUECVT conversion of it is allowed (R21): INVALID, and it
    // comes before the state check (R55), whatever the mode asked for.
    for (req, to) in [(2, Mode::EX), (3, Mode::NL), (4, Mode::PR)] {
        let ev = h.convert_with(b, req, lb, to, LockFlags::QUECVT, None, None);
        assert_eq!(
            ev,
            vec![rejected(b, req, Some(lb), Invalid::QuecvtOnNewLock)]
        );
    }
    // Without QUECVT the same conversion is the state check's: BUSY (R15).
    let ev = h.convert(b, 5, lb, Mode::EX);
    assert_eq!(ev, vec![rejected(b, 5, Some(lb), Reject::Busy)]);
}

#[test]
fn sessions_ttl_name_and_count_limits() {
    let mut h = H::with(Config {
        max_sessions: 1,
        max_session_name_len: 3,
        ..Config::default()
    });
    let open = |h: &mut H, name: &str, ttl_ms| {
        h.apply(Command::OpenSession {
            name: name.into(),
            ttl_ms,
            secret: 1,
        })
    };
    let refused = |id: u64, reason: Reject| dlock_core::Event {
        session: SessionId(id),
        request: None,
        lock: None,
        kind: dlock_core::EventKind::Rejected { reason },
    };
    let ev = open(&mut h, "a", 99);
    let want = Invalid::TtlOutOfRange {
        ttl_ms: 99,
        min_ms: 100,
        max_ms: 300_000,
    };
    assert_eq!(ev, vec![refused(1, want.into())]);
    let ev = open(&mut h, "abcd", 1_000);
    let want = Invalid::SessionNameTooLong { len: 4, max: 3 };
    assert_eq!(ev, vec![refused(2, want.clone().into())]);
    assert_eq!(
        want.to_string(),
        "session name of 4 bytes exceeds the maximum of 3"
    );
    let ev = open(&mut h, "abc", 1_000);
    assert_eq!(ev, vec![ev_open(SessionId(3), 1_000)]);
    let ev = open(&mut h, "b", 1_000);
    assert_eq!(ev, vec![refused(4, Reject::LimitExceeded(Limit::Sessions))]);
    assert_eq!(h.core.session_count(), 1);
}

#[test]
fn lock_limits_give_typed_rejections() {
    let mut h = H::with(Config {
        max_locks_per_session: 2,
        max_resources: 2,
        max_waiters_per_resource: 1,
        ..Config::default()
    });
    let (a, b, c) = (h.open("a"), h.open("b"), h.open("c"));
    h.lock(a, 1, "r1", Mode::EX);
    h.lock(a, 2, "r2", Mode::EX);
    let (_, ev) = h.lock(a, 3, "r1", Mode::NL);
    let lim = |l| Reject::LimitExceeded(l);
    assert_eq!(ev, vec![rejected(a, 3, None, lim(Limit::LocksPerSession))]);
    let (_, ev) = h.lock(b, 1, "r3", Mode::EX);
    assert_eq!(ev, vec![rejected(b, 1, None, lim(Limit::Resources))]);
    let (lb, ev) = h.lock(b, 2, "r1", Mode::EX);
    assert_eq!(ev[0], queued(b, 2, lb));
    let (_, ev) = h.lock(c, 1, "r1", Mode::EX);
    assert_eq!(
        ev,
        vec![rejected(c, 1, None, lim(Limit::WaitersPerResource))]
    );
    // NOQUEUE never queues, so the waiter limit does not apply.
    let (_, ev) = h.lock_with(c, 2, "r1", Mode::EX, LockFlags::NOQUEUE, None, None);
    assert_eq!(ev, vec![not_queued(c, 2, None)]);
    let _ = RequestId(0);
}

#[test]
fn the_total_lock_limit_counts_every_session_and_frees_on_unlock() {
    let mut h = H::with(Config {
        max_locks: 2,
        ..Config::default()
    });
    let (a, b) = (h.open("a"), h.open("b"));
    let (la, _) = h.lock(a, 1, "r1", Mode::PR);
    let (lb, ev) = h.lock(b, 1, "r2", Mode::EX);
    assert_eq!(ev[0], granted(b, 1, lb, Mode::EX, lb.0));
    // A third lock anywhere, granted or queued, is over the total.
    let (_, ev) = h.lock(b, 2, "r1", Mode::PR);
    assert_eq!(
        ev,
        vec![rejected(b, 2, None, Reject::LimitExceeded(Limit::Locks))]
    );
    let (_, ev) = h.lock(a, 2, "r2", Mode::EX);
    assert_eq!(
        ev,
        vec![rejected(a, 2, None, Reject::LimitExceeded(Limit::Locks))]
    );
    assert_eq!(h.core.lock_count(), 2);
    // Releasing one makes room.
    h.unlock(a, 3, la);
    let (l3, ev) = h.lock(b, 3, "r1", Mode::PR);
    assert_eq!(ev[0], granted(b, 3, l3, Mode::PR, l3.0));
}

#[test]
fn r1_r54_binary_names_up_to_the_maximum_and_value_arguments_of_a_conversion() {
    let mut h = H::new();
    let a = h.open("a");
    let binary: Vec<u8> = (0..=255u8).cycle().take(64).collect();
    let ev = h.apply(Command::Lock {
        session: a,
        request: RequestId(1),
        args: dlock_core::LockRequest {
            resource: binary.clone(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        },
    }); // idx 2
    assert_eq!(ev, vec![granted(a, 1, LockId(2), Mode::EX, 2)]);
    assert!(h.core.resource(&binary).is_some());
    let longest = "n".repeat(1024);
    let (l, ev) = h.lock(a, 2, &longest, Mode::EX); // idx 3
    assert_eq!(ev, vec![granted(a, 2, l, Mode::EX, 3)]);
    // VALBLK on a write path without a value, and a value too long: INVALID, no change.
    let ev = h.convert_with(a, 3, l, Mode::NL, LockFlags::VALBLK, None, None);
    assert_eq!(ev, vec![rejected(a, 3, Some(l), Invalid::MissingValue)]);
    let ev = h.convert_with(a, 4, l, Mode::NL, LockFlags::VALBLK, Some(&[1; 65]), None);
    let want = Invalid::ValueTooLong { len: 65, max: 64 };
    assert_eq!(ev, vec![rejected(a, 4, Some(l), want)]);
    let info = h.core.resource(longest.as_bytes()).unwrap();
    assert_eq!((info.value, info.value_valid), (vec![0; 64], true));
    assert_eq!(
        info.granted[0].state,
        dlock_core::LockState::Granted { mode: Mode::EX }
    );
}

#[test]
fn r54_unknown_flag_bits_are_invalid_on_every_command() {
    let mut h = H::new();
    let a = h.open("a");
    let (l, _) = h.lock(a, 0, "r", Mode::PR); // idx 2
    let unknown = LockFlags::from_bits_retain(1 << 30);
    let want = Invalid::UnknownFlags(1 << 30);
    let (_, ev) = h.lock_with(a, 1, "new", Mode::NL, unknown, None, None);
    assert_eq!(ev, vec![rejected(a, 1, None, want.clone())]);
    let ev = h.convert_with(a, 2, l, Mode::EX, unknown, None, None);
    assert_eq!(ev, vec![rejected(a, 2, Some(l), want.clone())]);
    let ev = h.unlock_with(a, 3, l, unknown, None);
    assert_eq!(ev, vec![rejected(a, 3, Some(l), want)]);
    assert_eq!(h.queues("r"), (vec![l], vec![], vec![]));
    assert!(h.core.resource(b"new").is_none());
}
