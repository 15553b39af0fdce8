//! One result row per measured point, printed as text and written as CSV.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::Scenario;

/// A latency histogram in microseconds (1 µs to 1 hour, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Records `d` into `h` (clamped to the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl Latency {
    /// The percentiles of `h`, or `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        })
    }
}

/// The result of one point (one backend, one scenario, one client count).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Backend name.
    pub backend: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Concurrent clients (sessions, for many-locks).
    pub clients: usize,
    /// Length of the measured window in seconds (for many-locks: the time to acquire all).
    pub duration_s: f64,
    /// Completed cycles (acquire + release) in the window; for many-locks, locks acquired.
    pub ops: u64,
    /// `ops / duration_s`.
    pub ops_per_s: f64,
    /// Latency of a whole cycle.
    pub cycle: Option<Latency>,
    /// Latency of the acquire alone (including time waiting in a queue or polling).
    pub acquire: Option<Latency>,
    /// Grants of the shared key to a client other than the one that released it last
    /// (contended and handoff scenarios): ownership changes, as opposed to cycles.
    pub handoffs: Option<u64>,
    /// Handoff latency: from a release to the grant of the next client (contended and
    /// handoff scenarios).
    pub handoff: Option<Latency>,
    /// Server CPU time per cycle in the window, in µs (needs `--server-pid`, or an
    /// in-process server).
    pub server_cpu_us_per_op: Option<f64>,
    /// The load generator's own CPU time per cycle (the clients), in µs.
    pub client_cpu_us_per_op: Option<f64>,
    /// Server CPU over the window as a percentage of one core (idle; needs `--server-pid`).
    pub server_cpu_pct: Option<f64>,
    /// Fewest cycles by one client.
    pub client_min: u64,
    /// Most cycles by one client.
    pub client_max: u64,
    /// Failed operations.
    pub errors: u64,
    /// Locks held at once (many-locks; idle: one per idle session).
    pub locks: Option<u64>,
    /// Server RSS (KiB) before the locks were taken, with the sessions open (many-locks), or
    /// before the idle sessions connected (idle).
    pub rss_base_kb: Option<u64>,
    /// Server RSS (KiB) with every lock held (many-locks, idle).
    pub rss_held_kb: Option<u64>,
    /// Server RSS (KiB) after every session closed (many-locks, idle).
    pub rss_after_kb: Option<u64>,
    /// Free text from the caller (e.g. the run number).
    pub label: String,
    /// Remarks: why a point is unsupported, the first error seen.
    pub note: String,
}

impl Row {
    /// An empty row for `backend` and `scenario`.
    pub fn new(backend: &str, scenario: Scenario, clients: usize) -> Row {
        Row {
            backend: backend.to_owned(),
            scenario,
            clients,
            duration_s: 0.0,
            ops: 0,
            ops_per_s: 0.0,
            cycle: None,
            acquire: None,
            handoffs: None,
            handoff: None,
            server_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
            server_cpu_pct: None,
            client_min: 0,
            client_max: 0,
            errors: 0,
            locks: None,
            rss_base_kb: None,
            rss_held_kb: None,
            rss_after_kb: None,
            label: String::new(),
            note: String::new(),
        }
    }

    /// Handoffs per second of the window.
    pub fn handoffs_per_s(&self) -> Option<f64> {
        let n = self.handoffs?;
        (self.duration_s > 0.0).then(|| n as f64 / self.duration_s)
    }

    /// Per-client fairness: fewest cycles by one client over most cycles by one client
    /// (1.0 is perfectly even).
    pub fn fairness(&self) -> Option<f64> {
        (self.client_max > 0).then(|| self.client_min as f64 / self.client_max as f64)
    }

    /// Server memory per held lock in bytes: (held − base) / locks. For idle, whose base is
    /// taken before the sessions connect, this is the memory per idle session with its lock.
    pub fn rss_bytes_per_lock(&self) -> Option<f64> {
        let (base, held, locks) = (self.rss_base_kb?, self.rss_held_kb?, self.locks?);
        (locks > 0).then(|| held.saturating_sub(base) as f64 * 1024.0 / locks as f64)
    }

