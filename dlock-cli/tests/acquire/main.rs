//! `dlock acquire` end to end: the real binary against an in-process server. The command's
//! life (tied to dlock's, deadlines, terminals and signals) is in [`command`].

mod command;
#[path = "../common/mod.rs"]
mod common;

use std::process::Stdio;

use anyhow::{Context, Result};
use common::fake::{FakeServer, Script};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Splits a `start-<tag>-<resource>-<mode>-<token>` line into (tag, resource, mode, token).
fn start_line(line: &str) -> (String, String, String, u64) {
    let parts: Vec<&str> = line.split('-').collect();
    assert_eq!(parts.len(), 5, "unexpected log line {line:?}");
    assert_eq!(parts[0], "start");
    let token = parts[4].parse().expect("DLOCK_TOKEN is a number");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
        token,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_holders_take_turns_and_shared_holders_overlap() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    let obs = observer(&server).await?;

    // Two EX holders of one name: the second waits in the queue until the first is done.
    let a = dlock(
        &server,
        &[
            "--name",
            "ex-a",
            "acquire",
            "jobs",
            "--",
            "sh",
            "-c",
            &step_script(dir.path(), "A"),
        ],
    )
    .spawn()?;
    lines_at_least(&log, 1).await?;
    let b = dlock(
        &server,
        &[
            "--name",
            "ex-b",
            "acquire",
            "jobs",
            "--",
            "sh",
            "-c",
            &step_script(dir.path(), "B"),
        ],
    )
    .spawn()?;
    let info = queues(&obs, "jobs", 1, 1).await?;
    assert_eq!(info.granted[0].session_name, "ex-a");
    assert_eq!(info.waiting[0].session_name, "ex-b");
    assert_eq!(
        lines(&log).len(),
        1,
        "B started while A held the lock: {:?}",
        lines(&log)
    );
    release(dir.path(), "A");
    let out_a = finish(a).await?;
    assert_eq!(code(&out_a), 0, "{}", stderr(&out_a));
    release(dir.path(), "B");
    let out_b = finish(b).await?;
    assert_eq!(code(&out_b), 0, "{}", stderr(&out_b));
    let l = lines(&log);
    assert_eq!(l.len(), 4, "{l:?}");
    let (tag_a, res_a, mode_a, token_a) = start_line(&l[0]);
    assert_eq!(
        (tag_a.as_str(), res_a.as_str(), mode_a.as_str()),
        ("A", "jobs", "EX")
    );
    assert_eq!(l[1], "end-A");
    let (tag_b, _, _, token_b) = start_line(&l[2]);
    assert_eq!(tag_b, "B");
    assert_eq!(l[3], "end-B");
    assert!(
        token_b > token_a,
        "tokens must grow: {token_a} then {token_b}"
    );

    // Two PR holders run at the same time: both start before either may end.
    std::fs::remove_file(&log)?;
    let c = dlock(
        &server,
        &[
            "acquire",
            "--mode",
            "pr",
            "jobs",
            "--",
            "sh",
            "-c",
            &step_script(dir.path(), "C"),
        ],
    )
    .spawn()?;
    let d = dlock(
        &server,
        &[
            "acquire",
            "-m",
            "PR",
            "jobs",
            "--",
            "sh",
            "-c",
            &step_script(dir.path(), "D"),
        ],
    )
    .spawn()?;
    let both = lines_at_least(&log, 2).await?;
    let mut tags: Vec<String> = both.iter().map(|l| start_line(l).0).collect();
    tags.sort();
    assert_eq!(tags, ["C", "D"], "both PR holders started: {both:?}");
    assert!(both.iter().all(|l| start_line(l).2 == "PR"));
    assert!(both.iter().all(|l| start_line(l).3 > token_b));
    release(dir.path(), "C");
    release(dir.path(), "D");
    for child in [c, d] {
        let out = finish(child).await?;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(lines(&log).len(), 4);
    queues(&obs, "jobs", 0, 0).await?;
    Ok(())
}

#[tokio::test]
async fn exit_status_of_the_command_passes_through() -> Result<()> {
    let server = TestServer::start().await?;
    let out = output(dlock(
        &server,
        &["acquire", "x", "--", "sh", "-c", "exit 42"],
    ))
    .await?;
    assert_eq!(code(&out), 42, "{}", stderr(&out));
    let out = output(dlock(
        &server,
        &["acquire", "x", "--", "sh", "-c", "kill -TERM $$"],
    ))
    .await?;
    assert_eq!(code(&out), 128 + 15, "death by SIGTERM is 128+15");
    let out = output(dlock(
        &server,
        &["acquire", "x", "--", "/nonexistent/program"],
    ))
    .await?;
    assert_eq!(code(&out), 127);
    // The lock was released each time: a no-wait acquire succeeds.
    let out = output(dlock(&server, &["acquire", "--no-wait", "x", "--", "true"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn a_name_that_starts_with_a_dash_is_given_by_resource() -> Result<()> {
    let server = TestServer::start().await?;
    let script = r#"printf '%s\n' "$DLOCK_RESOURCE""#;
    let out = output(dlock(
        &server,
        &[
            "acquire",
            "--resource",
            "-nightly",
            "--",
            "sh",
            "-c",
            script,
        ],
    ))
    .await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-nightly\n");
    // Held by another, the same name is not acquired: it is one resource.
    let (mut holder, _token) = hold(&server, "holder", "--resource=-nightly").await?;
    let out = output(dlock(
        &server,
        &[
            "acquire",
            "--no-wait",
            "--resource",
            "-nightly",
            "--",
            "true",
        ],
    ))
    .await?;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    holder.kill().await?;
    Ok(())
}

#[tokio::test]
async fn a_too_long_session_name_is_a_usage_error_that_says_the_limit() -> Result<()> {
    let server = TestServer::start().await?;
    let long = "n".repeat(300);
    let out = output(dlock(
        &server,
        &["--name", &long, "acquire", "x", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("session name of 300 bytes exceeds the maximum of 256"),
        "{said}"
    );
    Ok(())
}

/// Starts `dlock acquire` in hold mode with stdin on a pipe; returns the child and its token.
async fn hold(
    server: &TestServer,
    name: &str,
    resource: &str,
) -> Result<(tokio::process::Child, u64)> {
    let mut child = dlock(server, &["--name", name, "acquire", resource])
        .stdin(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, BufReader::new(stdout).read_line(&mut line))
        .await
        .context("no token in time")??;
    let token = line
        .trim_end()
        .parse()
        .with_context(|| format!("token line {line:?}"))?;
    Ok((child, token))
}

#[tokio::test]
async fn hold_mode_prints_the_token_and_releases_at_end_of_stdin_or_on_a_signal() -> Result<()> {
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let (mut holder, token) = hold(&server, "keeper", "held").await?;
    let info = queues(&obs, "held", 1, 0).await?;
    assert_eq!(info.granted[0].session_name, "keeper");
    assert_eq!(info.granted[0].token.map(|t| t.0), Some(token));
    drop(holder.stdin.take());
    let status = tokio::time::timeout(DEADLINE, holder.wait()).await??;
    assert_eq!(status.code(), Some(0));
    queues(&obs, "held", 0, 0).await?;

    let (holder, _) = hold(&server, "keeper", "held").await?;
    queues(&obs, "held", 1, 0).await?;
    signal(&holder, nix::sys::signal::Signal::SIGTERM)?;
    let out = finish(holder).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    queues(&obs, "held", 0, 0).await?;
    Ok(())
}

#[tokio::test]
async fn not_acquired_exits_1_and_names_the_holder() -> Result<()> {
    let server = TestServer::start().await?;
    let (mut holder, _) = hold(&server, "the-holder", "busy").await?;

    let out = output(dlock(
        &server,
        &["acquire", "--no-wait", "busy", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("the-holder") && err.contains("EX"), "{err}");
    assert!(!err.contains("grace"), "a holder explains it: {err}");
    assert!(stdout(&out).is_empty());

    let out = output(dlock(&server, &["acquire", "-n", "-E", "7", "busy"])).await?;
    assert_eq!(code(&out), 7, "--conflict-exit-code");

    let out = output(dlock(
        &server,
        &["acquire", "--timeout", "200ms", "busy", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("timed out") && err.contains("the-holder"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "no status line when stderr is not a terminal: {err:?}"
    );

    // EX is compatible only with NL (R7): PR is refused, NL is granted.
    let out = output(dlock(
        &server,
        &["acquire", "-n", "-m", "PR", "busy", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 1);
    let out = output(dlock(
        &server,
        &["acquire", "-n", "-m", "NL", "busy", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    drop(holder.stdin.take());
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn no_server_exits_69() -> Result<()> {
    // A port nothing listens on: bind one, then free it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    for args in [&["ping"][..], &["status"], &["acquire", "x", "--", "true"]] {
        let out = output(dlock_at(&addr, args)).await?;
        assert_eq!(code(&out), 69, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_terminates_the_command_and_exits_75() -> Result<()> {
    let mut server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    // The command and a child of its own both log the SIGTERM they get.
    let script = format!(
        "trap 'echo terminated >> {log}; exit 0' TERM; \
         sh -c 'trap \"echo child-terminated >> {log}; exit 0\" TERM; echo child-started >> {log}; \
                for i in $(seq 1500); do sleep 0.02; done' & \
         echo started >> {log}; for i in $(seq 1500); do sleep 0.02; done",
        log = log.display()
    );
    let ttl = ["acquire", "--ttl", "2s"];
    let runner = dlock(
        &server,
        &[&ttl[..], &["lease", "--", "sh", "-c", &script]].concat(),
    )
    .spawn()?;
    lines_at_least(&log, 2).await?;
    // A holder in hold mode, and a waiter queued behind the command.
    let mut holder = dlock(&server, &[&ttl[..], &["lease2"]].concat())
        .stdin(Stdio::piped())
        .spawn()?;
    let waiter = dlock(&server, &[&ttl[..], &["lease", "--", "true"]].concat()).spawn()?;
    queues(&obs, "lease", 1, 1).await?;
    queues(&obs, "lease2", 1, 0).await?;
    // Renewals now fail; each local lease lapses within the 2 s TTL.
    server.abort().await;
    let out = finish(runner).await?;
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    // The command ran in its own process group (stdin is not a terminal): all of it stops.
    let mut l = lines_at_least(&log, 4).await?;
    l.sort();
    assert_eq!(
        l,
        ["child-started", "child-terminated", "started", "terminated"],
        "the command and its child got SIGTERM"
    );
    let stdin = holder.stdin.take();
    let out = finish(holder).await?;
    assert_eq!(code(&out), 75, "hold mode: {}", stderr(&out));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    drop(stdin);
    let out = finish(waiter).await?;
    assert_eq!(code(&out), 69, "waiter: {}", stderr(&out));
    Ok(())
}

fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) -> Result<()> {
    let pid = child.id().context("child already reaped")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), sig)?;
    Ok(())
}

#[tokio::test]
async fn sigterm_to_dlock_reaches_the_command() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    let script = format!(
        "trap 'echo got-term >> {log}; exit 9' TERM; echo started >> {log}; \
         for i in $(seq 1500); do sleep 0.02; done",
        log = log.display()
    );
    let child = dlock(&server, &["acquire", "sig", "--", "sh", "-c", &script]).spawn()?;
    lines_at_least(&log, 1).await?;
    signal(&child, nix::sys::signal::Signal::SIGTERM)?;
    let out = finish(child).await?;
    assert_eq!(
        code(&out),
        9,
        "the command's own status after its trap: {}",
        stderr(&out)
    );
    assert_eq!(lines(&log), ["started", "got-term"]);
    Ok(())
}

/// dlock blocks SIGINT, SIGQUIT and SIGHUP for itself (it reads them from a signalfd); the
/// command must not inherit that, or Ctrl-C and `kill -INT` would never reach it. Checked with
/// a program started directly, not through a shell (which may clear its mask itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_starts_with_no_signal_blocked() -> Result<()> {
    let server = TestServer::start().await?;
    let unblocked = [
        "grep",
        "-qE",
        "^SigBlk:[[:space:]]+0+$",
        "/proc/self/status",
    ];
    let out = output(dlock(
        &server,
        &[&["acquire", "mask", "--"][..], &unblocked].concat(),
    ))
    .await?;
    assert_eq!(
        code(&out),
        0,
        "the command has signals blocked: {}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_that_would_end_dlock_reaches_the_command_instead() -> Result<()> {
    use nix::sys::signal::Signal;
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let dir = tempfile::tempdir()?;
    for sig in [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
    ] {
        let name = &sig.as_str()[3..];
        let log = dir.path().join(name);
        let script = format!(
            "trap 'echo got-{name} >> {log}; exit 9' {name}; echo started >> {log}; \
             for i in $(seq 1500); do sleep 0.02; done",
            log = log.display()
        );
        let child = dlock(&server, &["acquire", "sig", "--", "sh", "-c", &script]).spawn()?;
        lines_at_least(&log, 1).await?;
        signal(&child, sig)?;
        // dlock outlives the signal, waits for the command and releases the lock after it.
        let out = finish(child).await?;
        assert_eq!(code(&out), 9, "{sig}: {}", stderr(&out));
        assert_eq!(lines(&log), ["started".to_owned(), format!("got-{name}")]);
        queues(&obs, "sig", 0, 0).await?;
    }
    Ok(())
}

#[tokio::test]
async fn interrupt_while_waiting_cancels_the_request() -> Result<()> {
    use nix::sys::signal::Signal;
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let (mut holder, _) = hold(&server, "holder", "queue").await?;
    // Ctrl-C, and a hang-up (the terminal or the ssh session gone).
    for sig in [Signal::SIGINT, Signal::SIGHUP] {
        let waiter = dlock(
            &server,
            &["--name", "impatient", "acquire", "queue", "--", "true"],
        )
        .spawn()?;
        let info = queues(&obs, "queue", 1, 1).await?;
        assert_eq!(info.waiting[0].session_name, "impatient");
        signal(&waiter, sig)?;
        let out = finish(waiter).await?;
        assert_eq!(code(&out), 128 + sig as i32, "{sig}: {}", stderr(&out));
        // The request left the queue at once, not when the waiter's lease ran out.
        queues(&obs, "queue", 1, 0).await?;
    }
    drop(holder.stdin.take());
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn waiting_on_a_terminal_shows_who_holds_the_lock() -> Result<()> {
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let (mut holder, _) = hold(&server, "slow-holder", "tty").await?;
    let dir = tempfile::tempdir()?;
    let typescript = dir.path().join("typescript");
    // util-linux `script` gives the waiting dlock a terminal as stderr; -f flushes each write.
    let inner = format!("{} acquire tty -- true", env!("CARGO_BIN_EXE_dlock"));
    let mut cmd = on_a_terminal(&inner, &typescript, &server.addr().to_string());
    let waiter = cmd.spawn().context("running script(1)")?;
    let line = eventually("a status line on the terminal", || async {
        let text = std::fs::read_to_string(&typescript).unwrap_or_default();
        text.contains("slow-holder").then_some(text)
    })
    .await?;
    assert!(line.contains("waiting for EX on \"tty\""), "{line:?}");
    assert!(line.contains("1st in queue"), "{line:?}");
    queues(&obs, "tty", 1, 1).await?;
    drop(holder.stdin.take());
    let out = finish(waiter).await?;
    assert_eq!(code(&out), 0);
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

/// The "not acquired" line gives the holder's age by the clock of the reply that named it,
/// and dlock asks for nothing else to learn the server's clock.
#[tokio::test]
async fn not_acquired_gives_the_holders_age_by_the_reply_clock() -> Result<()> {
    let fake = FakeServer::start(Script::clocked_table()).await?;
    let out = output(dlock_at(
        &fake.addr(),
        &["acquire", "--no-wait", "app.db", "--", "true"],
    ))
    .await?;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not acquired in EX (--no-wait): held by holder-1 (s7) in EX for 1m00s"),
        "{err}"
    );
    assert_eq!(fake.session_queries(), 0, "no clock probe");
    Ok(())
}

/// `script(1)` running the shell command line `inner` on a terminal of its own, with
/// `DLOCK_SERVER` set to `server` and the session's typescript written to `typescript`;
/// stdin from `/dev/null` (set another before spawning), stdout and stderr discarded, killed
/// when dropped.
fn on_a_terminal(
    inner: &str,
    typescript: &std::path::Path,
    server: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", inner])
        .arg(typescript)
        .env("DLOCK_SERVER", server)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The status line while waiting gives the holder's age by the clock of the poll's reply.
/// The fake server times the request out once it has answered a poll, and dlock draws the
/// line from that answer before it sees the outcome.
#[tokio::test]
async fn waiting_on_a_terminal_gives_the_holders_age_by_the_reply_clock() -> Result<()> {
    let fake = FakeServer::start(Script::clocked_table()).await?;
    let dir = tempfile::tempdir()?;
    let typescript = dir.path().join("typescript");
    let inner = format!(
        "{} acquire --timeout 1h app.db -- true",
        env!("CARGO_BIN_EXE_dlock")
    );
    let cmd = on_a_terminal(&inner, &typescript, &fake.addr());
    let out = output(cmd).await?;
    let text = std::fs::read_to_string(&typescript)?;
    assert_eq!(code(&out), 1, "timed out: {text:?}");
    assert!(
        text.contains("waiting for EX on \"app.db\": held by holder-1 (s7) in EX for 1m00s"),
        "{text:?}"
    );
    assert!(text.contains("timed out after 1h"), "{text:?}");
    assert_eq!(fake.session_queries(), 0, "no clock probe");
    Ok(())
}

#[tokio::test]
async fn refused_during_the_restart_grace_says_the_grace_may_be_why() -> Result<()> {
    let config = dlock_server::Config {
        restart_grace: dlock_server::RestartGrace::Fixed(std::time::Duration::from_secs(600)),
        ..TestServer::config()
    };
    let mut server = TestServer::start_with(config).await?;
    // A lock of the previous lifetime, so that the restarted server has a grace to keep.
    let old = observer(&server).await?;
    let _held = old.lock("x", dlock_client::Mode::EX).await?;
    server.restart().await?;
    for args in [
        &["acquire", "--no-wait", "free", "--", "true"][..],
        &["acquire", "--timeout", "100ms", "free", "--", "true"],
    ] {
        let out = output(dlock(&server, args)).await?;
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not held by anyone now; a server in its restart grace grants nothing"),
            "{args:?}: {err}"
        );
    }
    Ok(())
}
