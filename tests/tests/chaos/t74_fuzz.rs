//! Fuzzing smoke test: 100,000 seeded random and mutated inputs against the frame decoders
//! in-process, and 100,000 against a live server child over 8 connections, while a
//! well-behaved client keeps one lock held and keeps acquiring and releasing another. The
//! server must not panic, the well-behaved client must keep working and keep its lock, and
//! the server's memory must stay bounded (every fuzzed session's locks gone after its lease).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_tests::chaos::fuzz::{FuzzConfig, fuzz_decoder, run_fuzz};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_server_survives_100k_fuzzed_inputs() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    let cfg = FuzzConfig {
        exe: env!("CARGO_BIN_EXE_chaos").into(),
        inputs: 100_000,
        decoder_inputs: 100_000,
        seed: dlock_tests::chaos::history::now_us(),
        ..FuzzConfig::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(240), run_fuzz(cfg))
        .await
        .context("the fuzz run did not finish within its hard timeout")??;
    println!("{report}");
    ensure!(report.is_ok(), "fuzzing found a problem:\n{report}");
    ensure!(report.live_inputs == 100_000, "{report}");
    ensure!(report.decoder_inputs == 100_000, "{report}");
    ensure!(
        report.frames_received > 0,
        "the server answered nothing:\n{report}"
    );
    Ok(())
}

#[test]
fn decoder_fuzzing_is_deterministic_per_seed_and_finds_no_panic() {
    assert!(fuzz_decoder(7, 5_000).is_empty());
    assert!(fuzz_decoder(8, 5_000).is_empty());
}
