//! dlock-client: the async Rust SDK for dlock, a lock manager with the semantics of the
//! VMS / Linux DLM served over TCP.
//!
//! # Quick start
//!
//! Connect, take a lock, pass its fencing token to whatever you protect, release it. (This
//! example starts a server in-process so that it runs as a test; in real use the server is
//! `dlock-server` on `127.0.0.1:7420`.)
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let config = dlock_server::Config { data_dir: dir.path().into(), ..Default::default() };
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let server = tokio::spawn(dlock_server::run(listener, config, async { let _ = stopped.await; }));
//! use dlock_client::{Client, Mode};
//!
//! let client = Client::connect(addr).await?;
//! let guard = client.lock("orders/42", Mode::EX).await?;   // waits until granted
//! println!("holding {:?} with token {}", guard.mode(), guard.token());
//! // ... write to the protected resource, passing guard.token() along ...
//! guard.unlock().await?;                                  // or just drop the guard
//! # client.close().await?;
//! # let _ = stop.send(()); server.await??;
//! # Ok(()) }
//! ```
//!
//! # The model
//!
//! - A [`Client`] is one *session* on the server with a lease. A background task renews the
//!   lease (about every TTL/3, each wait drawn from [`renewal_wait_range`]), so as long as
//!   the client can reach the server its locks stay held. A renewal unanswered for
//!   max(TTL/6, 1 s) ends its connection, even one that never reports an error, and the
//!   client reconnects and resumes. Clones of a `Client` share the session.
//! - Each lock request creates an independent lock in one of six [`Mode`]s (`NL < CR < CW <
//!   PR < PW < EX`, compatibility as in VMS). Requests queue in FIFO order; conversions go
//!   before new requests.
//! - A granted lock is a [`LockGuard`]. Dropping it releases the lock in the background;
//!   [`LockGuard::unlock`] releases it and waits for the server.
//! - Every grant carries a [`FencingToken`] that only grows. A storage system that remembers
//!   the highest token it has seen and refuses lower ones is safe even against a client
//!   that was paused past its lease.
//!
//! # Not waiting: try-lock and timeouts
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let config = dlock_server::Config { data_dir: dir.path().into(), ..Default::default() };
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let server = tokio::spawn(dlock_server::run(listener, config, async { let _ = stopped.await; }));
//! use std::time::Duration;
//! use dlock_client::{Client, Error, LockOptions, Mode};
//!
//! let a = Client::connect(addr.clone()).await?;
//! let b = Client::connect(addr).await?;
//! let held = a.lock("report", Mode::EX).await?;
//!
//! // NOQUEUE: granted now or not at all.
//! assert!(matches!(b.try_lock("report", Mode::PR).await, Err(Error::NotQueued)));
//!
//! // Queue, but give up after a while (the server times the request out).
//! let opts = LockOptions::new().timeout(Duration::from_millis(50));
//! assert!(matches!(b.lock_with("report", Mode::PR, opts).await, Err(Error::TimedOut)));
//!
//! // Or bound the wait yourself: dropping a pending `lock` future cancels the request.
//! let waited = tokio::time::timeout(Duration::from_millis(50), b.lock("report", Mode::PR)).await;
//! assert!(waited.is_err());
//! drop(held);
//! # let _ = stop.send(()); server.await??;
//! # Ok(()) }
//! ```
//!
//! # Sharing, converting and blocking notifications
//!
//! A holder can convert its lock up or down ([`LockGuard::convert`]), and can learn that
//! someone else is waiting for a mode its lock blocks ([`LockGuard::blocked`]). The
//! notification is advice: nothing is taken away; the holder decides to release or
//! down-convert.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let config = dlock_server::Config { data_dir: dir.path().into(), ..Default::default() };
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let server = tokio::spawn(dlock_server::run(listener, config, async { let _ = stopped.await; }));
//! use dlock_client::{Client, Mode};
//!
//! let reader = Client::connect(addr.clone()).await?;
//! let writer = Client::connect(addr).await?;
//! let mut cache = reader.lock("config", Mode::PR).await?;   // shared read
//!
//! let wants_write = tokio::spawn(async move { writer.lock("config", Mode::EX).await });
//! let wanted = cache.blocked().await?;                       // someone wants EX
//! assert_eq!(wanted, Mode::EX);
//! cache.convert(Mode::NL).await?;                            // step aside, keep the resource
//! let w = wants_write.await??;
//! assert_eq!(w.mode(), Mode::EX);
//! # let _ = stop.send(()); server.await??;
//! # Ok(()) }
//! ```
//!
//! A pending conversion can be cancelled from another task with a [`Canceller`]
//! ([`LockGuard::canceller`]), or by dropping the `convert` future; the lock keeps its old
//! mode. [`ConvertOptions`] adds NOQUEUE, QUECVT and a timeout.
//!
//! # The value block
//!
//! Each resource has a small value block (its length is [`Client::value_block_len`]) that
//! travels with the lock: a holder in PW or EX writes it when it releases or down-converts,
//! a later holder reads it when granted. It lives as long as any lock on the resource does
//! (hold an NL lock to keep it).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let config = dlock_server::Config { data_dir: dir.path().into(), ..Default::default() };
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let server = tokio::spawn(dlock_server::run(listener, config, async { let _ = stopped.await; }));
//! use dlock_client::{Client, LockOptions, Mode, UnlockOptions};
//!
//! let client = Client::connect(addr).await?;
//! let _keep = client.lock("counter", Mode::NL).await?;       // keeps the value block alive
//! let w = client.lock("counter", Mode::EX).await?;
//! w.unlock_with(UnlockOptions::new().value(b"41".to_vec())).await?;
//!
//! let r = client.lock_with("counter", Mode::PR, LockOptions::new().read_value()).await?;
//! assert!(r.value().unwrap().starts_with(b"41"));             // zero-padded to the block length
//! assert!(r.value_valid());
//! # let _ = stop.send(()); server.await??;
//! # Ok(()) }
//! ```
//!
//! If a PW/EX holder dies (or unlocks with [`UnlockOptions::invalidate_value`]), the block is
//! marked not valid and readers see [`LockGuard::value_valid`] `== false` until someone
//! writes it again.
//!
//! # Reaching every rule: flags, pending requests, ids
//!
//! The calls above cover applications. Tools and conformance tests also need the corners of
//! the rule book, and reach them through three additions:
//!
//! - **Raw flags.** [`LockOptions::flags`], [`ConvertOptions::flags`] and
//!   [`UnlockOptions::flags`] OR any [`LockFlags`] bits into the request, including the
//!   optional flags dlock does not implement and bits that name no flag; the server refuses
//!   those with [`Error::Invalid`] (R54, R56).
//! - **Pending requests as values.** [`Client::lock_request`] returns a [`PendingLock`] as
//!   soon as the server has granted or queued the request: it names the WAITING lock, can be
//!   cancelled explicitly with its [`CancelOutcome`] (R46, R48), and
//!   [`PendingLock::granted`] waits for the grant. [`LockGuard::start_convert`] does the same
//!   for a conversion ([`PendingConvert`]) and leaves the guard usable, so a CONVERTING lock
//!   can be queried and watched ([`LockGuard::blocked`], R33).
//! - **Operations by lock id** ([`Client::convert_by_id`], [`Client::unlock_by_id`],
//!   [`Client::cancel_by_id`]): any id goes to the server, which answers with
//!   [`Error::NotFound`] for unknown or other sessions' ids (R6, R52), [`Error::Busy`] for a
//!   lock with a pending request (R15, R45), and so on. On an id of this client's own guard
//!   they keep the guard's state right (a conversion updates its mode and token, an unlock
//!   ends it as released).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let config = dlock_server::Config { data_dir: dir.path().into(), ..Default::default() };
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let server = tokio::spawn(dlock_server::run(listener, config, async { let _ = stopped.await; }));
//! use dlock_client::{
//!     CancelOutcome, Client, Error, Invalid, LockFlags, LockOptions, Mode, UnlockOptions,
//! };
//!
//! let a = Client::connect(addr.clone()).await?;
//! let b = Client::connect(addr).await?;
//! let held = a.lock("table", Mode::EX).await?;
//!
//! // An optional flag dlock does not implement is refused, never ignored (R56).
//! let r = b.lock_with("table", Mode::PR, LockOptions::new().flags(LockFlags::EXPEDITE)).await;
//! assert!(matches!(r, Err(Error::Invalid(Invalid::UnsupportedFlags(_)))));
//!
//! // A queued request, seen and handled while it waits.
//! let pending = b.lock_request("table", Mode::PR, LockOptions::new()).await?;
//! assert!(!pending.is_granted());
//! let id = pending.lock_id();
//! assert!(matches!(b.unlock_by_id(id, UnlockOptions::new()).await, Err(Error::Busy)));
//! assert!(matches!(a.cancel_by_id(id).await, Err(Error::NotFound)));  // not a's lock
//! assert_eq!(pending.cancel().await?, CancelOutcome::Cancelled);
//! assert!(matches!(pending.granted().await, Err(Error::Cancelled)));
//! drop(held);
//! # let _ = stop.send(()); server.await??;
//! # Ok(()) }
//! ```
//!
//! # Failures
//!
//! - **Broken connection.** The client reconnects with exponential backoff and jitter
//!   ([`ClientBuilder::backoff`]), resumes its session, and re-sends requests that were in
//!   flight; the server applies none twice and replays the events the client missed. Locks
//!   stay held and pending `lock`/`convert` futures simply complete.
//! - **Session gone.** If the server ended the session (its lease ran out, or the server
//!   restarted), every guard's [`LockGuard::lost`] completes with
//!   [`LostReason::SessionExpired`], operations on those guards fail with
//!   [`Error::SessionLost`], pending requests fail with `SessionLost`, and the client opens
//!   a fresh session for new work.
//! - **Local lease.** If the client cannot get a renewal confirmed in time (a network
//!   partition, a black hole), it declares its locks lost ([`LostReason::LocalLeaseLapsed`])
//!   at `last confirmed renewal + TTL − safety margin`, which is *before* the server can
//!   give them to anyone else. [`LockGuard::is_lost`] and [`LockGuard::lost`] compare the
//!   clock with that deadline themselves, so a process that was paused past it (a stalled
//!   VM, a long GC pause) sees the loss at its first look, before any background timer has
//!   run. Watch [`LockGuard::lost`] and stop touching the protected resource when it fires:
//!
//! ```no_run
//! # async fn work() {}
//! # async fn f(client: dlock_client::Client) -> dlock_client::Result<()> {
//! use dlock_client::Mode;
//!
//! let guard = client.lock("leader", Mode::EX).await?;
//! tokio::select! {
//!     reason = guard.lost() => eprintln!("lost leadership: {reason}"),
//!     () = work() => guard.unlock().await?,
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! [`Error`] separates the DLM's expected "not granted" outcomes ([`Error::NotQueued`],
//! [`Error::Deadlock`], [`Error::TimedOut`], [`Error::Cancelled`]; see
//! [`Error::is_not_granted`]) from misuse ([`Error::Invalid`], [`Error::NotFound`],
//! [`Error::Busy`]), limits and transport failures.
//!
//! # Settings
//!
//! ```no_run
//! # async fn f() -> dlock_client::Result<()> {
//! use std::time::Duration;
//! let client = dlock_client::Client::builder("10.0.0.5:7420")
//!     .name("billing-worker-3")                  // shown by `dlock status`
//!     .lease_ttl(Duration::from_secs(5))         // server expires the session after this
//!     .safety_margin(Duration::from_millis(500)) // locks are given up this much earlier
//!     .connect_timeout(Duration::from_secs(2))
//!     .request_timeout(Duration::from_secs(10))
//!     .backoff(Duration::from_millis(20), Duration::from_secs(2))
//!     .connect()
//!     .await?;
//! # let _ = client; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod builder;
mod client;
mod convert;
mod driver;
mod error;
mod guard;
mod lease;
mod lock_state;
mod machine;
mod op;
mod options;
mod pending;
mod probe;
mod settings;
mod tls;
mod view;

pub use builder::ClientBuilder;
pub use client::{Client, Pong, ResourcePage, ServerView};
pub use convert::{CancelOutcome, Converted, PendingConvert};
pub use dlock_core::{
    FencingToken, Invalid, Limit, LockFlags, LockId, LockInfo, LockState, Mode, Reject,
    ResourceInfo, SessionId, SessionInfo, SessionLockInfo,
};
pub use dlock_proto::Refusal;
pub use error::{Error, Result};
pub use guard::{Canceller, LockGuard, Lost};
pub use lock_state::LostReason;
pub use machine::renewal_wait_range;
pub use options::{ConvertOptions, LockOptions, UnlockOptions};
pub use pending::PendingLock;
pub use probe::Probed;
pub use tls::TlsOptions;
