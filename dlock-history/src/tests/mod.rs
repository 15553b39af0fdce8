//! Unit tests of the checker and the readers on synthetic histories: inputs with the events
//! a correct (or a broken) server would log.
//!
//! - [`server_log`]: properties judged on the server's log alone.
//! - [`client_records`]: properties judged on the client records against the log.
//! - [`files`]: reading logs from files: torn lines, rotation, gaps, several files.

mod client_records;
mod cluster;
mod files;
mod server_log;

use dlock_core::{
    Command, ConvertRequest, Event, EventKind, FencingToken, Input, LockFlags, LockId, LockRequest,
    Mode, RequestId, SessionId,
};

use crate::{
    AuditLine, CheckConfig, CheckReport, ClientRecord, LostKind, LostRecord, Property, check,
};

const T0: u64 = 1_700_000_000_000_000;

/// A synthetic history: inputs with the events a correct (or a broken) server would log.
struct H {
    lines: Vec<AuditLine>,
    index: u64,
    ts: u64,
    /// The inputs' engine time: stays 0 in a single server's history (judged by the wall
    /// clock `ts`), and advances with `apply` in a cluster member's ([`H::cluster`]).
    now_ms: u64,
    engine_time: bool,
}

fn ev(session: SessionId, request: Option<u64>, lock: Option<LockId>, kind: EventKind) -> Event {
    Event {
        session,
        request: request.map(RequestId),
        lock,
        kind,
    }
}

fn granted(mode: Mode, token: u64) -> EventKind {
    EventKind::Granted {
        mode,
        token: FencingToken(token),
        value: None,
        value_valid: true,
    }
}

impl H {
    fn new() -> H {
        H {
            lines: vec![AuditLine::Start { ts_us: T0, pid: 1 }],
            index: 0,
            ts: T0,
            now_ms: 0,
            engine_time: false,
        }
    }

    fn restart(&mut self, index_floor: u64) {
        self.index = index_floor;
        self.lines.push(AuditLine::Start {
            ts_us: self.ts,
            pid: 2,
        });
    }

    /// Applies `command` `dt_ms` after the previous input; `events` gets the input index.
    fn apply(
        &mut self,
        dt_ms: u64,
        command: Command,
        events: impl FnOnce(u64) -> Vec<Event>,
    ) -> u64 {
        self.index += 1;
        self.ts += dt_ms * 1000;
        if self.engine_time {
            self.now_ms += dt_ms;
        }
        let index = self.index;
        self.lines.push(AuditLine::Apply {
            ts_us: self.ts,
            input: Input {
                index,
                now_ms: self.now_ms,
                command,
            },
            events: events(index),
        });
        index
    }

    fn open(&mut self, ttl_ms: u64) -> SessionId {
        let cmd = Command::OpenSession {
            name: "s".into(),
            ttl_ms,
            secret: 1,
        };
        SessionId(self.apply(0, cmd, |i| {
            vec![ev(
                SessionId(i),
                None,
                None,
                EventKind::SessionOpened { ttl_ms },
            )]
        }))
    }

    fn lock_cmd(s: SessionId, req: u64, res: &str, mode: Mode) -> Command {
        Command::Lock {
            session: s,
            request: RequestId(req),
            args: LockRequest {
                resource: res.as_bytes().to_vec(),
                mode,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            },
        }
    }

    /// A lock granted on arrival with token = index.
    fn lock_granted(&mut self, s: SessionId, req: u64, res: &str, mode: Mode) -> LockId {
        LockId(self.apply(1, H::lock_cmd(s, req, res, mode), |i| {
            vec![ev(s, Some(req), Some(LockId(i)), granted(mode, i))]
        }))
    }

    fn lock_queued(&mut self, s: SessionId, req: u64, res: &str, mode: Mode) -> LockId {
        LockId(self.apply(1, H::lock_cmd(s, req, res, mode), |i| {
            vec![ev(s, Some(req), Some(LockId(i)), EventKind::Queued)]
        }))
    }

    fn unlock_cmd(s: SessionId, req: u64, lock: LockId) -> Command {
        Command::Unlock {
            session: s,
            request: RequestId(req),
            args: dlock_core::UnlockRequest {
                lock,
                flags: LockFlags::empty(),
                value: None,
            },
        }
    }

    fn check(self, records: &[ClientRecord]) -> CheckReport {
        check(
            CheckConfig {
                expect_quiescent: true,
                ..CheckConfig::default()
            },
            self.lines,
            records,
        )
    }
}

fn only(report: &CheckReport, p: Property) {
    assert!(
        report.violations.get(&p).copied().unwrap_or(0) > 0,
        "expected a {p} violation: {report}"
    );
    let others: Vec<_> = report.violations.keys().filter(|k| **k != p).collect();
    assert!(others.is_empty(), "unexpected other violations: {report}");
}

/// A correct history: EX held, EX queued, unlock hands it over, then both end.
fn clean() -> H {
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
    h.apply(1, H::unlock_cmd(b, 2, lb), |_| {
        vec![ev(b, Some(2), Some(lb), EventKind::Unlocked)]
    });
    for s in [a, b] {
        h.apply(
            1,
            Command::CloseSession {
                session: s,
                request: RequestId(9),
            },
            |_| vec![ev(s, Some(9), None, EventKind::SessionClosed)],
        );
    }
    h
}

/// a (lease 1 s) holds EX on "r", last renewed 1 ms after T0; its session expires at
/// T0 + `expire_ms` and the same grant pass gives b the lock; a's client saw lost() at
/// T0 + `lost_ms`.
fn lease_story(expire_ms: u64, lost_ms: u64) -> CheckReport {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(100_000);
    let la = h.lock_granted(a, 1, "r", Mode::EX);
    let lb = h.lock_queued(b, 1, "r", Mode::EX);
    h.apply(expire_ms - 2, Command::Tick, |i| {
        vec![
            ev(a, None, None, EventKind::SessionExpired),
            ev(b, Some(1), Some(lb), granted(Mode::EX, i)),
        ]
    });
    let lost = ClientRecord::Lost(LostRecord {
        client: 0,
        lock: la,
        resource: b"r".to_vec(),
        mode: Mode::EX,
        reason: LostKind::LocalLeaseLapsed,
        ts_us: T0 + lost_ms * 1000,
    });
    check(CheckConfig::default(), h.lines, &[lost])
}
