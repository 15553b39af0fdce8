//! The `dlock` command-line tool: how operators and shell scripts take, hold and inspect locks
//! of a dlock server. It follows the conventions of `flock(1)`, `etcdctl lock` and `consul lock`.
//!
//! ```text
//! dlock acquire [--mode MODE] [--timeout DURATION | --no-wait] [--ttl DURATION] NAME [-- COMMAND [ARGS...]]
//! dlock acquire [OPTIONS] --resource NAME [-- COMMAND [ARGS...]]    # NAME may start with '-'
//! dlock session [--ttl DURATION]                                   # commands on stdin, JSON answers on stdout
//! dlock status [PREFIX] [--json]
//! dlock status [--json] -- PREFIX                                   # PREFIX may start with '-'
//! dlock ping
//! dlock verify AUDIT_LOG...
//! dlock completions bash|zsh|fish
//! ```
//!
//! Global options: `--server ADDR` (or `DLOCK_SERVER`; default `127.0.0.1:7420`), `--name`
//! (the session name others see; default `user@host:pid`), `-v` (logs on stderr). `ADDR` is
//! `HOST:PORT` or `[IPV6]:PORT`, or several separated by commas; one that is not (no port, a
//! port outside 1..=65535, no address at all) is a usage error, exit 2, not exit 69. A
//! `DLOCK_*` variable that is set but empty counts as unset.
//!
//! # `dlock acquire`
//!
//! With a command, dlock takes the lock (mode EX unless `--mode` says otherwise), runs the
//! command with `DLOCK_TOKEN` (the fencing token), `DLOCK_RESOURCE` and `DLOCK_MODE` in its
//! environment, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM to it
//! (none of them ends dlock while the command runs), releases the lock when it exits and exits
//! with its status. If the lock is lost meanwhile (the session's lease lapsed or expired), the
//! command gets SIGTERM, then SIGKILL after `--kill-grace` (10 s), and dlock exits 75. When
//! dlock is in the foreground process group of its controlling terminal (whatever its stdin),
//! the command stays in dlock's group (it may be interactive: a password prompt reads the
//! terminal) and signals go to its process alone (except SIGINT, SIGQUIT and SIGHUP sent by
//! the terminal itself, which reach the command directly; dlock reads them from a signalfd,
//! whose `si_code` tells the terminal from `kill`); otherwise (no terminal, or a background
//! job) the command leads a process group of its own and signals go to that whole group, so
//! that its children stop too. A command that is stopped (SIGSTOP, SIGTTIN) is reported on
//! stderr: it keeps the lock while stopped.
//!
//! If dlock itself is killed (SIGKILL, the OOM killer), the command gets SIGTERM at once: it
//! is started through a shim that asks the kernel for that signal when dlock dies (see
//! [`exec`]). The lock stays held until the session's lease runs out (`--ttl`), which gives
//! the command that long to stop; a command that ignores SIGTERM runs on unprotected, and
//! fencing tokens are then the safety net.
//!
//! Without a command, dlock prints the fencing token alone on one line of stdout and holds the
//! lock until one of those signals or end of file on stdin, then releases it and exits 0.
//!
//! When the lock is not granted (`--no-wait` refused, `--timeout` expired), one line on
//! stderr names the current holders (mode, session name, for how long) and dlock exits 1 (or
//! `--conflict-exit-code`). One of those signals while waiting cancels the request and dlock
//! exits 128 + its number. `dlock acquire` is never a deadlock victim: its session waits for
//! its one lock while holding nothing, so no other session can wait for it (R39); a cycle
//! needs a session that holds and waits, which `dlock session` can be.
//!
//! # `dlock session`
//!
//! One session (`--ttl` as for acquire) driven by a line protocol on stdin, with the answers
//! and events as JSON objects, one per line on stdout, flushed after each: a script runs it
//! as a coprocess (`coproc dlock session`) or pipes a batch into it. It reaches what one lock
//! per session cannot: several locks, conversions, value blocks, blocking notifications,
//! cancel, deadlock victims.
//!
//! ```text
//! lock TAG NAME MODE [nowait | timeout=DURATION] [notify] [value]
//! convert TAG MODE [nowait | timeout=DURATION] [quecvt] [value | value=HEX | invalidate]
//! unlock TAG [value=HEX | invalidate]
//! cancel TAG
//! query TAG NAME
//! ping TAG
//! quit
//! ```
//!
//! TAG names a lock until it is released, refused or lost; every answer about it carries it:
//! `{"tag":"a","event":"granted","resource":"deploy","mode":"EX","token":12}`. The events are
//! `waiting`, `granted`, `converting`, `converted`, `refused` (with `op`, `error` and, for a
//! conversion, the mode still `held`), `unlocked`, `blocking`, `lost`, `resource` (query),
//! `pong`, and `error` for a line that could not be carried out (with its `line`); `error`
//! names are stable (`not_queued`, `timed_out`, `deadlock`, `cancelled`, `lost`, `busy`,
//! `syntax`, `no_lock`, ...). Lines are carried out in order, each once the one before has its
//! first answer; a request that waits does not hold up the lines after it (but in a server's
//! restart grace a lock request's first answer waits for the grace's end). End of input or
//! `quit` closes the session (its locks are released) and exits 0; the session lost exits 69
//! after the `lost` answers, as does a server unreachable at start. `dlock session --help`
//! has the whole protocol.
//!
//! # Exit codes
//!
//! | code  | meaning |
//! |-------|---------|
//! | 0     | success; with a command: the command exited 0 |
//! | N     | with a command: the command's own exit status |
//! | 1     | lock not acquired (`--conflict-exit-code` changes it) |
//! | 2     | usage error, or an argument the server rejects (empty or too long name, `--ttl` out of bounds) |
//! | 69    | server unreachable (before or while waiting for the lock), or a cluster without a leader (members answer `NotLeader` for 5 s: dlock waits that long for a fail-over, and not at all when no server answers); with `--timeout` or `--no-wait`, also a server that did not answer within the wait time plus 2 s, connecting included |
//! | 70    | any other error: the server over a limit or overloaded, a connection refused for too many connections or sessions from one address, a protocol error, an unreadable token file, a stdout that cannot be written (a full disk) |
//! | 75    | lock lost while held; the command was terminated |
//! | 77    | not permitted: no or a wrong token or client certificate, or the server's rules refuse the request |
//! | 126   | the command could not be executed |
//! | 127   | the command was not found |
//! | 128+N | the command (or dlock, while waiting) was killed by signal N |
//! | 141   | also: stdout is a pipe whose reader has gone (`dlock status \| head -1`); dlock stops without a word, as a program that SIGPIPE (13) kills |
//!
//! # `dlock status`
//!
//! Lists every resource whose name starts with PREFIX with its holders, converters and waiters,
//! as an aligned table or, with `--json`, as the stable JSON document described by
//! [`StatusJson`]. Ages ("for how long") are the server's: each is the server's lock-table clock
//! at the answer (`now_ms`) minus the lock's `since_ms`, both from the reply that listed the
//! lock, so neither the local clock nor the network delay enters them.
//!
//! At most `--limit` resources (1,000 by default) are listed. When more follow, stderr says so
//! and the JSON document has a `next_cursor`: `dlock status --cursor NAME` lists the resources
//! after NAME. A resource name is raw bytes, so `--cursor` also takes `hex:HEX` (the bytes in
//! hexadecimal, as `dlock session` writes names), and the hint on stderr prints that form for
//! a name that is not plain text. `next_cursor` is the name as UTF-8 text (lossy for a name
//! that is not); scripts should pass `hex:` followed by the document's `next_cursor_hex`,
//! which always goes on after exactly the last name listed.
//!
//! # `dlock verify`
//!
//! Replays a server's audit log (`dlock-server --audit-log PATH`) with the history checker of
//! `dlock-history` and checks what the server's log alone decides: compatibility of grants
//! (R7), fencing tokens strictly increasing per resource, every request answered once and
//! completed at most once, FIFO grants with no lost wake-up (R10–R13), and sessions expired
//! within their lease plus `--expiry-allowance`. The checks that need the clients' records
//! are skipped, and the output says so. Files are read oldest first; the files of one rotated
//! log (`PATH.N` .. `PATH.1`, `PATH`) are put in that order whatever order they are given in,
//! and a directory stands for its files named `audit*`. Each violation is printed with the
//! `FILE:LINE` where it was found and the lines it rests on. Exit codes: 0 the history is
//! safe, 1 a violation (or a gap: lines the server could not write), 2 a usage error or a
//! file that cannot be read, is corrupt or is not an audit log (a last line torn before its
//! newline, as a crash leaves, is skipped), or files without a single audit line (an empty
//! history proves nothing).
#![forbid(unsafe_code)]

