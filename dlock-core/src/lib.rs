//! dlock-core: the deterministic lock engine of dlock.
//!
//! A pure state machine with the semantics of the VMS / Linux DLM (six modes, three queues per
//! resource, conversions, value blocks, blocking notifications, deadlock detection), plus
//! dlock's sessions, leases and fencing tokens. It does no IO and reads no clock: every
//! [`Input`] carries its own `now_ms`, and [`Core::next_deadline`] tells the driver when to
//! send the next [`Command::Tick`].
//!
//! ```
//! use dlock_core::{Command, Config, Core, EventKind, Input, LockFlags, Mode, RequestId, SessionId};
//!
//! let mut core = Core::new(Config::default());
//! let open = Command::OpenSession { name: "a".into(), ttl_ms: 10_000, secret: 7 };
//! core.apply(Input { index: 1, now_ms: 0, command: open });
//! let session = SessionId(1);
//! let lock = Command::Lock {
//!     session,
//!     request: RequestId(1),
//!     resource: b"db".to_vec(),
//!     mode: Mode::EX,
//!     flags: LockFlags::empty(),
//!     value: None,
//!     timeout_ms: None,
//! };
//! let events = core.apply(Input { index: 2, now_ms: 1, command: lock });
//! # let _ = events;
//! ```
#![forbid(unsafe_code)]

mod blocking;
mod command;
mod config;
mod deadlock;
mod engine;
mod event;
mod flags;
mod grant;
mod ids;
mod inspect;
mod lock;
mod lvb;
mod mode;
mod ops;
mod query;
mod resource;
mod session;
mod slab;
mod timers;
mod validate;

pub use command::{Command, Input};
pub use config::Config;
pub use engine::{Core, Snapshot};
pub use event::{Event, EventKind, Invalid, Limit, Reject};
pub use flags::LockFlags;
pub use ids::{FencingToken, LockId, RequestId, SessionId};
pub use mode::{COMPATIBILITY, Mode, ParseModeError};
pub use query::{LockInfo, LockState, ResourceInfo, SessionInfo, SessionLockInfo, WaitsFor};
