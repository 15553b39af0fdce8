//! The fencing-token floor: a ceiling persisted in the data directory, written ahead of use.
//!
//! Invariant: every input index, session id, lock id and fencing token the server has ever sent
//! to a client is below the persisted ceiling `C`. On startup the server starts input indices at
//! `C + 1`; since the core's tokens are `max(last_token + 1, index)`, every token after a restart
//! (even after `kill -9`) is above every token handed out before, and new ids never collide
//! with old ones.
//!
//! The ceiling is written ahead by a block ([`BLOCK`]): once at startup ([`Floor::reserve`]),
//! and again whenever use comes within half a block of it. A write that fails (a full disk,
//! an IO error) does not stop the server: it goes on handing out what is still below the
//! durable ceiling, logs the failure once per streak of failures, counts every one
//! ([`Floor::write_failures`]) and tries again at most once per [`RETRY_MS`]. Only when
//! nothing below the durable ceiling is left does [`Floor::ensure_above`] fail
//! ([`ServerError::FloorExhausted`]): handing out more could repeat a token after a restart.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::ServerError;

/// The ceiling is raised in blocks of this size, so the file is written (and fsynced) once per
/// `BLOCK / 2` inputs.
pub(crate) const BLOCK: u64 = 1 << 20;

/// After a failed write, the next attempt comes at the earliest this many milliseconds
/// later, unless nothing reserved is left (then every use tries).
pub(crate) const RETRY_MS: u64 = 1_000;

/// The highest floor a data directory can hold: a million inputs a second would take
/// 290,000 years to reach it, so a file above it is damaged, and starting from it would leave
/// too few tokens to serve.
pub(crate) const MAX_FLOOR: u64 = 1 << 63;

pub(crate) const FILE_NAME: &str = "fencing-floor";
const TEMP_NAME: &str = "fencing-floor.tmp";

/// The persisted ceiling and where it lives.
#[derive(Debug)]
pub(crate) struct Floor {
    dir: PathBuf,
    /// The ceiling when opened: everything a previous lifetime sent is below it.
    base: u64,
    /// The durable ceiling: the file holds at least this.
    ceiling: u64,
    /// The file was there when the floor was opened: a previous lifetime applied inputs.
    existed: bool,
    /// How far ahead the ceiling is written ([`BLOCK`]; smaller in tests).
    block: u64,
    /// Failed writes since the last one that succeeded.
    failing: u64,
    /// Failed writes since the floor was opened.
    failures: u64,
    /// While failing: no new attempt before this time (the caller's clock, in ms) unless
    /// nothing reserved is left.
    retry_at_ms: u64,
}

/// Creates the data directory if needed (private: mode 0700; an existing one keeps its mode).
fn create_dir(dir: &Path) -> Result<(), ServerError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| {
        // "File exists" for a path that is a file says too little.
        let source = match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            _ => source,
        };
        ServerError::DataDir {
            path: dir.to_owned(),
            source,
        }
    })
}

/// The mode of the directory `dir` if it gives its group or others any access (`None` if it
/// does not, or cannot be read): an existing directory keeps its mode, only new ones are
/// created 0700.
pub(crate) fn open_to_others(dir: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Takes the data directory for this server (creating it if needed): an exclusive lock on
/// its `lock` file, held while the returned file is open and released by the system when
/// the process ends, however it ends. `Ok(None)`: another process holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<Option<DirLock>, ServerError> {
    create_dir(dir)?;
    let path = dir.join("lock");
    let mut options = fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    // Private like the directory's other files.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|source| ServerError::DataDir {
        path: path.clone(),
        source,
    })?;
    let Some(file) = take(file, &path)? else {
        return Ok(None);
    };
    // The directory too: a `lock` file removed while its server runs (and created again by
    // the next server) does not let two servers share the directory.
    let handle = fs::File::open(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    Ok(take(handle, dir)?.map(|dir| DirLock {
        _file: file,
        _dir: dir,
    }))
}