mod acquire;
mod addr;
pub mod args;
mod child;
mod error;
pub mod exec;
pub mod format;
mod help;
mod hold;
mod ping;
mod progress;
pub mod report;
mod session;
mod session_cmd;
mod signals;
mod status;
mod stdout;
mod verify;

use std::io::Write;

use tracing_subscriber::EnvFilter;

pub use args::SessionArgs;
pub use args::{AcquireArgs, Cli, Command, CompletionsArgs, Shell, StatusArgs, VerifyArgs};
pub use error::{CliError, exit};
pub use report::{LockJson, ResourceJson, StatusJson};

/// Sends logs to stderr: none by default, `-v` info, `-vv` debug, `-vvv` trace. `DLOCK_LOG`,
/// when set, overrides the level (a tracing filter such as `dlock_client=debug`). `RUST_LOG` is
/// left alone: it is meant for the program dlock runs, whose own logs it would otherwise
/// turn into dlock's.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("DLOCK_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints what clap answered instead of a parsed command line, a usage error on stderr or
/// `--help` / `--version` on stdout, and returns its exit code: clap's (2, or 0 for help and
/// version), or that of a stdout that cannot be written (70; 141, quietly, for a closed pipe).
pub fn usage(e: clap::Error) -> u8 {
    let code = u8::try_from(e.exit_code()).unwrap_or(exit::USAGE);
    match e.print() {
        Ok(()) => code,
        // Nowhere left to say anything: stderr itself failed.
        Err(_) if e.use_stderr() => code,
        Err(io) => {
            let e = CliError::Stdout(io);
            if !e.reader_gone() {
                eprintln!("dlock: {e}");
            }
            e.exit_code()
        }
    }
}

