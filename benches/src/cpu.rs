//! CPU time of processes and threads from `/proc`, to tell how much of a cycle's cost is the
//! server's and how much the client's.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU times of the server and of this process at one instant; two of them give the CPU
/// used in between.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// The server's, if known.
    server: Option<Duration>,
    /// This whole process's.
    own: Option<Duration>,
    /// Whether the server runs inside this process (then `own` includes it).
    in_process: bool,
}

impl CpuSample {
    /// Reads the clocks now. `in_process` is the CPU time of a server that runs inside this
    /// process (see `Backend::in_process_server_cpu`); otherwise the server is the processes
    /// `server_pids` (one server, or every member of a cluster, added up), if any.
    pub fn take(in_process: Option<Duration>, server_pids: &[u32]) -> CpuSample {
        CpuSample {
            server: in_process.or_else(|| processes_cpu(server_pids)),
            own: process_cpu(std::process::id()).ok(),
            in_process: in_process.is_some(),
        }
    }

    /// The server's CPU time since `earlier`, if known.
    pub fn server_since(&self, earlier: &CpuSample) -> Option<Duration> {
        Some(self.server?.saturating_sub(earlier.server?))
    }

    /// The clients' CPU time since `earlier`: this process's, less the server's if it runs
    /// here.
    pub fn clients_since(&self, earlier: &CpuSample) -> Option<Duration> {
        let own = self.own?.saturating_sub(earlier.own?);
        if self.in_process {
            Some(own.saturating_sub(self.server_since(earlier)?))
        } else {
            Some(own)
        }
    }
}

/// `cpu` over `wall` as a percentage of one core (200 % is two cores busy); 0 for an empty
/// window.
pub fn percent_of_one_core(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    }
}

/// User + system CPU time of the processes `pids` added up; `None` for an empty list or when
/// one of them cannot be read.
pub fn processes_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&p| process_cpu(p).ok())
        .sum::<Option<Duration>>()
}

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
    fn percent_of_one_core_is_cpu_over_wall() {
        let pct = percent_of_one_core(Duration::from_millis(250), Duration::from_secs(10));
        assert!((pct - 2.5).abs() < 1e-9, "{pct}");
        let two_cores = percent_of_one_core(Duration::from_secs(20), Duration::from_secs(10));
        assert!((two_cores - 200.0).abs() < 1e-9, "{two_cores}");
        assert_eq!(
            percent_of_one_core(Duration::from_secs(1), Duration::ZERO),
            0.0
        );
    }

    #[test]
    fn rejects_truncated_lines() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_our_own_process() {
        assert!(process_cpu(std::process::id()).is_ok());
        let me = std::process::id();
        assert!(processes_cpu(&[me, me]).expect("twice ours") >= process_cpu(me).expect("ours"));
        assert_eq!(processes_cpu(&[]), None);
        assert_eq!(processes_cpu(&[me, u32::MAX]), None);
        assert!(own_threads_cpu("no-such-thread-").expect("listing") == Duration::ZERO);
    }
}
