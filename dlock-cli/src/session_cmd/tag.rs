//! One task per tag: it carries out the tag's commands in the order of their lines and owns
//! the tag's lock through its life, waiting, granted, converting, until it is released,
//! refused or lost; then the tag is free for another `lock`.
//!
//! While a request or conversion waits, the task keeps reading the tag's commands, so that
//! `cancel` reaches it; every other tag has its own task, so nothing one lock waits for holds
//! up another.

use std::future::Future;
use std::pin::Pin;

use dlock_client::{
    CancelOutcome, Client, ConvertOptions, Converted, Error, LockGuard, LockOptions, LostReason,
    PendingLock, UnlockOptions,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::answer::{Answer, Event, Op};
use super::io::Out;
use super::line::{ConvertCmd, LockCmd, Tag, ValueOp, Wait};

/// How many commands of one tag may wait for its task.
pub const TAG_QUEUE: usize = 32;

/// Dropped once the command it came with has its first answer: the session reads the next
/// line only then, so that commands reach the server in the order of their lines.
pub type Done = oneshot::Sender<()>;

/// A command line for a tag's task.
#[derive(Debug)]
pub struct TagCmd {
    /// Its line number.
    pub line: u64,
    /// What it asks for.
    pub op: TagOp,
    /// Dropped at its first answer.
    pub done: Done,
}

/// What a command line asks of a tag.
#[derive(Debug)]
pub enum TagOp {
    /// `lock`
    Lock(LockCmd),
    /// `convert`
    Convert(ConvertCmd),
    /// `unlock`
    Unlock(ValueOp),
    /// `cancel`
    Cancel,
}

/// What a tag's task receives.
#[derive(Debug)]
pub enum Msg {
    /// A command line.
    Cmd(TagCmd),
    /// The session ends: stop. A lock still held is released when the session closes, and a
    /// request still waiting is cancelled with it.
    Close,
    /// The session was lost (the reason): report the lock as lost, or the waiting request as
    /// refused, and stop.
    SessionLost(String),
}

/// What a tag's task needs.
#[derive(Clone, Debug)]
pub struct TagCtx {
    /// The tag.
    pub tag: Tag,
    /// The session.
    pub client: Client,
    /// Where answers go.
    pub out: Out,
    /// Told the reason when this tag sees the session lost; the session then ends.
    pub lost: mpsc::Sender<String>,
    /// Says (the reason) once the session is lost, before the tags are told in their
    /// channels: a request still waiting for its first answer gives up on it.
    pub ended: SessionEnd,
    /// Where a granted lock's guard goes when the session ends, to be dropped only after the
    /// session has closed (see [`Kept`]).
    pub keep: Kept,
}

/// The guards of the locks a session held at its end. Dropping a guard unlocks its lock,
/// which is not what ending a session does (R50, R29b): they are kept here while the session
/// closes and dropped after, when there is nothing left to unlock.
pub type Kept = std::sync::Arc<std::sync::Mutex<Vec<LockGuard>>>;

/// Set (to the reason) when the session is lost; see [`lost_with`].
pub type SessionEnd = watch::Receiver<Option<String>>;

/// Completes with the reason once `end` says the session is lost; never if it is not.
pub async fn lost_with(mut end: SessionEnd) -> String {
    let reason = end
        .wait_for(Option::is_some)
        .await
        .map(|reason| reason.clone().unwrap_or_default());
    match reason {
        Ok(reason) => reason,
        Err(_) => std::future::pending().await,
    }
}

/// Whether the task goes on after a lock's life.
enum Flow {
    /// The tag is free again: wait for its next command.
    Next,
    /// The session ends.
    Stop,
}

/// A conversion that waits in the convert queue.
type Converting = Pin<Box<dyn Future<Output = Result<Converted, Error>> + Send>>;

/// Runs the task of `ctx.tag` until the session ends or its channel closes.
pub async fn run(ctx: TagCtx, mut rx: mpsc::Receiver<Msg>) {
    while let Some(msg) = rx.recv().await {
        let flow = match msg {
            Msg::Cmd(TagCmd {
                op: TagOp::Lock(lock),
                done,
                ..
            }) => ctx.lock(lock, done, &mut rx).await,
            Msg::Cmd(cmd) => {
                ctx.no_lock(cmd.line).await;
                Flow::Next
            }
            Msg::Close | Msg::SessionLost(_) => Flow::Stop,
        };
        if let Flow::Stop = flow {
            return;
        }
    }
}

impl TagCtx {
    async fn say(&self, event: Event) {
        self.out.send(Answer::about(&self.tag, event)).await;
    }

    async fn no_lock(&self, line: u64) {
        let msg = format!("no lock is tagged {}", self.tag);
        self.say(Event::error(line, "no_lock", msg)).await;
    }

    /// A request or conversion refused with `e`; a lost session ends the session.
    async fn refused(&self, op: Op, e: &Error, held: Option<dlock_client::Mode>) {
        self.say(Event::refused(op, e, held)).await;
        if matches!(e, Error::SessionLost) {
            let _ = self.lost.try_send(e.to_string());
        }
    }

    /// `lock`: requests the lock, waits for it while taking `cancel`, then holds it.
    async fn lock(&self, lock: LockCmd, done: Done, rx: &mut mpsc::Receiver<Msg>) -> Flow {
        let mut opts = LockOptions::new();
        match lock.wait {
            Wait::Queue => {}
            Wait::NoQueue => opts = opts.no_queue(),
            Wait::Timeout(d) => opts = opts.timeout(d),
        }
        if lock.read_value {
            opts = opts.read_value();
        }
        // Commands of this tag wait in the channel until the server has answered: a cancel
        // needs the lock the server names in that answer.
        // A session lost before the server answered ends the request with it: dropped, a
        // request not yet sent is never sent, so it cannot be granted in a later session
        // that this command does not speak for (one session, R50).
        let request = self.client.lock_request(&lock.resource, lock.mode, opts);
        let answer = tokio::select! {
            biased;
            answer = request => answer,
            reason = lost_with(self.ended.clone()) => {
                self.say(Event::refused(Op::Lock, &Error::SessionLost, None)).await;
                tracing::debug!(%reason, "request given up with the session");
                return Flow::Stop;
            }
        };
        let pending = match answer {
            Ok(p) => p,
            Err(e) => {
                self.refused(Op::Lock, &e, None).await;
                return Flow::Next;
            }
        };
        let mut done = Some(done);
        let mut late_cancel: Option<TagCmd> = None;
        let result = if pending.is_granted() {
            pending.granted().await
        } else {
            let resource = super::line::show_name(&lock.resource);
            let mode = lock.mode.to_string();
            self.say(Event::Waiting { resource, mode }).await;
            // `waiting` is this line's first answer: the next line may go.
            drop(done.take());
            match self.wait_for_grant(pending, rx).await {
                Ok((result, cancel_done, late)) => {
                    // A `cancel` that ended the wait has its first answer in the outcome.
                    done = cancel_done;
                    late_cancel = late;
                    result
                }
                Err(flow) => return flow,
            }
        };
        match result {
            Ok(guard) => {
                let value = lock
                    .read_value
                    .then(|| (guard.value().unwrap_or_default(), guard.value_valid()));
                let event = Event::granted(&lock.resource, guard.mode(), guard.token().0, value);
                self.say(event).await;
                drop(done);
                self.answer_late_cancel(late_cancel).await;
                self.hold(guard, lock.notify, rx).await
            }
            Err(e) => {
                self.refused(Op::Lock, &e, None).await;
                drop(done);
                self.answer_late_cancel(late_cancel).await;
                Flow::Next
            }
        }
    }

    /// Answers a `cancel` that found nothing pending, after the outcome it came too late for.
    async fn answer_late_cancel(&self, cancel: Option<TagCmd>) {
        if let Some(cmd) = cancel {
            self.not_pending(cmd.line).await;
            drop(cmd.done);
        }
    }

    /// Waits for a queued request's outcome, carrying out the tag's commands meanwhile, and
    /// returns it with the [`Done`] of a `cancel` that ended it, to be dropped once the
    /// outcome is answered, or a `cancel` that came too late, to be answered `not_pending`
    /// after the outcome; `Err(Flow::Stop)` if the session ends first.
    async fn wait_for_grant(
        &self,
        pending: PendingLock,
        rx: &mut mpsc::Receiver<Msg>,
    ) -> Result<(Result<LockGuard, Error>, Option<Done>, Option<TagCmd>), Flow> {
        let id = pending.lock_id();
        // Kept across the loop: dropping it would cancel the request.
        let granted = pending.granted();
        tokio::pin!(granted);
        loop {
            // Biased: an outcome that has arrived is answered before the commands after it
            // (a `convert` right after a grant is carried out, not refused as busy).
            tokio::select! {
                biased;
                r = &mut granted => return Ok((r, None, None)),
                msg = rx.recv() => match msg {
                    Some(Msg::Cmd(cmd)) => match cmd.op {
                        TagOp::Cancel => match self.client.cancel_by_id(id).await {
                            // The request completes at once, cancelled: that is the answer.
                            Ok(CancelOutcome::Cancelled) => {
                                return Ok(((&mut granted).await, Some(cmd.done), None));
                            }
                            // Too late: the request has its outcome (the server sent it before
                            // this answer, so it is here). That outcome is answered first, then
                            // the cancel's `not_pending`, in the order they happened (R48).
                            Ok(CancelOutcome::NotPending) => {
                                let r = (&mut granted).await;
                                return Ok((r, None, Some(cmd)));
                            }
                            Err(e) => self.say(Event::failed(cmd.line, &e)).await,
                        },
                        TagOp::Lock(_) => self.in_use(cmd.line).await,
                        // Argument checks come before the state check (R55), as the
                        // server's.
                        TagOp::Convert(_) | TagOp::Unlock(_)
                            if let Some(msg) = self.invalid_args(&cmd.op, None) =>
                        {
                            self.say(Event::error(cmd.line, "invalid", msg)).await;
                        }
                        TagOp::Convert(_) | TagOp::Unlock(_) => {
                            let msg = format!(
                                "the request of {} still waits: cancel it first (R15, R45)",
                                self.tag
                            );
                            self.say(Event::error(cmd.line, "busy", msg)).await;
                        }
                    },
                    Some(Msg::SessionLost(reason)) => {
                        let e = Error::SessionLost;
                        self.say(Event::refused(Op::Lock, &e, None)).await;
                        tracing::debug!(%reason, "request given up with the session");
                        return Err(Flow::Stop);
                    }
                    Some(Msg::Close) | None => return Err(Flow::Stop),
                },
            }
        }
    }

    async fn in_use(&self, line: u64) {
        let msg = format!(
            "tag {} names a lock already: unlock it first, or choose another tag",
            self.tag
        );
        self.say(Event::error(line, "tag_in_use", msg)).await;
    }

    async fn not_pending(&self, line: u64) {
        let msg = format!("nothing of {} is pending (R48)", self.tag);
        self.say(Event::error(line, "not_pending", msg)).await;
    }

    /// Holds a granted lock: conversions, blocking notifications (with `notify`), unlock,
    /// loss.
    async fn hold(&self, mut guard: LockGuard, notify: bool, rx: &mut mpsc::Receiver<Msg>) -> Flow {
        let lost = guard.lost();
        tokio::pin!(lost);
        let mut notify = notify;
        let mut converting: Option<Converting> = None;
        loop {
            // Biased, for the order of the answers: a loss, then a conversion's outcome, then
            // a notification, and only then the commands read after them.
            tokio::select! {
                biased;
                reason = &mut lost => {
                    if reason == LostReason::Released {
                        // Released by an unlock whose answer did not come in time.
                        return Flow::Next;
                    }
                    self.say(Event::Lost { reason: reason.to_string() }).await;
                    let _ = self.lost.try_send(reason.to_string());
                    return Flow::Next;
                }
                r = async { converting.as_mut().expect("guarded by is_some").await },
                    if converting.is_some() =>
                {
                    converting = None;
                    self.conversion_done(r, &guard).await;
                }
                // R33: no notification comes while the lock converts.
                wanted = guard.blocked(), if notify => match wanted {
                    Ok(mode) => self.say(Event::Blocking { mode: mode.to_string() }).await,
                    // Lost: the branch above reports it.
                    Err(_) => notify = false,
                },
                msg = rx.recv() => match msg {
                    Some(Msg::Cmd(cmd)) => {
                        let n = cmd.line;
                        match cmd.op {
                            TagOp::Lock(_) => self.in_use(n).await,
                            // As the server checks: invalid arguments are INVALID before
                            // BUSY (R55).
                            TagOp::Convert(_) | TagOp::Unlock(_)
                                if let Some(msg) = converting
                                    .as_ref()
                                    .and_then(|_| self.invalid_args(&cmd.op, Some(guard.mode()))) =>
                            {
                                self.say(Event::error(n, "invalid", msg)).await;
                            }
                            TagOp::Convert(_) | TagOp::Unlock(_) if converting.is_some() => {
                                self.busy(n).await;
                            }
                            TagOp::Convert(c) => {
                                converting = self.start_convert(&guard, n, c).await;
                            }
                            TagOp::Unlock(value) => {
                                if self.unlock(&guard, n, value).await {
                                    // Released: dropping the guard sends nothing more.
                                    return Flow::Next;
                                }
                            }
                            TagOp::Cancel if converting.is_some() => {
                                match guard.canceller().cancel().await {
                                    // The conversion completes at once, cancelled: that is
                                    // the answer.
                                    Ok(()) => {
                                        if let Some(c) = converting.take() {
                                            self.conversion_done(c.await, &guard).await;
                                        }
                                    }
                                    Err(Error::NotPending) => self.not_pending(n).await,
                                    Err(e) => self.say(Event::failed(n, &e)).await,
                                }
                            }
                            TagOp::Cancel => self.not_pending(n).await,
                        }
                    }
                    Some(Msg::SessionLost(reason)) => {
                        let reason = match guard.is_lost() {
                            true => guard.lost().await.to_string(),
                            false => reason,
                        };
                        self.say(Event::Lost { reason }).await;
                        return Flow::Stop;
                    }
                    // The session's end releases the lock (R50: a PW or EX lock's value block
                    // becomes not valid, R29b), not an unlock: the guard is kept until the
                    // session has closed, and dropping it then sends nothing.
                    Some(Msg::Close) => {
                        self.keep
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(guard);
                        return Flow::Stop;
                    }
                    None => return Flow::Stop,
                },
            }
        }
    }

    /// For a `convert` or `unlock` of this tag while its request or conversion is pending:
    /// the argument checks the server makes before it looks at the lock's state (R54, R55),
    /// in its order, as the INVALID message, or `None` if they pass (the answer is then BUSY).
    /// `held` is the granted mode, `None` while the first request waits.
    fn invalid_args(&self, op: &TagOp, held: Option<dlock_client::Mode>) -> Option<String> {
        let (value, convert) = match op {
            TagOp::Convert(c) => (&c.value, Some(c)),
            TagOp::Unlock(value) => (value, None),
            TagOp::Lock(_) | TagOp::Cancel => return None,
        };
        let max = self.client.value_block_len();
        if let ValueOp::Write(v) = value
            && v.len() > max
        {
            return Some(format!(
                "value of {} bytes exceeds the value block length of {max} (R24, R54)",
                v.len()
            ));
        }
        let c = convert?;
        match held {
            None if c.quecvt => Some(format!(
                "QUECVT is only valid on a conversion of a granted lock, and {} still waits for its grant (R21, R54)",
                self.tag
            )),
            None => None,
            Some(from) if c.quecvt && !from.allows_quecvt_to(c.mode) => Some(format!(
                "QUECVT is not allowed on a {from}->{} conversion (R21)",
                c.mode
            )),
            Some(from) if c.value == ValueOp::Read && from.writes_value_block_to(c.mode) => {
                Some(format!(
                    "a conversion from {from} to {} writes the value block: give value=HEX (R26, R54)",
                    c.mode
                ))
            }
            Some(_) => None,
        }
    }

    async fn busy(&self, line: u64) {
        let msg = format!(
            "a conversion of {} is pending: wait for it or cancel it first (R15, R45)",
            self.tag
        );
        self.say(Event::error(line, "busy", msg)).await;
    }

    /// Answers a queued conversion's outcome.
    async fn conversion_done(&self, r: Result<Converted, Error>, guard: &LockGuard) {
        match r {
            Ok(c) => self.converted(&c).await,
            Err(e) => self.refused(Op::Convert, &e, Some(guard.mode())).await,
        }
    }

    async fn converted(&self, c: &Converted) {
        let value = c.value.as_deref().map(|v| (v, c.value_valid));
        self.say(Event::converted(c.mode, c.token.0, value)).await;
    }

    /// Starts a conversion; answers at once if it was granted or refused at once, and
    /// returns it if it waits.
    async fn start_convert(
        &self,
        guard: &LockGuard,
        line: u64,
        c: ConvertCmd,
    ) -> Option<Converting> {
        let mut opts = ConvertOptions::new();
        match c.wait {
            Wait::Queue => {}
            Wait::NoQueue => opts = opts.no_queue(),
            Wait::Timeout(d) => opts = opts.timeout(d),
        }
        if c.quecvt {
            opts = opts.quecvt();
        }
        opts = match c.value {
            ValueOp::Keep => opts,
            ValueOp::Read => opts.read_value(),
            ValueOp::Write(v) => opts.value(v),
            ValueOp::Invalidate => opts.invalidate_value(),
        };
        let held = guard.mode();
        match guard.start_convert(c.mode, opts).await {
            Ok(pending) if pending.is_granted() => {
                match pending.wait().await {
                    Ok(done) => self.converted(&done).await,
                    Err(e) => self.refused(Op::Convert, &e, Some(guard.mode())).await,
                }
                None
            }
            Ok(pending) => {
                let (mode, held) = (c.mode.to_string(), held.to_string());
                self.say(Event::Converting { mode, held }).await;
                Some(Box::pin(pending.wait()))
            }
            Err(e) => {
                tracing::debug!(line, error = %e, "conversion refused at once");
                self.refused(Op::Convert, &e, Some(guard.mode())).await;
                None
            }
        }
    }

    /// `unlock`: whether the lock was released. A refused unlock changes nothing (R5, R45,
    /// R54): the lock stays held under its tag.
    async fn unlock(&self, guard: &LockGuard, line: u64, value: ValueOp) -> bool {
        let opts = match value {
            ValueOp::Write(v) => UnlockOptions::new().value(v),
            ValueOp::Invalidate => UnlockOptions::new().invalidate_value(),
            ValueOp::Keep | ValueOp::Read => UnlockOptions::new(),
        };
        // By id rather than `LockGuard::unlock_with`: that one consumes the guard even when
        // the server refuses, leaving the lock held with nothing to release it by; this one
        // keeps the guard then, and ends it as released when the unlock succeeds.
        match self.client.unlock_by_id(guard.lock_id(), opts).await {
            Ok(()) => {
                self.say(Event::Unlocked).await;
                true
            }
            Err(e) => {
                self.say(Event::failed(line, &e)).await;
                false
            }
        }
    }
}
