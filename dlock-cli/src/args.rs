//! Command-line arguments (clap derive) and the help texts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use dlock_client::Mode;

use crate::addr::parse_server_list;

/// The server address used when neither `--server` nor `DLOCK_SERVER` is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7420";

/// The exit codes, as shown at the end of `dlock --help` and `dlock acquire --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0      success; with a command: the command exited 0
  N      with a command: the command's own exit status
  1      lock not acquired: refused by --no-wait or --timeout expired (changed with
         --conflict-exit-code). dlock acquire is never chosen as a deadlock victim: its
         session waits for one lock while holding none. Deadlocks need a session that
         holds and waits, as dlock session can: it answers the victim's request with
         \"error\":\"deadlock\" and goes on (its exit codes: dlock session --help)
  2      usage error, or an argument the server rejects (an empty or too long name,
         a --ttl outside its bounds)
  69     server unreachable (also when it stays unreachable for a whole lease while
         waiting for the lock), or a cluster without a leader: members answer that
         they do not lead for 5 s (dlock waits that long for a fail-over); with
         --timeout or --no-wait, also a server that did not answer within the wait
         time plus 2 s, connecting included (frozen, or cut off by the network)
  70     internal or protocol error, or a stdout that cannot be written
  77     not permitted: no or a wrong credential (token, client certificate), or the
         server's rules do not allow this identity to do this
  75     lock lost while held (lease lapsed or session expired); the command was
         sent SIGTERM (SIGKILL after --kill-grace)
  126    the command could not be executed
  127    the command was not found
  128+N  the command was killed by signal N; 141 (SIGPIPE) also when stdout is a
         pipe whose reader has gone (dlock ... | head), and dlock says nothing";

const ROOT_AFTER_HELP: &str = "\
Examples:
  # Run a command while holding an exclusive lock on \"backup\":
  dlock acquire backup -- ./backup.sh
  # Shared (PR) lock, give up after 30 s of waiting:
  dlock acquire --mode PR --timeout 30s config -- cat /etc/app.conf
  # Skip this run if another holds the lock:
  dlock acquire --no-wait cron.nightly -- ./job
  # Print the fencing token and hold the lock until Ctrl-D or Ctrl-C:
  dlock acquire db
  # Every lock with its holders and waiters; as JSON for names starting with \"jobs.\":
  dlock status
  dlock status --json jobs.
  # Several locks in one session, conversions, value blocks, from a script (JSON answers):
  coproc DL { dlock session; }; echo 'lock a deploy EX' >&\"${DL[1]}\"
  # Server version and round-trip time:
  dlock ping
  # Check a server's audit log (rotated files included) against the locking rules:
  dlock verify /var/log/dlock/audit.jsonl*
  # Shell completions:
  dlock completions bash > ~/.local/share/bash-completion/completions/dlock";

const ACQUIRE_AFTER_HELP: &str = "\
With a command, dlock takes the lock, runs the command with DLOCK_TOKEN (the fencing
token), DLOCK_RESOURCE and DLOCK_MODE in its environment, forwards SIGINT, SIGTERM,
SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM to it (dlock itself stays to release the
lock), releases the lock when it exits, and exits with its exit status. If the lock is lost
while the command runs, the command gets SIGTERM (SIGKILL after --kill-grace) and dlock
exits 75. When dlock runs in the foreground of a terminal (even with stdin redirected),
the command shares dlock's process group so that it can use the terminal (a password
prompt), and signals reach the command's process only (a Ctrl-C typed at the terminal
reaches it directly, so dlock does not send a second SIGINT; the same for Ctrl-\\ and a
hang-up; the same signals sent to dlock with kill are forwarded). Otherwise (no
terminal: scripts, cron, services; or a background job) the command runs in a process
group of its own and these signals reach its children too. If the command is stopped
(SIGSTOP, or SIGTTIN when it reads a terminal its group does not own), dlock says so on
stderr; it keeps the lock until the command continues or ends.

If dlock itself is killed (kill -9, the OOM killer), the command gets SIGTERM at once.
The lock stays held until the session's lease runs out (--ttl), which gives the command
that long to stop; a command that ignores SIGTERM runs on without the lock, and then only
fencing tokens (DLOCK_TOKEN, checked by the resource) protect the resource.

