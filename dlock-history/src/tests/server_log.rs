//! Properties judged on the server's log alone.

use super::*;

#[test]
fn a_correct_history_passes() {
    let report = clean().check(&[]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.grants, 2);
    assert_eq!(report.inputs, 8);
}

#[test]
fn two_incompatible_grants_violate_compatibility() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::PR);
    h.lock_granted(b, 1, "r", Mode::PW);
    let report = h.check(&[]);
    only(&report, Property::Compatibility);
    assert!(report.examples[0].detail.contains("PW"), "{report}");
}

#[test]
fn compatible_grants_and_a_converting_holder_are_judged_by_held_modes() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::PR);
    h.lock_granted(b, 1, "r", Mode::CR);
    // a converts PR -> EX: queued behind b's CR, still holding PR.
    h.apply(
        1,
        Command::Convert {
            session: a,
            request: RequestId(2),
            args: ConvertRequest {
                lock: la,
                mode: Mode::EX,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            },
        },
        |_| vec![ev(a, Some(2), Some(la), EventKind::Queued)],
    );
    // A new CW (incompatible with the held PR) granted: a violation.
    h.lock_granted(b, 2, "r", Mode::CW);
    let report = h.check(&[]);
    assert!(
        report.violations.contains_key(&Property::Compatibility),
        "{report}"
    );
}

#[test]
fn a_token_that_does_not_grow_violates_fencing_also_across_restarts() {
    let mut h = H::new();
    let a = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    h.apply(1, H::unlock_cmd(a, 2, la), |_| {
        vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
    });
    // A restarted server that forgot its floor starts its indices, and so its tokens, over.
    h.restart(0);
    let b = h.open(1000);
    h.lock_granted(b, 1, "r", Mode::EX);
    let report = h.check(&[]);
    assert!(
        report.violations.contains_key(&Property::Fencing),
        "{report}"
    );
    assert!(
        report
            .examples
            .iter()
            .any(|v| v.detail.contains("must grow")),
        "{report}"
    );
}

#[test]
fn a_double_completion_violates_completion() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    let lb = h.lock_queued(b, 1, "r", Mode::EX);
    // b's request is cancelled, and then granted anyway.
    h.apply(
        1,
        Command::Cancel {
            session: b,
            request: RequestId(2),
            lock: lb,
        },
        |_| vec![ev(b, Some(1), Some(lb), EventKind::Cancelled)],
    );
    h.apply(1, H::unlock_cmd(a, 2, la), |i| {
        vec![
            ev(a, Some(2), Some(la), EventKind::Unlocked),
            ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
        ]
    });
    only(&h.check(&[]), Property::Completion);
}

#[test]
fn a_request_without_an_answer_or_left_pending_violates_completion() {
    let mut h = H::new();
    let a = h.open(1000);
    h.apply(1, H::lock_cmd(a, 1, "r", Mode::EX), |_| Vec::new());
    only(&h.check(&[]), Property::Completion);

    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::EX);
    h.lock_queued(b, 1, "r", Mode::EX);
    let report = h.check(&[]);
    only(&report, Property::Completion);
    assert!(
        report.examples[0].detail.contains("never completed"),
        "{report}"
    );
}

#[test]
fn queue_jumping_violates_fifo() {
    // R10: a PR arrives while an EX waits behind a PR holder; it must queue.
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let c = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::PR);
    h.lock_queued(b, 1, "r", Mode::EX);
    h.lock_granted(c, 1, "r", Mode::PR);
    let report = h.check(&[]);
    assert_eq!(report.violations.get(&Property::Fifo), Some(&1), "{report}");
    assert!(report.examples[0].detail.contains("R10"), "{report}");

    // R12: a grant pass grants the second waiter before the first.
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let c = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    let _lb = h.lock_queued(b, 1, "r", Mode::EX);
    let lc = h.lock_queued(c, 1, "r", Mode::EX);
    h.apply(1, H::unlock_cmd(a, 2, la), |i| {
        vec![
            ev(a, Some(2), Some(la), EventKind::Unlocked),
            ev(c, Some(1), Some(lc), granted(Mode::EX, i)),
        ]
    });
    let report = h.check(&[]);
    assert!(report.violations.contains_key(&Property::Fifo), "{report}");
    assert!(
        report.examples.iter().any(|v| v.detail.contains("R12")),
        "{report}"
    );
}

#[test]
fn a_grantable_head_left_waiting_violates_fifo() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    h.lock_queued(b, 1, "r", Mode::PR);
    // The unlock runs no grant pass: b's PR stays queued on a free resource.
    h.apply(1, H::unlock_cmd(a, 2, la), |_| {
        vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
    });
    let report = check(CheckConfig::default(), h.lines, &[]);
    only(&report, Property::Fifo);
    assert!(
        report.examples[0].detail.contains("left queued"),
        "{report}"
    );
}

