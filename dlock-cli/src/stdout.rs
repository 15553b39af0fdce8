//! Writing to stdout. Every write is checked: a stdout that cannot be written (a full disk,
//! a closed pipe) ends dlock with [`CliError::Stdout`], where `print!` would panic.

use std::io::{self, StdoutLock, Write};
use std::path::Path;

use crate::error::CliError;

/// Runs `write` on the locked stdout, then flushes it, so that a failure is seen here and
/// not lost when the process exits.
pub fn write(
    write: impl FnOnce(&mut StdoutLock<'static>) -> io::Result<()>,
) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(CliError::Stdout)
}

/// Whether dlock's stdout was closed when it started (`dlock acquire db >&-`).
///
/// The Rust runtime puts `/dev/null` on a standard descriptor found closed at start, opened
/// read-write, so writes to it succeed and say nothing. A shell's `>/dev/null` opens it
/// write-only; a read-write `/dev/null` on stdout is taken for a closed one.
pub fn was_closed() -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let on_null = std::fs::read_link("/proc/self/fd/1").is_ok_and(|p| p == Path::new("/dev/null"));
    on_null
        && fcntl(io::stdout(), FcntlArg::F_GETFL)
            .is_ok_and(|flags| OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDWR)
}

/// The error for a stdout that was closed at start: writing to it would fail with EBADF.
pub fn closed_error() -> CliError {
    CliError::Stdout(io::Error::from_raw_os_error(nix::libc::EBADF))
}
