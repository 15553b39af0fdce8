//! Chaos and fuzzing: random workloads under injected faults against a server child process,
//! judged by the history checker, and the restart-grace regression. One test binary; each
//! numbered module is one topic.
//!
//! The runs are heavy (a server child and 16 clients each) and judge timing-dependent
//! properties (leases, local loss before a server hand-over), so they run one at a time, as
//! they did when each had its own binary: every async test here first takes [`one_at_a_time`],
//! and only then starts its hard timeout, so waiting for another run never counts against it.

mod t70_chaos_network;
mod t71_chaos_dead_clients;
mod t72_chaos_restart;
mod t73_chaos_all_faults;
mod t74_fuzz;
mod t75_restart_grace;
mod t77_chaos_cluster;

use tokio::sync::{Mutex, MutexGuard};

/// Held by the test that runs; the others wait for it.
static RUNNING: Mutex<()> = Mutex::const_new(());

/// Waits until no other run of this binary is in progress; the run lasts while the guard
/// lives. A run that fails (panics) releases it too.
pub(crate) async fn one_at_a_time() -> MutexGuard<'static, ()> {
    RUNNING.lock().await
}
