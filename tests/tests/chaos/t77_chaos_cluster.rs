//! Chaos against a cluster of three: the 16-client random workload with every client fault
//! and the member faults (leader SIGKILL and restart, follower SIGKILL and restart, one member
//! cut off from the others through its peer-link proxies); the checker judges the committed history merged from
//! the three members' audit logs, and the members must agree on every input they share.

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_tests::chaos::faults::FaultKind;
use dlock_tests::chaos::run::{ChaosConfig, run_chaos_checked};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_history_under_member_faults_satisfies_every_property() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    let exe = env!("CARGO_BIN_EXE_chaos").into();
    let cfg = ChaosConfig::for_cluster_tests(exe, &FaultKind::CLUSTER, Duration::from_secs(20));
    let report = run_chaos_checked(cfg).await?;
    let merge = report
        .merge
        .as_ref()
        .expect("a cluster run merges the members' logs");
    ensure!(
        merge.mismatch_count == 0 && merge.holes.is_empty(),
        "the members' logs disagree or leave a hole:\n{report}"
    );
    ensure!(
        merge.compared >= merge.inputs,
        "fewer than two members hold each input:\n{report}"
    );
    // Every member was restarted or the leader changed: each log was opened again.
    ensure!(
        report.audit.replicas > 3,
        "no member was restarted:\n{report}"
    );
    ensure!(
        report.check.expiries >= 1,
        "no lease expiry was judged:\n{report}"
    );
    Ok(())
}
