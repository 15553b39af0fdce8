//! dlock's failures and the exit codes they map to.

use std::io;

/// The documented exit codes (see `dlock --help`).
pub mod exit {
    /// Success (or the command exited 0).
    pub const OK: u8 = 0;
    /// The lock was not acquired (the default of `--conflict-exit-code`).
    pub const NOT_ACQUIRED: u8 = 1;
    /// Usage error (clap's own exit code).
    pub const USAGE: u8 = 2;
    /// The server could not be reached, or the cluster has no leader (sysexits
    /// `EX_UNAVAILABLE`).
    pub const UNAVAILABLE: u8 = 69;
    /// Internal or protocol error (sysexits `EX_SOFTWARE`).
    pub const SOFTWARE: u8 = 70;
    /// Not authenticated, or not permitted by the server's rules (sysexits `EX_NOPERM`).
    pub const NOPERM: u8 = 77;
    /// The lock was lost while held (sysexits `EX_TEMPFAIL`: trying again may work).
    pub const LOCK_LOST: u8 = 75;
    /// The command exists but could not be executed (as the shell and `flock(1)` do).
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found (as the shell and `flock(1)` do).
    pub const NOT_FOUND: u8 = 127;
    /// Stdout is a pipe whose reader has gone (`dlock status | head -1`): 128 + SIGPIPE,
    /// the status a shell shows for a program that SIGPIPE killed. Nothing is printed.
    pub const BROKEN_PIPE: u8 = 141;
}

