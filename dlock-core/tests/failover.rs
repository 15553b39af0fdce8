//! `ExtendLeases`: the grace a replicated cluster gives every session when a new leader
//! takes over (HA rule 2).

mod common;

use common::*;
use dlock_core::{Command, Core, Mode};

#[test]
fn extend_leases_moves_every_lease_end_to_at_least_now_plus_grace() {
    let mut h = H::new();
    let short = h.open_ttl("short", 1_000); // expires at 1000
    let long = h.open_ttl("long", 60_000); // expires at 60000
    let (ls, _) = h.lock(short, 1, "r", Mode::EX);
    h.now = 900;
    assert!(
        h.apply(Command::ExtendLeases { grace_ms: 5_000 })
            .is_empty()
    );
    assert_eq!(h.core.session(short).unwrap().expires_at_ms, 5_900);
    assert_eq!(
        h.core.session(long).unwrap().expires_at_ms,
        60_000,
        "a later end is kept"
    );
    assert_eq!(h.core.next_deadline(), Some(5_900));

    // The old lease end passes without effect; the extended one expires the session.
    assert_eq!(h.tick_after(100), vec![]);
    assert_eq!(h.tick_after(4_899), vec![]);
    let contender = h.open("contender");
    let (lc, ev) = h.lock(contender, 1, "r", Mode::EX);
    assert_eq!(
        ev,
        vec![queued(contender, 1, lc), blocking(short, ls, Mode::EX)]
    );
    let ev = h.tick_after(1);
    assert_eq!(ev[0], expired(short));
    assert_eq!(ev[1], granted(contender, 1, lc, Mode::EX, h.index));
}

#[test]
fn extend_leases_is_idempotent_and_survives_a_snapshot() {
    let mut h = H::new();
    let s = h.open_ttl("s", 1_000);
    h.apply(Command::ExtendLeases { grace_ms: 3_000 });
    h.apply(Command::ExtendLeases { grace_ms: 3_000 });
    assert_eq!(h.core.session(s).unwrap().expires_at_ms, 3_000);
    // A renewal after the extension counts from its own time, as always.
    h.now = 2_500;
    h.renew(s, 1);
    assert_eq!(h.core.session(s).unwrap().expires_at_ms, 3_500);

    let restored = Core::restore(h.core.snapshot());
    assert_eq!(restored.session(s).unwrap().expires_at_ms, 3_500);
    assert_eq!(restored.next_deadline(), Some(3_500));
}

#[test]
fn configure_replaces_the_limits_for_later_inputs_and_survives_a_snapshot() {
    let mut h = H::new();
    let s = h.open("s");
    let (l1, _) = h.lock(s, 1, "a", Mode::EX);
    let (l2, _) = h.lock(s, 2, "b", Mode::EX);
    let config = dlock_core::Config {
        max_locks_per_session: 1,
        ..h.core.config().clone()
    };
    assert!(
        h.apply(Command::Configure {
            config: Box::new(config.clone())
        })
        .is_empty()
    );
    assert_eq!(h.core.config(), &config);
    // What exists stays; a new lock over the lowered limit is refused.
    assert_eq!(h.core.session_lock_count(s), 2);
    let (_, ev) = h.lock(s, 3, "c", Mode::EX);
    assert_eq!(
        ev,
        vec![rejected(
            s,
            3,
            None,
            dlock_core::Reject::LimitExceeded(dlock_core::Limit::LocksPerSession)
        )]
    );
    let _ = (l1, l2);
    let restored = Core::restore(h.core.snapshot());
    assert_eq!(restored.config(), &config);
}

#[test]
fn renew_many_answers_each_renewal_as_a_renew_would() {
    let mut h = H::new();
    let a = h.open_ttl("a", 1_000);
    let b = h.open_ttl("b", 2_000);
    let gone = dlock_core::SessionId(999);
    h.now = 500;
    let ev = h.apply(Command::RenewMany {
        renewals: vec![
            (a, dlock_core::RequestId(7)),
            (gone, dlock_core::RequestId(1)),
            (b, dlock_core::RequestId(3)),
        ],
    });
    assert_eq!(
        ev,
        vec![
            renewed(a, 7, 1_000),
            rejected(gone, 1, None, dlock_core::Reject::UnknownSession),
            renewed(b, 3, 2_000),
        ]
    );
    assert_eq!(h.core.session(a).unwrap().expires_at_ms, 1_500);
    assert_eq!(h.core.session(b).unwrap().expires_at_ms, 2_500);
}
