//! The `dlock` command-line tool. Everything but argument parsing and logging setup lives in
//! the `dlock_cli` library; see its docs for the commands and exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dlock_cli::Cli::parse();
    dlock_cli::init_tracing(cli.verbose);
    ExitCode::from(dlock_cli::run(cli))
}
