//! A strict reader of the Prometheus / OpenMetrics text format as `/metrics` writes it:
//! every line is a `# HELP`, `# TYPE` or `# UNIT` comment, a sample
//! `name{label="value",...} number`, or the final `# EOF`; every sample belongs to a family
//! declared by a `# TYPE` line before it. Anything else is an error.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail, ensure};

/// Samples by name and sorted labels.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub BTreeMap<(String, Vec<(String, String)>), f64>);

impl Samples {
    /// The value of `name` with exactly `labels` (0 if absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.sort();
        self.0.get(&(name.to_owned(), l)).copied().unwrap_or(0.0)
    }

    /// Whether a sample `name` (with any labels) exists.
    pub fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the whole text strictly.
pub fn parse(text: &str) -> Result<Samples> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Samples::default();
    let mut eof = false;
    for (no, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", no + 1);
        ensure!(!eof, "text after # EOF at {}", at());
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, value) = (parts.next(), parts.next(), parts.next());
            let name = name.with_context(at)?;
            ensure!(is_name(name), "bad family name at {}", at());
            match kw {
                Some("TYPE") => {
                    let t = value.with_context(at)?;
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "unknown",
                        "info",
                    ];
                    ensure!(known.contains(&t), "unknown type at {}", at());
                    ensure!(
                        families.insert(name.to_owned(), t.to_owned()).is_none(),
                        "family declared twice at {}",
                        at()
                    );
                }
                Some("HELP") | Some("UNIT") => {}
                _ => bail!("unknown comment at {}", at()),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').with_context(at)?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().with_context(at)?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').with_context(at)?;
                let mut labels = Vec::new();
                let mut seen = BTreeSet::new();
                for pair in split_labels(body).with_context(at)? {
                    let (k, v) = pair.split_once('=').with_context(at)?;
                    ensure!(is_name(k), "bad label name at {}", at());
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .with_context(at)?;
                    ensure!(seen.insert(k.to_owned()), "label repeated at {}", at());
                    labels.push((k.to_owned(), v.to_owned()));
                }
                labels.sort();
                (name, labels)
            }
        };
        ensure!(is_name(name), "bad metric name at {}", at());
        let family = families.keys().find(|f| {
            name == f.as_str()
                || ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(f.as_str()))
        });
        ensure!(
            family.is_some(),
            "sample of an undeclared family at {}",
            at()
        );
        ensure!(
            out.0.insert((name.to_owned(), labels), value).is_none(),
            "sample repeated at {}",
            at()
        );
    }
    ensure!(eof, "no # EOF at the end");
    Ok(out)
}

/// Splits `a="x",b="y"` at the commas outside quotes.
fn split_labels(body: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    ensure!(!quoted, "unterminated label value");
    if start < body.len() {
        out.push(&body[start..]);
    }
    Ok(out)
}