Without a command, dlock prints the fencing token alone on one line of stdout and holds
the lock until it receives one of those signals or its standard input reaches end of file.
A '--' with nothing after it (an empty \"$@\" in a wrapper script) is a usage error, not
this form.

If the lock is not granted, one line on stderr names who holds it, and dlock exits 1.
While waiting with stderr on a terminal, a status line shows who holds the lock and the
place in the queue. One of those signals while waiting cancels the request, and dlock exits
128 + its number.

Examples:
  # One deployment at a time:
  dlock acquire deploy -- ./deploy.sh
  # Shared lock; wait at most 10 s; the command sees its fencing token:
  dlock acquire -m PR -w 10s reports -- sh -c 'echo \"token $DLOCK_TOKEN\"; ./report'
  # Exit 0 instead of 1 when another holds the lock:
  dlock acquire -n -E 0 cron.hourly -- ./job
  # A resource name that starts with '-' (NAME would be taken for an option):
  dlock acquire --resource -nightly -- ./job
  # Hold a lock across several steps of a bash script:
  coproc LOCK { dlock acquire maintenance; }
  read -r TOKEN <&\"${LOCK[0]}\"            # returns once the lock is held
  ./step1 && ./step2
  eval \"exec ${LOCK[1]}>&-\"; wait $LOCK_PID  # end of stdin: released
";

const STATUS_AFTER_HELP: &str = "\
Examples:
  dlock status
  dlock status jobs.
  dlock status -- -nightly      # a prefix that starts with '-'
  dlock status --json | jq -r '.resources[].holders[].session_name'

JSON shape (stable): {\"resources\": [{\"name\", \"value_valid\", \"holders\", \"converting\",
\"waiting\"}]} where each lock is {\"lock\", \"session\", \"session_name\", \"mode\",
\"requested_mode\", \"token\", \"since_ms\", \"for_ms\"}. \"mode\" is the granted mode (null while
waiting), \"requested_mode\" the mode waited for (null for holders), \"token\" the fencing
token of the latest grant (null while waiting), \"since_ms\" the server clock when the lock
entered its state and \"for_ms\" how long ago that was, by the server clock of the same reply
(\"now_ms\" at the top level). The same document as the server's HTTP /api/resources.";

const PING_AFTER_HELP: &str = "\
Example:
  $ dlock ping
  server 127.0.0.1:7420, version dlock-server 0.1.0, round trip 0.23 ms";

const VERIFY_AFTER_HELP: &str = "\
dlock verify replays a server's audit log (dlock-server --audit-log PATH) and checks what
the server decided: no two incompatible locks granted at once (R7); fencing tokens strictly
increasing per resource, also across restarts; every request answered once and completed
at most once; grants in FIFO order with no waiter left queued when it could be granted
(R10-R13); sessions expired no earlier than their lease and no later than the lease plus
--expiry-allowance. Whether a client saw its lock lost before another was granted it needs
the clients' own records: that is not checked, and the output says so.

Give the files oldest first. A rotated log is PATH.N .. PATH.2 PATH.1 PATH; the files of one
rotated log are put in that order whatever order they are given in, so a shell glob
(audit.jsonl*) works. Logs that are not one rotated log (one file per server lifetime, say)
are read in the order given. A directory stands for the files in it whose names begin with
\"audit\". When the oldest files are gone (--audit-log-keep), the history begins in the
middle of a server lifetime: locks and sessions from before it are not judged, and the
output says so. Each violation is printed with the FILE:LINE where it was found and the lines it
rests on (the grants in conflict, the grant of the earlier token). A Gap line (audit lines the
server could not write) is reported too: nothing after it can be judged soundly.

Examples:
  dlock verify audit.jsonl.2 audit.jsonl.1 audit.jsonl
  dlock verify /var/log/dlock/audit.jsonl*
  dlock verify /var/log/dlock/

Exit codes:
  0  the history is safe
  1  a violation was found (or the history has a gap)
  2  usage error, or a file that cannot be read, is corrupt or is not an audit log
     (a last line torn before its newline, as a crash leaves, is skipped), or files
     that hold no audit line at all (an empty file: most likely the wrong path)";

const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  dlock completions bash > ~/.local/share/bash-completion/completions/dlock
  dlock completions zsh > ~/.zfunc/_dlock
  dlock completions fish > ~/.config/fish/completions/dlock.fish";

/// `dlock`: take, hold and inspect dlock locks from the shell.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "dlock",
    version,
    about = "Take, hold and inspect locks of a dlock server",
    long_about = "Take, hold and inspect locks of a dlock server, a distributed lock manager with \
the semantics of the VMS / Linux DLM (modes NL, CR, CW, PR, PW, EX).\n\n\
Like flock(1), `dlock acquire NAME -- COMMAND` runs a command while holding a lock, and \
passes it a fencing token.",
    after_help = ROOT_AFTER_HELP,
    after_long_help = format!("{ROOT_AFTER_HELP}\n\n{EXIT_CODES_HELP}")
)]
pub struct Cli {
    /// Server address (host:port, or `[IPv6]:port`), or several separated by commas
    /// (host:port,host:port,...), tried in turn until one takes the session. Blanks around an
    /// address and empty entries (a trailing comma) are ignored. Like every DLOCK_* variable,
    /// an empty DLOCK_SERVER counts as unset.
    #[arg(long, global = true, env = "DLOCK_SERVER", help_heading = "Global options", default_value = DEFAULT_SERVER, value_name = "ADDR[,ADDR...]", value_parser = parse_server_list)]
    pub server: String,

