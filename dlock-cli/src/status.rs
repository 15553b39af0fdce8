//! `dlock status`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use dlock_client::ServerView;

use crate::args::StatusArgs;
use crate::error::{CliError, exit};
use crate::report::{StatusJson, table};
use crate::session::{self, Ctx};

/// Queries the resources under the prefix and prints them as a table or JSON.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<u8, CliError> {
    let client = session::connect(ctx, None).await?;
    let prefix = args.prefix.as_deref().map(|p| p.as_bytes()).unwrap_or(b"");
    let view = client.view_prefix(prefix, args.limit).await;
    session::close(&client).await;
    // Ages are measured by the clock of this very reply, so they are the server's.
    let ServerView {
        now_ms,
        value: resources,
    } = view?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = StatusJson::new(&resources, now_ms);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        writeln!(out, "{text}").map_err(CliError::Io)?;
    } else if resources.is_empty() {
        eprintln!("dlock: no locks held or requested");
    } else {
        out.write_all(table(&resources, now_ms).as_bytes())
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
