//! One row per outcome a server can make `dlock-client` surface: every `Error` variant with
//! its payload (each `Invalid` reason that reaches the wire, each `Limit`), and the handshake
//! refusals. The entry points and the row runner are in `t59_wire_table`.

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_client::{
    Client, ConvertOptions, Error, Invalid, Limit, LockFlags, LockOptions, Mode, Refusal, Reject,
    UnlockOptions,
};
use dlock_tests::TestServer;
use dlock_tests::sdk::bounded;
use futures_util::FutureExt;

use super::t59_wire_table::{Row, UNSUPPORTED, run};

/// Whether `r` failed with `Error::Invalid(want)`.
fn invalid<T>(r: &dlock_client::Result<T>, want: Invalid) -> bool {
    matches!(r, Err(Error::Invalid(i)) if *i == want)
}

/// Whether `r` failed with `Error::LimitExceeded(want)`.
fn limit<T>(r: &dlock_client::Result<T>, want: Limit) -> bool {
    matches!(r, Err(Error::LimitExceeded(l)) if *l == want)
}

/// Whether a connect failed with the engine's refusal `want`.
fn refused(r: &dlock_client::Result<Client>, want: Reject) -> bool {
    matches!(r, Err(Error::Refused(Refusal::Rejected(x))) if *x == want)
}

