//! `dlock verify` end to end: a real server writes an audit log while clients take turns on
//! a lock (and the server restarts); the real binary must judge it safe, and must judge
//! doctored copies unsafe, naming the lines involved.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use common::*;
use dlock_client::{Client, FencingToken, Mode};
use dlock_core::{Command, Event, EventKind};
use dlock_history::AuditLine;
use dlock_server::Config;
use dlock_server::audit::AuditConfig;

/// Runs a short scripted workload against a server writing the audit log `audit`:
/// - `a` holds EX on "r", `b` queues for it, `a` unlocks and the lock passes to `b`;
/// - `a` and `b` share PR on "s";
/// - everyone closes, the server shuts down and starts again (a second lifetime in the same
///   log), and `c` takes EX on "r" once more.
async fn record_history(audit: AuditConfig) -> Result<()> {
    let config = Config {
        audit_log: Some(audit),
        ..TestServer::no_grace_config()
    };
    let mut server = TestServer::start_with(config).await?;
    let addr = server.addr().to_string();
    let a = Client::connect(addr.clone()).await?;
    let b = Client::connect(addr.clone()).await?;
    let obs = observer(&server).await?;

    let ga = a.lock("r", Mode::EX).await?;
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("r", Mode::EX).await }
    });
    queues(&obs, "r", 1, 1).await?;
    ga.unlock().await?;
    let gb = tokio::time::timeout(DEADLINE, waiter)
        .await
        .context("b was never granted")???;
    let sa = a.lock("s", Mode::PR).await?;
    let sb = b.lock("s", Mode::PR).await?;
    for g in [gb, sa, sb] {
        g.unlock().await?;
    }
    for c in [a, b, obs] {
        c.close().await?;
    }
    server.shutdown().await?;

    server.start_again().await?;
    let c = Client::connect(addr).await?;
    c.lock("r", Mode::EX).await?.unlock().await?;
    c.close().await?;
    server.shutdown().await
}

/// The audit lines of `path`, each of which must parse.
fn read_lines(path: &Path) -> Result<Vec<AuditLine>> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l:?}")))
        .collect()
}

/// Writes `lines` to `path`, one JSON object per line.
fn write_lines(path: &Path, lines: &[AuditLine]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    Ok(std::fs::write(path, text)?)
}

/// The index of the first line that is an input matching `input` with events matching
/// `events`.
fn find(
    lines: &[AuditLine],
    what: &str,
    input: impl Fn(&Command) -> bool,
    events: impl Fn(&[Event]) -> bool,
) -> Result<usize> {
    lines
        .iter()
        .position(|l| matches!(l, AuditLine::Apply { input: i, events: e, .. } if input(&i.command) && events(e)))
        .with_context(|| format!("no line where {what}"))
}

fn locks_r(c: &Command) -> bool {
    matches!(c, Command::Lock { args, .. } if args.resource == b"r")
}

fn unlocks(c: &Command) -> bool {
    matches!(c, Command::Unlock { .. })
}

fn has(kind: impl Fn(&EventKind) -> bool) -> impl Fn(&[Event]) -> bool {
    move |events| events.iter().any(|e| kind(&e.kind))
}

fn is_granted(k: &EventKind) -> bool {
    matches!(k, EventKind::Granted { .. })
}

/// The events of the input line `i`.
fn events_of(lines: &mut [AuditLine], i: usize) -> &mut Vec<Event> {
    match &mut lines[i] {
        AuditLine::Apply { events, .. } => events,
        other => panic!("line {} is not an input: {other:?}", i + 1),
    }
}

/// The lines of the scripted workload the doctored copies change (indices, 0-based).
struct Landmarks {
    /// `a` granted EX on "r".
    a_granted: usize,
    /// `b` queued behind it.
    b_queued: usize,
    /// `a` unlocks and the same grant pass grants `b`.
    handover: usize,
}

impl Landmarks {
    fn find(lines: &[AuditLine]) -> Result<Landmarks> {
        Ok(Landmarks {
            a_granted: find(lines, "a is granted r", locks_r, has(is_granted))?,
            b_queued: find(
                lines,
                "b queues for r",
                locks_r,
                has(|k| *k == EventKind::Queued),
            )?,
            handover: find(lines, "an unlock hands r over", unlocks, |e| {
                has(|k| *k == EventKind::Unlocked)(e) && has(is_granted)(e)
            })?,
        })
    }
}

/// Runs `dlock verify ARGS...` and returns (exit code, stdout, stderr).
async fn verify(args: &[&Path]) -> Result<(i32, String, String)> {
    let mut argv = vec!["verify"];
    let texts: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    argv.extend(texts.iter().map(String::as_str));
    let out = output(dlock_at("127.0.0.1:1", &argv)).await?;
    Ok((code(&out), stdout(&out), stderr(&out)))
}

