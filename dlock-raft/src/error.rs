//! Errors of the storage layer.

use std::io;
use std::path::PathBuf;

/// Why the log or the state machine could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftStoreError {
    /// A file could not be read, written or synced.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A record in the middle of the log (not its tail) is damaged.
    #[error("{path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record or snapshot could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The log or a snapshot was written in a format newer than this build reads (by a
    /// later dlock-server): refused rather than misread.
    #[error(
        "{what} is in storage format {found}; this dlock-server reads formats up to {supported}: run the version that wrote it"
    )]
    Format {
        /// The segment file, or what the snapshot is.
        what: String,
        /// The format found.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
}

impl RaftStoreError {
    /// An IO error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> RaftStoreError {
        RaftStoreError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<RaftStoreError> for io::Error {
    fn from(e: RaftStoreError) -> io::Error {
        match e {
            RaftStoreError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}