#[test]
fn late_or_early_expiry_violates_property_6() {
    let ok = lease_story(1003, 950);
    assert!(ok.is_ok(), "{ok}");
    // Expired 2 s after a 1 s lease: too late.
    let late = lease_story(2003, 950);
    assert!(
        late.violations.contains_key(&Property::DeadRelease),
        "{late}"
    );
    // Expired after 0.5 s of a 1 s lease: too early.
    let early = lease_story(503, 400);
    only(&early, Property::DeadRelease);
    assert!(
        early.examples[0].detail.contains("before its lease"),
        "{early}"
    );
}

#[test]
fn a_token_going_back_cites_the_grant_of_the_higher_token() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    h.apply(1, H::unlock_cmd(a, 2, la), |_| {
        vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
    });
    // b's grant carries a token below a's (token 1 < 3).
    h.apply(1, H::lock_cmd(b, 1, "r", Mode::EX), |i| {
        vec![ev(b, Some(1), Some(LockId(i)), granted(Mode::EX, 1))]
    });
    let report = h.check(&[]);
    only(&report, Property::Fencing);
    let v = &report.examples[0];
    assert_eq!(v.at.as_ref().map(|l| l.line), Some(6), "{v}");
    assert_eq!(
        v.cites.iter().map(|l| l.line).collect::<Vec<_>>(),
        [4],
        "{v}"
    );
    assert!(
        v.detail
            .contains("not above token 3 granted at audit line 4"),
        "{v}"
    );
}

#[test]
fn a_history_that_begins_mid_lifetime_judges_only_what_it_saw() {
    // clean(): start, open a, open b, a granted, b queued, a's unlock grants b, ...
    let lines = clean().lines;
    let cut = |first: AuditLine| {
        let mut l = vec![first];
        l.extend_from_slice(&lines[4..]);
        l
    };
    // After a rotation the older files are gone: a's lock and both sessions are unknown.
    let report = check(
        CheckConfig::default(),
        cut(AuditLine::Rotated { ts_us: T0, pid: 1 }),
        &[],
    );
    assert!(report.is_ok(), "{report}");
    assert!(report.partial_start);
    // The same lines after a start are a broken history: b waits on a free resource, and
    // a lock that never existed is unlocked.
    let report = check(
        CheckConfig::default(),
        cut(AuditLine::Start { ts_us: T0, pid: 1 }),
        &[],
    );
    assert!(!report.partial_start);
    assert!(report.violations.contains_key(&Property::Fifo), "{report}");
    assert!(
        report.violations.contains_key(&Property::Completion),
        "{report}"
    );

    // What happens after the cut is still judged.
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::PR);
    h.lock_granted(b, 1, "r", Mode::PW);
    let mut lines = vec![AuditLine::Rotated { ts_us: T0, pid: 1 }];
    lines.extend_from_slice(&h.lines[3..]);
    let report = check(CheckConfig::default(), lines, &[]);
    only(&report, Property::Compatibility);
    assert!(report.partial_start);
}

#[test]
fn a_batch_of_renewals_renews_every_session_in_it() {
    // Two 1 s leases renewed together at 0.9 s, expired 1 s later: on time. Without the
    // batch counting as a renewal of each, the expiry would look 0.9 s too early.
    let story = |renewed: bool| {
        let mut h = H::new();
        let a = h.open(1000);
        let b = h.open(1000);
        if renewed {
            h.apply(
                900,
                Command::RenewMany {
                    renewals: vec![(a, dlock_core::RequestId(1)), (b, dlock_core::RequestId(1))],
                },
                |_| {
                    vec![
                        ev(a, Some(1), None, EventKind::Renewed { ttl_ms: 1000 }),
                        ev(b, Some(1), None, EventKind::Renewed { ttl_ms: 1000 }),
                    ]
                },
            );
        }
        h.apply(if renewed { 1003 } else { 1903 }, Command::Tick, |_| {
            vec![
                ev(a, None, None, EventKind::SessionExpired),
                ev(b, None, None, EventKind::SessionExpired),
            ]
        });
        h.check(&[])
    };
    let ok = story(true);
    assert!(ok.is_ok(), "{ok}");
    let late = story(false);
    assert!(
        late.violations.contains_key(&Property::DeadRelease),
        "{late}"
    );
}

#[test]
fn counterexamples_name_requests_sessions_and_states_in_words() {
    let mut h = H::new();
    let a = h.open(1000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    // The unlock gets no answer; a second unlock is answered although the lock is gone.
    h.apply(1, H::unlock_cmd(a, 2, la), |_| Vec::new());
    let lb = h.lock_queued(a, 3, "q", Mode::PR);
    h.apply(1, H::unlock_cmd(a, 4, lb), |_| {
        vec![ev(a, Some(4), Some(lb), EventKind::Unlocked)]
    });
    let report = h.check(&[]);
    let details: Vec<&str> = report.examples.iter().map(|v| v.detail.as_str()).collect();
    assert!(
        details.contains(
            &"request 2 of session 1 (unlock) got 0 immediate answers (expected exactly 1): no events"
        ),
        "{report}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("UNLOCKED for lock l4 waiting for PR (request 3) since")),
        "{report}"
    );
    for d in &details {
        assert!(
            !d.contains("Some(") && !d.contains("Id(") && !d.contains('{'),
            "{d}"
        );
    }
}