const OUTCOMES: &[Row] = &[
    ("NotQueued", |c| {
        async move {
            let _g = c.a.lock(&c.name, Mode::EX).await?;
            let r = c.b.try_lock(&c.name, Mode::NL).await;
            ensure!(r.is_ok(), "{r:?}");
            let r = c.b.try_lock(&c.name, Mode::CR).await;
            ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Deadlock", |c| {
        async move {
            let (r1, r2) = (format!("{}/1", c.name), format!("{}/2", c.name));
            let _a1 = c.a.lock(&r1, Mode::EX).await?;
            let _b2 = c.b.lock(&r2, Mode::EX).await?;
            let _p = c.a.lock_request(&r2, Mode::EX, LockOptions::new()).await?;
            let r = c.b.lock(&r1, Mode::EX).await;
            ensure!(matches!(r, Err(Error::Deadlock)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("TimedOut", |c| {
        async move {
            let _g = c.a.lock(&c.name, Mode::EX).await?;
            let opts = LockOptions::new().timeout(Duration::from_millis(20));
            let r = c.b.lock_with(&c.name, Mode::PR, opts).await;
            ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Cancelled", |c| {
        async move {
            let _other = c.b.lock(&c.name, Mode::PR).await?;
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            let canceller = g.canceller();
            let p = g.start_convert(Mode::EX, ConvertOptions::new()).await?;
            canceller.cancel().await?;
            let r = p.wait().await;
            ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            ensure!(g.mode() == Mode::PR);
            let r = g.convert(Mode::PR).await;
            ensure!(r.is_ok(), "the guard stays usable: {r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Invalid: names", |c| {
        async move {
            let r = c.a.lock("", Mode::EX).await;
            ensure!(invalid(&r, Invalid::EmptyName), "{r:?}");
            let long = "n".repeat(1025);
            let r = c.a.lock(&long, Mode::EX).await;
            let want = Invalid::NameTooLong {
                len: 1025,
                max: 1024,
            };
            ensure!(invalid(&r, want), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Invalid: value block", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::EX).await?;
            let too_long = vec![1; c.len() + 1];
            let r = g
                .convert_with(Mode::NL, ConvertOptions::new().value(too_long))
                .await;
            let want = Invalid::ValueTooLong {
                len: c.len() + 1,
                max: c.len(),
            };
            ensure!(invalid(&r, want), "{r:?}");
            let r = (g)
                .convert_with(Mode::NL, ConvertOptions::new().flags(LockFlags::VALBLK))
                .await;
            ensure!(invalid(&r, Invalid::MissingValue), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Invalid: flags", |c| {
        async move {
            let unknown = LockFlags::from_bits_retain(1 << 30);
            let lock = |flags| {
                c.a.lock_with(&c.name, Mode::EX, LockOptions::new().flags(flags))
            };
            let r = lock(unknown).await;
            ensure!(invalid(&r, Invalid::UnknownFlags(1 << 30)), "{r:?}");
            let r = lock(UNSUPPORTED).await;
            ensure!(
                invalid(&r, Invalid::UnsupportedFlags(UNSUPPORTED.bits())),
                "{r:?}"
            );
            let r = lock(LockFlags::QUECVT).await;
            ensure!(invalid(&r, Invalid::QuecvtOnNewLock), "{r:?}");
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            let r = g
                .convert_with(Mode::CR, ConvertOptions::new().quecvt())
                .await;
            let want = Invalid::QuecvtNotAllowed {
                from: Mode::PR,
                to: Mode::CR,
            };
            ensure!(invalid(&r, want), "{r:?}");
            let opts = UnlockOptions::new().flags(LockFlags::QUECVT);
            let r = c.a.unlock_by_id(g.lock_id(), opts).await;
            let want = Invalid::FlagNotApplicable(LockFlags::QUECVT.bits());
            ensure!(invalid(&r, want), "{r:?}");
            ensure!(g.mode() == Mode::PR && !g.is_lost());
            Ok(())
        }
        .boxed()
    }),
    ("NotFound, Busy, NotPending", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::EX).await?;
            let r = c.b.cancel_by_id(g.lock_id()).await;
            ensure!(
                matches!(r, Err(Error::NotFound)),
                "another session's lock: {r:?}"
            );
            let p =
                c.b.lock_request(&c.name, Mode::EX, LockOptions::new())
                    .await?;
            let r = c.b.unlock_by_id(p.lock_id(), UnlockOptions::new()).await;
            ensure!(matches!(r, Err(Error::Busy)), "{r:?}");
            let r = g.canceller().cancel().await;
            ensure!(matches!(r, Err(Error::NotPending)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("Refused: lease and session name", |c| {
        async move {
            let r = Client::builder(c.addr.clone())
                .lease_ttl(Duration::from_millis(50))
                .connect()
                .await;
            let want = Invalid::TtlOutOfRange {
                ttl_ms: 50,
                min_ms: 100,
                max_ms: dlock_core::Config::default().max_ttl_ms,
            };
            ensure!(refused(&r, Reject::Invalid(want)), "{:?}", r.err());
            let r = Client::builder(c.addr)
                .name("n".repeat(257))
                .connect()
                .await;
            let want = Reject::Invalid(Invalid::SessionNameTooLong { len: 257, max: 256 });
            ensure!(refused(&r, want), "{:?}", r.err());
            let said = r.err().map(|e| e.to_string()).unwrap_or_default();
            ensure!(
                said == "refused by the server: session refused: invalid request: session name \
                         of 257 bytes exceeds the maximum of 256",
                "{said}"
            );
            Ok(())
        }
        .boxed()
    }),
];

/// The rows of the limits' server: two locks per session, five locks in all, three resources,
/// one waiter per resource and three sessions (the two clients of the runner and one more).
const LIMITS: &[Row] = &[("LimitExceeded", |c| {
    async move {
        let (r1, r2, r3) = (
            format!("{}/1", c.name),
            format!("{}/2", c.name),
            format!("{}/3", c.name),
        );
        let _a1 = c.a.lock(&r1, Mode::EX).await?;
        let _a2 = c.a.lock(&r2, Mode::EX).await?;
        let r = c.a.lock(&r1, Mode::NL).await;
        ensure!(limit(&r, Limit::LocksPerSession), "{r:?}");
        let _p = c.b.lock_request(&r1, Mode::EX, LockOptions::new()).await?;
        let third = Client::builder(c.addr.clone())
            .name("third")
            .connect()
            .await?;
        let r = third.lock(&r1, Mode::EX).await;
        ensure!(limit(&r, Limit::WaitersPerResource), "{r:?}");
        let _t3 = third.lock(&r3, Mode::EX).await?;
        let r = third.lock(format!("{}/4", c.name), Mode::EX).await;
        ensure!(limit(&r, Limit::Resources), "{r:?}");
        // b's second lock is the fifth in all.
        let _b2 = c.b.lock(&r2, Mode::NL).await?;
        let r = third.lock(&r3, Mode::NL).await;
        ensure!(limit(&r, Limit::Locks), "{r:?}");
        let r = Client::builder(c.addr).name("fourth").connect().await;
        ensure!(
            refused(&r, Reject::LimitExceeded(Limit::Sessions)),
            "{:?}",
            r.err()
        );
        Ok(())
    }
    .boxed()
})];

#[tokio::test]
async fn every_outcome_reaches_the_caller_with_its_payload() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        run(&server, OUTCOMES).await
    })
    .await
}

#[tokio::test]
async fn every_limit_reaches_the_caller() -> Result<()> {
    bounded(async {
        let mut config = TestServer::config();
        config.engine.max_locks_per_session = 2;
        config.engine.max_resources = 3;
        config.engine.max_locks = 5;
        config.engine.max_waiters_per_resource = 1;
        config.engine.max_sessions = 3;
        let server = TestServer::start_with(config).await?;
        run(&server, LIMITS).await
    })
    .await
}
