//! The command under `dlock acquire`: it does not outlive a killed dlock, a server that stops
//! answering does not hold dlock past its deadline, and on a terminal the command reads the
//! terminal and gets the signals meant for it.

use super::*;

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
    let mut cmd = on_a_terminal(&inner, &typescript, &server.addr().to_string());
    cmd.stdin(Stdio::piped());
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
    let mut cmd = on_a_terminal(&inner, &typescript, &server.addr().to_string());
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
    let mut cmd = on_a_terminal(
        &inner,
        std::path::Path::new("/dev/null"),
        &server.addr().to_string(),
    );
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
