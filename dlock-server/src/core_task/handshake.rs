//! The handshake: a `Hello` opens a session (with a fresh secret) or resumes one on a new
//! connection, and is answered with the `Welcome` (and the replay) or a refusal.

use crate::logged::Logged;
use std::sync::Arc;

use dlock_core::{Command, EventKind, Reject, RequestId, SessionId};
use dlock_proto::{Hello, PROTOCOL_VERSION, Refusal, Resume, ServerMessage, Welcome};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::cluster::PendingOpen;
use super::sessions::SessionState;
use super::{CoreTask, stats};
use crate::ServerError;
use crate::complaints::{Complaint, complain};
use crate::handle::ConnHandle;
use crate::msg::HelloOutcome;

impl CoreTask {
    /// The `Welcome` of `session`, whose secret the caller knows (it chose it, or the client
    /// proved it) and whose lease the engine says.
    pub(super) fn welcome(
        &self,
        session: SessionId,
        secret: u128,
        ttl_ms: u64,
        resumed: bool,
    ) -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            session,
            secret,
            lease_ttl_ms: ttl_ms,
            server_version: crate::SERVER_VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            resumed,
            lvb_len: u32::try_from(self.config.engine.lvb_len).unwrap_or(u32::MAX),
            max_frame_len: u32::try_from(self.config.max_frame_len).unwrap_or(u32::MAX),
            now_ms: self.engine.core().clock_ms(),
        })
    }

    /// Answers a `Hello`: refused by a follower, a resume, or a new session.
    pub(super) fn hello(
        &mut self,
        conn: ConnHandle,
        hello: Hello,
        identity: Option<Arc<str>>,
        reply: oneshot::Sender<HelloOutcome>,
    ) -> Result<(), ServerError> {
        if let Some(side) = &self.cluster
            && !side.leading()
        {
            let _ = reply.send(HelloOutcome::Refused(side.not_leader()));
            return Ok(());
        }
        match hello.resume {
            Some(resume) => self.resume(conn, resume, identity, reply),
            None => self.open(conn, hello, identity, reply),
        }
    }

    /// Resumes a session on a new connection, if the engine knows it and the secret matches.
    fn resume(
        &mut self,
        conn: ConnHandle,
        resume: Resume,
        identity: Option<Arc<str>>,
        reply: oneshot::Sender<HelloOutcome>,
    ) -> Result<(), ServerError> {
        let (peer, conn_id, session) = (conn.peer(), conn.id, resume.session);
        // Only the identity that opened a session may resume it, secret or not; to anyone
        // else it is as unknown as a wrong secret makes it.
        let known = self
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.identity == identity)
            && self.engine.core().check_secret(session, resume.secret);
        if !known {
            self.sessions.monitor.rejected("unknown_session");
            let _ = reply.send(HelloOutcome::Refused(Refusal::UnknownSession));
            return Ok(());
        }
        self.renew(session)?;
        // The engine's lease length; `None` (and no registry entry) if the session ended.
        let ttl_ms = self.engine.core().session_ttl_ms(session);
        let attached = ttl_ms.and_then(|ttl_ms| {
            let (replay, up_to_seq) = self.sessions.attach(session, conn, resume.last_seq)?;
            Some((ttl_ms, replay, up_to_seq))
        });
        let Some((ttl_ms, replay, up_to_seq)) = attached else {
            let _ = reply.send(HelloOutcome::Refused(Refusal::UnknownSession));
            return Ok(());
        };
        let mut messages = Vec::with_capacity(replay.len() + 1);
        messages.push(self.welcome(session, resume.secret, ttl_ms, true));
        messages.extend(replay);
        info!(%session, %peer, replayed = messages.len() - 1, "session resumed");
        let outcome = HelloOutcome::Welcome {
            session,
            messages,
            up_to_seq,
        };
        if reply.send(outcome).is_err() {
            self.sessions.detach(session, conn_id);
        }
        Ok(())
    }

    /// Undoes the opening of `session`, whose lease could not be recorded (`cause`), and
    /// refuses its client with [`Refusal::StorageUnavailable`].
    fn refuse_unrecorded(
        &mut self,
        session: SessionId,
        cause: ServerError,
        reply: oneshot::Sender<HelloOutcome>,
    ) -> Result<(), ServerError> {
        complain!(Complaint::LeaseRecord, error = %cause, "cannot record a new session's lease; refusing the session (sessions already open go on)");
        let close = Command::CloseSession {
            session,
            request: RequestId(0),
        };
        let events = self.engine.apply(close)?;
        self.engine.recycle(events);
        self.sessions.monitor.rejected("storage_unavailable");
        let _ = reply.send(HelloOutcome::Refused(Refusal::StorageUnavailable));
        Ok(())
    }

    /// Opens a new session with a fresh secret. Its id is the addressee of the engine's
    /// `SessionOpened` event.
    fn open(
        &mut self,
        conn: ConnHandle,
        hello: Hello,
        identity: Option<Arc<str>>,
        reply: oneshot::Sender<HelloOutcome>,
    ) -> Result<(), ServerError> {
        let (peer, conn_id) = (conn.peer(), conn.id);
        // One client address may not hold every session: its sessions count until they end,
        // connected or not (a dropped connection's session lives until its lease runs out).
        let limit = self.config.max_sessions_per_peer;
        if self.sessions.count_for(peer.ip()) >= limit {
            debug!(%peer, limit, "too many sessions from one address; refusing a new one");
            self.sessions
                .monitor
                .rejected("too_many_sessions_from_peer");
            let refusal = Refusal::TooManySessionsFromPeer {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            };
            let _ = reply.send(HelloOutcome::Refused(refusal));
            return Ok(());
        }
        let ttl_ms = if hello.lease_ttl_ms == 0 {
            u64::try_from(self.config.default_lease_ttl.as_millis()).unwrap_or(u64::MAX)
        } else {
            hello.lease_ttl_ms
        };
        // The identity leads the session's name (below) and the whole name is held to the
        // limit: the client is told what its own part may be, not the sum it did not write.
        if let Some(identity) = &identity {
            let max = self
                .config
                .engine
                .max_session_name_len
                .saturating_sub(identity.len() + "[] ".len());
            if hello.client_name.len() > max {
                let len = hello.client_name.len();
                let reason = Reject::from(dlock_core::Invalid::SessionNameTooLong { len, max });
                debug!(%peer, %reason, "session refused");
                self.sessions.monitor.rejected(stats::reject_label(&reason));
                let _ = reply.send(HelloOutcome::Refused(Refusal::Rejected(reason)));
                return Ok(());
            }
        }
        let secret: u128 = rand::random();
        // The identity leads the session's name, so that queries (`dlock status`) and the
        // audit log show who opened it; a client cannot choose what comes first.
        let name = match &identity {
            Some(identity) => format!("[{identity}] {}", hello.client_name),
            None => hello.client_name.clone(),
        };
        let command = Command::OpenSession {
            name,
            ttl_ms,
            secret,
        };
        if let Some(side) = &mut self.cluster {
            // Answered when the entry is applied (`cluster::on_applied`).
            if !self.engine.try_propose(command) {
                self.sessions.monitor.rejected("overloaded");
                let _ = reply.send(HelloOutcome::Refused(side.not_leader()));
                return Ok(());
            }
            let open = PendingOpen {
                conn,
                identity,
                client_name: hello.client_name,
                reply,
            };
            side.pending_open(secret, open);
            return Ok(());
        }
        let mut events = self.engine.apply(command)?;
        // The answer to OpenSession is `SessionOpened`, or a rejection without a request id
        // (the client has not sent a request yet); anything else is routed as usual.
        let mut outcome = Err(Reject::UnknownSession);
        events.retain(|event| {
            match &event.kind {
                EventKind::SessionOpened { ttl_ms } => outcome = Ok((event.session, *ttl_ms)),
                EventKind::Rejected { reason } if event.request.is_none() => {
                    outcome = Err(reason.clone());
                }
                _ => return true,
            }
            false
        });
        self.sessions.route(&self.engine.core(), &mut events);
        self.engine.recycle(events);
        match outcome {
            Ok((session, ttl_ms)) => {
                // Written ahead: a restart must know how long this session's lease may last.
                // If it cannot be written (a full disk), the session is not confirmed: it is
                // closed again and the client refused, and the server goes on serving the
                // sessions it has (their leases are on record already).
                if let Err(e) = self.lease_record.granting(ttl_ms) {
                    self.refuse_unrecorded(session, e, reply)?;
                    return Ok(());
                }
                let messages = vec![self.welcome(session, secret, ttl_ms, false)];
                let who = identity.as_deref().unwrap_or("-").to_owned();
                self.sessions
                    .insert(session, SessionState::new(conn, identity));
                info!(%session, %peer, identity = %Logged(&who), name = %Logged(&hello.client_name), ttl_ms, "session opened");
                self.sessions.monitor.stats.sessions_opened += 1;
                let outcome = HelloOutcome::Welcome {
                    session,
                    messages,
                    up_to_seq: 0,
                };
                if reply.send(outcome).is_err() {
                    self.sessions.detach(session, conn_id);
                }
            }
            Err(reason) => {
                debug!(%peer, %reason, "session refused");
                self.sessions.monitor.rejected(stats::reject_label(&reason));
                let _ = reply.send(HelloOutcome::Refused(Refusal::Rejected(reason)));
            }
        }
        Ok(())
    }
}
