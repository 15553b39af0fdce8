//! Errors of the server.

use std::io;
use std::path::PathBuf;

/// Why the server stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--listen): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The HTTP listener's address (`--http-listen`) could not be bound.
    #[error("cannot listen for HTTP on {addr} (--http-listen; `off` disables it): {source}")]
    HttpBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The data directory (`--data-dir`), or its lock file, could not be created or opened.
    #[error("cannot use the data directory (--data-dir): {path}: {source}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The data directory or the fencing-token floor in it could not be read or written.
    #[error("fencing-token floor in {path}: {source}")]
    Floor {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The fencing-token floor could not be written at startup, so no token can be handed
    /// out that a restart would not repeat.
    #[error(
        "cannot write the fencing-token floor in the data directory {dir} (--data-dir): {path}: {source}; {} (or give another --data-dir) and start again",
        remedy(.source)
    )]
    FloorStart {
        /// The data directory.
        dir: PathBuf,
        /// The file or directory that could not be written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// While serving, the fencing-token floor could not be raised and every token below it is
    /// used: the server stops rather than hand out a token a restart could repeat.
    #[error(
        "fencing tokens exhausted: the floor in the data directory {dir} (--data-dir) could not be raised ({path}: {source}) and every token reserved ahead is used; stopping rather than hand out a token a restart could repeat; {} and restart",
        remedy(.source)
    )]
    FloorExhausted {
        /// The data directory.
        dir: PathBuf,
        /// The file or directory that could not be written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another `dlock-server` uses the data directory (it holds the lock on it and its `lock` file).
    #[error(
        "data directory {path} is in use by another dlock-server (it holds a lock on the directory and on its lock file); give each server its own --data-dir"
    )]
    DataDirInUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The fencing-token floor file holds something that is not a number, or a number no
    /// server reaches (above `2^63`).
    #[error("fencing-token floor file {path} is corrupt: {content:?}")]
    CorruptFloor {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The data directory has the lease record of a previous run but no fencing-token floor:
    /// starting would hand out tokens a previous run has handed out already.
    #[error(
        "fencing-token floor {floor} is missing, but {record} shows that a server has run on this data directory: starting would hand out fencing tokens from 1 again, below those it granted. Restore the floor from a backup, or write into it a number above every token the previous run granted; to start afresh knowingly, remove {record} too"
    )]
    MissingFloor {
        /// Where the floor should be.
        floor: PathBuf,
        /// The lease record that is there.
        record: PathBuf,
    },
    /// The record of the longest lease granted (in the data directory) could not be read or
    /// written.
    #[error("lease record in {path}: {source}")]
    LeaseRecord {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The record of the longest lease granted holds something that is not a number, or a
    /// lease longer than any server grants ([`MAX_LEASE`](crate::grace::MAX_LEASE)).
    #[error(
        "lease record file {path} is corrupt: {content:?} (it holds the longest lease of the previous run in milliseconds, at most a day: write that lease into it, or remove the file to wait out --max-lease-ttl)"
    )]
    CorruptLeaseRecord {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Accepting connections failed.
    #[error("accept failed: {0}")]
    Accept(io::Error),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The token file (--auth-file) could not be loaded.
    #[error("token file (--auth-file): {0}")]
    Auth(String),
    /// The rules file (--auth-rules) could not be loaded.
    #[error("rules file (--auth-rules): {0}")]
    Rules(String),
    /// The core task ended unexpectedly.
    #[error("core task failed: {0}")]
    CoreTask(String),
}

/// What to do about a data directory that cannot be written, by the cause.
fn remedy(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "make room there",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "let the server's user write there"
        }
        _ => "repair the directory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_names_the_flag_that_set_it() {
        let addr: std::net::SocketAddr = "127.0.0.1:7420".parse().unwrap();
        let in_use = || io::Error::from(io::ErrorKind::AddrInUse);
        let lock = ServerError::Bind {
            addr,
            source: in_use(),
        };
        assert!(
            lock.to_string()
                .starts_with("cannot listen on 127.0.0.1:7420 (--listen): ")
        );
        let http = ServerError::HttpBind {
            addr,
            source: in_use(),
        };
        assert!(
            http.to_string()
                .contains("(--http-listen; `off` disables it)")
        );
    }

    #[test]
    fn a_floor_that_cannot_be_written_says_what_to_do_by_the_cause() {
        let start = |kind| ServerError::FloorStart {
            dir: "d".into(),
            path: "d/floor".into(),
            source: io::Error::from(kind),
        };
        let full = start(io::ErrorKind::StorageFull).to_string();
        assert!(
            full.contains("; make room there (or give another --data-dir)"),
            "{full}"
        );
        let denied = start(io::ErrorKind::PermissionDenied).to_string();
        assert!(
            denied.contains("; let the server's user write there"),
            "{denied}"
        );
        assert!(!denied.contains("make room"), "{denied}");
        let other = start(io::ErrorKind::InvalidData).to_string();
        assert!(other.contains("; repair the directory"), "{other}");
    }
}
