//! The status line shown while waiting for a lock, when stderr is a terminal.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use dlock_client::Client;
use dlock_client::{LockState, Mode, ResourceInfo, SessionId};
use tokio::time::{Instant, interval_at, timeout};

use crate::format;

/// How often the resource is queried for the status line.
const POLL: Duration = Duration::from_millis(500);
/// A lock granted within this time shows no status line at all.
const FIRST_DRAW: Duration = Duration::from_millis(300);
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Awaits `request`; meanwhile, if stderr is a terminal, redraws one line on it that says what
/// dlock waits for, who holds it and the place in the queue. The line is erased at the end.
pub async fn wait<F: Future>(
    client: &Client,
    resource: &[u8],
    mode: Mode,
    request: F,
) -> F::Output {
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        return request.await;
    }
    tokio::pin!(request);
    let mut ticks = interval_at(Instant::now() + FIRST_DRAW, POLL);
    let mut frame = 0usize;
    // Erases the line however the wait ends: with the request's outcome, or dropped for a
    // signal or a deadline, whose message follows on a clean line.
    let mut drawn = Drawn(false);
    loop {
        tokio::select! {
            out = &mut request => return out,
            _ = ticks.tick() => {
                let view = timeout(POLL, client.view_resource(resource)).await;
                let (info, now_ms) = match view {
                    Ok(Ok(v)) => (v.value, v.now_ms),
                    _ => (None, 0),
                };
                let me = client.session_id();
                let line = status_line(resource, mode, info.as_ref(), me, now_ms);
                let _ = write!(stderr, "\r\x1b[2K{} {line}", FRAMES[frame % FRAMES.len()]);
                let _ = stderr.flush();
                frame += 1;
                drawn.0 = true;
            }
        }
    }
}

/// Whether the status line is on the terminal; erased when dropped.
struct Drawn(bool);

impl Drop for Drawn {
    fn drop(&mut self) {
        if self.0 {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// `waiting for EX on "db": held by a (s1) in PR for 3s; 2nd in queue`, from a reply that
/// carried `info` and was stamped `now_ms` by the server.
pub fn status_line(
    resource: &[u8],
    mode: Mode,
    info: Option<&ResourceInfo>,
    me: SessionId,
    now_ms: u64,
) -> String {
    let mut line = format!(
        "waiting for {mode} on {}: {}",
        format::quoted(resource),
        format::holders_line(info, now_ms)
    );
    if let Some(place) = info.and_then(|r| queue_place(r, me)) {
        line.push_str(&format!("; {} in queue", ordinal(place)));
    }
    line
}

/// 1-based place of `me`'s new request among the queued ones (conversions go first, R12).
fn queue_place(info: &ResourceInfo, me: SessionId) -> Option<usize> {
    let pos = info
        .waiting
        .iter()
        .position(|l| l.session == me && matches!(l.state, LockState::Waiting { .. }))?;
    Some(info.converting.len() + pos + 1)
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_client::{FencingToken, LockId, LockInfo};

    fn lock(session: u64, state: LockState, since_ms: u64) -> LockInfo {
        LockInfo {
            lock: LockId(session * 10),
            session: SessionId(session),
            session_name: format!("user{session}"),
            token: state.granted_mode().map(|_| FencingToken(session)),
            state,
            since_ms,
        }
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th"
            ]
        );
    }

    #[test]
    fn line_names_holder_and_place() {
        let info = ResourceInfo {
            name: b"db".to_vec(),
            value: vec![],
            value_valid: true,
            granted: vec![lock(1, LockState::Granted { mode: Mode::EX }, 1_000)],
            converting: vec![],
            waiting: vec![
                lock(2, LockState::Waiting { mode: Mode::PR }, 2_000),
                lock(3, LockState::Waiting { mode: Mode::EX }, 3_000),
            ],
            omitted: 0,
        };
        assert_eq!(
            status_line(b"db", Mode::EX, Some(&info), SessionId(3), 4_000),
            "waiting for EX on \"db\": held by user1 (s1) in EX for 3s; 2nd in queue"
        );
        assert_eq!(
            status_line(b"db", Mode::EX, None, SessionId(3), 4_000),
            "waiting for EX on \"db\": not held by anyone now"
        );
    }
}
