//! The `dlock-server` binary: parses flags, sets up logging and runs the server until
//! SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use dlock_server::cli::{Args, LogFormat, Tool};
use tracing_subscriber::EnvFilter;

/// The allocator: one that gives freed memory back to the system. glibc's kept the read
/// buffers of a closed flood of connections (hostile h3: 392–646 MiB of 711 MiB stayed
/// resident after 10,000 connections closed); jemalloc with its background purging thread
/// (see [`give_memory_back`]) returns to about 50 MiB within seconds, at no cost in speed.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dlock-server: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause only if the message so far does not
/// already say it (the server's errors name their cause in their own message).
fn report(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Some(Tool::NewToken { identity }) => {
            dlock_server::security::check_identity(identity).map_err(anyhow::Error::msg)?;
            let token = dlock_server::security::new_token();
            println!("{token}");
            println!("{identity} {}", dlock_server::security::hash_token(&token));
            return Ok(());
        }
        Some(Tool::HashToken) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the token")?;
            let hash =
                dlock_server::security::hash_token_line(&line).map_err(anyhow::Error::msg)?;
            println!("{hash}");
            return Ok(());
        }
        None => {}
    }
    let filter = match &args.log_level {
        Some(level) => EnvFilter::try_new(level).context("invalid --log-level")?,
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(dlock_server::DEFAULT_LOG_FILTER)),
    };
    // Log lines are written by a thread of their own: a log file on a disk that stalls
    // (writeback under another process's heavy writes) would otherwise stop every task that
    // logs, and with them the server, for as long. Lines beyond the buffer are dropped
    // rather than waited for. `_flush` writes what is left when the server returns.
    let (writer, _flush) = tracing_appender::non_blocking(std::io::stdout());
    // Colours only on a terminal, so that log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stdout().is_terminal());
    match args.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    give_memory_back();
    raise_open_file_limit();
    let config = args.to_config();
    let security = dlock_server::Security::load(&config)?;
    let reloads = tokio::spawn(reload_on_sighup(security.clone()));
    let result = dlock_server::serve(config, security, shutdown_signal()).await;
    reloads.abort();
    result?;
    Ok(())
}

/// Raises the open-file limit to its hard maximum: every client connection takes a
/// descriptor, and the usual soft default (1,024) is far below what the server admits. What
/// is left short of `--max-connections` lowers it at start (with a warning).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

/// Lets jemalloc purge freed memory in a background thread (after its decay of about ten
/// seconds), rather than only when the thread that freed it allocates again: memory freed
/// by a connection flood goes back to the system even if the server is idle afterwards.
/// `_RJEM_MALLOC_CONF` still overrides jemalloc's other settings.
fn give_memory_back() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's purging thread");
    }
}

/// Reloads certificates, tokens and rules on every SIGHUP; a failed reload keeps what was in
/// force and says why.
async fn reload_on_sighup(security: std::sync::Arc<dlock_server::Security>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = security.reload() {
                tracing::error!(error = %e, "reload failed; the previous certificates, tokens and rules stay in force");
            }
        }
    }
    #[cfg(not(unix))]
    drop(security);
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
