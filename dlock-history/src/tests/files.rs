//! Reading logs from files: torn lines, rotation, gaps, several files.

use super::*;
use crate::read_audit_log;

#[test]
fn torn_lines_are_tolerated_only_where_a_crash_leaves_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = clean().lines;
    let text: Vec<String> = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    let torn = format!(
        "{}\n{{\"Apply\":{{\"ts_\n{}\n{}\n{{\"Ap",
        text[..4].join("\n"),
        serde_json::to_string(&AuditLine::Start { ts_us: T0, pid: 3 }).unwrap(),
        text[4..].join("\n")
    );
    std::fs::write(&path, torn).unwrap();
    let mut n = 0;
    let stats = read_audit_log(&path, |_| n += 1).unwrap();
    assert_eq!(stats.torn, 2);
    assert_eq!(stats.starts, 2);
    assert_eq!(n, lines.len() + 1);

    let bad = format!(
        "{}\nnot json\n{}",
        text[..2].join("\n"),
        text[2..].join("\n")
    );
    std::fs::write(&path, bad).unwrap();
    assert!(read_audit_log(&path, |_| {}).is_err());
}

#[test]
fn only_a_last_line_without_its_newline_can_be_torn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = clean().lines;
    let text = json(&lines).join("\n");
    // Killed while writing the last line: its newline, the last byte written, is missing.
    for tail in ["{\"Apply\":{\"ts_", "{\"not\":\"audit\"}"] {
        std::fs::write(&path, format!("{text}\n{tail}")).unwrap();
        let mut n = 0;
        let stats = read_audit_log(&path, |_| n += 1).unwrap();
        assert_eq!((stats.torn, n), (1, lines.len()), "{tail}");
    }
    // The same lines with their newline were written whole: they do not parse, so the log
    // is corrupt, and the error says where.
    for tail in [
        "{\"Apply\":{\"ts_\n",
        "{\"not\":\"audit\"}\n",
        "garbage\n\n",
    ] {
        std::fs::write(&path, format!("{text}\n{tail}")).unwrap();
        let err = read_audit_log(&path, |_| {}).unwrap_err();
        let line = lines.len() as u64 + 1;
        assert!(
            matches!(&err, crate::ReadError::Corrupt { path: p, line: l, .. } if *p == path && *l == line),
            "{tail:?}: {err}"
        );
    }
}

#[test]
fn a_file_without_a_single_audit_line_is_not_an_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostname");
    for text in [
        "myhost\n",
        "garbage",
        "garbage\n",
        "{\"not\":\"audit\"}\n",
        "\n",
    ] {
        std::fs::write(&path, text).unwrap();
        let err = read_audit_log(&path, |_| {}).unwrap_err();
        assert!(
            matches!(&err, crate::ReadError::NotAuditLog { path: p } if *p == path),
            "{text:?}: {err}"
        );
        assert!(err.to_string().contains("hostname"), "{err}");
    }
    // Among other files too: each file must be an audit log.
    let log = dir.path().join("audit.jsonl");
    std::fs::write(&log, format!("{}\n", json(&clean().lines).join("\n"))).unwrap();
    let err = crate::read_audit_logs(&[&log, &path], |_, _| {}).unwrap_err();
    assert!(
        matches!(&err, crate::ReadError::NotAuditLog { path: p } if *p == path),
        "{err}"
    );
    // An empty file is an empty history (a server that could not write its first line).
    std::fs::write(&path, "").unwrap();
    assert_eq!(
        read_audit_log(&path, |_| {}).unwrap(),
        crate::AuditStats::default()
    );
}

#[test]
fn a_rotated_log_is_one_history_and_a_gap_is_reported() {
    let lines = clean().lines;
    let report = check(CheckConfig::default(), lines.clone(), &[]);
    assert!(report.is_ok(), "{report}");
    // Rotation markers anywhere in the same lifetime change nothing.
    let mut rotated = lines.clone();
    rotated.insert(3, AuditLine::Rotated { ts_us: T0, pid: 1 });
    let report = check(CheckConfig::default(), rotated, &[]);
    assert!(report.is_ok(), "{report}");
    // Dropped lines make the history unsound, and the report says so.
    let mut gapped = lines;
    gapped.insert(
        3,
        AuditLine::Gap {
            ts_us: T0 + 5_000_000,
            dropped: 2,
        },
    );
    let report = check(CheckConfig::default(), gapped, &[]);
    assert_eq!(report.violations.get(&Property::History), Some(&1));
    // Stamped with the gap line's own time, not the input's before it.
    let gap = &report.examples[0];
    assert_eq!(gap.ts_us, T0 + 5_000_000, "{report}");
}

