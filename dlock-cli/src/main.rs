//! The `dlock` command-line tool. Everything but argument parsing and logging setup lives in
//! the `dlock_cli` library; see its docs for the commands and exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match dlock_cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(dlock_cli::usage(e)),
    };
    dlock_cli::init_tracing(cli.verbose);
    ExitCode::from(dlock_cli::run(cli))
}
