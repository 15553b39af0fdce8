//! Running a command while a lock is held: spawn, forward signals, stop it if the lock is lost.

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::error::CliError;
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

/// Runs `argv` with `env` added to its environment until it exits or `lost` completes.
///
/// Signals dlock receives are forwarded to the child. If `lost` completes first, its output is
/// reported on stderr (naming `what`), the child gets SIGTERM, and SIGKILL if it is still alive
/// after `kill_grace`.
pub async fn run<L>(
    argv: &[OsString],
    env: &[(&str, OsString)],
    lost: L,
    kill_grace: Duration,
    signals: &mut Signals,
    what: &str,
) -> Result<ChildEnd, CliError>
where
    L: Future,
    L::Output: Display,
{
    let Some((program, args)) = argv.split_first() else {
        return Err(CliError::Spawn {
            program: String::new(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|source| CliError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    // The child is reaped only by `wait` below, so its pid cannot be reused while we signal it.
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let send = |sig: Signal| {
        if let Some(pid) = pid {
            if let Err(e) = kill(pid, sig) {
                tracing::debug!(%pid, ?sig, error = %e, "could not signal the command");
            }
        }
    };
    tokio::pin!(lost);
    loop {
        tokio::select! {
            // A child that has exited wins over a loss noticed at the same time: its work is done.
            biased;
            status = child.wait() => {
                return Ok(ChildEnd::Exited(exit_code(status.map_err(CliError::Io)?)));
            }
            sig = signals.recv() => {
                if sig == Signal::SIGINT && in_terminal_foreground() {
                    // Ctrl-C: the terminal sent SIGINT to the whole foreground process group,
                    // the command included; a second copy would look like a second Ctrl-C.
                    tracing::debug!("SIGINT from the terminal reached the command directly");
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
                    () = tokio::time::sleep(kill_grace) => None,
                };
                if ended.is_none() {
                    eprintln!(
                        "dlock: the command still runs {} after SIGTERM; sending SIGKILL",
                        humantime::format_duration(kill_grace)
                    );
                    send(Signal::SIGKILL);
                    child.wait().await.map_err(CliError::Io)?;
                }
                return Ok(ChildEnd::LockLost);
            }
        }
    }
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

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn exit_status_passes_through() {
        let (_tx, mut sigs) = Signals::manual();
        let end = run(&sh("exit 7"), &[], pending::<&str>(), LONG, &mut sigs, "x").await;
        assert_eq!(end.unwrap(), ChildEnd::Exited(7));
    }

    #[tokio::test]
    async fn environment_is_passed() {
        let (_tx, mut sigs) = Signals::manual();
        let env = [("DLOCK_TOKEN", OsString::from("42"))];
        let script = sh(r#"test "$DLOCK_TOKEN" = 42"#);
        let end = run(&script, &env, pending::<&str>(), LONG, &mut sigs, "x").await;
        assert_eq!(end.unwrap(), ChildEnd::Exited(0));
    }

    #[tokio::test]
    async fn death_by_signal_is_128_plus_n() {
        let (_tx, mut sigs) = Signals::manual();
        let end = run(
            &sh("kill -KILL $$"),
            &[],
            pending::<&str>(),
            LONG,
            &mut sigs,
            "x",
        )
        .await;
        assert_eq!(end.unwrap(), ChildEnd::Exited(128 + 9));
    }

    #[tokio::test]
    async fn signals_are_forwarded() {
        let (tx, mut sigs) = Signals::manual();
        tx.send(Signal::SIGTERM).unwrap();
        // `exec sleep` so that the signal reaches a process with the default disposition.
        let end = tokio::time::timeout(
            LONG,
            run(
                &sh("exec sleep 60"),
                &[],
                pending::<&str>(),
                LONG,
                &mut sigs,
                "x",
            ),
        )
        .await
        .expect("the forwarded SIGTERM ends the command");
        assert_eq!(
            end.unwrap(),
            ChildEnd::Exited(exit_code_for(Signal::SIGTERM))
        );
    }

    #[tokio::test]
    async fn lost_lock_terminates_the_command() {
        let (_tx, mut sigs) = Signals::manual();
        let lost = std::future::ready("lease lapsed");
        let end = tokio::time::timeout(
            LONG,
            run(&sh("exec sleep 60"), &[], lost, LONG, &mut sigs, "x"),
        )
        .await
        .expect("SIGTERM ends the command");
        assert_eq!(end.unwrap(), ChildEnd::LockLost);
    }

    #[tokio::test]
    async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
        let (_tx, mut sigs) = Signals::manual();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("trapped");
        // The loss fires only once the shell has installed its trap, so SIGTERM is ignored.
        let lost = {
            let marker = marker.clone();
            async move {
                while !marker.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                "gone"
            }
        };
        let script = sh(&format!(
            "trap '' TERM; touch '{}'; while :; do sleep 1; done",
            marker.display()
        ));
        let end = tokio::time::timeout(
            LONG,
            run(
                &script,
                &[],
                lost,
                Duration::from_millis(200),
                &mut sigs,
                "x",
            ),
        )
        .await
        .expect("SIGKILL ends the command");
        assert_eq!(end.unwrap(), ChildEnd::LockLost);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let (_tx, mut sigs) = Signals::manual();
        let argv = [OsString::from("/nonexistent/dlock-test-program")];
        let err = run(&argv, &[], pending::<&str>(), LONG, &mut sigs, "x")
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 127);
    }
}