/// An exclusive lock on `file` (at `path`); `Ok(None)` if another process holds one.
fn take(file: fs::File, path: &Path) -> Result<Option<Flock<fs::File>>, ServerError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ServerError::DataDir {
            path: path.to_owned(),
            source: errno.into(),
        }),
    }
}

/// The data directory taken by this server ([`lock_dir`]): its `lock` file and the directory
/// itself, locked; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<fs::File>,
    _dir: Flock<fs::File>,
}

impl Floor {
    /// Opens (creating the directory if needed) and reads the ceiling; 0 if there is none yet.
    pub(crate) fn open(dir: &Path) -> Result<Floor, ServerError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let (ceiling, existed) = match fs::read_to_string(&path) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(n) if n <= MAX_FLOOR => (n, true),
                _ => {
                    return Err(ServerError::CorruptFloor {
                        path,
                        content: s.chars().take(64).collect(),
                    });
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(source) => return Err(ServerError::Floor { path, source }),
        };
        Ok(Floor {
            dir: dir.to_owned(),
            base: ceiling,
            ceiling,
            existed,
            block: BLOCK,
            failing: 0,
            failures: 0,
            retry_at_ms: 0,
        })
    }

    /// Raises the ceiling a block above what a previous lifetime may have used, before
    /// anything is served: on a fresh data directory the file is created here, so a data
    /// directory that cannot be written (a full disk, say) stops the server at its start,
    /// not at its first grant.
    pub(crate) fn reserve(&mut self) -> Result<(), ServerError> {
        let new = self.base.saturating_add(1).saturating_add(self.block);
        self.persist(new)
            .map_err(|(path, source)| ServerError::FloorStart {
                dir: self.dir.clone(),
                path,
                source,
            })?;
        self.ceiling = new;
        Ok(())
    }

    /// The ceiling when the floor was opened: this lifetime's inputs start above it.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// How many writes of the floor have failed since it was opened.
    pub(crate) fn write_failures(&self) -> u64 {
        self.failures
    }

    /// Whether the floor file existed when it was opened (a previous server lifetime ran on
    /// this data directory).
    pub(crate) fn existed(&self) -> bool {
        self.existed
    }

    /// The persisted ceiling: everything ever sent is below it.
    #[cfg(test)]
    pub(crate) fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// The floor, written ahead by `block` instead of [`BLOCK`] (so tests reach its edge).
    #[cfg(test)]
    pub(crate) fn with_block(mut self, block: u64) -> Floor {
        self.block = block;
        self
    }

    /// Writes go to `dir` from now on: a path that cannot be written makes them fail, as a
    /// full disk would (also for root, unlike a directory without write permission).
    #[cfg(test)]
    pub(crate) fn write_to(&mut self, dir: &Path) {
        self.dir = dir.to_owned();
    }

    /// Makes sure `used` (the highest index or token applied so far, or about to be) is
    /// below the durable ceiling, and keeps the ceiling ahead of it: once `used` comes within
    /// half a block of it, persists `used + block`. `now_ms` is the caller's clock, which
    /// paces attempts after a failure. Call before each apply (for its index) and after it,
    /// before sending its events.
    ///
    /// A failed write is logged (once per streak of failures) and counted, and `Ok` is
    /// returned while `used` is still below the durable ceiling; the error
    /// [`ServerError::FloorExhausted`] only when it is not (nothing may then be sent).
    pub(crate) fn ensure_above(&mut self, used: u64, now_ms: u64) -> Result<(), ServerError> {
        if used < self.ceiling.saturating_sub(self.block / 2) {
            return Ok(());
        }
        let reserved = used < self.ceiling;
        if reserved && self.failing > 0 && now_ms < self.retry_at_ms {
            return Ok(());
        }
        let new = used.saturating_add(self.block);
        match self.persist(new) {
            Ok(()) => {
                if self.failing > 0 {
                    tracing::info!(
                        failed_writes = self.failing,
                        fencing_floor = new,
                        "the fencing-token floor is written again"
                    );
                    self.failing = 0;
                }
                self.ceiling = new;
                Ok(())
            }
            Err((path, source)) => {
                self.failing += 1;
                self.failures += 1;
                self.retry_at_ms = now_ms.saturating_add(RETRY_MS);
                if !reserved {
                    return Err(ServerError::FloorExhausted {
                        dir: self.dir.clone(),
                        path,
                        source,
                    });
                }
                if self.failing == 1 {
                    tracing::error!(
                        path = %path.display(),
                        error = %source,
                        reserved_left = self.ceiling - used,
                        "cannot raise the fencing-token floor; serving from the tokens still \
                         reserved and trying again every second (the server stops granting \
                         when they run out; fix the cause in --data-dir; counted in \
                         dlock_floor_write_failures_total)"
                    );
                }
                Ok(())
            }
        }
    }

    /// Writes `value` durably (see [`write_durably`]).
    fn persist(&self, value: u64) -> Result<(), (PathBuf, io::Error)> {
        write_durably(&self.dir, TEMP_NAME, FILE_NAME, &format!("{value}\n"))
    }
}

