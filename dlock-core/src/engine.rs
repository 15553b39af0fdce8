//! The engine: [`Core`]. (Skeleton: the lock engine issue fills this in.)

use serde::{Deserialize, Serialize};

use crate::{Config, Event, FencingToken, Input, ResourceInfo, SessionId, SessionInfo, WaitsFor};

/// The deterministic lock engine. See the crate docs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Core {
    config: Config,
    last_index: u64,
    clock_ms: u64,
    last_token: u64,
}

/// A serialisable copy of the whole engine state; see [`Core::snapshot`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot(Core);

impl Core {
    /// A new, empty engine.
    pub fn new(config: Config) -> Core {
        Core {
            config,
            last_index: 0,
            clock_ms: 0,
            last_token: 0,
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one input and returns the events it produced, in order.
    pub fn apply(&mut self, input: Input) -> Vec<Event> {
        let mut out = Vec::new();
        self.apply_into(input, &mut out);
        out
    }

    /// Applies one input, appending the events it produced to `out`.
    pub fn apply_into(&mut self, input: Input, _out: &mut Vec<Event>) {
        if input.index <= self.last_index {
            return;
        }
        self.last_index = input.index;
        self.clock_ms = self.clock_ms.max(input.now_ms);
    }

    /// The core clock time (ms) at which the driver should send the next `Tick`, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// The core's clock: the largest `now_ms` applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The index of the last applied input (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The highest fencing token granted so far (0 before any). Tokens are
    /// `max(last_token + 1, input.index)`, so a driver that starts indices above every token
    /// it ever handed out keeps tokens monotonic across restarts.
    pub fn last_token(&self) -> FencingToken {
        FencingToken(self.last_token)
    }

    /// Whether `secret` is the secret the session was opened with.
    pub fn check_secret(&self, _session: SessionId, _secret: u128) -> bool {
        false
    }

    /// One resource and its queues (R66).
    pub fn resource(&self, _name: &[u8]) -> Option<ResourceInfo> {
        None
    }

    /// Resources whose names start with `prefix`, in name order, at most `limit` of them.
    pub fn resources(&self, _prefix: &[u8], _limit: usize) -> Vec<ResourceInfo> {
        Vec::new()
    }

    /// One session and its locks.
    pub fn session(&self, _session: SessionId) -> Option<SessionInfo> {
        None
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        0
    }

    /// Number of live resources.
    pub fn resource_count(&self) -> usize {
        0
    }

    /// Number of locks (granted, converting and waiting).
    pub fn lock_count(&self) -> usize {
        0
    }

    /// The current wait-for edges between sessions (R39), sorted.
    pub fn waits_for(&self) -> Vec<WaitsFor> {
        Vec::new()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.clone())
    }

    /// The engine a snapshot was taken of.
    pub fn restore(snapshot: Snapshot) -> Core {
        snapshot.0
    }
}
