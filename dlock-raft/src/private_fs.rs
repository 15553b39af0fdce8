//! The node's directories and files, private to the user that runs it: the log and the
//! snapshot hold every session's resume secret. New directories are created 0700 and new
//! files 0600; existing ones keep their mode.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and whichever of its parents are missing, each with mode 0700.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a file with mode 0600 (given `create` or `create_new`).
pub(crate) fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates the file `path`, which must not exist yet, with mode 0600 and opened for writing.
pub(crate) fn create_new(path: &Path) -> io::Result<fs::File> {
    file_options().write(true).create_new(true).open(path)
}

/// Creates or truncates the temporary file `path` (written, then renamed over the file it
/// replaces) with mode 0600; one left by an earlier run is set to 0600 first, so that what
/// is renamed into place is private whatever mode that one had.
pub(crate) fn create_temp(path: &Path) -> io::Result<fs::File> {
    let file = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft").join("log");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700, "a parent created too");
        let file = dir.join("f");
        create_new(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(
            create_new(&file).is_err(),
            "an existing file is not taken over"
        );
        let temp = dir.join("f.tmp");
        fs::write(&temp, "left over").unwrap();
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o644)).unwrap();
        create_temp(&temp).unwrap();
        assert_eq!(
            mode(&temp),
            0o600,
            "a temporary file left over is made private"
        );
        assert_eq!(fs::metadata(&temp).unwrap().len(), 0);
    }
}
