//! Chaos with every fault kind at once (cut, black hole, dropped session, paused client, server
//! kill) while a 16-client random workload runs; the checker then judges the whole history
//! (the six properties of `dlock_tests::chaos::checker`).

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_tests::chaos::faults::FaultKind;
use dlock_tests::chaos::run::{ChaosConfig, run_chaos_checked};

const KINDS: &[FaultKind] = &[
    FaultKind::Cut,
    FaultKind::Blackhole,
    FaultKind::Drop,
    FaultKind::Pause,
    FaultKind::Kill,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_faults_satisfies_every_property() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    let exe = env!("CARGO_BIN_EXE_chaos").into();
    let cfg = ChaosConfig::for_tests(exe, KINDS, Duration::from_secs(10));
    let report = run_chaos_checked(cfg).await?;
    ensure!(
        report.audit.starts >= 2,
        "the server was never restarted:\n{report}"
    );
    Ok(())
}