/// `lines` as JSON text, one per line.
fn json(lines: &[AuditLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect()
}

#[test]
fn a_torn_line_is_tolerated_across_a_rotation_and_glued_to_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("a.1"), dir.path().join("a"));
    let lines = clean().lines;
    let text = json(&lines);
    let start = serde_json::to_string(&AuditLine::Start { ts_us: T0, pid: 3 }).unwrap();
    let rotated = serde_json::to_string(&AuditLine::Rotated { ts_us: T0, pid: 3 }).unwrap();
    // Killed while writing the last line of `a`; rotated before the next start.
    std::fs::write(
        &old,
        format!("{}\n{{\"Apply\":{{\"ts_", text[..4].join("\n")),
    )
    .unwrap();
    std::fs::write(
        &new,
        format!("{rotated}\n{start}\n{}\n", text[4..].join("\n")),
    )
    .unwrap();
    let mut seen = Vec::new();
    let stats = crate::read_audit_logs(&[&old, &new], |at, _| seen.push(at)).unwrap();
    assert_eq!((stats.torn, stats.starts), (1, 2));
    assert_eq!(seen.len(), lines.len() + 2);
    // Lines are numbered as in their files.
    assert_eq!(seen[3], crate::LineAt { file: 0, line: 4 });
    assert_eq!(seen[4], crate::LineAt { file: 1, line: 1 });
    assert_eq!(seen[5], crate::LineAt { file: 1, line: 2 });

    // A torn line followed by anything but a start is corruption, and says where.
    std::fs::write(&new, format!("{rotated}\n{}\n", text[4..].join("\n"))).unwrap();
    let err = crate::read_audit_logs(&[&old, &new], |_, _| {}).unwrap_err();
    assert!(
        matches!(&err, crate::ReadError::Corrupt { path, line: 5, .. } if *path == old),
        "{err}"
    );

    // The next server's start written right after the torn bytes, on the same line.
    std::fs::write(
        &new,
        format!(
            "{}\n{{\"Apply\":{{\"ts_{start}\n{}\n",
            text[..4].join("\n"),
            text[4..].join("\n")
        ),
    )
    .unwrap();
    let mut n = 0;
    let stats = read_audit_log(&new, |_| n += 1).unwrap();
    assert_eq!((stats.torn, stats.starts), (1, 2));
    assert_eq!(n, lines.len() + 1);
}

#[test]
fn counterexamples_cite_the_files_and_lines_of_the_grants_in_conflict() {
    let mut h = H::new();
    let a = h.open(1000);
    let b = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::PR);
    h.lock_granted(b, 1, "r", Mode::PW);
    let text = json(&h.lines);
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("audit.1"), dir.path().join("audit"));
    let rotated = serde_json::to_string(&AuditLine::Rotated { ts_us: T0, pid: 1 }).unwrap();
    std::fs::write(&old, format!("{}\n", text[..4].join("\n"))).unwrap();
    std::fs::write(&new, format!("{rotated}\n{}\n", text[4..].join("\n"))).unwrap();
    let (stats, report) = crate::check_files(CheckConfig::default(), &[&old, &new], &[]).unwrap();
    assert_eq!(stats.applied, 4);
    assert_eq!(
        report.violations.get(&Property::Compatibility),
        Some(&1),
        "{report}"
    );
    let v = &report.examples[0];
    let (old, new) = (old.display().to_string(), new.display().to_string());
    assert_eq!(
        v.at.as_ref().map(ToString::to_string),
        Some(format!("{new}:2"))
    );
    let cites: Vec<String> = v.cites.iter().map(ToString::to_string).collect();
    assert_eq!(cites, [format!("{old}:4"), format!("{new}:2")]);
    assert!(v.detail.contains(&format!("since {old}:4")), "{v}");
}

