//! Hold mode (`dlock acquire NAME` without a command): keep the lock until told to let go.

use std::fmt::Display;
use std::future::Future;
use std::io::Read;

use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use crate::signals::Signals;

/// Why hold mode stopped holding.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// Standard input reached end of file (or could not be read).
    StdinClosed,
    /// dlock received this signal.
    Signalled(Signal),
    /// The lock was lost; the reason, for stderr.
    LockLost(String),
}

/// Completes when standard input reaches end of file or fails. Whatever it carries is read
/// and discarded.
///
/// A plain thread reads it, not tokio's blocking pool, because a blocking read cannot be
/// interrupted and the runtime waits for its pool on shutdown; the thread simply ends with the
/// process.
pub fn stdin_closed() -> impl Future<Output = ()> {
    let (tx, rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("dlock-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    async move {
        match spawned {
            // A sender dropped without sending (the thread died) also means: stop holding.
            Ok(_) => {
                let _ = rx.await;
            }
            // Without a reader, only a signal or a loss ends hold mode.
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch stdin");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Waits until `stdin_closed` completes, a signal arrives, or `lost` completes.
pub async fn hold<L, E>(lost: L, stdin_closed: E, signals: &mut Signals) -> HoldEnd
where
    L: Future,
    L::Output: Display,
    E: Future<Output = ()>,
{
    tokio::select! {
        reason = lost => HoldEnd::LockLost(reason.to_string()),
        sig = signals.recv() => HoldEnd::Signalled(sig),
        () = stdin_closed => HoldEnd::StdinClosed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    #[tokio::test]
    async fn each_way_out() {
        let (tx, mut sigs) = Signals::manual();
        let end = hold(pending::<&str>(), std::future::ready(()), &mut sigs).await;
        assert_eq!(end, HoldEnd::StdinClosed);
        tx.send(Signal::SIGTERM.into()).unwrap();
        let end = hold(pending::<&str>(), pending(), &mut sigs).await;
        assert_eq!(end, HoldEnd::Signalled(Signal::SIGTERM));
        let end = hold(std::future::ready("expired"), pending(), &mut sigs).await;
        assert_eq!(end, HoldEnd::LockLost("expired".into()));
    }
}
