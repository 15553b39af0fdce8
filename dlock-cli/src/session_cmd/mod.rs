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
use std::time::Duration;

use clap::Args;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

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

/// Arguments of `dlock session`.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// Session lease: if dlock cannot reach the server for this long, the session and its
    /// locks are lost (default: the server's, normally 10s).
    #[arg(long, value_parser = crate::args::parse_lease, value_name = "DURATION")]
    pub ttl: Option<Duration>,
}

/// The text after `dlock session --help`: the protocol, an example, the exit codes.
pub const AFTER_HELP: &str = "\
Reads one command per line on stdin and answers with JSON objects, one per line on stdout
(flushed after each). Lines are carried out in order, each once the one before has its first
answer (granted, waiting, refused, converting, ...), but a request that waits does not hold
up the lines after it: its outcome is answered when it comes. TAG (1-64 letters, digits, '_'
or '-') names a lock from its `lock` until it is unlocked, refused or lost; then the tag is
free again. For query and ping the tag only labels the answer.

Commands:
  lock TAG NAME MODE [nowait | timeout=DURATION] [notify] [value]
        request a lock; notify: report blocking notifications; value: read the value block
  convert TAG MODE [nowait | timeout=DURATION] [quecvt] [value | value=HEX | invalidate]
        convert it up or down; value reads the value block, value=HEX writes it and
        invalidate marks it not valid (both on a conversion down from PW or EX)
  unlock TAG [value=HEX | invalidate]
        release it, writing the value block or marking it not valid (from PW or EX)
  cancel TAG      cancel its waiting request or conversion
  query TAG NAME  the resource's holders, converters, waiters and value block
  ping TAG        the server's version and the round trip
  quit            close the session (as end of input does)
MODE is NL, CR, CW, PR, PW or EX. NAME is printable ASCII without blanks, or hex:HEX for any
other name (the answers show names the same way). Blank lines and lines starting with # are
ignored.

Answers: {\"tag\": TAG, \"event\": EVENT, ...}
  waiting     the request is queued: resource, mode
  granted     resource, mode, token (the fencing token); value (hex), value_valid with value
  converting  the conversion is queued: mode (asked for), held (kept meanwhile)
  converted   mode, token; value, value_valid when read
  refused     not granted: op (lock or convert), error, message; held (a conversion's lock
              keeps this mode)
  unlocked    released
  blocking    another request waits for mode, which this lock blocks (locks taken with notify)
  lost        the session is gone, and the lock with it: reason
  resource    the answer to query (the shape of one resource of dlock status --json)
  pong        the answer to ping: server_version, rtt_ms
  error       a line that could not be carried out: line, error, message (no tag if the line
              has none); the session goes on
Error names: not_queued, timed_out, deadlock (this request was chosen as the victim of a
deadlock), cancelled, lost, not_found, busy, not_pending, invalid, limit, not_permitted,
unavailable, overloaded, too_large, failed; and for lines: syntax, no_lock, tag_in_use,
too_many_tags.

Example (bash):
  coproc DL { dlock session; }
  echo 'lock a deploy EX' >&\"${DL[1]}\"
  read -r answer <&\"${DL[0]}\"   # {\"tag\":\"a\",\"event\":\"granted\",\"resource\":\"deploy\",\"mode\":\"EX\",\"token\":7}
  echo 'convert a PR' >&\"${DL[1]}\"; read -r answer <&\"${DL[0]}\"   # ...\"converted\"...
  echo quit >&\"${DL[1]}\"; wait $DL_PID

Exit codes:
  0      end of input or quit: the session was closed, releasing its locks
  2      usage error on the command line
  69     server unreachable at start, or the session lost (after the lost answers)
  70     stdout cannot be written, or another error at start
  141    stdout is a pipe whose reader has gone (as a program SIGPIPE kills)
  77     not permitted: no or a wrong credential
  128+N  ended by signal N (SIGINT, SIGTERM, SIGHUP, ...); the session was closed";

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
            kept: tag::Kept::default(),
        }
    }

    /// Reads and carries out lines until the session ends, and says why.
    async fn drive(&mut self, mut input: mpsc::Receiver<Input>, signals: &mut Signals) -> End {
        loop {
            // Biased: a loss or a signal ends the session before any further line is read.
            let (n, bytes) = tokio::select! {
                biased;
                sig = signals.recv() => return End::Signal(sig),
                Some(reason) = self.lost_rx.recv() => return End::Lost(reason),
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
            keep: self.kept.clone(),
        };
        self.tasks.spawn(tag::run(ctx, rx));
        self.tags.insert(tag.clone(), tx);
        true
    }

    /// `query`, as a task of its own: a signal need not wait for its answer.
    fn query(&mut self, n: u64, tag: Tag, resource: Vec<u8>, done: Done) {
        let (client, out) = (self.client.clone(), self.out.clone());
        self.queries.spawn(async move {
            let event = match client.view_resource(&resource).await {
                Ok(view) => Event::resource(&resource, view.value.as_ref(), view.now_ms),
                Err(e) => Event::failed(n, &e),
            };
            out.send(Answer::about(&tag, event)).await;
            drop(done);
        });
    }

    /// `ping`, as a task of its own.
    fn ping(&mut self, n: u64, tag: Tag, done: Done) {
        let (client, out) = (self.client.clone(), self.out.clone());
        self.queries.spawn(async move {
            let event = match client.ping().await {
                Ok(pong) => Event::Pong {
                    server_version: pong.server_version,
                    rtt_ms: pong.rtt.as_secs_f64() * 1000.0,
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
