//! Memory per held lock: opens 1,000 sessions, grants 1,000 EX locks each on distinct
//! resources (`<prefix>NNNNNNNN`, prefix `k-` by default), and prints the growth of this
//! process's resident set. The loadgen's many-locks names are about 27 bytes long:
//! a prefix such as `lg12345-123456789/m` gives names of that length.
//!
//! `cargo run --release -p dlock-core --example mem [sessions] [locks_per_session] [prefix]`

use dlock_core::LockRequest;
use dlock_core::{Command, Config, Core, EventKind, Input, LockFlags, Mode, RequestId, SessionId};

/// VmRSS of this process in bytes (Linux only; 0 elsewhere).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let per: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let prefix = args.next().unwrap_or_else(|| "k-".to_owned());
    let config = Config {
        max_sessions: usize::MAX,
        max_locks_per_session: usize::MAX,
        max_locks: usize::MAX,
        max_resources: usize::MAX,
        ..Config::default()
    };
    let before = rss_bytes();
    let mut core = Core::new(config);
    let mut index = 0u64;
    let mut ids = Vec::new();
    for s in 0..sessions {
        index += 1;
        let open = Command::OpenSession {
            name: format!("session-{s}"),
            ttl_ms: 300_000,
            secret: u128::from(s),
        };
        core.apply(Input {
            index,
            now_ms: 0,
            command: open,
        });
        ids.push(SessionId(index));
    }
    let mut n = 0u64;
    // Sessions take turns, as concurrent clients would.
    for k in 0..per {
        for (s, &session) in ids.iter().enumerate() {
            index += 1;
            n += 1;
            let lock = Command::Lock {
                session,
                request: RequestId(k),
                args: LockRequest {
                    resource: format!("{prefix}{:08}", (s as u64) * per + k).into_bytes(),
                    mode: Mode::EX,
                    flags: LockFlags::empty(),
                    value: None,
                    timeout_ms: None,
                },
            };
            let events = core.apply(Input {
                index,
                now_ms: 1,
                command: lock,
            });
            assert!(matches!(events[0].kind, EventKind::Granted { .. }));
        }
    }
    let after = rss_bytes();
    assert_eq!(core.lock_count() as u64, n);
    let grown = after.saturating_sub(before);
    println!(
        "{sessions} sessions, {n} locks: RSS {:.1} MB -> {:.1} MB, {:.1} B/lock",
        before as f64 / 1e6,
        after as f64 / 1e6,
        grown as f64 / n as f64
    );
}
