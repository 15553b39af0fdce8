//! `dlock session` end to end: the real binary driven through its stdin and stdout, against
//! an in-process server. Every read of an answer has a deadline; nothing waits by sleeping.

mod common;

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// A running `dlock session`: lines go to its stdin, JSON answers come from its stdout.
struct Session {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Session {
    /// Starts `dlock --name NAME session` against `server`.
    fn start(server: &TestServer, name: &str) -> Result<Session> {
        Session::start_with(server, name, &[])
    }

    /// Starts `dlock --name NAME session ARGS...` against `server`.
    fn start_with(server: &TestServer, name: &str, args: &[&str]) -> Result<Session> {
        let mut cmd = dlock(server, &[&["--name", name, "session"], args].concat());
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().context("spawning dlock session")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Session {
            name: name.to_owned(),
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// Writes one command line.
    async fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next answer (within [`DEADLINE`]); `None` once stdout has ended.
    async fn next(&mut self) -> Result<Option<Value>> {
        let line = tokio::time::timeout(DEADLINE, self.stdout.next_line())
            .await
            .with_context(|| format!("{}: no answer in time", self.name))??;
        match line {
            None => Ok(None),
            Some(l) => Ok(Some(
                serde_json::from_str(&l).with_context(|| format!("not JSON: {l:?}"))?,
            )),
        }
    }

    /// The next answer, which must be about `tag` and be `event`.
    async fn expect(&mut self, tag: &str, event: &str) -> Result<Value> {
        let Some(v) = self.next().await? else {
            bail!("{}: stdout ended, expected {tag} {event}", self.name);
        };
        if v["tag"] != tag || v["event"] != event {
            bail!("{}: expected {tag} {event}, got {v}", self.name);
        }
        Ok(v)
    }

    /// Sends `line` and returns its answer, which must be about `tag` and be `event`.
    async fn ask(&mut self, line: &str, tag: &str, event: &str) -> Result<Value> {
        self.send(line).await?;
        self.expect(tag, event).await
    }

    /// Closes stdin, reads every answer left and waits for the exit code.
    async fn finish(mut self) -> Result<(i32, Vec<Value>)> {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        while let Some(v) = self.next().await? {
            rest.push(v);
        }
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .context("dlock session did not exit in time")??;
        let code = status.code().context("dlock session died of a signal")?;
        Ok((code, rest))
    }
}

fn token(v: &Value) -> u64 {
    v["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_converts_down_and_up_and_waits_for_a_conversion() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = Session::start(&server, "conv-a")?;
    let mut b = Session::start(&server, "conv-b")?;

    let granted = a.ask("lock a conv EX", "a", "granted").await?;
    assert_eq!(granted["resource"], "conv");
    assert_eq!(granted["mode"], "EX");
    assert!(
        granted.get("value").is_none(),
        "no value asked for: {granted}"
    );

    // Down to PR: a shared reader of another session gets in beside it.
    let down = a.ask("convert a PR", "a", "converted").await?;
    assert_eq!(down["mode"], "PR");
    assert!(token(&down) > token(&granted));
    b.ask("lock b conv PR nowait", "b", "granted").await?;

    // Up again at once is refused while b reads; the lock keeps PR.
    let refused = a.ask("convert a EX nowait", "a", "refused").await?;
    assert_eq!(refused["op"], "convert");
    assert_eq!(refused["error"], "not_queued");
    assert_eq!(refused["held"], "PR");

    // Up with waiting: queued until b lets go.
    let converting = a.ask("convert a EX", "a", "converting").await?;
    assert_eq!(converting["mode"], "EX");
    assert_eq!(converting["held"], "PR");
    // Another command on a lock that converts is busy, and changes nothing.
    let busy = a.ask("unlock a", "a", "error").await?;
    assert_eq!(busy["error"], "busy");
    // ... except a QUECVT that R21 does not allow from the mode held (PR->NL): INVALID
    // comes before BUSY (R55), as the server has it; PR->CW may carry QUECVT: busy.
    let invalid = a.ask("convert a NL quecvt", "a", "error").await?;
    assert_eq!(invalid["error"], "invalid", "{invalid}");
    let busy = a.ask("convert a CW quecvt", "a", "error").await?;
    assert_eq!(busy["error"], "busy", "{busy}");
    b.ask("unlock b", "b", "unlocked").await?;
    let up = a.expect("a", "converted").await?;
    assert_eq!(up["mode"], "EX");
    assert!(token(&up) > token(&down));

    // A request that waits for its first grant: no QUECVT conversion of it (INVALID, R21,
    // R55), and any other conversion is busy (R15).
    b.ask("lock w conv PR", "w", "waiting").await?;
    let invalid = b.ask("convert w EX quecvt", "w", "error").await?;
    assert_eq!(invalid["error"], "invalid", "{invalid}");
    let busy = b.ask("convert w EX", "w", "error").await?;
    assert_eq!(busy["error"], "busy", "{busy}");
    b.send("cancel w").await?;
    assert_eq!(b.expect("w", "refused").await?["error"], "cancelled");

    // A queued conversion can be cancelled; the lock keeps its mode.
    b.ask("lock b conv NL", "b", "granted").await?;
    a.ask("convert a PR", "a", "converted").await?;
    b.ask("convert b EX", "b", "converting").await?;
    b.send("cancel b").await?;
    let cancelled = b.expect("b", "refused").await?;
    assert_eq!(cancelled["error"], "cancelled");
    assert_eq!(cancelled["held"], "NL");

    a.ask("unlock a", "a", "unlocked").await?;
    let (code, rest) = a.finish().await?;
    assert_eq!((code, rest.len()), (0, 0), "{rest:?}");
    let (code, rest) = b.finish().await?;
    assert_eq!((code, rest.len()), (0, 0), "{rest:?}");
    Ok(())
}

/// A `convert` or `unlock` of a tag whose request or conversion is pending is answered by
/// the CLI, in the server's order (R55): argument errors are INVALID before the lock's state
/// makes it BUSY, as the server answers the same operations sent by lock id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_on_a_pending_tag_are_invalid_before_busy() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = Session::start(&server, "r55-a")?;
    let mut b = Session::start(&server, "r55-b")?;
    let long = format!("value={}", "ab".repeat(65));
    a.ask("lock h r55 CR", "h", "granted").await?;
    b.ask("lock b r55 PW", "b", "granted").await?;
    b.ask("convert b EX", "b", "converting").await?;
    for (line, answer) in [
        // From PW every conversion but to EX writes the value block: a value is needed.
        ("convert b NL value".to_owned(), "invalid"),
        ("convert b PR value".to_owned(), "invalid"),
        (format!("convert b PR {long}"), "invalid"),
        (format!("unlock b {long}"), "invalid"),
        // Valid arguments: the pending conversion makes them busy.
        ("convert b EX value".to_owned(), "busy"),
        ("convert b NL value=00".to_owned(), "busy"),
        ("unlock b value=00".to_owned(), "busy"),
    ] {
        let e = b.ask(&line, "b", "error").await?;
        assert_eq!(e["error"], answer, "{line}: {e}");
    }
    // A request waiting for its first grant has no granted mode: only the value's length.
    let mut c = Session::start(&server, "r55-c")?;
    c.ask("lock x r55 EX", "x", "waiting").await?;
    for (line, answer) in [
        (format!("convert x NL {long}"), "invalid"),
        (format!("unlock x {long}"), "invalid"),
        ("convert x NL value".to_owned(), "busy"),
    ] {
        let e = c.ask(&line, "x", "error").await?;
        assert_eq!(e["error"], answer, "{line}: {e}");
    }
    for s in [a, b, c] {
        assert_eq!(s.finish().await?.0, 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_block_written_on_unlock_is_read_by_the_next_lock() -> Result<()> {
    let server = TestServer::start().await?;
    let mut writer = Session::start(&server, "writer")?;
    let mut reader = Session::start(&server, "reader")?;

    writer.ask("lock w lvb EX", "w", "granted").await?;
    let waiting = reader.ask("lock r lvb PR value", "r", "waiting").await?;
    assert_eq!(waiting["mode"], "PR");
    writer
        .ask("unlock w value=68656c6c6f", "w", "unlocked")
        .await?;
    let granted = reader.expect("r", "granted").await?;
    let value = granted["value"].as_str().context("a value")?;
    assert!(value.starts_with("68656c6c6f"), "{granted}");
    assert!(
        value[10..].chars().all(|c| c == '0'),
        "zero-padded: {value}"
    );
    assert_eq!(granted["value_valid"], true);

    // An EX holder that marks it not valid: a reader sees it so. The reader's NL lock keeps
    // the value block alive (it lives as long as some lock on the resource does).
    reader.ask("lock keep lvb NL", "keep", "granted").await?;
    writer.ask("lock w lvb EX", "w", "waiting").await?;
    reader.ask("unlock r", "r", "unlocked").await?;
    writer.expect("w", "granted").await?;
    writer.ask("unlock w invalidate", "w", "unlocked").await?;
    let reread = reader
        .ask("convert keep PR value", "keep", "converted")
        .await?;
    assert_eq!(reread["value_valid"], false, "{reread}");
    assert!(
        reread["value"].as_str().unwrap().starts_with("68656c6c6f"),
        "kept: {reread}"
    );

    for s in [writer, reader] {
        assert_eq!(s.finish().await?.0, 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowait_and_timeout_are_refused_while_another_session_holds() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = Session::start(&server, "holder")?;
    let mut other = Session::start(&server, "other")?;

    holder.ask("lock h busy-res PW", "h", "granted").await?;
    let refused = other
        .ask("lock t busy-res PR nowait", "t", "refused")
        .await?;
    assert_eq!(refused["op"], "lock");
    assert_eq!(refused["error"], "not_queued");
    assert!(refused.get("held").is_none());
    let timed_out = other
        .ask("lock t busy-res EX timeout=20ms", "t", "waiting")
        .await?;
    assert_eq!(timed_out["resource"], "busy-res");
    assert_eq!(other.expect("t", "refused").await?["error"], "timed_out");
    // A waiting request cancelled; the tag is free again afterwards.
    other.ask("lock t busy-res EX", "t", "waiting").await?;
    other.send("cancel t").await?;
    assert_eq!(other.expect("t", "refused").await?["error"], "cancelled");
    assert_eq!(
        other.ask("cancel t", "t", "error").await?["error"],
        "no_lock"
    );
    // A compatible mode is granted beside the holder.
    other
        .ask("lock t busy-res CR nowait", "t", "granted")
        .await?;

    for s in [holder, other] {
        assert_eq!(s.finish().await?.0, 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_in_a_deadlock_one_is_the_victim_and_the_other_goes_on() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = Session::start(&server, "dl-a")?;
    let mut b = Session::start(&server, "dl-b")?;

    a.ask("lock one left EX", "one", "granted").await?;
    b.ask("lock two right EX", "two", "granted").await?;
    a.ask("lock want right EX", "want", "waiting").await?;
    // b's request closes the cycle a -> b -> a: the youngest request, b's, is the victim
    // (R41), and its lock "two" is untouched.
    let victim = b.ask("lock want left EX", "want", "refused").await?;
    assert_eq!(victim["error"], "deadlock", "{victim}");
    assert_eq!(victim["op"], "lock");
    // The victim gives up its lock: the survivor's request is granted.
    b.ask("unlock two", "two", "unlocked").await?;
    let granted = a.expect("want", "granted").await?;
    assert_eq!(granted["resource"], "right");

    b.send("quit").await?;
    let (code, rest) = b.finish().await?;
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
    let (code, rest) = a.finish().await?;
    assert_eq!(code, 0);
    assert!(
        rest.iter().all(|v| v["error"] != "deadlock"),
        "one victim only: {rest:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_notification_reaches_a_holder_that_asked_for_it() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = Session::start(&server, "reader")?;
    let mut writer = Session::start(&server, "writer")?;

    holder
        .ask("lock told cache PR notify", "told", "granted")
        .await?;
    holder
        .ask("lock quiet cache CR", "quiet", "granted")
        .await?;
    writer.ask("lock w cache EX", "w", "waiting").await?;
    let blocking = holder.expect("told", "blocking").await?;
    assert_eq!(blocking["mode"], "EX");
    // The holder steps aside; the lock without `notify` is released too.
    holder.ask("convert told NL", "told", "converted").await?;
    holder.ask("unlock quiet", "quiet", "unlocked").await?;
    assert_eq!(writer.expect("w", "granted").await?["mode"], "EX");

    let (code, rest) = holder.finish().await?;
    assert_eq!(code, 0);
    // Whatever else came, the lock taken without `notify` was never told.
    assert!(
        rest.iter().all(|v| v["tag"] != "quiet"),
        "a lock without notify reported: {rest:?}"
    );
    assert_eq!(writer.finish().await?.0, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_is_answered_and_the_session_goes_on() -> Result<()> {
    let server = TestServer::start().await?;
    let mut s = Session::start(&server, "typo")?;

    s.send("# a comment, then a blank line").await?;
    s.send("").await?;
    s.send("frobnicate now").await?;
    let e = s.next().await?.context("an answer")?;
    assert_eq!(e["event"], "error");
    assert_eq!(e["line"], 3, "comments and blank lines count: {e}");
    assert_eq!(e["error"], "syntax");
    assert!(e.get("tag").is_none(), "{e}");
    assert!(e["message"].as_str().unwrap().contains("frobnicate"), "{e}");

    let e = s.ask("lock a res XX", "a", "error").await?;
    assert_eq!(e["line"], 4);
    assert!(e["message"].as_str().unwrap().contains("XX"), "{e}");
    let e = s.ask("convert nobody EX", "nobody", "error").await?;
    assert_eq!(e["error"], "no_lock");

    // The session still works, and a name outside printable ASCII goes in hex.
    let pong = s.ask("ping p", "p", "pong").await?;
    // In whole microseconds, as written: no float noise (`0.036424000000000005`).
    let rtt = pong["rtt_ms"].to_string();
    assert!(rtt.split('.').nth(1).is_none_or(|d| d.len() <= 3), "{pong}");
    let g = s.ask("lock a hex:6120ff NL", "a", "granted").await?;
    assert_eq!(g["resource"], "hex:6120ff");
    let e = s.ask("lock a other NL", "a", "error").await?;
    assert_eq!(e["error"], "tag_in_use");
    let q = s.ask("query q hex:6120ff", "q", "resource").await?;
    assert_eq!(q["holders"][0]["session_name"], "typo");
    assert_eq!(q["holders"][0]["mode"], "NL");

    let (code, rest) = s.finish().await?;
    assert_eq!((code, rest.len()), (0, 0), "{rest:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_input_closes_the_session_and_releases_its_locks() -> Result<()> {
    let server = TestServer::start().await?;
    let mut first = Session::start(&server, "first")?;
    let mut next = Session::start(&server, "next")?;

    first.ask("lock a eof-1 EX", "a", "granted").await?;
    first.ask("lock b eof-2 PW", "b", "granted").await?;
    next.ask("lock a eof-1 EX", "a", "waiting").await?;
    next.ask("lock b eof-2 EX", "b", "waiting").await?;

    let (code, rest) = first.finish().await?;
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
    let mut granted = vec![
        next.expect_any("granted").await?,
        next.expect_any("granted").await?,
    ];
    granted.sort();
    assert_eq!(granted, ["a", "b"]);
    assert_eq!(next.finish().await?.0, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_grant_is_answered_in_the_order_of_the_two() -> Result<()> {
    // The holder's unlock and the waiter's cancel race to the server. Either the cancel
    // comes first (the request is cancelled) or the grant does (then the cancel finds
    // nothing pending, R48); either way the waiter's answers come in that order, and a
    // `not_pending` is never answered before the grant it came too late for.
    let server = TestServer::start().await?;
    let mut holder = Session::start(&server, "holder")?;
    let mut waiter = Session::start(&server, "waiter")?;
    for i in 0..60 {
        let (h, w, r) = (format!("h{i}"), format!("w{i}"), format!("race-{i}"));
        holder
            .ask(&format!("lock {h} {r} EX"), &h, "granted")
            .await?;
        waiter
            .ask(&format!("lock {w} {r} EX"), &w, "waiting")
            .await?;
        holder.send(&format!("unlock {h}")).await?;
        waiter.send(&format!("cancel {w}")).await?;
        holder.expect(&h, "unlocked").await?;
        let first = waiter.next().await?.context("waiter's answer")?;
        assert_eq!(first["tag"], w.as_str(), "{first}");
        match first["event"].as_str() {
            Some("refused") => assert_eq!(first["error"], "cancelled", "{first}"),
            Some("granted") => {
                let late = waiter.expect(&w, "error").await?;
                assert_eq!(late["error"], "not_pending", "{late}");
                waiter.ask(&format!("unlock {w}"), &w, "unlocked").await?;
            }
            _ => bail!("round {i}: the grant or the cancel first, got {first}"),
        }
    }
    for s in [holder, waiter] {
        assert_eq!(s.finish().await?.0, 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_holding_pw_or_ex_leaves_the_value_block_not_valid() -> Result<()> {
    // R50 and R29b: a session that ends, cleanly too, leaves the value block of a resource
    // it held in PW or EX not valid; an explicit unlock leaves it valid (R29a).
    let server = TestServer::start().await?;
    let mut keeper = Session::start(&server, "keeper")?;
    // The NL locks keep both value blocks alive while the writers come and go.
    keeper.ask("lock k1 end-pw NL", "k1", "granted").await?;
    keeper.ask("lock k2 end-unlock NL", "k2", "granted").await?;

    let mut writer = Session::start(&server, "writer")?;
    writer.ask("lock a end-pw PW", "a", "granted").await?;
    writer.ask("lock b end-unlock EX", "b", "granted").await?;
    writer.ask("unlock b", "b", "unlocked").await?;
    let (code, rest) = writer.finish().await?;
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");

    let ended = keeper.ask("convert k1 PR value", "k1", "converted").await?;
    assert_eq!(ended["value_valid"], false, "session end: {ended}");
    let unlocked = keeper.ask("convert k2 PR value", "k2", "converted").await?;
    assert_eq!(unlocked["value_valid"], true, "unlock: {unlocked}");
    assert_eq!(keeper.finish().await?.0, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_closes_the_session_and_exits_128_plus_its_number() -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let server = TestServer::start().await?;
    let mut next = Session::start(&server, "next")?;
    for (i, sig) in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM]
        .into_iter()
        .enumerate()
    {
        let mut s = Session::start(&server, "signalled")?;
        let r = format!("sig-{i}");
        s.ask(&format!("lock a {r} EX"), "a", "granted").await?;
        next.ask(&format!("lock w{i} {r} EX"), &format!("w{i}"), "waiting")
            .await?;
        let pid = s.child.id().context("pid")?;
        kill(Pid::from_raw(i32::try_from(pid)?), sig)?;
        // The session closes: its lock goes to the waiter, and dlock exits 128+N.
        next.expect(&format!("w{i}"), "granted").await?;
        let status = tokio::time::timeout(DEADLINE, s.child.wait()).await??;
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig}");
    }
    assert_eq!(next.finish().await?.0, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_session_reports_the_lost_locks_and_exits_69() -> Result<()> {
    let mut server = TestServer::start().await?;
    let mut s = Session::start(&server, "doomed")?;
    s.ask("lock a lost-1 EX", "a", "granted").await?;
    s.ask("lock b lost-2 PR", "b", "granted").await?;
    server.shutdown().await?;
    // The session ends by itself, without waiting for end of input, after one `lost` answer
    // for each lock.
    let status = tokio::time::timeout(DEADLINE, s.child.wait())
        .await
        .context("dlock session did not exit after the loss")??;
    assert_eq!(status.code(), Some(69));
    let (code, rest) = s.finish().await?;
    assert_eq!(code, 69);
    let mut lost: Vec<String> = rest
        .iter()
        .map(|v| {
            assert_eq!(v["event"], "lost", "{v}");
            assert_eq!(v["reason"], "server shut down", "{v}");
            v["tag"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    lost.sort();
    assert_eq!(lost, ["a", "b"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_asked_while_the_server_is_down_ends_with_the_lost_session() -> Result<()> {
    let mut server = TestServer::start().await?;
    let mut s = Session::start_with(&server, "cut-off", &["--ttl", "2s"])?;
    s.ask("lock a down-1 EX", "a", "granted").await?;
    // Like kill -9: the client cannot send `lock b` until its lease has lapsed locally.
    server.abort().await;
    s.send("lock b down-2 EX").await?;
    // The request was never answered by a server of this session: when the session is
    // lost it is refused with it, not kept for a later session (where it would be granted
    // to a command that has already said its session is gone).
    let mut answers = Vec::new();
    for _ in 0..2 {
        let v = s.next().await?.context("stdout ended early")?;
        answers.push((v["tag"].to_string(), v["event"].to_string(), v));
    }
    answers.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(answers[0].1, "\"lost\"", "{}", answers[0].2);
    assert_eq!(answers[1].0, "\"b\"", "{}", answers[1].2);
    assert_eq!(answers[1].1, "\"refused\"", "{}", answers[1].2);
    assert_eq!(answers[1].2["error"], "lost", "{}", answers[1].2);
    let (code, rest) = s.finish().await?;
    assert_eq!(code, 69);
    assert!(rest.is_empty(), "{rest:?}");
    Ok(())
}

/// A session that holds nothing ends with its loss too (exit 69), rather than going on in a
/// new session the client would open by itself: with the server shut down, at once; with the
/// server gone silently, when the lease lapses (2 s here), with stdin still open both times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_holds_nothing_ends_when_it_is_lost() -> Result<()> {
    for graceful in [true, false] {
        let mut server = TestServer::start().await?;
        let mut s = Session::start_with(&server, "idle", &["--ttl", "2s"])?;
        s.ask("ping p", "p", "pong").await?;
        if graceful {
            server.shutdown().await?;
        } else {
            server.abort().await;
        }
        // stdout ends (the process exits) with stdin still open.
        assert_eq!(s.next().await?, None, "graceful: {graceful}");
        let status = tokio::time::timeout(DEADLINE, s.child.wait())
            .await
            .context("dlock session did not exit in time")??;
        assert_eq!(status.code(), Some(69), "graceful: {graceful}");
        assert!(s.stdin.is_some());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_exit_69_and_a_bad_option_exit_2() -> Result<()> {
    let out = output(dlock_at("127.0.0.1:1", &["session"])).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    let out = output(dlock_at("127.0.0.1:1", &["session", "--ttl", "0s"])).await?;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    Ok(())
}

impl Session {
    /// The next answer, which must be `event`; returns its tag.
    async fn expect_any(&mut self, event: &str) -> Result<String> {
        let Some(v) = self.next().await? else {
            bail!("{}: stdout ended, expected {event}", self.name);
        };
        if v["event"] != event {
            bail!("{}: expected {event}, got {v}", self.name);
        }
        Ok(v["tag"].as_str().unwrap_or_default().to_owned())
    }
}
