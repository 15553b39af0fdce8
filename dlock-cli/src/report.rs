//! What `dlock status` prints: an aligned table for people, a stable JSON shape for scripts.

use dlock_client::ResourceInfo;

use crate::format;

/// The JSON document `dlock status --json` prints: the same type as the server's
/// `/api/resources` answers ([`dlock_proto::status::ResourcesView`]), with every page. Its
/// shape is stable: fields may be added, none is renamed or removed.
///
/// ```json
/// {"resources": [{"name": "db", "value_valid": true,
///   "holders":    [{"lock": 5, "session": 3, "session_name": "alice@h:42", "mode": "EX",
///                   "requested_mode": null, "token": 17, "since_ms": 1200, "for_ms": 3400}],
///   "converting": [],
///   "waiting":    [{"lock": 8, "session": 6, "session_name": "bob@h:7", "mode": null,
///                   "requested_mode": "PR", "token": null, "since_ms": 4000, "for_ms": 600}]}],
///  "now_ms": 4600}
/// ```
pub type StatusJson = dlock_proto::status::ResourcesView;

/// One resource in [`StatusJson`].
pub type ResourceJson = dlock_proto::status::ResourceView;

/// One lock in [`ResourceJson`].
pub type LockJson = dlock_proto::status::LockView;

/// The table of `dlock status`: one row per lock, columns aligned, a header line first.
/// Returns an empty string when there are no resources. `now_ms` is the server clock of the
/// reply that carried `resources`.
pub fn table(resources: &[ResourceInfo], now_ms: u64) -> String {
    const HEADER: [&str; 7] = [
        "RESOURCE", "STATE", "MODE", "SESSION", "NAME", "FOR", "TOKEN",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for r in resources {
        let name = format::escaped(&r.name);
        let queues = [
            ("granted", &r.granted),
            ("converting", &r.converting),
            ("waiting", &r.waiting),
        ];
        for (state, locks) in queues {
            for l in locks {
                rows.push([
                    name.clone(),
                    state.to_owned(),
                    format::mode_column(&l.state),
                    l.session.to_string(),
                    format::printable(&l.session_name),
                    format::age(format::since(now_ms, l.since_ms)),
                    l.token.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                ]);
            }
        }
        if r.omitted > 0 {
            // More locks than fit in one reply: the first ones of each queue in order.
            let mut row: [String; 7] = Default::default();
            row[0] = name.clone();
            row[1] = "omitted".to_owned();
            row[4] = format!(
                "{} more locks not listed (too many for one reply)",
                r.omitted
            );
            rows.push(row);
        }
        if r.granted.is_empty() && r.converting.is_empty() && r.waiting.is_empty() && r.omitted == 0
        {
            let mut row: [String; 7] = Default::default();
            row[0] = name;
            row[1] = "unused".to_owned();
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_client::{FencingToken, LockId, LockInfo, LockState, Mode, SessionId};

    fn lock(id: u64, name: &str, state: LockState, since_ms: u64) -> LockInfo {
        LockInfo {
            lock: LockId(id),
            session: SessionId(id + 100),
            session_name: name.into(),
            token: state.granted_mode().map(|_| FencingToken(id * 10)),
            state,
            since_ms,
        }
    }

    fn sample() -> Vec<ResourceInfo> {
        vec![ResourceInfo {
            name: b"db".to_vec(),
            value: vec![0; 4],
            value_valid: true,
            granted: vec![lock(
                1,
                "alice@h:1",
                LockState::Granted { mode: Mode::PR },
                1_000,
            )],
            converting: vec![lock(
                2,
                "bob@h:2",
                LockState::Converting {
                    from: Mode::PR,
                    to: Mode::EX,
                },
                4_000,
            )],
            waiting: vec![lock(
                3,
                "carol@h:3",
                LockState::Waiting { mode: Mode::EX },
                4_500,
            )],
            omitted: 0,
        }]
    }

    #[test]
    fn table_is_aligned() {
        let out = table(&sample(), 5_000);
        let expected = "\
RESOURCE  STATE       MODE    SESSION  NAME       FOR    TOKEN
db        granted     PR      s101     alice@h:1  4s     10
db        converting  PR->EX  s102     bob@h:2    1s     20
db        waiting     EX      s103     carol@h:3  500ms  -
";
        assert_eq!(out, expected);
        assert_eq!(table(&[], 0), "");
    }

    #[test]
    fn locks_too_many_for_one_reply_are_counted_in_the_table_and_the_json() {
        let mut cut = sample();
        cut[0].omitted = 1_234;
        let out = table(&cut, 5_000);
        let last = out.lines().last().unwrap();
        assert!(last.starts_with("db        omitted"), "{out}");
        assert!(
            last.contains("1234 more locks not listed (too many for one reply)"),
            "{out}"
        );
        let doc = serde_json::to_value(StatusJson::new(&cut, 5_000)).unwrap();
        assert_eq!(doc["resources"][0]["omitted"], 1_234);
        // Absent when nothing is omitted (the shape scripts know).
        let doc = serde_json::to_value(StatusJson::new(&sample(), 5_000)).unwrap();
        assert!(doc["resources"][0].get("omitted").is_none());
        // A resource whose every lock was omitted is not "unused".
        cut[0].granted.clear();
        cut[0].converting.clear();
        cut[0].waiting.clear();
        assert!(!table(&cut, 5_000).contains("unused"));
    }

    #[test]
    fn json_shape() {
        let doc = StatusJson::new(&sample(), 5_000);
        let v = serde_json::to_value(&doc).unwrap();
        let r = &v["resources"][0];
        assert_eq!(r["name"], "db");
        assert_eq!(r["value_valid"], true);
        assert_eq!(r["holders"][0]["mode"], "PR");
        assert_eq!(r["holders"][0]["requested_mode"], serde_json::Value::Null);
        assert_eq!(r["holders"][0]["token"], 10);
        assert_eq!(r["holders"][0]["for_ms"], 4_000);
        assert_eq!(r["converting"][0]["mode"], "PR");
        assert_eq!(r["converting"][0]["requested_mode"], "EX");
        assert_eq!(r["waiting"][0]["session"], 103);
        assert_eq!(r["waiting"][0]["session_name"], "carol@h:3");
        assert_eq!(r["waiting"][0]["mode"], serde_json::Value::Null);
        assert_eq!(r["waiting"][0]["token"], serde_json::Value::Null);
        assert_eq!(r["waiting"][0]["since_ms"], 4_500);
        assert_eq!(r["converting"][0]["for_ms"], 1_000);
        assert_eq!(r["waiting"][0]["for_ms"], 500);
        assert!(
            r.get("name_hex").is_none(),
            "only for names that are not UTF-8"
        );
        let back: StatusJson = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn names_that_are_not_utf8_are_told_apart() {
        let mut two = sample();
        two.push(two[0].clone());
        two[0].name = b"bin\xff".to_vec();
        two[1].name = "bin\u{fffd}".as_bytes().to_vec();
        let doc = serde_json::to_value(StatusJson::new(&two, 5_000)).unwrap();
        assert_eq!(doc["resources"][0]["name_hex"], "62696eff");
        assert!(doc["resources"][1].get("name_hex").is_none());
        let rows: Vec<String> = table(&two, 5_000)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect();
        assert!(rows.contains(&"bin\\xff".to_owned()), "{rows:?}");
        assert!(rows.contains(&"bin\u{fffd}".to_owned()), "{rows:?}");
    }
}