    /// The CSV header line (no newline).
    pub fn csv_header() -> &'static str {
        "backend,scenario,clients,duration_s,ops,ops_per_s,\
         cycle_p50_us,cycle_p99_us,cycle_p999_us,\
         acquire_p50_us,acquire_p99_us,acquire_p999_us,\
         handoffs_per_s,handoff_p50_us,handoff_p99_us,handoff_p999_us,\
         server_cpu_us_per_op,client_cpu_us_per_op,server_cpu_pct,\
         client_min_ops,client_max_ops,fairness,errors,\
         locks,rss_base_kb,rss_held_kb,rss_after_kb,rss_bytes_per_lock,label,note"
    }

    /// This row as one CSV line (no newline).
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let lat = |l: Option<Latency>| match l {
            Some(l) => format!("{},{},{}", l.p50, l.p99, l.p999),
            None => ",,".to_owned(),
        };
        format!(
            "{},{},{},{:.3},{},{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&self.backend),
            self.scenario,
            self.clients,
            self.duration_s,
            self.ops,
            self.ops_per_s,
            lat(self.cycle),
            lat(self.acquire),
            self.handoffs_per_s()
                .map(|h| format!("{h:.1}"))
                .unwrap_or_default(),
            lat(self.handoff),
            f1(self.server_cpu_us_per_op),
            f1(self.client_cpu_us_per_op),
            f1(self.server_cpu_pct),
            self.client_min,
            self.client_max,
            self.fairness()
                .map(|f| format!("{f:.3}"))
                .unwrap_or_default(),
            self.errors,
            opt(self.locks),
            opt(self.rss_base_kb),
            opt(self.rss_held_kb),
            opt(self.rss_after_kb),
            self.rss_bytes_per_lock()
                .map(|b| format!("{b:.1}"))
                .unwrap_or_default(),
            csv_field(&self.label),
            csv_field(&self.note),
        )
    }

    /// The header of [`Row::to_text`].
    pub fn text_header() -> String {
        format!(
            "{:<6} {:<15} {:>7} {:>10} {:>10} {:>22} {:>22} {:>22} {:>19} {:>13} {:>6}  note",
            "backend",
            "scenario",
            "clients",
            "ops/s",
            "handoffs/s",
            "cycle p50/p99/p999",
            "acquire p50/p99/p999",
            "handoff p50/p99/p999",
            "client min..max",
            "cpu us/op s+c",
            "errors"
        )
    }

    /// This row as one aligned text line.
    pub fn to_text(&self) -> String {
        let lat = |l: Option<Latency>| match l {
            Some(l) => format!("{}/{}/{}", us(l.p50), us(l.p99), us(l.p999)),
            None => "-".to_owned(),
        };
        let fair = match self.fairness() {
            Some(f) => format!("{}..{} ({f:.2})", self.client_min, self.client_max),
            None => "-".to_owned(),
        };
        let cpu = match (self.server_cpu_us_per_op, self.client_cpu_us_per_op) {
            (Some(s), Some(c)) => format!("{s:.1}+{c:.1}"),
            (None, Some(c)) => format!("?+{c:.1}"),
            _ => "-".to_owned(),
        };
        let mut note = self.note.clone();
        if self.scenario == Scenario::Idle && self.locks.is_some() {
            let sep = if note.is_empty() { "" } else { "; " };
            note = format!("{}{sep}{note}", self.idle_summary());
        } else if let (Some(locks), Some(held)) = (self.locks, self.rss_held_kb) {
            let _ = write!(
                note,
                "{}{locks} locks: server RSS {:.1} MB held (base {:.1} MB, after close {:.1} MB), {:.0} B/lock",
                if note.is_empty() { "" } else { "; " },
                held as f64 / 1024.0,
                self.rss_base_kb.unwrap_or(0) as f64 / 1024.0,
                self.rss_after_kb.unwrap_or(0) as f64 / 1024.0,
                self.rss_bytes_per_lock().unwrap_or(0.0),
            );
        }
        format!(
            "{:<6} {:<15} {:>7} {:>10.0} {:>10} {:>22} {:>22} {:>22} {:>19} {:>13} {:>6}  {}",
            self.backend,
            self.scenario.to_string(),
            self.clients,
            self.ops_per_s,
            self.handoffs_per_s()
                .map(|h| format!("{h:.0}"))
                .unwrap_or_else(|| "-".to_owned()),
            lat(self.cycle),
            lat(self.acquire),
            lat(self.handoff),
            fair,
            cpu,
            self.errors,
            note
        )
    }
}

impl Row {
    /// What an idle row says about the server: `10000 idle sessions: server CPU 1.2% of a
    /// core, RSS 52.1 MB (base 4.0 MB, after close 30.2 MB), 4915 B/session`.
    fn idle_summary(&self) -> String {
        let mut s = format!("{} idle sessions", self.locks.unwrap_or(0));
        match self.server_cpu_pct {
            Some(pct) => {
                let _ = write!(s, ": server CPU {pct:.1}% of a core");
            }
            None => s.push_str(": server CPU and RSS need --server-pid"),
        }
        if let Some(held) = self.rss_held_kb {
            let _ = write!(
                s,
                ", RSS {:.1} MB (base {:.1} MB, after close {:.1} MB), {:.0} B/session",
                held as f64 / 1024.0,
                self.rss_base_kb.unwrap_or(0) as f64 / 1024.0,
                self.rss_after_kb.unwrap_or(0) as f64 / 1024.0,
                self.rss_bytes_per_lock().unwrap_or(0.0),
            );
        }
        s
    }
}