/// Runs the parsed command line and returns dlock's exit code. Errors are reported on stderr.
pub fn run(cli: Cli) -> u8 {
    let ctx = session::Ctx::new(&cli);
    // Before the runtime starts any thread, so that every thread inherits the block.
    // Both commands that take signals through `Signals` (which reads these three from a
    // signalfd, so they must be blocked, or they would be caught and lost).
    if matches!(cli.command, Command::Acquire(_) | Command::Session(_)) {
        if let Err(e) = signals::block_terminal_signals() {
            eprintln!(
                "dlock: cannot block SIGINT, SIGQUIT and SIGHUP to read them from a signalfd: {e}"
            );
            return exit::SOFTWARE;
        }
    }
    let result = match cli.command {
        Command::Completions(c) => completions(c.shell),
        // Local files only: no server, no runtime.
        Command::Verify(v) => verify::run(&v),
        command => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async {
                match command {
                    Command::Acquire(a) => acquire::run(&ctx, a).await,
                    Command::Session(s) => session_cmd::run(&ctx, s).await,
                    Command::Status(s) => status::run(&ctx, s).await,
                    Command::Ping => ping::run(&ctx).await,
                    Command::Completions(_) | Command::Verify(_) => Ok(exit::OK),
                }
            }),
            Err(e) => Err(CliError::Io(e)),
        },
    };
    match result {
        Ok(code) => code,
        // The reader chose to stop reading (`| head`): nothing to report.
        Err(e) if e.reader_gone() => e.exit_code(),
        Err(e) => {
            eprintln!("dlock: {e}");
            let code = e.exit_code();
            if code == exit::NOPERM {
                eprintln!(
                    "dlock: the server does not accept this client's identity for this: check \
                     --token-file (DLOCK_TOKEN_FILE), --tls-cert/--tls-key and the server's rules"
                );
            }
            code
        }
    }
}

/// Writes the completion script for `shell` to stdout.
fn completions(shell: Shell) -> Result<u8, CliError> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics when its writer fails, a Vec never does.
    let mut script = Vec::new();
    clap_complete::generate(
        generator,
        &mut <Cli as clap::CommandFactory>::command(),
        "dlock",
        &mut script,
    );
    stdout::write(|out| out.write_all(&script))?;
    Ok(exit::OK)
}
