//! Writing to stdout. Every write is checked: a stdout that cannot be written (a full disk,
//! a closed pipe) ends dlock with [`CliError::Stdout`], where `print!` would panic.

use std::io::{self, StdoutLock, Write};

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
