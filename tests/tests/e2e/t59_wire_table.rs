//! The wire and the SDK carry everything intact: one row per `dlock-client` entry point and
//! option, and one row per outcome a server can make the client surface, each asserting the
//! exact value that arrives (mode, token, value bytes and `value_valid`, the error variant
//! with its payload). What the rules decide is specified by dlock-core's scenario tests; a
//! row only checks that a command, a flag, a reply or an error crosses the wire unchanged.
//!
//! Every row gets its own resource (named after the row) and the same two clients; the rows
//! of a table run one after another on one server, and a failure names its row.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{
    CancelOutcome, Client, ConvertOptions, Converted, Error, FencingToken, Invalid, LockFlags,
    LockId, LockOptions, LockState, LostReason, Mode, UnlockOptions,
};
use dlock_tests::TestServer;
use dlock_tests::sdk::{bounded, client, res, within};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

/// What a row gets: two clients of one server, and a resource name of its own.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The server's address, for rows that need a client of their own.
    pub(crate) addr: String,
    pub(crate) a: Client,
    pub(crate) b: Client,
    pub(crate) name: String,
}

impl Ctx {
    /// The value block length the server announced.
    pub(crate) fn len(&self) -> usize {
        self.a.value_block_len()
    }

    /// `value` zero-padded to the value block length.
    pub(crate) fn padded(&self, value: &[u8]) -> Vec<u8> {
        let mut v = value.to_vec();
        v.resize(self.len(), 0);
        v
    }

    /// Reads the value block with a new PR lock of `b` (released at once).
    async fn read(&self) -> Result<(Vec<u8>, bool)> {
        let g = self
            .b
            .lock_with(&self.name, Mode::PR, LockOptions::new().read_value())
            .await?;
        let read = (
            g.value().context("no value read")?.to_vec(),
            g.value_valid(),
        );
        g.unlock().await?;
        Ok(read)
    }
}

/// A row: its name, and what it does and checks.
pub(crate) type Row = (&'static str, fn(Ctx) -> BoxFuture<'static, Result<()>>);

/// Runs `rows` in order against `server`, each bounded by the helpers' wait.
pub(crate) async fn run(server: &TestServer, rows: &[Row]) -> Result<()> {
    let a = client(server, "a").await?;
    let b = client(server, "b").await?;
    for (name, row) in rows {
        let ctx = Ctx {
            addr: server.addr().to_string(),
            a: a.clone(),
            b: b.clone(),
            name: format!("wire/{name}"),
        };
        within(name, row(ctx))
            .await
            .and_then(|r| r)
            .with_context(|| format!("row {name}"))?;
    }
    Ok(())
}

/// The unsupported flag the rows send where any one would do (R56).
pub(crate) const UNSUPPORTED: LockFlags = LockFlags::EXPEDITE;

