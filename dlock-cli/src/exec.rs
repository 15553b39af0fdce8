//! The shim that ties the command's life to dlock's: `dlock __exec --parent PID -- COMMAND...`.
//!
//! dlock does not start the command directly but runs its own executable with this hidden
//! subcommand. The shim asks the kernel for SIGTERM when its parent dies
//! (`PR_SET_PDEATHSIG`), checks that its parent is still the dlock that started it, and then
//! replaces itself with the command (`exec`, same process id), which keeps the death signal
//! (the kernel clears it only for set-user-ID and set-group-ID programs or ones with file
//! capabilities). So a dlock that is SIGKILLed (kill -9, the OOM killer) cannot leave its
//! command running without the lock.
//!
//! The death signal fires when the *thread* that forked the child ends, not the process: the
//! command is spawned from the thread that runs dlock's current-thread runtime, the main
//! thread, which lives as long as dlock.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

use crate::error::{CliError, exit};

/// The hidden subcommand's name; it is not a clap subcommand, so no help lists it.
pub const SUBCOMMAND: &str = "__exec";

/// The executable the shim runs from: dlock's own, through `/proc/self/exe`, which still works
/// when the file was replaced or removed (a package upgrade) while dlock waited for the lock.
/// `None` where `/proc` is not mounted (some chroots and sandboxes): the command is then
/// started directly, without the death signal, rather than not at all.
pub fn own_executable() -> Option<&'static Path> {
    let exe = Path::new("/proc/self/exe");
    exe.exists().then_some(exe)
}

/// The arguments that make dlock's executable run `argv` through the shim, as a child of the
/// process `parent`.
pub fn shim_args(parent: u32, argv: &[OsString]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        SUBCOMMAND.into(),
        "--parent".into(),
        parent.to_string().into(),
        "--".into(),
    ];
    args.extend(argv.iter().cloned());
    args
}

/// If dlock was started as the shim (`args` is its whole command line, program name first),
/// runs it: returns only if the command could not be started, with dlock's exit code for
/// that (the message is already on stderr). `None` for any other command line.
pub fn run_if_asked(args: &[OsString]) -> Option<u8> {
    if args.get(1).is_none_or(|a| a != SUBCOMMAND) {
        return None;
    }
    let Some((parent, argv)) = parse(&args[2..]) else {
        eprintln!("dlock: {SUBCOMMAND} is internal: {SUBCOMMAND} --parent PID -- COMMAND...");
        return Some(exit::USAGE);
    };
    Some(exec(parent, argv))
}

/// `--parent PID -- PROGRAM [ARGS...]`.
fn parse(args: &[OsString]) -> Option<(Pid, &[OsString])> {
    match args {
        [flag, pid, dashes, argv @ ..] if flag == "--parent" && dashes == "--" => {
            let pid = pid.to_str()?.parse::<i32>().ok().filter(|p| *p > 0)?;
            (!argv.is_empty()).then_some((Pid::from_raw(pid), argv))
        }
        _ => None,
    }
}

/// Arms the death signal, checks the parent, and replaces this process with `argv`.
fn exec(parent: Pid, argv: &[OsString]) -> u8 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        eprintln!("dlock: cannot tie the command to dlock's life: {e}");
        return exit::SOFTWARE;
    }
    // Checked after arming: a parent that dies from now on sends the signal; one that died
    // before left this process to a reaper, and the lock is going with it.
    let ppid = getppid();
    if ppid != parent {
        eprintln!(
            "dlock: dlock (pid {parent}) ended before the command could start; not running it"
        );
        return exit::LOCK_LOST;
    }
    // dlock blocks SIGINT, SIGQUIT and SIGHUP to read them from a signalfd, and this process
    // inherited that: the command starts with no signal blocked, as any spawned process does.
    if let Err(e) = crate::signals::clear_mask() {
        eprintln!("dlock: cannot clear the command's signal mask: {e}");
        return exit::SOFTWARE;
    }
    let (program, args) = argv.split_first().expect("parse requires a program");
    // std's exec rather than a bare execvp: the same program lookup and the same reset of
    // SIGPIPE (which Rust programs ignore) as the spawn it replaces.
    let source = std::process::Command::new(program).args(args).exec();
    let e = CliError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    };
    eprintln!("dlock: {e}");
    e.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn other_command_lines_are_not_the_shim() {
        assert_eq!(run_if_asked(&os(&["dlock", "acquire", "x"])), None);
        assert_eq!(run_if_asked(&os(&["dlock"])), None);
    }

    #[test]
    fn shim_arguments_round_trip() {
        let argv = os(&["sh", "-c", "exit 3", "--"]);
        let args = shim_args(42, &argv);
        assert_eq!(args[0], SUBCOMMAND);
        let (pid, got) = parse(&args[1..]).unwrap();
        assert_eq!(pid, Pid::from_raw(42));
        assert_eq!(got, &argv[..]);
    }

    #[test]
    fn malformed_shim_lines_are_refused() {
        for bad in [
            &["--parent", "42", "--"][..],
            &["--parent", "x", "--", "true"],
            &["--parent", "0", "--", "true"],
            &["--parent", "42", "true"],
            &["42", "--", "true"],
        ] {
            assert!(parse(&os(bad)).is_none(), "{bad:?}");
        }
        assert_eq!(
            run_if_asked(&os(&["dlock", SUBCOMMAND, "--", "true"])),
            Some(exit::USAGE)
        );
    }
}
