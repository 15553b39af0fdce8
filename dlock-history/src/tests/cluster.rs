//! Histories of a cluster: written by members that apply the replicated log, judged with
//! leases in engine time, across node restarts and leader changes.

use super::*;

/// A cluster member's log: inputs stamped with the leader's engine time `now_ms`, and the
/// wall clock `ts` advancing on its own (it runs on while there is no leader).
impl H {
    fn cluster() -> H {
        H {
            lines: vec![AuditLine::Replica {
                ts_us: T0,
                pid: 1,
                node: 1,
                applied: 0,
            }],
            engine_time: true,
            ..H::new()
        }
    }

    /// No leader for `ms`: wall time goes on, engine time stands still.
    fn no_leader(&mut self, ms: u64) {
        self.ts += ms * 1000;
    }

    /// The node restarts: its log goes on after the last index it wrote.
    fn node_restart(&mut self) {
        self.lines.push(AuditLine::Replica {
            ts_us: self.ts,
            pid: 2,
            node: 1,
            applied: self.index,
        });
    }

    /// The checker's verdict with the default settings (a member's log need not end quiet).
    fn judge(self) -> CheckReport {
        check(CheckConfig::default(), self.lines, &[])
    }

    fn expire_at_tick(&mut self, dt_ms: u64, s: SessionId) {
        self.apply(dt_ms, Command::Tick, |_| {
            vec![ev(s, None, None, EventKind::SessionExpired)]
        });
    }
}

#[test]
fn a_new_leaders_grace_extends_leases_rather_than_ticking() {
    // Lease 1 s; a new leader's grace of 5 s at engine time 500 ms: the expiry is due at
    // 5,500 ms, not at 1,001 ms.
    let story = |expire_after_grace_ms: u64| {
        let mut c = H::cluster();
        let a = c.open(1000);
        c.lock_granted(a, 1, "r", Mode::EX);
        c.no_leader(2000);
        c.apply(499, Command::ExtendLeases { grace_ms: 5000 }, |_| vec![]);
        c.expire_at_tick(expire_after_grace_ms, a);
        c.judge()
    };
    let on_time = story(5000);
    assert!(on_time.is_ok(), "{on_time}");
    assert_eq!(on_time.expiries, 1);
    // Were the grace a tick, this expiry would be 4.5 s late.
    assert!(on_time.max_expiry_lateness_us <= 1000, "{on_time}");
    // Expired when the lease alone would have ended: before the grace is over.
    let early = story(600);
    only(&early, Property::DeadRelease);
    assert!(
        early.examples[0]
            .detail
            .contains("before its lease ends at 5500 ms"),
        "{early}"
    );
}

#[test]
fn a_node_restart_keeps_sessions_and_locks() {
    let mut c = H::cluster();
    let a = c.open(60_000);
    let la = c.lock_granted(a, 1, "r", Mode::EX);
    c.node_restart();
    // a still holds "r" after the node's restart: unlocking it is judged against the held
    // lock, and no session of the earlier run is called dead.
    c.apply(1, H::unlock_cmd(a, 2, la), |_| {
        vec![ev(a, Some(2), Some(la), EventKind::Unlocked)]
    });
    let ok = c.judge();
    assert!(ok.is_ok(), "{ok}");
    assert_eq!((ok.lifetimes, ok.partial_start), (1, false), "{ok}");

    // And the lock survives: granting b an incompatible lock after the node's restart is
    // a violation (after a server's restart, a new lifetime, it would not be).
    let mut c = H::cluster();
    let a = c.open(60_000);
    let b = c.open(60_000);
    c.lock_granted(a, 1, "r", Mode::EX);
    c.node_restart();
    c.lock_granted(b, 1, "r", Mode::EX);
    only(&c.judge(), Property::Compatibility);
}

#[test]
fn leases_are_judged_by_engine_time_which_stands_still_without_a_leader() {
    // 3 s without a leader (wall time), then the tick that expires the 1 s lease on time in
    // engine time: no violation, although by the wall clock it came 3 s late.
    let mut c = H::cluster();
    let a = c.open(1000);
    c.lock_granted(a, 1, "r", Mode::EX);
    c.no_leader(3000);
    c.expire_at_tick(1000, a);
    let report = c.judge();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.expiries, 1);

    // A tick stamped past the lease's end that leaves the session alive is a violation.
    let mut c = H::cluster();
    let a = c.open(1000);
    c.lock_granted(a, 1, "r", Mode::EX);
    c.apply(1100, Command::Tick, |_| vec![]);
    let report = c.judge();
    only(&report, Property::DeadRelease);
    assert!(
        report.examples[0].detail.contains("outlived a tick"),
        "{report}"
    );

    // An expiry at a tick stamped well after the lease's end is late, in engine time.
    let mut c = H::cluster();
    let a = c.open(1000);
    c.expire_at_tick(2000, a);
    only(&c.judge(), Property::DeadRelease);
}

