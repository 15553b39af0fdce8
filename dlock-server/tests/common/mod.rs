//! What the tests of the `dlock-server` binary share.

use std::process::Child;
use std::time::Duration;

/// Every wait ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `dlock-server` process, killed and reaped when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
