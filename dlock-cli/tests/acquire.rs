//! `dlock acquire` end to end: the real binary against an in-process server.

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
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &inner])
        .arg(&typescript)
        .env("DLOCK_SERVER", server.addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
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
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &inner])
        .arg(&typescript)
        .env("DLOCK_SERVER", fake.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
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

/// Whether process `pid` has ended: gone, or a zombie nobody reaped yet.
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends with the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn a_command_outlives_no_sigkilled_dlock() -> Result<()> {
    use nix::sys::signal::Signal;
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 600", pidfile.display());
    let mut child = dlock(&server, &["acquire", "orphan", "--", "sh", "-c", &script]).spawn()?;
    let pid: i32 = lines_at_least(&pidfile, 1).await?[0].parse()?;
    signal(&child, Signal::SIGKILL)?;
    child.wait().await?;
    let gone = eventually("the command to end with dlock", || async {
        ended(pid).then_some(())
    })
    .await;
    if gone.is_err() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    gone
}

#[tokio::test]
async fn the_shim_refuses_to_run_a_command_whose_dlock_is_gone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran");
    // The test process is not the shim's parent: as if dlock had died before the shim ran.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlock"));
    cmd.args(["__exec", "--parent", "1", "--", "touch"])
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = output(cmd).await?;
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ended before the command could start"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the command ran");
    Ok(())
}

