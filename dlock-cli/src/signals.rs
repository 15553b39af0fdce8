//! The signals that would end dlock, as a channel.
//!
//! Installed before connecting, so that an interrupt while waiting for a lock cancels the
//! request on the server (dropping the pending `lock` future sends Cancel) instead of leaving it
//! queued until the session's lease runs out. Every signal whose default action ends a process
//! and that a shell, a terminal or a supervisor sends (SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1, SIGUSR2, SIGALRM) is caught: one left to its default would end dlock while the
//! command it runs goes on, and the lock would pass to someone else under the command's feet.
//!
//! The three a terminal sends to its foreground process group (SIGINT, SIGQUIT, SIGHUP) are
//! blocked and read from a signalfd instead of a handler: its `si_code` says whether the
//! terminal sent one (then the command, in dlock's group, got it too) or a process did with
//! `kill` (then only dlock did, and it is forwarded).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
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

/// The signals a terminal sends to its whole foreground process group (Ctrl-C, Ctrl-\\,
/// hang-up). dlock reads them from a signalfd, which tells who sent each: the kernel (the
/// terminal) or a process (`kill`).
pub const FROM_TERMINAL: [Signal; 3] = [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP];

/// One signal dlock received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    /// Which.
    pub signal: Signal,
    /// Sent by the kernel (`SI_KERNEL`): for [`FROM_TERMINAL`], the terminal, which sent it to
    /// its whole foreground process group. `false` when a process sent it (`kill`).
    pub by_kernel: bool,
}

impl From<Signal> for Caught {
    fn from(signal: Signal) -> Caught {
        Caught {
            signal,
            by_kernel: false,
        }
    }
}

/// Blocks [`FROM_TERMINAL`] in the calling thread, and so in every thread it starts later,
/// so that they wait for [`Signals::install`]'s signalfd instead of running a handler. Call
/// it before any other thread starts (before the runtime is built). A process spawned
/// inherits the block: the command is started through the shim, which clears it
/// ([`clear_mask`]), or spawned with them unblocked ([`spawn_unblocked`]).
pub fn block_terminal_signals() -> nix::Result<()> {
    terminal_set().thread_block()
}

/// Clears the calling thread's signal mask, which the command would otherwise inherit from
/// dlock (with [`FROM_TERMINAL`] blocked, Ctrl-C, `kill -INT` and a hang-up would never reach
/// it): for the shim, just before it becomes the command.
pub fn clear_mask() -> nix::Result<()> {
    SigSet::empty().thread_set_mask()
}

/// Runs `spawn` with [`FROM_TERMINAL`] unblocked in the calling thread, so that the process it
/// starts does not inherit the block; blocked again after. For a command started without the
/// shim, which cannot clear its own mask: one of these signals arriving in that moment reaches
/// the handler that never forwards it, not the signalfd.
pub fn spawn_unblocked<T>(spawn: impl FnOnce() -> T) -> T {
    let set = terminal_set();
    if let Err(e) = set.thread_unblock() {
        tracing::warn!(error = %e, "cannot unblock SIGINT, SIGQUIT and SIGHUP for the command");
    }
    let spawned = spawn();
    if let Err(e) = set.thread_block() {
        tracing::warn!(error = %e, "cannot block SIGINT, SIGQUIT and SIGHUP again");
    }
    spawned
}

fn terminal_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in FROM_TERMINAL {
        set.add(sig);
    }
    set
}

/// A stream of the termination signals dlock received.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::UnboundedReceiver<Caught>,
}

impl Signals {
    /// Catches the signals of [`CAUGHT`] from now on (they no longer end the process by
    /// themselves). Must be called inside a tokio runtime, after [`block_terminal_signals`].
    ///
    /// Fails if [`FROM_TERMINAL`] is not blocked in the calling thread: a signalfd only reads
    /// blocked signals, so those three would be taken by their handlers and lost.
    pub fn install() -> std::io::Result<Signals> {
        let mask = SigSet::thread_get_mask().map_err(std::io::Error::from)?;
        if FROM_TERMINAL.iter().any(|&sig| !mask.contains(sig)) {
            return Err(std::io::Error::other(
                "SIGINT, SIGQUIT and SIGHUP are not blocked (block_terminal_signals must run \
                 before the runtime starts)",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for sig in CAUGHT.into_iter().filter(|s| !FROM_TERMINAL.contains(s)) {
            let mut stream = signal(SignalKind::from_raw(sig as i32))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig.into()).is_err() {
                        break;
                    }
                }
            });
        }
        for sig in FROM_TERMINAL {
            // A handler that never runs (the signals are blocked, the signalfd takes them),
            // installed for what exec does with it: a handler, unlike an ignored signal
            // (`nohup dlock ...`), is reset to the default in the command, as for the others.
            // Tokio keeps a handler installed once registered, stream or no stream.
            drop(signal(SignalKind::from_raw(sig as i32))?);
        }
        let fd = SignalFd::with_flags(&terminal_set(), SfdFlags::SFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
        // A plain thread blocks in read, as for stdin in hold mode: it ends with the process.
        // It inherits the block of these signals from the thread that starts it.
        std::thread::Builder::new()
            .name("dlock-signals".into())
            .spawn(move || {
                loop {
                    match fd.read_signal() {
                        Ok(Some(info)) => {
                            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                                continue;
                            };
                            let by_kernel = info.ssi_code == nix::libc::SI_KERNEL;
                            if tx.send(Caught { signal, by_kernel }).is_err() {
                                break;
                            }
                        }
                        Ok(None) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the signalfd");
                            break;
                        }
                    }
                }
            })?;
        Ok(Signals { rx })
    }

    /// Signals fed by hand through the returned sender (for tests).
    #[cfg(test)]
    pub fn manual() -> (mpsc::UnboundedSender<Caught>, Signals) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Signals { rx })
    }

    /// The next signal. Pending forever once no source is left.
    pub async fn recv(&mut self) -> Signal {
        self.recv_caught().await.signal
    }

    /// The next signal, with who sent it. Pending forever once no source is left.
    pub async fn recv_caught(&mut self) -> Caught {
        match self.rx.recv().await {
            Some(caught) => caught,
            None => std::future::pending().await,
        }
    }
}

/// The conventional exit code of a process that ended because of `sig`: 128 + its number.
pub fn exit_code_for(sig: Signal) -> u8 {
    // Signal numbers are below 128 on every platform nix supports.
    128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(127))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_refuses_a_thread_where_the_terminal_signals_are_not_blocked() {
        // A thread of its own, whose mask can be set freely: the test harness's threads
        // may share a mask with other tests.
        let outcome = std::thread::spawn(|| {
            terminal_set().thread_unblock().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let unblocked = rt.block_on(async { Signals::install().map(drop) });
            block_terminal_signals().unwrap();
            let blocked = rt.block_on(async { Signals::install().map(drop) });
            (unblocked, blocked)
        })
        .join()
        .unwrap();
        let err = outcome.0.expect_err("installed with the signals unblocked");
        assert!(err.to_string().contains("not blocked"), "{err}");
        outcome.1.expect("installed with the signals blocked");
    }
}
