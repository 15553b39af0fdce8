//! Engine limits and parameters.

use serde::{Deserialize, Serialize};

/// Limits and parameters of the engine. Everything that can grow has a limit here; exceeding
/// one gives a typed rejection ([`Reject::LimitExceeded`](crate::Reject::LimitExceeded) or
/// [`Reject::Invalid`](crate::Reject::Invalid)), never a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Length of every resource's lock value block in bytes (R24). Shorter values are
    /// zero-padded; longer ones are invalid.
    pub lvb_len: usize,
    /// Maximum resource name length in bytes.
    pub max_name_len: usize,
    /// Maximum session name length in bytes.
    pub max_session_name_len: usize,
    /// Maximum number of live sessions.
    pub max_sessions: usize,
    /// Maximum number of resources (a resource lives while any lock on it exists, R1).
    pub max_resources: usize,
    /// Maximum number of locks (granted, converting or waiting) one session may own.
    pub max_locks_per_session: usize,
    /// Maximum number of locks (granted, converting or waiting) over all sessions.
    #[serde(default = "default_max_locks")]
    pub max_locks: usize,
    /// Maximum number of queued requests (converting plus waiting) on one resource.
    pub max_waiters_per_resource: usize,
    /// Shortest lease a session may ask for.
    pub min_ttl_ms: u64,
    /// Longest lease a session may ask for.
    pub max_ttl_ms: u64,
    /// Upper bound on the number of lock entries (queued requests walked as predecessors,
    /// and holders) one deadlock search examines. A search that reaches it stops and
    /// reports no deadlock (documented false negative, never a false positive).
    pub max_deadlock_search: usize,
    /// Recognise re-sent requests (HA rule 5): each session remembers the highest request
    /// id applied for it and its last [`REMEMBERED_ANSWERS`](crate::REMEMBERED_ANSWERS)
    /// final answers, and a `Lock`, `Convert`, `Unlock` or `Cancel` whose request id is at
    /// or below that highest id changes nothing and is answered again from what is
    /// remembered or from state (see the crate docs, "Exactly once"). A replicated cluster,
    /// where a client re-sends to a new leader that has no record of what was answered,
    /// sets it; a single server de-duplicates retransmissions itself and leaves it off, and
    /// then pays nothing for it. Part of the replicated state: every replica must agree, and
    /// a [`Command::Configure`](crate::Command::Configure) sets it like every other field.
    #[serde(default)]
    pub exactly_once: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lvb_len: 64,
            max_name_len: 1024,
            max_session_name_len: 256,
            max_sessions: 100_000,
            max_resources: 10_000_000,
            max_locks_per_session: 100_000,
            max_locks: default_max_locks(),
            max_waiters_per_resource: 10_000,
            min_ttl_ms: 100,
            max_ttl_ms: 300_000,
            max_deadlock_search: 100_000,
            exactly_once: false,
        }
    }
}

/// Default of [`Config::max_locks`] (also for configurations serialized before it existed).
fn default_max_locks() -> usize {
    10_000_000
}
