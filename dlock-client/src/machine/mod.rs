//! The session as a sans-IO state machine: no sockets, no clock reads, no randomness of its
//! own (reconnect jitter comes from a seeded [`Backoff`], renewal jitter from a generator each
//! session's [`Renewal`] seeds from the machine's seed).
//!
//! The driver feeds it inputs, each with the current instant:
//! [`handle_op`](SessionMachine::handle_op) (from the handles),
//! [`handle_frame`](SessionMachine::handle_frame) (from the server),
//! [`handle_timeout`](SessionMachine::handle_timeout), and the connection's fate
//! ([`handle_connection_up`](SessionMachine::handle_connection_up),
//! [`handle_connect_failed`](SessionMachine::handle_connect_failed),
//! [`handle_connection_lost`](SessionMachine::handle_connection_lost)). It drains the
//! outputs: [`poll_transmit`](SessionMachine::poll_transmit) (frames to write, in order),
//! [`poll_action`](SessionMachine::poll_action) (connect, disconnect, stop) and
//! [`poll_timeout`](SessionMachine::poll_timeout) (when to call `handle_timeout`). Answers
//! go to the callers through their responders; blocking notifications and losses go to the
//! locks' shared state.
//!
//! Frames queued before an [`Action::Disconnect`] belong to the connection it ends; none are
//! queued between it and the next connection's `handle_connection_up`. So a driver that
//! drains `poll_transmit` before `poll_action` writes every frame to the right connection.

pub(crate) mod backoff;
mod conn_state;
mod election;
pub(crate) mod endpoints;
mod events;
mod locks;
mod ops;
mod renewal;
mod requests;
mod retries;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dlock_core::{LockId, SessionId};
use dlock_proto::{
    ClientMessage, DEFAULT_MAX_FRAME_LEN, Hello, PROTOCOL_VERSION, Request, Resume, Welcome,
};
use tokio::time::Instant;

use self::backoff::Backoff;
use self::conn_state::ConnState;
use self::election::{Election, RoundEnd};
use self::endpoints::Endpoints;
use self::locks::Locks;
use self::renewal::Renewal;
pub use self::renewal::renewal_wait_range;
use self::requests::Requests;
use self::retries::Retries;
use crate::error::Error;
use crate::lock_state::LostReason;
use crate::op::{Call, Outcome, What};
use crate::options::duration_ms;
use crate::settings::Settings;
use crate::view::SessionView;

/// How long `close` waits for the server to confirm `Goodbye`.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the driver is asked to do besides writing frames.
#[derive(Debug)]
pub(crate) enum Action {
    /// Open a TCP connection to `addr`, then report
    /// [`handle_connection_up`](SessionMachine::handle_connection_up) or
    /// [`handle_connect_failed`](SessionMachine::handle_connect_failed).
    Connect { addr: String },
    /// Drop the connection or connection attempt; `graceful`: write the frames already
    /// queued first.
    Disconnect { graceful: bool },
    /// A session is established on the connection.
    Established,
    /// A full round of connection attempts (one at each endpoint) failed; this is the last
    /// one's error, or [`Error::NoLeader`] when members have answered `NotLeader` for a whole
    /// connect timeout (the machine retries by itself). A round in which a member answered
    /// `NotLeader` is not reported before that (see [`election`]).
    ConnectFailed(Error),
    /// The machine is done; the driver stops.
    Stop,
}

/// The session this client holds on the server.
struct Session {
    id: SessionId,
    secret: u128,
    renewal: Renewal,
}

/// The longest wait between rounds of connection attempts in which a member of a cluster
/// answered that it does not lead: an election takes a few hundred milliseconds, so a
/// client finds the new leader at most this long after it is elected.
const ELECTION_RETRY_CAP: Duration = Duration::from_millis(200);

/// The client's session and connection logic (see the module docs).
pub(crate) struct SessionMachine {
    settings: Settings,
    view: Arc<SessionView>,
    state: ConnState,
    session: Option<Session>,
    /// Incremented for every new session; guards of older sessions are refused.
    epoch: u64,
    /// The machine's seed: the reconnect jitter's, and (plus the epoch) each session's
    /// renewal jitter's.
    seed: u64,
    requests: Requests,
    /// Releases, cancels and renewals the server refused as overloaded, to send again.
    retries: Retries,
    locks: Locks,
    backoff: Backoff,
    endpoints: Endpoints,
    /// What the current round of attempts heard, and since when members say `NotLeader`.
    election: Election,
    max_frame_len: usize,
    /// The endpoint of the current connection or connection attempt.
    target: String,
    transmits: VecDeque<ClientMessage>,
    actions: VecDeque<Action>,
}

