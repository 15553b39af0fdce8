//! `dlock acquire`: take a lock, then run a command under it or hold it.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use dlock_client::{Client, Error as ClientError, LockGuard, LockOptions};
use tokio::time::Instant;

use crate::args::AcquireArgs;
use crate::child::{self, ChildEnd};
use crate::error::{CliError, exit, is_unreachable};
use crate::format;
use crate::hold::{self, HoldEnd};
use crate::progress;
use crate::session::{self, Ctx};
use crate::signals::{Signals, exit_code_for};
use crate::stdout;

/// Time allowed, beyond `--timeout`, to connect and hear the server's answer; with
/// `--no-wait`, all the time allowed. dlock keeps this deadline itself, so that a server that
/// stops answering (frozen, or cut off by the network) cannot hold it longer.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// How long a goodbye may take once the server has not answered in time: nothing more is
/// expected from it, and its lease ends the session anyway. Taken from the end of the budget,
/// so that dlock exits within `--timeout` plus [`ANSWER_MARGIN`] in all.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

/// The local deadline of a `dlock acquire` that bounds its wait: `--timeout` plus
/// [`ANSWER_MARGIN`], or [`ANSWER_MARGIN`] alone with `--no-wait`; none without either.
pub fn answer_budget(args: &AcquireArgs) -> Option<Duration> {
    if args.no_wait {
        Some(ANSWER_MARGIN)
    } else {
        args.timeout.map(|t| t.saturating_add(ANSWER_MARGIN))
    }
}

/// Runs `dlock acquire` and returns the exit code.
pub async fn run(ctx: &Ctx, args: AcquireArgs) -> Result<u8, CliError> {
    // Before connecting: an interrupt while waiting must cancel the request, not kill dlock.
    let mut signals = Signals::install().map_err(CliError::Io)?;
    // From before connecting: the budget covers the handshake too.
    let deadline = Deadline::new(ctx, &args);
    let client = deadline.bound(session::connect(ctx, args.ttl)).await??;
    let result = acquire_and_use(ctx, &client, &args, &mut signals, &deadline).await;
    if let (Err(CliError::NoAnswer { .. }), Some(end)) = (&result, deadline.end) {
        let _ = tokio::time::timeout_at(end, session::close(&client)).await;
    } else {
        session::close(&client).await;
    }
    result
}

/// The local deadline for getting the lock, if `--timeout` or `--no-wait` sets one.
struct Deadline {
    /// When the answer must have come: [`GOODBYE_WAIT`] before `end`.
    at: Option<Instant>,
    /// When dlock must have given up and said goodbye: the budget's end.
    end: Option<Instant>,
    /// The server address, for the error.
    addr: String,
    /// The time allowed.
    budget: Duration,
    /// The options that set it, in words.
    limit: String,
}

impl Deadline {
    fn new(ctx: &Ctx, args: &AcquireArgs) -> Deadline {
        let budget = answer_budget(args);
        let margin = humantime::format_duration(ANSWER_MARGIN);
        let limit = match args.timeout {
            _ if args.no_wait => {
                format!("--no-wait allows {margin} to connect and hear the answer")
            }
            Some(t) => format!(
                "--timeout {} plus {margin} to connect and hear the answer",
                humantime::format_duration(t)
            ),
            None => String::new(),
        };
        // A budget too far ahead for the clock (`--timeout 500000000000y`) is no deadline.
        let end = budget.and_then(|b| Instant::now().checked_add(b));
        Deadline {
            // The budget is at least ANSWER_MARGIN, longer than GOODBYE_WAIT.
            at: end.map(|end| end - GOODBYE_WAIT),
            end,
            addr: ctx.server.clone(),
            budget: budget.unwrap_or_default(),
            limit,
        }
    }

    /// `f`'s output, or [`CliError::NoAnswer`] if the deadline passes first.
    async fn bound<F: Future>(&self, f: F) -> Result<F::Output, CliError> {
        let Some(at) = self.at else {
            return Ok(f.await);
        };
        tokio::time::timeout_at(at, f)
            .await
            .map_err(|_| CliError::NoAnswer {
                addr: self.addr.clone(),
                waited: self.budget,
                limit: self.limit.clone(),
            })
    }
}