/// One row per entry point and option of the SDK.
const ENTRY_POINTS: &[Row] = &[
    ("lock", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::EX).await?;
            ensure!(g.mode() == Mode::EX && g.resource() == c.name.as_bytes());
            ensure!(g.value().is_none() && g.value_valid());
            let info = res(&c.a, &c.name).await?;
            ensure!(info.granted[0].lock == g.lock_id());
            ensure!(info.granted[0].token == Some(g.token()));
            ensure!(info.granted[0].session == c.a.session_id());
            Ok(())
        }
        .boxed()
    }),
    ("try_lock", |c| {
        async move {
            let g = c.a.try_lock(&c.name, Mode::PR).await?;
            ensure!(g.mode() == Mode::PR);
            let r = c.b.try_lock(&c.name, Mode::EX).await;
            ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("lock_with timeout", |c| {
        async move {
            let opts = LockOptions::new().timeout(Duration::from_millis(50));
            let _g = c.a.lock_with(&c.name, Mode::EX, opts.clone()).await?;
            let r = c.b.lock_with(&c.name, Mode::EX, opts).await;
            ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("lock_with no_queue", |c| {
        async move {
            let _g = c.a.lock(&c.name, Mode::EX).await?;
            let r = (c.b)
                .lock_with(&c.name, Mode::NL, LockOptions::new().no_queue())
                .await;
            ensure!(r.is_ok(), "NL is compatible: {r:?}");
            let r = (c.b)
                .lock_with(&c.name, Mode::CR, LockOptions::new().no_queue())
                .await;
            ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("lock_with read_value", |c| {
        async move {
            let g = (c.a)
                .lock_with(&c.name, Mode::NL, LockOptions::new().read_value())
                .await?;
            ensure!(g.value() == Some(&c.padded(b"")[..]) && g.value_valid());
            Ok(())
        }
        .boxed()
    }),
    ("lock_with raw flags", |c| {
        async move {
            // VALBLK as a raw flag reads like read_value; NOQUEUE like no_queue.
            let flags = LockFlags::VALBLK | LockFlags::NOQUEUE;
            let g = (c.a)
                .lock_with(&c.name, Mode::EX, LockOptions::new().flags(flags))
                .await?;
            ensure!(g.value() == Some(&c.padded(b"")[..]));
            let r = (c.b)
                .lock_with(&c.name, Mode::EX, LockOptions::new().flags(flags))
                .await;
            ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("lock_request granted at once", |c| {
        async move {
            let p =
                c.a.lock_request(&c.name, Mode::PW, LockOptions::new())
                    .await?;
            ensure!(p.is_granted());
            let id = p.lock_id();
            let g = p.granted().await?;
            ensure!(g.lock_id() == id && g.mode() == Mode::PW);
            Ok(())
        }
        .boxed()
    }),
    ("lock_request queued then granted", |c| {
        async move {
            let ga = c.a.lock(&c.name, Mode::EX).await?;
            let held = ga.token();
            let p =
                c.b.lock_request(&c.name, Mode::CW, LockOptions::new())
                    .await?;
            ensure!(!p.is_granted());
            let info = res(&c.a, &c.name).await?;
            ensure!(info.waiting[0].lock == p.lock_id());
            ensure!(info.waiting[0].state == LockState::Waiting { mode: Mode::CW });
            ga.unlock().await?;
            let g = p.granted().await?;
            ensure!(g.mode() == Mode::CW && g.token() > held);
            Ok(())
        }
        .boxed()
    }),
    ("convert and convert_with timeout", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            let before = g.token();
            g.convert(Mode::EX).await?;
            ensure!(g.mode() == Mode::EX && g.token() > before);
            g.convert(Mode::NL).await?;
            let _other = c.b.lock(&c.name, Mode::PR).await?;
            let opts = ConvertOptions::new().timeout(Duration::from_millis(50));
            let r = g.convert_with(Mode::EX, opts).await;
            ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
            ensure!(g.mode() == Mode::NL);
            Ok(())
        }
        .boxed()
    }),
    ("convert_with no_queue", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            let token = g.token();
            let _other = c.b.lock(&c.name, Mode::PR).await?;
            let r = g
                .convert_with(Mode::EX, ConvertOptions::new().no_queue())
                .await;
            ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
            ensure!(g.mode() == Mode::PR && g.token() == token);
            Ok(())
        }
        .boxed()
    }),
    ("convert_with quecvt", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            g.convert_with(Mode::EX, ConvertOptions::new().quecvt())
                .await?;
            ensure!(g.mode() == Mode::EX);
            let r = g
                .convert_with(Mode::NL, ConvertOptions::new().quecvt())
                .await;
            let want = Invalid::QuecvtNotAllowed {
                from: Mode::EX,
                to: Mode::NL,
            };
            ensure!(
                matches!(r, Err(Error::Invalid(ref i)) if *i == want),
                "{r:?}"
            );
            Ok(())
        }
        .boxed()
    }),
    ("convert_with value, read_value and invalidate_value", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::EX).await?;
            let opts = ConvertOptions::new().value(b"written".to_vec());
            g.convert_with(Mode::EX, opts).await?;
            g.convert_with(Mode::NL, ConvertOptions::new()).await?;
            g.convert_with(Mode::PR, ConvertOptions::new().read_value())
                .await?;
            ensure!(g.value() == Some(&c.padded(b"written")[..]) && g.value_valid());
            g.convert(Mode::EX).await?;
            let opts = ConvertOptions::new().invalidate_value();
            g.convert_with(Mode::NL, opts).await?;
            ensure!(c.read().await? == (c.padded(b"written"), false));
            Ok(())
        }
        .boxed()
    }),
    ("convert_with raw flags", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::EX).await?;
            let opts = ConvertOptions::new().flags(LockFlags::VALBLK);
            let r = g.convert_with(Mode::NL, opts).await;
            ensure!(
                matches!(r, Err(Error::Invalid(Invalid::MissingValue))),
                "{r:?}"
            );
            let opts = ConvertOptions::new().flags(UNSUPPORTED);
            let r = g.convert_with(Mode::NL, opts).await;
            let want = Invalid::UnsupportedFlags(UNSUPPORTED.bits());
            ensure!(
                matches!(r, Err(Error::Invalid(ref i)) if *i == want),
                "{r:?}"
            );
            ensure!(g.mode() == Mode::EX);
            Ok(())
        }
        .boxed()
    }),
    ("start_convert queued then wait", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::NL).await?;
            let other = c.b.lock(&c.name, Mode::PR).await?;
            let p = g
                .start_convert(Mode::EX, ConvertOptions::new().read_value())
                .await?;
            ensure!(!p.is_granted() && p.lock_id() == g.lock_id());
            let info = res(&c.a, &c.name).await?;
            let want = LockState::Converting {
                from: Mode::NL,
                to: Mode::EX,
            };
            ensure!(info.converting[0].state == want, "{info:?}");
            other.unlock().await?;
            let done: Converted = p.wait().await?;
            ensure!(done.mode == Mode::EX && done.token > FencingToken(0));
            ensure!(done.value == Some(c.padded(b"")) && done.value_valid);
            ensure!(g.mode() == Mode::EX && g.token() == done.token);
            Ok(())
        }
        .boxed()
    }),
    ("PendingConvert cancel", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::NL).await?;
            let token = g.token();
            let _other = c.b.lock(&c.name, Mode::PR).await?;
            let p = g.start_convert(Mode::EX, ConvertOptions::new()).await?;
            ensure!(p.cancel().await? == CancelOutcome::Cancelled);
            let r = p.wait().await;
            ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            ensure!(g.mode() == Mode::NL && g.token() == token);
            Ok(())
        }
        .boxed()
    }),
    ("PendingLock cancel", |c| {
        async move {
            let _g = c.a.lock(&c.name, Mode::EX).await?;
            let p =
                c.b.lock_request(&c.name, Mode::EX, LockOptions::new())
                    .await?;
            ensure!(p.cancel().await? == CancelOutcome::Cancelled);
            let r = p.granted().await;
            ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            ensure!(res(&c.a, &c.name).await?.waiting.is_empty());
            Ok(())
        }
        .boxed()
    }),
    ("unlock", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::EX).await?;
            g.unlock().await?;
            ensure!(c.a.query_resource(&c.name).await?.is_none());
            Ok(())
        }
        .boxed()
    }),
    ("unlock_with value, invalidate_value and raw flags", |c| {
        async move {
            let _keep = c.b.lock(&c.name, Mode::NL).await?;
            let g = c.a.lock(&c.name, Mode::EX).await?;
            g.unlock_with(UnlockOptions::new().value(b"v1".to_vec()))
                .await?;
            ensure!(c.read().await? == (c.padded(b"v1"), true));
            let g = c.a.lock(&c.name, Mode::PW).await?;
            g.unlock_with(UnlockOptions::new().invalidate_value())
                .await?;
            ensure!(c.read().await? == (c.padded(b"v1"), false));
            let g = c.a.lock(&c.name, Mode::EX).await?;
            let id = g.lock_id();
            let r = g
                .unlock_with(UnlockOptions::new().flags(LockFlags::NOQUEUE))
                .await;
            let want = Invalid::FlagNotApplicable(LockFlags::NOQUEUE.bits());
            ensure!(
                matches!(r, Err(Error::Invalid(ref i)) if *i == want),
                "{r:?}"
            );
            // R54: the refused unlock changed nothing; the consumed guard's lock is
            // released by id.
            let info = res(&c.b, &c.name).await?;
            ensure!(info.granted.iter().any(|l| l.lock == id), "{info:?}");
            c.a.unlock_by_id(id, UnlockOptions::new()).await?;
            let info = res(&c.b, &c.name).await?;
            ensure!(info.granted.iter().all(|l| l.lock != id), "{info:?}");
            Ok(())
        }
        .boxed()
    }),
    ("canceller", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::EX).await?;
            let r = g.canceller().cancel().await;
            ensure!(matches!(r, Err(Error::NotPending)), "{r:?}");
            Ok(())
        }
        .boxed()
    }),
    ("convert_by_id, unlock_by_id and cancel_by_id", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::PR).await?;
            let id = g.lock_id();
            let done =
                c.a.convert_by_id(id, Mode::CR, ConvertOptions::new())
                    .await?;
            let done = done.wait().await?;
            ensure!(done.mode == Mode::CR && g.mode() == Mode::CR);
            ensure!(c.a.cancel_by_id(id).await? == CancelOutcome::NotPending);
            let p =
                c.b.lock_request(&c.name, Mode::EX, LockOptions::new())
                    .await?;
            let queued = p.lock_id();
            let r = c.b.unlock_by_id(queued, UnlockOptions::new()).await;
            ensure!(matches!(r, Err(Error::Busy)), "{r:?}");
            let r =
                c.b.convert_by_id(queued, Mode::NL, ConvertOptions::new())
                    .await;
            ensure!(matches!(r, Err(Error::Busy)), "{r:?}");
            ensure!(c.b.cancel_by_id(queued).await? == CancelOutcome::Cancelled);
            let lost = g.lost();
            c.a.unlock_by_id(id, UnlockOptions::new()).await?;
            ensure!(lost.await == LostReason::Released);
            for r in [
                c.a.unlock_by_id(id, UnlockOptions::new()).await.err(),
                c.a.cancel_by_id(id).await.err(),
                c.b.unlock_by_id(LockId(u64::MAX - 1), UnlockOptions::new())
                    .await
                    .err(),
            ] {
                ensure!(matches!(r, Some(Error::NotFound)), "{r:?}");
            }
            Ok(())
        }
        .boxed()
    }),
    ("queries and views", |c| {
        async move {
            let g = c.a.lock(&c.name, Mode::PR).await?;
            let view = c.b.view_resource(&c.name).await?;
            let info = view.value.context("resource")?;
            ensure!(info.name == c.name.as_bytes() && info.granted.len() == 1);
            let l = &info.granted[0];
            ensure!(l.lock == g.lock_id() && l.session == c.a.session_id());
            ensure!(l.session_name == "a" && l.token == Some(g.token()));
            ensure!(l.state == LockState::Granted { mode: Mode::PR });
            ensure!(view.now_ms >= l.since_ms);
            ensure!((info.value.clone(), info.value_valid) == (c.padded(b""), true));
            let s =
                c.b.query_session(c.a.session_id())
                    .await?
                    .context("session")?;
            ensure!(s.name == "a" && s.locks.iter().any(|l| l.lock == g.lock_id()));
            let mine = c.b.view_session(c.b.session_id()).await?.value;
            ensure!(mine.is_some_and(|s| s.session == c.b.session_id()));
            let _second = c.a.lock(format!("{}/2", c.name), Mode::NL).await?;
            let listed = c.b.query_prefix(&c.name, 10).await?;
            let names: Vec<_> = listed.into_iter().map(|r| r.name).collect();
            let want = vec![
                c.name.clone().into_bytes(),
                format!("{}/2", c.name).into_bytes(),
            ];
            ensure!(names == want, "{names:?}");
            ensure!(c.b.view_prefix(&c.name, 1).await?.value.len() == 1);
            ensure!(
                c.b.query_resource(format!("{}/none", c.name))
                    .await?
                    .is_none()
            );
            Ok(())
        }
        .boxed()
    }),
    ("ping", |c| {
        async move {
            let pong = c.a.ping().await?;
            ensure!(!pong.server_version.is_empty());
            ensure!(pong.server_version == c.a.server_version());
            Ok(())
        }
        .boxed()
    }),
    ("blocked", |c| {
        async move {
            let mut g = c.a.lock(&c.name, Mode::PR).await?;
            let _p =
                c.b.lock_request(&c.name, Mode::PW, LockOptions::new())
                    .await?;
            ensure!(g.blocked().await? == Mode::PW);
            Ok(())
        }
        .boxed()
    }),
    ("lost on close", |c| {
        async move {
            let own = Client::builder(c.addr).name("own").connect().await?;
            let g = own.lock(&c.name, Mode::EX).await?;
            let lost = g.lost();
            own.close().await?;
            ensure!(lost.await == LostReason::Closed);
            ensure!(g.is_lost());
            Ok(())
        }
        .boxed()
    }),
];

#[tokio::test]
async fn every_entry_point_and_option_crosses_the_wire() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        run(&server, ENTRY_POINTS).await
    })
    .await
}
