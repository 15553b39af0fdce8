//! Running a command while a lock is held: spawn, forward signals, stop it if the lock is lost.

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::CliError;
use crate::exec;
use crate::signals::{FROM_TERMINAL, Signals};

/// How a command run under a lock ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// It ended by itself (possibly after a forwarded signal), with this dlock exit code: its
    /// exit status, or 128 + N if signal N killed it.
    Exited(u8),
    /// The lock was lost while it ran; it was sent SIGTERM (and SIGKILL after the grace period)
    /// and has ended.
    LockLost,
}

/// The dlock exit code for a child's exit status: its code, or 128 + N for signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit statuses are 0..=255 on Unix.
        u8::try_from(code & 0xff).unwrap_or(u8::MAX)
    } else if let Some(sig) = status.signal() {
        128u8.saturating_add(u8::try_from(sig).unwrap_or(127))
    } else {
        u8::MAX
    }
}

/// Which processes the command's signals reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The command leads a process group of its own, and signals go to that whole group, so
    /// that on lock loss its children stop too. It cannot read from a terminal, since its
    /// group is not the terminal's foreground group.
    Own,
    /// The command stays in dlock's process group, so it can use the terminal; signals go to
    /// the command's process alone.
    Shared,
}

impl Group {
    /// [`Group::Shared`] when dlock's process group is the foreground group of its
    /// controlling terminal (the command may be interactive: it can read and write the
    /// terminal, even with dlock's stdin redirected), [`Group::Own`] otherwise (no terminal:
    /// scripts, cron, services; or a background job, which a terminal read would stop anyway).
    pub fn for_terminal() -> Group {
        match terminal_groups() {
            Some((pgrp, tpgid)) => Group::of(pgrp, tpgid),
            None => Group::Own,
        }
    }

    /// The group for a process in group `pgrp` whose controlling terminal's foreground group
    /// is `tpgid` (-1 or 0 without a controlling terminal).
    pub fn of(pgrp: i32, tpgid: i32) -> Group {
        if tpgid > 0 && pgrp == tpgid {
            Group::Shared
        } else {
            Group::Own
        }
    }
}

/// What to run under the lock.
#[derive(Debug)]
pub struct Spec<'a> {
    /// Program and arguments.
    pub argv: &'a [OsString],
    /// Variables added to its environment.
    pub env: &'a [(&'a str, OsString)],
    /// Its process group.
    pub group: Group,
    /// Time between SIGTERM and SIGKILL after the lock is lost.
    pub kill_grace: Duration,
    /// The resource, as named in messages.
    pub what: &'a str,
    /// dlock's executable, to start the command through the shim of [`crate::exec`] so that
    /// it gets SIGTERM if dlock dies; `None` starts it directly (tests of this module, which
    /// run without a dlock executable).
    pub shim: Option<&'a Path>,
}

