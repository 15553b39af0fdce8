//! What the handles can see of the machine's session, without asking its task.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dlock_core::SessionId;
use dlock_proto::Welcome;
use tokio::sync::watch;

use crate::lock_state::LostReason;

/// The current session id and what the latest `Welcome` said, written by the machine and
/// read by [`Client`](crate::Client).
#[derive(Debug, Default)]
pub(crate) struct SessionView {
    /// The current session id (0 while there is none).
    id: AtomicU64,
    /// The server's version string from the latest `Welcome`.
    server_version: Mutex<String>,
    /// The server's value block length from the latest `Welcome`.
    lvb_len: AtomicU64,
    /// The endpoint whose server sent the latest `Welcome`.
    endpoint: Mutex<String>,
    /// The last session that ended, and why.
    ended: watch::Sender<Option<(SessionId, LostReason)>>,
}

impl SessionView {
    /// The current session (`SessionId(0)` between sessions).
    pub(crate) fn session(&self) -> SessionId {
        SessionId(self.id.load(Ordering::Acquire))
    }

    /// Records the current session (`SessionId(0)`: none).
    pub(crate) fn set_session(&self, id: SessionId) {
        self.id.store(id.0, Ordering::Release);
    }

    /// Records that session `id` ended, for `reason`.
    pub(crate) fn session_ended(&self, id: SessionId, reason: LostReason) {
        self.ended.send_replace(Some((id, reason)));
    }

    /// Waits until session `id` has ended (at once if it has), and says why.
    pub(crate) async fn ended(&self, id: SessionId) -> LostReason {
        let mut rx = self.ended.subscribe();
        let ended = rx
            .wait_for(|e| e.is_some_and(|(s, _)| s == id) || self.session() != id)
            .await
            .ok()
            .and_then(|e| *e);
        match ended {
            Some((s, reason)) if s == id => reason,
            // A session ended and another began before this looked: `id`'s end, whatever
            // it was, is not known here.
            _ => LostReason::SessionExpired,
        }
    }

    /// The server's version string.
    pub(crate) fn server_version(&self) -> String {
        self.server_version
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The server's value block length.
    pub(crate) fn lvb_len(&self) -> usize {
        usize::try_from(self.lvb_len.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The endpoint whose server sent the latest `Welcome` (empty before the first).
    pub(crate) fn endpoint(&self) -> String {
        self.endpoint.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records what a `Welcome` from `endpoint` says about the server.
    pub(crate) fn welcomed(&self, welcome: &Welcome, endpoint: &str) {
        if let Ok(mut e) = self.endpoint.lock() {
            endpoint.clone_into(&mut e);
        }
        if let Ok(mut v) = self.server_version.lock() {
            v.clone_from(&welcome.server_version);
        }
        self.lvb_len
            .store(u64::from(welcome.lvb_len), Ordering::Relaxed);
    }
}
