//! `dlock session`: one session of the server driven by command lines on stdin, with the
//! answers and events as JSON lines on stdout, so that a shell script (a `coproc`, or a batch
//! piped in) can convert locks, use value blocks, see blocking notifications, hold several
//! locks, cancel, and meet deadlocks.
//!
//! The parts: [`line`] parses commands, [`answer`] shapes the answers, [`io`] moves lines
//! in and out on threads of their own, [`tag`] runs each tag's lock as a task. This file reads
//! the lines, hands each to its tag's task (or answers it), and ends the session.

mod answer;
mod io;
mod line;
mod tag;

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{CliError, exit};
use crate::session::{self, Ctx};
use crate::signals::{Signals, exit_code_for};

use answer::{Answer, Event};
use io::{Input, Out};
use line::{Command, Tag};
use tag::{TagCmd, TagCtx};

/// The most tags one `dlock session` keeps; a `lock` with a new tag beyond them is answered
/// with `too_many_tags`. (The server has its own limit on locks per session.)
pub const MAX_TAGS: usize = 4096;

/// The most `query` and `ping` commands in flight at once; the next line waits for one.
const MAX_QUERIES: usize = 64;

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
Reads one command per line on stdin and answers each with JSON objects, one per line on
stdout (flushed after each line). Commands run concurrently: a request that waits does not
hold up the lines after it. TAG (1-64 letters, digits, '_' or '-') names a lock from its
`lock` until it is unlocked, refused or lost; then the tag is free again. For query and ping
the tag only labels the answer.

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
    tags: HashMap<Tag, mpsc::Sender<TagCmd>>,
    tasks: JoinSet<()>,
    queries: JoinSet<()>,
    lost_tx: mpsc::Sender<String>,
    lost_rx: mpsc::Receiver<String>,
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
        }
    }

    /// Reads and carries out lines until the session ends, and says why.
    async fn drive(&mut self, mut input: mpsc::Receiver<Input>, signals: &mut Signals) -> End {
        loop {
            // Reap finished queries so that the set stays small.
            while self.queries.try_join_next().is_some() {}
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
            match line::parse(&bytes) {
                Ok(None) => {}
                Ok(Some(Command::Quit)) => return End::Input,
                Ok(Some(cmd)) => self.dispatch(n, cmd).await,
                Err(bad) => {
                    let event = Event::error(n, "syntax", bad.message);
                    self.say(bad.tag.as_ref(), event).await;
                }
            }
        }
    }

    async fn say(&self, tag: Option<&Tag>, event: Event) {
        let tag = tag.map(Tag::to_string);
        self.out.send(Answer { tag, event }).await;
    }

    /// Hands a command to its tag's task, or carries out a query or ping.
    async fn dispatch(&mut self, n: u64, cmd: Command) {
        let (tag, cmd) = match cmd {
            Command::Lock(tag, lock) => {
                if !self.tags.contains_key(&tag) && !self.start_tag(n, &tag).await {
                    return;
                }
                (tag, TagCmd::Lock(n, lock))
            }
            Command::Convert(tag, c) => (tag, TagCmd::Convert(n, c)),
            Command::Unlock(tag, value) => (tag, TagCmd::Unlock(n, value)),
            Command::Cancel(tag) => (tag, TagCmd::Cancel(n)),
            Command::Query(tag, resource) => return self.query(n, tag, resource).await,
            Command::Ping(tag) => return self.ping(n, tag).await,
            // Handled by the caller.
            Command::Quit => return,
        };
        match self.tags.get(&tag) {
            // A closed channel: the task ended with the session, which is ending.
            Some(tx) => {
                let _ = tx.send(cmd).await;
            }
            None => {
                let msg = format!("no lock is tagged {tag}");
                self.say(Some(&tag), Event::error(n, "no_lock", msg)).await;
            }
        }
    }

    /// Starts the task of a new tag; `false` (answered) if there are too many.
    async fn start_tag(&mut self, n: u64, tag: &Tag) -> bool {
        if self.tags.len() >= MAX_TAGS {
            let msg = format!("at most {MAX_TAGS} tags per session");
            self.say(Some(tag), Event::error(n, "too_many_tags", msg)).await;
            return false;
        }
        let (tx, rx) = mpsc::channel(tag::TAG_QUEUE);
        let ctx = TagCtx {
            tag: tag.clone(),
            client: self.client.clone(),
            out: self.out.clone(),
            lost: self.lost_tx.clone(),
        };
        self.tasks.spawn(tag::run(ctx, rx));
        self.tags.insert(tag.clone(), tx);
        true
    }

    /// Waits for a query slot, then runs `work` as a task of its own.
    async fn spawn_query<F>(&mut self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.queries.len() >= MAX_QUERIES {
            let _ = self.queries.join_next().await;
        }
        self.queries.spawn(work);
    }

    async fn query(&mut self, n: u64, tag: Tag, resource: Vec<u8>) {
        let (client, out) = (self.client.clone(), self.out.clone());
        self.spawn_query(async move {
            let event = match client.view_resource(&resource).await {
                Ok(view) => Event::resource(&resource, view.value.as_ref(), view.now_ms),
                Err(e) => Event::failed(n, &e),
            };
            out.send(Answer::about(&tag, event)).await;
        })
        .await;
    }

    async fn ping(&mut self, n: u64, tag: Tag) {
        let (client, out) = (self.client.clone(), self.out.clone());
        self.spawn_query(async move {
            let event = match client.ping().await {
                Ok(pong) => Event::Pong {
                    server_version: pong.server_version,
                    rtt_ms: pong.rtt.as_secs_f64() * 1000.0,
                },
                Err(e) => Event::failed(n, &e),
            };
            out.send(Answer::about(&tag, event)).await;
        })
        .await;
    }

    /// Ends every task: each answers what the end means for its lock, then stops. Commands
    /// already handed to a task are carried out first (its channel is FIFO), so every line
    /// read before the end gets its first answer.
    async fn stop(&mut self, end: &End) {
        for tx in self.tags.values() {
            let cmd = match end {
                End::Lost(reason) => TagCmd::SessionLost(reason.clone()),
                End::Input | End::Output | End::Signal(_) => TagCmd::Close,
            };
            let _ = tx.send(cmd).await;
        }
        self.tags.clear();
        while self.tasks.join_next().await.is_some() {}
        while self.queries.join_next().await.is_some() {}
    }
}