/// A latency in µs, written compactly (`850us`, `12.3ms`, `1.20s`).
fn us(v: u64) -> String {
    if v < 1_000 {
        format!("{v}us")
    } else if v < 1_000_000 {
        format!("{:.1}ms", v as f64 / 1e3)
    } else {
        format!("{:.2}s", v as f64 / 1e6)
    }
}

/// One decimal, or empty.
fn f1(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_default()
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Appends `rows` to the CSV file at `path`, writing the header first if the file is new or
/// empty.
pub fn append_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let empty = file.metadata()?.len() == 0;
    let mut out = String::new();
    if empty {
        out.push_str(Row::csv_header());
        out.push('\n');
    }
    for row in rows {
        out.push_str(&row.to_csv());
        out.push('\n');
    }
    file.write_all(out.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_line_has_one_field_per_header_column() {
        let mut row = Row::new("dlock", Scenario::Contended, 16);
        row.cycle = Some(Latency {
            p50: 1,
            p99: 2,
            p999: 3,
        });
        row.client_min = 9;
        row.client_max = 10;
        row.note = "a, \"quoted\" note".into();
        let line = row.to_csv();
        let header_cols = Row::csv_header().split(',').count();
        // The note is the only field with commas; it is quoted, so count outside quotes.
        let mut cols = 1;
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => cols += 1,
                _ => {}
            }
        }
        assert_eq!(cols, header_cols);
        assert!(line.starts_with("dlock,contended,16,"));
        assert!(line.contains(",1,2,3,"));
        assert!(line.contains(",0.900,"));
        assert!(line.ends_with(",\"a, \"\"quoted\"\" note\""));
    }

    #[test]
    fn rss_per_lock_is_the_growth_over_the_locks() {
        let mut row = Row::new("dlock", Scenario::ManyLocks, 1000);
        row.locks = Some(1024);
        row.rss_base_kb = Some(1000);
        row.rss_held_kb = Some(1100);
        assert_eq!(row.rss_bytes_per_lock(), Some(100.0));
        row.rss_held_kb = Some(900);
        assert_eq!(row.rss_bytes_per_lock(), Some(0.0));
    }

    #[test]
    fn idle_rows_say_what_the_idle_sessions_cost() {
        let mut row = Row::new("dlock", Scenario::Idle, 10_000);
        row.locks = Some(10_000);
        row.server_cpu_pct = Some(1.24);
        row.rss_base_kb = Some(4_096);
        row.rss_held_kb = Some(4_096 + 48_828);
        row.rss_after_kb = Some(8_192);
        row.note = "first error: x".into();
        let text = row.to_text();
        assert!(
            text.ends_with(
                "10000 idle sessions: server CPU 1.2% of a core, RSS 51.7 MB (base 4.0 MB, \
                 after close 8.0 MB), 5000 B/session; first error: x"
            ),
            "{text}"
        );
        let csv = row.to_csv();
        let header: Vec<&str> = Row::csv_header().split(',').collect();
        let pct = header
            .iter()
            .position(|h| *h == "server_cpu_pct")
            .expect("column");
        assert_eq!(csv.split(',').nth(pct), Some("1.2"), "{csv}");
        row.server_cpu_pct = None;
        row.rss_held_kb = None;
        assert!(row.to_text().ends_with(
            "10000 idle sessions: server CPU and RSS need --server-pid; first error: x"
        ));
    }

    #[test]
    fn append_csv_writes_the_header_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.csv");
        let row = Row::new("echo", Scenario::Uncontended, 2);
        append_csv(&path, std::slice::from_ref(&row)).expect("first");
        append_csv(&path, &[row]).expect("second");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], Row::csv_header());
        assert!(lines[1].starts_with("echo,uncontended,2,"));
    }

    #[test]
    fn latency_of_an_empty_histogram_is_none() {
        let mut h = new_histogram();
        assert_eq!(Latency::of(&h), None);
        record(&mut h, Duration::from_micros(100));
        let l = Latency::of(&h).expect("one value");
        assert_eq!((l.p50, l.p99, l.p999), (100, 100, 100));
    }
}
