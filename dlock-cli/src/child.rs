//! Running a command while a lock is held: spawn, forward signals, stop it if the lock is lost.

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::error::CliError;
use crate::exec;
use crate::signals::Signals;

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
    /// [`Group::Shared`] when dlock's stdin is a terminal (the command may be interactive),
    /// [`Group::Own`] otherwise (scripts, cron, services).
    pub fn for_stdin() -> Group {
        if std::io::stdin().is_terminal() {
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
    let mut child = command.spawn().map_err(|source| CliError::Spawn {
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
            sig = signals.recv() => {
                if from_terminal(sig) && spec.group == Group::Shared && in_terminal_foreground() {
                    // Ctrl-C, Ctrl-\ or a hang-up: the terminal sent the signal to the whole
                    // foreground process group, the command included; a second copy would
                    // look like a second Ctrl-C.
                    tracing::debug!(?sig, "the terminal's signal reached the command directly");
                } else {
                    tracing::debug!(?sig, "forwarding signal to the command");
                    send(sig);
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

/// Whether a terminal sends `sig` to its whole foreground process group (Ctrl-C, Ctrl-\\,
/// hang-up).
fn from_terminal(sig: Signal) -> bool {
    matches!(sig, Signal::SIGINT | Signal::SIGQUIT | Signal::SIGHUP)
}

/// Whether dlock's process group is the foreground group of its controlling terminal, read
/// from `/proc/self/stat` (`pgrp` and `tpgid`). The command, spawned in the same group, then
/// receives the terminal's signals itself.
fn in_terminal_foreground() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // The command name (field 2) may contain spaces; fields after it are plain numbers.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest: state ppid pgrp session tty_nr tpgid ...
    match (fields.get(2), fields.get(5)) {
        (Some(pgrp), Some(tpgid)) => pgrp == tpgid,
        _ => false,
    }
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

    #[tokio::test]
    async fn death_by_signal_is_128_plus_n() {
        let end = go(&sh("kill -KILL $$"), Group::Own, LONG, pending::<&str>()).await;
        assert_eq!(end, ChildEnd::Exited(128 + 9));
    }

    #[tokio::test]
    async fn signals_are_forwarded() {
        for group in [Group::Own, Group::Shared] {
            let (tx, mut sigs) = Signals::manual();
            tx.send(Signal::SIGTERM).unwrap();
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
