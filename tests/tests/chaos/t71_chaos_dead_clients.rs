//! Chaos with dead clients: sessions dropped without goodbye (their locks must come free
//! within the lease) and clients paused past their lease (they must see `lost()` before anyone
//! else gets their locks), while a 16-client random workload runs; the checker then judges
//! the whole history (the six properties of `dlock_tests::chaos::checker`).

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_tests::chaos::faults::FaultKind;
use dlock_tests::chaos::run::{ChaosConfig, run_chaos_checked};

const KINDS: &[FaultKind] = &[FaultKind::Drop, FaultKind::Pause];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_faults_satisfies_every_property() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    let exe = env!("CARGO_BIN_EXE_chaos").into();
    let cfg = ChaosConfig::for_tests(exe, KINDS, Duration::from_secs(10));
    let report = run_chaos_checked(cfg).await?;
    ensure!(
        report.check.dropped_checked > 0,
        "no dropped session was checked:\n{report}"
    );
    ensure!(
        report.check.expiries > 0,
        "no lease expiry was checked:\n{report}"
    );
    Ok(())
}
