//! The engine as the core task drives it: input indices, the clock, the fencing-token floor
//! and the audit log around [`Core::apply_into`] on a single server; proposals through the
//! Raft log in a cluster ([`Replicated`]), whose events come back through the node's feed.

use std::time::Duration;

use dlock_core::{Command, Core, Event, Input};
use tokio::time::Instant;

use crate::ServerError;
use crate::audit::{Audit, AuditConfig};
use crate::floor::Floor;

/// The largest event buffer capacity kept between commands.
const EVENTS_BUF_KEEP: usize = 1024;

/// The engine of a cluster member: the replicated state, read in place, and the queue of
/// proposals to the Raft log (see `cluster::propose`).
#[derive(Debug)]
pub(super) struct Replicated {
    pub(super) replica: dlock_raft::Replica,
    pub(super) proposals: tokio::sync::mpsc::Sender<Command>,
    pub(super) clock: tokio::sync::watch::Receiver<Option<dlock_raft::LeaderClock>>,
    /// Renewals gathered for one `RenewMany` entry (HA rule 3), and since when.
    pub(super) renewals: Vec<(dlock_core::SessionId, dlock_core::RequestId)>,
    pub(super) renewals_since: Option<Instant>,
}

/// How long a cluster's leader gathers renewals into one log entry.
const RENEW_WINDOW: Duration = Duration::from_millis(10);

/// Most renewals in one log entry; a full batch goes at once.
const RENEW_BATCH_MAX: usize = 1024;

/// Most renewals kept while the proposal queue is full; beyond it the oldest are dropped
/// (their clients renew again).
const RENEW_BACKLOG_MAX: usize = 64 * RENEW_BATCH_MAX;

impl Replicated {
    /// Queues `command` for the log; a renewal joins the current batch. `false` if the
    /// proposal queue is full.
    fn propose(&mut self, command: Command) -> bool {
        if let Command::Renew { session, request } = command {
            self.renewals.push((session, request));
            self.renewals_since.get_or_insert_with(Instant::now);
            if self.renewals.len() >= RENEW_BATCH_MAX {
                self.flush_renewals();
            }
            return true;
        }
        self.proposals.try_send(command).is_ok()
    }

    /// Proposes the gathered renewals as one entry (kept for the next try if the queue is
    /// full).
    fn flush_renewals(&mut self) {
        if self.renewals.is_empty() {
            self.renewals_since = None;
            return;
        }
        let renewals = std::mem::take(&mut self.renewals);
        match self.proposals.try_send(Command::RenewMany { renewals }) {
            Ok(()) => self.renewals_since = None,
            Err(e) => {
                let Command::RenewMany { mut renewals } = e.into_inner() else {
                    return;
                };
                if renewals.len() > RENEW_BACKLOG_MAX {
                    let excess = renewals.len() - RENEW_BACKLOG_MAX;
                    tracing::warn!(
                        dropped = excess,
                        "the proposal queue is full; dropping the oldest renewals"
                    );
                    renewals.drain(..excess);
                }
                self.renewals = renewals;
            }
        }
    }
}

/// The engine, borrowed for a read.
pub(super) enum CoreRef<'a> {
    Local(&'a Core),
    Shared(dlock_raft::CoreGuard<'a>),
}

impl std::ops::Deref for CoreRef<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        match self {
            CoreRef::Local(core) => core,
            CoreRef::Shared(guard) => guard,
        }
    }
}

/// The engine with what it takes to apply a command: the next index, the clock's origin, the
/// fencing-token floor and the audit log.
#[derive(Debug)]
pub(super) struct Engine {
    /// In a cluster: the replicated engine (`core` is then unused and empty).
    replicated: Option<Replicated>,
    core: Core,
    floor: Floor,
    /// The index of the next input. Starts above the persisted ceiling.
    next_index: u64,
    /// The clock's origin: `now_ms` counts from here.
    start: Instant,
    /// The instant of the message being handled, read once for it by the core task (see
    /// [`pin_clock`](Self::pin_clock)); `None` reads the clock.
    pinned: Option<Instant>,
    /// The latest instant pinned: no later pin goes before it.
    latest: Instant,
    /// The opt-in audit log.
    audit: Option<Audit>,
    /// A reused buffer for the events of one command (see `apply` and `recycle`).
    events_buf: Vec<Event>,
}

