//! The open-file limit. loadgen holds one socket per session (two with the in-process echo
//! server), and the server one per session too, so runs with thousands of sessions need more
//! than the usual soft limit of 1024.

use anyhow::{Context, Result, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors a process needs besides its sessions' sockets (stdio, the listener, epoll,
/// files it reads).
pub const SPARE_FDS: u64 = 64;

/// This process's open-file limit after raising the soft limit to the hard one: `(soft,
/// hard)`. If raising fails, the limits in force are returned unchanged.
pub fn raise_nofile() -> Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Ok((hard, hard));
    }
    Ok((soft, hard))
}

/// Fails with an explanation when a soft open-file limit of `soft` (hard limit `hard`, if
/// known) is below `needed`; `who` names the process.
pub fn ensure_nofile(
    who: &str,
    soft: u64,
    hard: Option<u64>,
    needed: u64,
    why: &str,
) -> Result<()> {
    if soft >= needed {
        return Ok(());
    }
    let hard = hard
        .map(|h| format!(" (hard limit {h})"))
        .unwrap_or_default();
    bail!(
        "{who} may open {soft} files{hard}, but {why} needs about {needed}: raise the limit \
         (`ulimit -n {needed}` in the shell that starts it; a higher hard limit needs root, \
         /etc/security/limits.conf or LimitNOFILE= under systemd)"
    );
}

/// The soft open-file limit of process `pid`, from `/proc/<pid>/limits` (`u64::MAX` for
/// unlimited).
pub fn process_nofile(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/limits");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_max_open_files(&text).with_context(|| format!("no Max open files line in {path}"))
}

/// The soft limit of the `Max open files` line of a `/proc/<pid>/limits` text.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63412                63412                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(u64::MAX));
        assert_eq!(parse_max_open_files("Max processes 1 1 processes\n"), None);
    }

    #[test]
    fn raising_reaches_the_hard_limit_and_proc_agrees() {
        let (soft, hard) = raise_nofile().expect("getrlimit");
        if hard != nix::sys::resource::RLIM_INFINITY {
            assert_eq!(soft, hard);
        }
        let seen = process_nofile(std::process::id()).expect("own limits");
        let expected = if soft == nix::sys::resource::RLIM_INFINITY {
            u64::MAX
        } else {
            soft
        };
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_low_limit_is_refused_with_the_numbers() {
        assert!(ensure_nofile("loadgen", 20_000, Some(20_000), 10_065, "x").is_ok());
        let err = ensure_nofile("loadgen", 1024, Some(4096), 10_065, "--sessions 10000")
            .expect_err("too low")
            .to_string();
        assert!(
            err.contains("may open 1024 files (hard limit 4096)"),
            "{err}"
        );
        assert!(err.contains("--sessions 10000 needs about 10065"), "{err}");
        assert!(err.contains("ulimit -n 10065"), "{err}");
    }
}
