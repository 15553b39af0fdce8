//! Reading a process's resident set size from `/proc/<pid>/status`.

use anyhow::{Context, Result};

/// The `VmRSS` of process `pid`, in KiB.
pub fn vm_rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

/// The `VmRSS` value (KiB) of a `/proc/<pid>/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vmrss_line() {
        let status = "Name:\tdlock-server\nVmPeak:\t  999 kB\nVmRSS:\t  123456 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(123_456));
    }

    #[test]
    fn rejects_missing_or_odd_lines() {
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn reads_our_own_rss() {
        let kb = vm_rss_kb(std::process::id()).expect("own status");
        assert!(kb > 0);
    }
}