    /// Session name shown to others in `dlock status` (default: user@host:pid); at most 256
    /// bytes on a server with default settings, a longer one is refused (exit 2).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Global options"
    )]
    pub name: Option<String>,

    /// Connect over TLS, trusting the CA certificates in this PEM file.
    #[arg(
        long,
        global = true,
        env = "DLOCK_TLS_CA",
        value_name = "FILE",
        help_heading = "Security options"
    )]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Connect over TLS, trusting the system's CA certificates (the default when another
    /// --tls-* option is given without --tls-ca).
    #[arg(
        long,
        global = true,
        env = "DLOCK_TLS_SYSTEM_ROOTS",
        value_parser = clap::builder::BoolishValueParser::new(),
        help_heading = "Security options"
    )]
    pub tls_system_roots: bool,

    /// Check the server's certificate for this name instead of the host of --server.
    #[arg(
        long,
        global = true,
        env = "DLOCK_TLS_SERVER_NAME",
        value_name = "NAME",
        help_heading = "Security options"
    )]
    pub tls_server_name: Option<String>,

    /// Client certificate (PEM) for servers that require one (mutual TLS); needs --tls-key.
    #[arg(
        long,
        global = true,
        env = "DLOCK_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "Security options"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "DLOCK_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Security options"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// File whose first line is the token proving this client's identity to a server that
    /// authenticates clients (dlock-server --auth-file).
    #[arg(
        long,
        global = true,
        env = "DLOCK_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Security options"
    )]
    pub token_file: Option<std::path::PathBuf>,

    /// Log to stderr (-v info, -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Take a lock; run a command under it, or print its token and hold it.
    #[command(
        override_usage = "dlock acquire [OPTIONS] <NAME | --resource NAME> [-- <COMMAND>...]",
        after_help = ACQUIRE_AFTER_HELP,
        after_long_help = format!("{ACQUIRE_AFTER_HELP}{EXIT_CODES_HELP}")
    )]
    Acquire(AcquireArgs),
    /// Drive one session with command lines on stdin (lock, convert, unlock, cancel, ...);
    /// JSON answers on stdout.
    #[command(after_help = crate::session_cmd::AFTER_HELP)]
    Session(crate::session_cmd::SessionArgs),
    /// Show locks: holders, converters and waiters of every resource (or of a name prefix).
    #[command(after_help = STATUS_AFTER_HELP)]
    Status(StatusArgs),
    /// Check the server: address, version, round-trip time.
    #[command(after_help = PING_AFTER_HELP)]
    Ping,
    /// Check a server's audit log: no incompatible grants, tokens increasing, FIFO, ...
    #[command(after_help = VERIFY_AFTER_HELP)]
    Verify(VerifyArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),
}

/// Arguments of `dlock acquire`.
#[derive(Args, Debug, Clone)]
pub struct AcquireArgs {
    /// Lock mode: NL, CR, CW, PR (shared read), PW, EX (exclusive); case-insensitive.
    #[arg(short, long, default_value = "EX", value_parser = parse_mode, value_name = "MODE")]
    pub mode: Mode,

    /// Give up after waiting this long, e.g. 500ms, 30s, 2m (default: wait without limit).
    /// dlock also keeps the deadline itself: a server that has not answered 2 s after it
    /// (connecting included) is given up on, exit 69.
    #[arg(short = 'w', long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Do not wait: fail at once if the lock cannot be granted now. A server that has not
    /// answered within 2 s (connecting included) is given up on, exit 69.
    #[arg(short, long, conflicts_with = "timeout")]
    pub no_wait: bool,