/// Writes `lines` changed by `doctor` to a file named `name` in `dir`, runs `dlock verify`
/// on it, and returns (its path, stdout) after checking that it exits 1.
async fn doctored(
    dir: &Path,
    name: &str,
    lines: &[AuditLine],
    doctor: impl FnOnce(&mut Vec<AuditLine>),
) -> Result<(String, String)> {
    let mut copy = lines.to_vec();
    doctor(&mut copy);
    let path = dir.join(name);
    write_lines(&path, &copy)?;
    let (code, out, err) = verify(&[&path]).await?;
    ensure!(code == 1, "{name}: exit {code}, expected 1\n{out}\n{err}");
    ensure!(out.contains("history NOT safe"), "{name}: {out}");
    Ok((path.display().to_string(), out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_history_passes_and_doctored_copies_fail_naming_their_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("audit.jsonl");
    record_history(AuditConfig::new(&log)).await?;

    let (code, out, err) = verify(&[&log]).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("history safe"))
        .context(out.clone())?;
    assert!(
        summary.contains("2 server lifetime(s), 2 resource(s)"),
        "{summary}"
    );
    assert!(
        out.contains("not checked (needs client records): property 5 lost() before another grant"),
        "{out}"
    );

    let lines = read_lines(&log)?;
    let at = Landmarks::find(&lines)?;
    let (a_line, b_line, h_line) = (at.a_granted + 1, at.b_queued + 1, at.handover + 1);

    // A doubled grant: b is granted on arrival while a holds EX.
    let (path, out) = doctored(dir.path(), "doubled.jsonl", &lines, |l| {
        let token = match &l[at.b_queued] {
            AuditLine::Apply { input, .. } => input.index,
            _ => 0,
        };
        for e in events_of(l, at.b_queued) {
            e.kind = EventKind::Granted {
                mode: Mode::EX,
                token: FencingToken(token),
                value: None,
                value_valid: true,
            };
        }
    })
    .await?;
    assert!(
        out.contains(&format!(
            "VIOLATION [1 compatibility (R7)] at {path}:{b_line}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "lines involved: {path}:{a_line}, {path}:{b_line}\n"
        )),
        "{out}"
    );

    // A token going back: the grant to b reuses a's token.
    let (path, out) = doctored(dir.path(), "token.jsonl", &lines, |l| {
        let a_token = events_of(l, at.a_granted)
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Granted { token, .. } => Some(token),
                _ => None,
            });
        for e in events_of(l, at.handover) {
            if let (EventKind::Granted { token, .. }, Some(a)) = (&mut e.kind, a_token) {
                *token = a;
            }
        }
    })
    .await?;
    assert!(
        out.contains(&format!("VIOLATION [2 fencing tokens] at {path}:{h_line}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "lines involved: {path}:{a_line}, {path}:{h_line}\n"
        )),
        "{out}"
    );

    // A release lost: the unlock line hands r to b but never says a's lock was released.
    let (path, out) = doctored(dir.path(), "no-unlocked.jsonl", &lines, |l| {
        events_of(l, at.handover).retain(|e| e.kind != EventKind::Unlocked);
    })
    .await?;
    assert!(
        out.contains(&format!(
            "VIOLATION [1 compatibility (R7)] at {path}:{h_line}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "lines involved: {path}:{a_line}, {path}:{h_line}\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("VIOLATION [3 completion exactly once]"),
        "{out}"
    );
    // Requests, sessions and events are named in words.
    assert!(
        out.contains("(unlock) got 0 immediate answers (expected exactly 1): "),
        "{out}"
    );
    assert!(
        !out.contains("Some(") && !out.contains("Id(") && !out.contains(" {"),
        "{out}"
    );

    // A lost wake-up: a releases r, but b is never granted it.
    let (path, out) = doctored(dir.path(), "no-wakeup.jsonl", &lines, |l| {
        events_of(l, at.handover).retain(|e| !is_granted(&e.kind));
    })
    .await?;
    assert!(
        out.contains(&format!("VIOLATION [4 FIFO (R10-R13)] at {path}:{h_line}")),
        "{out}"
    );
    assert!(out.contains("left queued"), "{out}");
    assert!(
        out.contains(&format!(
            "lines involved: {path}:{b_line}, {path}:{h_line}\n"
        )),
        "{out}"
    );

    // A gap: lines the server could not write are reported where they were lost.
    let (path, out) = doctored(dir.path(), "gap.jsonl", &lines, |l| {
        l.insert(
            at.a_granted + 1,
            AuditLine::Gap {
                ts_us: 0,
                dropped: 3,
            },
        );
    })
    .await?;
    assert!(
        out.contains(&format!(
            "VIOLATION [complete history (no audit lines dropped)] at {path}:{}",
            a_line + 1
        )),
        "{out}"
    );
    assert!(out.contains("could not write 3 audit lines"), "{out}");
    // Stamped with the gap line's own time.
    assert!(
        out.contains(&format!(
            "at {path}:{} (1970-01-01T00:00:00.000000Z):",
            a_line + 1
        )),
        "{out}"
    );

    // A hole: the handover line removed, with no gap line for it.
    let (path, out) = doctored(dir.path(), "hole.jsonl", &lines, |l| {
        l.remove(at.handover);
    })
    .await?;
    assert!(
        out.contains(&format!(
            "VIOLATION [complete history (no audit lines dropped)] at {path}:{h_line}"
        )),
        "{out}"
    );
    assert!(out.contains("is missing: input"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_pass_in_order_as_a_glob_and_as_a_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("audit.jsonl");
    record_history(AuditConfig {
        path: log.clone(),
        max_size: 1000,
        keep: 100,
    })
    .await?;
    // Oldest first, as the server's rotation names them.
    let mut files: Vec<PathBuf> = Vec::new();
    for n in (1..100).rev() {
        let f = dir.path().join(format!("audit.jsonl.{n}"));
        if f.exists() {
            files.push(f);
        }
    }
    files.push(log.clone());
    assert!(
        files.len() >= 3,
        "expected several rotated files: {files:?}"
    );
    for f in &files {
        ensure!(!read_lines(f)?.is_empty(), "{} is empty", f.display());
    }

    let in_order: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out, err) = verify(&in_order).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("history safe"))
        .context(out.clone())?;
    assert!(
        summary.contains(&format!("in {} file(s)", files.len())),
        "{summary}"
    );
    assert!(summary.contains("2 server lifetime(s)"), "{summary}");

    // As the shell expands audit.jsonl*: by name, the live file first.
    let mut glob = in_order.clone();
    glob.sort();
    assert_ne!(glob, in_order);
    let (code, glob_out, err) = verify(&glob).await?;
    assert_eq!(code, 0, "{glob_out}\n{err}");
    assert_eq!(
        glob_out, out,
        "the glob order is read as the rotation order"
    );

    let (code, dir_out, err) = verify(&[dir.path()]).await?;
    assert_eq!(code, 0, "{dir_out}\n{err}");
    assert_eq!(dir_out, out, "a directory is read as its rotated log");
    assert!(!out.contains("note:"), "{out}");

    // With the oldest file gone (as --audit-log-keep deletes it), the rest still passes,
    // and the output says what could not be judged.
    let (code, out, err) = verify(&in_order[1..]).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "note: {} does not begin with a server start",
            in_order[1].display()
        )),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn unreadable_or_corrupt_logs_are_errors_and_a_torn_last_line_is_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.jsonl");
    let (code, out, err) = verify(&[&missing]).await?;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("cannot open audit log") && err.contains("missing.jsonl"),
        "{err}"
    );

    let empty = dir.path().join("empty.d");
    std::fs::create_dir(&empty)?;
    let (code, _, err) = verify(&[&empty]).await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no audit log"), "{err}");

    let start = serde_json::to_string(&AuditLine::Start { ts_us: 1, pid: 1 })?;
    let corrupt = dir.path().join("corrupt.jsonl");
    // "not json" is followed by a start: a crash may have left it. A second one is not.
    std::fs::write(
        &corrupt,
        format!("{start}\nnot json\n{start}\nnot json either\nnot json\n{start}\n"),
    )?;
    let (code, out, err) = verify(&[&corrupt]).await?;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("line 4, does not parse"), "{err}");

    // A crash tears the last line before its newline: skipped, and said so.
    let torn = dir.path().join("torn.jsonl");
    std::fs::write(&torn, format!("{start}\n{{\"Apply\":{{\"ts_us\":"))?;
    let (code, out, err) = verify(&[&torn]).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 line(s) torn by a crash skipped"), "{out}");

    // A last line with its newline was written whole: one that does not parse is corruption.
    let tail = dir.path().join("tail.jsonl");
    std::fs::write(&tail, format!("{start}\n{{\"not\":\"audit\"}}\n"))?;
    let (code, out, err) = verify(&[&tail]).await?;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("tail.jsonl, line 2, does not parse"), "{err}");
    assert!(!out.contains("history safe"), "{out}");

    // A file without a single audit line (a host name, garbage) is not an audit log.
    for (name, text) in [("hostname", "myhost\n"), ("garbage", "garbage\n")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let (code, out, err) = verify(&[&path]).await?;
        assert_eq!(code, 2, "{name}: {out}\n{err}");
        assert!(
            err.contains(&format!("{} is not an audit log", path.display())),
            "{err}"
        );
        assert!(!out.contains("history safe"), "{out}");
    }

    // An empty file (or /dev/null) is no history: most likely the wrong path.
    let nothing = dir.path().join("nothing.jsonl");
    std::fs::write(&nothing, "")?;
    for path in [nothing.as_path(), Path::new("/dev/null")] {
        let (code, out, err) = verify(&[path]).await?;
        assert_eq!(code, 2, "{}: {out}\n{err}", path.display());
        assert!(err.contains("no audit line in"), "{err}");
        assert!(!out.contains("history safe"), "{out}");
    }
    // An empty file after a non-empty one (a log just rotated) is fine.
    let (code, out, err) = verify(&[&torn, &nothing]).await?;
    assert_eq!(code, 0, "{out}\n{err}");

    let (code, _, err) = verify(&[]).await?;
    assert_eq!(code, 2, "{err}");
    Ok(())
}
