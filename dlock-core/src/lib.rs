//! dlock-core: the deterministic lock engine of dlock.
//!
//! A pure state machine with the semantics of the VMS / Linux DLM (six modes, three queues per
//! resource, conversions, value blocks, blocking notifications, deadlock detection), plus
//! dlock's sessions, leases and fencing tokens. It does no IO and reads no clock: every
//! [`Input`] carries its own `now_ms`, and [`Core::next_deadline`] tells the driver when to
//! send the next [`Command::Tick`].
//!
//! ```
//! use dlock_core::{Command, Config, Core, EventKind, Input, LockRequest, Mode, RequestId, SessionId};
//!
//! let mut core = Core::new(Config::default());
//! let open = Command::OpenSession { name: "a".into(), ttl_ms: 10_000, secret: 7 };
//! core.apply(Input { index: 1, now_ms: 0, command: open });
//! let session = SessionId(1);
//! let lock = Command::Lock {
//!     session,
//!     request: RequestId(1),
//!     args: LockRequest::new("db", Mode::EX),
//! };
//! let events = core.apply(Input { index: 2, now_ms: 1, command: lock });
//! assert!(matches!(events[0].kind, EventKind::Granted { mode: Mode::EX, .. }));
//! ```
//!
//! # The contract of `apply`
//!
//! - An input whose index is at or below the last applied one is ignored (no events).
//!   `clock = max(clock, now_ms)`.
//! - Ids: a session is `SessionId(index)` of its `OpenSession` input, a lock is
//!   `LockId(index)` of its `Lock` input.
//! - Fencing tokens: every grant (new lock, queued grant, conversion in any direction,
//!   same-mode included) gets `max(last_token + 1, index)`, so tokens strictly increase
//!   globally and are never below the input index.
//! - Any command of a live session renews its lease. A session is live until a `Tick`
//!   finds its lease over (or it closes), even if `now_ms` has passed `expires_at`.
//!   The one exception is a retransmission recognised with [`Config::exactly_once`],
//!   which changes nothing at all.
//!
//! # Events
//!
//! Order inside one `apply`:
//! 1. the reply to the command: `Granted`, `Queued`, `NotQueued`, `Deadlock`, `Unlocked`,
//!    `Renewed`, `SessionOpened`, `SessionClosed` or `Rejected` (for `Cancel`, the
//!    `Cancelled` completion of the cancelled request is the reply; for `Tick`, the
//!    `SessionExpired` and `TimedOut` events in deadline order take its place);
//! 2. completions produced by grant passes and deadlock victims, in the order they happen
//!    (each grant pass in grant order, R12);
//! 3. blocking notifications (R32..R37), after every completion, so a lock's grant always
//!    precedes a notification to it.
//!
//! Addressing: replies and completions carry the request id they answer; a completion of a
//! queued request carries the *original* request id and the lock id. `NotQueued` and
//! `Deadlock` of a new request carry no lock id (no lock exists); for a conversion they
//! carry the lock, which keeps its old mode. Rejections carry the command's request id and,
//! for convert, unlock and cancel, the lock id the command named. `Blocking` carries the
//! holder's lock id and no request id. `SessionOpened` and its rejection are addressed to
//! `SessionId(index)`; a command naming an unknown session is rejected with
//! `UnknownSession`, addressed to that id.
//!
//! # Decisions where the rule book leaves room
//!
//! - Value block (R24..R30): values shorter than `lvb_len` are zero-padded; a value on a
//!   request without VALBLK is ignored. IVVALBLK on an unlock or a conversion from PW or EX
//!   that writes the value block (down, or to the same mode: R26's write path) marks it
//!   not valid and nothing is written (as Linux's `set_lvb_lock`; R29a names unlock and
//!   down-conversion and is silent on the same mode); elsewhere (new locks, up-conversions,
//!   PW->EX, locks below PW) it has no effect.
//! - Blocking notifications (R35, R37): after a grant pass, the locks granted, converted in
//!   place or returned to the grant queue during the input are checked against the
//!   strongest queued mode; other holders were notified when the queued requests arrived
//!   (R32), except a PW or EX holder told PR when a CW queued behind the PR is left the
//!   strongest: it is told CW then. Per lock, a notification for a mode already covered
//!   since its last grant is dropped (PR and CW unordered).
//! - Deadlocks (R39..R41): a request about to be queued that closes a cycle is refused
//!   (it is the youngest). A queued conversion goes ahead of every waiting request, so the
//!   cycles it closes may run through those waiters' new edges, even without passing
//!   through its own session; they are searched too. After a conversion granted in place
//!   that strengthens a mode, the youngest queued request of each new cycle is refused,
//!   one cycle at a time.
//! - Session end (R50, R51): the session is gone at once (its ids are unknown, it is not
//!   listed); its locks are removed in steps of [`STEP_WORK`], each a force-unlock
//!   atomic on its resource (R51), and until then they block as before: as if the session
//!   were still unlocking them one by one, which is how Linux's `dlm_clear_proc_locks`
//!   proceeds. None of them is granted meanwhile: a queued request of an ended session
//!   that reaches the head of its queue, or whose timeout runs out, is removed then, with
//!   no event; its locks get no blocking notifications. Queries list the remaining locks
//!   without a session name.
//! - `Tick`: due timers run in deadline order, a lease before a request timeout at the
//!   same instant, up to [`STEP_WORK`] of them (a session whose lease has run out stays
//!   live until a `Tick` gets to it, as the contract of `apply` says). Expired sessions
//!   are removed first; the grant passes they enable run before any request deadline is
//!   judged, so a request that became grantable in time is granted rather than timed out.
//!
//! # Exactly once
//!
//! With [`Config::exactly_once`] (a replicated cluster sets it; HA rule 5) every session
//! remembers the highest id of a `Lock`, `Convert`, `Unlock` or `Cancel` applied for it
//! ([`Core::last_request`]; renewals never count: a server applies them on a path of their
//! own, so one sent after a re-sent request may be applied before it) and its last
//! [`REMEMBERED_ANSWERS`] final answers that are not grants (`NotQueued`, `Deadlock`,
//! `Cancelled`, `TimedOut`, `Unlocked`, `Rejected`), in state that snapshots carry, and
//! every lock the id of the request that created it. [`RequestId::DRIVER`] (id 0, the
//! driver's own commands) never counts. A `Lock`, `Convert`, `Unlock` or `Cancel` of a
//! live session whose request id is at or below the highest one is a retransmission: it
//! changes nothing (not even the lease) and gets one event, the remembered answer to that
//! request if there is one, else an answer from state:
//!
//! - `Lock`: the session's lock that request created: `Granted` with the mode it holds
//!   (also while converting), its token and, with VALBLK, the value block and its validity
//!   as they are now; `Queued` while it waits; `Rejected(NotFound)` when it is gone.
//! - `Convert`: `Granted` (as above) when the lock holds the requested mode with nothing
//!   pending; `Queued` while this very request is the lock's queued conversion; else
//!   `Rejected(NotFound)`.
//! - `Unlock`: `Unlocked` when the lock is gone (what the unlock answered), else
//!   `Rejected(NotFound)`.
//! - `Cancel`: `Cancelled` (with the cancel's own request id) when the lock is gone or has
//!   nothing pending, else `Rejected(NotPending)`: this cancel cancelled nothing.
//!
//! So a client that re-sends its outstanding requests to a new leader gets the original
//! grant and token, never a second queue entry, and learns of each request whether it is
//! granted, queued or finished. A re-sent `Renew` renews again and a `CloseSession` of a
//! session that still exists is applied (it cannot have been before); either of a gone
//! session is `Rejected(UnknownSession)` as always. A successful `Cancel` is remembered
//! under the cancelled request's id and its own. Without `exactly_once` none of this is
//! kept and a repeated id is applied again, as before.
//!
//! # Costs
//!
//! - Compatibility checks are O(1): each resource counts the held modes of its grant and
//!   convert queues (R9).
//! - Queues are intrusive doubly linked lists through the locks, so removal from the middle
//!   (cancel, timeout, session end) is O(log n) for the id lookup, and expiring many
//!   sessions is linear in their locks.
//! - Cleanup is bounded per input: the end of a session (close or expiry) removes at most
//!   [`STEP_WORK`] of its locks in the input that ends it, and a `Tick` handles due timers
//!   and removals up to [`STEP_WORK`] in all; the rest go in the following `Tick`s, which
//!   [`Core::next_deadline`] asks for at once. So no single input does unbounded work for
//!   a session with many locks or for many leases ending together, and other sessions'
//!   requests are applied between the steps.
//! - A grant pass costs O(1) per grant plus one failed test; no queue is scanned.
//! - Timers (leases, request timeouts) live in one ordered set: O(log n) per update.
//! - Deadlock search (see `deadlock.rs`) examines at most
//!   [`Config::max_deadlock_search`] lock entries; at the bound it reports no deadlock.
//! - Memory: locks and resources live in dense slabs, in chunks of 4,096 slots that never
//!   move (a growing table adds a chunk rather than copying itself); a resource allocates
//!   nothing of its own for a name of up to 30 bytes (a longer one takes one block), plus
//!   its value block once non-zero and its queue block while something is queued. A
//!   session's locks are a list through the locks, and the lock id index is a sorted
//!   vector (ids only grow).
//!
//! # Snapshots
//!
//! [`Core`] and [`Snapshot`] are serde data with ordered maps whose keys are not strings:
//! store them with a binary format such as bincode.
#![forbid(unsafe_code)]

mod blocking;
mod census;
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
mod lock_index;
mod lvb;
mod mode;
mod name;
mod once;
mod ops;
mod query;
mod request;
mod resource;
mod session;
mod slab;
mod timers;
mod validate;

pub use census::{Census, SessionSummary};
pub use command::{Command, Input};
pub use config::Config;
pub use engine::{Core, STEP_WORK, Snapshot, SnapshotV2};
pub use event::{Event, EventKind, Invalid, Limit, Reject};
pub use flags::LockFlags;
pub use ids::{FencingToken, LockId, RequestId, SessionId};
pub use mode::{COMPATIBILITY, Mode, ParseModeError};
pub use once::REMEMBERED_ANSWERS;
pub use query::{
    LockInfo, LockState, ResourceInfo, SessionInfo, SessionLease, SessionLockInfo, WaitsFor,
};
pub use request::{ConvertRequest, LockRequest, UnlockRequest};
