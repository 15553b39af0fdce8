//! A member that starts with an empty directory votes only once it has caught up.
//!
//! Raft counts on every vote coming from a member that still holds what it acknowledged. A
//! member whose disk was lost (or whose data directory was wiped) and that comes back under
//! its old id holds nothing, so it would vote for any candidate, one that lacks entries
//! committed with the lost copy's help included: that candidate would lead, cut those
//! entries from the other logs and grant locks that are held, with tokens below the ones
//! already given out. The README says to add such a machine under a new id; this guard makes
//! the mistake safe when an operator does not.
//!
//! A member whose directory has no log when it opens cannot tell a new cluster from a lost
//! disk, so it assumes the worst until it learns otherwise ([`RejoinGuard::open`]). Until
//! then it votes only for a candidate that has nothing but the cluster's first entry (the
//! membership `--init` writes), as in a cluster being formed, or for one that is guarded
//! too (its vote request says so, [`PeerRequest::Vote`](crate::network::PeerRequest)):
//! members that all started empty and none of which has caught up (a cluster killed while
//! it was being formed) would otherwise wait for ever for a leader to release them, and
//! none can lack what another has unless a majority lost their disks. It refuses every
//! other vote.
//! It learns from a leader: an `AppendEntries` whose commit point is an entry of the
//! leader's own term ([`RejoinGuard::saw_append`]) names an index at or above everything
//! committed before, and once this member has applied up to that index, or leads and has
//! applied an entry of its own term, it holds every committed entry and votes again
//! ([`RejoinGuard::watch`]). The guard is kept in a file (`rejoining`) so that a restart
//! while catching up does not end it.
//!
//! What it cannot help: a member that is needed for a majority and is still catching up
//! keeps the cluster without a leader (safe, not available) until it has caught up or the
//! member it replaced comes back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use openraft::rt::watch::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::accept::{Throttle, WARN_EVERY};
use crate::types::{Raft, TypeConfig};

/// The file whose presence keeps the guard on across restarts.
pub const MARKER: &str = "rejoining";

/// Whether a node may vote, and what it must catch up to before it does. Clones share one
/// guard.
#[derive(Clone, Debug)]
pub struct RejoinGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The marker file; `None` for a guard that was never on.
    marker: Option<PathBuf>,
    state: Mutex<State>,
    warnings: Throttle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Votes as Raft says.
    Off,
    /// Refuses votes; `Some(index)` once a leader has named an index at or above everything
    /// committed before it.
    Catching(Option<u64>),
}

impl Default for RejoinGuard {
    /// [`RejoinGuard::off`].
    fn default() -> RejoinGuard {
        RejoinGuard::off()
    }
}

impl RejoinGuard {
    /// A guard that never refuses (a node whose directory is known to hold its log).
    pub fn off() -> RejoinGuard {
        RejoinGuard::with(None, State::Off)
    }