impl Engine {
    /// An empty engine whose inputs start above the floor's ceiling as it was opened (above
    /// everything a previous lifetime used) and whose clock starts at `start`.
    pub(super) fn new(config: dlock_core::Config, floor: Floor, start: Instant) -> Engine {
        let next_index = floor.base() + 1;
        Engine {
            replicated: None,
            core: Core::new(config),
            floor,
            next_index,
            start,
            pinned: None,
            latest: start,
            audit: None,
            events_buf: Vec::new(),
        }
    }

    /// Opens the audit log: from now on every input is recorded with its events.
    pub(super) fn open_audit(&mut self, config: AuditConfig) -> Result<(), ServerError> {
        self.audit = Some(Audit::open(config)?);
        Ok(())
    }

    /// An engine of a cluster member: commands go to the Raft log through `replicated`.
    pub(super) fn replicated(
        config: dlock_core::Config,
        floor: Floor,
        start: Instant,
        replicated: Replicated,
    ) -> Engine {
        let mut engine = Engine::new(config, floor, start);
        engine.replicated = Some(replicated);
        engine
    }

    /// The cluster side, if this is a cluster member.
    pub(super) fn cluster(&self) -> Option<&Replicated> {
        self.replicated.as_ref()
    }

    /// The engine, for queries. In a cluster it is locked while the reference lives: never
    /// hold it across an `await`.
    pub(super) fn core(&self) -> CoreRef<'_> {
        match &self.replicated {
            None => CoreRef::Local(&self.core),
            Some(r) => CoreRef::Shared(r.replica.core()),
        }
    }

    /// Milliseconds since the start: the `now_ms` of the next input. In a cluster, the
    /// leader's clock, and 0 while this node does not lead (callers that show times take
    /// the engine's clock when it is later). Never locks the engine, so it may be called
    /// while a [`core`](Self::core) reference is held.
    pub(super) fn now_ms(&self) -> u64 {
        if let Some(r) = &self.replicated {
            let clock = *r.clock.borrow();
            return clock.map_or(0, |c| c.now_ms());
        }
        let now = self.pinned.unwrap_or_else(Instant::now);
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Makes `now` the time of every input until the next call (`None`: the clock's time
    /// again). The core task pins the instant it read for the message it handles, so that
    /// one clock read serves the message's inputs, its service time and the time slice.
    /// Every caller reads its instant under the core's lock, so they come in order; should
    /// one ever come earlier than one pinned before, it is taken as that one: the engine's
    /// time never goes back.
    pub(super) fn pin_clock(&mut self, now: Option<Instant>) {
        self.pinned = now.map(|now| {
            self.latest = self.latest.max(now);
            self.latest
        });
    }

    /// The latest instant pinned (the end of the last batch, when one has ended).
    pub(super) fn latest(&self) -> Instant {
        self.latest
    }

    /// When the engine wants its next `Tick`, if ever. In a cluster the leader's sequencer
    /// proposes ticks.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if let Some(r) = &self.replicated {
            // The leader's sequencer proposes ticks; here only the renewal batch is due.
            return r.renewals_since.map(|since| since + RENEW_WINDOW);
        }
        self.core
            .next_deadline()
            .map(|ms| self.start + Duration::from_millis(ms))
    }

    /// Whether the engine's next deadline has come.
    pub(super) fn tick_due(&self) -> bool {
        self.replicated.is_none()
            && self
                .core
                .next_deadline()
                .is_some_and(|d| d <= self.now_ms())
    }

    /// Applies one command with the next index and the current time; persists a higher
    /// fencing-token ceiling first when needed (before the input is applied and recorded,
    /// and again for the tokens it handed out), so nothing is recorded or sent before it is
    /// below the durable ceiling. A failed write leaves the server serving from what is
    /// still reserved; the error comes only once that is used up (see [`Floor`]), so the
    /// caller stops.
    /// Hand the events back with [`recycle`](Self::recycle) once routed.
    /// In a cluster the command is proposed instead and the events come later, through the
    /// feed, once the entry is applied: the list returned is empty.
    pub(super) fn apply(&mut self, command: Command) -> Result<Vec<Event>, ServerError> {
        if let Some(r) = &mut self.replicated {
            if !r.propose(command) {
                tracing::warn!(
                    "the proposal queue is full; a command of the server's own is dropped"
                );
            }
            return Ok(std::mem::take(&mut self.events_buf));
        }
        let index = self.next_index;
        let now_ms = self.now_ms();
        // The index (and the first token it may hand out) is covered by the persisted ceiling
        // before the input is applied and recorded: a process killed between the audit line
        // and the persist would otherwise restart below an index its log shows as used. An
        // error here comes before the engine changed.
        self.floor.ensure_above(
            index.max(self.core.last_token().0.saturating_add(1)),
            now_ms,
        )?;
        self.next_index += 1;
        let input = Input {
            index,
            now_ms,
            command,
        };
        // The buffer comes back through `recycle`, so a command normally allocates none.
        let mut events = std::mem::take(&mut self.events_buf);
        events.clear();
        match &mut self.audit {
            None => self.core.apply_into(input, &mut events),
            Some(audit) => {
                let ts_us = crate::audit::now_us();
                self.core.apply_into(input.clone(), &mut events);
                // Written before the caller routes the events.
                audit.record(ts_us, &input, &events);
            }
        }
        let used = self.core.last_index().max(self.core.last_token().0);
        self.floor.ensure_above(used, now_ms)?;
        Ok(events)
    }

    /// How many writes of the fencing-token floor have failed since the start.
    pub(super) fn floor_write_failures(&self) -> u64 {
        self.floor.write_failures()
    }

    /// In a cluster: proposes `command`, whose events come through the feed once applied;
    /// `false` if the proposal queue is full (the caller answers `Overloaded`).
    pub(super) fn try_propose(&mut self, command: Command) -> bool {
        match &mut self.replicated {
            Some(r) => r.propose(command),
            None => false,
        }
    }

    /// In a cluster: proposes the gathered renewals once their window has passed.
    pub(super) fn flush_renewals_if_due(&mut self) {
        if let Some(r) = &mut self.replicated
            && r.renewals_since
                .is_some_and(|since| since + RENEW_WINDOW <= Instant::now())
        {
            r.flush_renewals();
        }
    }

    /// Takes back an event buffer from [`apply`](Self::apply) for the next command, unless
    /// one large output (a mass expiry) grew it.
    pub(super) fn recycle(&mut self, mut events: Vec<Event>) {
        if events.capacity() <= EVENTS_BUF_KEEP {
            events.clear();
            self.events_buf = events;
        }
    }
}

