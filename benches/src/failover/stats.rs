//! What one kill measured, and the summary over all kills of a run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// What one round (one leader kill) measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillResult {
    /// The round, from 0.
    pub round: usize,
    /// From the kill to the first grant on a fresh resource through a fresh client.
    pub first_grant: Duration,
    /// From the kill to the end of the connected cycler's first cycle begun after it.
    pub cycler: Duration,
    /// Whether the lock held across the kill was still held afterwards.
    pub holder_kept: bool,
    /// From the killed member's restart until it had caught up with the leader.
    pub catch_up: Duration,
}

/// p50, p99 and max of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank: with fewer than 100 samples, the largest).
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

impl Spread {
    /// The spread of `samples`, or `None` for none.
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Option<Spread> {
        let mut v: Vec<Duration> = samples.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(Spread {
            p50: nearest_rank(&v, 0.50),
            p99: nearest_rank(&v, 0.99),
            max: v[v.len() - 1],
        })
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted, non-empty `v`.
fn nearest_rank(v: &[Duration], q: f64) -> Duration {
    // ceil(q * n) as a 1-based rank, at least 1.
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// The figures of one cluster over all its kills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The cluster (`dlock`, `etcd`).
    pub backend: String,
    /// Free text (the run number).
    pub label: String,
    /// Kills measured.
    pub kills: usize,
    /// First grant after the kill.
    pub first_grant: Spread,
    /// The connected cycler's first cycle after the kill.
    pub cycler: Spread,
    /// Locks held across a kill that were still held after it.
    pub holder_kept: usize,
    /// Restart to caught up, median.
    pub catch_up_p50: Duration,
    /// Every first-grant time, in rounds' order.
    pub samples: Vec<Duration>,
}

impl Summary {
    /// The summary of `results`, or `None` for none.
    pub fn of(backend: &str, label: &str, results: &[KillResult]) -> Option<Summary> {
        Some(Summary {
            backend: backend.to_owned(),
            label: label.to_owned(),
            kills: results.len(),
            first_grant: Spread::of(results.iter().map(|r| r.first_grant))?,
            cycler: Spread::of(results.iter().map(|r| r.cycler))?,
            holder_kept: results.iter().filter(|r| r.holder_kept).count(),
            catch_up_p50: Spread::of(results.iter().map(|r| r.catch_up))?.p50,
            samples: results.iter().map(|r| r.first_grant).collect(),
        })
    }

    /// One human-readable line.
    pub fn to_text(&self) -> String {
        let s = |d: &Spread| format!("p50 {} p99 {} max {}", ms(d.p50), ms(d.p99), ms(d.max));
        format!(
            "{}: {} leader kills: first grant {}; connected client {}; held locks kept {}/{}; \
             restart to caught up p50 {}",
            self.backend,
            self.kills,
            s(&self.first_grant),
            s(&self.cycler),
            self.holder_kept,
            self.kills,
            ms(self.catch_up_p50),
        )
    }

    /// The CSV header.
    pub const CSV_HEADER: &'static str = "backend,label,kills,first_grant_p50_ms,\
        first_grant_p99_ms,first_grant_max_ms,cycler_p50_ms,cycler_p99_ms,cycler_max_ms,\
        holder_kept,catch_up_p50_ms,first_grant_samples_ms";

    /// One CSV line (no newline); the samples are `;`-separated.
    pub fn to_csv(&self) -> String {
        let f = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let mut line = format!(
            "{},{},{},{},{},{},{},{},{},{},{},",
            self.backend,
            self.label,
            self.kills,
            f(self.first_grant.p50),
            f(self.first_grant.p99),
            f(self.first_grant.max),
            f(self.cycler.p50),
            f(self.cycler.p99),
            f(self.cycler.max),
            self.holder_kept,
            f(self.catch_up_p50),
        );
        for (i, d) in self.samples.iter().enumerate() {
            let sep = if i == 0 { "" } else { ";" };
            let _ = write!(line, "{sep}{}", f(*d));
        }
        line
    }

    /// Appends this summary to the CSV file `path` (its header first when the file is new).
    pub fn append_csv(&self, path: &Path) -> Result<()> {
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(file, "{}", Self::CSV_HEADER)?;
        }
        writeln!(file, "{}", self.to_csv())?;
        Ok(())
    }
}

/// `d` in milliseconds, one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn spread_is_nearest_rank() {
        // 20 samples: p50 is the 10th smallest, p99 the 20th (the largest).
        let v: Vec<Duration> = (1..=20).rev().map(|i| ms(i * 10)).collect();
        let s = Spread::of(v).expect("samples");
        assert_eq!(s.p50, ms(100));
        assert_eq!(s.p99, ms(200));
        assert_eq!(s.max, ms(200));
        // 200 samples: p99 is the 198th smallest, below the largest.
        let s = Spread::of((1..=200).map(ms)).expect("samples");
        assert_eq!((s.p50, s.p99, s.max), (ms(100), ms(198), ms(200)));
        assert_eq!(Spread::of(Vec::new()), None);
        let one = Spread::of([ms(7)]).expect("one");
        assert_eq!((one.p50, one.p99, one.max), (ms(7), ms(7), ms(7)));
    }

    #[test]
    fn summary_counts_and_writes_csv() {
        let results: Vec<KillResult> = [(300, 500, true), (100, 900, true), (200, 700, false)]
            .into_iter()
            .enumerate()
            .map(|(round, (g, c, kept))| KillResult {
                round,
                first_grant: ms(g),
                cycler: ms(c),
                holder_kept: kept,
                catch_up: ms(50),
            })
            .collect();
        let s = Summary::of("dlock", "run1", &results).expect("summary");
        assert_eq!(s.kills, 3);
        assert_eq!(s.holder_kept, 2);
        assert_eq!((s.first_grant.p50, s.first_grant.max), (ms(200), ms(300)));
        assert_eq!((s.cycler.p50, s.cycler.max), (ms(700), ms(900)));
        assert_eq!(
            s.to_csv(),
            "dlock,run1,3,200.0,300.0,300.0,700.0,900.0,900.0,2,50.0,300.0;100.0;200.0"
        );
        assert_eq!(
            Summary::CSV_HEADER.split(',').count(),
            s.to_csv().split(',').count()
        );
        assert!(
            s.to_text().contains("held locks kept 2/3"),
            "{}",
            s.to_text()
        );
        assert_eq!(Summary::of("dlock", "", &[]), None);

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.csv");
        s.append_csv(&path).expect("first");
        s.append_csv(&path).expect("second");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [Summary::CSV_HEADER, &s.to_csv(), &s.to_csv()]);
    }
}
