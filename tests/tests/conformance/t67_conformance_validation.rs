//! Conformance of the SDK to argument validation (R54): an unlock the server refuses must not
//! leave the lock held with no guard to release it. The rules themselves (R54..R56 and the
//! order of checks) are specified by dlock-core's scenario tests.

use anyhow::{Result, ensure};
use dlock_client::{Error, Invalid, Mode, UnlockOptions};
use dlock_tests::sdk::*;

/// R54 and the SDK: an unlock refused as INVALID (value too long) changes nothing on the
/// server, so the lock is still held; the SDK must not leave it held with no way to release
/// it (the guard was consumed by `unlock_with`).
#[tokio::test]
async fn r54_rejected_unlock_does_not_leak_the_lock() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let g = a.lock("leak", Mode::EX).await?;
        let r = within(
            "unlock with a value too long",
            g.unlock_with(UnlockOptions::new().value(vec![1u8; len + 1])),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
            "{r:?}"
        );
        // The guard is gone: the lock must be released (as a dropped guard is) so that
        // others can have it.
        within("b's lock", b.lock("leak", Mode::EX)).await??;
        Ok(())
    })
    .await
}
