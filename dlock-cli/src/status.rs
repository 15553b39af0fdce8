//! `dlock status`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::args::StatusArgs;
use crate::clock::ServerClock;
use crate::error::{CliError, exit};
use crate::report::{StatusJson, table};
use crate::session::{self, Ctx};

/// Queries the resources under the prefix and prints them as a table or JSON.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<u8, CliError> {
    let s = session::connect(ctx, None).await?;
    let prefix = args.prefix.as_deref().map(|p| p.as_bytes()).unwrap_or(b"");
    let resources = s.client.query_prefix(prefix, args.limit).await;
    session::close(&s.client).await;
    let resources = resources?;
    // Without an estimate of the server clock every age reads 0; that only happens if the
    // server does not answer the session query.
    let clock = s.clock.unwrap_or_else(|| ServerClock::fixed(0));
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = StatusJson::new(&resources, &clock);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        writeln!(out, "{text}").map_err(CliError::Io)?;
    } else if resources.is_empty() {
        eprintln!("dlock: no locks held or requested");
    } else {
        out.write_all(table(&resources, &clock).as_bytes())
            .map_err(CliError::Io)?;
    }
    if u32::try_from(resources.len()).is_ok_and(|n| n >= args.limit) {
        eprintln!(
            "dlock: showing the first {} resources only (see --limit)",
            resources.len()
        );
    }
    Ok(exit::OK)
}
