//! The `dlock` command-line tool. Everything but argument parsing and logging setup lives in
//! the `dlock_cli` library; see its docs for the commands and exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The shim between dlock and the command it runs; returns only if the command cannot run.
    if let Some(code) = dlock_cli::exec::run_if_asked(&args) {
        return ExitCode::from(code);
    }
    let cli = match dlock_cli::Cli::parse_args(args) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(dlock_cli::usage(e)),
    };
    dlock_cli::init_tracing(cli.verbose);
    ExitCode::from(dlock_cli::run(cli))
}