/// A failure of a dlock subcommand. Expected outcomes ("not acquired", "lock lost") are not
/// errors: the subcommands report them and return their exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error("server {addr} unreachable: {source}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What the client said.
        source: dlock_client::Error,
    },
    /// The members of a cluster answered, but none leads (for the whole connect timeout):
    /// an election that takes long, or no majority.
    #[error("server {addr} unavailable: {source}")]
    NoLeader {
        /// The address list tried.
        addr: String,
        /// What the client said ([`dlock_client::Error::NoLeader`]).
        source: dlock_client::Error,
    },
    /// The session ended while waiting for a lock: the server could not be reached for a
    /// whole lease, or it expired the session.
    #[error("server {addr} unreachable: session lost while waiting for the lock")]
    SessionLostWhileWaiting {
        /// The server address.
        addr: String,
    },
    /// `--timeout` or `--no-wait` set a deadline, and the server had not answered by then
    /// (frozen, cut off by the network, or not a dlock server).
    #[error("server {addr} did not answer in time: gave up after {} ({limit})", humantime::format_duration(*waited))]
    NoAnswer {
        /// The server address.
        addr: String,
        /// How long dlock waited, connecting included.
        waited: std::time::Duration,
        /// The options that set the deadline, in words.
        limit: String,
    },
    /// An argument dlock refuses before sending it (a session name that no request could
    /// carry).
    #[error("{0}")]
    Usage(String),
    /// Any other client failure.
    #[error("{0}")]
    Client(#[from] dlock_client::Error),
    /// A lock request the server refused, with what was asked for (`"deploy" in EX`).
    #[error("{what}: {source}")]
    Request {
        /// The resource and mode asked for.
        what: String,
        /// The refusal.
        source: dlock_client::Error,
    },
    /// The command could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program named on the command line.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing a local stream failed.
    #[error("{0}")]
    Io(io::Error),
    /// Writing to stdout failed.
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

impl CliError {
    /// The exit code this failure ends dlock with.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. }
            | CliError::NoLeader { .. }
            | CliError::SessionLostWhileWaiting { .. }
            | CliError::NoAnswer { .. } => exit::UNAVAILABLE,
            CliError::Client(e) | CliError::Request { source: e, .. }
                if is_unreachable(e) || is_at_limits(e) =>
            {
                exit::UNAVAILABLE
            }
            CliError::Client(e) | CliError::Request { source: e, .. } if is_invalid_argument(e) => {
                exit::USAGE
            }
            CliError::Client(e) | CliError::Request { source: e, .. } if is_not_permitted(e) => {
                exit::NOPERM
            }
            CliError::Usage(_) => exit::USAGE,
            CliError::Stdout(_) if self.reader_gone() => exit::BROKEN_PIPE,
            CliError::Client(_)
            | CliError::Request { .. }
            | CliError::Io(_)
            | CliError::Stdout(_) => exit::SOFTWARE,
            CliError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                exit::NOT_FOUND
            }
            CliError::Spawn { .. } => exit::CANNOT_EXECUTE,
        }
    }

    /// Whether stdout's reader has gone (EPIPE): the reader chose to stop reading, as
    /// `head` does, so dlock stops too, with [`exit::BROKEN_PIPE`] and without a word.
    pub fn reader_gone(&self) -> bool {
        matches!(self, CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Whether a client error means the server cannot be reached (or went away), a cluster
/// has no leader to serve, or the server turned the client away for now (it is shutting
/// down, or cannot record a session's lease on its disk).
pub fn is_unreachable(e: &dlock_client::Error) -> bool {
    use dlock_client::Error as E;
    use dlock_proto::Refusal;
    matches!(
        e,
        E::Connect(_)
            | E::Disconnected
            | E::RequestTimeout
            | E::ShuttingDown
            | E::NoLeader
            | E::Refused(Refusal::ShuttingDown | Refusal::StorageUnavailable)
    )
}

/// Whether the server refused for its limits (connections or sessions from this address,
/// the request rate): unavailable for now, like a server that cannot be reached, but it
/// answered, so the message is the server's own.
pub fn is_at_limits(e: &dlock_client::Error) -> bool {
    use dlock_client::Error as E;
    use dlock_proto::Refusal;
    matches!(
        e,
        E::Overloaded
            | E::Refused(
                Refusal::TooManyConnections
                    | Refusal::TooManyConnectionsFromPeer { .. }
                    | Refusal::TooManySessionsFromPeer { .. }
            )
    )
}

/// Whether the server refused the client's credential, or its rules this identity's request.
pub fn is_not_permitted(e: &dlock_client::Error) -> bool {
    use dlock_client::Error as E;
    use dlock_proto::Refusal;
    matches!(
        e,
        E::Refused(Refusal::Unauthenticated) | E::PermissionDenied | E::CertificateRefused(_)
    )
}

/// Whether the server rejected an argument dlock passed through unchecked: an empty or too
/// long resource or session name, a lease outside the server's bounds. That is a usage error.
/// So is a request too large for a frame: what makes a request of dlock's large is a name
/// (of the resource, the session, a status prefix or cursor) far over any server's limit.
pub fn is_invalid_argument(e: &dlock_client::Error) -> bool {
    use dlock_client::Error as E;
    use dlock_proto::{Refusal, Reject};
    matches!(
        e,
        E::Invalid(_) | E::Refused(Refusal::Rejected(Reject::Invalid(_))) | E::TooLarge { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_without_a_leader_is_unavailable_and_says_so() {
        let e = CliError::NoLeader {
            addr: "a:1,b:2".into(),
            source: dlock_client::Error::NoLeader,
        };
        assert_eq!(e.exit_code(), exit::UNAVAILABLE);
        assert!(
            e.to_string()
                .starts_with("server a:1,b:2 unavailable: no leader: members answered NotLeader"),
            "{e}"
        );
        assert!(is_unreachable(&dlock_client::Error::NoLeader));
    }

    #[test]
    fn a_server_at_its_limits_is_unavailable_for_now() {
        use dlock_proto::Refusal;
        for e in [
            dlock_client::Error::Refused(Refusal::TooManyConnections),
            dlock_client::Error::Overloaded,
        ] {
            assert_eq!(CliError::Client(e).exit_code(), exit::UNAVAILABLE);
        }
    }

    #[test]
    fn a_refused_client_certificate_is_not_permitted() {
        let refused = dlock_client::Error::CertificateRefused("UnknownCA".into());
        assert_eq!(CliError::Client(refused).exit_code(), exit::NOPERM);
    }

    #[test]
    fn a_server_that_cannot_record_a_lease_is_unavailable_for_now() {
        let refused = dlock_client::Error::Refused(dlock_proto::Refusal::StorageUnavailable);
        assert_eq!(CliError::Client(refused).exit_code(), exit::UNAVAILABLE);
        // A refusal that will not pass by waiting stays what it was.
        let refused = dlock_client::Error::Refused(dlock_proto::Refusal::VersionMismatch {
            server: 2,
            client: 1,
        });
        assert_eq!(CliError::Client(refused).exit_code(), exit::SOFTWARE);
    }
}
