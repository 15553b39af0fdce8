//! Connecting to the server: the session name and the client.

use std::time::Duration;

use dlock_client::{Client, ClientBuilder, TlsOptions};

use crate::args::Cli;
use crate::error::{CliError, is_unreachable};

/// How long one attempt to reach a server may take, and how long dlock waits for a cluster
/// whose members answer `NotLeader` to have a leader, before giving up with exit code 69.
/// A fail-over takes about a second; when no server answers at all, dlock gives up at once.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every subcommand needs from the global options.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The server address.
    pub server: String,
    /// The session name.
    pub name: String,
    /// TLS, if any `--tls-*` option was given.
    pub tls: Option<TlsOptions>,
    /// The token file, if given.
    pub token_file: Option<std::path::PathBuf>,
}

impl Ctx {
    /// The context of a parsed command line.
    pub fn new(cli: &Cli) -> Ctx {
        Ctx {
            server: cli.server.clone(),
            name: cli.name.clone().unwrap_or_else(default_session_name),
            tls: tls_options(cli),
            token_file: cli.token_file.clone(),
        }
    }
}

/// The TLS options the `--tls-*` flags describe; `None` (plain TCP) without any.
fn tls_options(cli: &Cli) -> Option<TlsOptions> {
    let any = cli.tls_ca.is_some()
        || cli.tls_system_roots
        || cli.tls_server_name.is_some()
        || cli.tls_cert.is_some();
    if !any {
        return None;
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &cli.tls_ca {
        tls = tls.ca_file(ca);
    }
    if cli.tls_system_roots || cli.tls_ca.is_none() {
        tls = tls.system_roots();
    }
    if let Some(name) = &cli.tls_server_name {
        tls = tls.server_name(name);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = tls.client_cert(cert, key);
    }
    Some(tls)
}

/// `user@host:pid`, from `USER` (or `LOGNAME`, or else the name of the process's user id,
/// as in cron jobs and containers that set neither) and the kernel's host name.
pub fn default_session_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_of_uid)
        .unwrap_or_else(|| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}:{}", std::process::id())
}

/// The name of the process's real user id in the user database, if it has one.
fn user_of_uid() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Room in the handshake's frame for everything but the session name (versions, lease, a
/// token).
const HELLO_ROOM: usize = 1024;

/// The longest session name a handshake can carry at all; servers accept far shorter ones
/// (256 bytes by default) and say so themselves.
pub const MAX_SENDABLE_NAME: usize = dlock_proto::DEFAULT_MAX_FRAME_LEN - HELLO_ROOM;

/// Connects to the server with the session name of `ctx` and, if given, a lease of `ttl`.
pub async fn connect(ctx: &Ctx, ttl: Option<Duration>) -> Result<Client, CliError> {
    builder(ctx, ttl)?
        .connect()
        .await
        .map_err(|source| client_error(ctx, source))
}

/// What a failure to reach the server of `ctx` is for the CLI.
pub fn client_error(ctx: &Ctx, source: dlock_client::Error) -> CliError {
    if matches!(source, dlock_client::Error::NoLeader) {
        CliError::NoLeader {
            addr: ctx.server.clone(),
            source,
        }
    } else if is_unreachable(&source) {
        CliError::Unreachable {
            addr: ctx.server.clone(),
            source,
        }
    } else {
        CliError::Client(source)
    }
}

/// The client builder for `ctx` (and, if given, a lease of `ttl`): its servers, session name,
/// TLS and token.
pub fn builder(ctx: &Ctx, ttl: Option<Duration>) -> Result<ClientBuilder, CliError> {
    if ctx.name.len() > MAX_SENDABLE_NAME {
        return Err(CliError::Usage(format!(
            "session name {} is too long: a server accepts 256 bytes with default settings",
            crate::format::quoted(ctx.name.as_bytes())
        )));
    }
    let mut builder = Client::builder(ctx.server.clone())
        .name(ctx.name.clone())
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ttl) = ttl {
        builder = builder.lease_ttl(ttl);
    }
    if let Some(tls) = &ctx.tls {
        builder = builder.tls(tls.clone());
    }
    if let Some(path) = &ctx.token_file {
        if ctx.tls.is_none() && !crate::addr::all_loopback(&ctx.server) {
            eprintln!(
                "dlock: warning: sending the token to {} without TLS: anyone on the path can \
                 read it (give the server's CA with --tls-ca or DLOCK_TLS_CA)",
                ctx.server
            );
        }
        // A token file that cannot be read is the caller's mistake, not an unreachable server.
        builder = builder
            .token_file(path)
            .map_err(|e| CliError::Io(std::io::Error::other(e.to_string())))?;
    }
    Ok(builder)
}

/// Ends the session cleanly (every lock it still holds is released at once); failures are
/// only logged, since the server also ends the session when its lease runs out.
pub async fn close(client: &Client) {
    if let Err(e) = client.close().await {
        tracing::debug!(error = %e, "closing the session");
    }
}
