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
}

impl Floor {
    /// Opens (creating the directory if needed) and reads the ceiling; 0 if there is none yet.
    pub(crate) fn open(dir: &Path) -> Result<Floor, ServerError> {
        fs::create_dir_all(dir).map_err(|source| ServerError::Floor {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let ceiling = match fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| ServerError::CorruptFloor {
                    path: path.clone(),
                    content: s.chars().take(64).collect(),
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => return Err(ServerError::Floor { path, source }),
        };
        Ok(Floor {
            dir: dir.to_owned(),
            ceiling,
        })
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

    /// Writes `value` durably: temp file, fsync, rename over the old file, fsync the directory.
    fn persist(&self, value: u64) -> Result<(), ServerError> {
        let tmp = self.dir.join(TEMP_NAME);
        let path = self.dir.join(FILE_NAME);
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| ServerError::Floor { path, source }
        };
        let mut f = File::create(&tmp).map_err(err(&tmp))?;
        writeln!(f, "{value}").map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_starts_at_zero_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut floor = Floor::open(dir.path()).unwrap();
        assert_eq!(floor.ceiling(), 0);
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
}