/// Replaces `dir/name` with `content` durably: writes `dir/temp`, fsyncs it, renames it over
/// `dir/name` and fsyncs the directory. On failure, the path involved and the cause, and
/// `dir/temp` is removed (`dir/name` then holds the old content, or the new one if only the
/// final fsync of the directory failed).
pub(crate) fn write_durably(
    dir: &Path,
    temp: &str,
    name: &str,
    content: &str,
) -> Result<(), (PathBuf, io::Error)> {
    let tmp = dir.join(temp);
    let written = replace_with(dir, &tmp, &dir.join(name), content);
    if written.is_err() {
        // Best effort: a file left half written (a full disk) only takes space.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// [`write_durably`] but for removing the temporary file on failure.
fn replace_with(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    content: &str,
) -> Result<(), (PathBuf, io::Error)> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| (path, source)
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(tmp).map_err(err(tmp))?;
    f.write_all(content.as_bytes()).map_err(err(tmp))?;
    f.sync_all().map_err(err(tmp))?;
    drop(f);
    fs::rename(tmp, path).map_err(err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_that_is_a_file_is_said_to_be_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, "").unwrap();
        let Err(e) = Floor::open(&file) else {
            panic!("a file is no data directory");
        };
        assert!(e.to_string().ends_with("not a directory"), "{e}");
    }

    #[test]
    fn ceiling_starts_at_zero_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut floor = Floor::open(dir.path()).unwrap();
        assert_eq!(floor.ceiling(), 0);
        assert!(!floor.existed());
        floor.ensure_above(1, 0).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK);
        // Well below the threshold: nothing is written.
        floor.ensure_above(10, 0).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK);
        // Within half a block: raised.
        floor.ensure_above(1 + BLOCK / 2 + 5, 0).unwrap();
        assert_eq!(floor.ceiling(), 1 + BLOCK / 2 + 5 + BLOCK);
        let reopened = Floor::open(dir.path()).unwrap();
        assert_eq!(reopened.ceiling(), floor.ceiling());
        assert!(reopened.existed());
    }

    /// A path that cannot be written, even by root: its parent is a regular file.
    fn unwritable(parent: &Path) -> PathBuf {
        let file = parent.join("not-a-directory");
        fs::write(&file, "").unwrap();
        file.join("data")
    }

    fn durable(dir: &Path) -> u64 {
        Floor::open(dir).unwrap().ceiling()
    }

    #[test]
    fn reserve_writes_a_block_above_the_previous_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let mut floor = Floor::open(dir.path()).unwrap().with_block(100);
        floor.reserve().unwrap();
        assert_eq!((floor.base(), floor.ceiling()), (0, 101));
        assert_eq!(durable(dir.path()), 101);
        let mut again = Floor::open(dir.path()).unwrap().with_block(100);
        assert!(again.existed());
        again.reserve().unwrap();
        assert_eq!((again.base(), again.ceiling()), (101, 202));
    }

    #[test]
    fn reserve_on_an_unwritable_dir_names_the_dir_and_the_flag() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let mut floor = Floor::open(&dir).unwrap();
        floor.write_to(&unwritable(parent.path()));
        let err = floor.reserve().unwrap_err();
        assert!(matches!(err, ServerError::FloorStart { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(msg.contains("not-a-directory"), "{msg}");
    }

    #[test]
    fn a_failed_write_serves_what_is_reserved_then_stops_at_the_durable_ceiling() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let mut floor = Floor::open(&dir).unwrap().with_block(16);
        floor.reserve().unwrap();
        assert_eq!(floor.ceiling(), 17);
        floor.write_to(&unwritable(parent.path()));
        // From 9 on (within half a block) each use wants a write: the first fails and is
        // counted; later ones wait for the retry time, and all are still served.
        for used in 9..=16 {
            floor.ensure_above(used, 5).unwrap();
        }
        assert_eq!(floor.write_failures(), 1);
        floor.ensure_above(16, 5 + RETRY_MS).unwrap();
        assert_eq!(floor.write_failures(), 2);
        // 17 is not below the durable ceiling: nothing may be handed out, even before the
        // retry time.
        let err = floor.ensure_above(17, 6 + RETRY_MS).unwrap_err();
        assert!(matches!(err, ServerError::FloorExhausted { .. }), "{err:?}");
        assert!(err.to_string().contains("--data-dir"), "{err}");
        assert_eq!(floor.write_failures(), 3);
        assert_eq!(durable(&dir), 17);
        // Writable again: the next use raises it, and the streak is over.
        floor.write_to(&dir);
        floor.ensure_above(17, 7 + RETRY_MS).unwrap();
        assert_eq!(floor.ceiling(), 33);
        assert_eq!(durable(&dir), 33);
        floor.write_to(&unwritable(parent.path()));
        floor.ensure_above(25, 8 + RETRY_MS).unwrap();
        assert_eq!(floor.write_failures(), 4, "a new streak tries at once");
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the file goes: the write succeeds, the rename fails.
        fs::create_dir_all(dir.path().join(FILE_NAME).join("x")).unwrap();
        let (path, _) = write_durably(dir.path(), TEMP_NAME, FILE_NAME, "5\n").unwrap_err();
        assert_eq!(path, dir.path().join(FILE_NAME));
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[test]
    fn one_server_at_a_time_holds_the_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let first = lock_dir(&dir).unwrap().expect("a new directory is free");
        assert!(dir.join("lock").exists());
        assert!(lock_dir(&dir).unwrap().is_none(), "taken twice");
        // Its file removed (and made again by the next server), the directory stays taken.
        fs::remove_file(dir.join("lock")).unwrap();
        assert!(
            lock_dir(&dir).unwrap().is_none(),
            "taken with its lock file removed"
        );
        drop(first);
        assert!(lock_dir(&dir).unwrap().is_some(), "released with its file");
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (content, corrupt) in [
            ("not a number".to_owned(), true),
            (MAX_FLOOR.to_string(), false),
            // No server reaches it: damage, which would leave too few tokens to serve.
            ((MAX_FLOOR + 1).to_string(), true),
            (u64::MAX.to_string(), true),
        ] {
            fs::write(dir.path().join(FILE_NAME), &content).unwrap();
            let open = Floor::open(dir.path());
            assert_eq!(
                matches!(open, Err(ServerError::CorruptFloor { .. })),
                corrupt,
                "{content}: {open:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_and_state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let mut floor = Floor::open(&dir).unwrap();
        floor.ensure_above(1, 0).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
        assert_eq!(open_to_others(&dir), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_open_to_others_is_told_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let set = |mode| fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        set(0o755);
        assert_eq!(open_to_others(dir.path()), Some(0o755));
        set(0o710);
        assert_eq!(open_to_others(dir.path()), Some(0o710));
        set(0o700);
        assert_eq!(open_to_others(dir.path()), None);
        assert_eq!(open_to_others(&dir.path().join("missing")), None);
        // Opened by the server, an existing directory keeps its mode.
        set(0o750);
        lock_dir(dir.path()).unwrap().unwrap();
        Floor::open(dir.path()).unwrap();
        assert_eq!(open_to_others(dir.path()), Some(0o750));
    }
}