/// Runs the command until it exits or `lost` completes.
///
/// Signals dlock receives are forwarded to the command. If `lost` completes first, its output
/// is reported on stderr, the command gets SIGTERM, and SIGKILL if it is still alive after the
/// grace period.
pub async fn run<L>(spec: &Spec<'_>, lost: L, signals: &mut Signals) -> Result<ChildEnd, CliError>
where
    L: Future,
    L::Output: Display,
{
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(CliError::Spawn {
            program: String::new(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    let mut command = match spec.shim {
        Some(exe) => {
            let mut c = Command::new(exe);
            c.arg0("dlock")
                .args(exec::shim_args(std::process::id(), spec.argv));
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    // Spawned here, on the thread that runs dlock's current-thread runtime (the main
    // thread): the shim's death signal fires when the thread that forked it ends.
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if spec.group == Group::Own {
        command.process_group(0);
    }
    // Before the spawn, so that no stop goes unseen.
    let mut child_events = signal(SignalKind::child()).map_err(CliError::Io)?;
    let spawned = match spec.shim {
        Some(_) => command.spawn(),
        None => crate::signals::spawn_unblocked(|| command.spawn()),
    };
    let mut child = spawned.map_err(|source| CliError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    // The child is reaped only by `wait` below, so neither its pid nor its process group id
    // (the same number) can be reused while we signal it.
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let send = |sig: Signal| {
        let Some(pid) = pid else { return };
        let sent = match spec.group {
            Group::Own => killpg(pid, sig),
            Group::Shared => kill(pid, sig),
        };
        if let Err(e) = sent {
            tracing::debug!(%pid, ?sig, error = %e, "could not signal the command");
        }
    };
    let what = spec.what;
    tokio::pin!(lost);
    loop {
        tokio::select! {
            // A child that has exited wins over a loss noticed at the same time: its work is done.
            biased;
            status = child.wait() => {
                return Ok(ChildEnd::Exited(exit_code(status.map_err(CliError::Io)?)));
            }
            caught = signals.recv_caught() => {
                let sig = caught.signal;
                if caught.by_kernel
                    && FROM_TERMINAL.contains(&sig)
                    && spec.group == Group::Shared
                    && in_terminal_foreground()
                {
                    // Ctrl-C, Ctrl-\ or a hang-up: the terminal sent the signal to the whole
                    // foreground process group, the command included; a second copy would
                    // look like a second Ctrl-C. One sent with kill reached dlock alone.
                    tracing::debug!(?sig, "the terminal's signal reached the command directly");
                } else {
                    tracing::debug!(?sig, "forwarding signal to the command");
                    send(sig);
                }
            }
            Some(()) = child_events.recv() => {
                if let Some(pid) = pid {
                    report_stop(pid);
                }
            }
            reason = &mut lost => {
                eprintln!(
                    "dlock: lock on {what} lost ({reason}); stopping the command with SIGTERM"
                );
                send(Signal::SIGTERM);
                let ended = tokio::select! {
                    status = child.wait() => Some(status),
                    () = tokio::time::sleep(spec.kill_grace) => None,
                };
                if ended.is_none() {
                    eprintln!(
                        "dlock: the command still runs {} after SIGTERM; sending SIGKILL",
                        humantime::format_duration(spec.kill_grace)
                    );
                    send(Signal::SIGKILL);
                    child.wait().await.map_err(CliError::Io)?;
                }
                return Ok(ChildEnd::LockLost);
            }
        }
    }
}

/// Whether dlock's process group is the foreground group of its controlling terminal. The
/// command, spawned in the same group, then receives the terminal's signals itself.
fn in_terminal_foreground() -> bool {
    Group::for_terminal() == Group::Shared
}

/// dlock's process group and the foreground process group of its controlling terminal
/// (`tcgetpgrp`; -1 without one), from `/proc/self/stat`.
fn terminal_groups() -> Option<(i32, i32)> {
    parse_groups(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `pgrp` (field 5) and `tpgid` (field 8) of a `/proc/PID/stat` line.
fn parse_groups(stat: &str) -> Option<(i32, i32)> {
    // The command name (field 2) may contain spaces and parentheses; fields after it are
    // plain numbers.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest: state ppid pgrp session tty_nr tpgid ...
    Some((fields.get(2)?.parse().ok()?, fields.get(5)?.parse().ok()?))
}

/// Says on stderr that the command was stopped, if it was: a stopped command holds the lock
/// and would make dlock wait for it without a word. Called on SIGCHLD; only stops are
/// collected here (`WSTOPPED`), exits are left for the child's own `wait`.
fn report_stop(pid: Pid) {
    let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG;
    if let Ok(WaitStatus::Stopped(_, sig)) = waitid(Id::Pid(pid), flags) {
        eprintln!("dlock: {}", stop_message(pid, sig));
    }
}

/// What dlock says when the command `pid` was stopped by `sig`.
fn stop_message(pid: Pid, sig: Signal) -> String {
    let why = match sig {
        Signal::SIGTTIN => ": it read from the terminal, which its process group does not own",
        Signal::SIGTTOU => {
            ": it wrote to or set the terminal, which its process group does not own"
        }
        _ => "",
    };
    format!(
        "the command (pid {pid}) is stopped by {sig}{why}; it holds the lock until it \
         continues (kill -CONT {pid}) or ends"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::exit_code_for;
    use std::future::pending;

    const LONG: Duration = Duration::from_secs(60);

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    /// Runs `argv` with a pending loss unless `lost` is given, bounded by [`LONG`].
    async fn go<L>(argv: &[OsString], group: Group, grace: Duration, lost: L) -> ChildEnd
    where
        L: Future,
        L::Output: Display,
    {
        let (_tx, mut sigs) = Signals::manual();
        let env = [("DLOCK_TOKEN", OsString::from("42"))];
        let spec = Spec {
            argv,
            env: &env,
            group,
            kill_grace: grace,
            what: "\"x\"",
            shim: None,
        };
        tokio::time::timeout(LONG, run(&spec, lost, &mut sigs))
            .await
            .expect("the command ends")
            .expect("the command runs")
    }

    #[test]
    fn the_command_shares_the_group_only_in_the_terminals_foreground() {
        assert_eq!(Group::of(100, 100), Group::Shared);
        // A background job, or a terminal another group owns.
        assert_eq!(Group::of(100, 200), Group::Own);
        // No controlling terminal (cron, services, setsid).
        assert_eq!(Group::of(100, -1), Group::Own);
        assert_eq!(Group::of(100, 0), Group::Own);
        let stat = "4242 (dl) ock (x)) S 1 100 100 34816 100 4194560 96 0 0 0";
        assert_eq!(parse_groups(stat), Some((100, 100)));
        let stat = "4242 (dlock) S 1 100 100 0 -1 4194560 96 0 0 0";
        assert_eq!(parse_groups(stat), Some((100, -1)));
        assert_eq!(parse_groups("garbage"), None);
    }

    #[test]
    fn a_stop_by_the_terminal_says_why() {
        let m = stop_message(Pid::from_raw(7), Signal::SIGTTIN);
        assert!(
            m.starts_with("the command (pid 7) is stopped by SIGTTIN: it read"),
            "{m}"
        );
        assert!(m.ends_with("(kill -CONT 7) or ends"), "{m}");
    }

    #[tokio::test]
    async fn exit_status_and_environment_pass_through() {
        for group in [Group::Own, Group::Shared] {
            let end = go(&sh("exit 7"), group, LONG, pending::<&str>()).await;
            assert_eq!(end, ChildEnd::Exited(7));
            let script = sh(r#"test "$DLOCK_TOKEN" = 42"#);
            let end = go(&script, group, LONG, pending::<&str>()).await;
            assert_eq!(end, ChildEnd::Exited(0));
        }
    }

    /// Without the shim, the command is spawned with the signals dlock blocks for its
    /// signalfd unblocked, and dlock's own thread has them blocked again after.
    #[test]
    fn a_command_spawned_without_the_shim_has_no_signal_blocked() {
        // A thread of its own, whose mask can be set freely, as dlock's main thread is.
        std::thread::spawn(|| {
            crate::signals::block_terminal_signals().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let argv = [
                "grep",
                "-qE",
                "^SigBlk:[[:space:]]+0+$",
                "/proc/self/status",
            ]
            .map(OsString::from);
            let end = rt.block_on(go(&argv, Group::Own, LONG, pending::<&str>()));
            assert_eq!(end, ChildEnd::Exited(0), "the command has signals blocked");
            let mask = nix::sys::signal::SigSet::thread_get_mask().unwrap();
            assert!(FROM_TERMINAL.iter().all(|&sig| mask.contains(sig)));
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn death_by_signal_is_128_plus_n() {
        let end = go(&sh("kill -KILL $$"), Group::Own, LONG, pending::<&str>()).await;
        assert_eq!(end, ChildEnd::Exited(128 + 9));
    }

    #[tokio::test]
    async fn signals_are_forwarded() {
        for group in [Group::Own, Group::Shared] {
            let (tx, mut sigs) = Signals::manual();
            tx.send(Signal::SIGTERM.into()).unwrap();
            // `exec sleep` so that the signal reaches a process with the default disposition.
            let argv = sh("exec sleep 60");
            let spec = Spec {
                argv: &argv,
                env: &[],
                group,
                kill_grace: LONG,
                what: "x",
                shim: None,
            };
            let end = tokio::time::timeout(LONG, run(&spec, pending::<&str>(), &mut sigs))
                .await
                .expect("the forwarded SIGTERM ends the command");
            assert_eq!(
                end.unwrap(),
                ChildEnd::Exited(exit_code_for(Signal::SIGTERM))
            );
        }
    }

    #[tokio::test]
    async fn lost_lock_terminates_the_command() {
        for group in [Group::Own, Group::Shared] {
            let lost = std::future::ready("lease lapsed");
            let end = go(&sh("exec sleep 60"), group, LONG, lost).await;
            assert_eq!(end, ChildEnd::LockLost);
        }
    }

    /// A future that completes once `path` exists.
    async fn exists(path: std::path::PathBuf) -> &'static str {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        "gone"
    }

    #[tokio::test]
    async fn lost_lock_terminates_the_commands_children_in_its_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let log = dir.path().join("log");
        // A grandchild that logs the SIGTERM it gets; its parent waits for it.
        let script = sh(&format!(
            "sh -c 'trap \"echo grandchild-term >> {log}; exit 0\" TERM; touch {ready}; \
             while :; do sleep 0.02; done' 2>/dev/null & wait",
            log = log.display(),
            ready = ready.display()
        ));
        let end = go(&script, Group::Own, LONG, exists(ready)).await;
        assert_eq!(end, ChildEnd::LockLost);
        let deadline = tokio::time::Instant::now() + LONG;
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("grandchild-term")) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the grandchild got no SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("trapped");
        // The loss fires only once the shell has installed its trap, so SIGTERM is ignored.
        let script = sh(&format!(
            "trap '' TERM; touch '{}'; while :; do sleep 1; done",
            marker.display()
        ));
        let end = go(
            &script,
            Group::Own,
            Duration::from_millis(200),
            exists(marker),
        )
        .await;
        assert_eq!(end, ChildEnd::LockLost);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let (_tx, mut sigs) = Signals::manual();
        let argv = [OsString::from("/nonexistent/dlock-test-program")];
        let spec = Spec {
            argv: &argv,
            env: &[],
            group: Group::Own,
            kill_grace: LONG,
            what: "x",
            shim: None,
        };
        let err = run(&spec, pending::<&str>(), &mut sigs).await.unwrap_err();
        assert_eq!(err.exit_code(), 127);
    }
}