#[cfg(test)]
mod tests {
    use dlock_core::{
        EventKind, FencingToken, LockRequest, Mode, RequestId, SessionId, UnlockRequest,
    };

    use super::*;

    /// Opens session 1 on a new engine over `floor` (reserved as at a server's start).
    fn engine_with_session(floor: Floor) -> (Engine, SessionId) {
        let mut floor = floor;
        floor.reserve().unwrap();
        let mut engine = Engine::new(dlock_core::Config::default(), floor, Instant::now());
        let events = engine
            .apply(Command::OpenSession {
                name: "s".into(),
                ttl_ms: 10_000,
                secret: 1,
            })
            .unwrap();
        (engine, events[0].session)
    }

    /// Locks and unlocks `r` once: the grant's token, or the error that stopped it.
    fn grant_once(
        engine: &mut Engine,
        session: SessionId,
        request: &mut u64,
    ) -> Result<FencingToken, ServerError> {
        *request += 1;
        let events = engine.apply(Command::Lock {
            session,
            request: RequestId(*request),
            args: LockRequest::new("r", Mode::EX),
        })?;
        let Some(Event {
            lock: Some(lock),
            kind: EventKind::Granted { token, .. },
            ..
        }) = events.first().cloned()
        else {
            panic!("not granted: {events:?}");
        };
        *request += 1;
        engine.apply(Command::Unlock {
            session,
            request: RequestId(*request),
            args: UnlockRequest::new(lock),
        })?;
        Ok(token)
    }

