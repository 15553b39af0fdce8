//! The status views that the server's HTTP JSON API (`/api/...`), its status page and
//! `dlock status --json` share: one set of serde types, so every consumer reads the same
//! shape. Fields may be added; none is renamed or removed.
//!
//! Resource names are shown as UTF-8 (invalid bytes replaced by U+FFFD); session names are
//! the clients' own and may hold anything, so whoever renders them must escape them.

use std::collections::BTreeMap;

use dlock_core::{LockInfo, Mode, ResourceInfo};
use serde::{Deserialize, Serialize};

/// One lock on a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The lock id.
    pub lock: u64,
    /// The owning session's id.
    pub session: u64,
    /// The owning session's name.
    pub session_name: String,
    /// The granted mode; `null` while waiting.
    pub mode: Option<String>,
    /// The mode waited for; `null` for a holder.
    pub requested_mode: Option<String>,
    /// The fencing token of the latest grant; `null` while waiting.
    pub token: Option<u64>,
    /// Server clock (ms) when the lock entered its current state (granted or queued).
    pub since_ms: u64,
    /// How long ago that was, in milliseconds, by the server clock of the same answer.
    pub for_ms: u64,
}

impl LockView {
    /// The view of `l` in an answer stamped `now_ms` (server clock).
    pub fn new(l: &LockInfo, now_ms: u64) -> LockView {
        LockView {
            lock: l.lock.0,
            session: l.session.0,
            session_name: l.session_name.clone(),
            mode: l.state.granted_mode().map(|m| m.to_string()),
            requested_mode: l.state.requested_mode().map(|m| m.to_string()),
            token: l.token.map(|t| t.0),
            since_ms: l.since_ms,
            for_ms: now_ms.saturating_sub(l.since_ms),
        }
    }
}

/// One resource and its three queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    /// The resource name, as UTF-8 (invalid bytes replaced by U+FFFD).
    pub name: String,
    /// The name's bytes in hexadecimal, present only when the name is not UTF-8 (then
    /// [`name`](Self::name) cannot tell it from other names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    /// Whether the value block is valid (R29, R30).
    pub value_valid: bool,
    /// Locks on the grant queue.
    pub holders: Vec<LockView>,
    /// Locks on the convert queue (holding `mode`, waiting for `requested_mode`), head first.
    pub converting: Vec<LockView>,
    /// Locks on the wait queue, head first.
    pub waiting: Vec<LockView>,
    /// How many locks are not listed (present only when some are not): the resource had
    /// more than fit in one reply frame, so the first ones of the grant queue, then of the
    /// convert queue, then of the wait queue are listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ResourceView {
    /// The view of `r` in an answer stamped `now_ms` (server clock).
    pub fn new(r: &ResourceInfo, now_ms: u64) -> ResourceView {
        let locks = |ls: &[LockInfo]| ls.iter().map(|l| LockView::new(l, now_ms)).collect();
        ResourceView {
            name: String::from_utf8_lossy(&r.name).into_owned(),
            name_hex: std::str::from_utf8(&r.name)
                .is_err()
                .then(|| crate::to_hex(&r.name)),
            value_valid: r.value_valid,
            holders: locks(&r.granted),
            converting: locks(&r.converting),
            waiting: locks(&r.waiting),
            omitted: r.omitted,
        }
    }
}

/// Resources in name order: `/api/resources` (one page) and `dlock status --json` (every
/// page).
///
/// ```json
/// {"resources": [{"name": "db", "value_valid": true,
///   "holders":    [{"lock": 5, "session": 3, "session_name": "alice@h:42", "mode": "EX",
///                   "requested_mode": null, "token": 17, "since_ms": 1200, "for_ms": 3400}],
///   "converting": [],
///   "waiting":    [{"lock": 8, "session": 6, "session_name": "bob@h:7", "mode": null,
///                   "requested_mode": "PR", "token": null, "since_ms": 4000, "for_ms": 600}]}],
///  "now_ms": 4600}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesView {
    /// Matching resources, in name order.
    pub resources: Vec<ResourceView>,
    /// The server clock (ms) of the answer; ages are measured against it.
    #[serde(default)]
    pub now_ms: u64,
    /// More resources match: pass this as `cursor` for the next page (absent on the last).
    /// It is the last resource's name as UTF-8 (invalid bytes replaced by U+FFFD), so it
    /// cannot go on after a name that is not UTF-8: use [`next_cursor_hex`](Self::next_cursor_hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The same cursor as the bytes of the last resource's name in hexadecimal, present
    /// whenever `next_cursor` is (absent in the answers of servers that predate it): pass it as
    /// `cursor_hex` (`/api/resources`) or as `hex:` and it (`dlock status --cursor`), which
    /// always goes on after exactly that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor_hex: Option<String>,
}

