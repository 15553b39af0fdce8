//! The signals that would end dlock, as a channel.
//!
//! Installed before connecting, so that an interrupt while waiting for a lock cancels the
//! request on the server (dropping the pending `lock` future sends Cancel) instead of leaving it
//! queued until the session's lease runs out. Every signal whose default action ends a process
//! and that a shell, a terminal or a supervisor sends (SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1, SIGUSR2, SIGALRM) is caught: one left to its default would end dlock while the
//! command it runs goes on, and the lock would pass to someone else under the command's feet.

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// The signals dlock catches: those that would otherwise end it.
pub const CAUGHT: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// A stream of the termination signals dlock received.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::UnboundedReceiver<Signal>,
}

impl Signals {
    /// Catches the signals of [`CAUGHT`] from now on (they no longer end the process by
    /// themselves). Must be called inside a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        let (tx, rx) = mpsc::unbounded_channel();
        for sig in CAUGHT {
            let mut stream = signal(SignalKind::from_raw(sig as i32))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Signals { rx })
    }

    /// Signals fed by hand through the returned sender (for tests).
    #[cfg(test)]
    pub fn manual() -> (mpsc::UnboundedSender<Signal>, Signals) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Signals { rx })
    }

    /// The next signal. Pending forever once no source is left.
    pub async fn recv(&mut self) -> Signal {
        match self.rx.recv().await {
            Some(sig) => sig,
            None => std::future::pending().await,
        }
    }
}

/// The conventional exit code of a process that ended because of `sig`: 128 + its number.
pub fn exit_code_for(sig: Signal) -> u8 {
    // Signal numbers are below 128 on every platform nix supports.
    128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(127))
}
