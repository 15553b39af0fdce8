//! Conformance of the SDK to argument validation (R54): an unlock refused as INVALID changes
//! nothing, also when it is made through a guard, which it consumes; the lock stays held and
//! is released by id. The rules themselves (R54..R56 and the order of checks) are specified by
//! dlock-core's scenario tests.

use anyhow::{Result, ensure};
use dlock_client::{Error, Invalid, LockOptions, Mode, UnlockOptions};
use dlock_tests::sdk::*;

/// R54 and the SDK: an unlock refused as INVALID (value too long) changes nothing: the lock
/// is still held (another client's try-lock is not granted) until it is released by id.
#[tokio::test]
async fn r54_a_refused_unlock_leaves_the_lock_held() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let g = a.lock("leak", Mode::EX).await?;
        let id = g.lock_id();
        let r = within(
            "unlock with a value too long",
            g.unlock_with(UnlockOptions::new().value(vec![1u8; len + 1])),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
            "{r:?}"
        );
        let try_lock = within(
            "b's try-lock",
            b.lock_with("leak", Mode::EX, LockOptions::new().no_queue()),
        )
        .await?;
        ensure!(matches!(try_lock, Err(Error::NotQueued)), "{try_lock:?}");
        within("unlock by id", a.unlock_by_id(id, UnlockOptions::new())).await??;
        let granted = within("b's lock", b.lock("leak", Mode::EX)).await??;
        drop(granted);
        Ok(())
    })
    .await
}
