//! The fencing-token floor: a ceiling persisted in the data directory, written ahead of use.
//!
//! Invariant: every input index, session id, lock id and fencing token the server has ever sent
//! to a client is below the persisted ceiling `C`. On startup the server starts input indices at
//! `C + 1`; since the core's tokens are `max(last_token + 1, index)`, every token after a restart
//! (even after `kill -9`) is above every token handed out before, and new ids never collide
//! with old ones.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::ServerError;

/// The ceiling is raised in blocks of this size, so the file is written (and fsynced) once per
/// `BLOCK / 2` inputs.
pub(crate) const BLOCK: u64 = 1 << 20;

const FILE_NAME: &str = "fencing-floor";
const TEMP_NAME: &str = "fencing-floor.tmp";

/// The persisted ceiling and where it lives.
#[derive(Debug)]
pub(crate) struct Floor {
    dir: PathBuf,
    ceiling: u64,
    /// The file was there when the floor was opened: a previous lifetime applied inputs.
    existed: bool,
}

/// Creates the data directory if needed (private: mode 0700; an existing one keeps its mode).
fn create_dir(dir: &Path) -> Result<(), ServerError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| ServerError::Floor {
        path: dir.to_owned(),
        source,
    })
}

/// Takes the data directory for this server (creating it if needed): an exclusive lock on
/// its `lock` file, held while the returned file is open and released by the system when
/// the process ends, however it ends. `Ok(None)`: another process holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<Option<DirLock>, ServerError> {
    create_dir(dir)?;
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServerError::Floor {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(DirLock(lock))),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ServerError::Floor {
            path,
            source: errno.into(),
        }),
    }
}

/// The data directory taken by this server ([`lock_dir`]); released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock(#[allow(dead_code, reason = "held, never read")] Flock<fs::File>);

impl Floor {
    /// Opens (creating the directory if needed) and reads the ceiling; 0 if there is none yet.
    pub(crate) fn open(dir: &Path) -> Result<Floor, ServerError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let (ceiling, existed) = match fs::read_to_string(&path) {
            Ok(s) => (
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| ServerError::CorruptFloor {
                        path: path.clone(),
                        content: s.chars().take(64).collect(),
                    })?,
                true,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(source) => return Err(ServerError::Floor { path, source }),
        };
        Ok(Floor {
            dir: dir.to_owned(),
            ceiling,
            existed,
        })
    }

    /// Whether the floor file existed when it was opened (a previous server lifetime ran on
    /// this data directory).
    pub(crate) fn existed(&self) -> bool {
        self.existed
    }

    /// The persisted ceiling: everything ever sent is below it.
    pub(crate) fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Makes sure the ceiling stays ahead of `used` (the highest index or token applied so
    /// far): once `used` comes within half a block of it, persists `used + BLOCK`. Call after
    /// every apply, before sending its events.
    pub(crate) fn ensure_above(&mut self, used: u64) -> Result<(), ServerError> {
        if used < self.ceiling.saturating_sub(BLOCK / 2) {
            return Ok(());
        }
        let new = used.saturating_add(BLOCK);
        self.persist(new)?;
        self.ceiling = new;
        Ok(())
    }

    /// Writes `value` durably (see [`write_durably`]).
    fn persist(&self, value: u64) -> Result<(), ServerError> {
        write_durably(&self.dir, TEMP_NAME, FILE_NAME, &format!("{value}\n"))
            .map_err(|(path, source)| ServerError::Floor { path, source })
    }
}

/// Replaces `dir/name` with `content` durably: writes `dir/temp`, fsyncs it, renames it over
/// `dir/name` and fsyncs the directory. On failure, the path involved and the cause.
pub(crate) fn write_durably(
    dir: &Path,
    temp: &str,
    name: &str,
    content: &str,
) -> Result<(), (PathBuf, io::Error)> {
    let tmp = dir.join(temp);
    let path = dir.join(name);
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| (path, source)
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(err(&tmp))?;
    f.write_all(content.as_bytes()).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_starts_at_zero_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut floor = Floor::open(dir.path()).unwrap();
        assert_eq!(floor.ceiling(), 0);
        assert!(!floor.existed());
        floor.ensure_above(1).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK);
        // Well below the threshold: nothing is written.
        floor.ensure_above(10).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK);
        // Within half a block: raised.
        floor.ensure_above(1 + BLOCK / 2 + 5).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK / 2 + 5 + BLOCK);
        let reopened = Floor::open(dir.path()).unwrap();
        assert_eq!(reopened.ceiling(), floor.ceiling());
        assert!(reopened.existed());
    }

    #[test]
    fn one_server_at_a_time_holds_the_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let first = lock_dir(&dir).unwrap().expect("a new directory is free");
        assert!(dir.join("lock").exists());
        assert!(lock_dir(&dir).unwrap().is_none(), "taken twice");
        drop(first);
        assert!(lock_dir(&dir).unwrap().is_some(), "released with its file");
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "not a number").unwrap();
        assert!(matches!(
            Floor::open(dir.path()),
            Err(ServerError::CorruptFloor { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_and_state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let mut floor = Floor::open(&dir).unwrap();
        floor.ensure_above(1).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }
}