    /// Session lease: if dlock cannot reach the server for this long, the lock is lost
    /// (default: the server's, normally 10s).
    #[arg(long, value_parser = parse_lease, value_name = "DURATION")]
    pub ttl: Option<Duration>,

    /// After the lock is lost, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub kill_grace: Duration,

    /// Exit code when the lock is not acquired (as `flock -E`).
    #[arg(short = 'E', long, default_value_t = 1, value_name = "N")]
    pub conflict_exit_code: u8,

    /// The resource name. A name that starts with '-' goes after --resource instead.
    #[arg(value_name = "NAME", required_unless_present = "resource_option")]
    resource_name: Option<OsString>,

    /// The resource name, for one that starts with '-' (--resource -nightly, or
    /// --resource=-nightly); instead of NAME.
    #[arg(
        long = "resource",
        id = "resource_option",
        value_name = "NAME",
        conflicts_with = "resource_name",
        allow_hyphen_values = true
    )]
    resource_option: Option<OsString>,

    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl AcquireArgs {
    /// The resource name: NAME, or the value of `--resource`.
    pub fn resource(&self) -> &OsString {
        // Clap requires exactly one of the two (`required_unless_present`, `conflicts_with`).
        self.resource_name
            .as_ref()
            .or(self.resource_option.as_ref())
            .expect("clap requires NAME or --resource")
    }
}

/// Arguments of `dlock status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Only resources whose names start with this (default: all).
    #[arg(value_name = "PREFIX")]
    pub prefix: Option<OsString>,

    /// Print JSON instead of a table (see below for its shape).
    #[arg(long)]
    pub json: bool,

    /// At most this many resources (the server may cap it further).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,

    /// Start after the resource of this name: the `next_cursor` of an earlier `--json`
    /// answer cut at --limit, or the last name of an earlier table, to see the next page.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub cursor: Option<OsString>,

    /// Only the cluster: members, leader, term, log and applied index (as JSON with
    /// --json; a server that runs alone prints {"cluster": null, "members": []}). Without it,
    /// a cluster's summary is printed above the table.
    #[arg(long)]
    pub cluster: bool,
}

/// Arguments of `dlock verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Audit log files, oldest first (PATH.N .. PATH.1 PATH), or directories holding them.
    #[arg(value_name = "AUDIT_LOG", required = true)]
    pub logs: Vec<PathBuf>,

    /// How long after its lease a session may still be expired (the server's timer wake-up
    /// and scheduling on a loaded host).
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub expiry_allowance: Duration,

    /// Print at most this many violations (all are counted).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_examples: usize,
}

/// Arguments of `dlock completions`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A shell `dlock completions` writes a script for.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

impl Cli {
    /// Parses dlock's command line (`args`, the program name first). A `DLOCK_*` variable
    /// that is set but empty (`export DLOCK_SERVER=`, the shell's way to clear one) counts
    /// as unset: the option falls back to its default.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = <Cli as clap::CommandFactory>::command().mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| value.is_empty());
            // Clap has no "set but ignored": the argument forgets its variable for this run.
            if empty {
                arg.env(None::<&'static str>)
            } else {
                arg
            }
        });
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = cmd.try_get_matches_from_mut(&args)?;
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.format(&mut cmd))?;
        if let Command::Acquire(a) = &cli.command {
            // `dlock acquire NAME -- "$@"` with an empty "$@" would hold the lock and print a
            // token to a script that meant to run something.
            let dangling = matches!(&args[..], [.., before, last]
                if last == "--" && before != "--resource");
            if dangling && a.command.is_empty() {
                let mut acquire = cmd.find_subcommand("acquire").cloned().unwrap_or(cmd);
                return Err(acquire.error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "no command after '--' (leave out '--' to print the token and hold the lock)",
                ));
            }
        }
        Ok(cli)
    }
}

/// Parses a lock mode name, case-insensitively.
fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

/// Parses a human duration (`500ms`, `30s`, `2m`, `1h 30m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 30s, 2m)"))
}