async fn acquire_and_use(
    ctx: &Ctx,
    client: &Client,
    args: &AcquireArgs,
    signals: &mut Signals,
    deadline: &Deadline,
) -> Result<u8, CliError> {
    let resource = args.resource().as_bytes();
    let what = format::quoted(resource);
    let mut opts = LockOptions::default();
    if args.no_wait {
        opts = opts.no_queue();
    }
    if let Some(t) = args.timeout {
        opts = opts.timeout(t);
    }
    let request = client.lock_with(resource, args.mode, opts);
    let granted = tokio::select! {
        r = deadline.bound(progress::wait(client, resource, args.mode, request)) => r?,
        sig = signals.recv() => {
            // Dropping the pending request cancels it on the server.
            eprintln!("dlock: interrupted while waiting for {what}");
            return Ok(exit_code_for(sig));
        }
    };
    let guard = match granted {
        Ok(guard) => guard,
        Err(e) if e.is_not_granted() => {
            // Who holds it now, with ages by the server clock of this reply.
            // Bounded: the answer only improves the message.
            let view = tokio::time::timeout(ANSWER_MARGIN, client.view_resource(resource)).await;
            let (info, now_ms) = match view {
                Ok(Ok(view)) => (view.value, view.now_ms),
                _ => (None, 0),
            };
            // Refused with nobody in the way: the one cause besides a release in between is
            // a server in its restart grace (it holds every request until the grace ends).
            let idle = info.as_ref().is_none_or(|r| {
                r.granted.is_empty() && r.converting.is_empty() && r.waiting.is_empty()
            });
            let grace = if idle && matches!(e, ClientError::NotQueued | ClientError::TimedOut) {
                "; a server in its restart grace grants nothing until the grace ends"
            } else {
                ""
            };
            let why = match e {
                ClientError::NotQueued => "(--no-wait)".to_owned(),
                ClientError::TimedOut => match args.timeout {
                    Some(t) => format!("(timed out after {})", humantime::format_duration(t)),
                    None => "(timed out)".to_owned(),
                },
                ClientError::Deadlock => "(deadlock victim)".to_owned(),
                other => format!("({other})"),
            };
            eprintln!(
                "dlock: {what} not acquired in {} {why}: {}{grace}",
                args.mode,
                format::refusal_line(info.as_ref(), args.mode, now_ms)
            );
            return Ok(args.conflict_exit_code);
        }
        Err(e) if is_unreachable(&e) => {
            return Err(CliError::Unreachable {
                addr: ctx.server.clone(),
                source: e,
            });
        }
        Err(ClientError::SessionLost) => {
            return Err(CliError::SessionLostWhileWaiting {
                addr: ctx.server.clone(),
            });
        }
        Err(source) => {
            return Err(CliError::Request {
                what: format!("{what} in {}", args.mode),
                source,
            });
        }
    };
    tracing::info!(token = %guard.token(), mode = %guard.mode(), "lock granted");
    let code = if args.command.is_empty() {
        hold_lock(&guard, &what, signals).await
    } else {
        run_command(&guard, args, &what, signals).await
    };
    if code.as_ref().is_ok_and(|c| *c == exit::LOCK_LOST) {
        drop(guard);
    } else if let Err(e) = guard.unlock().await {
        tracing::warn!(error = %e, "unlock failed; closing the session releases the lock");
    }
    code
}

/// Hold mode: print the token, hold until a signal, end of stdin, or loss.
async fn hold_lock(guard: &LockGuard, what: &str, signals: &mut Signals) -> Result<u8, CliError> {
    stdout::write(|out| writeln!(out, "{}", guard.token()))?;
    let lost = guard.lost();
    match hold::hold(lost, hold::stdin_closed(), signals).await {
        HoldEnd::LockLost(reason) => {
            eprintln!("dlock: lock on {what} lost ({reason})");
            Ok(exit::LOCK_LOST)
        }
        HoldEnd::StdinClosed | HoldEnd::Signalled(_) => Ok(exit::OK),
    }
}

/// Command mode: run it with the lock's environment; exit with its status.
async fn run_command(
    guard: &LockGuard,
    args: &AcquireArgs,
    what: &str,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let env = [
        ("DLOCK_TOKEN", OsString::from(guard.token().to_string())),
        ("DLOCK_RESOURCE", args.resource().clone()),
        ("DLOCK_MODE", OsString::from(guard.mode().to_string())),
    ];
    let spec = child::Spec {
        argv: &args.command,
        env: &env,
        group: child::Group::for_terminal(),
        kill_grace: args.kill_grace,
        what,
        shim: crate::exec::own_executable(),
    };
    match child::run(&spec, guard.lost(), signals).await? {
        ChildEnd::Exited(code) => Ok(code),
        ChildEnd::LockLost => Ok(exit::LOCK_LOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};

    fn deadline(argv: &[&str]) -> Deadline {
        let cli = Cli::parse_args(argv).unwrap();
        let Command::Acquire(args) = &cli.command else {
            panic!("not acquire: {argv:?}");
        };
        Deadline::new(&Ctx::new(&cli), args)
    }

    #[test]
    fn the_answer_is_awaited_until_the_goodbye_must_start() {
        let before = Instant::now();
        let d = deadline(&["dlock", "acquire", "-w", "1s", "x", "--", "true"]);
        let end = d.end.expect("a deadline");
        // The goodbye comes out of the budget, not after it: dlock is done within the
        // timeout plus ANSWER_MARGIN in all.
        assert_eq!(d.at, Some(end - GOODBYE_WAIT));
        assert!(end >= before + Duration::from_secs(3));
        assert!(end <= Instant::now() + Duration::from_secs(3));
        assert_eq!(deadline(&["dlock", "acquire", "x"]).end, None);
    }

    #[test]
    fn a_timeout_beyond_the_clock_is_no_deadline_not_a_panic() {
        for w in ["18446744073709551615s", "500000000000y"] {
            let d = deadline(&["dlock", "acquire", "-w", w, "x", "--", "true"]);
            assert_eq!((d.at, d.end), (None, None), "{w}");
        }
    }
}
