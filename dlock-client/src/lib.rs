//! dlock-client: the async Rust SDK for dlock.
//!
//! (The guide with runnable examples follows once the server lands.)
#![forbid(unsafe_code)]

mod client;
mod conn;
mod driver;
mod error;
mod guard;
mod op;
mod options;

pub use client::{Client, ClientBuilder, Pong};
pub use dlock_core::{
    FencingToken, LockId, LockInfo, LockState, Mode, ResourceInfo, SessionId, SessionInfo,
    SessionLockInfo,
};
pub use error::{Error, Result};
pub use guard::{Canceller, LockGuard, Lost, LostReason};
pub use options::{ConvertOptions, LockOptions, UnlockOptions};