impl ResourcesView {
    /// The view of query results stamped `now_ms`, with no further page.
    pub fn new(resources: &[ResourceInfo], now_ms: u64) -> ResourcesView {
        ResourcesView {
            resources: resources
                .iter()
                .map(|r| ResourceView::new(r, now_ms))
                .collect(),
            now_ms,
            next_cursor: None,
            next_cursor_hex: None,
        }
    }

    /// [`new`](Self::new) for a page after which `more` resources match: its `next_cursor`
    /// is then the last resource's name, and `next_cursor_hex` that name's bytes.
    pub fn page(resources: &[ResourceInfo], now_ms: u64, more: bool) -> ResourcesView {
        let mut view = ResourcesView::new(resources, now_ms);
        if more && let Some(last) = resources.last() {
            view.next_cursor = Some(String::from_utf8_lossy(&last.name).into_owned());
            view.next_cursor_hex = Some(crate::to_hex(&last.name));
        }
        view
    }
}

/// Locks counted by mode name (`"NL"` .. `"EX"`), modes with no lock left out.
pub type ModeCounts = BTreeMap<String, u64>;

/// Counts of one mode array, indexed by [`Mode::index`], as [`ModeCounts`].
pub fn mode_counts(by_index: &[u64; 6]) -> ModeCounts {
    Mode::ALL
        .iter()
        .zip(by_index)
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| (m.to_string(), *n))
        .collect()
}

/// `/api/status`: the server at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server's version string.
    pub version: String,
    /// The server clock (ms since it started).
    pub now_ms: u64,
    /// Whether the server grants locks (false during the restart grace).
    pub ready: bool,
    /// Time left in the restart grace, if the server is in it.
    pub grace_remaining_ms: Option<u64>,
    /// Open client connections.
    pub connections: u64,
    /// Live sessions.
    pub sessions: u64,
    /// Resources with at least one lock.
    pub resources: u64,
    /// Granted locks by granted mode (a converting lock counts under `converting`).
    pub granted: ModeCounts,
    /// Converting locks by requested mode.
    pub converting: ModeCounts,
    /// Waiting locks by requested mode.
    pub waiting: ModeCounts,
    /// In a cluster: this member's Raft role; absent on a server that runs alone (and in
    /// the answers of servers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// In a cluster: where this member stands in the membership it knows (`"removed"`: it
    /// was taken out of the cluster and should be stopped); absent on a server that runs
    /// alone (and in the answers of servers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Standing>,
}

/// Where a cluster member stands in the membership it knows (`/api/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// In no membership yet: the cluster is not formed, or this node waits to be added.
    Pending,
    /// A voter.
    Voter,
    /// A member that does not vote: a node being added, catching up before it votes.
    Learner,
    /// The membership it knows does not include it: it was removed from the cluster. It
    /// takes no part and serves no client; stop it (it must not rejoin under the same id
    /// with its old data).
    Removed,
}

impl Standing {
    /// The standing's name as JSON spells it: `"voter"`, `"removed"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Pending => "pending",
            Standing::Voter => "voter",
            Standing::Learner => "learner",
            Standing::Removed => "removed",
        }
    }
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member's Raft role, as it knows it (`/api/status`, `dlock_cluster_leader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It leads: it appends entries and replicates them to the others.
    Leader,
    /// A voter that follows a leader (or waits to hear from one).
    Follower,
    /// A voter standing for election.
    Candidate,
    /// Not (yet) a voter: it receives the log, as a member being added does.
    Learner,
    /// Its Raft node has stopped.
    Shutdown,
}

impl Role {
    /// The role's name as JSON spells it: `"leader"`, `"follower"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One session in `/api/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session id.
    pub session: u64,
    /// Its name, as the client gave it.
    pub name: String,
    /// Its lease length in milliseconds.
    pub ttl_ms: u64,
    /// Milliseconds until the lease runs out unless renewed (0 if it is due).
    pub lease_remaining_ms: u64,
    /// Its locks (granted, converting or waiting).
    pub locks: u64,
    /// Its locks with a queued request.
    pub pending: u64,
}