#[tokio::test]
async fn a_command_that_cannot_run_is_reported_as_before() -> Result<()> {
    let server = TestServer::start().await?;
    let out = output(dlock(&server, &["acquire", "x", "--", "/nonexistent/prog"])).await?;
    assert_eq!(code(&out), 127, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dlock: cannot run /nonexistent/prog: No such file or directory"),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir()?;
    let out = output(dlock(
        &server,
        &["acquire", "x", "--", dir.path().to_str().context("utf-8")?],
    ))
    .await?;
    assert_eq!(code(&out), 126, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    // Rust ignores SIGPIPE; the command gets the default disposition, as from a shell.
    let out = output(dlock(
        &server,
        &["acquire", "x", "--", "grep", "SigIgn", "/proc/self/status"],
    ))
    .await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mask = u64::from_str_radix(stdout(&out).split_whitespace().nth(1).context("mask")?, 16)?;
    assert_eq!(
        mask & (1 << (13 - 1)),
        0,
        "SIGPIPE ignored: {}",
        stdout(&out)
    );
    Ok(())
}

/// A TCP listener that accepts connections and never answers (nor reads); it keeps them open
/// until dropped.
async fn silent_listener() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            kept.push(conn);
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn no_wait_and_timeout_give_up_on_a_server_that_never_answers() -> Result<()> {
    let (addr, task) = silent_listener().await?;
    for (args, limit) in [
        (
            &["acquire", "-n", "x", "--", "true"][..],
            "--no-wait allows 2s",
        ),
        (
            &["acquire", "-w", "500ms", "x", "--", "true"],
            "--timeout 500ms plus 2s",
        ),
    ] {
        let out = output(dlock_at(&addr, args)).await?;
        assert_eq!(code(&out), 69, "{args:?}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(said.contains("did not answer in time"), "{args:?}: {said}");
        assert!(said.contains(limit), "{args:?}: {said}");
    }
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_gives_up_on_a_server_that_stops_answering_while_dlock_waits() -> Result<()> {
    let server = TestServer::start().await?;
    let obs = observer(&server).await?;
    let proxy = dlock_tests::proxy::Proxy::start(server.addr()).await?;
    let (mut holder, _) = hold(&server, "holder", "frozen").await?;
    // A lease far longer than the test's deadline: only dlock's own deadline can end the wait.
    let waiter = dlock_at(
        &proxy.addr().to_string(),
        &[
            "--name", "waiter", "acquire", "--ttl", "5m", "-w", "3s", "frozen", "--", "true",
        ],
    )
    .spawn()?;
    queues(&obs, "frozen", 1, 1).await?;
    proxy.blackhole(true);
    let out = finish(waiter).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not answer in time"),
        "{}",
        stderr(&out)
    );
    drop(holder.stdin.take());
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn a_name_too_long_for_a_frame_is_a_usage_error_and_is_not_echoed_whole() -> Result<()> {
    let server = TestServer::start().await?;
    let long = "a".repeat(70_000);
    for args in [
        &["acquire", long.as_str(), "--", "true"][..],
        &["--name", long.as_str(), "acquire", "x", "--", "true"],
        &["status", long.as_str()],
    ] {
        let out = output(dlock(&server, args)).await?;
        let said = stderr(&out);
        assert_eq!(code(&out), 2, "{}", &said[..said.len().min(300)]);
        assert!(
            said.len() < 1_000,
            "the name echoed whole: {} bytes",
            said.len()
        );
    }
    // A name under the frame but over the server's limit: also cut in the message.
    let out = output(dlock(
        &server,
        &["acquire", &"b".repeat(5_000), "--", "true"],
    ))
    .await?;
    let said = stderr(&out);
    assert_eq!(code(&out), 2, "{said}");
    assert!(said.contains("… (5000 bytes)"), "{said}");
    assert!(said.len() < 1_000, "{said}");
    Ok(())
}

#[tokio::test]
async fn a_stopped_command_is_reported() -> Result<()> {
    let server = TestServer::start().await?;
    let mut child = dlock(
        &server,
        &[
            "acquire",
            "stopped",
            "--",
            "sh",
            "-c",
            "kill -STOP $$; echo resumed",
        ],
    )
    .spawn()?;
    let mut err = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let line = tokio::time::timeout(DEADLINE, err.next_line())
        .await
        .context("no word about the stop")??
        .context("stderr closed")?;
    assert!(line.contains("is stopped by SIGSTOP"), "{line}");
    let pid: i32 = line
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .context("no pid")?
        .parse()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )?;
    let out = finish(child).await?;
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "resumed\n");
    Ok(())
}

#[tokio::test]
async fn with_stdin_redirected_in_the_terminals_foreground_the_command_can_read_the_terminal()
-> Result<()> {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let typescript = dir.path().join("typescript");
    // util-linux `script` runs dlock on a terminal, in its foreground, with stdin from
    // /dev/null; what the test writes to script's stdin is typed at that terminal.
    let inner = format!(
        "{} acquire ttin -- sh -c 'read a < /dev/tty; echo got-$a' < /dev/null",
        env!("CARGO_BIN_EXE_dlock")
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &inner])
        .arg(&typescript)
        .env("DLOCK_SERVER", server.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut script = cmd.spawn().context("running script(1)")?;
    let mut typing = script.stdin.take().context("stdin")?;
    typing.write_all(b"answer\n").await?;
    eventually("the command to read the terminal", || async {
        let text = std::fs::read_to_string(&typescript).unwrap_or_default();
        text.contains("got-answer").then_some(())
    })
    .await?;
    drop(typing);
    let out = finish(script).await?;
    assert_eq!(code(&out), 0);
    Ok(())
}

#[tokio::test]
async fn an_interrupt_while_waiting_on_a_terminal_erases_the_status_line_first() -> Result<()> {
    let server = TestServer::start().await?;
    let (mut holder, _) = hold(&server, "slow-holder", "tty-int").await?;
    let dir = tempfile::tempdir()?;
    let typescript = dir.path().join("typescript");
    let pidfile = dir.path().join("pid");
    let inner = format!(
        "sh -c 'echo $$ > {}; exec {} acquire tty-int -- true'",
        pidfile.display(),
        env!("CARGO_BIN_EXE_dlock")
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &inner])
        .arg(&typescript)
        .env("DLOCK_SERVER", server.addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let waiter = cmd.spawn().context("running script(1)")?;
    eventually("a status line on the terminal", || async {
        let text = std::fs::read_to_string(&typescript).unwrap_or_default();
        text.contains("slow-holder").then_some(())
    })
    .await?;
    let pid: i32 = lines_at_least(&pidfile, 1).await?[0].parse()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )?;
    finish(waiter).await?;
    let text = std::fs::read_to_string(&typescript)?;
    let at = text
        .find("dlock: interrupted while waiting")
        .context(text.clone())?;
    assert!(
        text[..at].ends_with("\r\x1b[2K"),
        "the status line was not erased: {text:?}"
    );
    drop(holder.stdin.take());
    tokio::time::timeout(DEADLINE, holder.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn on_a_terminal_sigint_and_sighup_sent_with_kill_reach_the_command() -> Result<()> {
    use nix::sys::signal::Signal;
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    let pidfile = dir.path().join("pid");
    let child = format!(
        "trap \"echo got-INT >> {log}\" INT; trap \"echo got-HUP >> {log}; exit 7\" HUP; \
         echo started >> {log}; while :; do sleep 0.05; done",
        log = log.display()
    );
    std::fs::write(dir.path().join("child.sh"), child)?;
    // dlock runs in the foreground of script(1)'s terminal, so the command shares its group.
    let inner = format!(
        "sh -c 'echo $$ > {pid}; exec {dlock} acquire tty-kill -- sh {script}'",
        pid = pidfile.display(),
        dlock = env!("CARGO_BIN_EXE_dlock"),
        script = dir.path().join("child.sh").display()
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &inner, "/dev/null"])
        .env("DLOCK_SERVER", server.addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let script = cmd.spawn().context("running script(1)")?;
    lines_at_least(&log, 1).await?;
    let dlock_pid = nix::unistd::Pid::from_raw(lines_at_least(&pidfile, 1).await?[0].parse()?);
    nix::sys::signal::kill(dlock_pid, Signal::SIGINT)?;
    lines_at_least(&log, 2).await?;
    nix::sys::signal::kill(dlock_pid, Signal::SIGHUP)?;
    finish(script).await?;
    assert_eq!(lines(&log), ["started", "got-INT", "got-HUP"]);
    Ok(())
}

#[tokio::test]
async fn the_command_gets_the_default_disposition_of_signals_dlock_was_told_to_ignore() -> Result<()>
{
    let server = TestServer::start().await?;
    // As `nohup dlock ...` does for SIGHUP: dlock starts with these ignored.
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"trap '' HUP INT QUIT TERM; exec "$0" acquire ign -- grep SigIgn /proc/self/status"#,
        env!("CARGO_BIN_EXE_dlock"),
    ])
    .env("DLOCK_SERVER", server.addr().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mask = u64::from_str_radix(stdout(&out).split_whitespace().nth(1).context("mask")?, 16)?;
    for sig in [1, 2, 3, 15] {
        assert_eq!(
            mask & (1 << (sig - 1)),
            0,
            "signal {sig} ignored: {}",
            stdout(&out)
        );
    }
    Ok(())
}
