//! Chaos under network faults: connections cut and black-holed (partitions that heal) while
//! a 16-client random workload runs against a server child for a bounded time; the checker
//! then judges the whole history (the six properties of `dlock_tests::chaos::checker`). The
//! same real history, with one release removed or one grant duplicated, must then fail the
//! checker: it is sensitive on real data, not only on synthetic histories.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_core::EventKind;
use dlock_tests::chaos::faults::FaultKind;
use dlock_tests::chaos::run::{ChaosConfig, run_chaos_checked};
use dlock_tests::chaos::{AuditLine, CheckConfig, check, read_audit_log};

const KINDS: &[FaultKind] = &[FaultKind::Cut, FaultKind::Blackhole];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_faults_satisfies_every_property() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    let exe = env!("CARGO_BIN_EXE_chaos").into();
    let dir = tempfile::tempdir()?;
    let mut cfg = ChaosConfig::for_tests(exe, KINDS, Duration::from_secs(10));
    cfg.dir = Some(dir.path().to_owned());
    run_chaos_checked(cfg).await?;

    // Mutations of the real history must be caught.
    let mut lines = Vec::new();
    read_audit_log(&dir.path().join("audit.jsonl"), |l| lines.push(l))?;
    let judge = |lines: Vec<AuditLine>| check(CheckConfig::default(), lines, &[]);
    ensure!(judge(lines.clone()).is_ok(), "the history alone must pass");
    // 1. The first release that let someone else in is dropped from the log.
    let mut dropped = lines.clone();
    let at = dropped
        .iter()
        .position(|l| {
            matches!(l, AuditLine::Apply { events, .. }
                if events.iter().any(|e| e.kind == EventKind::Unlocked)
                && events.iter().any(|e| matches!(e.kind, EventKind::Granted { .. })))
        })
        .context("no unlock handed a lock over")?;
    if let AuditLine::Apply { events, .. } = &mut dropped[at] {
        events.retain(|e| e.kind != EventKind::Unlocked);
    }
    let report = judge(dropped);
    ensure!(
        !report.is_ok(),
        "a dropped release went unnoticed:\n{report}"
    );
    // 2. A grant is logged twice.
    let mut doubled = lines;
    let at = doubled
        .iter()
        .position(|l| {
            matches!(l, AuditLine::Apply { events, .. }
                if events.iter().any(|e| matches!(e.kind, EventKind::Granted { .. })))
        })
        .context("no grant")?;
    let copy = doubled[at].clone();
    doubled.insert(at + 1, copy);
    let report = judge(doubled);
    ensure!(!report.is_ok(), "a doubled grant went unnoticed:\n{report}");
    Ok(())
}