    #[test]
    fn an_unwritable_floor_serves_what_is_reserved_and_a_restart_repeats_no_token() {
        const BLOCK: u64 = 64;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let floor = Floor::open(&dir).unwrap().with_block(BLOCK);
        let (mut engine, session) = engine_with_session(floor);
        let durable = || Floor::open(&dir).unwrap().ceiling();
        assert_eq!(durable(), BLOCK + 1);
        // From now on every write fails, as on a full disk (for root too: the parent of the
        // path is a regular file).
        let file = parent.path().join("not-a-directory");
        std::fs::write(&file, "").unwrap();
        engine.floor.write_to(&file.join("data"));
        let mut request = 0;
        let mut tokens = Vec::new();
        let stopped = loop {
            match grant_once(&mut engine, session, &mut request) {
                Ok(token) => tokens.push(token.0),
                Err(e) => break e,
            }
            assert!(tokens.len() < 1_000, "never stopped");
        };
        assert!(
            matches!(stopped, ServerError::FloorExhausted { .. }),
            "{stopped:?}"
        );
        assert!(engine.floor_write_failures() >= 1);
        let highest = *tokens.last().unwrap();
        // Served past the point where the floor wanted raising, up to the durable ceiling
        // and never at or beyond it.
        assert!(highest > BLOCK / 2 + 1, "{tokens:?}");
        assert_eq!(durable(), BLOCK + 1);
        assert!(highest < durable(), "{highest} not below {}", durable());
        assert!(!dir.join("fencing-floor.tmp").exists());
        // A restart (the disk has room again) starts above every token handed out.
        drop(engine);
        let floor = Floor::open(&dir).unwrap().with_block(BLOCK);
        let (mut engine, session) = engine_with_session(floor);
        let after = grant_once(&mut engine, session, &mut 0).unwrap();
        assert!(
            after.0 > highest,
            "{after:?} repeats a token up to {highest}"
        );
    }

    fn replicated(
        dir: &std::path::Path,
        queue: usize,
    ) -> (Replicated, tokio::sync::mpsc::Receiver<Command>) {
        let sm = dlock_raft::StateMachine::open(dir, dlock_core::Config::default()).unwrap();
        let (proposals, rx) = tokio::sync::mpsc::channel(queue);
        let (_, clock) = tokio::sync::watch::channel(None);
        let r = Replicated {
            replica: sm.replica(),
            proposals,
            clock,
            renewals: Vec::new(),
            renewals_since: None,
        };
        (r, rx)
    }

    fn renew(s: u64) -> Command {
        Command::Renew {
            session: SessionId(s),
            request: RequestId(s),
        }
    }

    #[test]
    fn renewals_go_to_the_log_as_one_entry_and_wait_out_a_full_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, mut rx) = replicated(dir.path(), 1);
        assert!(r.propose(renew(1)));
        assert!(r.propose(renew(2)));
        assert!(rx.try_recv().is_err(), "renewals wait for their batch");
        assert!(r.renewals_since.is_some());
        // Another command takes the queue's only place; the batch then waits.
        assert!(r.propose(Command::Tick));
        r.flush_renewals();
        assert_eq!(r.renewals.len(), 2, "kept while the queue is full");
        assert_eq!(rx.try_recv().unwrap(), Command::Tick);
        r.flush_renewals();
        let expected = vec![(SessionId(1), RequestId(1)), (SessionId(2), RequestId(2))];
        assert_eq!(
            rx.try_recv().unwrap(),
            Command::RenewMany { renewals: expected }
        );
        assert!(r.renewals.is_empty() && r.renewals_since.is_none());
        // A full batch goes at once.
        for s in 0..RENEW_BATCH_MAX as u64 {
            assert!(r.propose(renew(s)));
        }
        match rx.try_recv().unwrap() {
            Command::RenewMany { renewals } => assert_eq!(renewals.len(), RENEW_BATCH_MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pinned_instant_before_an_earlier_one_does_not_take_the_clock_back() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let mut engine = Engine::new(
            dlock_core::Config::default(),
            Floor::open(dir.path()).unwrap(),
            start,
        );
        engine.pin_clock(Some(start + std::time::Duration::from_millis(50)));
        assert_eq!(engine.now_ms(), 50);
        // Read by another task before the one above, handled after it.
        engine.pin_clock(Some(start + std::time::Duration::from_millis(20)));
        assert_eq!(engine.now_ms(), 50);
        engine.pin_clock(Some(start + std::time::Duration::from_millis(70)));
        assert_eq!(engine.now_ms(), 70);
    }
}
