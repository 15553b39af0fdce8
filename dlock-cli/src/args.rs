//! Command-line arguments (clap derive) and the help texts.
//!
//! About 700 lines on purpose, 230 of them its tests: every flag's doc comment is its `--help`
//! text, and the parsing fixes that clap cannot express (empty `DLOCK_*` variables, a dangling
//! `--`, acquire's tips) belong next to the flags they are about.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use dlock_client::Mode;

use crate::addr::parse_server_list;
use crate::help::*;

pub use crate::help::EXIT_CODES_HELP;

/// The server address used when neither `--server` nor `DLOCK_SERVER` is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7420";

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
    /// bytes on a server with default settings, less the `[IDENTITY] ` the server puts
    /// before it when it authenticates; a longer one is refused (exit 2).
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

    /// Log to stderr (-v info, -vv debug, -vvv trace; DLOCK_LOG overrides).
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
    #[command(after_help = SESSION_AFTER_HELP)]
    Session(SessionArgs),
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
    #[arg(short, long, default_value = "EX", value_parser = ModeParser, value_name = "MODE")]
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
    /// Only resources whose names start with this (default: all); hex:HEX for a prefix given
    /// by its bytes in hexadecimal (one that is not text, has control characters or starts
    /// with hex: must be), as --cursor takes names.
    #[arg(
        value_name = "PREFIX",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::OsStringValueParser::new(),
            |s: OsString| parse_cursor(&s),
        )
    )]
    pub prefix: Option<Cursor>,

    /// Print JSON instead of a table (see below for its shape).
    #[arg(long)]
    pub json: bool,

    /// At most this many resources (the server may cap it further).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,

    /// Start after the resource of this name: the `next_cursor` of an earlier `--json`
    /// answer cut at --limit, or the last name of an earlier table, to see the next page.
    /// Any name can be given as hex:HEX, its bytes in hexadecimal (a name that is not text,
    /// has control characters or starts with hex: must be): `hex:` followed by the
    /// `next_cursor_hex` of the JSON answer always goes on, and the hint on stderr prints
    /// the form to pass.
    #[arg(
        long,
        value_name = "NAME",
        allow_hyphen_values = true,
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::OsStringValueParser::new(),
            |s: OsString| parse_cursor(&s),
        )
    )]
    pub cursor: Option<Cursor>,

    /// Only the cluster: members, leader, term, log and applied index (as JSON with
    /// --json; a server that runs alone prints {"cluster": null, "members": []}). Without it,
    /// a cluster's summary is printed above the table.
    #[arg(long)]
    pub cluster: bool,
}

/// A name (or prefix) of `dlock status`, as bytes: its `--cursor`, the resource name to start
/// after, and its PREFIX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub Vec<u8>);

/// A `--cursor` or PREFIX as given: `hex:HEX` for the bytes in hexadecimal (the form of
/// `dlock session`'s names), anything else for its own bytes.
pub fn parse_cursor(arg: &OsStr) -> Result<Cursor, String> {
    let bytes = arg.as_bytes();
    match crate::format::hex_name(bytes) {
        Some(hex) => hex.map(Cursor),
        None => Ok(Cursor(bytes.to_vec())),
    }
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
        let matches = cmd
            .try_get_matches_from_mut(&args)
            .map_err(|e| acquire_tips(e, &args, &cmd))?;
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

/// clap's tip for an unknown argument such as `-x` is `-- -x`, but after `--` acquire takes
/// the command to run, not NAME: acquire's unknown arguments get both ways instead, with
/// the whole word of `args` that held the argument (`-nightly`, which clap reports as `-i`).
fn acquire_tips(mut e: clap::Error, args: &[OsString], cmd: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let in_acquire = matches!(e.get(ContextKind::Usage),
        Some(ContextValue::StyledStr(usage)) if usage.to_string().contains("dlock acquire"));
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if arg.starts_with('-') => arg.clone(),
        _ => return e,
    };
    if e.kind() == ErrorKind::UnknownArgument && in_acquire {
        let short = arg.strip_prefix('-').filter(|c| c.len() == 1 && *c != "-");
        let arg = args
            .iter()
            .filter_map(|word| word.to_str())
            .find(|word| match short {
                Some(c) => word.starts_with('-') && !word.starts_with("--") && word.contains(c),
                None => *word == arg,
            })
            .unwrap_or(&arg)
            .to_owned();
        // `-E -1`, `-w -1s`: meant as an option's value, which clap takes only with '='.
        let before = args
            .iter()
            .position(|word| word.to_str() == Some(arg.as_str()))
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| args[i].to_str());
        if let Some(option) = before.filter(|word| takes_value(cmd, word)) {
            let tip = format!("a value that starts with '-' goes after '=': '{option}={arg}'");
            e.insert(
                ContextKind::Suggested,
                ContextValue::StyledStrs(vec![tip.into()]),
            );
            return e;
        }
        let tips = vec![
            format!("a NAME that starts with '-' goes after --resource: '--resource {arg}'").into(),
            format!("a command to run goes last, after '--': '-- {arg} ...'").into(),
        ];
        e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    }
    e
}

