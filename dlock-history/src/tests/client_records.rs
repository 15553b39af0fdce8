//! Properties judged on the client records against the server's log.

use super::*;
use crate::{OpKind, OpOutcome, OpRecord};

#[test]
fn a_client_seeing_a_token_the_server_never_granted_is_a_fencing_violation() {
    let h = clean();
    let record = ClientRecord::Op(OpRecord {
        client: 0,
        session: SessionId(1),
        kind: OpKind::Lock,
        resource: b"r".to_vec(),
        mode: Mode::EX,
        start_us: T0,
        end_us: T0,
        outcome: OpOutcome::Granted {
            lock: LockId(3),
            token: FencingToken(99),
        },
    });
    only(&h.check(&[record]), Property::Fencing);
}

#[test]
fn a_hung_operation_violates_completion() {
    let h = clean();
    let record = ClientRecord::Op(OpRecord {
        client: 3,
        session: SessionId(1),
        kind: OpKind::Lock,
        resource: b"r".to_vec(),
        mode: Mode::EX,
        start_us: T0,
        end_us: T0 + 1,
        outcome: OpOutcome::Hung,
    });
    only(&h.check(&[record]), Property::Completion);
}

#[test]
fn lost_after_an_incompatible_grant_violates_property_5() {
    let ok = lease_story(1003, 950);
    assert!(ok.is_ok(), "{ok}");
    assert_eq!(ok.lost_checked, 1);
    let bad = lease_story(1003, 1100);
    only(&bad, Property::LostBeforeGrant);
    assert!(bad.examples[0].detail.contains("lost()"), "{bad}");
}

#[test]
fn a_grant_by_a_restarted_server_before_lost_is_a_violation_or_a_counted_gap() {
    let story = || {
        let mut h = H::new();
        let a = h.open(1000);
        let la = h.lock_granted(a, 1, "r", Mode::EX);
        h.restart(1000);
        let b = h.open(1000);
        h.lock_granted(b, 1, "r", Mode::EX);
        let lost = ClientRecord::Lost(LostRecord {
            client: 0,
            lock: la,
            resource: b"r".to_vec(),
            mode: Mode::EX,
            reason: LostKind::SessionExpired,
            ts_us: h.ts + 20_000,
        });
        (h.lines, lost)
    };
    let (lines, lost) = story();
    let strict = check(CheckConfig::default(), lines, &[lost]);
    only(&strict, Property::LostBeforeGrant);
    assert!(strict.examples[0].detail.contains("restarted"), "{strict}");
    let (lines, lost) = story();
    let lenient = CheckConfig {
        restart_grace: false,
        ..CheckConfig::default()
    };
    let report = check(lenient, lines, &[lost]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.restart_gaps, 1);
    assert_eq!(report.restart_gap_examples.len(), 1);
}

#[test]
fn a_lost_report_after_the_owners_own_unlock_is_not_a_violation() {
    // The unlock was applied and handed the lock on; its answer never reached the client,
    // whose local lease then lapsed.
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    let lb = h.lock_queued(b, 1, "r", Mode::EX);
    h.apply(1, H::unlock_cmd(a, 2, la), |i| {
        vec![
            ev(a, Some(2), Some(la), EventKind::Unlocked),
            ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
        ]
    });
    let lost = ClientRecord::Lost(LostRecord {
        client: 0,
        lock: la,
        resource: b"r".to_vec(),
        mode: Mode::EX,
        reason: LostKind::LocalLeaseLapsed,
        ts_us: h.ts + 900_000,
    });
    let report = check(CheckConfig::default(), h.lines, &[lost]);
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_dropped_session_never_released_violates_property_6() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(100_000);
    h.lock_granted(a, 1, "r", Mode::EX);
    // b keeps working for 3 s; a is never expired.
    for i in 0..30 {
        h.apply(
            100,
            Command::Renew {
                session: b,
                request: RequestId(10 + i),
            },
            |_| {
                vec![ev(
                    b,
                    Some(10 + i),
                    None,
                    EventKind::Renewed { ttl_ms: 100_000 },
                )]
            },
        );
    }
    let dropped = ClientRecord::Dropped {
        session: a,
        ttl_ms: 1000,
        ts_us: T0 + 3000,
    };
    let report = check(CheckConfig::default(), h.lines, &[dropped]);
    only(&report, Property::DeadRelease);
    assert_eq!(report.dropped_checked, 1);
}

#[test]
fn a_dropped_session_ends_when_its_server_dies_not_when_it_restarts() {
    // Dropped at T0; the server's last line is 0.5 s later, then it is killed and comes
    // back only 1.5 s after the drop (more than lease + allowance).
    let mut h = H::new();
    let a = h.open(1000);
    h.apply(500, Command::Tick, |_| Vec::new());
    h.ts += 1000 * 1000;
    h.restart(100);
    let dropped = ClientRecord::Dropped {
        session: a,
        ttl_ms: 1000,
        ts_us: T0,
    };
    let report = check(CheckConfig::default(), h.lines, &[dropped]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.dropped_checked, 1);
}