/// A lease: a duration above zero (a lease of 0 would be none at all).
pub(crate) fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(
            "a lease must be longer than 0 (leave --ttl out for the server's default)".into(),
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(std::iter::once("dlock").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn acquire_defaults_and_command() {
        let cli = parse(&["acquire", "db", "--", "sh", "-c", "exit 3"]).unwrap();
        let Command::Acquire(a) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(a.mode, Mode::EX);
        assert_eq!(a.timeout, None);
        assert!(!a.no_wait);
        assert_eq!(a.kill_grace, Duration::from_secs(10));
        assert_eq!(a.conflict_exit_code, 1);
        assert_eq!(a.resource(), "db");
        assert_eq!(a.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn acquire_options() {
        let cli = parse(&[
            "--server",
            "h:1",
            "acquire",
            "-m",
            "pr",
            "--timeout",
            "1m 30s",
            "--ttl",
            "500ms",
            "-E",
            "3",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.server, "h:1");
        let Command::Acquire(a) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(a.mode, Mode::PR);
        assert_eq!(a.timeout, Some(Duration::from_secs(90)));
        assert_eq!(a.ttl, Some(Duration::from_millis(500)));
        assert_eq!(a.conflict_exit_code, 3);
        assert!(a.command.is_empty());
    }

    #[test]
    fn a_name_that_starts_with_a_dash_goes_after_resource() {
        for args in [
            &["acquire", "--resource", "-nightly", "--", "./job", "-x"][..],
            &["acquire", "--resource=-nightly", "--", "./job", "-x"],
            &[
                "acquire",
                "-m",
                "PR",
                "--resource",
                "-nightly",
                "--",
                "./job",
                "-x",
            ],
        ] {
            let cli = parse(args).unwrap();
            let Command::Acquire(a) = cli.command else {
                panic!("not acquire")
            };
            assert_eq!(a.resource(), "-nightly", "{args:?}");
            assert_eq!(a.command, ["./job", "-x"], "{args:?}");
        }
        // Without a command, and an ordinary name by the option.
        let cli = parse(&["acquire", "--resource", "db"]).unwrap();
        let Command::Acquire(a) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(a.resource(), "db");
        assert!(a.command.is_empty());
        // `--` still separates the command from NAME.
        let cli = parse(&["acquire", "--mode", "EX", "deploy", "--", "./deploy.sh"]).unwrap();
        let Command::Acquire(a) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(a.resource(), "deploy");
        assert_eq!(a.command, ["./deploy.sh"]);
        // A status prefix after `--`, a cursor after --cursor.
        let cli = parse(&["status", "--cursor", "-a", "--", "-nightly"]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        assert_eq!(st.prefix.as_deref(), Some("-nightly".as_ref()));
        assert_eq!(st.cursor.as_deref(), Some("-a".as_ref()));
    }

    #[test]
    fn a_resource_named_dashes_is_not_a_dangling_separator() {
        let cli = parse(&["acquire", "--resource", "--"]).unwrap();
        let Command::Acquire(a) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(a.resource(), "--");
        assert!(a.command.is_empty());
    }

    #[test]
    fn verify_takes_files_in_order() {
        let cli = parse(&["verify", "a.2", "a.1", "a", "--expiry-allowance", "1s"]).unwrap();
        let Command::Verify(v) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(v.logs, [PathBuf::from("a.2"), "a.1".into(), "a".into()]);
        assert_eq!(v.expiry_allowance, Duration::from_secs(1));
        assert_eq!(v.max_examples, 20);
    }

    #[test]
    fn server_lists_in_every_form_the_docs_use() {
        for list in [
            "127.0.0.1:7420",
            "localhost:7420",
            "[::1]:7420",
            "127.0.0.1:7420,127.0.0.1:7430,127.0.0.1:7440",
        ] {
            let cli = parse(&["--server", list, "ping"]).unwrap();
            assert_eq!(cli.server, list);
        }
        assert_eq!(parse(&["ping"]).unwrap().server, DEFAULT_SERVER);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["acquire", "--mode", "XX", "db"][..],
            &["acquire", "--timeout", "soon", "db"],
            &["acquire", "--no-wait", "--timeout", "1s", "db"],
            &["acquire", "--ttl", "0s", "db"],
            &["status", "--limit", "0"],
            &["acquire"],
            &["acquire", "db", "sh"],
            &["acquire", "db", "--"],
            &["acquire", "--resource", "-x", "--"],
            &["acquire", "--resource", "--", "--"],
            &["acquire", "-nightly"],
            &["acquire", "db", "--resource", "other"],
            &["acquire", "--resource"],
            &["completions", "powershell"],
            &["verify"],
            &["verify", "--expiry-allowance", "soon", "audit.jsonl"],
            &["--server", "nonsense", "ping"],
            &["--server", "127.0.0.1:99999", "ping"],
            &["--server", "", "ping"],
            &["--server", "a:1,b", "status"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