/// Whether `word` (`-E`, `--timeout`) names an option of `dlock acquire` that takes a value.
fn takes_value(cmd: &clap::Command, word: &str) -> bool {
    let Some(acquire) = cmd.find_subcommand("acquire") else {
        return false;
    };
    acquire.get_arguments().any(|a| {
        let named = match word.strip_prefix("--") {
            Some(long) => a.get_long() == Some(long),
            None => {
                let mut chars = word.strip_prefix('-').unwrap_or_default().chars();
                matches!((chars.next(), chars.next()), (Some(c), None) if a.get_short() == Some(c))
            }
        };
        named && a.get_action().takes_values()
    })
}

/// Arguments of `dlock session`.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// Session lease: if dlock cannot reach the server for this long, the session and its
    /// locks are lost (default: the server's, normally 10s).
    #[arg(long, value_parser = crate::args::parse_lease, value_name = "DURATION")]
    pub ttl: Option<Duration>,
}

/// Parses a lock mode name, case-insensitively, and names the six for help and shell
/// completions.
#[derive(Clone, Copy, Debug)]
struct ModeParser;

impl clap::builder::TypedValueParser for ModeParser {
    type Value = Mode;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Mode, clap::Error> {
        clap::builder::StringValueParser::new()
            .try_map(|s| s.parse::<Mode>().map_err(|e| e.to_string()))
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            ["NL", "CR", "CW", "PR", "PW", "EX"]
                .into_iter()
                .map(clap::builder::PossibleValue::new),
        ))
    }
}

/// Parses a human duration (`500ms`, `30s`, `2m`, `1h 30m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::format::duration(s)
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
        assert_eq!(st.prefix, Some(Cursor(b"-nightly".to_vec())));
        assert_eq!(st.cursor, Some(Cursor(b"-a".to_vec())));
        // A prefix with a NUL, which no argument can carry as it is.
        let cli = parse(&["status", "hex:6a6f6200"]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        assert_eq!(st.prefix, Some(Cursor(b"job\0".to_vec())));
        let e = parse(&["status", "hex:6"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn an_unknown_argument_to_acquire_is_told_both_ways() {
        // A negative value for an option is taken for an option: the tip says to use '='.
        for (args, tip) in [
            (&["acquire", "-E", "-1", "x"][..], "'-E=-1'"),
            (&["acquire", "--timeout", "-1s", "x"], "'--timeout=-1s'"),
        ] {
            let text = parse(args).unwrap_err().to_string();
            assert!(text.contains(tip), "{args:?}: {text}");
            assert!(!text.contains("goes after --resource"), "{args:?}: {text}");
        }
        let e = parse(&["acquire", "-nightly"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let text = e.to_string();
        assert!(text.contains("'--resource -nightly'"), "{text}");
        assert!(text.contains("after '--': '-- -nightly ...'"), "{text}");
        assert!(!text.contains("use '-- -nightly'"), "{text}");
        let e = parse(&["acquire", "-w", "1s", "--nightly"]).unwrap_err();
        assert!(e.to_string().contains("'--resource --nightly'"), "{e}");
        // Another command's tip is clap's own.
        let e = parse(&["status", "--nightly"]).unwrap_err();
        assert!(e.to_string().contains("use '-- --nightly'"), "{e}");
    }

    #[test]
    fn a_cursor_is_a_name_or_hex_bytes() {
        let cursor = |args: &[&str]| {
            let Command::Status(st) = parse(args).unwrap().command else {
                panic!("not status")
            };
            st.cursor.map(|c| c.0)
        };
        assert_eq!(cursor(&["status"]), None);
        assert_eq!(
            cursor(&["status", "--cursor", "pg.a"]),
            Some(b"pg.a".to_vec())
        );
        assert_eq!(
            cursor(&["status", "--cursor", "hex:61FF0062"]),
            Some(b"a\xff\0b".to_vec())
        );
        assert_eq!(cursor(&["status", "--cursor", "hex:"]), Some(Vec::new()));
        // Raw bytes that are not UTF-8 are taken as they are.
        let raw = OsStr::from_bytes(b"a\xffb");
        assert_eq!(parse_cursor(raw), Ok(Cursor(b"a\xffb".to_vec())));
        for bad in ["hex:f", "hex:zz", "hex:61 62"] {
            let e = parse(&["status", "--cursor", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("hexadecimal"), "{bad}: {e}");
        }
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
