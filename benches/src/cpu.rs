//! CPU time of processes and threads from `/proc`, to tell how much of a cycle's cost is the
//! server's and how much the client's.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// User + system CPU time of process `pid`, all threads.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text)
        .map(|(_, cpu)| cpu)
        .with_context(|| format!("unexpected contents of {path}"))
}

/// User + system CPU time of this process's threads whose name starts with `prefix`.
pub fn own_threads_cpu(prefix: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let path = entry?.path().join("stat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some((name, cpu)) = parse_stat(&text)
            && name.starts_with(prefix)
        {
            total += cpu;
        }
    }
    Ok(total)
}

/// The name and user + system time of a `/proc/<pid>/stat` line.
pub fn parse_stat(stat: &str) -> Option<(&str, Duration)> {
    // "pid (name) state ppid ...": the name may hold spaces and parentheses, so split at the
    // last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th after the name.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some((
        name,
        Duration::from_millis(ticks.checked_mul(1000 / USER_HZ)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_odd_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 123 0 0 0 250 50 0 0 20 0 3 0";
        let (name, cpu) = parse_stat(stat).expect("parses");
        assert_eq!(name, "tokio (rt) x");
        assert_eq!(cpu, Duration::from_millis(3_000));
    }

    #[test]
    fn rejects_truncated_lines() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_our_own_process() {
        assert!(process_cpu(std::process::id()).is_ok());
        assert!(own_threads_cpu("no-such-thread-").expect("listing") == Duration::ZERO);
    }
}
