//! `dlock ping`.

use std::io::Write;

use crate::error::{CliError, exit};
use crate::session::{self, Ctx};
use crate::stdout;

/// Connects, pings once, prints the address of the server that answered (of a list, the
/// one the session is on), its version and the round-trip time.
pub async fn run(ctx: &Ctx) -> Result<u8, CliError> {
    let client = session::connect(ctx, None).await?;
    let pong = client.ping().await;
    session::close(&client).await;
    let pong = pong?;
    stdout::write(|out| {
        writeln!(
            out,
            "server {}, version {}, round trip {:.2} ms",
            client.server_addr(),
            pong.server_version,
            pong.rtt.as_secs_f64() * 1000.0
        )
    })?;
    Ok(exit::OK)
}
