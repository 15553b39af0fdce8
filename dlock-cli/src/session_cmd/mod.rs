//! `dlock session`: one session of the server driven by command lines on stdin, with the
//! answers and events as JSON lines on stdout, so that a shell script (a `coproc`, or a batch
//! piped in) can convert locks, use value blocks, see blocking notifications, hold several
//! locks, cancel, and meet deadlocks.
//!
//! The parts: [`line`](mod@line) parses commands, [`answer`] shapes the answers, [`io`] moves lines
//! in and out on threads of their own, [`tag`] runs each tag's lock as a task. This file reads
//! the lines, hands each to its tag's task (or answers it), and ends the session.

mod answer;
mod io;
mod line;
mod tag;

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::args::SessionArgs;
use crate::error::{CliError, exit};
use crate::session::{self, Ctx};
use crate::signals::{Signals, exit_code_for};

use answer::{Answer, Event};
use io::{Input, Out};
use line::{Command, Tag};
use tag::{Done, Msg, TagCmd, TagCtx, TagOp};

/// The most tags one `dlock session` keeps; a `lock` with a new tag beyond them is answered
/// with `too_many_tags`. (The server has its own limit on locks per session.)
pub const MAX_TAGS: usize = 4096;

/// Why the session ended.
enum End {
    /// End of input or `quit`.
    Input,
    /// The session was lost (the reason).
    Lost(String),
    /// stdout can no longer be written.
    Output,
    /// A signal.
    Signal(nix::sys::signal::Signal),
}

/// Runs `dlock session` and returns the exit code.
pub async fn run(ctx: &Ctx, args: SessionArgs) -> Result<u8, CliError> {
    let mut signals = Signals::install().map_err(CliError::Io)?;
    let client = session::connect(ctx, args.ttl).await?;
    let (out, writer) = Out::start().map_err(CliError::Io)?;
    let mut driver = Driver::new(client.clone(), out);
    let end = driver.drive(io::read_stdin(), &mut signals).await;
    driver.stop(&end).await;
    // The session's end releases what it still holds (R50), then the kept guards go.
    session::close(&client).await;
    drop(driver);
    let written = writer.finish().await;
    match end {
        End::Input => {}
        End::Lost(reason) => {
            eprintln!("dlock: session lost ({reason})");
            return Ok(exit::UNAVAILABLE);
        }
        End::Signal(sig) => return Ok(exit_code_for(sig)),
        End::Output => {}
    }
    written.map_err(CliError::Stdout)?;
    Ok(exit::OK)
}

/// The session's tags and tasks.
struct Driver {
    client: dlock_client::Client,
    out: Out,
    tags: HashMap<Tag, mpsc::Sender<Msg>>,
    tasks: JoinSet<()>,
    queries: JoinSet<()>,
    lost_tx: mpsc::Sender<String>,
    lost_rx: mpsc::Receiver<String>,
    /// Set to the reason when the session is lost (see [`tag::lost_with`]).
    ended: watch::Sender<Option<String>>,
    /// The guards of the locks held when the session ended, dropped once it has closed.
    kept: tag::Kept,
}

impl Driver {
    fn new(client: dlock_client::Client, out: Out) -> Driver {
        // One reason is enough: the first loss ends the session.
        let (lost_tx, lost_rx) = mpsc::channel(1);
        Driver {
            client,
            out,
            tags: HashMap::new(),
            tasks: JoinSet::new(),
            queries: JoinSet::new(),
            lost_tx,
            lost_rx,
            ended: watch::Sender::new(None),
            kept: tag::Kept::default(),
        }
    }

    /// Reads and carries out lines until the session ends, and says why.
    async fn drive(&mut self, mut input: mpsc::Receiver<Input>, signals: &mut Signals) -> End {
        // The session's end, even with no lock to report it: the client would open a new
        // session by itself, and the script's lines would go on in it unawares.
        let session_end = self.client.session_ended();
        tokio::pin!(session_end);
        loop {
            // Biased: a loss or a signal ends the session before any further line is read.
            let (n, bytes) = tokio::select! {
                biased;
                sig = signals.recv() => return End::Signal(sig),
                Some(reason) = self.lost_rx.recv() => return End::Lost(reason),
                reason = &mut session_end => return End::Lost(reason.to_string()),
                () = self.out.closed() => return End::Output,
                item = input.recv() => match item {
                    None => return End::Input,
                    Some(Input::Line(n, bytes)) => (n, bytes),
                    Some(Input::TooLong(n)) => {
                        let msg = format!("line longer than {} bytes", io::MAX_LINE);
                        self.say(None, Event::error(n, "syntax", msg)).await;
                        continue;
                    }
                },
            };
            let done = match line::parse(&bytes) {
                Ok(None) => continue,
                Ok(Some(Command::Quit)) => return End::Input,
                Ok(Some(cmd)) => self.dispatch(n, cmd).await,
                Err(bad) => {
                    let event = Event::error(n, "syntax", bad.message);
                    self.say(bad.tag.as_ref(), event).await;
                    continue;
                }
            };
            // The next line goes to the server only after this one's first answer.
            tokio::select! {
                biased;
                sig = signals.recv() => return End::Signal(sig),
                Some(reason) = self.lost_rx.recv() => return End::Lost(reason),
                reason = &mut session_end => return End::Lost(reason.to_string()),
                () = self.out.closed() => return End::Output,
                _ = done => {}
            }
            // Reap finished queries so that the set stays small.
            while self.queries.try_join_next().is_some() {}
        }
    }