impl SessionMachine {
    /// A machine that starts connecting at once; `seed` seeds the reconnect and renewal
    /// jitter.
    pub(crate) fn new(
        settings: Settings,
        view: Arc<SessionView>,
        seed: u64,
        now: Instant,
    ) -> SessionMachine {
        let backoff = Backoff::new(settings.backoff_min, settings.backoff_max, seed);
        let endpoints = Endpoints::new(settings.endpoints.clone());
        let mut m = SessionMachine {
            settings,
            view,
            state: ConnState::Backoff { retry_at: now },
            session: None,
            epoch: 0,
            seed,
            requests: Requests::default(),
            retries: Retries::default(),
            locks: Locks::default(),
            backoff,
            endpoints,
            election: Election::default(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            target: String::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
        };
        m.connect(now);
        m
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next frame to write on the current connection.
    pub(crate) fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next thing to do besides writing.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let session = self.session.as_ref().map(|s| &s.renewal);
        [
            session.map(Renewal::lapse_at),
            session
                .filter(|_| self.state.can_send())
                .map(Renewal::renew_at),
            session
                .filter(|_| matches!(self.state, ConnState::Connected))
                .and_then(Renewal::answer_due),
            self.state.deadline(),
            self.requests.next_deadline(),
            self.retries.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The largest frame the server accepts (from the latest `Welcome`).
    pub(crate) fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    // ---- time ---------------------------------------------------------------------------

    /// Does what is due at `now`; a call with nothing due does nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        // The same latch the guards consult: once one of them has reported the lapse, this
        // agrees even if a renewal confirmation was handled in between.
        if self.session.as_ref().is_some_and(|s| s.renewal.lapsed(now)) {
            tracing::warn!("lease renewal not confirmed in time: declaring every lock lost");
            self.session_lost(LostReason::LocalLeaseLapsed, now);
        }
        if matches!(self.state, ConnState::Connected)
            && let Some(due) = self.session.as_ref().and_then(|s| s.renewal.answer_due())
            && now >= due
        {
            // Renewals went unanswered: the server or the way to it is gone without the
            // connection saying so. Reconnect while the lease has time left, to the next
            // endpoint first (this one counts as a failed attempt of a new round).
            tracing::warn!(
                "the server has not answered a lease renewal in max(TTL/6, 1 s); reconnecting"
            );
            self.disconnect(false);
            let silent = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the server did not answer a lease renewal in time",
            );
            self.attempt_failed(Error::Connect(Arc::new(silent)), now);
        }
        match &self.state {
            ConnState::Closing { deadline, .. } if now >= *deadline => {
                self.finish_close(now);
                return;
            }
            ConnState::Connecting { deadline } | ConnState::Handshaking { deadline, .. }
                if now >= *deadline =>
            {
                // Connected but unanswered is told apart from no connection at all: the
                // usual cause is a port where something else listens.
                let what = if matches!(self.state, ConnState::Handshaking { .. }) {
                    "connected, but no dlock handshake answer in time (is this a dlock \
                     server's lock port?)"
                } else {
                    "connect timed out"
                };
                let err = Error::Connect(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    what,
                )));
                self.disconnect(false);
                self.attempt_failed(err, now);
            }
            ConnState::Connected | ConnState::Closing { .. }
                if self
                    .session
                    .as_ref()
                    .is_some_and(|s| now >= s.renewal.renew_at()) =>
            {
                self.renew(now);
            }
            _ => {}
        }
        while let Some(id) = self.requests.pop_expired(now) {
            self.on_request_deadline(id, now);
        }
        self.retry_due(now);
        self.release_held(now);
        if matches!(self.state, ConnState::Backoff { retry_at } if now >= retry_at) {
            self.connect(now);
        }
    }

    // ---- the connection -----------------------------------------------------------------

    /// The TCP connection asked for by [`Action::Connect`] is up: the handshake starts.
    pub(crate) fn handle_connection_up(&mut self, now: Instant) {
        let ConnState::Connecting { deadline } = self.state else {
            return;
        };
        let resume = self.session.as_ref().map(|s| Resume {
            session: s.id,
            secret: s.secret,
            last_seq: s.renewal.last_seq(),
        });
        tracing::debug!(resume = resume.is_some(), "connected; sending Hello");
        self.transmits.push_back(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: self.settings.name.clone(),
            // 0 on the wire means "the server's default"; a zero TTL asked for is not that.
            lease_ttl_ms: self
                .settings
                .lease_ttl
                .map_or(0, |ttl| duration_ms(ttl).max(1)),
            resume,
            token: self.settings.token.clone(),
        }));
        self.state = ConnState::Handshaking {
            sent_at: now,
            deadline,
        };
    }

    /// The TCP connection asked for by [`Action::Connect`] could not be opened.
    pub(crate) fn handle_connect_failed(&mut self, err: std::io::Error, now: Instant) {
        self.handle_connect_error(Error::Connect(Arc::new(err)), now);
    }

    /// The connection asked for by [`Action::Connect`] could not be set up, for `err` (a
    /// refused TLS client certificate, say).
    pub(crate) fn handle_connect_error(&mut self, err: Error, now: Instant) {
        if !matches!(self.state, ConnState::Connecting { .. }) {
            return;
        }
        tracing::debug!(error = %err, "connection attempt failed");
        self.disconnect(false);
        self.attempt_failed(err, now);
    }

    /// The connection broke (closed by the server, a read or write failure, a malformed
    /// frame, a stalled writer); `err` says how.
    pub(crate) fn handle_connection_lost(&mut self, err: Error, now: Instant) {
        match self.state {
            ConnState::Handshaking { .. } => {
                tracing::debug!(error = %err, "handshake failed");
                self.disconnect(false);
                self.attempt_failed(err, now);
                return;
            }
            ConnState::Connected => tracing::info!(error = %err, "connection lost; reconnecting"),
            ConnState::Closing { .. } => {
                self.finish_close(now);
                return;
            }
            _ => return,
        }
        self.disconnect(false);
        self.schedule_retry(now);
    }

    /// Asks the driver for a connection to the next endpoint.
    fn connect(&mut self, now: Instant) {
        // With several endpoints an attempt gets a share of the connect timeout (see
        // `endpoints`). An attempt to resume is also cut at a renewal's answer timeout: the
        // other endpoints are to be tried while the lease lasts.
        let share = self
            .endpoints
            .attempt_timeout(self.settings.connect_timeout);
        let attempt = match &self.session {
            Some(s) => share.min(s.renewal.answer_timeout()),
            None => share,
        };
        self.state = ConnState::Connecting {
            deadline: now + attempt,
        };
        let addr = self.endpoints.target();
        tracing::debug!(%addr, "connecting");
        self.target.clone_from(&addr);
        self.actions.push_back(Action::Connect { addr });
    }

    /// Tells the driver to drop the connection; without `graceful`, unwritten frames go.
    fn disconnect(&mut self, graceful: bool) {
        if !graceful {
            self.transmits.clear();
        }
        if let Some(s) = &mut self.session {
            s.renewal.connection_ended();
        }
        self.actions.push_back(Action::Disconnect { graceful });
    }

    /// The next connection attempt after a backoff delay; with a session to resume, at most
    /// a tenth of its lease away (see [`Renewal::retry_cap`](renewal::Renewal::retry_cap)).
    fn schedule_retry(&mut self, now: Instant) {
        let mut delay = self.backoff.next_delay();
        if let Some(s) = &self.session {
            delay = delay.min(s.renewal.retry_cap());
        }
        self.state = ConnState::Backoff {
            retry_at: now + delay,
        };
    }

    /// The connection attempt (already dropped) failed with `err`: the next endpoint is
    /// tried at once, or after a backoff delay once every endpoint failed in this round.
    fn attempt_failed(&mut self, err: Error, now: Instant) {
        self.election.attempt_failed(&err, now);
        if self.endpoints.failed() {
            // A cluster between leaders is not a failure to report (the first connect waits
            // for it) until its members have said so for a whole connect timeout; a round
            // nobody answered is reported at once (see `election`).
            let end = self.election.round_over(now, self.settings.connect_timeout);
            match end {
                RoundEnd::Electing => {
                    tracing::debug!(error = %err, "members answered NotLeader; retrying");
                }
                RoundEnd::NoLeader => self
                    .actions
                    .push_back(Action::ConnectFailed(Error::NoLeader)),
                RoundEnd::Failed => self.actions.push_back(Action::ConnectFailed(err)),
            }
            self.schedule_retry(now);
            if end != RoundEnd::Failed
                && let ConnState::Backoff { retry_at } = &mut self.state
            {
                // Members answered, none leads yet: a leader is an election away, so the
                // wait does not grow past the cap (the jitter still spreads clients).
                *retry_at = (*retry_at).min(now + ELECTION_RETRY_CAP);
            }
        } else {
            tracing::debug!(error = %err, "trying the next endpoint");
            self.connect(now);
        }
    }

    /// The handshake succeeded.
    fn on_welcome(&mut self, welcome: Welcome, sent_at: Instant, now: Instant) {
        self.backoff.reset();
        self.election.leader_found();
        self.endpoints.succeeded();
        self.max_frame_len =
            usize::try_from(welcome.max_frame_len).unwrap_or(DEFAULT_MAX_FRAME_LEN);
        self.view.welcomed(&welcome, &self.target);
        let ttl = Duration::from_millis(welcome.lease_ttl_ms.max(1));
        let resumed = match &self.session {
            Some(s) if welcome.resumed && welcome.session == s.id => true,
            Some(_) => {
                // Asked to resume but got another session: the old one is gone.
                self.end_session(LostReason::SessionExpired);
                false
            }
            None if welcome.resumed => {
                // A resume of a session this client has given up on: end it on the server
                // and start over.
                let id = self.requests.alloc_id();
                self.transmits.push_back(ClientMessage::Request {
                    id,
                    body: Request::Goodbye,
                });
                self.disconnect(true);
                self.state = ConnState::Backoff { retry_at: now };
                return;
            }
            None => false,
        };
        self.state = ConnState::Connected;
        if resumed {
            tracing::debug!("session resumed");
            // The server renews the lease when it accepts the resume (any message of a
            // session renews it), which happened after `Hello` was sent.
            if let Some(s) = &mut self.session {
                s.renewal.confirm(sent_at, now);
                s.renewal.resumed();
            }
            // Re-send every outstanding request in id order; the server ignores the ones it
            // has already applied and replays their events.
            self.transmit_all(now);
            // Renew at once as well: the next renewal is overdue after a disconnection.
            self.renew(now);
        } else {
            self.epoch += 1;
            let margin = renewal::margin(self.settings.safety_margin, ttl);
            self.session = Some(Session {
                id: welcome.session,
                secret: welcome.secret,
                renewal: Renewal::new(
                    ttl,
                    margin,
                    sent_at,
                    now,
                    self.seed.wrapping_add(self.epoch),
                ),
            });
            self.view.set_session(welcome.session);
            tracing::debug!(session = %welcome.session, "session opened");
            // Requests submitted while there was no session go out now.
            self.transmit_all(now);
        }
        self.actions.push_back(Action::Established);
    }

    // ---- the session --------------------------------------------------------------------

    /// The session is gone: every lock is lost and every outstanding request fails, except
    /// new locks, queries and pings never sent, when a new session follows: they were asked
    /// of the client, not of that session, and go in the next one as if asked a moment later.
    fn end_session(&mut self, reason: LostReason) {
        let (err, goes_on) = match reason {
            LostReason::ServerShutdown => (Error::ShuttingDown, false),
            LostReason::Closed => (Error::Closed, false),
            _ => (Error::SessionLost, true),
        };
        self.locks.finish_all(reason);
        self.retries.clear();
        let unsent_new = |o: &requests::Outstanding| {
            goes_on && matches!(o.call.what, What::Lock { .. } | What::Query(_) | What::Ping)
        };
        for o in self.requests.drain_except(unsent_new) {
            o.call.fail(err.clone());
        }
        if !goes_on {
            // Held lock calls were never sent: with a new session they go then.
            for call in self.requests.take_held() {
                call.fail(err.clone());
            }
        }
        let ended = self.session.take();
        self.view.set_session(SessionId(0));
        if let Some(s) = ended {
            tracing::debug!(%reason, "session ended");
            self.view.session_ended(s.id, reason);
        }
    }

    /// The session is gone ([`end_session`](Self::end_session)), and with it the
    /// connection: a handshake in progress may be resuming it and must not bring it back.
    /// A fresh session is opened at once, unless the machine is closing.
    fn session_lost(&mut self, reason: LostReason, now: Instant) {
        let had_session = self.session.is_some();
        self.end_session(reason);
        if self.state.has_connection() {
            let lapsed = reason == LostReason::LocalLeaseLapsed;
            if lapsed && had_session && self.state.can_send() {
                // Best effort: if the server still hears us, release the locks at once.
                let id = self.requests.alloc_id();
                self.transmits.push_back(ClientMessage::Request {
                    id,
                    body: Request::Goodbye,
                });
            }
            // Frames for an established connection (a parting Goodbye) are written first.
            let graceful = self.state.can_send() && (lapsed || reason == LostReason::Closed);
            self.disconnect(graceful);
        }
        if self.state.is_closing() {
            self.stop();
        } else {
            self.state = ConnState::Backoff { retry_at: now };
        }
    }

    /// Ends the session as closed and stops.
    fn finish_close(&mut self, now: Instant) {
        self.session_lost(LostReason::Closed, now);
        self.stop();
    }

    /// Stops the machine, answering a pending `close`.
    fn stop(&mut self) {
        match std::mem::replace(&mut self.state, ConnState::Closed) {
            ConnState::Closed => return,
            ConnState::Closing { reply, .. } => {
                let _ = reply.send(Ok(Outcome::Closed));
            }
            _ => {}
        }
        tracing::debug!("client machine stopped");
        self.actions.push_back(Action::Stop);
    }

    fn renew(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let ack = s.renewal.renew(now);
        // The `Renew` goes before the `Ack`: the server renews a lease implicitly for any
        // other message (an `Ack` included) unless it was renewed a moment ago, so in this
        // order the `Ack` costs it no second renewal (in the other order, every renewal was
        // applied twice: a tenth of what idle sessions cost the server).
        self.submit(Call::silent(What::Renew), now);
        if let Some(seq) = ack {
            self.transmits.push_back(ClientMessage::Ack { seq });
        }
    }

    /// Acknowledges events if many went unacknowledged.
    fn maybe_ack(&mut self) {
        if !self.state.can_send() {
            return;
        }
        if let Some(seq) = self.session.as_mut().and_then(|s| s.renewal.ack_due()) {
            self.transmits.push_back(ClientMessage::Ack { seq });
        }
    }

    // ---- sending ------------------------------------------------------------------------

    /// Registers an outstanding request and sends it if connected.
    fn submit(&mut self, call: Call, now: Instant) {
        let deadline = match call.what {
            What::Renew | What::Goodbye => None,
            _ => self.settings.request_timeout.map(|d| now + d),
        };
        let id = self.requests.insert(call, deadline);
        self.transmit(id, now);
    }

    /// Sends (or re-sends) an outstanding request, if there is a connection and a session.
    fn transmit(&mut self, id: dlock_core::RequestId, now: Instant) {
        if self.session.is_none() || !self.state.can_send() {
            return;
        }
        let Some(o) = self.requests.get_mut(id) else {
            return;
        };
        o.first_sent.get_or_insert(now);
        let body = o.call.body();
        self.transmits
            .push_back(ClientMessage::Request { id, body });
    }

    fn transmit_all(&mut self, now: Instant) {
        for id in self.requests.ids() {
            self.transmit(id, now);
        }
    }

    /// A cancel of `lock`'s pending request nobody waits for.
    fn send_cancel(&mut self, lock: LockId, now: Instant) {
        let origin = crate::op::Origin::Release;
        self.submit(Call::silent(What::Cancel { lock, origin }), now);
    }

    /// A plain unlock nobody waits for (the release of a dropped or consumed guard).
    fn send_unlock(&mut self, lock: LockId, origin: crate::op::Origin, now: Instant) {
        let req = crate::op::plain_unlock(lock);
        self.submit(Call::silent(What::Unlock { req, origin }), now);
    }
}