/// `/api/sessions`: a page of sessions in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsView {
    /// The sessions.
    pub sessions: Vec<SessionView>,
    /// The server clock (ms) of the answer.
    pub now_ms: u64,
    /// More sessions follow: pass this as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// A wait-for edge (R39): `waiter` has a queued request blocked by `holder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEdge {
    /// The waiting session.
    pub waiter: u64,
    /// The session it waits for.
    pub holder: u64,
}

/// A deadlock the server broke (R40): the victim's request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlockCycle {
    /// Server clock (ms) when the victim was refused.
    pub at_ms: u64,
    /// The session whose request was refused.
    pub victim: u64,
    /// The resource the refused request was for, when known.
    pub resource: Option<String>,
    /// The requested mode, when known.
    pub mode: Option<String>,
    /// The sessions of the cycle, the victim first and then along the wait-for edges back
    /// to it (only the victim when the cycle could not be traced).
    pub sessions: Vec<u64>,
}

/// `/api/waits`: the wait-for graph and the recent deadlock cycles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitsView {
    /// The server clock (ms) of the answer.
    pub now_ms: u64,
    /// Current wait-for edges, sorted (at most a bounded number; see `truncated`).
    pub edges: Vec<WaitEdge>,
    /// More edges exist than were listed.
    pub truncated: bool,
    /// The names of the sessions in `edges` and `cycles`, by session id.
    pub names: BTreeMap<u64, String>,
    /// The most recent deadlock cycles, oldest first.
    pub cycles: Vec<DeadlockCycle>,
}

/// One member of a cluster as the answering node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The member's node id.
    pub id: u64,
    /// Where its clients connect.
    pub client_addr: String,
    /// Where its peers connect.
    pub raft_addr: String,
    /// On the leader: the last log index the member is known to hold (`None`: not known).
    pub matched: Option<u64>,
    /// On the leader, for the other members: how many milliseconds ago the member last
    /// answered a heartbeat or an append (`None`: not known). Beyond a second or so, the
    /// member is down or cut off, whatever `matched` says.
    pub heard_ms: Option<u64>,
    /// Whether it votes: `false` for a learner being added (it counts for no majority until
    /// it has caught up and the change that makes it a voter is committed).
    pub voter: bool,
}

/// A cluster as one node sees it (`Query::Cluster`, `dlock status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The answering node.
    pub node_id: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The last index in the answering node's log.
    pub last_log_index: u64,
    /// The last index the answering node applied.
    pub applied_index: u64,
    /// Every voting member.
    pub members: Vec<MemberView>,
    /// Whether the answering node leads and serves clients now: its term's first entry is
    /// applied and a majority has answered it within its lease. A node that believes it
    /// leads without a majority (the rest of the cluster down or cut off) says `leader` is
    /// itself, and `false` here.
    #[serde(default)]
    pub serving: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_without_role_still_reads_and_role_is_lowercase() {
        // What a server without `role` (or one that runs alone) answers.
        let old = r#"{"version":"0","now_ms":1,"ready":true,"grace_remaining_ms":null,
            "connections":0,"sessions":0,"resources":0,"granted":{},"converting":{},"waiting":{}}"#;
        let s: ServerStatus = serde_json::from_str(old).expect("reads");
        assert_eq!(s.role, None);
        let alone = serde_json::to_value(&s).expect("writes");
        assert!(alone.get("role").is_none());

        let member = ServerStatus {
            role: Some(Role::Follower),
            ..s
        };
        let json = serde_json::to_value(&member).expect("writes");
        assert_eq!(json["role"], "follower");
        let back: ServerStatus = serde_json::from_value(json).expect("reads");
        assert_eq!(back, member);
        for r in [
            Role::Leader,
            Role::Follower,
            Role::Candidate,
            Role::Learner,
            Role::Shutdown,
        ] {
            let v = serde_json::to_value(r).expect("writes");
            assert_eq!(v, r.as_str());
        }
    }

    #[test]
    fn membership_is_lowercase_and_absent_alone() {
        let alone = serde_json::to_value(ServerStatus::default()).expect("writes");
        assert!(alone.get("membership").is_none());
        let removed = ServerStatus {
            membership: Some(Standing::Removed),
            ..ServerStatus::default()
        };
        let json = serde_json::to_value(&removed).expect("writes");
        assert_eq!(json["membership"], "removed");
        for s in [
            Standing::Pending,
            Standing::Voter,
            Standing::Learner,
            Standing::Removed,
        ] {
            assert_eq!(serde_json::to_value(s).expect("writes"), s.as_str());
        }
    }
}