#[test]
fn a_hole_left_by_a_snapshot_is_reported() {
    let mut c = H::cluster();
    c.open(1000);
    c.lines.push(AuditLine::Snapshot {
        ts_us: T0 + 7_000_000,
        after: 1,
        upto: 40,
    });
    let report = c.judge();
    only(&report, Property::History);
    assert!(
        report.examples[0].detail.contains("inputs 2 to 40"),
        "{report}"
    );
    // Stamped with the snapshot line's own time, not the input's before it.
    assert_eq!(report.examples[0].ts_us, T0 + 7_000_000, "{report}");
}

#[test]
fn a_members_inputs_may_skip_the_indices_of_entries_without_commands() {
    let mut c = H::cluster();
    let a = c.open(60_000);
    // A new leader's blank entry, a membership change: log indices with no input.
    c.index += 3;
    c.lock_granted(a, 1, "r", Mode::EX);
    let report = c.judge();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_torn_line_before_a_restarted_members_replica_line_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut c = H::cluster();
    let a = c.open(60_000);
    c.lock_granted(a, 1, "r", Mode::EX);
    let text: Vec<String> = c
        .lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    let replica = serde_json::to_string(&AuditLine::Replica {
        ts_us: T0,
        pid: 2,
        node: 1,
        applied: 3,
    })
    .unwrap();
    // Killed mid-line, restarted on its own line; and killed mid-line again with the
    // next run's first line glued to the torn bytes.
    std::fs::write(
        &path,
        format!(
            "{}\n{{\"Apply\":{{\"ts_\n{replica}\n{{\"Apply\":{replica}\n",
            text.join("\n")
        ),
    )
    .unwrap();
    let mut lines = Vec::new();
    let stats = crate::read_audit_log(&path, |l| lines.push(l)).unwrap();
    assert_eq!(
        (stats.torn, stats.replicas, stats.starts),
        (2, 3, 0),
        "{stats:?}"
    );
    let report = check(CheckConfig::default(), lines, &[]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lifetimes, 1);

    // Anywhere else, an unparsable line is corruption.
    std::fs::write(
        &path,
        format!("{}\nnot json\n{}", text[0], text[1..].join("\n")),
    )
    .unwrap();
    assert!(crate::read_audit_log(&path, |_| {}).is_err());
}

#[test]
fn a_re_sent_request_answered_again_changes_nothing() {
    // Lock request 1 of a is queued behind b; after a fail-over the client re-sends it and
    // the engine answers from the lock it created (still queued), applying nothing.
    let story = |single_server: bool| {
        let mut c = H::cluster();
        if single_server {
            c.lines[0] = AuditLine::Start { ts_us: T0, pid: 1 };
        }
        let a = c.open(60_000);
        let b = c.open(60_000);
        c.lock_granted(b, 1, "r", Mode::EX);
        let la = LockId(c.apply(1, H::lock_cmd(a, 1, "r", Mode::EX), |i| {
            vec![ev(a, Some(1), Some(LockId(i)), EventKind::Queued)]
        }));
        c.apply(1, H::lock_cmd(a, 1, "r", Mode::EX), |_| {
            vec![ev(a, Some(1), Some(la), EventKind::Queued)]
        });
        c.judge()
    };
    let cluster = story(false);
    assert!(cluster.is_ok(), "{cluster}");
    assert_eq!(cluster.retransmissions, 1);
    // A single server never passes a retransmission to its engine: judged as a request, the
    // second QUEUED answers a lock this input did not create.
    let single = story(true);
    assert!(
        single.violations.contains_key(&Property::Completion),
        "{single}"
    );
}

#[test]
fn only_a_tick_must_expire_what_is_due() {
    // A batch of renewals stamped past a's lease (a stands in it for nobody) does not expire
    // a: the engine expires on ticks only; the tick 5 ms later does.
    let mut c = H::cluster();
    let a = c.open(1000);
    let b = c.open(60_000);
    c.apply(
        1002,
        Command::RenewMany {
            renewals: vec![(b, RequestId(1))],
        },
        |_| vec![ev(b, Some(1), None, EventKind::Renewed { ttl_ms: 60_000 })],
    );
    c.expire_at_tick(5, a);
    let report = c.judge();
    assert!(report.is_ok(), "{report}");
}