#[test]
fn rotated_files_are_put_oldest_first_and_other_files_keep_their_place() {
    let p = |names: &[&str]| -> Vec<std::path::PathBuf> { names.iter().map(Into::into).collect() };
    // As a shell expands `audit.jsonl*`.
    assert_eq!(
        crate::rotation_order(&p(&[
            "d/audit.jsonl",
            "d/audit.jsonl.1",
            "d/audit.jsonl.10",
            "d/audit.jsonl.2"
        ])),
        p(&[
            "d/audit.jsonl.10",
            "d/audit.jsonl.2",
            "d/audit.jsonl.1",
            "d/audit.jsonl"
        ])
    );
    // Separate logs keep the order given; a set takes the place of its first member.
    assert_eq!(
        crate::rotation_order(&p(&["x", "a.2", "y", "a", "a.1", "x"])),
        p(&["x", "a.2", "a.1", "a", "y"])
    );
    assert_eq!(
        crate::rotation_order(&p(&["old", "new"])),
        p(&["old", "new"])
    );

    let dir = tempfile::tempdir().unwrap();
    for name in [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
        "client.jsonl",
    ] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    std::fs::create_dir(dir.path().join("audit.d")).unwrap();
    let found = crate::audit_files_in(dir.path()).unwrap();
    let names: Vec<String> = found
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]);
}

/// `lines` without the `Apply` line of input `index`.
fn without_input(lines: &[AuditLine], index: u64) -> Vec<AuditLine> {
    lines
        .iter()
        .filter(|l| !matches!(l, AuditLine::Apply { input, .. } if input.index == index))
        .cloned()
        .collect()
}

#[test]
fn an_index_skipped_in_a_single_servers_lifetime_is_a_hole() {
    let lines = clean().lines;
    // Input 3 removed, with no Gap line for it: reported as a gap is.
    let report = check(CheckConfig::default(), without_input(&lines, 3), &[]);
    assert_eq!(
        report.violations.get(&Property::History),
        Some(&1),
        "{report}"
    );
    let hole = report
        .examples
        .iter()
        .find(|v| v.property == Property::History)
        .unwrap();
    assert!(
        hole.detail
            .starts_with("input 3 is missing: input 4 follows input 2 with no Gap line"),
        "{report}"
    );
    assert_eq!(hole.at.as_ref().map(|at| at.line), Some(4), "{report}");
    let report = check(
        CheckConfig::default(),
        without_input(&without_input(&lines, 3), 4),
        &[],
    );
    assert!(
        report
            .examples
            .iter()
            .any(|v| v.detail.starts_with("inputs 3 to 4 are missing")),
        "{report}"
    );

    // A Gap line accounts for the indices it skips: one violation, the gap.
    let mut gapped = without_input(&lines, 3);
    gapped.insert(
        3,
        AuditLine::Gap {
            ts_us: T0,
            dropped: 1,
        },
    );
    let report = check(CheckConfig::default(), gapped, &[]);
    assert_eq!(
        report.violations.get(&Property::History),
        Some(&1),
        "{report}"
    );
    assert!(
        report.examples[0].detail.contains("could not write"),
        "{report}"
    );

    // A restarted server numbers on from its floor; rotation markers change nothing.
    let mut h = clean();
    h.restart(100);
    let a = h.open(1000);
    h.lock_granted(a, 1, "r", Mode::EX);
    h.lines.insert(4, AuditLine::Rotated { ts_us: T0, pid: 1 });
    h.apply(
        1,
        Command::CloseSession {
            session: a,
            request: RequestId(9),
        },
        |_| vec![ev(a, Some(9), None, EventKind::SessionClosed)],
    );
    let report = h.check(&[]);
    assert!(report.is_ok(), "{report}");
}

#[test]
fn skipped_indices_are_not_judged_in_a_history_that_begins_mid_lifetime() {
    // A history that begins mid-lifetime may be a cluster member's whose Replica line was
    // rotated away: its inputs skip the indices of entries without commands.
    let mut lines = without_input(&clean().lines, 4);
    lines[0] = AuditLine::Rotated { ts_us: T0, pid: 1 };
    let report = check(CheckConfig::default(), lines, &[]);
    assert_eq!(report.violations.get(&Property::History), None, "{report}");
}