    async fn say(&self, tag: Option<&Tag>, event: Event) {
        let tag = tag.map(Tag::to_string);
        self.out.send(Answer { tag, event }).await;
    }

    /// Hands a command to its tag's task, or starts a query or ping, and returns what
    /// completes at its first answer.
    async fn dispatch(&mut self, line: u64, cmd: Command) -> oneshot::Receiver<()> {
        let (done, first_answer) = oneshot::channel();
        let (tag, op) = match cmd {
            Command::Lock(tag, lock) => {
                if !self.tags.contains_key(&tag) && !self.start_tag(line, &tag).await {
                    return first_answer;
                }
                (tag, TagOp::Lock(lock))
            }
            Command::Convert(tag, c) => (tag, TagOp::Convert(c)),
            Command::Unlock(tag, value) => (tag, TagOp::Unlock(value)),
            Command::Cancel(tag) => (tag, TagOp::Cancel),
            Command::Query(tag, resource) => {
                self.query(line, tag, resource, done);
                return first_answer;
            }
            Command::Ping(tag) => {
                self.ping(line, tag, done);
                return first_answer;
            }
            // Handled by the caller.
            Command::Quit => return first_answer,
        };
        match self.tags.get(&tag) {
            Some(tx) => {
                // A closed channel: the task ended with the session, which is ending.
                let _ = tx.send(Msg::Cmd(TagCmd { line, op, done })).await;
            }
            None => {
                let msg = format!("no lock is tagged {tag}");
                self.say(Some(&tag), Event::error(line, "no_lock", msg))
                    .await;
            }
        }
        first_answer
    }

    /// Starts the task of a new tag; `false` (answered) if there are too many.
    async fn start_tag(&mut self, n: u64, tag: &Tag) -> bool {
        if self.tags.len() >= MAX_TAGS {
            let msg = format!("at most {MAX_TAGS} tags per session");
            self.say(Some(tag), Event::error(n, "too_many_tags", msg))
                .await;
            return false;
        }
        let (tx, rx) = mpsc::channel(tag::TAG_QUEUE);
        let ctx = TagCtx {
            tag: tag.clone(),
            client: self.client.clone(),
            out: self.out.clone(),
            lost: self.lost_tx.clone(),
            ended: self.ended.subscribe(),
            keep: self.kept.clone(),
        };
        self.tasks.spawn(tag::run(ctx, rx));
        self.tags.insert(tag.clone(), tx);
        true
    }

    /// `query`, as a task of its own: a signal need not wait for its answer.
    fn query(&mut self, n: u64, tag: Tag, resource: Vec<u8>, done: Done) {
        let (client, out, end) = (
            self.client.clone(),
            self.out.clone(),
            self.ended.subscribe(),
        );
        self.queries.spawn(async move {
            let event = match or_lost(client.view_resource(&resource), end).await {
                Ok(view) => Event::resource(&resource, view.value.as_ref(), view.now_ms),
                Err(e) => Event::failed(n, &e),
            };
            out.send(Answer::about(&tag, event)).await;
            drop(done);
        });
    }

    /// `ping`, as a task of its own.
    fn ping(&mut self, n: u64, tag: Tag, done: Done) {
        let (client, out, end) = (
            self.client.clone(),
            self.out.clone(),
            self.ended.subscribe(),
        );
        self.queries.spawn(async move {
            let event = match or_lost(client.ping(), end).await {
                Ok(pong) => Event::Pong {
                    server_version: pong.server_version,
                    // Whole microseconds: `0.036`, not `0.036424000000000005`.
                    rtt_ms: pong.rtt.as_micros() as f64 / 1000.0,
                },
                Err(e) => Event::failed(n, &e),
            };
            out.send(Answer::about(&tag, event)).await;
            drop(done);
        });
    }

    /// Ends every task: each answers what the end means for its lock, then stops. Commands
    /// already handed to a task are carried out first (its channel is FIFO), so every line
    /// read before the end gets its first answer.
    async fn stop(&mut self, end: &End) {
        if let End::Lost(reason) = end {
            // First, so that a task waiting for the server (not reading its channel) stops.
            self.ended.send_replace(Some(reason.clone()));
        }
        for tx in self.tags.values() {
            let msg = match end {
                End::Lost(reason) => Msg::SessionLost(reason.clone()),
                End::Input | End::Output | End::Signal(_) => Msg::Close,
            };
            let _ = tx.send(msg).await;
        }
        self.tags.clear();
        while self.tasks.join_next().await.is_some() {}
        while self.queries.join_next().await.is_some() {}
    }
}

/// `request`'s answer, or [`Error::SessionLost`](dlock_client::Error::SessionLost) if the
/// session is lost first (the request, dropped, is not carried into a later session).
async fn or_lost<T>(
    request: impl Future<Output = Result<T, dlock_client::Error>>,
    end: tag::SessionEnd,
) -> Result<T, dlock_client::Error> {
    tokio::select! {
        biased;
        answer = request => answer,
        _ = tag::lost_with(end) => Err(dlock_client::Error::SessionLost),
    }
}