    /// The guard for the node whose log is kept in `dir` (the directory given to
    /// [`open_node`](crate::open_node)), opened before the node: on if `dir` has no log yet
    /// (the marker is then written first) or still has the marker of a run that had not
    /// caught up.
    pub fn open(dir: &Path) -> std::io::Result<RejoinGuard> {
        let marker = dir.join(MARKER);
        if marker.exists() {
            return Ok(RejoinGuard::with(Some(marker), State::Catching(None)));
        }
        if dir.join("log").exists() {
            return Ok(RejoinGuard::off());
        }
        crate::private_fs::create_dir_all(dir)?;
        crate::private_fs::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&marker)?
            .sync_all()?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(RejoinGuard::with(Some(marker), State::Catching(None)))
    }

    fn with(marker: Option<PathBuf>, state: State) -> RejoinGuard {
        RejoinGuard {
            inner: Arc::new(Inner {
                marker,
                state: Mutex::new(state),
                warnings: Throttle::new(WARN_EVERY),
            }),
        }
    }

    fn state(&self) -> State {
        *self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the guard is on: this node refuses votes.
    pub fn is_on(&self) -> bool {
        self.state() != State::Off
    }

    /// Whether this node may answer `req` as Raft says: always once caught up; before, only
    /// for a candidate whose log ends at the cluster's first entry (or is empty), or one that
    /// is guarded too (`candidate_guarded`). Members that all started empty and none of which
    /// has caught up (a cluster killed as it was being formed) cannot wait for a leader to
    /// release them: whatever they lack, no member has it, unless a majority of them lost
    /// their disks, which no vote can make up for.
    pub fn admits(&self, req: &VoteRequest<TypeConfig>, candidate_guarded: bool) -> bool {
        !self.is_on() || candidate_guarded || req.last_log_id.as_ref().is_none_or(|l| l.index == 0)
    }

    /// Notes what an `AppendEntries` from a leader tells: its commit point, if that is an
    /// entry of its own term (then every entry committed before its term is at or below it).
    pub fn saw_append(&self, req: &AppendEntriesRequest<TypeConfig>) {
        let Some(commit) = &req.leader_commit else {
            return;
        };
        if commit.leader_id.term != req.vote.leader_id.term {
            return;
        }
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Catching(target) = &mut *state {
            *target = Some(target.map_or(commit.index, |t| t.max(commit.index)));
        }
    }

    /// The answer to a vote this guard refuses: not granted, with this node's own vote
    /// (never above the candidate's, so the candidate takes nothing from it).
    pub fn refuse(&self, raft: &Raft, req: &VoteRequest<TypeConfig>) -> VoteResponse<TypeConfig> {
        if let Some(not_logged) = self.inner.warnings.admit(Instant::now()) {
            tracing::warn!(
                candidate = %req.vote,
                not_logged,
                "refused a vote: this member started with an empty data directory and has not \
                 caught up with the cluster's log yet (a member whose disk was lost must be \
                 added under a new id; see the README)"
            );
        }
        let own = raft.metrics().borrow_watched().vote;
        VoteResponse::new(own, None, false)
    }

    /// Turns the guard off once `raft` has caught up (see the module docs), and removes the
    /// marker; returns then, or at `shutdown`.
    pub async fn watch(self, raft: Raft, shutdown: CancellationToken) {
        if !self.is_on() {
            return;
        }
        tracing::info!(
            "this member started with an empty data directory: it votes only once it has \
             caught up with the cluster's log"
        );
        let mut metrics = raft.metrics();
        loop {
            let caught_up = {
                let m = metrics.borrow_watched();
                let applied = m.last_applied.as_ref();
                let leads_own_term = m.current_leader == Some(m.id)
                    && applied.is_some_and(|l| l.leader_id.term == m.vote.leader_id.term);
                match self.state() {
                    State::Catching(Some(target)) => {
                        leads_own_term || applied.is_some_and(|l| l.index >= target)
                    }
                    State::Catching(None) => leads_own_term,
                    State::Off => true,
                }
            };
            if caught_up {
                self.turn_off();
                return;
            }
            // The target comes with appends, which change the metrics as they are applied.
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    fn turn_off(&self) {
        *self.inner.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Off;
        if let Some(marker) = &self.inner.marker {
            let removed = std::fs::remove_file(marker).and_then(|()| {
                let dir = marker.parent().unwrap_or(Path::new("."));
                std::fs::File::open(dir)?.sync_all()
            });
            if let Err(e) = removed {
                tracing::warn!(error = %e, marker = %marker.display(), "cannot remove the rejoin marker");
            }
        }
        tracing::info!("caught up with the cluster's log: this member votes again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;

    type LogId = crate::types::LogId;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    fn vote_req(last: Option<LogId>) -> VoteRequest<TypeConfig> {
        VoteRequest::new(Vote::new(5, 2), last)
    }

    fn append(term: u64, commit: Option<LogId>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: commit,
        }
    }

    #[test]
    fn an_empty_directory_starts_guarded_and_the_marker_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let raft_dir = dir.path().join("raft");
        let g = RejoinGuard::open(&raft_dir).unwrap();
        assert!(g.is_on());
        assert!(raft_dir.join(MARKER).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&raft_dir), 0o700, "the node's directory is private");
            assert_eq!(mode(&raft_dir.join(MARKER)), 0o600);
        }
        // The log is created after the guard; a restart still finds the marker.
        std::fs::create_dir_all(raft_dir.join("log")).unwrap();
        assert!(RejoinGuard::open(&raft_dir).unwrap().is_on());
        g.turn_off();
        assert!(!raft_dir.join(MARKER).exists());
        assert!(!RejoinGuard::open(&raft_dir).unwrap().is_on());
    }

    #[test]
    fn guarded_votes_only_for_a_cluster_being_formed() {
        let dir = tempfile::tempdir().unwrap();
        let g = RejoinGuard::open(dir.path()).unwrap();
        assert!(g.admits(&vote_req(None), false));
        assert!(g.admits(&vote_req(Some(log_id(0, 0))), false));
        assert!(!g.admits(&vote_req(Some(log_id(3, 7))), false));
        assert!(
            g.admits(&vote_req(Some(log_id(3, 7))), true),
            "a guarded candidate"
        );
        assert!(RejoinGuard::off().admits(&vote_req(Some(log_id(3, 7))), false));
    }

    #[test]
    fn the_target_comes_only_from_a_commit_point_of_the_leaders_own_term() {
        let dir = tempfile::tempdir().unwrap();
        let g = RejoinGuard::open(dir.path()).unwrap();
        g.saw_append(&append(4, None));
        g.saw_append(&append(4, Some(log_id(3, 90))));
        assert_eq!(
            g.state(),
            State::Catching(None),
            "a commit point of an earlier term"
        );
        g.saw_append(&append(4, Some(log_id(4, 100))));
        g.saw_append(&append(4, Some(log_id(4, 95))));
        assert_eq!(g.state(), State::Catching(Some(100)));
    }
}
